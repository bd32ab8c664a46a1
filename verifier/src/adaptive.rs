//! Adaptive replication (opt-in, the idea BOINC uses): a job whose chosen
//! executor has a long clean history runs on that executor alone (1-of-1);
//! otherwise, and on a random spot check, it runs at the full k-of-n.
//!
//! **How it is used.** The submitter picks its first executor as usual and
//! asks [`AdaptivePolicy::plan`]. A [`PlanKind::Solo`] plan is a 1-of-1
//! [`Quorum`](crate::Quorum); a [`PlanKind::Full`] or
//! [`PlanKind::SpotCheck`] plan keeps the first executor and adds `n - 1`
//! more. A peer is *trusted* when this node's own verdicts saw it agree
//! [`AdaptivePolicy::min_clean_streak`] times in a row
//! ([`PeerRecord::clean_streak`](crate::PeerRecord::clean_streak)) — times
//! one plus its disagreements on record, unless the backoff is switched off
//! — and the book does not exclude it. A spot check in which the trusted
//! executor disagrees is an ordinary verdict: the book takes the normal
//! disagreement penalty and resets the streak to 0, so the peer is
//! untrusted until it earns a full, now longer, streak again.
//!
//! Three rules keep spot checks meaningful; the node must follow them:
//! - The spot-check draw's `seed` must be secret and fresh per job (not
//!   derived from the job id), and a spot-checked executor must be sent
//!   exactly what a solo executor is sent: an executor that can tell a
//!   spot check from a solo run lies only when alone.
//! - In a spot check, hold the other executors' attestations until the
//!   checked executor's attestation (or miss) is in, and feed it to the
//!   quorum first: otherwise the quorum may decide without it, refuse it as
//!   late, and the check proves nothing.
//! - A solo verdict is backed by one signature, the executor's own, so it
//!   is no evidence about that executor: do not apply it to the book or
//!   gossip it ([`ReplicationPlan::counts_as_evidence`]). Otherwise a
//!   trusted liar would be rewarded for every lie that went unchecked.
//!
//! **The trade-off.** With spot-check probability `p` and full replication
//! k-of-n, a job on a trusted executor costs `1 + p * (n - 1)` executions
//! on average instead of at least `n` (1.10 at p = 5% and 2-of-3; fixed
//! 2-of-3 costs at least 3). What it gives up is the guarantee that no
//! single executor can decide a result: a trusted executor that returns a
//! wrong result is caught only with probability `p` on that job. Peers
//! that are simply broken or always lie never build a streak and never run
//! alone, so against them adaptive replication loses nothing. A strategic
//! liar that answers honestly until trusted and then lies on every job
//! gets up to `(1 - p) / p` wrong results accepted in expectation (19 at
//! p = 5%, 4 at p = 20%) before a spot check, or an ordinary full job it
//! is drawn into, catches it; then it must invest `min_clean_streak * (1 +
//! disagreements)` honest jobs to be trusted again. Raising the streak or
//! the backoff lowers how often it can do this, raising `p` lowers the
//! damage per round, and all of them raise the cost per job. The
//! simulation ([`crate::sim`]; `cargo run --release -p agora-verifier
//! --example simulate`) measures both sides; docs/benchmarks.md has the
//! numbers.

use agora_protocol::PeerId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::reputation::ReputationBook;

/// Why a policy could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdaptiveConfigError {
    /// A streak of 0 would trust every peer it has never seen.
    #[error("the clean streak needed to run alone must be at least 1")]
    ZeroStreak,
    /// A probability above 1000 thousandths.
    #[error("spot-check probability {0} is above 1000 thousandths")]
    SpotCheck(u32),
}

/// When a job may run on one executor. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptivePolicy {
    /// Agreements in a row needed to run jobs alone.
    min_clean_streak: u64,
    /// Chance that a trusted executor's job is spot-checked at full
    /// replication anyway, in thousandths.
    spot_check_permille: u32,
    /// Whether every disagreement on record adds another
    /// `min_clean_streak` to the streak a peer needs.
    backoff: bool,
}

impl Default for AdaptivePolicy {
    /// Trusted after 10 clean jobs in a row (times one plus the peer's
    /// disagreements); spot checks on 5% of jobs.
    fn default() -> Self {
        Self {
            min_clean_streak: 10,
            spot_check_permille: 50,
            backoff: true,
        }
    }
}

/// How a job's replication was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    /// The first executor is trusted: it runs the job alone, 1-of-1.
    Solo,
    /// The first executor is not trusted: full k-of-n.
    Full,
    /// The first executor is trusted, but the job is spot-checked at full
    /// k-of-n.
    SpotCheck,
}

/// The replication one job will run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationPlan {
    /// Executors to assign first (the first executor included).
    pub n: u8,
    /// Equal hashes needed.
    pub k: u8,
    /// Why.
    pub kind: PlanKind,
}

impl ReplicationPlan {
    /// Whether the job runs on one executor alone.
    pub fn is_solo(&self) -> bool {
        self.kind == PlanKind::Solo
    }

    /// Whether the job's verdict is evidence about its executors, to be
    /// applied to the book and gossiped: false for a solo job, whose only
    /// support is the executor's own word.
    pub fn counts_as_evidence(&self) -> bool {
        !self.is_solo()
    }
}

impl AdaptivePolicy {
    /// A policy trusting peers after `min_clean_streak` agreements in a
    /// row and spot-checking `spot_check_permille` thousandths of their
    /// jobs.
    pub fn new(
        min_clean_streak: u64,
        spot_check_permille: u32,
    ) -> Result<Self, AdaptiveConfigError> {
        if min_clean_streak == 0 {
            return Err(AdaptiveConfigError::ZeroStreak);
        }
        if spot_check_permille > 1000 {
            return Err(AdaptiveConfigError::SpotCheck(spot_check_permille));
        }
        Ok(Self {
            min_clean_streak,
            spot_check_permille,
            backoff: true,
        })
    }

    /// The same policy with the repeat-offender backoff switched on or
    /// off: when on (the default), a peer with `d` disagreements on record
    /// needs a streak of `min_clean_streak * (1 + d)`.
    pub fn with_backoff(self, backoff: bool) -> Self {
        Self { backoff, ..self }
    }

    /// Whether the repeat-offender backoff is on.
    pub fn backoff(&self) -> bool {
        self.backoff
    }

    /// The clean streak `peer` needs to run alone.
    pub fn required_streak(&self, book: &ReputationBook, peer: &PeerId) -> u64 {
        let disagreed = if self.backoff {
            book.get(peer).map_or(0, |r| r.disagreed)
        } else {
            0
        };
        self.min_clean_streak
            .saturating_mul(disagreed.saturating_add(1))
    }

    /// Agreements in a row needed to run jobs alone by a peer that never
    /// disagreed.
    pub fn min_clean_streak(&self) -> u64 {
        self.min_clean_streak
    }

    /// Spot-check probability, in thousandths.
    pub fn spot_check_permille(&self) -> u32 {
        self.spot_check_permille
    }

    /// Whether `peer` may run jobs alone: a long enough clean streak in
    /// this node's book ([`AdaptivePolicy::required_streak`]), and not
    /// excluded.
    pub fn is_trusted(&self, book: &ReputationBook, peer: &PeerId) -> bool {
        book.clean_streak(peer) >= self.required_streak(book, peer) && !book.is_excluded(peer)
    }

    /// The replication for a job whose first chosen executor is `first`,
    /// given the full replication `n`, `k` the job asks for. `seed` drives
    /// the spot-check draw and must be unpredictable to executors.
    pub fn plan(
        &self,
        book: &ReputationBook,
        first: &PeerId,
        n: u8,
        k: u8,
        seed: u64,
    ) -> ReplicationPlan {
        let full = |kind| ReplicationPlan { n, k, kind };
        if !self.is_trusted(book, first) {
            return full(PlanKind::Full);
        }
        let draw = ChaCha8Rng::seed_from_u64(seed).gen_range(0..1000u32);
        if draw < self.spot_check_permille {
            return full(PlanKind::SpotCheck);
        }
        ReplicationPlan {
            n: 1,
            k: 1,
            kind: PlanKind::Solo,
        }
    }

    /// Expected executions per job run by a trusted executor at full
    /// replication `n`, in thousandths: `1000 + p * (n - 1)`.
    pub fn trusted_cost_permille(&self, n: u8) -> u32 {
        1000 + self.spot_check_permille * u32::from(n.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::{Decision, Quorum};
    use crate::reputation::Observation;
    use agora_protocol::{Attestation, ContentId, NodeKey, VerdictOutcome, Verified};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn key(i: u8) -> NodeKey {
        NodeKey::from_secret([i; 32])
    }

    fn trusted_book(peer: PeerId, streak: u64) -> ReputationBook {
        let mut book = ReputationBook::default();
        for t in 0..streak {
            book.observe(peer, Observation::Agreed, t);
        }
        book
    }

    #[test]
    fn config_is_checked() {
        assert_eq!(
            AdaptivePolicy::new(0, 50),
            Err(AdaptiveConfigError::ZeroStreak)
        );
        assert_eq!(
            AdaptivePolicy::new(10, 1001),
            Err(AdaptiveConfigError::SpotCheck(1001))
        );
        let p = AdaptivePolicy::new(3, 1000).unwrap();
        assert_eq!((p.min_clean_streak(), p.spot_check_permille()), (3, 1000));
        assert_eq!(AdaptivePolicy::default().trusted_cost_permille(3), 1100);
    }

    #[test]
    fn trust_needs_the_full_streak() {
        let p = key(1).peer_id();
        let policy = AdaptivePolicy::new(10, 0).unwrap();
        let book = trusted_book(p, 9);
        assert!(!policy.is_trusted(&book, &p));
        assert_eq!(policy.plan(&book, &p, 3, 2, 1).kind, PlanKind::Full);
        let book = trusted_book(p, 10);
        assert!(policy.is_trusted(&book, &p));
        let plan = policy.plan(&book, &p, 3, 2, 1);
        assert_eq!(
            plan,
            ReplicationPlan {
                n: 1,
                k: 1,
                kind: PlanKind::Solo
            }
        );
        assert!(!plan.counts_as_evidence());
    }

    #[test]
    fn a_failed_spot_check_makes_the_executor_untrusted() {
        let ks: Vec<NodeKey> = (1..=4).map(key).collect();
        let liar = ks[0].peer_id();
        let policy = AdaptivePolicy::new(10, 1000).unwrap();
        let mut book = trusted_book(liar, 12);
        let score = book.score(&liar);
        let plan = policy.plan(&book, &liar, 3, 2, 7);
        assert_eq!(plan.kind, PlanKind::SpotCheck);
        assert!(plan.counts_as_evidence());
        let me = key(9);
        let spec = me.sign(&agora_protocol::JobSpec::wasm(ContentId::of(b"module")));
        let job = spec.id();
        let mut q = Quorum::new(job, plan.n, plan.k, 2 * plan.n).unwrap();
        for k in &ks[..3] {
            q.assign(k.peer_id()).unwrap();
        }
        // The checked executor's answer goes in first; its lie puts the
        // truth one short of a lead of k, so one more executor is drawn.
        for (i, (k, answer)) in ks
            .iter()
            .zip(["lie", "truth", "truth", "truth"])
            .enumerate()
        {
            if i == 3 {
                q.assign(k.peer_id()).unwrap();
            }
            q.attest(&k.sign(&Attestation {
                job,
                result_hash: ContentId::of(answer.as_bytes()),
                exit_code: 0,
                finished_at_ms: 1,
            }))
            .unwrap();
        }
        assert!(matches!(q.decision(), Decision::Verified { .. }));
        let verdict = q.verdict(&spec, &BTreeMap::new(), 2).unwrap();
        assert_eq!(verdict.outcome, VerdictOutcome::Verified);
        book.apply_verdict(
            &Verified {
                signer: me.peer_id(),
                value: verdict,
            },
            true,
            2,
        )
        .unwrap();
        assert_eq!(book.clean_streak(&liar), 0);
        assert_eq!(book.score(&liar), score - 10);
        assert!(!policy.is_trusted(&book, &liar));
        assert_eq!(policy.plan(&book, &liar, 3, 2, 7).kind, PlanKind::Full);
    }

    #[test]
    fn excluded_peers_are_never_trusted() {
        let p = key(1).peer_id();
        let policy = AdaptivePolicy::default();
        let cfg = crate::reputation::ReputationConfig {
            exclusion_threshold: 1000,
            ..Default::default()
        };
        let mut book = ReputationBook::new(cfg);
        for t in 0..20 {
            book.observe(p, Observation::Agreed, t);
        }
        assert_eq!(book.clean_streak(&p), 20);
        assert!(book.is_excluded(&p));
        assert!(!policy.is_trusted(&book, &p));
    }

    #[test]
    fn spot_checks_come_at_the_configured_rate() {
        let p = key(1).peer_id();
        let book = trusted_book(p, 10);
        let count = |permille| {
            let policy = AdaptivePolicy::new(10, permille).unwrap();
            (0..10_000u64)
                .filter(|&seed| policy.plan(&book, &p, 3, 2, seed).kind == PlanKind::SpotCheck)
                .count()
        };
        assert_eq!(count(0), 0);
        assert_eq!(count(1000), 10_000);
        let c = count(50);
        // 500 expected; the seeds are fixed, so this is not flaky.
        assert!((400..600).contains(&c), "{c}");
    }

    proptest! {
        /// Every plan is a valid quorum; only a trusted executor runs
        /// alone; a plan's evidence flag matches its kind.
        #[test]
        fn plans_are_valid(
            n in 1u8..=9,
            k_off in 0u8..5,
            streak in 0u64..30,
            min in 1u64..30,
            permille in 0u32..=1000,
            seed in any::<u64>(),
        ) {
            let k = (n / 2 + 1 + k_off).min(n);
            let p = key(1).peer_id();
            let book = trusted_book(p, streak);
            let policy = AdaptivePolicy::new(min, permille).unwrap();
            let plan = policy.plan(&book, &p, n, k, seed);
            prop_assert!(Quorum::new(ContentId::of(b"j"), plan.n, plan.k, plan.n).is_ok());
            match plan.kind {
                PlanKind::Solo => {
                    prop_assert!(streak >= min);
                    prop_assert_eq!((plan.n, plan.k), (1, 1));
                }
                PlanKind::SpotCheck => {
                    prop_assert!(streak >= min);
                    prop_assert_eq!((plan.n, plan.k), (n, k));
                }
                PlanKind::Full => {
                    prop_assert!(streak < min);
                    prop_assert_eq!((plan.n, plan.k), (n, k));
                }
            }
            prop_assert_eq!(plan.counts_as_evidence(), plan.kind != PlanKind::Solo);
            prop_assert_eq!(plan, policy.plan(&book, &p, n, k, seed));
        }
    }
}
