//! What the node must not forget about jobs: the submitter's record of
//! each job it submitted ([`JobRecordDb`]) and the worker's record of each
//! assignment it accepted ([`WorkItem`]). Plain data; [`super::store`]
//! keeps them in sled.
//!
//! The submitter's quorum is not stored: it is rebuilt by replaying
//! [`QuorumInput`]s in order, which keeps one source of truth for the
//! decision logic (agora-verifier).

use std::collections::BTreeMap;

use agora_protocol::rpc::AttestReport;
use agora_protocol::{
    Acceptance, Attestation, ContentId, FailKind, JobSpec, PeerId, Signed, Verdict,
};
use serde::{Deserialize, Serialize};

use super::state::{AdaptivePlan, JobEvent, JobState, ReplicationMode};

/// Most progress events kept per job; later non-final events are dropped.
pub const MAX_EVENTS: usize = 256;

/// One step fed to the quorum, in order; replayed after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuorumInput {
    /// An executor was assigned.
    Assign(PeerId),
    /// An attestation was accepted.
    Attest(Signed<Attestation>),
    /// An executor missed its deadline.
    Missed(PeerId),
    /// An executor reported failure or could not be reached.
    Crashed(PeerId),
    /// An executor that could not be reached answered after all.
    Reinstate(PeerId),
}

/// Where one assigned executor stands, for display and timers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredExecutor {
    /// The executor.
    pub peer: PeerId,
    /// Assignment attempt.
    pub attempt: u32,
    /// Where it stands.
    pub state: ExecutorState,
    /// When assigned (ms since the Unix epoch).
    pub assigned_at_ms: u64,
    /// The attestation is due by then.
    pub deadline_ms: u64,
    /// When it answered or ended.
    pub ended_at_ms: Option<u64>,
    /// The hash it attested.
    pub result_hash: Option<ContentId>,
    /// Where its bundle is, once answered.
    pub report: Option<AttestReport>,
    /// Its failure report.
    pub error: Option<String>,
    /// Its signed acceptance of the assignment: what a verdict shows to
    /// charge it with a miss. Absent in records from before it existed.
    #[serde(default)]
    pub acceptance: Option<Signed<Acceptance>>,
    /// Ended because it could not be reached (not because it failed): its
    /// answer still counts if it comes back.
    #[serde(default)]
    pub lost: bool,
}

/// An assigned executor's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorState {
    /// Assigned, no answer yet.
    Running,
    /// Attested a hash.
    Answered,
    /// Missed its deadline.
    Missed,
    /// Crashed (a trap, an engine error), or could not be reached.
    Crashed,
    /// The job ran past its wall-clock limit.
    TimedOut,
    /// The job exceeded its memory limit.
    OutOfMemory,
    /// The job used up its fuel budget.
    OutOfFuel,
    /// The job's output exceeded the output cap.
    OutputTooLarge,
    /// The executor could not start the job (refused, or could not get
    /// a blob or image).
    Unable,
    /// Still running when the job was decided; its answer was not needed.
    Released,
}

impl ExecutorState {
    /// The lower-case name the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Answered => "answered",
            Self::Missed => "missed",
            Self::Crashed => "crashed",
            Self::TimedOut => "timed_out",
            Self::OutOfMemory => "out_of_memory",
            Self::OutOfFuel => "out_of_fuel",
            Self::OutputTooLarge => "output_too_large",
            Self::Unable => "unable",
            Self::Released => "released",
        }
    }

    /// The state of an executor whose failure report says `kind`.
    pub fn from_fail(kind: FailKind) -> Self {
        match kind {
            FailKind::TimedOut => Self::TimedOut,
            FailKind::OutOfMemory => Self::OutOfMemory,
            FailKind::OutOfFuel => Self::OutOfFuel,
            FailKind::OutputTooLarge => Self::OutputTooLarge,
            FailKind::Unable => Self::Unable,
            FailKind::Crashed => Self::Crashed,
        }
    }
}

/// A blob of the verified result, kept in this node's blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBlob {
    /// Content id.
    pub id: ContentId,
    /// Size in bytes.
    pub size: u64,
}

/// The verified result, as blobs of this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResult {
    /// The accepted hash.
    pub result_hash: ContentId,
    /// The program's exit code.
    pub exit_code: i32,
    /// Standard output.
    pub stdout: StoredBlob,
    /// Standard error of the executor whose bundle was kept.
    pub stderr: StoredBlob,
    /// Output files by name.
    pub outputs: BTreeMap<String, StoredBlob>,
    /// Executors that attested the accepted hash.
    pub agreeing: Vec<PeerId>,
}

/// The submitter's record of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecordDb {
    /// The signed spec; its content id is the job id.
    pub spec: Signed<JobSpec>,
    /// Where it stands.
    pub state: JobState,
    /// Whether this node may execute it itself when nobody else can.
    pub allow_local: bool,
    /// When it was submitted.
    pub submitted_at_ms: u64,
    /// When it reached a final state.
    pub finished_at_ms: Option<u64>,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    /// Bids received.
    pub bids: u32,
    /// Offers made.
    pub offers: u32,
    /// Most executors the quorum may use.
    pub cap: u8,
    /// Quorum inputs in order.
    pub log: Vec<QuorumInput>,
    /// Every executor assigned, in order.
    pub executors: Vec<StoredExecutor>,
    /// The verified result.
    pub result: Option<StoredResult>,
    /// The signed verdict, once decided.
    pub verdict: Option<Signed<Verdict>>,
    /// Progress so far (at most [`MAX_EVENTS`]).
    pub events: Vec<JobEvent>,
    /// Fixed or adaptive replication (records older than the field are
    /// fixed).
    #[serde(default)]
    pub replication: ReplicationMode,
    /// What adaptive replication chose, once the first executor is known.
    #[serde(default)]
    pub plan: Option<AdaptivePlan>,
}

impl JobRecordDb {
    /// The job id.
    pub fn id(&self) -> ContentId {
        self.spec.id()
    }

    /// Appends a progress event, keeping the log bounded (final events
    /// always get in).
    pub fn push_event(&mut self, event: JobEvent) {
        if self.events.len() < MAX_EVENTS || event.state.is_final() {
            self.events.push(event);
        }
    }

    /// The executor entry for `peer`'s latest assignment.
    pub fn executor_mut(&mut self, peer: &PeerId) -> Option<&mut StoredExecutor> {
        self.executors.iter_mut().rev().find(|e| e.peer == *peer)
    }
}

/// How far an executor got with an assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkState {
    /// Accepted; waiting for a slot or running.
    Accepted,
    /// Ran; the report has not been delivered yet.
    Done(AttestReport),
    /// Could not run; the error has not been delivered yet.
    Failed(Failure),
    /// The submitter has the answer.
    Delivered,
    /// The submitter cancelled it: the sandbox was stopped and nothing is
    /// owed to anyone, so a restart neither resumes nor reports it.
    Cancelled,
}

/// Why an assignment produced no report, as sent to its submitter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "FailureRepr")]
pub struct Failure {
    /// What went wrong, for people (names the broken limit and its flag).
    pub error: String,
    /// The limit broken, or whether the executor could not start it.
    pub kind: FailKind,
}

impl From<String> for Failure {
    /// A failure with no better kind than [`FailKind::Crashed`].
    fn from(error: String) -> Self {
        Self {
            error,
            kind: FailKind::Crashed,
        }
    }
}

impl From<&str> for Failure {
    fn from(error: &str) -> Self {
        error.to_string().into()
    }
}

/// What a stored [`Failure`] may look like: records written before the
/// kind was kept hold the bare text.
#[derive(Deserialize)]
#[serde(untagged)]
enum FailureRepr {
    /// Older records: the text only.
    Text(String),
    /// Text and kind.
    Full {
        error: String,
        #[serde(default)]
        kind: FailKind,
    },
}

impl From<FailureRepr> for Failure {
    fn from(r: FailureRepr) -> Self {
        match r {
            FailureRepr::Text(error) => error.into(),
            FailureRepr::Full { error, kind } => Self { error, kind },
        }
    }
}

/// The worker's record of one accepted assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItem {
    /// The submitter's signed spec.
    pub spec: Signed<JobSpec>,
    /// Who assigned it (the spec's signer).
    pub submitter: PeerId,
    /// Assignment attempt.
    pub attempt: u32,
    /// The answer is due by then (ms since the Unix epoch).
    pub deadline_ms: u64,
    /// When accepted.
    pub accepted_at_ms: u64,
    /// Where it stands.
    pub state: WorkState,
}

#[cfg(test)]
mod failure_tests {
    use agora_protocol::codec;

    use super::*;

    #[test]
    fn a_failure_stored_as_bare_text_still_loads() {
        // How WorkState::Failed was stored before it kept the kind.
        #[derive(Serialize)]
        enum Old {
            Failed(String),
        }
        let old = codec::encode(&Old::Failed("boom".into()));
        let state: WorkState = codec::decode_unbounded(&old, 1 << 20).unwrap();
        assert_eq!(state, WorkState::Failed("boom".into()));

        let new = WorkState::Failed(Failure {
            error: "timed out".into(),
            kind: FailKind::TimedOut,
        });
        let back: WorkState = codec::decode_unbounded(&codec::encode(&new), 1 << 20).unwrap();
        assert_eq!(back, new);
    }
}
