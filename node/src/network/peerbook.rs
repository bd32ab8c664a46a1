//! The peer book: the latest verified capability advert of every node this
//! node has heard from, and whether that node is online.
//!
//! Adverts are also heartbeats: a node that has not advertised for
//! [`DEFAULT_OFFLINE_AFTER_MS`] (2 minutes) is shown offline, and is the
//! first to be forgotten when the book is full. A record restored from an
//! earlier run ([`PeerBook::restore`]) is *known*, not online, until the
//! node is heard from again; its advertised addresses are where a restarted
//! node looks for the network it knew ([`PeerBook::rejoin_candidates`]).
//!
//! **Invariant:** pure. Every method takes `now_ms` (ms since the Unix
//! epoch, read by the caller); nothing here reads a clock or does I/O.

use std::collections::HashMap;

use agora_protocol::{CapabilityAdvert, PeerId, Signed};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

/// A node is offline after this long without an advert (2 minutes, four
/// missed 30 s adverts).
pub const DEFAULT_OFFLINE_AFTER_MS: u64 = 2 * 60 * 1000;
/// Most nodes remembered by default.
pub const DEFAULT_MAX_PEERS: usize = 10_000;

/// Whether a node is heard from recently enough to be given work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Advertised within the offline window.
    Online,
    /// Silent for longer than the offline window.
    Offline,
    /// Remembered from an earlier run of this node, not heard from since.
    Known,
}

impl PeerState {
    /// The lower-case name the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Online => "online",
            PeerState::Offline => "offline",
            PeerState::Known => "known",
        }
    }
}

/// What the book knows about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// The node's latest advert, verified.
    pub advert: CapabilityAdvert,
    /// The same advert as signed, so it can be handed on verifiably.
    pub signed: Signed<CapabilityAdvert>,
    /// When this node last received an advert from it (local clock, ms
    /// since the Unix epoch); the advert's own timestamp is the sender's
    /// clock and is not trusted for liveness.
    pub last_seen_ms: u64,
    /// Whether it was heard from since this node started (false for a
    /// record restored from disk).
    pub heard: bool,
}

/// One row of the book as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// The node.
    pub peer: PeerId,
    /// Online or offline as of the `now_ms` asked about.
    pub state: PeerState,
    /// Its latest record.
    pub record: PeerRecord,
}

/// Why an advert was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerBookError {
    /// The advert's sequence number is not above the last one recorded
    /// for that node: a replay, or an older advert arriving late.
    #[error("replayed advert from {peer}: seq {got} is not above the last recorded seq {last}")]
    Replay {
        /// The node.
        peer: PeerId,
        /// Sequence number of the refused advert.
        got: u64,
        /// Last sequence number recorded.
        last: u64,
    },
}

/// The peer book. See the module docs.
#[derive(Debug, Clone)]
pub struct PeerBook {
    /// Latest record per node.
    peers: HashMap<PeerId, PeerRecord>,
    /// Silence after which a node is offline.
    offline_after_ms: u64,
    /// Most nodes remembered; the longest-silent is forgotten first.
    max_peers: usize,
}

impl Default for PeerBook {
    fn default() -> Self {
        Self::new(DEFAULT_OFFLINE_AFTER_MS, DEFAULT_MAX_PEERS)
    }
}

impl PeerBook {
    /// An empty book marking nodes offline after `offline_after_ms` of
    /// silence and remembering at most `max_peers` (at least 1).
    pub fn new(offline_after_ms: u64, max_peers: usize) -> Self {
        Self {
            peers: HashMap::new(),
            offline_after_ms,
            max_peers: max_peers.max(1),
        }
    }

    /// Checks that an advert from `peer` with sequence `seq` would be
    /// recorded, without recording it.
    pub fn check_seq(&self, peer: &PeerId, seq: u64) -> Result<(), PeerBookError> {
        match self.peers.get(peer) {
            Some(r) if seq <= r.advert.seq => Err(PeerBookError::Replay {
                peer: *peer,
                got: seq,
                last: r.advert.seq,
            }),
            _ => Ok(()),
        }
    }

    /// Records a verified advert from `peer`, received at `now_ms`.
    /// Refuses any advert whose seq is not above the last one recorded.
    pub fn record(
        &mut self,
        peer: PeerId,
        advert: CapabilityAdvert,
        signed: Signed<CapabilityAdvert>,
        now_ms: u64,
    ) -> Result<(), PeerBookError> {
        self.insert(peer, advert, signed, now_ms, true)
    }

    /// Notes that `peer` answered this node directly at `now_ms` with the
    /// advert already recorded (it published none since): online again,
    /// as a new advert would make it. Returns whether `peer` has a record.
    pub fn heard_again(&mut self, peer: &PeerId, now_ms: u64) -> bool {
        match self.peers.get_mut(peer) {
            Some(r) => {
                r.heard = true;
                r.last_seen_ms = r.last_seen_ms.max(now_ms);
                true
            }
            None => false,
        }
    }

    /// Puts back a verified advert saved by an earlier run, last heard
    /// from at `last_seen_ms`: the node is known, not online, until an
    /// advert from it is [`recorded`](Self::record) again.
    pub fn restore(
        &mut self,
        peer: PeerId,
        advert: CapabilityAdvert,
        signed: Signed<CapabilityAdvert>,
        last_seen_ms: u64,
    ) -> Result<(), PeerBookError> {
        self.insert(peer, advert, signed, last_seen_ms, false)
    }

    fn insert(
        &mut self,
        peer: PeerId,
        advert: CapabilityAdvert,
        signed: Signed<CapabilityAdvert>,
        last_seen_ms: u64,
        heard: bool,
    ) -> Result<(), PeerBookError> {
        self.check_seq(&peer, advert.seq)?;
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.max_peers {
            self.evict_longest_silent();
        }
        self.peers.insert(
            peer,
            PeerRecord {
                advert,
                signed,
                last_seen_ms,
                heard,
            },
        );
        Ok(())
    }

    /// Up to `max` nodes remembered from an earlier run and not heard from
    /// since, most recently seen first, each with the addresses it
    /// advertised (those that parse, with its `/p2p` id stripped): whom a
    /// restarted node dials to find the network again.
    pub fn rejoin_candidates(&self, max: usize) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut rows: Vec<(&PeerId, &PeerRecord)> =
            self.peers.iter().filter(|(_, r)| !r.heard).collect();
        rows.sort_by(|a, b| b.1.last_seen_ms.cmp(&a.1.last_seen_ms).then(a.0.cmp(b.0)));
        rows.into_iter()
            .filter_map(|(peer, r)| {
                let addrs: Vec<Multiaddr> = r
                    .advert
                    .listen_addrs
                    .iter()
                    .filter_map(|a| a.parse::<Multiaddr>().ok())
                    .map(|a| {
                        a.into_iter()
                            .filter(|p| !matches!(p, Protocol::P2p(_)))
                            .collect()
                    })
                    .collect();
                (!addrs.is_empty()).then_some((*peer, addrs))
            })
            .take(max)
            .collect()
    }

    /// Online or offline as of `now_ms`; `None` for a node never heard from.
    pub fn state(&self, peer: &PeerId, now_ms: u64) -> Option<PeerState> {
        self.peers.get(peer).map(|r| self.state_of(r, now_ms))
    }

    /// The latest record of `peer`.
    pub fn get(&self, peer: &PeerId) -> Option<&PeerRecord> {
        self.peers.get(peer)
    }

    /// Every node, online first, then by PeerId, as of `now_ms`.
    pub fn list(&self, now_ms: u64) -> Vec<PeerView> {
        let mut rows: Vec<PeerView> = self
            .peers
            .iter()
            .map(|(peer, record)| PeerView {
                peer: *peer,
                state: self.state_of(record, now_ms),
                record: record.clone(),
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.state != PeerState::Online, a.peer.to_bytes())
                .cmp(&(b.state != PeerState::Online, b.peer.to_bytes()))
        });
        rows
    }

    /// The nodes online as of `now_ms`.
    pub fn online(&self, now_ms: u64) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, r)| self.state_of(r, now_ms) == PeerState::Online)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Number of nodes remembered, online or not.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no node is remembered.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn state_of(&self, r: &PeerRecord, now_ms: u64) -> PeerState {
        if !r.heard {
            PeerState::Known
        } else if now_ms.saturating_sub(r.last_seen_ms) > self.offline_after_ms {
            PeerState::Offline
        } else {
            PeerState::Online
        }
    }

    fn evict_longest_silent(&mut self) {
        let oldest = self
            .peers
            .iter()
            .min_by_key(|(_, r)| r.last_seen_ms)
            .map(|(p, _)| *p);
        if let Some(p) = oldest {
            self.peers.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::NodeKey;
    use std::collections::BTreeMap;

    fn advert(seq: u64) -> CapabilityAdvert {
        CapabilityAdvert {
            seq,
            timestamp_ms: 1_000 + seq,
            agent_version: "agora/test".into(),
            wasm: Some("wasmtime-36".into()),
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

    fn rec(book: &mut PeerBook, key: &NodeKey, seq: u64, now: u64) -> Result<(), PeerBookError> {
        let a = advert(seq);
        let s = key.sign(&a);
        book.record(key.peer_id(), a, s, now)
    }

    #[test]
    fn records_latest_and_refuses_replays() {
        let k = NodeKey::from_secret([1; 32]);
        let mut book = PeerBook::default();
        rec(&mut book, &k, 5, 10_000).unwrap();
        assert_eq!(book.get(&k.peer_id()).unwrap().advert.seq, 5);
        let err = rec(&mut book, &k, 5, 11_000).unwrap_err();
        assert_eq!(
            err,
            PeerBookError::Replay {
                peer: k.peer_id(),
                got: 5,
                last: 5
            }
        );
        assert!(rec(&mut book, &k, 4, 11_000).is_err(), "older seq refused");
        // A refused advert does not refresh liveness.
        assert_eq!(book.get(&k.peer_id()).unwrap().last_seen_ms, 10_000);
        rec(&mut book, &k, 6, 12_000).unwrap();
        let r = book.get(&k.peer_id()).unwrap();
        assert_eq!((r.advert.seq, r.last_seen_ms), (6, 12_000));
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn offline_after_two_minutes_of_silence_and_back_online_on_advert() {
        let k = NodeKey::from_secret([2; 32]);
        let mut book = PeerBook::default();
        let t0 = 1_000_000;
        rec(&mut book, &k, 1, t0).unwrap();
        let p = k.peer_id();
        assert_eq!(book.state(&p, t0), Some(PeerState::Online));
        assert_eq!(
            book.state(&p, t0 + DEFAULT_OFFLINE_AFTER_MS),
            Some(PeerState::Online),
            "exactly two minutes is still online"
        );
        assert_eq!(
            book.state(&p, t0 + DEFAULT_OFFLINE_AFTER_MS + 1),
            Some(PeerState::Offline)
        );
        assert!(book.online(t0 + DEFAULT_OFFLINE_AFTER_MS + 1).is_empty());
        rec(&mut book, &k, 2, t0 + 10 * 60 * 1000).unwrap();
        assert_eq!(book.state(&p, t0 + 10 * 60 * 1000), Some(PeerState::Online));
        assert_eq!(
            book.state(&NodeKey::from_secret([9; 32]).peer_id(), t0),
            None
        );
    }

    #[test]
    fn restored_records_are_known_until_heard_from_and_are_rejoin_candidates() {
        let (a, b, c) = (
            NodeKey::from_secret([7; 32]),
            NodeKey::from_secret([8; 32]),
            NodeKey::from_secret([9; 32]),
        );
        let mut book = PeerBook::default();
        let with_addrs = |seq: u64, addrs: &[&str]| CapabilityAdvert {
            listen_addrs: addrs.iter().map(|s| s.to_string()).collect(),
            ..advert(seq)
        };
        let t = 1_000_000;
        let adv = with_addrs(1, &["/ip4/10.0.0.1/tcp/7400", "not an address"]);
        book.restore(a.peer_id(), adv.clone(), a.sign(&adv), t - 10)
            .unwrap();
        let adv = with_addrs(
            1,
            &["/ip4/10.0.0.2/tcp/7400/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"],
        );
        book.restore(b.peer_id(), adv.clone(), b.sign(&adv), t - 5)
            .unwrap();
        let adv = with_addrs(1, &[]);
        book.restore(c.peer_id(), adv.clone(), c.sign(&adv), t)
            .unwrap();
        // Seen a second ago, but in an earlier run: known, not online.
        assert_eq!(book.state(&a.peer_id(), t), Some(PeerState::Known));
        assert!(book.online(t).is_empty());
        // Most recent first, /p2p stripped, bad addresses and nodes with
        // none left out, bounded.
        let got = book.rejoin_candidates(5);
        assert_eq!(
            got,
            vec![
                (b.peer_id(), vec!["/ip4/10.0.0.2/tcp/7400".parse().unwrap()]),
                (a.peer_id(), vec!["/ip4/10.0.0.1/tcp/7400".parse().unwrap()]),
            ]
        );
        assert_eq!(book.rejoin_candidates(1).len(), 1);
        // Heard from again: online, and no longer a candidate.
        rec(&mut book, &a, 2, t + 1).unwrap();
        assert_eq!(book.state(&a.peer_id(), t + 1), Some(PeerState::Online));
        assert_eq!(book.rejoin_candidates(5).len(), 1);
        // A restored record still refuses older adverts.
        assert!(rec(&mut book, &b, 1, t + 2).is_err());
        // A peer that answers with the advert already recorded is heard
        // from all the same; an unknown one is not made up.
        assert!(book.heard_again(&b.peer_id(), t + 3));
        assert_eq!(book.state(&b.peer_id(), t + 3), Some(PeerState::Online));
        assert!(!book.heard_again(&NodeKey::from_secret([1; 32]).peer_id(), t));
        assert_eq!(
            book.state(&NodeKey::from_secret([1; 32]).peer_id(), t),
            None
        );
    }

    #[test]
    fn a_clock_behind_the_last_record_does_not_panic() {
        let k = NodeKey::from_secret([3; 32]);
        let mut book = PeerBook::default();
        rec(&mut book, &k, 1, 50_000).unwrap();
        assert_eq!(book.state(&k.peer_id(), 0), Some(PeerState::Online));
    }

    #[test]
    fn list_puts_online_first_and_full_book_forgets_the_longest_silent() {
        let mut book = PeerBook::new(1_000, 2);
        let a = NodeKey::from_secret([4; 32]);
        let b = NodeKey::from_secret([5; 32]);
        let c = NodeKey::from_secret([6; 32]);
        rec(&mut book, &a, 1, 0).unwrap();
        rec(&mut book, &b, 1, 5_000).unwrap();
        let rows = book.list(5_500);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].peer, rows[0].state),
            (b.peer_id(), PeerState::Online)
        );
        assert_eq!(
            (rows[1].peer, rows[1].state),
            (a.peer_id(), PeerState::Offline)
        );
        // Full: c pushes out a, the longest silent.
        rec(&mut book, &c, 1, 6_000).unwrap();
        assert_eq!(book.len(), 2);
        assert!(book.get(&a.peer_id()).is_none());
        assert!(book.get(&b.peer_id()).is_some());
        assert!(book.get(&c.peer_id()).is_some());
    }
}
