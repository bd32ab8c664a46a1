//! The daemon: wires identity, store, executors, network, adverts and the
//! control API together, and takes them down in order.
//!
//! [`start`] brings a node up and returns a [`Daemon`] (tests use it to
//! start nodes on `127.0.0.1:0` ports and read the bound API address);
//! [`run`] is the binary's entry point: start, wait for the shutdown
//! future (SIGINT/SIGTERM), stop. Every long-lived task takes the one
//! [`CancellationToken`] and lives in one [`JoinSet`], so shutdown leaves
//! nothing running; the store is flushed last.
//!
//! Files in the data directory: `identity.key` (the node's key),
//! `api.token` (the API bearer token), `api.addr` (the API address of the
//! running daemon, removed on clean shutdown), `store/` (sled),
//! `wasm-cache/` (compiled modules), `docker-work/` (per-run job dirs).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_protocol::limits::MAX_IMAGES;
use agora_protocol::{
    CapabilityAdvert, NodeKey, PeerId, TOPIC_ADVERTS, TOPIC_JOBS, TOPIC_VERDICTS,
};
use agora_verifier::reputation::{ReputationBook, ReputationConfig};
use libp2p::Multiaddr;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api::client::ADDR_FILE;
use crate::api::token::{load_or_create_token, TokenError, TOKEN_FILE};
use crate::api::types::ExecutorInfo;
use crate::api::{self, ApiError, ApiState};
use crate::blobs::{BlobError, BlobStore};
use crate::clock::unix_now_ms;
use crate::config::{available_cores, DaemonConfig};
use crate::executor::registry::{SandboxConfig, Sandboxes};
use crate::executor::ExecError;
use crate::fsutil::{write_atomic, Existing, FileError};
use crate::identity::{self, IdentityError, IDENTITY_FILE};
use crate::images::{Images, ImagesConfig};
use crate::jobs::dispatch::OfferValidator;
use crate::jobs::{Jobs, JobsConfig, JobsDeps, JobsError};
use crate::network::adverts::lock_book;
use crate::network::adverts::{run_advert_loop, AdvertConfig, AdvertValidator, SharedPeerBook};
use crate::network::peeraddrs::{self, PeerAddrs};
use crate::network::peerbook::PeerBook;
use crate::network::peerstore;
use crate::network::{
    Network, NetworkConfig, NetworkError, NetworkHandle, TopicValidators, MAX_REJOIN_PEERS,
};
use crate::reputation::{self, ReputationStore, SharedReputation, VerdictValidator};

/// Name of the sled store directory inside the data directory.
pub const STORE_DIR: &str = "store";
/// Name of the blob directory inside the data directory.
pub const BLOBS_DIR: &str = "blobs";
/// How often blobs no job references are collected.
const BLOB_GC_INTERVAL: Duration = Duration::from_secs(300);
/// sled's page cache. Its default (1 GiB) let the daemon's RSS grow by
/// about 55 KB per submitted job, to over 1 GiB after 20,000 jobs
/// (docs/benchmarks.md, "Job arrays"); records are read back rarely.
const STORE_CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// How often the sandboxes' advertised capabilities (Docker's images)
/// are refreshed.
const SANDBOX_REFRESH: Duration = Duration::from_secs(60);
/// How often the peer book is written to the store.
const PEER_BOOK_SAVE: Duration = Duration::from_secs(30);
/// How long shutdown waits for tasks before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the daemon could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The data directory or one of its files could not be written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The node key is unusable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The API token is unusable.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The store could not be opened or flushed.
    #[error("store {}: {reason}", path.display())]
    Store {
        /// The store directory.
        path: PathBuf,
        /// sled's error, with a hint.
        reason: String,
    },
    /// The sandboxes could not be started (the Wasm one must).
    #[error("starting the executors: {0}")]
    Wasm(#[from] ExecError),
    /// The network could not start.
    #[error("starting the network: {0}")]
    Network(#[from] NetworkError),
    /// The control API could not start.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The API address could not be bound.
    #[error("cannot listen for the control API on {addr}: {source}")]
    ApiBind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The blob store could not be opened.
    #[error("opening the blob store: {0}")]
    Blobs(#[from] BlobError),
    /// The job lifecycle could not be set up.
    #[error("starting the job lifecycle: {0}")]
    Jobs(#[from] JobsError),
    /// A blocking helper task died.
    #[error("internal task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A running daemon. Stop it with [`Daemon::shutdown`]; dropping it
/// cancels its tasks but skips the store flush.
pub struct Daemon {
    /// The node's identity.
    peer_id: PeerId,
    /// Where the control API actually listens.
    api_addr: SocketAddr,
    /// The API bearer token.
    token: String,
    /// The data directory, to remove `api.addr` on shutdown.
    data_dir: PathBuf,
    /// To ask the network about addresses.
    network: NetworkHandle,
    /// Nodes heard from.
    book: SharedPeerBook,
    /// Stops every task.
    cancel: CancellationToken,
    /// Every task of the daemon.
    tasks: JoinSet<()>,
    /// The store, flushed on shutdown.
    db: sled::Db,
    /// The job lifecycle.
    jobs: Jobs,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("peer_id", &self.peer_id)
            .field("api_addr", &self.api_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Daemon {
    /// The node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The bound control API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The API bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The network handle.
    pub fn network(&self) -> &NetworkHandle {
        &self.network
    }

    /// The job lifecycle (what the job API routes call).
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// The peer book.
    pub fn peer_book(&self) -> &SharedPeerBook {
        &self.book
    }

    /// Fires when the daemon stops, on request or because a vital task
    /// ended.
    pub fn stopped(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The p2p listen addresses, waiting up to `wait` for the first to
    /// become active (empty if none did).
    pub async fn listen_addrs(&self, wait: Duration) -> Vec<Multiaddr> {
        let end = tokio::time::Instant::now() + wait;
        loop {
            match self.network.listen_addrs().await {
                Ok(a) if !a.is_empty() => return a,
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "listen addresses unavailable");
                    return Vec::new();
                }
            }
            if tokio::time::Instant::now() >= end {
                return Vec::new();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every task (aborting any that outlive [`SHUTDOWN_GRACE`]),
    /// flushes the store and removes `api.addr`.
    pub async fn shutdown(mut self) -> Result<(), DaemonError> {
        info!("shutting down");
        self.cancel.cancel();
        let mut tasks = std::mem::take(&mut self.tasks);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(r) = tasks.join_next().await {
                if let Err(e) = r {
                    if e.is_panic() {
                        warn!(error = %e, "a daemon task panicked");
                    }
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!("tasks still running after {SHUTDOWN_GRACE:?}; aborting them");
            tasks.shutdown().await;
        }
        let addr_file = self.data_dir.join(ADDR_FILE);
        if std::fs::read_to_string(&addr_file).is_ok_and(|s| s.trim() == self.api_addr.to_string())
        {
            if let Err(e) = std::fs::remove_file(&addr_file) {
                warn!(path = %addr_file.display(), error = %e, "cannot remove the API address file");
            }
        }
        let db = self.db.clone();
        let path = self.data_dir.join(STORE_DIR);
        tokio::task::spawn_blocking(move || db.flush())
            .await?
            .map_err(|e| DaemonError::Store {
                path,
                reason: format!("flushing: {e}"),
            })?;
        info!("stopped");
        Ok(())
    }
}

/// Starts a daemon, waits for `shutdown` (or for a vital task to fail),
/// then stops it cleanly.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let daemon = start(config).await?;
    let stopped = daemon.stopped();
    tokio::select! {
        () = shutdown => info!("shutdown requested"),
        () = stopped.cancelled() => warn!("a vital task stopped; shutting down"),
    }
    daemon.shutdown().await
}

/// Total memory of this machine in bytes, from `/proc/meminfo` (0 if
/// unknown).
fn total_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib.saturating_mul(1024))
}

async fn open_store(path: PathBuf) -> Result<sled::Db, DaemonError> {
    let p = path.clone();
    tokio::task::spawn_blocking(move || {
        sled::Config::new()
            .path(&p)
            .cache_capacity(STORE_CACHE_BYTES)
            .open()
    })
    .await?
    .map_err(|e| DaemonError::Store {
        path,
        reason: format!("{e} (is another agora daemon using this data directory?)"),
    })
}

/// Saves the peer book every [`PEER_BOOK_SAVE`] and once more at shutdown.
async fn save_peer_book(book: SharedPeerBook, tree: sled::Tree, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(PEER_BOOK_SAVE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let last = tokio::select! {
            biased;
            () = cancel.cancelled() => true,
            _ = tick.tick() => false,
        };
        let snapshot = lock_book(&book).clone();
        let tree = tree.clone();
        match tokio::task::spawn_blocking(move || peerstore::save(&snapshot, &tree, unix_now_ms()))
            .await
        {
            Ok(Ok(n)) => debug!(nodes = n, "peer book saved"),
            Ok(Err(e)) => warn!(error = %e, "cannot save the peer book"),
            Err(e) => warn!(error = %e, "peer book save task failed"),
        }
        if last {
            break;
        }
    }
}

/// Brings a node up: identity, token, store, executors, network, adverts,
/// control API. Writes the API's bound address to `DATA_DIR/api.addr`.
pub async fn start(config: DaemonConfig) -> Result<Daemon, DaemonError> {
    let data_dir = config.data_dir.clone();
    if let Some(f) = &config.fault {
        // Loud on purpose: a faulty node must never go unnoticed.
        warn!("**********************************************************");
        warn!("** TESTNET FAULT MODE '{f}': this node misbehaves on purpose **");
        warn!("**********************************************************");
    }
    std::fs::create_dir_all(&data_dir)
        .map_err(FileError::at("creating data directory", &data_dir))?;
    let key: NodeKey = identity::load_or_create(&data_dir.join(IDENTITY_FILE))?;
    let peer_id = key.peer_id();
    let token = load_or_create_token(&data_dir.join(TOKEN_FILE))?;
    let db = open_store(data_dir.join(STORE_DIR)).await?;

    let sandboxes = Arc::new(
        Sandboxes::start(&SandboxConfig {
            data_dir: data_dir.clone(),
            docker: config.docker,
            docker_host: config.docker_host.clone(),
            peer: peer_id,
        })
        .await?,
    );

    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let registry = prometheus::Registry::new();
    let peer_tree = db.open_tree("peerbook").map_err(|e| DaemonError::Store {
        path: data_dir.join(STORE_DIR),
        reason: e.to_string(),
    })?;
    let mut restored = PeerBook::default();
    let n = peerstore::load(&mut restored, &peer_tree);
    if n > 0 {
        info!(nodes = n, "peer book restored");
    }
    let book: SharedPeerBook = Arc::new(Mutex::new(restored));
    tasks.spawn(save_peer_book(book.clone(), peer_tree, cancel.clone()));
    let agent_version = format!("agora/{}", env!("CARGO_PKG_VERSION"));

    let mut net_cfg = NetworkConfig::new(key.clone());
    // The network this node knew, in case every bootstrap is gone.
    net_cfg.known_peers = lock_book(&book).rejoin_candidates(MAX_REJOIN_PEERS);
    net_cfg.listen = config.listen.clone();
    net_cfg.bootstrap = config.bootstrap.clone();
    net_cfg.external_addrs = config.external.clone();
    // An operator who names a specific address (not 0.0.0.0 or ::) says
    // peers can reach it there: serve the DHT at once instead of waiting
    // for AutoNAT, which never confirms private or loopback addresses.
    net_cfg.listen_addrs_are_external =
        !config.listen.is_empty() && config.listen.iter().all(names_specific_ip);
    net_cfg.agent_version = agent_version.clone();
    net_cfg.registry = Some(registry.clone());
    let reputation_store = ReputationStore::open(&db).map_err(|e| DaemonError::Store {
        path: data_dir.join(STORE_DIR),
        reason: e.to_string(),
    })?;
    let mut rep_book = ReputationBook::new(ReputationConfig::default());
    rep_book.set_trusted(config.trust.iter().copied());
    reputation_store.load_into(&mut rep_book);
    let reputation: SharedReputation = Arc::new(Mutex::new(rep_book));
    let (reputation_writes, reputation_rx) = reputation::write_queue();
    tasks.spawn(reputation::run_writer(
        reputation_store.clone(),
        reputation.clone(),
        reputation_rx,
        cancel.clone(),
    ));
    net_cfg.validator = Arc::new(
        TopicValidators::new()
            .with(TOPIC_ADVERTS, Arc::new(AdvertValidator::new(book.clone())))
            .with(TOPIC_JOBS, Arc::new(OfferValidator::default()))
            .with(
                TOPIC_VERDICTS,
                Arc::new(VerdictValidator::new(
                    reputation.clone(),
                    reputation_writes.clone(),
                )),
            ),
    );
    let (network, handle) = Network::new(net_cfg)?;
    // Subscribed before the task runs, so the first connections are seen.
    let events = handle.subscribe();
    {
        let cancel = cancel.clone();
        tasks.spawn(async move {
            network.run(cancel.clone()).await;
            cancel.cancel();
        });
    }
    let peer_addrs: PeerAddrs = Arc::default();
    tasks.spawn(peeraddrs::track(events, peer_addrs.clone(), cancel.clone()));

    let cores = available_cores();
    let memory = total_memory_bytes();
    let blobs = {
        let dir = data_dir.join(BLOBS_DIR);
        let db = db.clone();
        let budget = config.blob_budget_bytes;
        tokio::task::spawn_blocking(move || BlobStore::open(&dir, &db, budget)).await??
    };
    blobs
        .metrics()
        .register(&registry)
        .map_err(|e| DaemonError::Jobs(JobsError::Internal(format!("blob metrics: {e}"))))?;
    let images = match sandboxes.docker() {
        Some(docker) => Some(
            Images::open(
                docker.clone(),
                blobs.clone(),
                &db,
                ImagesConfig {
                    fetch: config.image_fetch,
                    budget_bytes: config.image_cache_bytes,
                    ..ImagesConfig::default()
                },
            )
            .map_err(|e| DaemonError::Jobs(JobsError::Internal(format!("images: {e}"))))?,
        ),
        None => None,
    };
    let jobs = Jobs::new(
        JobsConfig {
            max_jobs: config.max_jobs,
            memory_bytes: memory,
            cpu_cores: cores,
            fault: config.fault.clone(),
            uniform_selection: config.uniform_selection,
            adaptive: config.adaptive,
            labels: config.labels.clone(),
            image_fetch: images.as_ref().is_some_and(Images::fetches),
            ..JobsConfig::default()
        },
        JobsDeps {
            key: key.clone(),
            net: handle.clone(),
            blobs,
            db: db.clone(),
            book: book.clone(),
            sandboxes: sandboxes.clone(),
            registry: registry.clone(),
            images: images.clone(),
            reputation,
            reputation_writes,
            reputation_store,
            peer_addrs: peer_addrs.clone(),
        },
        cancel.clone(),
    )?;
    {
        let jobs = jobs.clone();
        tasks.spawn(jobs.run());
    }
    tasks.spawn(crate::jobs::gc::run(jobs.clone(), BLOB_GC_INTERVAL));
    let source = {
        let jobs = jobs.clone();
        let sandboxes = sandboxes.clone();
        let agent_version = agent_version.clone();
        let labels: BTreeMap<String, String> = config.labels.clone();
        let max_jobs = config.max_jobs;
        let images = images.clone();
        Arc::new(move || {
            let mut advert = CapabilityAdvert {
                seq: 0,
                timestamp_ms: 0,
                agent_version: agent_version.clone(),
                wasm: None,
                docker_images: None,
                cpu_cores: cores,
                memory_bytes: memory,
                max_jobs,
                running_jobs: jobs.running_jobs(),
                labels: labels.clone(),
                listen_addrs: Vec::new(),
                executors: Vec::new(),
                image_fetch: images.as_ref().is_some_and(Images::fetches),
                shared_images: images.as_ref().map_or_else(Vec::new, |i| {
                    i.list()
                        .into_iter()
                        .map(|s| s.id)
                        .take(MAX_IMAGES)
                        .collect()
                }),
            };
            for c in sandboxes.capabilities() {
                advert.add_executor(c.kind, c.version, c.images);
            }
            advert
        })
    };
    tasks.spawn(run_advert_loop(
        handle.clone(),
        key,
        book.clone(),
        AdvertConfig {
            interval: config.advert_interval,
            source,
        },
        cancel.clone(),
    ));

    {
        let sandboxes = sandboxes.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(SANDBOX_REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    _ = tick.tick() => sandboxes.refresh().await,
                }
            }
        });
    }

    let executors: api::ExecutorsSource = {
        let sandboxes = sandboxes.clone();
        Arc::new(move || {
            sandboxes
                .capabilities()
                .into_iter()
                .map(|c| ExecutorInfo {
                    kind: c.kind.into(),
                    version: c.version,
                    images: c.images,
                })
                .collect()
        })
    };
    let router = api::router(ApiState {
        network: handle.clone(),
        book: book.clone(),
        peer_addrs,
        registry,
        executors,
        agent_version,
        token: token.clone(),
        jobs: Some(jobs.clone()),
    })?;
    let listener = TcpListener::bind(config.api)
        .await
        .map_err(|source| DaemonError::ApiBind {
            addr: config.api,
            source,
        })?;
    let api_addr = listener
        .local_addr()
        .map_err(|source| DaemonError::ApiBind {
            addr: config.api,
            source,
        })?;
    if !api_addr.ip().is_loopback() {
        warn!(%api_addr, "the control API is reachable from other machines; only the token protects it");
    }
    {
        let cancel = cancel.clone();
        tasks.spawn(async move {
            if let Err(e) = api::serve(listener, router, cancel.clone()).await {
                warn!(error = %e, "control API stopped");
            }
            cancel.cancel();
        });
    }
    // 0600 as before: the address is no secret, but only the owner's CLI
    // needs it.
    write_atomic(
        &data_dir.join(ADDR_FILE),
        format!("{api_addr}\n").as_bytes(),
        ".tmp-",
        0o600,
        Existing::Replace,
    )?;
    // The executors are kept alive for the job lifecycle; the Wasm one
    // owns its epoch ticker thread.
    tasks.spawn({
        let cancel = cancel.clone();
        async move {
            let _keep = sandboxes;
            cancel.cancelled().await;
        }
    });
    info!(peer = %peer_id, %api_addr, data_dir = %data_dir.display(), "agora daemon started");
    Ok(Daemon {
        peer_id,
        api_addr,
        token,
        data_dir,
        network: handle,
        book,
        cancel,
        tasks,
        db,
        jobs,
    })
}

/// Whether `addr` starts with a concrete IP address rather than a wildcard.
fn names_specific_ip(addr: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => !ip.is_unspecified(),
        Some(Protocol::Ip6(ip)) => !ip.is_unspecified(),
        _ => false,
    }
}

#[cfg(test)]
mod listen_tests {
    use super::*;

    #[test]
    fn only_concrete_ips_count_as_reachable() {
        let yes: Multiaddr = "/ip4/127.0.0.1/tcp/7400".parse().unwrap();
        let any4: Multiaddr = "/ip4/0.0.0.0/tcp/7400".parse().unwrap();
        let any6: Multiaddr = "/ip6/::/udp/7400/quic-v1".parse().unwrap();
        let dns: Multiaddr = "/dns4/example.invalid/tcp/7400".parse().unwrap();
        assert!(names_specific_ip(&yes));
        assert!(!names_specific_ip(&any4));
        assert!(!names_specific_ip(&any6));
        assert!(!names_specific_ip(&dns));
    }
}
