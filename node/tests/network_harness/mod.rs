//! Shared harness for the network tests: start in-process nodes on the
//! memory transport (or TCP on 127.0.0.1), wait for conditions with a
//! deadline, and stop nodes at will.

#![allow(dead_code)] // each test file uses a different part
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_node::clock::unix_now_ms;
use agora_node::network::adverts::{
    lock_book, spawn_advert_loop, AdvertConfig, AdvertValidator, SharedPeerBook,
};
use agora_node::network::peerbook::PeerBook;
use agora_node::network::{
    spawn, KadMode, NetworkConfig, NetworkHandle, TopicValidators, TransportKind,
};
use agora_protocol::{CapabilityAdvert, NodeKey, PeerId, TOPIC_ADVERTS};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous: the box is a noisy 2-core machine shared with other builds.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// A running node.
pub struct TestNode {
    pub key: NodeKey,
    pub handle: NetworkHandle,
    pub book: SharedPeerBook,
    pub cancel: CancellationToken,
    pub task: Option<JoinHandle<()>>,
    pub adverts: Option<JoinHandle<()>>,
}

impl TestNode {
    pub fn peer_id(&self) -> PeerId {
        self.key.peer_id()
    }

    /// Its first listen address with `/p2p/<id>` appended, waiting for it.
    pub async fn dial_addr(&self) -> Multiaddr {
        let h = self.handle.clone();
        let addr = wait_for(DEADLINE, "a listen address", || {
            let h = h.clone();
            async move {
                h.listen_addrs()
                    .await
                    .ok()
                    .and_then(|a| a.into_iter().next())
            }
        })
        .await;
        addr.with(Protocol::P2p(self.peer_id()))
    }

    /// The seq of `peer`'s latest advert in this node's book.
    pub fn seq_of(&self, peer: &PeerId) -> Option<u64> {
        lock_book(&self.book).get(peer).map(|r| r.advert.seq)
    }

    /// The peers this node's book shows online now.
    pub fn online(&self) -> Vec<PeerId> {
        lock_book(&self.book).online(unix_now_ms())
    }

    /// Stops the node and waits for its tasks to end.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.adverts.take() {
            t.await.expect("advert loop panicked");
        }
        if let Some(t) = self.task.take() {
            t.await.expect("network task panicked");
        }
    }
}

/// Fast settings for tests on the memory transport.
pub fn test_config(
    key: NodeKey,
    bootstrap: Vec<Multiaddr>,
    book: &SharedPeerBook,
) -> NetworkConfig {
    let mut cfg = NetworkConfig::new(key);
    cfg.transport = TransportKind::Memory;
    cfg.listen = vec!["/memory/0".parse().expect("valid multiaddr")];
    cfg.bootstrap = bootstrap;
    cfg.kad_mode = KadMode::Server;
    cfg.discovery_interval = Duration::from_millis(500);
    cfg.gossip_heartbeat = Duration::from_millis(300);
    cfg.validator = Arc::new(
        TopicValidators::new().with(TOPIC_ADVERTS, Arc::new(AdvertValidator::new(book.clone()))),
    );
    cfg
}

pub fn new_book() -> SharedPeerBook {
    Arc::new(Mutex::new(PeerBook::default()))
}

/// What test nodes advertise.
pub fn template_advert() -> CapabilityAdvert {
    CapabilityAdvert {
        seq: 0,
        timestamp_ms: 0,
        agent_version: "agora/test".into(),
        wasm: Some("wasmtime-36".into()),
        docker_images: None,
        cpu_cores: 2,
        memory_bytes: 1 << 30,
        max_jobs: 1,
        running_jobs: 0,
        labels: BTreeMap::from([("region".to_owned(), "test".to_owned())]),
        listen_addrs: vec![],
        executors: Vec::new(),
        image_fetch: false,
        shared_images: Vec::new(),
    }
}

/// Starts a node from `cfg`; with `advert_every`, also its advert loop.
pub fn start(cfg: NetworkConfig, book: SharedPeerBook, advert_every: Option<Duration>) -> TestNode {
    let key = cfg.key.clone();
    let cancel = CancellationToken::new();
    let (handle, task) = spawn(cfg, cancel.clone()).expect("network starts");
    let adverts = advert_every.map(|interval| {
        spawn_advert_loop(
            handle.clone(),
            key.clone(),
            book.clone(),
            AdvertConfig {
                interval,
                source: Arc::new(template_advert),
            },
            cancel.clone(),
        )
    });
    TestNode {
        key,
        handle,
        book,
        cancel,
        task: Some(task),
        adverts,
    }
}

/// Polls `f` until it yields `Some`, panicking with `what` at the deadline.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `f` until it is true, panicking with `what` at the deadline.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(deadline, what, || {
        let fut = f();
        async move { fut.await.then_some(()) }
    })
    .await
}
