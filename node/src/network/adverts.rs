//! Capability adverts: the loop that signs and gossips this node's advert
//! on [`agora_protocol::TOPIC_ADVERTS`] every interval (30 s by default;
//! adverts double as heartbeats), the validator that checks everyone
//! else's before they are forwarded, and the answer to
//! [`Request::GetAdvert`].
//!
//! In: a [`CapabilitySource`] describing what the node offers now. Out:
//! the shared [`PeerBook`], which the validator fills with every advert it
//! accepts (and the loop with the node's own).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::unix_now_ms;

use agora_protocol::limits::{Bounded, MAX_ADDRS, MAX_GOSSIP_BYTES};
use agora_protocol::validate::{check_fresh, FreshnessError};
use agora_protocol::{
    CapabilityAdvert, DecodeError, NodeKey, PeerId, SignError, Signed, TOPIC_ADVERTS,
};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::peerbook::{PeerBook, PeerBookError, PeerState};
use super::{
    GossipMessage, GossipValidator, NetworkError, NetworkEvent, NetworkHandle, Validation,
};
use agora_protocol::rpc::{Request, Response};

/// Default time between adverts.
pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(30);
/// Delay between a first connection and the advert it triggers: enough for
/// gossipsub to exchange topic subscriptions with the new peer.
const ANNOUNCE_DELAY: Duration = Duration::from_millis(500);

/// Shortest advert interval honoured; shorter settings are raised to it.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// An older advert that is at most this old is taken for a late delivery
/// (gossip's IHAVE/IWANT repair can hand one over after its successor),
/// not a replay. Covers gossipsub's message-cache window (5 heartbeats of
/// 1 s) with room for slow links; anything older than the duplicate cache
/// window (60 s) that comes again is a replay.
pub const DEFAULT_LATE_GRACE: Duration = Duration::from_secs(10);

/// The peer book shared between the validator (network task), the advert
/// loop and readers such as the control API. The lock is only ever held
/// for a lookup or an insert, never across an await.
pub type SharedPeerBook = Arc<Mutex<PeerBook>>;

/// Locks the book, recovering from a poisoned lock: the book holds plain
/// data that every method leaves consistent, so a panic elsewhere while
/// holding it does not make it unusable.
pub fn lock_book(book: &SharedPeerBook) -> MutexGuard<'_, PeerBook> {
    crate::lock(book)
}

/// Why an advert was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdvertError {
    /// The message is larger than gossip allows.
    #[error("advert of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The envelope does not decode.
    #[error("advert envelope: {0}")]
    Decode(#[from] DecodeError),
    /// The signature is bad, or the signed payload does not decode or
    /// breaks a field limit.
    #[error("advert signature or payload: {0}")]
    Signature(#[from] SignError),
    /// Gossipsub gave no author (cannot happen in strict mode, but is not
    /// trusted to).
    #[error("advert has no gossipsub author")]
    NoAuthor,
    /// A node may only advertise itself.
    #[error("advert signed by {signer} was published by {author}")]
    AuthorMismatch {
        /// The gossipsub author (base58; kept as text so the error stays
        /// small).
        author: String,
        /// The advert's signer (base58).
        signer: String,
    },
    /// The advert's timestamp is too old or too far in the future.
    #[error("advert timestamp: {0}")]
    Freshness(#[from] FreshnessError),
    /// An advert older than the last one recorded, but recent: delivered
    /// late, not replayed. Dropped without penalty.
    #[error("superseded advert: seq {got} arrived after seq {last}")]
    Superseded {
        /// Its seq.
        got: u64,
        /// The seq already recorded.
        last: u64,
    },
    /// The advert's seq is not above the last one recorded.
    #[error(transparent)]
    Replay(#[from] PeerBookError),
}

/// A checked advert, ready to record.
#[derive(Debug, Clone)]
pub struct CheckedAdvert {
    /// Its signer.
    pub signer: PeerId,
    /// The advert.
    pub advert: CapabilityAdvert,
    /// The signed envelope it came in.
    pub signed: Signed<CapabilityAdvert>,
}

/// Checks one advert as received on the adverts topic: size, envelope,
/// signature and field bounds, signer = gossipsub author, timestamp within
/// the freshness window of `now_ms`, and seq above the last recorded in
/// `book`. A lower seq no older than `late_grace_ms` is
/// [`AdvertError::Superseded`], anything else not above the last seq is
/// [`AdvertError::Replay`]. Pure: does not record.
pub fn check_advert(
    data: &[u8],
    author: Option<PeerId>,
    book: &PeerBook,
    now_ms: u64,
    late_grace_ms: u64,
) -> Result<CheckedAdvert, AdvertError> {
    if data.len() > MAX_GOSSIP_BYTES {
        return Err(AdvertError::TooLarge {
            len: data.len(),
            limit: MAX_GOSSIP_BYTES,
        });
    }
    let signed = Signed::<CapabilityAdvert>::decode(data, MAX_GOSSIP_BYTES)?;
    let verified = signed.verify()?;
    let author = author.ok_or(AdvertError::NoAuthor)?;
    if author != verified.signer {
        return Err(AdvertError::AuthorMismatch {
            author: author.to_base58(),
            signer: verified.signer.to_base58(),
        });
    }
    check_fresh(verified.value.timestamp_ms, now_ms)?;
    if let Err(e) = book.check_seq(&verified.signer, verified.value.seq) {
        let PeerBookError::Replay { got, last, .. } = e;
        let age = now_ms.saturating_sub(verified.value.timestamp_ms);
        if got < last && age <= late_grace_ms {
            return Err(AdvertError::Superseded { got, last });
        }
        return Err(AdvertError::Replay(e));
    }
    Ok(CheckedAdvert {
        signer: verified.signer,
        advert: verified.value,
        signed,
    })
}

/// The gossip validator for the adverts topic: [`check_advert`], then
/// records the advert in the peer book. Superseded adverts are ignored,
/// every other failure is rejected (the forwarder is penalised).
#[derive(Debug, Clone)]
pub struct AdvertValidator {
    /// Where accepted adverts go.
    book: SharedPeerBook,
    /// See [`DEFAULT_LATE_GRACE`].
    late_grace_ms: u64,
}

impl AdvertValidator {
    /// A validator recording into `book`, with [`DEFAULT_LATE_GRACE`].
    pub fn new(book: SharedPeerBook) -> Self {
        Self {
            book,
            late_grace_ms: 0,
        }
        .with_late_grace(DEFAULT_LATE_GRACE)
    }

    /// Changes the late-delivery grace (tests with short gossip windows).
    pub fn with_late_grace(mut self, grace: Duration) -> Self {
        self.late_grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self
    }
}

impl GossipValidator for AdvertValidator {
    fn validate(&self, msg: &GossipMessage<'_>) -> Validation {
        if msg.topic != TOPIC_ADVERTS {
            return Validation::Ignore(format!("not an advert topic: {}", msg.topic));
        }
        let now = unix_now_ms();
        let mut book = lock_book(&self.book);
        let checked = match check_advert(msg.data, msg.source, &book, now, self.late_grace_ms) {
            Ok(c) => c,
            Err(e @ AdvertError::Superseded { .. }) => return Validation::Ignore(e.to_string()),
            Err(e) => return Validation::Reject(e.to_string()),
        };
        match book.record(checked.signer, checked.advert, checked.signed, now) {
            Ok(()) => Validation::Accept,
            Err(e) => Validation::Reject(e.to_string()),
        }
    }
}

/// What the node offers right now, as an advert template; the loop fills
/// in `seq`, `timestamp_ms` and `listen_addrs`. Called once per advert,
/// so it can report the current load.
pub type CapabilitySource = Arc<dyn Fn() -> CapabilityAdvert + Send + Sync>;

/// Settings of the advert loop.
#[derive(Clone)]
pub struct AdvertConfig {
    /// Time between adverts.
    pub interval: Duration,
    /// What to advertise.
    pub source: CapabilitySource,
}

/// Addresses worth advertising: confirmed external ones if any, else the
/// listen addresses that are not wildcards; at most [`MAX_ADDRS`].
fn dialable_addrs(external: Vec<Multiaddr>, listen: Vec<Multiaddr>) -> Vec<String> {
    let pick = if external.is_empty() {
        listen
    } else {
        external
    };
    pick.into_iter()
        .filter(|a| {
            !a.iter().any(|p| match p {
                Protocol::Ip4(ip) => ip.is_unspecified(),
                Protocol::Ip6(ip) => ip.is_unspecified(),
                _ => false,
            })
        })
        .take(MAX_ADDRS)
        .map(|a| a.to_string())
        .collect()
}

/// State of the advert loop: the node's key, its sequence counter and its
/// latest signed advert.
struct AdvertLoop {
    /// Where to publish.
    handle: NetworkHandle,
    /// Signs adverts.
    key: NodeKey,
    /// Where the node's own advert is recorded too.
    book: SharedPeerBook,
    /// What to advertise.
    cfg: AdvertConfig,
    /// Last seq used. Seeded from the clock, so it keeps rising across
    /// restarts without being stored.
    seq: u64,
    /// The latest advert, for [`Request::GetAdvert`].
    latest: Option<Signed<CapabilityAdvert>>,
    /// Whether an advert has reached at least one peer. Until then a new
    /// connection triggers one soon, instead of a full interval later.
    announced: bool,
}

impl AdvertLoop {
    async fn advertise(&mut self) {
        let now = unix_now_ms();
        self.seq = self.seq.saturating_add(1).max(now);
        let mut advert = (self.cfg.source)();
        advert.seq = self.seq;
        advert.timestamp_ms = now;
        let external = self.handle.external_addrs().await.unwrap_or_default();
        let listen = self.handle.listen_addrs().await.unwrap_or_default();
        advert.listen_addrs = dialable_addrs(external, listen);
        if let Err(e) = advert.check_bounds() {
            warn!(error = %e, "own advert breaks a protocol limit; not sent");
            return;
        }
        let signed = self.key.sign(&advert);
        {
            let mut book = lock_book(&self.book);
            if let Err(e) = book.record(self.key.peer_id(), advert, signed.clone(), now) {
                debug!(error = %e, "own advert not recorded");
            }
            // Once per advert is often enough for a dashboard gauge.
            let (known, online) = (book.len(), book.online(now).len());
            self.handle.metrics().set_nodes(known, online);
        }
        self.latest = Some(signed.clone());
        match self.handle.publish(TOPIC_ADVERTS, signed.encode()).await {
            Ok(id) => {
                self.announced = true;
                debug!(seq = self.seq, %id, "advert published");
            }
            // Normal before the first peer subscribes.
            Err(NetworkError::NoPeers { .. }) => debug!("advert not sent: no peers yet"),
            Err(e) => warn!(error = %e, "advert not published"),
        }
    }

    /// Asks a newly connected peer this node does not count as online (a
    /// peer remembered from an earlier run, or silent for a while) for its
    /// advert at once, rather than waiting up to an interval for its next
    /// one: a restarted node sees the network it rejoined straight away.
    /// The answer passes the same checks as a gossiped advert.
    fn ask_advert(&self, peer: PeerId) {
        let now = unix_now_ms();
        if peer == self.key.peer_id()
            || lock_book(&self.book).state(&peer, now) == Some(PeerState::Online)
        {
            return;
        }
        let (handle, book) = (self.handle.clone(), self.book.clone());
        tokio::spawn(async move {
            let signed = match handle.request(peer, Request::GetAdvert).await {
                Ok(Response::Advert(Some(signed))) => signed,
                Ok(_) => return,
                Err(e) => {
                    debug!(%peer, error = %e, "advert request failed");
                    return;
                }
            };
            let now = unix_now_ms();
            let mut book = lock_book(&book);
            let recorded = match check_advert(&signed.encode(), Some(peer), &book, now, 0) {
                Ok(c) => book
                    .record(c.signer, c.advert, c.signed, now)
                    .map_err(|e| e.to_string()),
                // The advert this node already holds, signed by the peer
                // and sent over the peer's own connection: it is alive.
                Err(AdvertError::Replay(PeerBookError::Replay { got, last, .. }))
                    if got == last && signed.verify().is_ok_and(|v| v.signer == peer) =>
                {
                    book.heard_again(&peer, now);
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = recorded {
                debug!(%peer, error = %e, "advert asked for not recorded");
            }
        });
    }

    async fn on_event(&mut self, event: NetworkEvent) {
        if let NetworkEvent::InboundRequest {
            peer,
            id,
            request: Request::GetAdvert,
        } = event
        {
            if let Err(e) = self
                .handle
                .respond(id, Response::Advert(self.latest.clone()))
                .await
            {
                debug!(%peer, error = %e, "advert request not answered");
            }
        }
    }
}

/// Runs the advert loop until `cancel` fires: an advert right away, then
/// one every `cfg.interval`; answers [`Request::GetAdvert`] meanwhile.
pub async fn run_advert_loop(
    handle: NetworkHandle,
    key: NodeKey,
    book: SharedPeerBook,
    cfg: AdvertConfig,
    cancel: CancellationToken,
) {
    let mut events = handle.subscribe();
    // tokio's interval panics on zero; a zero from a config file must not.
    let mut tick = tokio::time::interval(cfg.interval.max(MIN_INTERVAL));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = AdvertLoop {
        handle,
        key,
        book,
        cfg,
        seq: 0,
        latest: None,
        announced: false,
    };
    // Connections made before this task subscribed (the daemon starts the
    // network first, and a restarted node redials its peers at once)
    // raised no event here: ask those peers too.
    match state.handle.connected_peers().await {
        Ok(peers) => peers.into_iter().for_each(|p| state.ask_advert(p)),
        Err(e) => debug!(error = %e, "cannot list connected peers"),
    }
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            ev = events.recv() => match ev {
                Ok(NetworkEvent::PeerConnected { peer, .. }) => {
                    if !state.announced {
                        // The first adverts went nowhere; send one as soon
                        // as the new peer's topic subscriptions have arrived.
                        tick.reset_after(ANNOUNCE_DELAY);
                    }
                    state.ask_advert(peer);
                }
                Ok(ev) => state.on_event(ev).await,
                Err(RecvError::Lagged(n)) => debug!(skipped = n, "advert loop lagged behind network events"),
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => state.advertise().await,
        }
    }
}

/// Spawns [`run_advert_loop`] on the current runtime.
pub fn spawn_advert_loop(
    handle: NetworkHandle,
    key: NodeKey,
    book: SharedPeerBook,
    cfg: AdvertConfig,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run_advert_loop(handle, key, book, cfg, cancel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn advert(seq: u64, ts: u64) -> CapabilityAdvert {
        CapabilityAdvert {
            seq,
            timestamp_ms: ts,
            agent_version: "agora/test".into(),
            wasm: Some("wasmtime-36".into()),
            docker_images: Some(vec![]),
            cpu_cores: 2,
            memory_bytes: 1 << 30,
            max_jobs: 2,
            running_jobs: 0,
            labels: BTreeMap::from([("region".to_owned(), "eu".to_owned())]),
            listen_addrs: vec!["/memory/7".into()],
            executors: Vec::new(),
            image_fetch: false,
            shared_images: Vec::new(),
        }
    }

    const NOW: u64 = 1_700_000_000_000;
    const GRACE: u64 = 10_000;

    #[test]
    fn a_good_advert_passes_and_a_second_copy_is_a_replay() {
        let k = NodeKey::from_secret([7; 32]);
        let bytes = k.sign(&advert(10, NOW)).encode();
        let mut book = PeerBook::default();
        let c = check_advert(&bytes, Some(k.peer_id()), &book, NOW, GRACE).unwrap();
        assert_eq!((c.signer, c.advert.seq), (k.peer_id(), 10));
        book.record(c.signer, c.advert, c.signed, NOW).unwrap();
        let err = check_advert(&bytes, Some(k.peer_id()), &book, NOW + 1, GRACE).unwrap_err();
        assert!(matches!(err, AdvertError::Replay(_)), "{err}");
    }

    #[test]
    fn an_older_advert_is_superseded_when_recent_and_a_replay_when_old() {
        let k = NodeKey::from_secret([7; 32]);
        let mut book = PeerBook::default();
        let newer = k.sign(&advert(20, NOW));
        book.record(k.peer_id(), advert(20, NOW), newer.clone(), NOW)
            .unwrap();
        let p = Some(k.peer_id());
        // seq 19, made 3 s ago: a late delivery.
        let late = k.sign(&advert(19, NOW - 3_000)).encode();
        let err = check_advert(&late, p, &book, NOW, GRACE).unwrap_err();
        assert!(
            matches!(err, AdvertError::Superseded { got: 19, last: 20 }),
            "{err}"
        );
        // seq 19, made 30 s ago: a replay.
        let old = k.sign(&advert(19, NOW - 30_000)).encode();
        let err = check_advert(&old, p, &book, NOW, GRACE).unwrap_err();
        assert!(matches!(err, AdvertError::Replay(_)), "{err}");
        // The same seq again, however recent, is a replay.
        let err = check_advert(&newer.encode(), p, &book, NOW, GRACE).unwrap_err();
        assert!(matches!(err, AdvertError::Replay(_)), "{err}");
    }

    #[test]
    fn forged_signature_is_refused() {
        let k = NodeKey::from_secret([7; 32]);
        let mut bytes = k.sign(&advert(1, NOW)).encode();
        // The signature is the envelope's last field; flip its last byte.
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let err =
            check_advert(&bytes, Some(k.peer_id()), &PeerBook::default(), NOW, GRACE).unwrap_err();
        assert!(
            matches!(err, AdvertError::Signature(SignError::BadSignature { .. })),
            "{err}"
        );
    }

    #[test]
    fn someone_elses_advert_is_refused() {
        let k = NodeKey::from_secret([7; 32]);
        let other = NodeKey::from_secret([8; 32]);
        let bytes = k.sign(&advert(1, NOW)).encode();
        let err = check_advert(
            &bytes,
            Some(other.peer_id()),
            &PeerBook::default(),
            NOW,
            GRACE,
        )
        .unwrap_err();
        assert!(matches!(err, AdvertError::AuthorMismatch { .. }), "{err}");
        let err = check_advert(&bytes, None, &PeerBook::default(), NOW, GRACE).unwrap_err();
        assert!(matches!(err, AdvertError::NoAuthor), "{err}");
    }

    #[test]
    fn oversize_and_over_limit_and_garbage_are_refused() {
        let k = NodeKey::from_secret([7; 32]);
        let big = vec![0u8; MAX_GOSSIP_BYTES + 1];
        let err =
            check_advert(&big, Some(k.peer_id()), &PeerBook::default(), NOW, GRACE).unwrap_err();
        assert!(matches!(err, AdvertError::TooLarge { .. }), "{err}");

        let mut a = advert(1, NOW);
        for i in 0..=agora_protocol::limits::MAX_LABELS {
            a.labels.insert(format!("k{i}"), "v".into());
        }
        let bytes = k.sign(&a).encode();
        let err =
            check_advert(&bytes, Some(k.peer_id()), &PeerBook::default(), NOW, GRACE).unwrap_err();
        assert!(
            matches!(
                err,
                AdvertError::Signature(SignError::Payload {
                    source: DecodeError::Limit(_),
                    ..
                })
            ),
            "{err}"
        );

        let err = check_advert(
            b"\xff\x00garbage",
            Some(k.peer_id()),
            &PeerBook::default(),
            NOW,
            GRACE,
        )
        .unwrap_err();
        assert!(matches!(err, AdvertError::Decode(_)), "{err}");
    }

    #[test]
    fn stale_and_future_adverts_are_refused() {
        let k = NodeKey::from_secret([7; 32]);
        let book = PeerBook::default();
        let old = k.sign(&advert(1, NOW - 10 * 60 * 1000)).encode();
        let err = check_advert(&old, Some(k.peer_id()), &book, NOW, GRACE).unwrap_err();
        assert!(
            matches!(err, AdvertError::Freshness(FreshnessError::Stale { .. })),
            "{err}"
        );
        let future = k.sign(&advert(1, NOW + 10 * 60 * 1000)).encode();
        let err = check_advert(&future, Some(k.peer_id()), &book, NOW, GRACE).unwrap_err();
        assert!(
            matches!(
                err,
                AdvertError::Freshness(FreshnessError::FromTheFuture { .. })
            ),
            "{err}"
        );
    }

    #[test]
    fn only_specific_addresses_are_advertised() {
        let listen: Vec<Multiaddr> = vec![
            "/ip4/0.0.0.0/tcp/7400".parse().unwrap(),
            "/ip4/10.0.0.5/tcp/7400".parse().unwrap(),
            "/memory/42".parse().unwrap(),
        ];
        assert_eq!(
            dialable_addrs(vec![], listen.clone()),
            vec!["/ip4/10.0.0.5/tcp/7400".to_owned(), "/memory/42".to_owned()]
        );
        let ext: Vec<Multiaddr> = vec!["/ip4/1.2.3.4/tcp/7400".parse().unwrap()];
        assert_eq!(
            dialable_addrs(ext, listen),
            vec!["/ip4/1.2.3.4/tcp/7400".to_owned()]
        );
    }
}
