//! Gossip benchmark over in-process nodes on libp2p's memory transport:
//! how long a node takes to learn the whole network from one bootstrap
//! address, and how fast a signed message reaches every node.
//!
//! Usage: `bench-gossip [NODES] [ROUNDS] [ADVERT_SECONDS]` (defaults 50, 30
//! and 10). Prints one JSON object on stdout; `testnet/bench-network.sh`
//! turns it into docs/benchmarks.md.

// The result is this program's output.
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_node::clock::unix_now_ms;
use agora_node::network::adverts::{
    lock_book, spawn_advert_loop, AdvertConfig, AdvertValidator, SharedPeerBook,
};
use agora_node::network::peerbook::PeerBook;
use agora_node::network::{
    spawn, GossipMessage, GossipValidator, KadMode, NetworkConfig, NetworkEvent, NetworkHandle,
    TopicValidators, TransportKind, Validation,
};
use agora_protocol::limits::MAX_GOSSIP_BYTES;
use agora_protocol::{CapabilityAdvert, NodeKey, PeerId, Signed, TOPIC_ADVERTS};
use anyhow::{bail, Context, Result};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio_util::sync::CancellationToken;

/// Topic of the propagation rounds, kept apart from real adverts so the
/// rounds do not disturb the peer books.
const BENCH_TOPIC: &str = "agora/bench/1";

/// Accepts a message only if it is a validly signed advert: the same
/// decode-and-verify cost a real advert pays, without the replay check.
struct VerifySignature;

impl GossipValidator for VerifySignature {
    fn validate(&self, msg: &GossipMessage<'_>) -> Validation {
        match Signed::<CapabilityAdvert>::decode(msg.data, MAX_GOSSIP_BYTES)
            .map_err(|e| e.to_string())
            .and_then(|s| s.verify().map_err(|e| e.to_string()))
        {
            Ok(_) => Validation::Accept,
            Err(e) => Validation::Reject(e),
        }
    }
}

struct Node {
    handle: NetworkHandle,
    book: SharedPeerBook,
    key: NodeKey,
}

fn advert(seq: u64) -> CapabilityAdvert {
    CapabilityAdvert {
        seq,
        timestamp_ms: unix_now_ms(),
        agent_version: "agora/bench".into(),
        wasm: Some("wasmtime".into()),
        docker_images: None,
        cpu_cores: 2,
        memory_bytes: 1 << 30,
        max_jobs: 1,
        running_jobs: 0,
        labels: BTreeMap::new(),
        listen_addrs: vec![],
        executors: Vec::new(),
        image_fetch: false,
        shared_images: Vec::new(),
    }
}

fn start(
    bootstrap: Vec<Multiaddr>,
    advert_every: Duration,
    cancel: &CancellationToken,
) -> Result<Node> {
    let key = NodeKey::generate();
    let book: SharedPeerBook = Arc::new(Mutex::new(PeerBook::default()));
    let mut cfg = NetworkConfig::new(key.clone());
    cfg.transport = TransportKind::Memory;
    cfg.listen = vec!["/memory/0".parse()?];
    cfg.bootstrap = bootstrap;
    cfg.kad_mode = KadMode::Server;
    cfg.listen_addrs_are_external = true;
    cfg.discovery_interval = Duration::from_secs(2);
    cfg.topics.push(BENCH_TOPIC.to_owned());
    cfg.validator = Arc::new(
        TopicValidators::new()
            .with(TOPIC_ADVERTS, Arc::new(AdvertValidator::new(book.clone())))
            .with(BENCH_TOPIC, Arc::new(VerifySignature)),
    );
    let (handle, _task) = spawn(cfg, cancel.clone())?;
    spawn_advert_loop(
        handle.clone(),
        key.clone(),
        book.clone(),
        AdvertConfig {
            interval: advert_every,
            source: Arc::new(|| advert(0)),
        },
        cancel.clone(),
    );
    Ok(Node { handle, book, key })
}

async fn dial_addr(n: &Node) -> Result<Multiaddr> {
    for _ in 0..200 {
        if let Some(a) = n.handle.listen_addrs().await?.into_iter().next() {
            return Ok(a.with(Protocol::P2p(n.key.peer_id())));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("node never got a listen address")
}

fn knows_all(n: &Node, all: &[PeerId]) -> bool {
    let online = lock_book(&n.book).online(unix_now_ms());
    all.iter()
        .filter(|p| **p != n.key.peer_id())
        .all(|p| online.contains(p))
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let t0 = Instant::now();
    while !f() {
        if t0.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(t0.elapsed())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(50);
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);
    let advert_every =
        Duration::from_secs(args.next().map(|s| s.parse()).transpose()?.unwrap_or(10));
    if nodes < 2 {
        bail!("need at least 2 nodes");
    }
    let cancel = CancellationToken::new();
    let first = start(vec![], advert_every, &cancel)?;
    let boot = dial_addr(&first).await?;
    let mut all = vec![first];
    for _ in 1..nodes {
        all.push(start(vec![boot.clone()], advert_every, &cancel)?);
    }
    let ids: Vec<PeerId> = all.iter().map(|n| n.key.peer_id()).collect();
    let converge = wait_until(
        "every node to know all others",
        Duration::from_secs(300),
        || all.iter().all(|n| knows_all(n, &ids)),
    )
    .await?;
    eprintln!("{nodes} nodes converged in {converge:?}");

    // A newcomer given only the first node's address.
    let newcomer = start(vec![boot.clone()], advert_every, &cancel)?;
    let mut with_new = ids.clone();
    with_new.push(newcomer.key.peer_id());
    let learn = wait_until(
        "the newcomer to know all others",
        Duration::from_secs(300),
        || knows_all(&newcomer, &with_new),
    )
    .await?;
    eprintln!("newcomer learned all {nodes} nodes in {learn:?}");

    // Propagation rounds: a random-ish publisher signs a message; every
    // other node notes when it is delivered.
    let received: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    for n in &all {
        let mut rx = n.handle.subscribe();
        let received = received.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(NetworkEvent::Gossip(g)) if g.topic == BENCH_TOPIC => {
                        let now = Instant::now();
                        if let Ok(mut r) = received.lock() {
                            r.entry(g.message_id.clone()).or_default().push(now);
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }
    // Let the bench topic's mesh form.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut latencies_ms = Vec::new();
    let mut incomplete = 0usize;
    for round in 0..rounds {
        let publisher = &all[(round * 7 + 3) % all.len()];
        let bytes = publisher.key.sign(&advert(round as u64)).encode();
        let t0 = Instant::now();
        let id = publisher
            .handle
            .publish(BENCH_TOPIC, bytes)
            .await
            .with_context(|| format!("round {round}: publish"))?;
        let want = all.len() - 1;
        let done = wait_until("delivery", Duration::from_secs(10), || {
            received
                .lock()
                .map(|r| r.get(&id).map_or(0, Vec::len) >= want)
                .unwrap_or(false)
        })
        .await;
        if done.is_err() {
            incomplete += 1;
        }
        if let Ok(r) = received.lock() {
            for t in r.get(&id).into_iter().flatten() {
                latencies_ms.push(t.duration_since(t0).as_secs_f64() * 1000.0);
            }
        }
    }
    latencies_ms.sort_by(f64::total_cmp);
    let result = serde_json::json!({
        "nodes": nodes,
        "rounds": rounds,
        "advert_interval_ms": advert_every.as_millis() as u64,
        "converge_ms": converge.as_millis() as u64,
        "newcomer_learn_ms": learn.as_millis() as u64,
        "deliveries": latencies_ms.len(),
        "expected_deliveries": rounds * (nodes - 1),
        "incomplete_rounds": incomplete,
        "propagation_p50_ms": percentile(&latencies_ms, 50.0),
        "propagation_p99_ms": percentile(&latencies_ms, 99.0),
        "propagation_max_ms": latencies_ms.last().copied().unwrap_or(f64::NAN),
    });
    println!("{result}");
    cancel.cancel();
    Ok(())
}
