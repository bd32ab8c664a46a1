//! Blob fetch over real in-process networks (memory transport): a node
//! fetches a multi-MiB blob from another in chunks; providers that lack
//! the blob, serve corrupt bytes or never answer are passed over; an
//! interrupted fetch resumes and fetches only the rest; concurrent
//! fetches of one blob download it once; busy (rate-limiting) providers
//! are waited for; the size limit and the deadline hold.
//!
//! Each provider answers `GetBlob` with `serve_chunk` from a small loop
//! over `NetworkEvent::InboundRequest`, optionally through a "policy"
//! that tampers with the answer.

// In tests a failed unwrap is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod network_harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_node::blobs::{self, BlobStore, FetchError};
use agora_node::network::ratelimit::RateLimit;
use agora_node::network::{NetworkConfig, NetworkEvent};
use agora_protocol::rpc::{Request, Response, RpcError};
use agora_protocol::{ContentId, NodeKey, PeerId};
use network_harness::*;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use tokio::task::JoinHandle;

const MIB: usize = 1024 * 1024;
/// Fetch limit used where the limit is not under test.
const MAX: u64 = 1 << 40;

/// Pseudo-random bytes (fast in debug builds: the generator is a
/// dependency, built with optimisation).
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// `left` pseudo-random bytes as a reader.
struct RandomReader {
    rng: rand_chacha::ChaCha8Rng,
    left: u64,
}

impl std::io::Read for RandomReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        self.rng.fill_bytes(&mut buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// What a provider does to each answer before sending it:
/// `(offset, len, honest answer) -> answer sent`.
type Policy = Arc<dyn Fn(u64, u32, Response) -> Response + Send + Sync>;

/// A network node with a blob store of its own.
struct BlobNode {
    node: TestNode,
    store: BlobStore,
    _db: sled::Db,
    _dir: tempfile::TempDir,
    server: Option<JoinHandle<()>>,
}

impl BlobNode {
    fn start(tweak: impl FnOnce(&mut NetworkConfig)) -> Self {
        let book = new_book();
        let mut cfg = test_config(NodeKey::generate(), vec![], &book);
        tweak(&mut cfg);
        let node = start(cfg, book, None);
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = BlobStore::open(&dir.path().join("blobs"), &db, u64::MAX).unwrap();
        Self {
            node,
            store,
            _db: db,
            _dir: dir,
            server: None,
        }
    }

    fn peer(&self) -> PeerId {
        self.node.peer_id()
    }

    /// Answers GetBlob requests from this node's store, through `policy`.
    fn serve(&mut self, policy: Option<Policy>) {
        let mut events = self.node.handle.subscribe();
        let (handle, store, cancel) = (
            self.node.handle.clone(),
            self.store.clone(),
            self.node.cancel.clone(),
        );
        self.server = Some(tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = cancel.cancelled() => break,
                    e = events.recv() => e,
                };
                let (id, request) = match event {
                    Ok(NetworkEvent::InboundRequest { id, request, .. }) => (id, request),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let (handle, store, policy) = (handle.clone(), store.clone(), policy.clone());
                tokio::spawn(async move {
                    let answer = match request {
                        Request::GetBlob {
                            id: blob,
                            offset,
                            len,
                        } => {
                            let honest = blobs::serve_chunk(&store, blob, offset, len).await;
                            match &policy {
                                Some(p) => p(offset, len, honest),
                                None => honest,
                            }
                        }
                        _ => Response::Error(RpcError::Unsupported),
                    };
                    let _ = handle.respond(id, answer).await;
                });
            }
        }));
    }

    /// Connects to `other` and waits until the connection is up.
    async fn connect(&self, other: &BlobNode) {
        self.node
            .handle
            .dial(other.node.dial_addr().await)
            .await
            .unwrap();
        let (h, peer) = (self.node.handle.clone(), other.peer());
        wait_until(DEADLINE, "a connection", || {
            let h = h.clone();
            async move {
                h.connected_peers()
                    .await
                    .unwrap_or_default()
                    .contains(&peer)
            }
        })
        .await;
    }

    async fn fetch(&self, id: ContentId, providers: &[PeerId]) -> Result<(), FetchError> {
        blobs::fetch(&self.store, &self.node.handle, id, providers, MAX, DEADLINE).await
    }

    async fn stop(mut self) {
        self.node.stop().await;
        if let Some(s) = self.server.take() {
            s.await.unwrap();
        }
    }
}

fn serving(tweak: impl FnOnce(&mut NetworkConfig)) -> BlobNode {
    let mut n = BlobNode::start(tweak);
    n.serve(None);
    n
}

fn no_tweak(_: &mut NetworkConfig) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_a_multi_mib_blob_in_chunks() {
    let a = serving(no_tweak);
    let b = BlobNode::start(no_tweak);
    b.connect(&a).await;
    let data = random_bytes(1, 10 * MIB + 123);
    let id = a.store.put(&data).unwrap();

    b.fetch(id, &[a.peer()]).await.unwrap();
    assert_eq!(b.store.get(&id).unwrap(), data);
    assert_eq!(b.store.partial_len(&id), 0);
    assert_eq!(a.store.metrics().bytes_out(), data.len() as u64);
    assert_eq!(b.store.metrics().bytes_in(), data.len() as u64);

    // Stored now: a second fetch asks nobody, not even a bogus provider.
    b.fetch(id, &[PeerId::random()]).await.unwrap();
    assert_eq!(a.store.metrics().bytes_out(), data.len() as u64);

    // Small blobs, the empty one and a one-chunk-exactly one, work too.
    for data in [vec![], b"tiny".to_vec(), random_bytes(2, 4 * MIB)] {
        let id = a.store.put(&data).unwrap();
        b.fetch(id, &[a.peer()]).await.unwrap();
        assert_eq!(b.store.get(&id).unwrap(), data);
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_over_providers_that_lack_the_blob_or_serve_corrupt_bytes() {
    let good = serving(no_tweak);
    let lacking = serving(no_tweak);
    let corrupt = serving(no_tweak);
    let b = BlobNode::start(no_tweak);
    for p in [&good, &lacking, &corrupt] {
        b.connect(p).await;
    }
    let data = random_bytes(3, 6 * MIB);
    let id = good.store.put(&data).unwrap();
    // Same size, other bytes: served as is, caught by the hash check.
    assert_eq!(corrupt.store.put(&data).unwrap(), id);
    std::fs::write(
        corrupt.store.dir().join(id.to_hex()),
        random_bytes(4, data.len()),
    )
    .unwrap();

    let err = b
        .fetch(id, &[lacking.peer(), corrupt.peer()])
        .await
        .unwrap_err();
    match &err {
        FetchError::NoProvider { id: e, tried } => {
            assert_eq!(*e, id);
            assert_eq!(tried.len(), 2, "{err}");
            assert_eq!(tried[0].0, lacking.peer());
            assert!(tried[0].1.contains("does not have"), "{err}");
            assert_eq!(tried[1].0, corrupt.peer());
            assert!(tried[1].1.contains("hashing to"), "{err}");
        }
        other => panic!("{other}"),
    }
    assert!(!b.store.has(&id));
    assert_eq!(b.store.partial_len(&id), 0, "bad bytes not kept");

    b.fetch(id, &[lacking.peer(), corrupt.peer(), good.peer()])
        .await
        .unwrap();
    assert_eq!(b.store.get(&id).unwrap(), data);
    for n in [good, lacking, corrupt, b] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_short_chunks_send_the_fetch_to_the_next_provider() {
    let good = serving(no_tweak);
    let mut garbage = BlobNode::start(no_tweak);
    garbage.serve(Some(Arc::new(|offset, _, r| match r {
        Response::BlobChunk { total, data } => Response::BlobChunk {
            total,
            data: random_bytes(offset, data.len()).into(),
        },
        other => other,
    })));
    let mut short = BlobNode::start(no_tweak);
    short.serve(Some(Arc::new(|_, _, r| match r {
        Response::BlobChunk { total, mut data } if !data.is_empty() => {
            data.pop();
            Response::BlobChunk { total, data }
        }
        other => other,
    })));
    let b = BlobNode::start(no_tweak);
    let data = random_bytes(5, 5 * MIB);
    let id = good.store.put(&data).unwrap();
    for p in [&good, &garbage, &short] {
        p.store.put(&data).unwrap();
        b.connect(p).await;
    }

    let err = b
        .fetch(id, &[garbage.peer(), short.peer()])
        .await
        .unwrap_err();
    let FetchError::NoProvider { tried, .. } = &err else {
        panic!("{err}")
    };
    assert!(tried[0].1.contains("hashing to"), "{err}");
    assert!(tried[1].1.contains("expected"), "{err}");

    b.fetch(id, &[garbage.peer(), short.peer(), good.peer()])
        .await
        .unwrap();
    assert_eq!(b.store.get(&id).unwrap(), data);
    for n in [good, garbage, short, b] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_fetch_resumes_and_fetches_only_the_rest() {
    const CUT: u64 = 8 * MIB as u64;
    // Serves the first 8 MiB, then claims not to have the blob.
    let mut flaky = BlobNode::start(no_tweak);
    flaky.serve(Some(Arc::new(|offset, len, r| {
        if offset >= CUT && len > 0 {
            Response::Error(RpcError::NotFound("gone".into()))
        } else {
            r
        }
    })));
    let good = serving(no_tweak);
    let b = BlobNode::start(no_tweak);
    b.connect(&flaky).await;
    b.connect(&good).await;
    let data = random_bytes(6, 21 * MIB + 5);
    let id = flaky.store.put(&data).unwrap();
    good.store.put(&data).unwrap();

    assert!(matches!(
        b.fetch(id, &[flaky.peer()]).await,
        Err(FetchError::NoProvider { .. })
    ));
    assert_eq!(b.store.partial_len(&id), CUT, "what arrived is kept");
    assert!(!b.store.has(&id));

    b.fetch(id, &[good.peer()]).await.unwrap();
    assert_eq!(b.store.get(&id).unwrap(), data);
    assert_eq!(
        good.store.metrics().bytes_out(),
        data.len() as u64 - CUT,
        "only the missing bytes were fetched"
    );
    assert_eq!(b.store.metrics().bytes_in(), data.len() as u64);

    // A partial that holds wrong bytes (a torn write before a crash) is
    // resumed, fails the hash check, and the same provider is asked for
    // the whole blob again.
    let other = random_bytes(7, 6 * MIB);
    let other_id = good.store.put(&other).unwrap();
    b.store
        .append_partial(&other_id, 0, &random_bytes(8, 2 * MIB))
        .unwrap();
    let before = good.store.metrics().bytes_out();
    b.fetch(other_id, &[good.peer()]).await.unwrap();
    assert_eq!(b.store.get(&other_id).unwrap(), other);
    assert_eq!(
        good.store.metrics().bytes_out() - before,
        (4 + 6) * MIB as u64,
        "the rest, then everything"
    );
    for n in [flaky, good, b] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_of_one_blob_download_it_once() {
    let a = serving(no_tweak);
    let b = BlobNode::start(no_tweak);
    b.connect(&a).await;
    let data = random_bytes(7, 9 * MIB);
    let id = a.store.put(&data).unwrap();

    let providers = [a.peer()];
    let (r1, r2, r3) = tokio::join!(
        b.fetch(id, &providers),
        b.fetch(id, &providers),
        b.fetch(id, &providers)
    );
    r1.unwrap();
    r2.unwrap();
    r3.unwrap();
    assert_eq!(b.store.get(&id).unwrap(), data);
    assert_eq!(
        a.store.metrics().bytes_out(),
        data.len() as u64,
        "fetched once"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limiting_provider_is_waited_for() {
    // 3 requests at once, then 10 a second: the fetch needs 1 + 6 requests.
    let a = serving(|cfg| cfg.request_rate = RateLimit::new(3, 10));
    let b = BlobNode::start(no_tweak);
    b.connect(&a).await;
    let data = random_bytes(8, 24 * MIB);
    let id = a.store.put(&data).unwrap();
    b.fetch(id, &[a.peer()]).await.unwrap();
    assert_eq!(b.store.get(&id).unwrap(), data);
    assert!(
        a.node.handle.metrics().rpc_rate_limited_total() > 0,
        "the limit was hit and waited out"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_and_deadline_hold() {
    let a = serving(no_tweak);
    // Hears requests but never answers them.
    let silent = BlobNode::start(no_tweak);
    let _deaf_ear = silent.node.handle.subscribe();
    let b = BlobNode::start(no_tweak);
    b.connect(&a).await;
    b.connect(&silent).await;
    let data = random_bytes(9, MIB);
    let id = a.store.put(&data).unwrap();

    let limit = data.len() as u64 - 1;
    match blobs::fetch(&b.store, &b.node.handle, id, &[a.peer()], limit, DEADLINE).await {
        Err(FetchError::TooLarge { size, limit: l, .. }) => {
            assert_eq!((size, l), (data.len() as u64, limit));
        }
        other => panic!("{other:?}"),
    }
    assert!(!b.store.has(&id));

    let started = Instant::now();
    let deadline = Duration::from_secs(2);
    let r = blobs::fetch(
        &b.store,
        &b.node.handle,
        id,
        &[silent.peer(), a.peer()],
        MAX,
        deadline,
    )
    .await;
    match r {
        Err(FetchError::Deadline { after, have, .. }) => assert_eq!((after, have), (deadline, 0)),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < DEADLINE,
        "bounded by the fetch deadline"
    );

    for n in [a, silent, b] {
        n.stop().await;
    }
}

/// Real TCP on 127.0.0.1 (noise, yamux) instead of the memory transport.
fn loopback_tcp(cfg: &mut NetworkConfig) {
    cfg.transport = agora_node::network::TransportKind::Tcp;
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
}

/// A 256 MiB module end to end over loopback TCP, at the default request
/// rate limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_a_256_mib_module_over_loopback_tcp() {
    let a = serving(loopback_tcp);
    let b = BlobNode::start(loopback_tcp);
    b.connect(&a).await;
    // Streamed into the store, never whole in memory.
    let source = RandomReader {
        rng: rand_chacha::ChaCha8Rng::seed_from_u64(10),
        left: 256 * MIB as u64,
    };
    let (id, size) = a.store.put_reader(source, MAX).unwrap();
    assert_eq!(size, 256 * MIB as u64);

    let started = Instant::now();
    b.fetch(id, &[a.peer()]).await.unwrap();
    let took = started.elapsed();
    eprintln!("fetched {size} bytes in {took:?}");
    assert!(b.store.has(&id));
    assert_eq!(b.store.size(&id), Some(size));
    assert_eq!(b.store.metrics().bytes_in(), size);
    a.stop().await;
    b.stop().await;
}
