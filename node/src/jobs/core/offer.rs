//! Offering a job and assigning it: the fail-fast checks, bid windows,
//! busy back-off, selection, the adaptive plan.

use super::*;

impl JobCore {
    pub(super) fn on_start(&mut self, world: &dyn World) {
        if self.rec.state == JobState::Pending && !self.rec.allow_local {
            if let Some(why) = self.no_capable_node(world) {
                self.fail(&why);
            }
        }
        // Resumed after a restart: an assignment recorded (the record is
        // written before it is sent) but never acknowledged may never have
        // left this node, and its executor would never answer. Sending it
        // again is harmless: an executor that has it answers with its
        // acceptance and runs it once.
        let unacknowledged: Vec<(PeerId, u32, u64)> = self
            .rec
            .executors
            .iter()
            .filter(|e| e.state == ExecutorState::Running && e.acceptance.is_none())
            .map(|e| (e.peer, e.attempt, e.deadline_ms))
            .collect();
        for (peer, attempt, deadline_ms) in unacknowledged {
            self.out.push(Action::Assign {
                peer,
                attempt,
                deadline_ms,
            });
        }
    }

    /// Fails fast when the nodes known say nobody can run the job, or too
    /// few for k of them to agree. With no node known yet, the offer goes
    /// out anyway: adverts may be late.
    pub(super) fn no_capable_node(&self, world: &dyn World) -> Option<JobFailure> {
        let (online, known) = world.online();
        if known == 0 {
            return None;
        }
        let caps: Vec<Capacity> = online.iter().map(|(_, c)| c.clone()).collect();
        if let Some(why) = explain_no_capable(&self.spec, &caps, known) {
            return Some(JobFailure::NoCapable(why));
        }
        let capable = self.capable_among(&online);
        let k = self.quorum.k();
        (capable < usize::from(k)).then_some(JobFailure::TooFewCapable {
            k,
            capable,
            online: caps.len(),
            known,
        })
    }

    /// Online nodes, other than this one and those already assigned this
    /// job, whose adverts say they can run it: the ones a new offer may
    /// still bring in.
    pub(super) fn capable_count(&self, world: &dyn World) -> usize {
        self.capable_among(&world.online().0)
    }

    /// [`JobCore::capable_count`] over a list of online nodes already read.
    fn capable_among(&self, online: &[(PeerId, Capacity)]) -> usize {
        let used = self.used();
        online
            .iter()
            .filter(|(p, _)| *p != self.cfg.me && !used.contains(p))
            .filter(|(_, c)| unmet(&self.spec, c).is_none())
            .count()
    }

    pub(super) fn used(&self) -> BTreeSet<PeerId> {
        self.rec.executors.iter().map(|e| e.peer).collect()
    }

    pub(super) fn unused_bidders(&self) -> usize {
        let used = self.used();
        self.pool.keys().filter(|p| !used.contains(p)).count()
    }

    /// An executor that went offline while assigned and may still answer
    /// before its deadline (a restarted executor resumes its work).
    pub(super) fn lost_may_return(&self) -> Option<PeerId> {
        self.rec
            .executors
            .iter()
            .find(|e| e.lost && e.state == ExecutorState::Crashed && e.deadline_ms > self.now_ms)
            .map(|e| e.peer)
    }

    /// The bidders to choose from, in two groups drawn from in turn: those
    /// whose adverts say they hold the job's pinned image first (they
    /// start at once, and move no image), then the others (they fetch
    /// it). Jobs that pin no image have one group (the first).
    fn candidates(&self, world: &dyn World) -> (Vec<Candidate>, Vec<Candidate>) {
        let all = self.pool.values().copied();
        let Some(image) = self.spec.executor.pinned_image() else {
            return (all.collect(), Vec::new());
        };
        let (online, _) = world.online();
        let kind = self.spec.executor.kind();
        let holds = |c: &Candidate| {
            online.iter().any(|(p, cap)| {
                *p == c.peer
                    && cap
                        .executors
                        .get(kind)
                        .is_some_and(|held| held.iter().any(|i| i == image))
            })
        };
        all.partition(holds)
    }

    /// Assigns up to `how_many` executors, offering the job (again) when
    /// there are too few bidders. `Err` ends the job.
    pub(super) fn fill(&mut self, how_many: usize, world: &dyn World) -> Result<(), JobFailure> {
        let now = self.now_ms;
        if let Some(w) = self.window {
            let ready = now >= w.hard_ms
                || (self.unused_bidders() >= how_many
                    && (now >= w.soft_ms || w.bids >= w.expected));
            if !ready {
                return Ok(());
            }
            self.window = None;
            self.last_window_bids = Some(w.bids);
        }
        // An adaptive job picks its first executor alone: the plan made
        // for it says how many more it needs.
        let choosing_plan =
            self.rec.replication == ReplicationMode::Adaptive && self.rec.plan.is_none();
        let want = if choosing_plan { 1 } else { how_many };
        let (picked, holders) = {
            let (first, rest) = self.candidates(world);
            let holders: BTreeSet<PeerId> = first.iter().map(|c| c.peer).collect();
            let seed = u64::from_le_bytes(self.id().as_bytes()[..8].try_into().unwrap_or([0; 8]))
                ^ self.rec.executors.len() as u64;
            let mut used = self.used();
            let mut picked = world.select(&first, want, &used, seed);
            if picked.len() < want && !rest.is_empty() {
                used.extend(picked.iter().copied());
                picked.extend(world.select(&rest, want - picked.len(), &used, seed));
            }
            (picked, holders)
        };
        for peer in &picked {
            self.pool.remove(peer);
            if choosing_plan {
                self.choose_plan(*peer, world);
            }
            self.assign(*peer, !holders.contains(peer));
        }
        if picked.len() >= want {
            return Ok(());
        }
        let me = self.cfg.me;
        if self.rec.allow_local
            && !self.used().contains(&me)
            && world.runs_here(&self.spec)
            && self.last_window_bids.is_some()
        {
            self.event(
                "local",
                Some(me),
                "no other node can take it: running it on this node (--allow-local)".into(),
            );
            self.assign(me, true);
            return Ok(());
        }
        let last_had_bids = self.last_window_bids.is_none_or(|b| b > 0);
        if self.rec.offers < MAX_OFFERS && last_had_bids {
            self.offer(world);
            return Ok(());
        }
        // Nobody bid, yet capable nodes are online (they are busy: a full
        // node does not bid), or an executor that went offline may come
        // back: offer again after a growing pause, until the deadline.
        let lost = self.lost_may_return();
        let busy = self.capable_count(world) > 0;
        if !last_had_bids && (busy || lost.is_some()) && now < self.deadline_ms {
            match self.retry_at_ms {
                Some(at) if now < at => {}
                Some(_) => {
                    self.retry_at_ms = None;
                    self.offer(world);
                }
                None => {
                    let pause = BUSY_RETRY_MIN_MS
                        .saturating_mul(1 << self.busy_retries.min(5))
                        .min(BUSY_RETRY_MAX_MS);
                    self.busy_retries += 1;
                    self.retry_at_ms = Some(now + pause);
                    let detail = match lost {
                        Some(p) if !busy => format!(
                            "no other capable node is free; waiting for {}, which went offline while assigned (its answer counts if it comes back before its deadline); offering again in {pause} ms",
                            short_peer(&p)
                        ),
                        _ => format!("every capable node is busy; offering again in {pause} ms"),
                    };
                    self.event("waiting", None, detail);
                }
            }
            return Ok(());
        }
        if self.quorum.running().is_empty() {
            return Err(self.no_bids_reason(world));
        }
        Ok(())
    }

    pub(super) fn no_bids_reason(&self, world: &dyn World) -> JobFailure {
        if let Decision::NeedMore {
            why: MoreReason::Escalate,
            ..
        } = self.quorum.decision()
        {
            return JobFailure::Disputed {
                tally: tally_text(&self.quorum.tally()),
                k: self.quorum.k(),
            };
        }
        let (online, known) = world.online();
        let caps: Vec<Capacity> = online.iter().map(|(_, c)| c.clone()).collect();
        if let Some(why) = explain_no_capable(&self.spec, &caps, known) {
            return JobFailure::NoCapable(why);
        }
        JobFailure::NoBids {
            bids: self.rec.bids,
            window: std::time::Duration::from_millis(self.cfg.bid_window_max_ms),
            offers: self.rec.offers,
            known,
            online: caps.len(),
            capable: self.capable_among(&online),
            undelivered: self.publish_error.clone(),
        }
    }

    /// Asks the shell to gossip an offer, and opens a bid window.
    pub(super) fn offer(&mut self, world: &dyn World) {
        let now = self.now_ms;
        let expected = self.capable_count(world);
        self.window = Some(Window {
            soft_ms: now.saturating_add(self.cfg.bid_window_ms),
            hard_ms: now.saturating_add(self.cfg.bid_window_max_ms),
            // Unknown capacity: wait for the soft window.
            expected: if expected == 0 { usize::MAX } else { expected },
            bids: 0,
        });
        self.rec.offers += 1;
        if self.rec.state == JobState::Pending {
            self.set_state(JobState::Scheduled);
        }
        self.out.push(Action::Offer {
            bid_deadline_ms: now.saturating_add(self.cfg.bid_window_max_ms),
        });
    }

    pub(super) fn on_offer_sent(&mut self, r: Result<(), String>) {
        let n = self.rec.offers;
        let detail = match &r {
            Ok(()) => {
                let expected = self.window.map_or(0, |w| {
                    if w.expected == usize::MAX {
                        0
                    } else {
                        w.expected
                    }
                });
                format!("offer #{n} gossiped; {expected} capable node(s) known")
            }
            Err(e) => format!("offer #{n} not delivered: {e}"),
        };
        self.publish_error = r.err();
        self.event("offered", None, detail);
        self.persist();
    }

    /// Records an assignment to `peer`, then asks the shell to send it.
    /// `may_fetch`: the peer may have to fetch the job's image first (its
    /// advert does not say it holds it).
    pub(super) fn assign(&mut self, peer: PeerId, may_fetch: bool) {
        let attempt = u32::try_from(self.rec.executors.len()).unwrap_or(u32::MAX);
        let now = self.now_ms;
        let deadline_ms = now.saturating_add(run_allowance_ms(&self.spec, may_fetch));
        if self.quorum.assign(peer).is_err() {
            return;
        }
        self.rec.log.push(QuorumInput::Assign(peer));
        self.rec.executors.push(StoredExecutor {
            peer,
            attempt,
            state: ExecutorState::Running,
            assigned_at_ms: now,
            deadline_ms,
            ended_at_ms: None,
            result_hash: None,
            report: None,
            error: None,
            acceptance: None,
            lost: false,
        });
        if !matches!(self.rec.state, JobState::Running) {
            self.set_state(JobState::Running);
        }
        self.event("assigned", Some(peer), format!("attempt {attempt}"));
        self.persist();
        self.out.push(Action::Assign {
            peer,
            attempt,
            deadline_ms,
        });
    }

    pub(super) fn on_bid(
        &mut self,
        peer: PeerId,
        bid: &Bid,
        subnet: Option<u64>,
        world: &dyn World,
    ) {
        if peer == self.cfg.me || self.pool.contains_key(&peer) || self.used().contains(&peer) {
            return;
        }
        // A bid is the bidder's word; its signed advert is what it offers.
        // A job that requires labels goes only to nodes advertising them.
        if !self.spec.requires.is_empty() {
            let (online, _) = world.online();
            let offers = online
                .iter()
                .any(|(p, c)| *p == peer && meets_requirements(&self.spec, &c.labels));
            if !offers {
                let detail = "its advert does not offer the labels the job requires".into();
                self.event("bid_refused", Some(peer), detail);
                return;
            }
        }
        self.pool
            .insert(peer, Candidate::from_bid(peer, bid).with_subnet(subnet));
        self.rec.bids = self.rec.bids.saturating_add(1);
        if let Some(w) = &mut self.window {
            w.bids += 1;
        }
        self.event(
            "bid",
            Some(peer),
            format!(
                "{} of {} places taken ({} queued)",
                bid.running_jobs, bid.max_jobs, bid.queue_len
            ),
        );
    }

    /// Picks the adaptive plan for a job whose first executor is `first`.
    pub(super) fn choose_plan(&mut self, first: PeerId, world: &dyn World) {
        let r = self.spec.replication;
        let choice = world.plan(&first, r.n, r.k);
        let (streak, needed) = (choice.streak, choice.needed);
        let (kind, detail) = match choice.kind {
            PlanKind::Solo => (
                AdaptivePlan::Solo,
                format!(
                    "{streak} clean jobs in a row here (needs {needed}): it runs the job alone"
                ),
            ),
            PlanKind::SpotCheck => (
                AdaptivePlan::SpotCheck,
                format!(
                    "trusted, but this job is a random spot check at {}-of-{}",
                    r.k, r.n
                ),
            ),
            PlanKind::Full => (
                AdaptivePlan::Full,
                format!(
                    "{streak} of the {needed} clean jobs in a row needed to run alone: {}-of-{}",
                    r.k, r.n
                ),
            ),
        };
        self.set_plan(kind);
        self.event("plan", Some(first), format!("adaptive: {detail}"));
    }

    /// Records `plan` and rebuilds the quorum for its replication.
    pub(super) fn set_plan(&mut self, plan: AdaptivePlan) {
        self.rec.plan = Some(plan);
        self.out.push(Action::PlanChosen(plan));
        // Unreachable with a validated spec; the old quorum stays.
        if let Ok(q) = rebuild_quorum(&self.rec, &self.spec) {
            self.quorum = q;
        }
    }
}
