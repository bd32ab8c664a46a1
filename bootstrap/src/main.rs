//! `agora-bootstrap`: a DHT-server-only agora node that seeds discovery.
//!
//! Glue over `agora-node`'s network module: Kademlia in server mode,
//! identify, ping, autonat, a relay server for NATed nodes, and advert
//! gossip forwarding (validated like any node does); no executors, no
//! jobs, no control API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use agora_node::config::LogFormat;
use agora_node::identity;
use agora_node::network::adverts::AdvertValidator;
use agora_node::network::peerbook::PeerBook;
use agora_node::network::{
    KadMode, Network, NetworkConfig, NetworkEvent, RelayUse, TopicValidators,
};
use agora_protocol::TOPIC_ADVERTS;
use anyhow::{Context, Result};
use clap::Parser;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Bootstrap node for the agora peer-to-peer compute network.
///
/// A bootstrap node is a stable, publicly reachable Kademlia server that new
/// agora nodes dial first to find the rest of the network. It runs no jobs
/// and holds no authority: once a node knows a few peers it no longer needs
/// any bootstrap node.
#[derive(Debug, Parser)]
#[command(name = "agora-bootstrap", version, about, long_about)]
struct Args {
    /// Listen address (repeatable); default TCP and QUIC on port 7400.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Public address of this host (repeatable), e.g.
    /// /ip4/203.0.113.7/tcp/7400; lets the relay hand out reservations
    /// before autonat confirms an address.
    #[arg(long, value_name = "MULTIADDR")]
    external: Vec<Multiaddr>,
    /// The node key; created on first start and reused, so the PeerId in
    /// every node's bootstrap list stays valid. Default
    /// ~/.agora-bootstrap/identity.key.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Log format on stderr (filter with AGORA_LOG, default info).
    #[arg(long, value_name = "text|json", default_value = "text")]
    log_format: LogFormat,
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("listening for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn default_listen() -> Vec<Multiaddr> {
    ["/ip4/0.0.0.0/tcp/7400", "/ip4/0.0.0.0/udp/7400/quic-v1"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}

async fn run(args: Args) -> Result<()> {
    let key_file = match args.key_file {
        Some(p) => p,
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set; pass --key-file")?)
                .join(".agora-bootstrap")
                .join(identity::IDENTITY_FILE)
        }
    };
    let key = identity::load_or_create(&key_file)?;
    let peer = key.peer_id();
    let mut cfg = NetworkConfig::new(key);
    cfg.listen = if args.listen.is_empty() {
        default_listen()
    } else {
        args.listen
    };
    cfg.external_addrs = args.external;
    cfg.kad_mode = KadMode::Server;
    // A bootstrap node is run on a reachable address by definition; its
    // relay can only hand out reservations that name external addresses.
    cfg.listen_addrs_are_external = true;
    cfg.relay_server = true;
    cfg.relay_use = RelayUse::Never;
    // Adverts only: forwarding them helps a young network whose nodes
    // know only the bootstrap; job gossip flows between the nodes.
    cfg.topics = vec![TOPIC_ADVERTS.to_owned()];
    let book = Arc::new(Mutex::new(PeerBook::default()));
    cfg.validator =
        Arc::new(TopicValidators::new().with(TOPIC_ADVERTS, Arc::new(AdvertValidator::new(book))));
    let (network, handle) = Network::new(cfg).context("starting the network")?;
    let mut events = handle.subscribe();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(network.run(cancel.clone()));
    println_flush(&format!("peer id: {peer}"))?;
    info!(%peer, key_file = %key_file.display(), "bootstrap node started");

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            r = &mut shutdown => {
                r?;
                break;
            }
            ev = events.recv() => match ev {
                Ok(NetworkEvent::ListeningOn(addr)) => {
                    let full = addr.with(Protocol::P2p(peer));
                    println_flush(&format!("listening on: {full}"))?;
                }
                Ok(NetworkEvent::PeerConnected { peer, addr }) => info!(%peer, %addr, "peer connected"),
                Ok(NetworkEvent::PeerDisconnected(peer)) => info!(%peer, "peer disconnected"),
                Ok(NetworkEvent::Gossip(_) | NetworkEvent::InboundRequest { .. }) => {}
                Err(RecvError::Lagged(n)) => warn!(skipped = n, "event log lagged"),
                Err(RecvError::Closed) => {
                    warn!("network task stopped");
                    break;
                }
            },
        }
    }
    info!("shutting down");
    cancel.cancel();
    task.await.context("network task")?;
    Ok(())
}

/// Writes one line to stdout and flushes, so a supervisor or script
/// reading a pipe sees the addresses at once.
fn println_flush(line: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    agora_node::logging::init(args.log_format, "info");
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agora-bootstrap: {e:#}");
            ExitCode::FAILURE
        }
    }
}
