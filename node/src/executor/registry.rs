//! The sandboxes this node runs, by [`ExecutorSpec::kind`]: the one place
//! that knows which executor kinds exist. The daemon starts them here
//! ([`Sandboxes::start`]), the worker runs jobs through [`Sandboxes::get`],
//! and the capability advert and job matching read
//! [`Sandboxes::capabilities`].
//!
//! **Adding a kind:** a variant in protocol's `ExecutorSpec`, its module
//! here beside `wasm`/`docker` implementing [`Executor`], a [`Sandbox`]
//! variant and its start in [`Sandboxes::start`]. Nothing outside
//! `executor/` and `protocol/` names a kind.

use std::path::PathBuf;
use std::time::Duration;

use agora_protocol::{ContentId, ExecutorSpec, PeerId, ResultBundle};
use tracing::{info, warn};

use super::docker::{DockerConfig, DockerExecutor};
use super::wasm::{WasmConfig, WasmExecutor};
use super::{Capabilities, ExecError, ExecRequest, Executor};

/// How long Docker gets to answer at start before the node goes on
/// without it.
const DOCKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One sandbox of any kind. An enum rather than a boxed trait object
/// because [`Executor`] has async methods.
#[derive(Debug, Clone)]
pub enum Sandbox {
    /// WASI modules in wasmtime.
    Wasm(WasmExecutor),
    /// Local images in Docker.
    Docker(DockerExecutor),
}

impl Executor for Sandbox {
    fn kind(&self) -> &'static str {
        match self {
            Self::Wasm(e) => e.kind(),
            Self::Docker(e) => e.kind(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        match self {
            Self::Wasm(e) => e.capabilities(),
            Self::Docker(e) => e.capabilities(),
        }
    }

    fn program(&self, spec: &ExecutorSpec) -> Option<ContentId> {
        match self {
            Self::Wasm(e) => e.program(spec),
            Self::Docker(e) => e.program(spec),
        }
    }

    async fn refresh(&self) -> Result<(), ExecError> {
        match self {
            Self::Wasm(e) => e.refresh().await,
            Self::Docker(e) => e.refresh().await,
        }
    }

    async fn execute(&self, req: ExecRequest) -> Result<ResultBundle, ExecError> {
        match self {
            Self::Wasm(e) => e.execute(req).await,
            Self::Docker(e) => e.execute(req).await,
        }
    }
}

/// What [`Sandboxes::start`] needs.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The node's data directory; each sandbox keeps its files below it
    /// (`wasm-cache/`, `docker-work/`).
    pub data_dir: PathBuf,
    /// Whether to try Docker at all.
    pub docker: bool,
    /// The engine's socket; `None`: `DOCKER_HOST` or the default socket.
    pub docker_host: Option<String>,
    /// This node, to label (and later reap) its containers.
    pub peer: PeerId,
}

/// The sandboxes of this node by kind. Cheap to share behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct Sandboxes {
    /// One per [`Executor::kind`], in start order (the order adverts and
    /// the API list them); a handful, so a scan is the fastest lookup.
    by_kind: Vec<Sandbox>,
}

impl Sandboxes {
    /// A registry of the given sandboxes (the first of a kind wins).
    pub fn new(list: impl IntoIterator<Item = Sandbox>) -> Self {
        let mut by_kind: Vec<Sandbox> = Vec::new();
        for s in list {
            if by_kind.iter().all(|o| o.kind() != s.kind()) {
                by_kind.push(s);
            }
        }
        Self { by_kind }
    }

    /// Starts every sandbox this node can run. Wasm must start (it is the
    /// node's baseline); Docker is skipped with a warning when it is
    /// disabled or does not answer within [`DOCKER_CONNECT_TIMEOUT`].
    pub async fn start(cfg: &SandboxConfig) -> Result<Self, ExecError> {
        let wasm = WasmExecutor::new(WasmConfig {
            cache_dir: Some(cfg.data_dir.join("wasm-cache")),
            ..WasmConfig::default()
        })?;
        let mut list = vec![Sandbox::Wasm(wasm)];
        if cfg.docker {
            if let Some(d) = start_docker(cfg).await {
                list.push(Sandbox::Docker(d));
            }
        } else {
            info!("docker executor disabled by configuration");
        }
        Ok(Self::new(list))
    }

    /// The sandbox running `kind` jobs, if this node runs them.
    pub fn get(&self, kind: &str) -> Option<&Sandbox> {
        self.by_kind.iter().find(|s| s.kind() == kind)
    }

    /// The sandbox for `spec`'s kind, or [`ExecError::Unsupported`].
    pub fn for_spec(&self, spec: &ExecutorSpec) -> Result<&Sandbox, ExecError> {
        let kind = spec.kind();
        self.get(kind).ok_or(ExecError::Unsupported { kind })
    }

    /// What each sandbox offers now, by kind.
    pub fn capabilities(&self) -> Vec<Capabilities> {
        self.by_kind.iter().map(Executor::capabilities).collect()
    }

    /// Refreshes every sandbox's capabilities; a failure is logged and
    /// the previous capabilities stay.
    pub async fn refresh(&self) {
        for s in &self.by_kind {
            if let Err(e) = s.refresh().await {
                tracing::debug!(kind = s.kind(), error = %e, "cannot refresh a sandbox");
            }
        }
    }

    /// The Wasm sandbox, for the submit API's module check.
    pub fn wasm(&self) -> Option<&WasmExecutor> {
        match self.get("wasm") {
            Some(Sandbox::Wasm(w)) => Some(w),
            _ => None,
        }
    }

    /// The Docker sandbox, for the submit API's image lookup.
    pub fn docker(&self) -> Option<&DockerExecutor> {
        match self.get("docker") {
            Some(Sandbox::Docker(d)) => Some(d),
            _ => None,
        }
    }
}

/// Connects to Docker if it answers in time, removes containers a previous
/// run of this node left behind, and reads the local images.
async fn start_docker(cfg: &SandboxConfig) -> Option<DockerExecutor> {
    let work_dir = cfg.data_dir.join("docker-work");
    if let Err(e) = std::fs::create_dir_all(&work_dir) {
        warn!(path = %work_dir.display(), error = %e, "docker disabled: cannot create its work dir");
        return None;
    }
    let dcfg = DockerConfig {
        socket: cfg.docker_host.clone(),
        node_label: Some(cfg.peer.to_string()),
        work_dir,
        ..DockerConfig::default()
    };
    let docker =
        match tokio::time::timeout(DOCKER_CONNECT_TIMEOUT, DockerExecutor::connect(dcfg)).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                warn!(error = %e, "docker executor disabled; running Wasm jobs only");
                return None;
            }
            Err(_) => {
                warn!(
                "docker did not answer within {DOCKER_CONNECT_TIMEOUT:?}; running Wasm jobs only"
            );
                return None;
            }
        };
    match docker.reap().await {
        Ok(0) => {}
        Ok(n) => info!(removed = n, "removed containers left by a previous run"),
        Err(e) => warn!(error = %e, "cannot reap old containers"),
    }
    if let Err(e) = docker.refresh().await {
        warn!(error = %e, "cannot list docker images");
    }
    let images = docker.capabilities().images.map_or(0, |i| i.len());
    info!(images, "docker executor ready");
    Some(docker)
}
