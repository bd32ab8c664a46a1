//! The combined libp2p behaviour of an agora node, and the settings of each
//! part. Only the network task holds it (inside the Swarm).
//!
//! Parts: connection limits (count and memory), identify, ping, Kademlia
//! on [`agora_protocol::KAD_PROTOCOL`], gossipsub with strict signing,
//! content-hash message ids, application validation and peer scoring,
//! request-response ([`super::rpc`]), relay client (every node) and relay
//! server (bootstrap nodes), autonat and dcutr.

use std::collections::HashMap;
use std::time::Duration;

use agora_protocol::limits::MAX_GOSSIP_BYTES;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    autonat, connection_limits, dcutr, identify, memory_connection_limits, ping, relay,
    StreamProtocol,
};
use sha2::{Digest, Sha256};

use agora_protocol::limits::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use agora_protocol::rpc::{Request, Response};

use super::rpc::RPC_PROTOCOL;
use super::{KadMode, NetworkConfig};

/// Room for gossipsub's own framing (author, seqno, topic, signature,
/// control messages) on top of the largest payload the protocol allows.
/// The payload itself is held to [`MAX_GOSSIP_BYTES`] by the validator.
pub const GOSSIP_ENVELOPE_HEADROOM: usize = 4 * 1024;
/// Identify's protocol-version string for agora nodes.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/agora/1.0.0";

/// Everything the Swarm runs. Field order is poll order: limits first, so
/// a connection over the limit is refused before any protocol sees it.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) memory: memory_connection_limits::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<MemoryStore>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) rpc: request_response::cbor::Behaviour<Request, Response>,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    pub(crate) autonat: autonat::Behaviour,
    pub(crate) dcutr: dcutr::Behaviour,
}

/// The gossipsub message id: sha256 of the data alone (displayed as hex),
/// so the same content published twice (or replayed by another author) is
/// one message to the duplicate cache.
pub(crate) fn message_id(data: &[u8]) -> gossipsub::MessageId {
    gossipsub::MessageId::from(Sha256::digest(data).to_vec())
}

impl Behaviour {
    /// Builds every part from the node's config.
    pub(crate) fn new(
        keypair: &Keypair,
        relay_client: relay::client::Behaviour,
        cfg: &NetworkConfig,
    ) -> Result<Self, String> {
        let peer_id = keypair.public().to_peer_id();

        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(cfg.max_connections))
                .with_max_established_per_peer(Some(cfg.max_connections_per_peer))
                .with_max_pending_incoming(Some(cfg.max_pending_connections))
                .with_max_pending_outgoing(Some(cfg.max_pending_connections)),
        );
        let memory =
            memory_connection_limits::Behaviour::with_max_percentage(cfg.max_memory_fraction);

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_owned(), keypair.public())
                .with_agent_version(cfg.agent_version.clone()),
        );
        let ping = ping::Behaviour::new(ping::Config::new());

        let mut kad_cfg = kad::Config::new(StreamProtocol::new(agora_protocol::KAD_PROTOCOL));
        // The network task drives bootstrap and random walks on its own
        // timer (config.discovery_interval), so tests can speed them up.
        kad_cfg.set_periodic_bootstrap_interval(None);
        kad_cfg.set_query_timeout(Duration::from_secs(30));
        // agora stores nothing in the DHT; refuse to keep peers' records.
        kad_cfg.set_record_filtering(kad::StoreInserts::FilterBoth);
        let mut kad = kad::Behaviour::with_config(peer_id, MemoryStore::new(peer_id), kad_cfg);
        kad.set_mode(match cfg.kad_mode {
            KadMode::Auto => None,
            KadMode::Server => Some(kad::Mode::Server),
            KadMode::Client => Some(kad::Mode::Client),
        });

        let gossipsub = gossipsub_behaviour(keypair, cfg)?;

        let rpc = request_response::Behaviour::with_codec(
            request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(MAX_REQUEST_BYTES)
                .set_response_size_maximum(MAX_RESPONSE_BYTES),
            [(RPC_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(cfg.request_timeout)
                .with_max_concurrent_streams(cfg.max_concurrent_requests),
        );

        let relay_server = Toggle::from(cfg.relay_server.then(|| {
            relay::Behaviour::new(
                peer_id,
                relay::Config {
                    // The defaults (2 min, 128 KiB) suit a hole-punching
                    // handshake only; agora nodes that cannot be punched
                    // through gossip and answer requests over the circuit.
                    max_circuit_duration: Duration::from_secs(30 * 60),
                    max_circuit_bytes: 64 * 1024 * 1024,
                    ..relay::Config::default()
                },
            )
        }));
        let autonat = autonat::Behaviour::new(peer_id, autonat::Config::default());
        let dcutr = dcutr::Behaviour::new(peer_id);

        Ok(Self {
            limits,
            memory,
            identify,
            ping,
            kad,
            gossipsub,
            rpc,
            relay_client,
            relay_server,
            autonat,
            dcutr,
        })
    }
}

fn gossipsub_behaviour(
    keypair: &Keypair,
    cfg: &NetworkConfig,
) -> Result<gossipsub::Behaviour, String> {
    let gcfg = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .message_id_fn(|m: &gossipsub::Message| message_id(&m.data))
        // Messages are handed to the node's validator and only forwarded
        // once it reports Accept.
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_BYTES + GOSSIP_ENVELOPE_HEADROOM)
        .heartbeat_interval(cfg.gossip_heartbeat)
        .duplicate_cache_time(cfg.gossip_duplicate_cache)
        .build()
        .map_err(|e| format!("gossipsub config: {e}"))?;
    let mut g = gossipsub::Behaviour::new(MessageAuthenticity::Signed(keypair.clone()), gcfg)
        .map_err(|e| format!("gossipsub: {e}"))?;

    let mut topics = HashMap::new();
    for t in &cfg.topics {
        topics.insert(IdentTopic::new(t.clone()).hash(), topic_score_params());
    }
    let params = gossipsub::PeerScoreParams {
        topics,
        // Each rejected message also costs its forwarder 10 points of
        // application score (P5), kept by the network task.
        app_specific_weight: 10.0,
        // Off: NAT'd nodes share an address and testnets run many nodes on
        // one host; Sybil resistance comes from reputation, not from IPs.
        ip_colocation_factor_weight: 0.0,
        ..gossipsub::PeerScoreParams::default()
    };
    g.with_peer_score(params, gossipsub::PeerScoreThresholds::default())
        .map_err(|e| format!("gossipsub peer scoring: {e}"))?;
    for t in &cfg.topics {
        g.subscribe(&IdentTopic::new(t.clone()))
            .map_err(|e| format!("subscribe to {t}: {e}"))?;
    }
    Ok(g)
}

/// Scoring for every agora topic. The one penalty that matters is P4
/// (invalid messages): each rejected message costs its forwarder
/// `10 * count^2`, so a handful of forgeries in quick succession push a
/// peer under the graylist threshold (-80), after which its messages are
/// dropped unread; the count decays by 10% a second. Mesh delivery-rate
/// penalties (P3/P3b) are off because adverts come every 30 s, far below
/// any useful delivery threshold.
fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 300.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.5,
        first_message_deliveries_cap: 10.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.9,
        ..gossipsub::TopicScoreParams::default()
    }
}
