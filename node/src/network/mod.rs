//! The P2P network layer: one task ([`Network`]) owns the libp2p Swarm;
//! the rest of the node talks to it through a cheap, cloneable
//! [`NetworkHandle`] and hears from it through a broadcast of
//! [`NetworkEvent`]s.
//!
//! In: commands on a bounded channel, each with a oneshot reply (dial,
//! publish, connected peers, routing-table size, listen addresses,
//! requests to peers and answers to theirs). Out: events (listening,
//! peer connected or gone, gossip that passed validation, inbound
//! requests) and Prometheus counters ([`metrics::NetworkMetrics`]).
//!
//! Gossip is validated before it is forwarded: every message goes through
//! a per-peer rate limit ([`ratelimit`]), a size check and the node's
//! [`GossipValidator`] (for adverts: [`adverts::AdvertValidator`]), and
//! gossipsub is told Accept, Reject (the forwarder is penalised in peer
//! scoring) or Ignore.
//!
//! Reachability: Kademlia (server or client mode) with periodic bootstrap
//! and random walks, connection top-ups from the routing table, autonat,
//! a relay client on every node (it listens through relays when it has no
//! listen address or autonat finds it behind a NAT, see [`RelayUse`]), a
//! relay server on bootstrap nodes, and dcutr hole punching.
//!
//! **Invariant:** only the network task touches the Swarm; no locks
//! around it. **Boundary:** other modules use [`NetworkHandle`],
//! [`NetworkEvent`], [`NetworkConfig`] and the validator trait.
//!
//! Length: about 1,450 lines before its tests, over the usual 700,
//! because the one task that owns the Swarm handles every behaviour's
//! events in one `match`, and splitting it would hand the Swarm around;
//! what can stand alone already does (behaviour, rpc, adverts, peer book,
//! rate limit, metrics).

pub mod adverts;
mod behaviour;
pub mod metrics;
pub mod peeraddrs;
pub mod peerbook;
pub mod peerstore;
pub mod ratelimit;
pub mod rpc;

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_protocol::limits::{MAX_ADDRS, MAX_GOSSIP_BYTES};
use agora_protocol::NodeKey;
use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::core::Transport as _;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, kad, noise, tcp, yamux, Multiaddr, PeerId, Swarm, SwarmBuilder};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use self::behaviour::{Behaviour, BehaviourEvent};
use self::metrics::NetworkMetrics;
use self::ratelimit::{RateLimit, RateLimiter};
use agora_protocol::rpc::{Request, Response, RpcError};

pub use self::behaviour::{GOSSIP_ENVELOPE_HEADROOM, IDENTIFY_PROTOCOL_VERSION};
pub use libp2p::request_response::InboundRequestId as RequestId;

/// Which transports the Swarm speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// TCP + Noise + Yamux, and QUIC: what real nodes use.
    Tcp,
    /// libp2p's in-process memory transport (`/memory/<port>`) with Noise
    /// and Yamux: for fast many-node tests in one process.
    Memory,
}

/// Kademlia mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KadMode {
    /// Client until an external address is confirmed (given in
    /// [`NetworkConfig::external_addrs`] or found by autonat), then server.
    Auto,
    /// Always answer DHT queries: bootstrap nodes, nodes with a known
    /// reachable address.
    Server,
    /// Never answer DHT queries: nodes that cannot be reached.
    Client,
}

/// When to listen through relays (reserve a slot on a relay server and be
/// reachable at its `/p2p-circuit` address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayUse {
    /// When the node has no listen address of its own, or autonat finds
    /// it behind a NAT.
    Auto,
    /// On every relay met, up to [`MAX_RELAYS`].
    Always,
    /// Never.
    Never,
}

/// Most relays a node listens through at once.
pub const MAX_RELAYS: usize = 2;
/// Most relay-capable peers remembered as candidates.
const MAX_RELAY_CANDIDATES: usize = 8;

/// A value a gossip validator decoded and checked, handed on with the
/// message so the subscriber does not decode and verify it again.
#[derive(Clone)]
pub struct CheckedValue(Arc<dyn Any + Send + Sync>);

impl CheckedValue {
    /// Wraps a checked value.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        Self(Arc::new(value))
    }

    /// The value, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for CheckedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckedValue(..)")
    }
}

impl PartialEq for CheckedValue {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CheckedValue {}

/// A validator's decision on one gossip message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    /// Deliver to the node and forward to peers.
    Accept,
    /// As [`Validation::Accept`], handing the checked value to subscribers
    /// in [`GossipReceived::checked`].
    AcceptChecked(CheckedValue),
    /// Invalid: drop, do not forward, penalise the forwarder.
    Reject(String),
    /// Drop and do not forward, without penalty (e.g. not our business).
    Ignore(String),
}

/// A gossip message as a validator sees it.
#[derive(Debug, Clone, Copy)]
pub struct GossipMessage<'a> {
    /// The topic it was published on.
    pub topic: &'a str,
    /// The payload.
    pub data: &'a [u8],
    /// The author, whose libp2p key signed the gossipsub envelope
    /// (strict validation mode guarantees it is present and verified).
    pub source: Option<PeerId>,
    /// The peer that forwarded it to this node.
    pub propagation_source: PeerId,
}

/// Application checks run on every gossip message before it is forwarded
/// (decode, signature, replay, bounds). Called on the network task, so it
/// must be quick and must not block.
pub trait GossipValidator: Send + Sync + 'static {
    /// Judges one message.
    fn validate(&self, msg: &GossipMessage<'_>) -> Validation;
}

impl<F> GossipValidator for F
where
    F: Fn(&GossipMessage<'_>) -> Validation + Send + Sync + 'static,
{
    fn validate(&self, msg: &GossipMessage<'_>) -> Validation {
        self(msg)
    }
}

/// Dispatches each message to the validator of its topic. A topic without
/// a validator is ignored: never forwarded unchecked, never penalised.
#[derive(Default, Clone)]
pub struct TopicValidators {
    /// Validator per topic name.
    by_topic: HashMap<String, Arc<dyn GossipValidator>>,
}

impl TopicValidators {
    /// No validators: every message is ignored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the validator for `topic`.
    pub fn with(mut self, topic: impl Into<String>, v: Arc<dyn GossipValidator>) -> Self {
        self.by_topic.insert(topic.into(), v);
        self
    }
}

impl GossipValidator for TopicValidators {
    fn validate(&self, msg: &GossipMessage<'_>) -> Validation {
        match self.by_topic.get(msg.topic) {
            Some(v) => v.validate(msg),
            None => Validation::Ignore(format!("no validator for topic {}", msg.topic)),
        }
    }
}

/// Everything the network task needs. Build with [`NetworkConfig::new`]
/// and change the fields that differ from the defaults.
pub struct NetworkConfig {
    /// The node's identity; its PeerId is the libp2p PeerId.
    pub key: NodeKey,
    /// Transport stack.
    pub transport: TransportKind,
    /// Addresses to listen on (`/ip4/0.0.0.0/tcp/7400`,
    /// `/ip4/0.0.0.0/udp/7400/quic-v1`, `/memory/0`...).
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers, ideally with a `/p2p/<id>` suffix so they enter
    /// the routing table before the first connection.
    pub bootstrap: Vec<Multiaddr>,
    /// Peers remembered from an earlier run (the persisted peer book) and
    /// their addresses: seeded into Kademlia and dialled like the
    /// bootstrap peers, so a node whose bootstraps are gone rejoins the
    /// network it knew. Keep it bounded; the daemon passes at most
    /// [`MAX_REJOIN_PEERS`].
    pub known_peers: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Addresses known to reach this node from outside (a public IP, a
    /// port forward); they make Kademlia switch to server mode.
    pub external_addrs: Vec<Multiaddr>,
    /// The listen addresses are reachable as they are (a public host, a
    /// LAN testnet, in-process tests): each becomes an external address
    /// too, which turns Kademlia's auto mode to server and lets the relay
    /// server hand out reservations (a reservation names the relay's
    /// external addresses; libp2p clients refuse one without any).
    pub listen_addrs_are_external: bool,
    /// Kademlia mode.
    pub kad_mode: KadMode,
    /// Serve as a relay for NATed nodes (bootstrap nodes do).
    pub relay_server: bool,
    /// When to be reachable through relays.
    pub relay_use: RelayUse,
    /// Gossip topics to subscribe to (and score).
    pub topics: Vec<String>,
    /// Checks every gossip message before it is forwarded.
    pub validator: Arc<dyn GossipValidator>,
    /// Identify's agent version, e.g. `agora/0.1.0`.
    pub agent_version: String,
    /// How often to run a Kademlia bootstrap and a random walk, and top up
    /// connections when below [`NetworkConfig::min_peers`].
    pub discovery_interval: Duration,
    /// Dial peers from the routing table while fewer are connected, so
    /// nodes mesh with each other and not only with the bootstrap.
    pub min_peers: usize,
    /// Most established connections in total.
    pub max_connections: u32,
    /// Most established connections to one peer (direct plus relayed,
    /// plus the brief overlap of a simultaneous dial).
    pub max_connections_per_peer: u32,
    /// Most connections being set up at once, each direction.
    pub max_pending_connections: u32,
    /// Refuse new connections above this fraction of system memory.
    pub max_memory_fraction: f64,
    /// Close connections no protocol has used for this long.
    pub idle_connection_timeout: Duration,
    /// Gossipsub heartbeat (mesh maintenance, gossip, score decay).
    pub gossip_heartbeat: Duration,
    /// How long a message id is remembered as seen; the same bytes within
    /// this window are dropped as duplicates before validation.
    pub gossip_duplicate_cache: Duration,
    /// Per-peer rate of inbound gossip messages (as forwarded by that peer).
    pub gossip_rate: RateLimit,
    /// Per-peer rate of inbound requests.
    pub request_rate: RateLimit,
    /// A request with no response after this long fails with a timeout.
    pub request_timeout: Duration,
    /// Most concurrent request streams per connection.
    pub max_concurrent_requests: usize,
    /// Most inbound requests awaiting the node's answer; more get `Busy`.
    pub max_pending_inbound: usize,
    /// Capacity of the command channel.
    pub command_buffer: usize,
    /// Capacity of the event broadcast; a slower subscriber skips events.
    pub event_buffer: usize,
    /// How long a handle waits for the task to answer a command.
    pub command_timeout: Duration,
    /// Where to register the metrics (`None`: standalone counters).
    pub registry: Option<prometheus::Registry>,
}

impl std::fmt::Debug for NetworkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The validator and registry have no useful Debug; the key prints
        // only its PeerId.
        f.debug_struct("NetworkConfig")
            .field("key", &self.key)
            .field("transport", &self.transport)
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("known_peers", &self.known_peers.len())
            .field("external_addrs", &self.external_addrs)
            .field("listen_addrs_are_external", &self.listen_addrs_are_external)
            .field("kad_mode", &self.kad_mode)
            .field("relay_server", &self.relay_server)
            .field("relay_use", &self.relay_use)
            .field("topics", &self.topics)
            .field("discovery_interval", &self.discovery_interval)
            .field("min_peers", &self.min_peers)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl NetworkConfig {
    /// Defaults for a real node: TCP and QUIC, no listen addresses yet,
    /// subscribed to the three agora topics, no validators (set
    /// [`NetworkConfig::validator`]).
    pub fn new(key: NodeKey) -> Self {
        Self {
            key,
            transport: TransportKind::Tcp,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            known_peers: Vec::new(),
            external_addrs: Vec::new(),
            listen_addrs_are_external: false,
            kad_mode: KadMode::Auto,
            relay_server: false,
            relay_use: RelayUse::Auto,
            topics: vec![
                agora_protocol::TOPIC_ADVERTS.to_owned(),
                agora_protocol::TOPIC_JOBS.to_owned(),
                agora_protocol::TOPIC_VERDICTS.to_owned(),
            ],
            validator: Arc::new(TopicValidators::new()),
            agent_version: format!("agora/{}", env!("CARGO_PKG_VERSION")),
            discovery_interval: Duration::from_secs(60),
            min_peers: 8,
            max_connections: 256,
            max_connections_per_peer: 3,
            max_pending_connections: 64,
            max_memory_fraction: 0.9,
            idle_connection_timeout: Duration::from_secs(60),
            gossip_heartbeat: Duration::from_secs(1),
            gossip_duplicate_cache: Duration::from_secs(60),
            // Duplicates never reach the limiter (gossipsub drops them first),
            // so this is per forwarder of *new* messages: room for adverts
            // from several thousand nodes at one per 30 s.
            gossip_rate: RateLimit::new(2000, 1000),
            request_rate: RateLimit::new(2000, 1000),
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 256,
            max_pending_inbound: 1024,
            command_buffer: 256,
            event_buffer: 1024,
            command_timeout: Duration::from_secs(10),
            registry: None,
        }
    }
}

/// Why the network could not start or a command failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The network task has stopped.
    #[error("the network task has stopped")]
    Closed,
    /// The network task did not answer in time.
    #[error("the network task did not answer within {0:?}")]
    Timeout(Duration),
    /// The transport stack could not be built.
    #[error("building the transport: {0}")]
    Transport(String),
    /// The behaviour could not be built (bad gossipsub or scoring config).
    #[error("building the network behaviour: {0}")]
    Behaviour(String),
    /// Metrics could not be registered.
    #[error("registering network metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A listen address was refused.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A dial could not be started.
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// Nobody is subscribed to the topic yet; nothing was sent.
    #[error("no peers subscribed to {topic}")]
    NoPeers {
        /// The topic.
        topic: String,
    },
    /// A message is over the gossip size limit.
    #[error("gossip message of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Publishing failed for another reason.
    #[error("publishing on {topic}: {reason}")]
    Publish {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// A request to a peer failed (dial failure, timeout, closed stream).
    #[error("request to {peer}: {reason}")]
    Request {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The peer answered with an error.
    #[error("peer {peer} refused the request: {error}")]
    Refused {
        /// The peer.
        peer: PeerId,
        /// Its answer.
        error: RpcError,
    },
    /// No inbound request with this id is waiting for an answer (answered
    /// already, timed out, or its connection closed).
    #[error("no inbound request {0} is awaiting an answer")]
    UnknownRequest(RequestId),
}

/// A gossip message that passed validation.
#[derive(Debug, Clone)]
pub struct GossipReceived {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub data: Arc<[u8]>,
    /// Author (gossipsub-signed).
    pub source: Option<PeerId>,
    /// The peer that forwarded it.
    pub propagation_source: PeerId,
    /// Content-hash message id (hex sha256 of the data).
    pub message_id: String,
    /// What the validator decoded and checked, if it handed it on.
    pub checked: Option<CheckedValue>,
}

/// What the network tells the rest of the node.
#[derive(Debug, Clone)]
pub enum NetworkEvent {
    /// A new listen address is active.
    ListeningOn(Multiaddr),
    /// First connection to a peer opened.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// The connection's remote address (a `/p2p-circuit` address for
        /// a relayed connection).
        addr: Multiaddr,
    },
    /// Last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// A gossip message passed validation.
    Gossip(GossipReceived),
    /// A peer asks something; answer with [`NetworkHandle::respond`]
    /// before the request timeout.
    InboundRequest {
        /// The asking peer.
        peer: PeerId,
        /// Pass back to [`NetworkHandle::respond`].
        id: RequestId,
        /// The request.
        request: Request,
    },
}

type Reply<T> = oneshot::Sender<T>;

/// What a handle asks the task to do.
enum Command {
    Dial(Multiaddr, Reply<Result<(), NetworkError>>),
    Publish(String, Vec<u8>, Reply<Result<String, NetworkError>>),
    ConnectedPeers(Reply<Vec<PeerId>>),
    RoutingTableSize(Reply<usize>),
    ListenAddrs(Reply<Vec<Multiaddr>>),
    ExternalAddrs(Reply<Vec<Multiaddr>>),
    PeerScore(PeerId, Reply<Option<f64>>),
    MeshPeers(String, Reply<Vec<PeerId>>),
    Request(PeerId, Request, Reply<Result<Response, NetworkError>>),
    Respond(RequestId, Response, Reply<Result<(), NetworkError>>),
}

/// The cheap, cloneable way to use the network from anywhere in the node.
#[derive(Clone)]
pub struct NetworkHandle {
    /// Commands to the task (bounded).
    commands: mpsc::Sender<Command>,
    /// Source of event subscriptions.
    events: broadcast::Sender<NetworkEvent>,
    /// This node's PeerId.
    peer_id: PeerId,
    /// Shared counters.
    metrics: NetworkMetrics,
    /// Wait for an answer at most this long.
    timeout: Duration,
    /// Extra wait for requests, which have their own timeout in the task.
    request_timeout: Duration,
}

impl std::fmt::Debug for NetworkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkHandle")
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

impl NetworkHandle {
    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The network's counters.
    pub fn metrics(&self) -> &NetworkMetrics {
        &self.metrics
    }

    /// A new receiver of network events (from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<NetworkEvent> {
        self.events.subscribe()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
        wait: Duration,
    ) -> Result<T, NetworkError> {
        let (tx, rx) = oneshot::channel();
        tokio::time::timeout(wait, self.commands.send(make(tx)))
            .await
            .map_err(|_| NetworkError::Timeout(wait))?
            .map_err(|_| NetworkError::Closed)?;
        tokio::time::timeout(wait, rx)
            .await
            .map_err(|_| NetworkError::Timeout(wait))?
            .map_err(|_| NetworkError::Closed)
    }

    /// Starts dialing `addr`. Success means the dial started, not that it
    /// connected: watch for [`NetworkEvent::PeerConnected`].
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetworkError> {
        self.ask(|r| Command::Dial(addr, r), self.timeout).await?
    }

    /// Publishes `data` on `topic`; returns the message id.
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        data: Vec<u8>,
    ) -> Result<String, NetworkError> {
        let topic = topic.into();
        self.ask(|r| Command::Publish(topic, data, r), self.timeout)
            .await?
    }

    /// Peers with an open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NetworkError> {
        self.ask(Command::ConnectedPeers, self.timeout).await
    }

    /// Number of peers in the Kademlia routing table.
    pub async fn routing_table_size(&self) -> Result<usize, NetworkError> {
        self.ask(Command::RoutingTableSize, self.timeout).await
    }

    /// Addresses being listened on (empty until the first is active).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        self.ask(Command::ListenAddrs, self.timeout).await
    }

    /// Confirmed external addresses.
    pub async fn external_addrs(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        self.ask(Command::ExternalAddrs, self.timeout).await
    }

    /// Gossipsub's score of `peer` (`None` if unknown to gossipsub).
    pub async fn peer_score(&self, peer: PeerId) -> Result<Option<f64>, NetworkError> {
        self.ask(|r| Command::PeerScore(peer, r), self.timeout)
            .await
    }

    /// Peers in this node's gossipsub mesh for `topic`.
    pub async fn mesh_peers(&self, topic: impl Into<String>) -> Result<Vec<PeerId>, NetworkError> {
        let topic = topic.into();
        self.ask(|r| Command::MeshPeers(topic, r), self.timeout)
            .await
    }

    /// Sends `request` to `peer` and waits for its answer. An
    /// [`Response::Error`] comes back as [`NetworkError::Refused`].
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Response, NetworkError> {
        let wait = self.request_timeout + self.timeout;
        match self
            .ask(|r| Command::Request(peer, request, r), wait)
            .await??
        {
            Response::Error(error) => Err(NetworkError::Refused { peer, error }),
            other => Ok(other),
        }
    }

    /// Answers the inbound request `id`.
    pub async fn respond(&self, id: RequestId, response: Response) -> Result<(), NetworkError> {
        self.ask(|r| Command::Respond(id, response, r), self.timeout)
            .await?
    }
}

/// The task that owns the Swarm. Create with [`Network::new`], then
/// `run` it (or use [`spawn`]).
pub struct Network {
    /// The one Swarm.
    swarm: Swarm<Behaviour>,
    /// Commands from handles.
    commands: mpsc::Receiver<Command>,
    /// False once every handle is gone; the task keeps serving peers.
    commands_open: bool,
    /// Events to subscribers.
    events: broadcast::Sender<NetworkEvent>,
    /// Application validation of gossip.
    validator: Arc<dyn GossipValidator>,
    /// Counters.
    metrics: NetworkMetrics,
    /// Per-peer inbound gossip rate.
    gossip_limiter: RateLimiter<PeerId>,
    /// Per-peer inbound request rate.
    request_limiter: RateLimiter<PeerId>,
    /// Our requests awaiting a response, by request id.
    /// Each with the time it was sent, for the latency histogram.
    pending_requests: HashMap<OutboundRequestId, (Instant, Reply<Result<Response, NetworkError>>)>,
    /// Peers' requests awaiting the node's answer, by request id.
    pending_inbound: HashMap<InboundRequestId, ResponseChannel<Response>>,
    /// Most entries in `pending_inbound`.
    max_pending_inbound: usize,
    /// Bootstrap addresses, redialed when the node has no connection.
    bootstrap: Vec<Multiaddr>,
    /// See [`NetworkConfig::known_peers`] (bounded, without this node).
    known_peers: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Bootstrap peers' ids, to run the first Kademlia bootstrap as soon as
    /// one of them connects.
    bootstrap_peers: HashSet<PeerId>,
    /// Whether that first bootstrap has run.
    bootstrapped: bool,
    /// See [`NetworkConfig::discovery_interval`].
    discovery_interval: Duration,
    /// See [`NetworkConfig::min_peers`].
    min_peers: usize,
    /// Origin of the monotonic milliseconds fed to the rate limiters.
    epoch: Instant,
    /// Rejected-gossip penalty per forwarder, fed to gossipsub as the
    /// application score (P5). gossipsub's own P4 penalty skips a message
    /// id it once saw as valid, so an exact replay would go unpunished
    /// without this. Decays like P4; entries leave at ~0.
    penalties: HashMap<PeerId, f64>,
    /// See [`NetworkConfig::relay_use`].
    relay_use: RelayUse,
    /// See [`NetworkConfig::listen_addrs_are_external`].
    listen_addrs_are_external: bool,
    /// Whether the config gave listen addresses (if not, the node is only
    /// reachable through relays).
    has_own_listen_addrs: bool,
    /// Whether autonat found this node unreachable from outside.
    nat_private: bool,
    /// Connected peers that serve as relays, with an address to reach them.
    relay_candidates: HashMap<PeerId, Multiaddr>,
    /// Our relayed listeners and the relay each goes through.
    relay_listeners: HashMap<ListenerId, PeerId>,
    /// The address each peer we dialed answered on, while connected.
    dialed_addrs: HashMap<PeerId, Multiaddr>,
}

/// Each second a peer's rejection penalty keeps this fraction.
const PENALTY_DECAY: f64 = 0.9;
/// Below this a penalty is forgotten.
const PENALTY_FLOOR: f64 = 0.01;

/// Splits `/…/p2p/<id>` into the id and the address without it.
fn split_peer_id(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut a = addr.clone();
    match a.pop() {
        Some(Protocol::P2p(peer)) => Some((peer, a)),
        _ => None,
    }
}

fn build_swarm(cfg: &NetworkConfig) -> Result<Swarm<Behaviour>, NetworkError> {
    let keypair = cfg.key.to_libp2p();
    let transport_err = |e: &dyn std::fmt::Display| NetworkError::Transport(e.to_string());
    let behaviour = |kp: &libp2p::identity::Keypair, relay| {
        Behaviour::new(kp, relay, cfg).map_err(Box::<dyn std::error::Error + Send + Sync>::from)
    };
    let idle = cfg.idle_connection_timeout;
    let swarm = match cfg.transport {
        TransportKind::Tcp => SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| transport_err(&e))?
            .with_quic()
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| transport_err(&e))?
            .with_behaviour(behaviour)
            .map_err(|e| NetworkError::Behaviour(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        TransportKind::Memory => SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|kp| {
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    MemoryTransport::default()
                        .upgrade(Version::V1)
                        .authenticate(noise::Config::new(kp)?)
                        .multiplex(yamux::Config::default()),
                )
            })
            .map_err(|e| transport_err(&e))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| transport_err(&e))?
            .with_behaviour(behaviour)
            .map_err(|e| NetworkError::Behaviour(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
    };
    Ok(swarm)
}

/// Builds the network and spawns its task on the current tokio runtime.
/// The task stops when `cancel` fires.
pub fn spawn(
    config: NetworkConfig,
    cancel: CancellationToken,
) -> Result<(NetworkHandle, JoinHandle<()>), NetworkError> {
    let (network, handle) = Network::new(config)?;
    let task = tokio::spawn(network.run(cancel));
    Ok((handle, task))
}

/// Most remembered peers dialled at start (and again whenever the node
/// has no connection).
pub const MAX_REJOIN_PEERS: usize = 16;

/// Dials each remembered peer not connected or being dialled.
fn dial_known(swarm: &mut Swarm<Behaviour>, peers: &[(PeerId, Vec<Multiaddr>)]) {
    for (peer, addrs) in peers {
        let opts = DialOpts::peer_id(*peer)
            .addresses(addrs.clone())
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = swarm.dial(opts) {
            debug!(%peer, error = %e, "dialling a remembered peer failed");
        }
    }
}

impl Network {
    /// Builds the Swarm, starts listening and dialing the bootstrap peers
    /// and the remembered ones.
    /// Must be called inside a tokio runtime.
    pub fn new(cfg: NetworkConfig) -> Result<(Self, NetworkHandle), NetworkError> {
        let metrics = NetworkMetrics::new(cfg.registry.as_ref())?;
        let mut swarm = build_swarm(&cfg)?;
        let peer_id = *swarm.local_peer_id();

        for addr in &cfg.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetworkError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        }
        for addr in &cfg.external_addrs {
            swarm.add_external_address(addr.clone());
        }
        let mut bootstrap_peers = HashSet::new();
        for addr in &cfg.bootstrap {
            if let Some((peer, plain)) = split_peer_id(addr) {
                if peer == peer_id {
                    continue;
                }
                swarm.behaviour_mut().kad.add_address(&peer, plain);
                bootstrap_peers.insert(peer);
            }
            if let Err(e) = swarm.dial(addr.clone()) {
                // Not fatal: discovery redials bootstrap peers while the
                // node has no connection.
                warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        let known_peers: Vec<(PeerId, Vec<Multiaddr>)> = cfg
            .known_peers
            .iter()
            .filter(|(p, _)| *p != peer_id)
            .take(MAX_REJOIN_PEERS)
            .cloned()
            .collect();
        for (peer, addrs) in &known_peers {
            for a in addrs.iter().take(MAX_ADDRS) {
                swarm.behaviour_mut().kad.add_address(peer, a.clone());
            }
            // Reaching any of them runs the first Kademlia bootstrap, as
            // reaching a bootstrap peer does.
            bootstrap_peers.insert(*peer);
        }
        dial_known(&mut swarm, &known_peers);

        let (cmd_tx, cmd_rx) = mpsc::channel(cfg.command_buffer.max(1));
        let (ev_tx, _) = broadcast::channel(cfg.event_buffer.max(1));
        let handle = NetworkHandle {
            commands: cmd_tx,
            events: ev_tx.clone(),
            peer_id,
            metrics: metrics.clone(),
            timeout: cfg.command_timeout,
            request_timeout: cfg.request_timeout,
        };
        let max_keys = cfg.max_connections as usize;
        let network = Self {
            swarm,
            commands: cmd_rx,
            commands_open: true,
            events: ev_tx,
            validator: cfg.validator.clone(),
            metrics,
            gossip_limiter: RateLimiter::new(cfg.gossip_rate, max_keys),
            request_limiter: RateLimiter::new(cfg.request_rate, max_keys),
            pending_requests: HashMap::new(),
            pending_inbound: HashMap::new(),
            max_pending_inbound: cfg.max_pending_inbound,
            bootstrap: cfg.bootstrap.clone(),
            known_peers,
            bootstrap_peers,
            bootstrapped: false,
            discovery_interval: cfg.discovery_interval,
            min_peers: cfg.min_peers,
            epoch: Instant::now(),
            penalties: HashMap::new(),
            relay_use: cfg.relay_use,
            listen_addrs_are_external: cfg.listen_addrs_are_external,
            has_own_listen_addrs: !cfg.listen.is_empty(),
            nat_private: false,
            relay_candidates: HashMap::new(),
            relay_listeners: HashMap::new(),
            dialed_addrs: HashMap::new(),
        };
        Ok((network, handle))
    }

    /// Runs until `cancel` fires. Checked first on every turn, so shutdown
    /// is prompt even under load.
    pub async fn run(mut self, cancel: CancellationToken) {
        let peer = *self.swarm.local_peer_id();
        info!(%peer, "network task started");
        // tokio's interval panics on zero; a zero from a config file must not.
        let mut discovery =
            tokio::time::interval(self.discovery_interval.max(Duration::from_millis(100)));
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut decay = tokio::time::interval(Duration::from_secs(1));
        decay.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                cmd = self.commands.recv(), if self.commands_open => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => {
                        debug!("every network handle is gone; still serving peers");
                        self.commands_open = false;
                    }
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = discovery.tick() => self.discover(),
                _ = decay.tick(), if !self.penalties.is_empty() => self.decay_penalties(),
            }
        }
        // Fail every waiting request now rather than at its timeout.
        for (_, (_, tx)) in self.pending_requests.drain() {
            let _ = tx.send(Err(NetworkError::Closed));
        }
        info!(%peer, "network task stopped");
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn emit(&self, event: NetworkEvent) {
        // No subscriber is fine: nobody is interested right now.
        let _ = self.events.send(event);
    }

    fn on_command(&mut self, cmd: Command) {
        // A dropped reply receiver means the caller gave up; ignore it.
        match cmd {
            Command::Dial(addr, reply) => {
                let r = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| NetworkError::Dial {
                        addr,
                        reason: e.to_string(),
                    });
                let _ = reply.send(r);
            }
            Command::Publish(topic, data, reply) => {
                let _ = reply.send(self.publish(topic, data));
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::RoutingTableSize(reply) => {
                let _ = reply.send(self.routing_table_size());
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::ExternalAddrs(reply) => {
                let _ = reply.send(self.swarm.external_addresses().cloned().collect());
            }
            Command::PeerScore(peer, reply) => {
                let _ = reply.send(self.swarm.behaviour().gossipsub.peer_score(&peer));
            }
            Command::MeshPeers(topic, reply) => {
                let hash = IdentTopic::new(topic).hash();
                let peers = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .mesh_peers(&hash)
                    .copied()
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Request(peer, request, reply) => {
                let id = self.swarm.behaviour_mut().rpc.send_request(&peer, request);
                self.pending_requests.insert(id, (Instant::now(), reply));
            }
            Command::Respond(id, response, reply) => {
                let r = match self.pending_inbound.remove(&id) {
                    Some(channel) => self
                        .swarm
                        .behaviour_mut()
                        .rpc
                        .send_response(channel, response)
                        .map_err(|_| NetworkError::UnknownRequest(id)),
                    None => Err(NetworkError::UnknownRequest(id)),
                };
                let _ = reply.send(r);
            }
        }
    }

    fn publish(&mut self, topic: String, data: Vec<u8>) -> Result<String, NetworkError> {
        if data.len() > MAX_GOSSIP_BYTES {
            return Err(NetworkError::TooLarge {
                len: data.len(),
                limit: MAX_GOSSIP_BYTES,
            });
        }
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(IdentTopic::new(topic.clone()), data)
        {
            Ok(id) => {
                self.metrics.gossip_out(&topic);
                Ok(id.to_string())
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                Err(NetworkError::NoPeers { topic })
            }
            Err(e) => Err(NetworkError::Publish {
                topic,
                reason: e.to_string(),
            }),
        }
    }

    fn wants_relay(&self) -> bool {
        match self.relay_use {
            RelayUse::Never => false,
            RelayUse::Always => true,
            RelayUse::Auto => !self.has_own_listen_addrs || self.nat_private,
        }
    }

    /// Listens through relay candidates until [`MAX_RELAYS`] are in use,
    /// if the node wants relays at all.
    fn maybe_reserve_relays(&mut self) {
        if !self.wants_relay() {
            return;
        }
        let in_use: HashSet<PeerId> = self.relay_listeners.values().copied().collect();
        let fresh: Vec<(PeerId, Multiaddr)> = self
            .relay_candidates
            .iter()
            .filter(|(p, _)| !in_use.contains(p))
            .map(|(p, a)| (*p, a.clone()))
            .take(MAX_RELAYS.saturating_sub(in_use.len()))
            .collect();
        for (relay, addr) in fresh {
            let mut circuit = addr;
            if !matches!(circuit.iter().last(), Some(Protocol::P2p(_))) {
                circuit.push(Protocol::P2p(relay));
            }
            circuit.push(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    info!(%relay, addr = %circuit, "listening through relay");
                    self.relay_listeners.insert(id, relay);
                }
                Err(e) => warn!(%relay, addr = %circuit, error = %e, "cannot listen through relay"),
            }
        }
    }

    /// Adds one rejection to `peer`'s application-score penalty.
    fn penalise(&mut self, peer: PeerId) {
        let p = self.penalties.entry(peer).or_insert(0.0);
        *p += 1.0;
        let score = -*p;
        if !self
            .swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, score)
        {
            // gossipsub does not know the peer (already gone): nothing to score.
            self.penalties.remove(&peer);
        }
    }

    fn decay_penalties(&mut self) {
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        self.penalties.retain(|peer, p| {
            *p *= PENALTY_DECAY;
            let keep = *p >= PENALTY_FLOOR;
            let score = if keep { -*p } else { 0.0 };
            gossipsub.set_application_score(peer, score) && keep
        });
    }

    fn routing_table_size(&mut self) -> usize {
        self.swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum()
    }

    /// One discovery round: Kademlia bootstrap and a random walk, then
    /// dial routing-table peers while below `min_peers`.
    fn discover(&mut self) {
        let rt = self.routing_table_size();
        self.metrics.set_routing_table_peers(rt);
        let connected: HashSet<PeerId> = self.swarm.connected_peers().copied().collect();
        if connected.is_empty() {
            for addr in self.bootstrap.clone() {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    debug!(%addr, error = %e, "redialing bootstrap peer failed");
                }
            }
            dial_known(&mut self.swarm, &self.known_peers);
        }
        self.maybe_reserve_relays();
        if rt == 0 {
            return;
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        if let Err(e) = kad.bootstrap() {
            debug!(error = %e, "kademlia bootstrap not started");
        }
        kad.get_closest_peers(PeerId::random());

        if connected.len() >= self.min_peers {
            return;
        }
        let want = self.min_peers - connected.len();
        let mut candidates = Vec::new();
        for bucket in kad.kbuckets() {
            for entry in bucket.iter() {
                let peer = *entry.node.key.preimage();
                if !connected.contains(&peer) {
                    candidates.push((peer, entry.node.value.iter().cloned().collect::<Vec<_>>()));
                }
            }
        }
        for (peer, addrs) in candidates.into_iter().take(want) {
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                trace!(%peer, error = %e, "top-up dial not started");
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                let relayed = address.iter().any(|p| matches!(p, Protocol::P2pCircuit));
                if self.listen_addrs_are_external && !relayed {
                    self.swarm.add_external_address(address.clone());
                }
                self.emit(NetworkEvent::ListeningOn(address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } => {
                debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                self.metrics
                    .set_connected_peers(self.swarm.connected_peers().count());
                if endpoint.is_dialer() {
                    self.dialed_addrs
                        .insert(peer_id, endpoint.get_remote_address().clone());
                }
                if num_established.get() == 1 {
                    self.emit(NetworkEvent::PeerConnected {
                        peer: peer_id,
                        addr: endpoint.get_remote_address().clone(),
                    });
                }
                if !self.bootstrapped && self.bootstrap_peers.contains(&peer_id) {
                    self.bootstrapped = true;
                    if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
                        debug!(error = %e, "first kademlia bootstrap not started");
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                debug!(peer = %peer_id, cause = ?cause, "connection closed");
                self.metrics
                    .set_connected_peers(self.swarm.connected_peers().count());
                if num_established == 0 {
                    self.dialed_addrs.remove(&peer_id);
                    self.relay_candidates.remove(&peer_id);
                    self.gossip_limiter.remove(&peer_id);
                    self.request_limiter.remove(&peer_id);
                    self.emit(NetworkEvent::PeerDisconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, error = %error, "outgoing connection failed");
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                debug!(addr = %send_back_addr, error = %error, "incoming connection failed");
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                info!(%address, "no longer listening");
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(relay) = self.relay_listeners.remove(&listener_id) {
                    info!(%relay, reason = ?reason, "relay listener closed");
                    self.maybe_reserve_relays();
                }
            }
            SwarmEvent::ListenerError { error, .. } => {
                warn!(error = %error, "listener error");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                info!(%address, "external address confirmed");
            }
            other => trace!(event = ?other, "swarm event"),
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            BehaviourEvent::Gossipsub(other) => trace!(event = ?other, "gossipsub"),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identify(peer_id, info);
            }
            BehaviourEvent::Identify(other) => trace!(event = ?other, "identify"),
            BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. }) => {
                trace!(%peer, "routing table updated");
                let n = self.routing_table_size();
                self.metrics.set_routing_table_peers(n);
            }
            BehaviourEvent::Kad(kad::Event::ModeChanged { new_mode }) => {
                info!(mode = %new_mode, "kademlia mode changed");
            }
            BehaviourEvent::Kad(other) => trace!(event = ?other, "kademlia"),
            BehaviourEvent::Rpc(ev) => self.on_rpc(ev),
            BehaviourEvent::Ping(ev) => trace!(event = ?ev, "ping"),
            BehaviourEvent::RelayClient(ev) => debug!(event = ?ev, "relay client"),
            BehaviourEvent::RelayServer(ev) => debug!(event = ?ev, "relay server"),
            BehaviourEvent::Autonat(libp2p::autonat::Event::StatusChanged { old, new }) => {
                info!(?old, ?new, "NAT status changed");
                self.nat_private = matches!(new, libp2p::autonat::NatStatus::Private);
                self.maybe_reserve_relays();
            }
            BehaviourEvent::Autonat(ev) => debug!(event = ?ev, "autonat"),
            BehaviourEvent::Dcutr(ev) => debug!(event = ?ev, "dcutr"),
            BehaviourEvent::Limits(never) | BehaviourEvent::Memory(never) => match never {},
        }
    }

    fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        if info.protocols.contains(&libp2p::relay::HOP_PROTOCOL_NAME)
            && (self.relay_candidates.contains_key(&peer)
                || self.relay_candidates.len() < MAX_RELAY_CANDIDATES)
        {
            // The address we dialed it on is known to work; else what it
            // says it listens on.
            let addr = self
                .dialed_addrs
                .get(&peer)
                .cloned()
                .or_else(|| info.listen_addrs.first().cloned());
            if let Some(addr) = addr {
                self.relay_candidates.insert(peer, addr);
                self.maybe_reserve_relays();
            }
        }
        let kad_proto = libp2p::StreamProtocol::new(agora_protocol::KAD_PROTOCOL);
        if !info.protocols.contains(&kad_proto) {
            return;
        }
        // Kademlia keeps every address it is given; a hostile peer could
        // push a new list on every identify, so cap what it holds per peer.
        let kad = &mut self.swarm.behaviour_mut().kad;
        let known = kad
            .kbucket(peer)
            .and_then(|b| {
                b.iter()
                    .find(|e| *e.node.key.preimage() == peer)
                    .map(|e| e.node.value.iter().count())
            })
            .unwrap_or(0);
        let room = MAX_ADDRS.saturating_sub(known);
        for addr in info.listen_addrs.into_iter().take(room) {
            kad.add_address(&peer, addr);
        }
    }

    fn on_gossip(
        &mut self,
        propagation_source: PeerId,
        message_id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let topic = message.topic.as_str().to_owned();
        self.metrics.gossip_in(&topic);
        let now = self.now_ms();
        let verdict = if !self.gossip_limiter.check(&propagation_source, now) {
            Validation::Ignore("peer exceeded its gossip rate".to_owned())
        } else if message.data.len() > MAX_GOSSIP_BYTES {
            Validation::Reject(format!(
                "{} bytes exceeds the {MAX_GOSSIP_BYTES}-byte gossip limit",
                message.data.len()
            ))
        } else {
            self.validator.validate(&GossipMessage {
                topic: &topic,
                data: &message.data,
                source: message.source,
                propagation_source,
            })
        };
        let acceptance = match &verdict {
            Validation::Accept | Validation::AcceptChecked(_) => MessageAcceptance::Accept,
            Validation::Reject(_) => MessageAcceptance::Reject,
            Validation::Ignore(_) => MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &propagation_source, acceptance);
        match verdict {
            Validation::Accept | Validation::AcceptChecked(_) => {
                let checked = match verdict {
                    Validation::AcceptChecked(v) => Some(v),
                    _ => None,
                };
                self.emit(NetworkEvent::Gossip(GossipReceived {
                    topic,
                    data: Arc::from(message.data),
                    source: message.source,
                    propagation_source,
                    message_id: message_id.to_string(),
                    checked,
                }));
            }
            Validation::Reject(reason) => {
                self.metrics.gossip_rejected(&topic);
                self.penalise(propagation_source);
                warn!(%topic, peer = %propagation_source, author = ?message.source, %reason, "gossip rejected");
            }
            Validation::Ignore(reason) => {
                self.metrics.gossip_ignored(&topic);
                debug!(%topic, peer = %propagation_source, %reason, "gossip ignored");
            }
        }
    }

    fn on_rpc(&mut self, event: request_response::Event<Request, Response>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => self.on_inbound_request(peer, request_id, request, channel),
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((sent, tx)) = self.pending_requests.remove(&request_id) {
                    self.metrics.rpc_latency(sent.elapsed());
                    let _ = tx.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, %error, "request failed");
                if let Some((_, tx)) = self.pending_requests.remove(&request_id) {
                    let _ = tx.send(Err(NetworkError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, %error, "inbound request failed");
                self.pending_inbound.remove(&request_id);
            }
            Event::ResponseSent { request_id, .. } => {
                trace!(%request_id, "response sent");
            }
        }
    }

    fn on_inbound_request(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) {
        let now = self.now_ms();
        let immediate = if !self.request_limiter.check(&peer, now) {
            self.metrics.rpc_rate_limited();
            Some(Response::Error(RpcError::RateLimited))
        } else if let Request::Ping { nonce } = request {
            Some(Response::Pong { nonce })
        } else if self.pending_inbound.len() >= self.max_pending_inbound {
            Some(Response::Error(RpcError::Busy))
        } else if self.events.receiver_count() == 0 {
            Some(Response::Error(RpcError::Unsupported))
        } else {
            None
        };
        match immediate {
            Some(response) => {
                if self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_response(channel, response)
                    .is_err()
                {
                    debug!(%peer, "peer went away before the answer");
                }
            }
            None => {
                self.pending_inbound.insert(id, channel);
                self.emit(NetworkEvent::InboundRequest { peer, id, request });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(topic: &'a str, data: &'a [u8]) -> GossipMessage<'a> {
        GossipMessage {
            topic,
            data,
            source: None,
            propagation_source: PeerId::random(),
        }
    }

    #[test]
    fn topic_validators_dispatch_by_topic_and_ignore_the_rest() {
        let accept_short = |m: &GossipMessage<'_>| {
            if m.data.len() < 4 {
                Validation::Accept
            } else {
                Validation::Reject("too long".into())
            }
        };
        let v = TopicValidators::new().with("a", Arc::new(accept_short));
        assert_eq!(v.validate(&msg("a", b"ok")), Validation::Accept);
        assert_eq!(
            v.validate(&msg("a", b"too long")),
            Validation::Reject("too long".into())
        );
        assert!(matches!(
            v.validate(&msg("b", b"ok")),
            Validation::Ignore(_)
        ));
    }

    #[test]
    fn bootstrap_addresses_split_into_peer_and_address() {
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/10.0.0.1/tcp/7400".parse().unwrap();
        let full = addr.clone().with(Protocol::P2p(peer));
        assert_eq!(split_peer_id(&full), Some((peer, addr.clone())));
        assert_eq!(split_peer_id(&addr), None);
    }

    #[test]
    fn message_id_is_the_content_hash() {
        let id = behaviour::message_id(b"hello");
        assert_eq!(
            id.to_string(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(behaviour::message_id(b"hello"), id, "same bytes, same id");
        assert_ne!(behaviour::message_id(b"hello!"), id);
    }
}
