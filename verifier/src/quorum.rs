//! The k-of-n quorum for one job: executors are assigned, signed
//! attestations and failure reports come in, and after every event the
//! quorum says what the submitter should do next ([`Decision`]).
//!
//! **Rule:** a hash is accepted when it *leads* every other hash by at
//! least k attestations and no answer still outstanding could change that:
//! the lead is at least k plus the executors still running. With no
//! disagreement this is "k of n agree", as soon as the rest could not
//! outvote them; a disputed job escalates until one answer leads by k. So
//! colluders who happen to fill k of a job's n places do not win by
//! answering first: they must outnumber the honest answers by k, and every
//! honest executor drawn pushes that further away.
//!
//! **Invariant:** once a decision other than `Pending`/`NeedMore` is made
//! it never changes, and every later attestation is refused. Only the
//! leading hash can lead by k, so at most one hash is ever accepted, even
//! when escalation assigns more than n executors.

use std::collections::BTreeMap;

use agora_protocol::limits::{MAX_ATTESTATIONS, MAX_REPLICATION};
use agora_protocol::{
    Acceptance, Attestation, Checked, ContentId, JobSpec, PeerId, SignError, Signed, Verdict,
    VerdictOutcome,
};

/// Why a quorum could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumConfigError {
    /// n and k break `1 <= k <= n <= 32` or `2k > n`.
    #[error("replication {k}-of-{n} is invalid: need 1 <= k <= n <= {MAX_REPLICATION} and 2k > n")]
    Replication {
        /// Executors.
        n: u8,
        /// Agreement threshold.
        k: u8,
    },
    /// The escalation cap is below n or above what a verdict can carry.
    #[error("escalation cap {cap} must be between n = {n} and {MAX_ATTESTATIONS}")]
    Cap {
        /// The cap asked for.
        cap: u8,
        /// Executors first assigned.
        n: u8,
    },
}

/// How an assigned executor ended without an accepted attestation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Its deadline passed without an answer.
    Missed,
    /// It reported (or was seen) failing to run the job.
    Crashed,
}

/// Why an attestation or event was refused. A refusal never changes the
/// quorum's state.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// The attestation's signature does not verify (boxed: the protocol
    /// error is large and this one travels in every `Result`).
    #[error("attestation refused: {0}")]
    BadSignature(Box<SignError>),
    /// The attestation is for another job.
    #[error("attestation from {signer} is for job {found}, not this quorum's")]
    WrongJob {
        /// Who signed it.
        signer: PeerId,
        /// The job named in the attestation (this quorum's job is
        /// [`Quorum::job`]; not repeated here to keep the error small).
        found: ContentId,
    },
    /// The signer (or the peer named in an event) was never assigned.
    #[error("{0} is not an executor assigned to this job")]
    Unassigned(PeerId),
    /// The executor already had an attestation accepted.
    #[error("{0} already attested this job")]
    Duplicate(PeerId),
    /// The executor was already marked as missed or crashed.
    #[error("{executor} already ended without a result ({how:?})")]
    AlreadyEnded {
        /// The executor.
        executor: PeerId,
        /// How it ended.
        how: Ended,
    },
    /// The quorum has already decided; nothing more is counted.
    #[error("the job is already decided; {0} arrived too late")]
    Late(PeerId),
    /// The quorum has already decided (event without a peer).
    #[error("the job is already decided")]
    Decided,
    /// The peer is already assigned to this job.
    #[error("{0} is already assigned to this job")]
    AlreadyAssigned(PeerId),
    /// Assigning would exceed the escalation cap.
    #[error("escalation cap of {cap} executors reached")]
    CapReached {
        /// The cap.
        cap: u8,
    },
}

/// Why more executors are needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoreReason {
    /// Executors missed their deadline or crashed: replace them.
    Replace,
    /// The answers disagree and the leading hash cannot lead by k with
    /// the executors still running: escalate.
    Escalate,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Executors answered with different hashes and none can reach k.
    NoConsensus {
        /// Every hash answered, with how many executors attested it,
        /// most-attested first (ties by hash).
        hashes: Vec<(ContentId, u32)>,
    },
    /// Too few executors answered (misses, crashes, or the job deadline).
    Timeout,
}

/// What the submitter should do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Wait for more answers.
    Pending,
    /// Assign `how_many` more executors. This is recomputed from the state
    /// after every event, not added up: after the node assigns them (each
    /// through [`Quorum::assign`]) it drops to zero.
    NeedMore {
        /// Further assignments needed now (never beyond the cap).
        how_many: u8,
        /// Replacement or escalation.
        why: MoreReason,
    },
    /// `hash` leads every other answer by k, whatever the executors still
    /// running would answer.
    Verified {
        /// The accepted result hash.
        hash: ContentId,
        /// Executors that attested `hash`, in arrival order.
        agreeing: Vec<PeerId>,
        /// Executors that attested another hash, with that hash.
        disagreeing: Vec<(PeerId, ContentId)>,
    },
    /// No result can be accepted.
    Failed(Failure),
    /// The submitter cancelled the job.
    Cancelled,
}

impl Decision {
    /// Whether the decision is final (verified, failed or cancelled).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Decision::Verified { .. } | Decision::Failed(_) | Decision::Cancelled
        )
    }
}

/// Where one assigned executor stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Assigned; no answer yet.
    Running,
    /// Its attestation of this hash was accepted.
    Answered(ContentId),
    /// Ended without an answer.
    Ended(Ended),
}

/// The quorum state machine for one job. See the module docs.
///
/// It holds no I/O state, so after a restart the node rebuilds it by
/// replaying the stored assignments, attestations and misses in order.
#[derive(Debug, Clone)]
pub struct Quorum {
    /// The job every attestation must name.
    job: ContentId,
    /// Executors first assigned.
    n: u8,
    /// Equal hashes needed.
    k: u8,
    /// Most executors ever assigned, counting replacements and escalation.
    cap: u8,
    /// Every executor assigned, in assignment order.
    order: Vec<PeerId>,
    /// Where each assigned executor stands.
    slots: BTreeMap<PeerId, Slot>,
    /// Accepted attestations in arrival order, kept for the verdict.
    accepted: Vec<(PeerId, ContentId, Signed<Attestation>)>,
    /// The final decision, once made.
    decided: Option<Decision>,
}

impl Quorum {
    /// A quorum for `job` needing `k` of `n` equal hashes, assigning at most
    /// `cap` executors in total.
    pub fn new(job: ContentId, n: u8, k: u8, cap: u8) -> Result<Self, QuorumConfigError> {
        if k < 1 || k > n || n > MAX_REPLICATION || 2 * u16::from(k) <= u16::from(n) {
            return Err(QuorumConfigError::Replication { n, k });
        }
        if cap < n || usize::from(cap) > MAX_ATTESTATIONS {
            return Err(QuorumConfigError::Cap { cap, n });
        }
        Ok(Self {
            job,
            n,
            k,
            cap,
            order: Vec::new(),
            slots: BTreeMap::new(),
            accepted: Vec::new(),
            decided: None,
        })
    }

    /// The job this quorum decides.
    pub fn job(&self) -> ContentId {
        self.job
    }

    /// Executors first assigned.
    pub fn n(&self) -> u8 {
        self.n
    }

    /// Equal hashes needed.
    pub fn k(&self) -> u8 {
        self.k
    }

    /// Most executors ever assigned.
    pub fn cap(&self) -> u8 {
        self.cap
    }

    /// Every executor assigned so far, in assignment order.
    pub fn assigned(&self) -> &[PeerId] {
        &self.order
    }

    /// Executors assigned and not yet answered or ended.
    pub fn running(&self) -> Vec<PeerId> {
        self.order
            .iter()
            .filter(|p| self.slots.get(*p) == Some(&Slot::Running))
            .copied()
            .collect()
    }

    /// The accepted attestations, in arrival order.
    pub fn attestations(&self) -> impl Iterator<Item = &Signed<Attestation>> {
        self.accepted.iter().map(|(_, _, s)| s)
    }

    /// Records that `executor` was assigned the job (first dispatch,
    /// replacement or escalation) and returns the new decision.
    pub fn assign(&mut self, executor: PeerId) -> Result<Decision, QuorumError> {
        if self.decided.is_some() {
            return Err(QuorumError::Decided);
        }
        if self.slots.contains_key(&executor) {
            return Err(QuorumError::AlreadyAssigned(executor));
        }
        if self.order.len() >= usize::from(self.cap) {
            return Err(QuorumError::CapReached { cap: self.cap });
        }
        self.order.push(executor);
        self.slots.insert(executor, Slot::Running);
        Ok(self.decide())
    }

    /// Feeds a signed attestation whose signature was not checked yet (a
    /// replayed record, a caller outside the network path): the signature
    /// is checked here, then as [`Quorum::attest_checked`].
    pub fn attest(&mut self, signed: &Signed<Attestation>) -> Result<Decision, QuorumError> {
        let checked = signed
            .clone()
            .check()
            .map_err(|e| QuorumError::BadSignature(Box::new(e)))?;
        self.attest_checked(&checked)
    }

    /// Feeds an attestation whose signature was checked where it arrived.
    /// The job and the signer's assignment are checked here; a refused
    /// attestation changes nothing.
    pub fn attest_checked(
        &mut self,
        checked: &Checked<Attestation>,
    ) -> Result<Decision, QuorumError> {
        let (signer, value) = (checked.signer(), checked.value());
        if value.job != self.job {
            return Err(QuorumError::WrongJob {
                signer,
                found: value.job,
            });
        }
        let slot = *self
            .slots
            .get(&signer)
            .ok_or(QuorumError::Unassigned(signer))?;
        match slot {
            Slot::Answered(_) => return Err(QuorumError::Duplicate(signer)),
            Slot::Ended(how) if self.decided.is_none() => {
                return Err(QuorumError::AlreadyEnded {
                    executor: signer,
                    how,
                })
            }
            Slot::Running | Slot::Ended(_) => {}
        }
        if self.decided.is_some() {
            return Err(QuorumError::Late(signer));
        }
        let hash = value.result_hash;
        self.slots.insert(signer, Slot::Answered(hash));
        self.accepted.push((signer, hash, checked.signed().clone()));
        Ok(self.decide())
    }

    /// Takes back an executor that was ended as crashed because it could
    /// not be reached: it came back and still owes an answer, so it counts
    /// as running again. Refused for any other slot and once decided.
    pub fn reinstate(&mut self, executor: PeerId) -> Result<Decision, QuorumError> {
        if self.decided.is_some() {
            return Err(QuorumError::Decided);
        }
        match self.slots.get(&executor) {
            Some(Slot::Ended(Ended::Crashed)) => {
                self.slots.insert(executor, Slot::Running);
                Ok(self.decide())
            }
            Some(Slot::Ended(how)) => Err(QuorumError::AlreadyEnded {
                executor,
                how: *how,
            }),
            Some(Slot::Answered(_)) => Err(QuorumError::Duplicate(executor)),
            Some(Slot::Running) => Ok(self.decide()),
            None => Err(QuorumError::Unassigned(executor)),
        }
    }

    /// Reports that `executor`'s deadline passed without an answer.
    pub fn missed(&mut self, executor: PeerId) -> Result<Decision, QuorumError> {
        self.end(executor, Ended::Missed)
    }

    /// Reports that `executor` crashed or failed to run the job.
    pub fn crashed(&mut self, executor: PeerId) -> Result<Decision, QuorumError> {
        self.end(executor, Ended::Crashed)
    }

    fn end(&mut self, executor: PeerId, how: Ended) -> Result<Decision, QuorumError> {
        let slot = *self
            .slots
            .get(&executor)
            .ok_or(QuorumError::Unassigned(executor))?;
        if self.decided.is_some() {
            return Err(QuorumError::Late(executor));
        }
        match slot {
            Slot::Answered(_) => Err(QuorumError::Duplicate(executor)),
            Slot::Ended(how) => Err(QuorumError::AlreadyEnded { executor, how }),
            Slot::Running => {
                self.slots.insert(executor, Slot::Ended(how));
                Ok(self.decide())
            }
        }
    }

    /// Reports that the job's overall deadline passed: executors still
    /// running are counted as missed, and unless the answers in hand
    /// already lead by k the job fails with [`Failure::Timeout`].
    pub fn job_deadline_passed(&mut self) -> Result<Decision, QuorumError> {
        if self.decided.is_some() {
            return Err(QuorumError::Decided);
        }
        for slot in self.slots.values_mut() {
            if *slot == Slot::Running {
                *slot = Slot::Ended(Ended::Missed);
            }
        }
        let d = match self.evaluate() {
            d @ Decision::Verified { .. } => d,
            _ => Decision::Failed(Failure::Timeout),
        };
        self.decided = Some(d.clone());
        Ok(d)
    }

    /// Cancels the job. Refused once decided.
    pub fn cancel(&mut self) -> Result<Decision, QuorumError> {
        if self.decided.is_some() {
            return Err(QuorumError::Decided);
        }
        self.decided = Some(Decision::Cancelled);
        Ok(Decision::Cancelled)
    }

    /// The current decision, without feeding an event.
    pub fn decision(&self) -> Decision {
        match &self.decided {
            Some(d) => d.clone(),
            None => self.evaluate(),
        }
    }

    /// Evaluates and, if the result is final, freezes it.
    fn decide(&mut self) -> Decision {
        let d = self.evaluate();
        if d.is_final() {
            self.decided = Some(d.clone());
        }
        d
    }

    /// Accepted attestations per hash, most first, ties broken by hash so
    /// output is stable.
    pub fn tally(&self) -> Vec<(ContentId, u32)> {
        tally(self.accepted.iter().map(|(_, h, _)| *h))
    }

    /// The decision the current state calls for; pure.
    fn evaluate(&self) -> Decision {
        let tally = self.tally();
        let k = u32::from(self.k);
        let lead = lead(&tally);
        let running = self.count(|s| *s == Slot::Running);
        if let Some(&(hash, _)) = tally.first() {
            // Even if every running executor backed the runner-up, the
            // leader would still lead by k.
            if lead >= k + running {
                return self.verified(hash);
            }
        }
        let answered = self.accepted.len() as u32;
        let room = u32::from(self.cap).saturating_sub(self.order.len() as u32);
        if lead + running + room < k {
            // Even if every running and every still-assignable executor
            // backed the leading hash, it could not lead by k.
            return Decision::Failed(if tally.len() >= 2 {
                Failure::NoConsensus { hashes: tally }
            } else {
                Failure::Timeout
            });
        }
        // Escalate by the fewest executors that could still give the
        // leading hash a lead of k; replace misses and crashes so n stay in
        // play (answered or running), which keeps latency down when the
        // remaining executors then disagree. Ask for whichever is larger.
        let escalate = k.saturating_sub(lead + running);
        let replace = u32::from(self.n).saturating_sub(running + answered);
        let (want, why) = if escalate > replace {
            (escalate, MoreReason::Escalate)
        } else {
            (replace, MoreReason::Replace)
        };
        let how_many = want.min(room);
        if how_many == 0 {
            return Decision::Pending;
        }
        Decision::NeedMore {
            how_many: u8::try_from(how_many).unwrap_or(u8::MAX),
            why,
        }
    }

    fn count(&self, f: impl Fn(&Slot) -> bool) -> u32 {
        self.slots.values().filter(|s| f(s)).count() as u32
    }

    fn verified(&self, hash: ContentId) -> Decision {
        let mut agreeing = Vec::new();
        let mut disagreeing = Vec::new();
        for (peer, h, _) in &self.accepted {
            if *h == hash {
                agreeing.push(*peer);
            } else {
                disagreeing.push((*peer, *h));
            }
        }
        Decision::Verified {
            hash,
            agreeing,
            disagreeing,
        }
    }

    /// The verdict for a decided job, unsigned (the node signs it): the
    /// job's signed `spec`, every accepted attestation, and as `missed`
    /// the signed acceptance (from `acceptances`) of every executor that
    /// missed its deadline or crashed, in assignment order. An executor
    /// with no acceptance never took the job on and is charged nothing.
    /// `None` while undecided or when cancelled (a cancelled job has no
    /// verdict).
    pub fn verdict(
        &self,
        spec: &Signed<JobSpec>,
        acceptances: &BTreeMap<PeerId, Signed<Acceptance>>,
        decided_at_ms: u64,
    ) -> Option<Verdict> {
        let (outcome, accepted) = match self.decided.as_ref()? {
            Decision::Verified { hash, .. } => (VerdictOutcome::Verified, Some(*hash)),
            Decision::Failed(Failure::NoConsensus { .. }) => (VerdictOutcome::NoConsensus, None),
            Decision::Failed(Failure::Timeout) => (VerdictOutcome::Timeout, None),
            Decision::Cancelled | Decision::Pending | Decision::NeedMore { .. } => return None,
        };
        let missed = self
            .order
            .iter()
            .filter(|p| matches!(self.slots.get(*p), Some(Slot::Ended(_))))
            .filter_map(|p| acceptances.get(p).cloned())
            .collect();
        Some(Verdict {
            job: self.job,
            spec: spec.clone(),
            k: self.k,
            n: self.n,
            outcome,
            accepted,
            attestations: self.accepted.iter().map(|(_, _, s)| s.clone()).collect(),
            missed,
            decided_at_ms,
        })
    }
}

/// Votes per hash, most first, ties broken by hash so output is stable.
pub fn tally(hashes: impl IntoIterator<Item = ContentId>) -> Vec<(ContentId, u32)> {
    let mut counts: BTreeMap<ContentId, u32> = BTreeMap::new();
    for h in hashes {
        *counts.entry(h).or_default() += 1;
    }
    let mut v: Vec<(ContentId, u32)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// By how many votes the first hash of a [`tally`] leads the second (its
/// own count when it is alone; 0 for no votes or a tie).
pub fn lead(tally: &[(ContentId, u32)]) -> u32 {
    let first = tally.first().map_or(0, |&(_, c)| c);
    let second = tally.get(1).map_or(0, |&(_, c)| c);
    first - second
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Errors carry a protocol SignError, which has no PartialEq, so
    /// results are compared by their full Debug form.
    fn dbg<T: std::fmt::Debug>(x: T) -> String {
        format!("{x:?}")
    }
    use agora_protocol::NodeKey;

    fn key(i: u8) -> NodeKey {
        NodeKey::from_secret([i; 32])
    }

    fn job() -> ContentId {
        ContentId::of(b"job")
    }

    fn h(x: &str) -> ContentId {
        ContentId::of(x.as_bytes())
    }

    fn att(k: &NodeKey, job: ContentId, hash: ContentId) -> Signed<Attestation> {
        k.sign(&Attestation {
            job,
            result_hash: hash,
            exit_code: 0,
            finished_at_ms: 1,
        })
    }

    /// The verdict with a spec signed by key 99 and an acceptance from
    /// every key in `keys`.
    fn verdict_of(q: &Quorum, keys: &[NodeKey], at: u64) -> Option<Verdict> {
        let submitter = key(99);
        let spec = submitter.sign(&JobSpec::wasm(h("module")));
        let acceptances = keys
            .iter()
            .map(|k| {
                let a = Acceptance {
                    job: job(),
                    submitter: submitter.peer_id(),
                    attempt: 0,
                    deadline_ms: 1,
                };
                (k.peer_id(), k.sign(&a))
            })
            .collect();
        q.verdict(&spec, &acceptances, at)
    }

    /// Who a verdict charges with a miss.
    fn missed(v: &Verdict) -> Vec<PeerId> {
        v.missed
            .iter()
            .map(|a| a.verify().unwrap().signer)
            .collect()
    }

    fn quorum(n: u8, k: u8, cap: u8, keys: &[NodeKey]) -> Quorum {
        let mut q = Quorum::new(job(), n, k, cap).unwrap();
        for key in keys {
            q.assign(key.peer_id()).unwrap();
        }
        q
    }

    #[test]
    fn config_is_checked() {
        assert!(Quorum::new(job(), 3, 2, 3).is_ok());
        assert_eq!(
            Quorum::new(job(), 4, 2, 4).unwrap_err(),
            QuorumConfigError::Replication { n: 4, k: 2 }
        );
        assert!(Quorum::new(job(), 3, 0, 3).is_err());
        assert!(Quorum::new(job(), 3, 4, 3).is_err());
        assert!(Quorum::new(job(), 33, 17, 40).is_err());
        assert_eq!(
            Quorum::new(job(), 3, 2, 2).unwrap_err(),
            QuorumConfigError::Cap { cap: 2, n: 3 }
        );
        assert!(Quorum::new(job(), 3, 2, 65).is_err());
        assert!(Quorum::new(job(), 3, 2, 64).is_ok());
    }

    #[test]
    fn starts_by_asking_for_n() {
        let mut q = Quorum::new(job(), 3, 2, 5).unwrap();
        assert_eq!(
            q.decision(),
            Decision::NeedMore {
                how_many: 3,
                why: MoreReason::Replace
            }
        );
        q.assign(key(1).peer_id()).unwrap();
        assert_eq!(
            q.assign(key(2).peer_id()).unwrap(),
            Decision::NeedMore {
                how_many: 1,
                why: MoreReason::Replace
            }
        );
        assert_eq!(q.assign(key(3).peer_id()).unwrap(), Decision::Pending);
    }

    #[test]
    fn a_disputed_job_escalates_until_one_answer_leads_by_k() {
        let keys: Vec<NodeKey> = (1..=4).map(key).collect();
        let mut q = quorum(3, 2, 6, &keys[..3]);
        assert_eq!(
            q.attest(&att(&keys[0], job(), h("good"))).unwrap(),
            Decision::Pending
        );
        // After a dissent the third can at best make the lead 1: one more
        // executor is drawn at once, before the third answers.
        assert_eq!(
            q.attest(&att(&keys[1], job(), h("bad"))).unwrap(),
            Decision::NeedMore {
                how_many: 1,
                why: MoreReason::Escalate
            }
        );
        assert_eq!(q.assign(keys[3].peer_id()).unwrap(), Decision::Pending);
        assert_eq!(
            q.attest(&att(&keys[2], job(), h("good"))).unwrap(),
            Decision::Pending
        );
        let d = q.attest(&att(&keys[3], job(), h("good"))).unwrap();
        assert_eq!(
            d,
            Decision::Verified {
                hash: h("good"),
                agreeing: vec![keys[0].peer_id(), keys[2].peer_id(), keys[3].peer_id()],
                disagreeing: vec![(keys[1].peer_id(), h("bad"))],
            }
        );
        let v = verdict_of(&q, &keys, 77).unwrap();
        assert_eq!(v.outcome, VerdictOutcome::Verified);
        assert_eq!(v.accepted, Some(h("good")));
        assert_eq!(v.attestations.len(), 4);
        assert!(v.missed.is_empty());
        assert_eq!(v.decided_at_ms, 77);
    }

    #[test]
    fn an_unreachable_executor_that_comes_back_is_counted_again() {
        let keys: Vec<NodeKey> = (1..=3).map(key).collect();
        let mut q = quorum(3, 3, 6, &keys);
        q.attest(&att(&keys[0], job(), h("r"))).unwrap();
        q.attest(&att(&keys[1], job(), h("r"))).unwrap();
        assert!(matches!(
            q.crashed(keys[2].peer_id()).unwrap(),
            Decision::NeedMore { how_many: 1, .. }
        ));
        assert_eq!(q.reinstate(keys[2].peer_id()).unwrap(), Decision::Pending);
        let checked = att(&keys[2], job(), h("r")).check().unwrap();
        assert!(matches!(
            q.attest_checked(&checked).unwrap(),
            Decision::Verified { .. }
        ));
        // Only a crashed slot comes back; a decided quorum takes nothing.
        assert!(q.reinstate(keys[0].peer_id()).is_err());
        let mut q = quorum(3, 2, 6, &keys);
        q.missed(keys[0].peer_id()).unwrap();
        assert!(matches!(
            q.reinstate(keys[0].peer_id()),
            Err(QuorumError::AlreadyEnded { .. })
        ));
    }

    #[test]
    fn colluders_who_answer_first_do_not_win() {
        // Two colluders fill two of three places and answer first: the
        // honest third is still running and could dispute, so nothing is
        // decided; after it does, honest executors are added until the
        // truth leads by k.
        let keys: Vec<NodeKey> = (1..=6).map(key).collect();
        let mut q = quorum(3, 2, 6, &keys[..3]);
        q.attest(&att(&keys[0], job(), h("lie"))).unwrap();
        assert_eq!(
            q.attest(&att(&keys[1], job(), h("lie"))).unwrap(),
            Decision::Pending
        );
        assert_eq!(
            q.attest(&att(&keys[2], job(), h("truth"))).unwrap(),
            Decision::NeedMore {
                how_many: 1,
                why: MoreReason::Escalate
            }
        );
        q.assign(keys[3].peer_id()).unwrap();
        assert_eq!(
            q.attest(&att(&keys[3], job(), h("truth"))).unwrap(),
            Decision::NeedMore {
                how_many: 2,
                why: MoreReason::Escalate
            }
        );
        q.assign(keys[4].peer_id()).unwrap();
        q.assign(keys[5].peer_id()).unwrap();
        assert_eq!(
            q.attest(&att(&keys[4], job(), h("truth"))).unwrap(),
            Decision::Pending
        );
        let d = q.attest(&att(&keys[5], job(), h("truth"))).unwrap();
        assert!(matches!(d, Decision::Verified { hash, .. } if hash == h("truth")));
        // With one place fewer the lie could not be outvoted: the job fails
        // rather than accept either answer.
        let mut q = quorum(3, 2, 5, &keys[..3]);
        for (i, x) in ["lie", "lie", "truth"].iter().enumerate() {
            q.attest(&att(&keys[i], job(), h(x))).unwrap();
        }
        q.assign(keys[3].peer_id()).unwrap();
        assert_eq!(
            q.attest(&att(&keys[3], job(), h("truth"))).unwrap(),
            Decision::Failed(Failure::NoConsensus {
                hashes: vec![(h("truth"), 2), (h("lie"), 2)]
            })
        );
    }

    #[test]
    fn refusals_are_typed_and_change_nothing() {
        let keys: Vec<NodeKey> = (1..=3).map(key).collect();
        let mut q = quorum(3, 2, 3, &keys);
        q.attest(&att(&keys[0], job(), h("a"))).unwrap();
        let before = q.decision();

        assert_eq!(
            dbg(q.attest(&att(&keys[0], job(), h("a")))),
            dbg(Err::<Decision, _>(QuorumError::Duplicate(
                keys[0].peer_id()
            )))
        );
        // A second, different answer from the same executor is also refused:
        // it must not become a vote for another hash.
        assert_eq!(
            dbg(q.attest(&att(&keys[0], job(), h("b")))),
            dbg(Err::<Decision, _>(QuorumError::Duplicate(
                keys[0].peer_id()
            )))
        );
        let outsider = key(9);
        assert_eq!(
            dbg(q.attest(&att(&outsider, job(), h("a")))),
            dbg(Err::<Decision, _>(QuorumError::Unassigned(
                outsider.peer_id()
            )))
        );
        let other_job = ContentId::of(b"other");
        assert_eq!(
            dbg(q.attest(&att(&keys[1], other_job, h("a")))),
            dbg(Err::<Decision, _>(QuorumError::WrongJob {
                signer: keys[1].peer_id(),
                found: other_job
            }))
        );
        // Same bytes under another domain: the signature does not verify.
        let bid = keys[1].sign(&agora_protocol::Bid {
            job: job(),
            running_jobs: 0,
            max_jobs: 1,
            queue_len: 0,
            load_permille: 0,
        });
        assert!(matches!(
            q.attest(&bid.retag()),
            Err(QuorumError::BadSignature(_))
        ));
        assert_eq!(q.decision(), before);
        assert_eq!(q.attestations().count(), 1);
    }

    #[test]
    fn decided_stays_decided() {
        // 3-of-5: four agree, so the fifth could not undo it.
        let keys: Vec<NodeKey> = (1..=5).map(key).collect();
        let mut q = quorum(5, 3, 5, &keys);
        for (i, k) in keys.iter().enumerate().take(3) {
            let d = q.attest(&att(k, job(), h("a"))).unwrap();
            assert_eq!(d, Decision::Pending, "after {i}");
        }
        let d = q.attest(&att(&keys[3], job(), h("a"))).unwrap();
        assert!(d.is_final());
        assert_eq!(
            dbg(q.attest(&att(&keys[4], job(), h("b")))),
            dbg(Err::<Decision, _>(QuorumError::Late(keys[4].peer_id())))
        );
        assert_eq!(
            dbg(q.missed(keys[4].peer_id())),
            dbg(Err::<Decision, _>(QuorumError::Late(keys[4].peer_id())))
        );
        assert_eq!(
            dbg(q.cancel()),
            dbg(Err::<Decision, _>(QuorumError::Decided))
        );
        assert_eq!(
            dbg(q.job_deadline_passed()),
            dbg(Err::<Decision, _>(QuorumError::Decided))
        );
        assert_eq!(
            dbg(q.assign(key(6).peer_id())),
            dbg(Err::<Decision, _>(QuorumError::Decided))
        );
        assert_eq!(q.decision(), d);
    }

    #[test]
    fn k_agreeing_wait_for_an_executor_that_could_dispute() {
        let keys: Vec<NodeKey> = (1..=3).map(key).collect();
        let mut q = quorum(3, 2, 6, &keys);
        q.attest(&att(&keys[0], job(), h("a"))).unwrap();
        assert_eq!(
            q.attest(&att(&keys[1], job(), h("a"))).unwrap(),
            Decision::Pending
        );
        // The third ends without an answer: nobody disputes.
        let d = q.missed(keys[2].peer_id()).unwrap();
        assert!(matches!(d, Decision::Verified { hash, .. } if hash == h("a")));
        assert_eq!(
            missed(&verdict_of(&q, &keys, 1).unwrap()),
            vec![keys[2].peer_id()]
        );
    }

    #[test]
    fn misses_are_replaced_then_time_out_at_the_cap() {
        let keys: Vec<NodeKey> = (1..=5).map(key).collect();
        let mut q = quorum(3, 2, 4, &keys[..3]);
        q.attest(&att(&keys[0], job(), h("a"))).unwrap();
        assert_eq!(
            q.missed(keys[1].peer_id()).unwrap(),
            Decision::NeedMore {
                how_many: 1,
                why: MoreReason::Replace
            }
        );
        assert_eq!(
            dbg(q.missed(keys[1].peer_id())),
            dbg(Err::<Decision, _>(QuorumError::AlreadyEnded {
                executor: keys[1].peer_id(),
                how: Ended::Missed
            }))
        );
        // A missed executor's late answer is not counted.
        assert_eq!(
            dbg(q.attest(&att(&keys[1], job(), h("a")))),
            dbg(Err::<Decision, _>(QuorumError::AlreadyEnded {
                executor: keys[1].peer_id(),
                how: Ended::Missed
            }))
        );
        assert_eq!(q.assign(keys[3].peer_id()).unwrap(), Decision::Pending);
        assert_eq!(
            dbg(q.assign(keys[4].peer_id())),
            dbg(Err::<Decision, _>(QuorumError::CapReached { cap: 4 }))
        );
        // One running executor can still bring "a" to k.
        assert_eq!(q.crashed(keys[2].peer_id()).unwrap(), Decision::Pending);
        assert_eq!(
            q.missed(keys[3].peer_id()).unwrap(),
            Decision::Failed(Failure::Timeout)
        );
        let v = verdict_of(&q, &keys, 5).unwrap();
        assert_eq!(v.outcome, VerdictOutcome::Timeout);
        assert_eq!(
            missed(&v),
            vec![keys[1].peer_id(), keys[2].peer_id(), keys[3].peer_id()]
        );
        // Without an acceptance an executor never took the job on.
        assert_eq!(
            missed(&verdict_of(&q, &keys[2..3], 5).unwrap()),
            vec![keys[2].peer_id()]
        );
        assert_eq!(v.attestations.len(), 1);
    }

    #[test]
    fn disagreement_escalates_then_fails_with_counts() {
        let keys: Vec<NodeKey> = (1..=6).map(key).collect();
        let mut q = quorum(3, 2, 5, &keys[..3]);
        q.attest(&att(&keys[0], job(), h("a"))).unwrap();
        q.attest(&att(&keys[1], job(), h("b"))).unwrap();
        assert_eq!(
            q.attest(&att(&keys[2], job(), h("c"))).unwrap(),
            Decision::NeedMore {
                how_many: 2,
                why: MoreReason::Escalate
            }
        );
        q.assign(keys[3].peer_id()).unwrap();
        assert_eq!(q.assign(keys[4].peer_id()).unwrap(), Decision::Pending);
        // "d" leaves no hash ahead, and one running executor cannot give
        // any a lead of 2.
        let d = q.attest(&att(&keys[3], job(), h("d"))).unwrap();
        let Decision::Failed(Failure::NoConsensus { hashes }) = d else {
            panic!("expected NoConsensus, got {d:?}");
        };
        assert_eq!(hashes.len(), 4);
        assert!(hashes.iter().all(|&(_, c)| c == 1));
        assert_eq!(
            verdict_of(&q, &keys, 1).unwrap().outcome,
            VerdictOutcome::NoConsensus
        );
        assert_eq!(
            dbg(q.attest(&att(&keys[4], job(), h("a")))),
            dbg(Err::<Decision, _>(QuorumError::Late(keys[4].peer_id())))
        );
    }

    #[test]
    fn escalation_can_verify() {
        let keys: Vec<NodeKey> = (1..=5).map(key).collect();
        let mut q = quorum(3, 2, 6, &keys[..3]);
        q.attest(&att(&keys[0], job(), h("a"))).unwrap();
        q.attest(&att(&keys[1], job(), h("b"))).unwrap();
        assert_eq!(
            q.crashed(keys[2].peer_id()).unwrap(),
            Decision::NeedMore {
                how_many: 2,
                why: MoreReason::Escalate
            }
        );
        q.assign(keys[3].peer_id()).unwrap();
        q.assign(keys[4].peer_id()).unwrap();
        q.attest(&att(&keys[3], job(), h("b"))).unwrap();
        let d = q.attest(&att(&keys[4], job(), h("b"))).unwrap();
        assert!(matches!(d, Decision::Verified { hash, .. } if hash == h("b")));
        assert_eq!(
            missed(&verdict_of(&q, &keys, 1).unwrap()),
            vec![keys[2].peer_id()]
        );
    }

    #[test]
    fn fails_as_soon_as_a_lead_of_k_is_out_of_reach() {
        // 3-of-5 with cap 5: after "a a b b" no hash leads and one
        // executor is left, so a lead of 3 is out of reach before it
        // answers.
        let keys: Vec<NodeKey> = (1..=5).map(key).collect();
        let mut q = quorum(5, 3, 5, &keys);
        for (i, x) in ["a", "a", "b"].iter().enumerate() {
            let d = q.attest(&att(&keys[i], job(), h(x))).unwrap();
            assert_eq!(d, Decision::Pending, "after {i}");
        }
        let d = q.attest(&att(&keys[3], job(), h("b"))).unwrap();
        assert_eq!(
            d,
            Decision::Failed(Failure::NoConsensus {
                // Ties are ordered by hash.
                hashes: vec![(h("b"), 2), (h("a"), 2)]
            })
        );
        assert_eq!(
            dbg(q.attest(&att(&keys[4], job(), h("b")))),
            dbg(Err::<Decision, _>(QuorumError::Late(keys[4].peer_id())))
        );
    }

    #[test]
    fn cancel_and_job_deadline() {
        let keys: Vec<NodeKey> = (1..=3).map(key).collect();
        let mut q = quorum(3, 2, 3, &keys);
        assert_eq!(q.cancel().unwrap(), Decision::Cancelled);
        assert_eq!(verdict_of(&q, &keys, 1), None);
        assert_eq!(
            dbg(q.attest(&att(&keys[0], job(), h("a")))),
            dbg(Err::<Decision, _>(QuorumError::Late(keys[0].peer_id())))
        );

        let mut q = quorum(3, 2, 3, &keys);
        q.attest(&att(&keys[0], job(), h("a"))).unwrap();
        assert_eq!(
            q.job_deadline_passed().unwrap(),
            Decision::Failed(Failure::Timeout)
        );
        let v = verdict_of(&q, &keys, 9).unwrap();
        assert_eq!(missed(&v), vec![keys[1].peer_id(), keys[2].peer_id()]);
        assert!(q.running().is_empty());

        // 3-of-5: three agree while two still run; at the deadline those
        // two are missed and the three lead by k.
        let keys: Vec<NodeKey> = (1..=5).map(key).collect();
        let mut q = quorum(5, 3, 5, &keys);
        for k in &keys[..3] {
            assert_eq!(q.attest(&att(k, job(), h("a"))).unwrap(), Decision::Pending);
        }
        let d = q.job_deadline_passed().unwrap();
        assert!(matches!(d, Decision::Verified { hash, .. } if hash == h("a")));
        assert_eq!(
            missed(&verdict_of(&q, &keys, 9).unwrap()),
            vec![keys[3].peer_id(), keys[4].peer_id()]
        );
    }

    #[test]
    fn undecided_has_no_verdict() {
        let keys: Vec<NodeKey> = (1..=3).map(key).collect();
        let q = quorum(3, 2, 3, &keys);
        assert_eq!(verdict_of(&q, &keys, 1), None);
        assert_eq!(q.running().len(), 3);
    }

    #[test]
    fn one_of_one() {
        let k1 = key(1);
        let mut q = quorum(1, 1, 1, std::slice::from_ref(&k1));
        let d = q.attest(&att(&k1, job(), h("x"))).unwrap();
        assert!(matches!(d, Decision::Verified { .. }));
    }
}
