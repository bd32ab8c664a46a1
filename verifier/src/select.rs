//! Executor selection: pick n distinct executors among the bidders,
//! favouring good reputation and spare capacity, yet leaving every
//! eligible peer some chance so work (and the evidence about peers)
//! spreads over the network.
//!
//! **Weights.** A peer's weight is `(score + 1) * (1100 - busy)`, where
//! `busy` is the larger of its reported load and its share of job slots in
//! use, in thousandths capped at 1000. Reputation counts linearly; a fully
//! busy peer keeps 100/1100 of an idle one's weight.
//!
//! **Spreading ([`SelectConfig`]).** Two preferences shape the draw, each
//! dropped only when it would leave the job short of executors:
//! - *Newcomers* (peers with fewer than `newcomer_below_agreed` agreements
//!   with this node's own results, and not pinned) fill at most `max_newcomers` places of a job, so a flood
//!   of fresh identities cannot crowd out peers with a history, while
//!   every newcomer still gets some work to earn trust with. With `k >=
//!   2` and one newcomer place, identities that never agreed with anyone
//!   cannot reach k together while established peers are available.
//! - *Subnets*: a candidate whose [`Candidate::subnet`] is already used by
//!   the job is passed over while candidates on unused subnets remain, so
//!   one operator's machines rarely decide a job alone. A candidate with
//!   no known subnet counts as its own.
//!
//! A peer on probation (excluded on others' word only, see
//! [`crate::reputation::Standing`]) is drawn as a newcomer weighted at the
//! exclusion threshold, so this node's own jobs re-test it; an established
//! peer that gossip pushed below the threshold is drawn at the threshold's
//! weight, keeping the standing this node's own jobs gave it. Counting only
//! own agreements means gossip can neither promote a Sybil past the
//! newcomer bound nor demote an honest peer into it.
//!
//! When both cannot hold, the subnet preference yields first. Peers in
//! `exclude` are taken to be the job's executors so far: their subnets and
//! newcomers count against the job, so escalation does not add what the
//! first draw refused.
//!
//! **Determinism.** The draw is weighted random without replacement from a
//! ChaCha stream seeded by `seed`, over the candidates sorted by PeerId, so
//! the same candidates, book and seed give the same executors whatever
//! order the bids arrived in.

use std::collections::BTreeSet;
use std::net::IpAddr;

use agora_protocol::{Bid, PeerId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::reputation::{ReputationBook, Standing};

/// A node that bid for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The bidder.
    pub peer: PeerId,
    /// Its load, in thousandths of capacity (may exceed 1000).
    pub load_permille: u32,
    /// Jobs it is running.
    pub running: u32,
    /// Jobs it runs at once at most.
    pub max_jobs: u32,
    /// The network it is reached on (e.g. [`subnet_of`] its address),
    /// when known; candidates sharing a key are spread over jobs.
    pub subnet: Option<u64>,
}

impl Candidate {
    /// The candidate described by a verified bid from `peer` (subnet
    /// unknown; see [`Candidate::with_subnet`]).
    pub fn from_bid(peer: PeerId, bid: &Bid) -> Self {
        Self {
            peer,
            load_permille: bid.load_permille,
            running: bid.running_jobs,
            max_jobs: bid.max_jobs,
            subnet: None,
        }
    }

    /// The same candidate with its subnet key set.
    pub fn with_subnet(self, subnet: Option<u64>) -> Self {
        Self { subnet, ..self }
    }

    /// Busy-ness in thousandths: the larger of reported load and slot use.
    fn busy_permille(&self) -> u64 {
        let slots = u64::from(self.running) * 1000 / u64::from(self.max_jobs.max(1));
        u64::from(self.load_permille).max(slots).min(1000)
    }

    /// Whether it has a free job slot.
    fn has_room(&self) -> bool {
        self.running < self.max_jobs
    }
}

/// The subnet key of an address: its /24 for IPv4, its /48 for IPv6 (the
/// usual smallest allocation to one site). The two families never share a
/// key.
pub fn subnet_of(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            (1 << 63) | u64::from(u32::from_be_bytes([0, a, b, c]))
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            u64::from_be_bytes([0, 0, o[0], o[1], o[2], o[3], o[4], o[5]])
        }
    }
}

/// How [`select_executors_with`] spreads work; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectConfig {
    /// A peer with fewer agreements with this node's own results than this
    /// is a newcomer (unless pinned).
    pub newcomer_below_agreed: u64,
    /// Most newcomers on one job while established candidates remain.
    pub max_newcomers: usize,
    /// Whether to prefer executors on subnets the job does not use yet.
    pub distinct_subnets: bool,
}

impl Default for SelectConfig {
    /// Newcomers below 5 agreements, at most 1 per job, distinct subnets
    /// preferred.
    fn default() -> Self {
        Self {
            newcomer_below_agreed: 5,
            max_newcomers: 1,
            distinct_subnets: true,
        }
    }
}

/// One eligible candidate in the draw.
struct Entry {
    /// The peer.
    peer: PeerId,
    /// Its weight.
    weight: u64,
    /// Whether it is a newcomer.
    newcomer: bool,
    /// Its subnet, if known.
    subnet: Option<u64>,
}

/// Picks up to `n` distinct executors from `candidates` with the default
/// [`SelectConfig`]; see [`select_executors_with`].
pub fn select_executors(
    candidates: &[Candidate],
    book: &ReputationBook,
    n: usize,
    submitter: &PeerId,
    exclude: &BTreeSet<PeerId>,
    seed: u64,
) -> Vec<PeerId> {
    select_executors_with(
        candidates,
        book,
        n,
        submitter,
        exclude,
        seed,
        &SelectConfig::default(),
    )
}

/// Picks up to `n` distinct executors from `candidates`. Never picks the
/// `submitter`, a peer in `exclude` (the executors already used for this
/// job), a peer the book excludes on its own evidence (one on probation
/// is drawn as a newcomer), or a peer without a free slot; returns
/// fewer than `n` only when not enough candidates qualify. Newcomers and
/// shared subnets are limited as `config` says.
pub fn select_executors_with(
    candidates: &[Candidate],
    book: &ReputationBook,
    n: usize,
    submitter: &PeerId,
    exclude: &BTreeSet<PeerId>,
    seed: u64,
    config: &SelectConfig,
) -> Vec<PeerId> {
    // A peer on probation is re-tested like a newcomer.
    let is_newcomer = |p: &PeerId| {
        let own = book.get(p).map_or(0, |r| r.local_agreed);
        (own < config.newcomer_below_agreed && !book.is_pinned(p)) || book.on_probation(p)
    };
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    // Sort on every field so duplicates of one peer collapse to the same
    // survivor regardless of input order.
    sorted.sort_unstable_by(|a, b| {
        (&a.peer, a.load_permille, a.running, a.max_jobs, a.subnet).cmp(&(
            &b.peer,
            b.load_permille,
            b.running,
            b.max_jobs,
            b.subnet,
        ))
    });
    sorted.dedup_by(|a, b| a.peer == b.peer);
    let mut newcomers = exclude.iter().filter(|p| is_newcomer(p)).count();
    let mut used_subnets: BTreeSet<u64> = sorted
        .iter()
        .filter(|c| exclude.contains(&c.peer))
        .filter_map(|c| c.subnet)
        .collect();
    let threshold = book.config().exclusion_threshold;
    let mut pool: Vec<Entry> = Vec::with_capacity(sorted.len());
    for c in sorted {
        if c.peer == *submitter || !c.has_room() || exclude.contains(&c.peer) {
            continue;
        }
        let mut score = book.score(&c.peer);
        let mut newcomer = is_newcomer(&c.peer);
        if score < threshold {
            match book.standing(&c.peer) {
                Standing::Excluded => continue,
                // Its own record here outweighs others' word.
                Standing::Established => {}
                // Re-tested by this node's own jobs.
                Standing::Probation | Standing::Newcomer => newcomer = true,
            }
            score = threshold;
        }
        pool.push(Entry {
            peer: c.peer,
            weight: (u64::from(score) + 1) * (1100 - c.busy_permille()),
            newcomer,
            subnet: c.subnet,
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut chosen = Vec::with_capacity(n.min(pool.len()));
    while chosen.len() < n && !pool.is_empty() {
        let newcomer_ok = |e: &Entry| !e.newcomer || newcomers < config.max_newcomers;
        let subnet_ok = |e: &Entry| {
            !config.distinct_subnets || e.subnet.is_none_or(|s| !used_subnets.contains(&s))
        };
        // Strictest tier that still has someone in it.
        let tiers: [&dyn Fn(&Entry) -> bool; 4] = [
            &|e| newcomer_ok(e) && subnet_ok(e),
            &|e| newcomer_ok(e),
            &|e| subnet_ok(e),
            &|_| true,
        ];
        let Some(allowed) = tiers.iter().find(|t| pool.iter().any(t)) else {
            break;
        };
        let total: u64 = pool.iter().filter(|e| allowed(e)).map(|e| e.weight).sum();
        let mut r = rng.gen_range(0..total);
        let mut pick = None;
        for (i, e) in pool.iter().enumerate().filter(|(_, e)| allowed(e)) {
            pick = Some(i);
            if r < e.weight {
                break;
            }
            r -= e.weight;
        }
        let Some(pick) = pick else {
            break;
        };
        let e = pool.remove(pick);
        newcomers += usize::from(e.newcomer);
        if let Some(s) = e.subnet {
            used_subnets.insert(s);
        }
        chosen.push(e.peer);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reputation::Observation;
    use agora_protocol::NodeKey;

    fn peer(i: u8) -> PeerId {
        NodeKey::from_secret([i; 32]).peer_id()
    }

    fn cand(i: u8, load: u32) -> Candidate {
        Candidate {
            peer: peer(i),
            load_permille: load,
            running: 0,
            max_jobs: 4,
            subnet: None,
        }
    }

    #[test]
    fn skips_submitter_excluded_full_and_banned() {
        let mut book = ReputationBook::default();
        for t in 0..3 {
            book.observe(peer(4), Observation::Missed, t);
        }
        let mut full = cand(5, 0);
        full.running = 4;
        let cands = [
            cand(1, 0),
            cand(2, 0),
            cand(3, 0),
            cand(4, 0),
            full,
            cand(6, 0),
        ];
        let exclude: BTreeSet<PeerId> = [peer(3)].into();
        for seed in 0..50 {
            let got = select_executors(&cands, &book, 10, &peer(1), &exclude, seed);
            let set: BTreeSet<PeerId> = got.iter().copied().collect();
            assert_eq!(set, [peer(2), peer(6)].into(), "seed {seed}");
            assert_eq!(got.len(), 2);
        }
    }

    #[test]
    fn a_peer_on_probation_is_retested_as_a_newcomer() {
        use crate::reputation::{PeerRecord, Standing};
        let mut book = ReputationBook::default();
        for i in 1..=4 {
            for t in 0..5 {
                book.observe(peer(i), Observation::Agreed, t);
            }
        }
        // Excluded on others' word (score 0, no own evidence) and a fresh
        // newcomer: at most one of them per job.
        book.restore(
            peer(7),
            PeerRecord {
                score: 0,
                agreed: 0,
                disagreed: 3,
                missed: 0,
                first_seen_ms: 0,
                last_seen_ms: 0,
                clean_streak: 0,
                local_agreed: 0,
                own_score: None,
            },
        );
        assert_eq!(book.standing(&peer(7)), Standing::Probation);
        // Excluded on this node's own evidence: never.
        for t in 0..3 {
            book.observe(peer(8), Observation::Missed, t);
        }
        let cands: Vec<Candidate> = [1, 2, 3, 4, 7, 8, 9].map(|i| cand(i, 0)).to_vec();
        let mut probation_picked = 0;
        for seed in 0..300 {
            let got = select_executors(&cands, &book, 3, &peer(99), &BTreeSet::new(), seed);
            assert_eq!(got.len(), 3);
            assert!(!got.contains(&peer(8)), "seed {seed}");
            assert!(
                !(got.contains(&peer(7)) && got.contains(&peer(9))),
                "two newcomers on one job, seed {seed}"
            );
            probation_picked += usize::from(got.contains(&peer(7)));
        }
        assert!(probation_picked > 0, "the peer on probation is re-tested");
    }

    #[test]
    fn duplicates_in_input_are_picked_once() {
        let book = ReputationBook::default();
        let cands = [cand(1, 0), cand(1, 500), cand(2, 0), cand(1, 0)];
        let got = select_executors(&cands, &book, 3, &peer(9), &BTreeSet::new(), 1);
        assert_eq!(got.len(), 2);
        assert_ne!(got[0], got[1]);
    }

    #[test]
    fn same_seed_same_choice_any_order() {
        let book = ReputationBook::default();
        let cands: Vec<Candidate> = (1..=12).map(|i| cand(i, u32::from(i) * 70)).collect();
        let mut rev = cands.clone();
        rev.reverse();
        let none = BTreeSet::new();
        let a = select_executors(&cands, &book, 5, &peer(99), &none, 42);
        let b = select_executors(&rev, &book, 5, &peer(99), &none, 42);
        assert_eq!(a, b);
        let distinct: BTreeSet<Vec<PeerId>> = (0..20)
            .map(|s| select_executors(&cands, &book, 5, &peer(99), &none, s))
            .collect();
        assert!(distinct.len() > 1, "the seed must matter");
    }

    #[test]
    fn prefers_reputation_and_idleness() {
        let mut book = ReputationBook::default();
        for t in 0..100 {
            book.observe(peer(1), Observation::Agreed, t);
        }
        book.observe(peer(2), Observation::Missed, 0);
        // peer 1: score 600, idle. peer 2: score 80, busy. peer 3: 100, idle.
        let cands = [cand(1, 0), cand(2, 1000), cand(3, 0)];
        let none = BTreeSet::new();
        let mut firsts = [0u32; 3];
        for seed in 0..300 {
            let got = select_executors(&cands, &book, 1, &peer(99), &none, seed);
            let i = [peer(1), peer(2), peer(3)]
                .iter()
                .position(|p| *p == got[0])
                .unwrap();
            firsts[i] += 1;
        }
        assert!(firsts[0] > firsts[2], "{firsts:?}");
        assert!(firsts[2] > firsts[1], "{firsts:?}");
    }

    /// A book where peers `established` have 10 agreements each.
    fn book_with(established: &[u8]) -> ReputationBook {
        let mut book = ReputationBook::default();
        for &i in established {
            for t in 0..10 {
                book.observe(peer(i), Observation::Agreed, t);
            }
        }
        book
    }

    #[test]
    fn newcomers_get_a_bounded_share_while_established_peers_remain() {
        // Peers 1..=4 established, 10..=29 newcomers: even though newcomers
        // are the large majority, at most one of them is on each job.
        let book = book_with(&[1, 2, 3, 4]);
        let cands: Vec<Candidate> = [1u8, 2, 3, 4]
            .into_iter()
            .chain(10..30)
            .map(|i| cand(i, 0))
            .collect();
        let none = BTreeSet::new();
        let mut newcomer_picked = 0;
        for seed in 0..200 {
            let got = select_executors(&cands, &book, 3, &peer(99), &none, seed);
            assert_eq!(got.len(), 3);
            let fresh = got.iter().filter(|p| book.get(p).is_none()).count();
            assert!(fresh <= 1, "seed {seed}: {fresh} newcomers");
            newcomer_picked += fresh;
        }
        assert!(newcomer_picked > 0, "newcomers must get some work");
        // Escalation: a newcomer already on the job counts against the bound.
        let on_job: BTreeSet<PeerId> = [peer(1), peer(10)].into();
        for seed in 0..100 {
            let got = select_executors(&cands, &book, 2, &peer(99), &on_job, seed);
            assert!(got.iter().all(|p| book.get(p).is_some()), "seed {seed}");
        }
    }

    #[test]
    fn newcomers_fill_in_when_established_peers_run_out() {
        let book = book_with(&[1]);
        let cands: Vec<Candidate> = [1u8, 10, 11, 12].into_iter().map(|i| cand(i, 0)).collect();
        let got = select_executors(&cands, &book, 3, &peer(99), &BTreeSet::new(), 5);
        assert_eq!(got.len(), 3);
        assert!(got.contains(&peer(1)));
        // Without a bound, newcomers compete on weight alone.
        let cfg = SelectConfig {
            max_newcomers: usize::MAX,
            ..SelectConfig::default()
        };
        let got = select_executors_with(&cands, &book, 4, &peer(99), &BTreeSet::new(), 5, &cfg);
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn distinct_subnets_are_preferred_then_shared_when_needed() {
        let book = ReputationBook::default();
        // Six peers on subnet 1, two on subnet 2, one on subnet 3.
        let subnets = [1u64, 1, 1, 1, 1, 1, 2, 2, 3];
        let cands: Vec<Candidate> = subnets
            .iter()
            .enumerate()
            .map(|(i, s)| cand(i as u8 + 1, 0).with_subnet(Some(*s)))
            .collect();
        let subnet_of_peer =
            |p: &PeerId| cands.iter().find(|c| c.peer == *p).and_then(|c| c.subnet);
        let none = BTreeSet::new();
        for seed in 0..100 {
            let got = select_executors(&cands, &book, 3, &peer(99), &none, seed);
            let nets: BTreeSet<u64> = got.iter().filter_map(subnet_of_peer).collect();
            assert_eq!(nets.len(), 3, "seed {seed}: {got:?}");
            // Five executors but three subnets: all three used, then shared.
            let got = select_executors(&cands, &book, 5, &peer(99), &none, seed);
            assert_eq!(got.len(), 5);
            let nets: BTreeSet<u64> = got.iter().filter_map(subnet_of_peer).collect();
            assert_eq!(nets.len(), 3, "seed {seed}");
        }
        // Subnets of executors already on the job count too.
        let on_job: BTreeSet<PeerId> = [peer(7), peer(9)].into();
        for seed in 0..50 {
            let got = select_executors(&cands, &book, 1, &peer(99), &on_job, seed);
            assert_eq!(subnet_of_peer(&got[0]), Some(1), "seed {seed}");
        }
        // Switched off, the same seed can put two peers of subnet 1 together.
        let off = SelectConfig {
            distinct_subnets: false,
            ..SelectConfig::default()
        };
        let shared = (0..100).any(|seed| {
            let got = select_executors_with(&cands, &book, 3, &peer(99), &none, seed, &off);
            got.iter().filter(|p| subnet_of_peer(p) == Some(1)).count() >= 2
        });
        assert!(shared);
    }

    #[test]
    fn subnet_keys() {
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        let b: IpAddr = "10.1.2.200".parse().unwrap();
        let c: IpAddr = "10.1.3.3".parse().unwrap();
        assert_eq!(subnet_of(a), subnet_of(b));
        assert_ne!(subnet_of(a), subnet_of(c));
        let v6a: IpAddr = "2001:db8:1::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:ffff::2".parse().unwrap();
        let v6c: IpAddr = "2001:db8:2::1".parse().unwrap();
        assert_eq!(subnet_of(v6a), subnet_of(v6b));
        assert_ne!(subnet_of(v6a), subnet_of(v6c));
        let zero4: IpAddr = "0.0.0.0".parse().unwrap();
        let zero6: IpAddr = "::".parse().unwrap();
        assert_ne!(subnet_of(zero4), subnet_of(zero6));
    }

    proptest::proptest! {
        /// A newcomer beyond the bound is picked only once no eligible
        /// established peer is left; a subnet is reused only once no
        /// eligible peer on an unused subnet is left.
        #[test]
        fn spreading_rules_hold(
            peers in proptest::collection::vec((0u64..9, proptest::option::of(0u64..4)), 0..16),
            on_job in proptest::collection::btree_set(0usize..16, 0..4),
            n in 0usize..10,
            max_newcomers in 0usize..3,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let mut book = ReputationBook::default();
            let mut cands = Vec::new();
            for (i, (agreed, subnet)) in peers.iter().enumerate() {
                let p = peer(i as u8 + 1);
                for t in 0..*agreed {
                    book.observe(p, Observation::Agreed, t);
                }
                cands.push(cand(i as u8 + 1, 0).with_subnet(*subnet));
            }
            let exclude: BTreeSet<PeerId> = on_job
                .iter()
                .filter(|i| **i < cands.len())
                .map(|i| cands[*i].peer)
                .collect();
            let eligible: Vec<&Candidate> = cands.iter().filter(|c| !exclude.contains(&c.peer)).collect();
            let newcomer = |p: &PeerId| book.get(p).map_or(0, |r| r.agreed) < 5;

            let cfg = SelectConfig { max_newcomers, distinct_subnets: false, ..SelectConfig::default() };
            let got = select_executors_with(&cands, &book, n, &peer(99), &exclude, seed, &cfg);
            proptest::prop_assert_eq!(got.len(), n.min(eligible.len()));
            let before = exclude.iter().filter(|p| newcomer(p)).count();
            let picked = got.iter().filter(|p| newcomer(p)).count();
            if picked > 0 && before + picked > max_newcomers {
                for c in eligible.iter().filter(|c| !newcomer(&c.peer)) {
                    proptest::prop_assert!(got.contains(&c.peer), "established peer left out");
                }
            }

            let cfg = SelectConfig { max_newcomers: usize::MAX, ..SelectConfig::default() };
            let got = select_executors_with(&cands, &book, n, &peer(99), &exclude, seed, &cfg);
            proptest::prop_assert_eq!(got.len(), n.min(eligible.len()));
            let mut used = BTreeSet::new();
            let mut repeated = false;
            let subnet_of_peer = |p: &PeerId| cands.iter().find(|c| c.peer == *p).and_then(|c| c.subnet);
            for p in exclude.iter().chain(&got) {
                if let Some(s) = subnet_of_peer(p) {
                    repeated |= !used.insert(s) && got.contains(p);
                }
            }
            if repeated {
                for c in eligible.iter().filter(|c| !got.contains(&c.peer)) {
                    proptest::prop_assert!(
                        c.subnet.is_some_and(|s| used.contains(&s)),
                        "a subnet was reused while an unused one was available"
                    );
                }
            }
        }
    }

    #[test]
    fn empty_and_zero() {
        let book = ReputationBook::default();
        let none = BTreeSet::new();
        assert!(select_executors(&[], &book, 3, &peer(1), &none, 0).is_empty());
        assert!(select_executors(&[cand(2, 0)], &book, 0, &peer(1), &none, 0).is_empty());
    }
}
