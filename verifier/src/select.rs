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
//! **Determinism.** The draw is weighted random without replacement from a
//! ChaCha stream seeded by `seed`, over the candidates sorted by PeerId, so
//! the same candidates, book and seed give the same executors whatever
//! order the bids arrived in.

use std::collections::BTreeSet;

use agora_protocol::{Bid, PeerId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::reputation::ReputationBook;

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
}

impl Candidate {
    /// The candidate described by a verified bid from `peer`.
    pub fn from_bid(peer: PeerId, bid: &Bid) -> Self {
        Self {
            peer,
            load_permille: bid.load_permille,
            running: bid.running_jobs,
            max_jobs: bid.max_jobs,
        }
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

/// Picks up to `n` distinct executors from `candidates`. Never picks the
/// `submitter`, a peer in `exclude` (e.g. executors already used for this
/// job), a peer the book excludes, or a peer without a free slot; returns
/// fewer than `n` when not enough candidates qualify.
pub fn select_executors(
    candidates: &[Candidate],
    book: &ReputationBook,
    n: usize,
    submitter: &PeerId,
    exclude: &BTreeSet<PeerId>,
    seed: u64,
) -> Vec<PeerId> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    // Sort on every field so duplicates of one peer collapse to the same
    // survivor regardless of input order.
    sorted.sort_by_key(|c| (c.peer, c.load_permille, c.running, c.max_jobs));
    sorted.dedup_by_key(|c| c.peer);
    let mut pool: Vec<(PeerId, u64)> = sorted
        .into_iter()
        .filter(|c| {
            c.peer != *submitter
                && !exclude.contains(&c.peer)
                && !book.is_excluded(&c.peer)
                && c.has_room()
        })
        .map(|c| {
            let score = u64::from(book.score(&c.peer));
            (c.peer, (score + 1) * (1100 - c.busy_permille()))
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut chosen = Vec::with_capacity(n.min(pool.len()));
    while chosen.len() < n && !pool.is_empty() {
        let total: u64 = pool.iter().map(|(_, w)| *w).sum();
        let mut r = rng.gen_range(0..total);
        let mut pick = pool.len() - 1;
        for (i, (_, w)) in pool.iter().enumerate() {
            if r < *w {
                pick = i;
                break;
            }
            r -= *w;
        }
        chosen.push(pool.remove(pick).0);
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

    #[test]
    fn empty_and_zero() {
        let book = ReputationBook::default();
        let none = BTreeSet::new();
        assert!(select_executors(&[], &book, 3, &peer(1), &none, 0).is_empty());
        assert!(select_executors(&[cand(2, 0)], &book, 0, &peer(1), &none, 0).is_empty());
    }
}
