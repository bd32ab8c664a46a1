//! Ending a job: the verified result, failures and cancels, releasing
//! the executors still running, the verdict.

use super::*;

impl JobCore {
    /// Acts on a final decision: a verified one first has its result
    /// fetched; the others end the job now.
    pub(super) fn finish(&mut self, decision: Decision) {
        match decision {
            Decision::Verified { hash, agreeing, .. } => {
                let sources = agreeing
                    .iter()
                    .filter_map(|p| {
                        let e = self
                            .rec
                            .executors
                            .iter()
                            .find(|e| e.peer == *p && e.result_hash == Some(hash))?;
                        Some((*p, e.report.as_ref()?.bundle.clone()))
                    })
                    .collect();
                self.fetching = Some((hash, agreeing.clone()));
                self.out.push(Action::FetchResult {
                    hash,
                    sources,
                    agreeing,
                });
            }
            Decision::Failed(f) => {
                let why = self.failure_reason(&f);
                self.end(JobState::Failed, why.to_string(), "failed");
                self.sign_verdict();
            }
            Decision::Cancelled => {
                self.end(
                    JobState::Cancelled,
                    "cancelled by the user".into(),
                    "cancelled",
                );
                self.persist();
            }
            Decision::Pending | Decision::NeedMore { .. } => {}
        }
    }

    pub(super) fn result_kept(
        &mut self,
        hash: ContentId,
        agreeing: Vec<PeerId>,
        r: Result<StoredResult, Vec<String>>,
    ) {
        match r {
            Ok(result) => {
                self.rec.result = Some(result);
                let took = self.now_ms.saturating_sub(self.rec.submitted_at_ms);
                self.out.push(Action::VerifiedAfter { ms: took });
                let who: Vec<String> = agreeing.iter().map(short_peer).collect();
                let detail = format!("result {} signed by {}", hash.short(), who.join(", "));
                self.end(JobState::Verified, detail, "verified");
            }
            Err(errors) => {
                let why = JobFailure::ResultUndelivered {
                    agreeing: agreeing.len(),
                    hash,
                    errors,
                };
                self.end(JobState::Failed, why.to_string(), "failed");
            }
        }
        self.sign_verdict();
    }

    /// Moves to a final state: executors still running are released
    /// (and told to stop), the final event waits for the record's write.
    pub(super) fn end(&mut self, state: JobState, detail: String, kind: &str) {
        if state != JobState::Verified {
            self.rec.reason = Some(detail.clone());
        }
        self.release_running();
        self.set_state(state);
        self.event(kind, None, detail);
        self.note_spot_check();
    }

    /// Asks the shell to sign the decided job's verdict (if it has one),
    /// then persists; applies and gossips it as evidence, except a solo
    /// verdict (it rests on the executor's own signature). Other nodes
    /// refuse a k = 1 verdict, so it is not gossiped.
    pub(super) fn sign_verdict(&mut self) {
        let Some(verdict) = self.verdict() else {
            self.persist();
            return;
        };
        let evidence = self.rec.plan != Some(AdaptivePlan::Solo);
        let gossip = evidence && verdict.k >= 2;
        self.out.push(Action::SignVerdict {
            verdict,
            apply: evidence,
        });
        self.persist();
        if gossip {
            self.out.push(Action::GossipVerdict);
        }
    }

    /// The decided job's verdict, with the spec and the acceptances of
    /// the executors that took the job on.
    pub(super) fn verdict(&self) -> Option<Verdict> {
        let acceptances: BTreeMap<PeerId, Signed<Acceptance>> = self
            .rec
            .executors
            .iter()
            .filter_map(|e| Some((e.peer, e.acceptance.clone()?)))
            .collect();
        self.quorum
            .verdict(&self.rec.spec, &acceptances, self.now_ms)
    }

    /// Says how the checked executor of a decided spot check did.
    pub(super) fn note_spot_check(&mut self) {
        if self.rec.plan != Some(AdaptivePlan::SpotCheck) {
            return;
        }
        let accepted = self.rec.result.as_ref().map(|r| r.result_hash);
        let Some(first) = self.rec.executors.first() else {
            return;
        };
        let (peer, answer) = (first.peer, first.result_hash);
        let detail = match (accepted, answer) {
            (Some(a), Some(h)) if a == h => "the checked executor agreed".to_string(),
            (Some(_), Some(_)) => {
                "the checked executor disagreed: it is not trusted to run alone any more".into()
            }
            (_, None) => "the checked executor did not answer".into(),
            (None, Some(_)) => "no result was verified".into(),
        };
        self.event("spot_check", Some(peer), detail);
    }

    /// Marks the job finished now; executors still running are released
    /// (their answers are no longer needed) and told to stop.
    pub(super) fn release_running(&mut self) {
        let now = self.now_ms;
        for e in &mut self.rec.executors {
            if e.state == ExecutorState::Running {
                if e.report.is_none() {
                    self.out.push(Action::Stop {
                        peer: e.peer,
                        attempt: e.attempt,
                    });
                }
                e.state = ExecutorState::Released;
                e.ended_at_ms = Some(now);
            }
        }
        self.rec.finished_at_ms = Some(now);
    }

    /// Ends the job as failed with `why`, outside the quorum's decision
    /// (nobody can run it, or it fails the same way everywhere): the
    /// verdict is kept, not applied or gossiped.
    pub(super) fn fail(&mut self, why: &JobFailure) {
        self.end(JobState::Failed, why.to_string(), "failed");
        if let Some(verdict) = self.verdict() {
            self.out.push(Action::SignVerdict {
                verdict,
                apply: false,
            });
        }
        self.persist();
    }

    pub(super) fn failure_reason(&self, f: &Failure) -> JobFailure {
        let k = self.quorum.k();
        match f {
            Failure::NoConsensus { hashes } => JobFailure::NoConsensus {
                k,
                cap: self.quorum.cap(),
                tally: tally_text(hashes),
            },
            Failure::Timeout => {
                if self.now_ms >= self.deadline_ms {
                    return JobFailure::DeadlinePassed { k };
                }
                let errors = self
                    .rec
                    .executors
                    .iter()
                    .filter_map(|e| {
                        let err = e.error.as_ref()?;
                        Some(format!("{}: {err}", short_peer(&e.peer)))
                    })
                    .collect();
                JobFailure::TooFewAnswered { k, errors }
            }
        }
    }
}
