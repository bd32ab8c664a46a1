//! The JSON bodies of the control API, shared by the server and clients
//! (the CLI), so both sides agree on one definition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::jobs::state::{AdaptivePlan, JobEvent, JobState, ReplicationMode};

/// An error answer: every non-2xx response carries one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    pub error: String,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok` when the daemon answers.
    pub status: String,
}

/// One sandbox this node can run jobs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorInfo {
    /// `wasm` or `docker`.
    pub kind: String,
    /// Engine version (Wasm), if known.
    pub version: Option<String>,
    /// Local image ids (Docker).
    pub images: Option<Vec<String>>,
}

/// `GET /api/v1/id`: who this node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdInfo {
    /// The node's PeerId (base58).
    pub peer_id: String,
    /// Software version, e.g. `agora/0.1.0`.
    pub agent_version: String,
    /// Active p2p listen addresses.
    pub listen_addrs: Vec<String>,
    /// Addresses confirmed reachable from outside.
    pub external_addrs: Vec<String>,
    /// The sandboxes available.
    pub executors: Vec<ExecutorInfo>,
}

/// One connected peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its PeerId.
    pub peer_id: String,
    /// The connection's remote address, if known.
    pub addr: Option<String>,
}

/// `GET /api/v1/peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersInfo {
    /// Peers with an open connection.
    pub peers: Vec<PeerInfo>,
}

/// One node of the peer book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its PeerId.
    pub peer_id: String,
    /// `online`, `offline`, or `known` (remembered from before this node's
    /// last start, not heard from since).
    pub state: String,
    /// Whether this row is the answering node itself.
    pub is_self: bool,
    /// Its software version.
    pub agent_version: String,
    /// `wasm`, `docker`: the sandboxes it advertises.
    pub executors: Vec<String>,
    /// Wasm engine version, if any.
    pub wasm: Option<String>,
    /// Number of Docker images it holds, if it runs Docker.
    pub docker_images: Option<usize>,
    /// CPU cores offered.
    pub cpu_cores: u32,
    /// Memory offered, bytes.
    pub memory_bytes: u64,
    /// Jobs it runs at once at most.
    pub max_jobs: u32,
    /// Jobs running at its last advert.
    pub running_jobs: u32,
    /// `running_jobs / max_jobs` (0 when `max_jobs` is 0).
    pub load: f64,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Where it can be dialled.
    pub listen_addrs: Vec<String>,
    /// When its last advert arrived (ms since the Unix epoch, our clock).
    pub last_seen_ms: u64,
    /// Seconds since then, as of the answer.
    pub last_seen_secs_ago: u64,
}

/// `GET /api/v1/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodesInfo {
    /// Every node in the peer book, online first.
    pub nodes: Vec<NodeInfo>,
}

/// `POST /api/v1/blobs` answer (the body of the request is the raw bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    /// Content id (hex sha256).
    pub id: String,
    /// Size in bytes.
    pub size: u64,
}

/// `POST /api/v1/images` request: store a local image as blobs so peers
/// can fetch it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushImage {
    /// Image name or id as the local engine knows it.
    pub image: String,
}

/// An image this node serves to peers (`GET /api/v1/images`, and the
/// answer of `POST /api/v1/images`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Image id (`sha256:<hex>`).
    pub id: String,
    /// Blob id of its manifest, which Docker jobs name.
    pub manifest: String,
    /// Bytes of its config and layers.
    pub size: u64,
    /// Its layers, base first: blob id (the layer's diff id) and size.
    pub layers: Vec<BlobInfo>,
    /// Whether agora fetched and loaded it into this node's engine (such
    /// images are removed beyond `--image-cache`).
    pub loaded: bool,
    /// Last use (ms since the Unix epoch).
    pub last_used_ms: u64,
}

/// `GET /api/v1/images` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageList {
    /// Most recently used first.
    pub images: Vec<ImageInfo>,
}

/// What runs a submitted job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubmitExecutor {
    /// A WASI module, given as an uploaded blob id (or unique prefix).
    Wasm {
        /// Blob id of the module.
        module: String,
    },
    /// A Docker image, by name or id; the daemon resolves a name to the
    /// local image id, or takes `image@sha256:...` / `sha256:...` as is.
    Docker {
        /// Image name, `name@sha256:<hex>` or `sha256:<hex>`.
        image: String,
    },
}

/// `POST /api/v1/jobs`. Unset limits take the protocol defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// The sandbox and program.
    pub executor: SubmitExecutor,
    /// Program arguments (for Docker, the command).
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Blob id of stdin, if any.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Input files: name under /in -> blob id.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Output files collected from /out.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Executors that run it (default 3).
    #[serde(default)]
    pub n: Option<u8>,
    /// Executors that must agree (default 2).
    #[serde(default)]
    pub k: Option<u8>,
    /// Memory limit in bytes.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Wall-clock limit of one run in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Wasm fuel budget.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// CPU limit in thousandths of a core (Docker).
    #[serde(default)]
    pub milli_cpus: Option<u32>,
    /// Cap on stdout, stderr and each output file, in bytes.
    #[serde(default)]
    pub max_output_bytes: Option<u64>,
    /// Let this node execute the job itself when no other node can.
    #[serde(default)]
    pub allow_local: bool,
    /// `fixed` (always k-of-n, the default) or `adaptive` (one trusted
    /// executor alone, with random spot checks at k-of-n).
    #[serde(default)]
    pub replication: ReplicationMode,
    /// Operator labels an executor must advertise (`gpu=true`); only
    /// nodes with all of them run the job.
    #[serde(default)]
    pub requires: BTreeMap<String, String>,
}

impl SubmitJob {
    /// A job for `executor` with every other field at its default.
    pub fn new(executor: SubmitExecutor) -> Self {
        Self {
            executor,
            args: Vec::new(),
            env: BTreeMap::new(),
            stdin: None,
            inputs: BTreeMap::new(),
            outputs: Vec::new(),
            n: None,
            k: None,
            memory_bytes: None,
            timeout_ms: None,
            fuel: None,
            milli_cpus: None,
            max_output_bytes: None,
            allow_local: false,
            replication: ReplicationMode::Fixed,
            requires: BTreeMap::new(),
        }
    }
}

/// One executor's part in a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorRecord {
    /// The executor's PeerId.
    pub peer_id: String,
    /// Assignment attempt (0 for the first n, then re-dispatches and
    /// escalations).
    pub attempt: u32,
    /// `running`, `answered`, `missed`, `crashed` or `released` (still
    /// running when the job was decided).
    pub state: String,
    /// The result hash it signed, once answered.
    pub result_hash: Option<String>,
    /// Whether that hash is the accepted one (once the job is verified).
    pub agrees: Option<bool>,
    /// When it was assigned (ms since the Unix epoch).
    pub assigned_at_ms: u64,
    /// When it answered or ended.
    pub ended_at_ms: Option<u64>,
    /// Its error report, if it could not run the job.
    pub error: Option<String>,
}

/// `GET /api/v1/jobs/{id}` and the items of `GET /api/v1/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Job id (hex sha256 of the signed spec).
    pub id: String,
    /// Where it stands.
    pub state: JobState,
    /// `wasm` or `docker`.
    pub executor: String,
    /// Module blob id (Wasm) or image id (Docker).
    pub program: String,
    /// Executors first assigned.
    pub n: u8,
    /// Executors that must agree.
    pub k: u8,
    /// Whether one executor's word decides it, not verified by others
    /// (k = 1, or an adaptive job running alone on a trusted executor).
    pub unverified: bool,
    /// `fixed` or `adaptive`.
    #[serde(default)]
    pub replication: ReplicationMode,
    /// What adaptive replication chose, once it chose.
    #[serde(default)]
    pub plan: Option<AdaptivePlan>,
    /// When it was submitted (ms since the Unix epoch).
    pub submitted_at_ms: u64,
    /// When it reached a final state.
    pub finished_at_ms: Option<u64>,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    /// The accepted result hash, once verified.
    pub result_hash: Option<String>,
    /// The verified exit code.
    pub exit_code: Option<i32>,
    /// Bids received.
    pub bids: u32,
    /// Every executor assigned, in assignment order.
    pub executors: Vec<ExecutorRecord>,
    /// Progress so far (the list in `GET /api/v1/jobs` leaves it empty).
    pub events: Vec<JobEvent>,
}

/// `GET /api/v1/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobList {
    /// Jobs, newest first.
    pub jobs: Vec<JobRecord>,
}

/// `GET /api/v1/jobs/{id}/result`: the verified result. Bytes are blobs of
/// this node: fetch them with `GET /api/v1/blobs/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// Job id.
    pub id: String,
    /// The accepted result hash.
    pub result_hash: String,
    /// Whether one executor's word decided it (k = 1, or an adaptive solo
    /// run).
    pub unverified: bool,
    /// What adaptive replication chose, for an adaptive job.
    #[serde(default)]
    pub plan: Option<AdaptivePlan>,
    /// The program's exit code.
    pub exit_code: i32,
    /// Standard output.
    pub stdout: BlobInfo,
    /// Standard error of one agreeing executor (not verified: stderr is
    /// not part of the hash).
    pub stderr: BlobInfo,
    /// Declared output files by name.
    pub outputs: BTreeMap<String, BlobInfo>,
    /// Executors whose signed attestations carry the accepted hash.
    pub agreeing: Vec<String>,
}

/// One piece of evidence behind a peer's score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceInfo {
    /// When it was applied (ms since the Unix epoch).
    pub at_ms: u64,
    /// The job whose verdict it came from.
    pub job: String,
    /// `own` (this node's job) or the PeerId whose gossiped verdict it was.
    pub source: String,
    /// `agreed`, `disagreed` or `missed`.
    pub observation: String,
    /// Score before.
    pub before: u32,
    /// Score after.
    pub after: u32,
}

/// This node's opinion of one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReputationInfo {
    /// The peer.
    pub peer_id: String,
    /// Its score (start 100).
    pub score: u32,
    /// Times it agreed with a verified result.
    pub agreed: u64,
    /// Times it attested another result.
    pub disagreed: u64,
    /// Times it missed a deadline, crashed or went offline.
    pub missed: u64,
    /// Whether it scores below the exclusion threshold.
    pub excluded: bool,
    /// `newcomer` (its verdicts do not count here yet), `established`,
    /// `probation` (excluded on others' word only: still given work, so
    /// this node's own jobs re-test it) or `excluded` (on this node's own
    /// evidence: never selected).
    #[serde(default)]
    pub standing: String,
    /// Agreements in a row in this node's own jobs since its last fault.
    #[serde(default)]
    pub clean_streak: u64,
    /// Whether this node's adaptive replication lets it run jobs alone.
    #[serde(default)]
    pub trusted: bool,
    /// First evidence (ms since the Unix epoch).
    pub first_seen_ms: u64,
    /// Latest evidence.
    pub last_seen_ms: u64,
    /// The latest evidence, oldest first.
    pub evidence: Vec<EvidenceInfo>,
}

/// `GET /api/v1/reputation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReputationList {
    /// Peers, lowest score first.
    pub peers: Vec<ReputationInfo>,
}

/// Where an array's items come from (`POST /api/v1/arrays`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArrayItems {
    /// One item per integer from `from` to `to`, both included; `{}` in
    /// the arguments becomes the integer.
    Range {
        /// First integer.
        from: i64,
        /// Last integer (included).
        to: i64,
    },
    /// One item per line of an uploaded blob (a final newline ends the
    /// last line; it does not start an empty one); `{}` becomes the line.
    Lines {
        /// Blob id of the text.
        blob: String,
    },
    /// One item per file: each item sees its file at `/in/<name>`, and
    /// `{}` becomes `/in/<name>`.
    Files {
        /// The files, in item order.
        files: Vec<ArrayFile>,
    },
}

/// One file of an [`ArrayItems::Files`] array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayFile {
    /// Its name under `/in` (a plain file name).
    pub name: String,
    /// Blob id of its bytes.
    pub blob: String,
}

/// `POST /api/v1/arrays`: one job per item, each verified k-of-n on its
/// own, and optionally a reduce job over their verified outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitArray {
    /// The job every item runs; in `args` (and `env` values) `{}` becomes
    /// the item's value and `{#}` its index (from 0).
    pub job: SubmitJob,
    /// The items.
    pub items: ArrayItems,
    /// Items in flight at most (default: from the network's capacity).
    #[serde(default)]
    pub parallel: Option<u32>,
    /// The aggregation job: it sees item i's verified stdout at
    /// `/in/<i>.out` and its declared outputs under `/in/<i>/`; its inputs
    /// are added by the daemon. Its verified stdout is the array's result.
    #[serde(default)]
    pub reduce: Option<SubmitJob>,
}

/// Where an array stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArrayState {
    /// Items are being run.
    Running,
    /// Every item is verified; the reduce job runs.
    Reducing,
    /// Every item (and the reduce job, if any) is verified.
    Verified,
    /// Some item (or the reduce job) failed; `agora job retry` re-runs
    /// the failed ones.
    Failed,
    /// Cancelled by the user.
    Cancelled,
}

impl ArrayState {
    /// Its name in JSON and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Reducing => "reducing",
            Self::Verified => "verified",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether nothing more happens without a retry.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Verified | Self::Failed | Self::Cancelled)
    }
}

/// Where one item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    /// Not submitted yet.
    Pending,
    /// Its job runs.
    Running,
    /// Its job is verified.
    Verified,
    /// Its job failed.
    Failed,
    /// Cancelled before it was verified.
    Cancelled,
}

impl ItemState {
    /// Its name in JSON and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Verified => "verified",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Items per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayCounts {
    /// Not submitted yet.
    pub pending: u32,
    /// In flight.
    pub running: u32,
    /// Verified.
    pub verified: u32,
    /// Failed.
    pub failed: u32,
    /// Cancelled.
    pub cancelled: u32,
}

/// One item of an array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayItemInfo {
    /// Its index, from 0.
    pub index: u32,
    /// What `{}` became for it.
    pub value: String,
    /// Where it stands.
    pub state: ItemState,
    /// Its job (the latest, after a retry).
    pub job: Option<String>,
    /// Jobs submitted for it so far.
    pub attempts: u32,
    /// The verified exit code.
    pub exit_code: Option<i32>,
    /// The verified stdout (a blob of this node).
    pub stdout: Option<BlobInfo>,
    /// The verified outputs by name.
    #[serde(default)]
    pub outputs: BTreeMap<String, BlobInfo>,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
}

/// `GET /api/v1/arrays/{id}` and the items of `GET /api/v1/arrays`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayInfo {
    /// Array id (hex sha256).
    pub id: String,
    /// Where it stands.
    pub state: ArrayState,
    /// `wasm` or `docker`.
    pub executor: String,
    /// Items in all.
    pub total: u32,
    /// Items per state.
    pub counts: ArrayCounts,
    /// Items in flight at most.
    pub parallel: u32,
    /// Executors per item.
    pub n: u8,
    /// Executors that must agree per item.
    pub k: u8,
    /// Whether a reduce job aggregates the items.
    pub has_reduce: bool,
    /// The reduce job, once submitted.
    pub reduce_job: Option<String>,
    /// When it was submitted (ms since the Unix epoch).
    pub submitted_at_ms: u64,
    /// When it reached a final state.
    pub finished_at_ms: Option<u64>,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    /// The failed items, index order (at most [`MAX_LISTED_FAILURES`]; the
    /// list in `GET /api/v1/arrays` leaves it empty).
    #[serde(default)]
    pub failed_items: Vec<ArrayItemInfo>,
}

/// Most failed items an [`ArrayInfo`] lists.
pub const MAX_LISTED_FAILURES: usize = 100;

/// `GET /api/v1/arrays`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayList {
    /// Arrays, newest first.
    pub arrays: Vec<ArrayInfo>,
}

/// `GET /api/v1/arrays/{id}/items?from=I&limit=L`: one page of items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayItemPage {
    /// Items in index order.
    pub items: Vec<ArrayItemInfo>,
    /// The `from` of the next page, if there is one.
    pub next: Option<u32>,
}

/// `POST /api/v1/arrays/{id}/retry`: which items to run again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryArray {
    /// Indices of failed or cancelled items; empty means all of them.
    #[serde(default)]
    pub indices: Vec<u32>,
}

/// One change of an array (`GET /api/v1/arrays/{id}/events`, as SSE
/// events named `array`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayEvent {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// The item that changed, or none for the array itself.
    pub index: Option<u32>,
    /// The item's new state, when an item changed.
    pub item_state: Option<ItemState>,
    /// The item's job.
    pub job: Option<String>,
    /// For people.
    pub detail: String,
    /// The array's state after the change.
    pub state: ArrayState,
    /// Items per state after the change.
    pub counts: ArrayCounts,
}
