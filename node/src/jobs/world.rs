//! The node as a job's core sees it ([`World`]): who is online with what
//! capacity (the peer book), selection by this node's reputation book,
//! the adaptive plan with a secret seed, and whether this node can run a
//! job itself.

use std::collections::BTreeSet;

use agora_protocol::{JobSpec, PeerId};
use agora_verifier::reputation::{ReputationBook, ReputationConfig};
use agora_verifier::select::{select_executors, Candidate};

use super::checks::Capacity;
use super::core::{PlanChoice, World};
use super::Ctx;
use crate::clock::unix_now_ms;
use crate::lock;
use crate::network::adverts::lock_book;

/// The node as the job core sees it: its peer book and reputation.
pub(crate) struct NodeWorld<'a>(pub(crate) &'a Ctx);

impl World for NodeWorld<'_> {
    fn online(&self) -> (Vec<(PeerId, Capacity)>, usize) {
        let ctx = self.0;
        let now = unix_now_ms();
        let book = lock_book(&ctx.book);
        let known = book.list(now).iter().filter(|v| v.peer != ctx.me).count();
        let online = book
            .online(now)
            .into_iter()
            .filter(|p| *p != ctx.me)
            .filter_map(|p| book.get(&p).map(|r| (p, Capacity::from(&r.advert))))
            .collect();
        (online, known)
    }

    fn select(
        &self,
        candidates: &[Candidate],
        want: usize,
        used: &BTreeSet<PeerId>,
        seed: u64,
    ) -> Vec<PeerId> {
        let ctx = self.0;
        if ctx.cfg.uniform_selection {
            // Benchmarks compare against selection blind to reputation.
            let blank = ReputationBook::new(ReputationConfig::default());
            select_executors(candidates, &blank, want, &ctx.me, used, seed)
        } else {
            let book = lock(&ctx.reputation);
            select_executors(candidates, &book, want, &ctx.me, used, seed)
        }
    }

    fn plan(&self, first: &PeerId, n: u8, k: u8) -> PlanChoice {
        let policy = &self.0.cfg.adaptive;
        let book = lock(&self.0.reputation);
        // A fresh secret seed: the executor must not be able to tell a
        // spot check from a solo run.
        let plan = policy.plan(&book, first, n, k, rand::random());
        PlanChoice {
            kind: plan.kind,
            streak: book.clean_streak(first),
            needed: policy.required_streak(&book, first),
        }
    }

    fn runs_here(&self, spec: &JobSpec) -> bool {
        self.0.worker.can_run(spec).is_none()
    }
}
