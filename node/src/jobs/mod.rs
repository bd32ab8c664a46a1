//! The job lifecycle on this node: the submitter side (offer, collect
//! bids, assign, collect attestations, decide with the quorum, publish the
//! verdict) and the worker side (bid, accept, fetch blobs, run the
//! sandbox, sign and return the attestation), both persisted in sled.
//!
//! - [`checks`]: pure checks (capability matching, offer/bid/assignment
//!   validation).
//! - [`record`]: the persisted records and their trees.
//! - [`submitter`]: one task per submitted job, driving the quorum.
//! - [`worker`]: bidding and executing assignments.
//! - [`dispatch`]: routes gossip and inbound requests to the two sides.
//! - [`api`]: what the control API asks of the jobs (submit, list, ...).
//!
//! **Invariant:** every state change is flushed to the store before the
//! node acts on it (sends an assignment, answers an assignment, reports a
//! result), so a restart resumes where the node left off.

pub mod checks;
pub mod core;
pub mod dispatch;
pub mod fault;
pub mod gc;
pub mod image;
pub mod input;
pub mod link;
pub mod metrics;
pub mod record;
pub mod results;
pub mod state;
pub mod store;
pub mod submitter;
pub mod worker;
pub mod world;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_protocol::{ContentId, NodeKey, PeerId};
use agora_verifier::AdaptivePolicy;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::state::JobEvent;
use crate::blobs::BlobStore;
use crate::executor::registry::Sandboxes;
use crate::network::adverts::SharedPeerBook;
use crate::network::peeraddrs::PeerAddrs;
use crate::network::NetworkHandle;
use crate::reputation::{Applied, ReputationStore, SharedReputation};

use self::input::JobInput;
use self::link::LocalHandler;
use self::metrics::JobMetrics;
use self::store::JobDb;
use self::worker::WorkerState;

/// Why a job request failed; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// The request is wrong (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such job or blob (404).
    #[error("{0}")]
    NotFound(String),
    /// The job is not in a state that allows it (409).
    #[error("{0}")]
    Conflict(String),
    /// Too many jobs in flight (503).
    #[error("{0}")]
    Busy(String),
    /// The node failed (500).
    #[error("{0}")]
    Internal(String),
}

/// Settings of the job lifecycle.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Jobs this node runs at once as executor.
    pub max_jobs: u32,
    /// Accepted assignments waiting for a slot, at most.
    pub queue_len: u32,
    /// Bids are collected at least this long, unless every capable node
    /// known has bid already.
    pub bid_window: Duration,
    /// Bids are collected at most this long before assigning what there
    /// is (or failing when nobody bid).
    pub bid_window_max: Duration,
    /// Submitted jobs in flight at most; more are refused with 503.
    pub max_active_jobs: usize,
    /// Largest blob fetched from a peer.
    pub max_blob_bytes: u64,
    /// Memory offered to jobs, bytes.
    pub memory_bytes: u64,
    /// CPU cores offered to jobs.
    pub cpu_cores: u32,
    /// Deliberate misbehaviour as executor (testnets only).
    pub fault: Option<fault::Fault>,
    /// Choose executors ignoring reputation (benchmarks measure what
    /// reputation buys; never set in normal operation).
    pub uniform_selection: bool,
    /// When adaptive jobs may run on one trusted executor.
    pub adaptive: AdaptivePolicy,
    /// This node's operator labels: it bids only on jobs whose required
    /// labels are all among them.
    pub labels: BTreeMap<String, String>,
    /// Whether this node fetches Docker images it lacks (it runs Docker
    /// and the operator did not pass `--no-image-fetch`).
    pub image_fetch: bool,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            max_jobs: 4,
            queue_len: 64,
            bid_window: Duration::from_millis(300),
            bid_window_max: Duration::from_secs(2),
            max_active_jobs: 4096,
            max_blob_bytes: 1024 * 1024 * 1024,
            memory_bytes: 1024 * 1024 * 1024,
            cpu_cores: 1,
            fault: None,
            uniform_selection: false,
            adaptive: AdaptivePolicy::default(),
            labels: BTreeMap::new(),
            image_fetch: false,
        }
    }
}

/// What the job lifecycle uses from the rest of the node.
pub struct JobsDeps {
    /// The node's key (signs offers, bids, assignments, attestations).
    pub key: NodeKey,
    /// The network.
    pub net: NetworkHandle,
    /// The blob store.
    pub blobs: BlobStore,
    /// The sled store.
    pub db: sled::Db,
    /// Nodes heard from (capabilities).
    pub book: SharedPeerBook,
    /// The sandboxes, by executor kind (their capabilities refreshed by
    /// the daemon).
    pub sandboxes: Arc<Sandboxes>,
    /// Where the metrics go.
    pub registry: prometheus::Registry,
    /// Docker images as blobs, when this node runs Docker.
    pub images: Option<crate::images::Images>,
    /// This node's opinion of its peers.
    pub reputation: SharedReputation,
    /// Where applied verdicts go to be persisted.
    pub reputation_writes: mpsc::Sender<Applied>,
    /// Where they are persisted (read for the evidence of each score).
    pub reputation_store: ReputationStore,
    /// Connected peers' remote addresses, kept by the daemon.
    pub peer_addrs: PeerAddrs,
}

/// A submitted job whose task runs.
pub(crate) struct ActiveJob {
    /// Inputs to its task (bounded).
    pub tx: mpsc::Sender<JobInput>,
    /// Its progress events.
    pub events: broadcast::Sender<JobEvent>,
}

/// Everything the lifecycle shares.
pub(crate) struct Ctx {
    pub me: PeerId,
    pub key: NodeKey,
    pub net: NetworkHandle,
    pub blobs: BlobStore,
    pub db: JobDb,
    pub book: SharedPeerBook,
    pub reputation: SharedReputation,
    pub reputation_writes: mpsc::Sender<Applied>,
    pub reputation_store: ReputationStore,
    pub cfg: JobsConfig,
    pub metrics: JobMetrics,
    pub active: Mutex<HashMap<ContentId, ActiveJob>>,
    /// The address each connected peer's connection came from (not what
    /// it claims), whose subnet spreads executors.
    pub peer_addrs: PeerAddrs,
    pub worker: WorkerState,
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
    /// Answers the requests this node sends itself (`--allow-local`).
    pub local: LocalHandler,
    /// Docker images as blobs, when this node runs Docker.
    pub images: Option<crate::images::Images>,
    /// Job arrays submitted through this node.
    pub arrays: crate::arrays::ArraysState,
    /// Ids of submitted jobs whose task ended (array drivers listen).
    pub finished: broadcast::Sender<ContentId>,
}

/// Notices of ended jobs buffered per listener; a listener that lags
/// re-reads its jobs.
const FINISHED_QUEUE: usize = 1024;

/// The job lifecycle of a node: cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    /// Shared state.
    pub(crate) ctx: Arc<Ctx>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").field("me", &self.ctx.me).finish()
    }
}

impl Jobs {
    /// This node's images as blobs, when it runs Docker.
    pub fn images(&self) -> Option<&crate::images::Images> {
        self.ctx.images.as_ref()
    }

    /// Builds the lifecycle. Nothing runs until [`Jobs::run`].
    pub fn new(
        cfg: JobsConfig,
        deps: JobsDeps,
        cancel: CancellationToken,
    ) -> Result<Self, JobsError> {
        if let Some(images) = &deps.images {
            images
                .metrics()
                .register(&deps.registry)
                .map_err(|e| JobsError::Internal(format!("image metrics: {e}")))?;
        }
        let metrics = JobMetrics::new(&deps.registry)
            .map_err(|e| JobsError::Internal(format!("registering job metrics: {e}")))?;
        let db = JobDb::open(&deps.db).map_err(|e| JobsError::Internal(e.to_string()))?;
        let array_db = crate::arrays::store::ArrayDb::open(&deps.db, db.clone())
            .map_err(|e| JobsError::Internal(e.to_string()))?;
        let worker = WorkerState::new(&cfg, deps.sandboxes);
        Ok(Self {
            ctx: Arc::new(Ctx {
                me: deps.key.peer_id(),
                key: deps.key,
                net: deps.net,
                blobs: deps.blobs,
                db,
                book: deps.book,
                reputation: deps.reputation,
                reputation_writes: deps.reputation_writes,
                reputation_store: deps.reputation_store,
                cfg,
                metrics,
                active: Mutex::new(HashMap::new()),
                peer_addrs: deps.peer_addrs,
                worker,
                cancel,
                tasks: TaskTracker::new(),
                local: dispatch::handle_local,
                images: deps.images,
                arrays: crate::arrays::ArraysState {
                    db: array_db,
                    active: Mutex::new(HashMap::new()),
                },
                finished: broadcast::channel(FINISHED_QUEUE).0,
            }),
        })
    }

    /// Resumes unfinished work from the store, then serves gossip and
    /// requests until cancelled; returns once every job task has stopped.
    pub async fn run(self) {
        submitter::resume_all(&self.ctx).await;
        worker::resume_all(&self.ctx).await;
        crate::arrays::driver::resume_all(&self);
        dispatch::run(self.ctx.clone()).await;
        self.ctx.tasks.close();
        self.ctx.tasks.wait().await;
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.ctx.me
    }

    /// Assignments this node is running or has queued as executor.
    pub fn running_jobs(&self) -> u32 {
        self.ctx.worker.active_count()
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.ctx.blobs
    }

    /// The reputation book.
    pub fn reputation(&self) -> SharedReputation {
        self.ctx.reputation.clone()
    }
}
