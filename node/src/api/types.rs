//! The JSON bodies of the control API, shared by the server and clients
//! (the CLI), so both sides agree on one definition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// `online` or `offline`.
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
