//! What executors answer: acceptances, reports (held during a spot
//! check), failures, lost executors coming back, deadlines.

use super::*;

impl JobCore {
    /// Keeps an executor's acceptance if it is what was assigned: this
    /// job, from this node, that attempt and deadline, signed by it. It is
    /// written with the record's next change (it only matters for the
    /// verdict). The answer may already be in: reports travel separately.
    pub(super) fn on_accepted(
        &mut self,
        peer: PeerId,
        attempt: u32,
        acceptance: Signed<Acceptance>,
    ) {
        let (id, me) = (self.id(), self.cfg.me);
        let Some(e) = self
            .rec
            .executors
            .iter_mut()
            .find(|e| e.peer == peer && e.attempt == attempt)
        else {
            return;
        };
        // The acceptance came in a response, not through the network
        // task's checks: this is its only signature check.
        if let Ok(a) = acceptance.verify() {
            if a.signer == peer
                && a.value.job == id
                && a.value.submitter == me
                && a.value.attempt == attempt
                && a.value.deadline_ms == e.deadline_ms
            {
                e.acceptance = Some(acceptance);
            }
        }
    }

    /// A running executor lost its connection: the shell pings it, and
    /// reports [`Input::Lost`] if it does not answer. (Connections also
    /// close for harmless reasons.)
    pub(super) fn on_peer_gone(&mut self, peer: PeerId) {
        if let Some(e) = self
            .rec
            .executors
            .iter()
            .find(|e| e.peer == peer && e.state == ExecutorState::Running && !is_held(e))
        {
            self.out.push(Action::Ping {
                peer,
                attempt: e.attempt,
            });
        }
    }

    /// The slot of `peer` for `attempt`, if it is still running.
    pub(super) fn running_slot(
        &mut self,
        peer: &PeerId,
        attempt: u32,
    ) -> Option<&mut StoredExecutor> {
        self.rec
            .executors
            .iter_mut()
            .find(|e| e.peer == *peer && e.attempt == attempt && e.state == ExecutorState::Running)
    }

    /// Takes back an executor that went offline and answers after all.
    pub(super) fn reinstate_lost(&mut self, peer: &PeerId, attempt: u32) -> bool {
        let Some(i) = self.rec.executors.iter().position(|e| {
            e.peer == *peer && e.attempt == attempt && e.lost && e.state == ExecutorState::Crashed
        }) else {
            return false;
        };
        if self.quorum.reinstate(*peer).is_err() {
            return false;
        }
        self.rec.log.push(QuorumInput::Reinstate(*peer));
        let e = &mut self.rec.executors[i];
        e.state = ExecutorState::Running;
        e.lost = false;
        e.ended_at_ms = None;
        e.error = None;
        self.event(
            "back",
            Some(*peer),
            "it went offline while assigned and came back with an answer: the answer counts".into(),
        );
        true
    }

    pub(super) fn on_report(&mut self, peer: PeerId, report: CheckedReport) {
        let attempt = report.attempt;
        if self.running_slot(&peer, attempt).is_none() && !self.reinstate_lost(&peer, attempt) {
            return;
        }
        let signer = report.attestation.signer();
        if signer != peer {
            let why = format!("sent an attestation signed by {signer}");
            self.end_executor(peer, attempt, ExecutorState::Crashed, why);
            return;
        }
        let claimed = report.attestation.value().result_hash;
        if let BundleRef::Inline(b) = &report.bundle {
            if b.result_hash() != claimed {
                let why = "its bundle does not hash to the result it signed".to_string();
                self.end_executor(peer, attempt, ExecutorState::Crashed, why);
                return;
            }
        }
        if self.spot_check_pending(&peer) {
            if let Some(slot) = self.running_slot(&peer, attempt) {
                slot.report = Some(report.to_report());
            }
            self.held
                .insert((peer, attempt), report.attestation.clone());
            self.event(
                "held",
                Some(peer),
                "spot check: counted once the checked executor has answered".into(),
            );
            self.persist();
            return;
        }
        self.accept_report(peer, &report);
    }

    /// Whether `peer`'s answer must wait: the job is a spot check and the
    /// checked executor (the first) has not answered or failed yet.
    pub(super) fn spot_check_pending(&self, peer: &PeerId) -> bool {
        self.rec.plan == Some(AdaptivePlan::SpotCheck)
            && self.rec.executors.first().is_some_and(|f| {
                f.peer != *peer && f.state == ExecutorState::Running && !is_held(f)
            })
    }

    /// Feeds the held reports of a spot check to the quorum once the
    /// checked executor's answer (or failure) is in.
    pub(super) fn release_held(&mut self) {
        let held: Vec<(PeerId, u32)> = self
            .rec
            .executors
            .iter()
            .filter(|e| is_held(e) && !self.spot_check_pending(&e.peer))
            .map(|e| (e.peer, e.attempt))
            .collect();
        for (peer, attempt) in held {
            let Some(stored) = self
                .running_slot(&peer, attempt)
                .and_then(|s| s.report.take())
            else {
                continue;
            };
            // Checked on arrival; a report held across a restart comes
            // from the file and is checked again.
            let attestation = match self.held.remove(&(peer, attempt)) {
                Some(a) => a,
                None => match stored.attestation.clone().check() {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            let report = CheckedReport {
                attestation,
                attempt,
                bundle: stored.bundle,
            };
            self.accept_report(peer, &report);
        }
    }

    /// Feeds a checked report to the quorum and records it.
    pub(super) fn accept_report(&mut self, peer: PeerId, report: &CheckedReport) {
        let attempt = report.attempt;
        match self.quorum.attest_checked(&report.attestation) {
            Ok(_) => {
                let now = self.now_ms;
                let claimed = report.attestation.value().result_hash;
                self.rec
                    .log
                    .push(QuorumInput::Attest(report.attestation.signed().clone()));
                if let Some(slot) = self.running_slot(&peer, attempt) {
                    slot.state = ExecutorState::Answered;
                    slot.ended_at_ms = Some(now);
                    slot.result_hash = Some(claimed);
                    slot.report = Some(report.to_report());
                }
                let same = self
                    .rec
                    .executors
                    .iter()
                    .filter(|e| e.result_hash == Some(claimed))
                    .count();
                let k = self.quorum.k();
                self.event(
                    "attested",
                    Some(peer),
                    format!("result {} ({same}/{k} needed agree)", claimed.short()),
                );
                self.persist();
            }
            Err(e) => {
                let why = format!("attestation refused: {e}");
                self.end_executor(peer, attempt, ExecutorState::Crashed, why);
            }
        }
    }

    pub(super) fn on_failed(
        &mut self,
        peer: PeerId,
        attempt: u32,
        error: String,
        kind: FailKind,
        ran: bool,
    ) {
        // A held report already answers for the executor.
        if self.running_slot(&peer, attempt).is_none_or(|s| is_held(s)) {
            return;
        }
        self.end_executor(peer, attempt, ExecutorState::from_fail(kind), error.clone());
        if ran {
            self.job_errors.push(error);
            self.fail_on_repeated_error();
        }
    }

    pub(super) fn on_lost(&mut self, peer: PeerId, attempt: u32, error: String) {
        if self.running_slot(&peer, attempt).is_none_or(|s| is_held(s)) {
            return;
        }
        self.end_executor(peer, attempt, ExecutorState::Crashed, error);
        if let Some(slot) = self
            .rec
            .executors
            .iter_mut()
            .find(|e| e.peer == peer && e.attempt == attempt)
        {
            slot.lost = true;
        }
    }

    /// The same error from k executors that ran the job is the job's own
    /// doing (a limit it breaks, a module that traps): fail now rather
    /// than burn through every replacement.
    pub(super) fn fail_on_repeated_error(&mut self) {
        let k = self.quorum.k();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &self.job_errors {
            *counts.entry(e.as_str()).or_default() += 1;
        }
        let repeated = counts
            .into_iter()
            .find(|(_, c)| *c >= usize::from(k))
            .map(|(err, _)| err.to_string());
        if let Some(error) = repeated {
            // Ends the quorum, so a late answer cannot revive the job.
            let _ = self.quorum.job_deadline_passed();
            self.fail(&JobFailure::Repeated { k, error });
        }
    }

    /// Ends a running executor as missed, crashed or a named limit.
    pub(super) fn end_executor(
        &mut self,
        peer: PeerId,
        attempt: u32,
        state: ExecutorState,
        error: String,
    ) {
        let r = match state {
            ExecutorState::Missed => self.quorum.missed(peer),
            _ => self.quorum.crashed(peer),
        };
        if r.is_err() {
            return;
        }
        self.rec.log.push(match state {
            ExecutorState::Missed => QuorumInput::Missed(peer),
            _ => QuorumInput::Crashed(peer),
        });
        let now = self.now_ms;
        if let Some(slot) = self.running_slot(&peer, attempt) {
            slot.state = state;
            slot.ended_at_ms = Some(now);
            slot.error = Some(error.clone());
        }
        self.event(state.as_str(), Some(peer), error);
        if self.rec.plan == Some(AdaptivePlan::Solo) {
            self.fall_back_to_full();
        }
        self.persist();
    }

    /// The solo executor failed to answer: the job needs the full k-of-n.
    pub(super) fn fall_back_to_full(&mut self) {
        self.set_plan(AdaptivePlan::Fallback);
        let r = self.spec.replication;
        self.event(
            "plan",
            None,
            format!(
                "adaptive: the trusted executor did not answer; running at {}-of-{}",
                r.k, r.n
            ),
        );
    }

    pub(super) fn on_tick(&mut self) {
        let now = self.now_ms;
        let overdue: Vec<(PeerId, u32)> = self
            .rec
            .executors
            .iter()
            .filter(|e| e.state == ExecutorState::Running && !is_held(e) && e.deadline_ms <= now)
            .map(|e| (e.peer, e.attempt))
            .collect();
        for (peer, attempt) in overdue {
            self.end_executor(
                peer,
                attempt,
                ExecutorState::Missed,
                "no answer before the deadline".into(),
            );
        }
        if now >= self.deadline_ms {
            if let Ok(d) = self.quorum.job_deadline_passed() {
                if d.is_final() {
                    self.finish(d);
                }
            }
        }
    }

    /// Shows an executor's image fetch to listeners; the loaded image is
    /// kept in the record's events, the progress before it is not.
    pub(super) fn on_image_progress(
        &mut self,
        peer: PeerId,
        attempt: u32,
        p: crate::images::Progress,
    ) {
        let running =
            self.rec.executors.iter().any(|e| {
                e.peer == peer && e.attempt == attempt && e.state == ExecutorState::Running
            });
        if !running {
            return;
        }
        if p.loaded {
            let detail = format!(
                "image fetched and loaded ({})",
                agora_protocol::units::human_bytes(p.total)
            );
            self.event("image", Some(peer), detail);
        } else {
            // The percentage in parentheses is what `agora run` draws
            // its progress bar from.
            let percent = p.have.saturating_mul(100).checked_div(p.total).unwrap_or(0);
            let detail = format!(
                "fetching image {}/{} ({}%) from {} peer(s)",
                agora_protocol::units::human_bytes(p.have),
                agora_protocol::units::human_bytes(p.total),
                percent.min(100),
                p.providers
            );
            self.live_event("image", Some(peer), detail);
        }
    }
}
