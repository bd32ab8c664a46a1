//! The submitter side: one task per submitted job drives it from offer to
//! a final decision.
//!
//! The task owns the job's [`JobRecordDb`] and its [`Quorum`]; every input
//! (a bid, a report, a failure, a timer, a cancel) changes the record,
//! which is flushed before the task acts on the change. Bids are collected
//! for [`JobsConfig::bid_window`] (or until every capable node known has
//! bid), at most [`JobsConfig::bid_window_max`]; executors are chosen by
//! the verifier's weighted selection among the bidders; the quorum says
//! when to re-dispatch (misses, crashes) or escalate (disagreement).
//!
//! An adaptive job (`--replication adaptive`) first picks one executor and
//! asks [`AdaptivePolicy::plan`] with a secret random seed: a trusted
//! executor runs it alone (1-of-1) or, on a spot check, with the full
//! k-of-n; anyone else gets the full k-of-n. In a spot check the other
//! executors' reports are held until the checked executor has answered or
//! failed, so the quorum cannot decide without its answer. A solo verdict
//! rests on one signature and is neither applied nor gossiped; a solo
//! executor that fails to answer turns the job into a full k-of-n one.
//!
//! [`AdaptivePolicy::plan`]: agora_verifier::AdaptivePolicy::plan
//!
//! [`JobsConfig::bid_window`]: super::JobsConfig::bid_window
//! [`JobsConfig::bid_window_max`]: super::JobsConfig::bid_window_max

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use agora_protocol::limits::{MAX_ATTESTATIONS, MAX_OUTPUT_BYTES};
use agora_protocol::{
    codec, Acceptance, Assignment, Bid, ContentId, JobOffer, JobSpec, PeerId, ResultBundle, Signed,
    Verdict, TOPIC_JOBS, TOPIC_VERDICTS,
};
use agora_verifier::quorum::{Decision, Failure, MoreReason, Quorum};
use agora_verifier::reputation::{ReputationBook, ReputationConfig};
use agora_verifier::select::{select_executors, Candidate};
use agora_verifier::PlanKind;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use super::checks::{explain_no_capable, unmet, Capacity};
use super::dispatch::{deliver, DeliverError};
use super::record::{
    ExecutorState, JobRecordDb, QuorumInput, StoredBlob, StoredExecutor, StoredResult,
};
use super::{ActiveJob, Ctx};
use crate::api::types::{AdaptivePlan, JobEvent, JobState, ReplicationMode};
use crate::blobs;
use crate::lock;
use crate::network::adverts::{lock_book, unix_now_ms};
use crate::network::peeraddrs::subnet_of_peer;
use crate::network::rpc::{AttestReport, BundleRef, Request, Response};
use crate::reputation;

/// Inputs queued per job task.
const INPUT_QUEUE: usize = 256;
/// Offers made per job at most (the first, plus re-offers for
/// re-dispatch and escalation).
const MAX_OFFERS: u32 = 8;
/// Time an executor gets beyond the job's own timeout: fetching blobs,
/// queueing, reporting.
pub const ASSIGN_GRACE: Duration = Duration::from_secs(30);
/// First pause before offering again to a network whose capable nodes
/// are all busy; it doubles up to [`BUSY_RETRY_MAX`].
const BUSY_RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest such pause.
const BUSY_RETRY_MAX: Duration = Duration::from_secs(5);
/// Wait after a disconnect before checking the executor is gone.
const OFFLINE_CHECK_DELAY: Duration = Duration::from_millis(500);
/// How long the liveness ping may take.
const OFFLINE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest result bundle fetched from an executor.
const MAX_BUNDLE_BYTES: u64 = 4 * MAX_OUTPUT_BYTES;
/// How long fetching one bundle may take.
const BUNDLE_FETCH: Duration = Duration::from_secs(120);

/// What reaches a job's task.
#[derive(Debug)]
pub enum JobInput {
    /// A checked bid.
    Bid {
        /// The bidder.
        peer: PeerId,
        /// Its bid.
        bid: Bid,
    },
    /// An executor's attested result.
    Report {
        /// The executor (the request's sender).
        peer: PeerId,
        /// Its report.
        report: AttestReport,
    },
    /// An executor could not run the job, or could not be reached.
    Failed {
        /// The executor.
        peer: PeerId,
        /// The attempt it answers.
        attempt: u32,
        /// Why.
        error: String,
        /// Whether the executor ran the job and the job itself failed
        /// (a limit, a trap), as opposed to a refusal or a lost executor.
        ran: bool,
    },
    /// An executor took the job on: its signed acceptance.
    Accepted {
        /// The executor.
        peer: PeerId,
        /// The attempt it accepted.
        attempt: u32,
        /// What it signed.
        acceptance: Signed<Acceptance>,
    },
    /// The last connection to a peer closed.
    PeerGone(PeerId),
    /// The user cancels the job; the reply comes once it is recorded.
    Cancel(oneshot::Sender<()>),
}

/// Collecting bids after an offer.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Assign once this passed and there are enough bids.
    soft: Instant,
    /// Assign (or give up) at this point whatever came.
    hard: Instant,
    /// Capable nodes known: once that many bid, waiting is pointless.
    expected: usize,
    /// Bids received in this window.
    bids: usize,
}

/// One job's task.
struct JobTask {
    ctx: Arc<Ctx>,
    rec: JobRecordDb,
    /// The record's spec, decoded once.
    spec: JobSpec,
    quorum: Quorum,
    /// Bidders not yet used.
    pool: BTreeMap<PeerId, Candidate>,
    window: Option<Window>,
    /// Bids in the last closed window.
    last_window_bids: Option<usize>,
    /// Why the last offer could not be published, if it could not.
    publish_error: Option<String>,
    /// Errors of executors that ran the job and saw it fail.
    job_errors: Vec<String>,
    /// The final event, sent once the record is persisted.
    final_event: Option<JobEvent>,
    /// When to offer again to a busy network.
    retry_at: Option<Instant>,
    /// Offers made to a busy network so far.
    busy_retries: u32,
    rx: mpsc::Receiver<JobInput>,
    events: broadcast::Sender<JobEvent>,
    /// The whole job must be decided by then (ms since the Unix epoch).
    deadline_ms: u64,
}

/// Whether `e` answered a spot check and waits for the checked executor.
fn is_held(e: &StoredExecutor) -> bool {
    e.state == ExecutorState::Running && e.report.is_some()
}

/// The quorum's cap for `n`: room to replace every executor once more.
pub fn cap_for(n: u8) -> u8 {
    let cap = (usize::from(n) * 2).max(usize::from(n) + 2);
    u8::try_from(cap.min(MAX_ATTESTATIONS)).unwrap_or(u8::MAX)
}

/// The job's overall deadline: three rounds of runs, plus bidding.
fn job_deadline_ms(rec: &JobRecordDb, spec: &JobSpec) -> u64 {
    let round = spec
        .resources
        .timeout_ms
        .saturating_add(duration_ms(ASSIGN_GRACE));
    rec.submitted_at_ms
        .saturating_add(round.saturating_mul(3))
        .saturating_add(10_000)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The spec of a stored record (signed by this node; checked again since
/// the store is a file).
pub fn spec_of(rec: &JobRecordDb) -> Result<JobSpec, String> {
    rec.spec
        .verify()
        .map(|v| v.value)
        .map_err(|e| format!("stored spec: {e}"))
}

/// "HASH from COUNT, ..." for a quorum's tally.
fn tally_text(hashes: &[(ContentId, u32)]) -> String {
    let list: Vec<String> = hashes
        .iter()
        .map(|(h, c)| format!("{} from {c}", h.short()))
        .collect();
    list.join(", ")
}

/// Rebuilds the quorum of `rec` by replaying its inputs.
pub fn rebuild_quorum(rec: &JobRecordDb, spec: &JobSpec) -> Result<Quorum, String> {
    let r = spec.replication;
    let (n, k, cap) = if rec.plan == Some(AdaptivePlan::Solo) {
        (1, 1, 1)
    } else {
        (r.n, r.k, rec.cap)
    };
    let mut q = Quorum::new(rec.id(), n, k, cap).map_err(|e| e.to_string())?;
    for input in &rec.log {
        // Inputs were accepted when first applied; replaying them cannot
        // fail unless the record was tampered with, and then the rest of
        // the log still counts.
        let r = match input {
            QuorumInput::Assign(p) => q.assign(*p),
            QuorumInput::Attest(a) => q.attest(a),
            QuorumInput::Missed(p) => q.missed(*p),
            QuorumInput::Crashed(p) => q.crashed(*p),
        };
        if let Err(e) = r {
            warn!(job = %rec.id().short(), error = %e, "stored quorum input refused on replay");
        }
    }
    Ok(q)
}

/// Registers and starts the task of `rec` (new or resumed).
pub(crate) fn start(ctx: &Arc<Ctx>, rec: JobRecordDb, spec: JobSpec, quorum: Quorum) {
    let id = rec.id();
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let (events, _) = broadcast::channel(64);
    lock(&ctx.active).insert(
        id,
        ActiveJob {
            tx,
            events: events.clone(),
        },
    );
    let deadline_ms = job_deadline_ms(&rec, &spec);
    let task = JobTask {
        ctx: ctx.clone(),
        rec,
        spec,
        quorum,
        pool: BTreeMap::new(),
        window: None,
        last_window_bids: None,
        publish_error: None,
        job_errors: Vec::new(),
        final_event: None,
        retry_at: None,
        busy_retries: 0,
        rx,
        events,
        deadline_ms,
    };
    let span = tracing::info_span!("job", job = %id.short());
    let ctx2 = ctx.clone();
    ctx.tasks.spawn(
        async move {
            task.run().await;
            lock(&ctx2.active).remove(&id);
        }
        .instrument(span),
    );
}

/// Restarts the task of every unfinished job in the store.
pub(crate) async fn resume_all(ctx: &Arc<Ctx>) {
    let (jobs, bad) = ctx.db.jobs();
    for e in bad {
        warn!(error = %e, "skipping an unreadable job record");
    }
    for mut rec in jobs {
        ctx.metrics.transition(None, rec.state);
        if rec.state.is_final() {
            continue;
        }
        match spec_of(&rec).and_then(|spec| Ok((rebuild_quorum(&rec, &spec)?, spec))) {
            Ok((q, spec)) => {
                info!(job = %rec.id().short(), state = rec.state.as_str(), "resuming job");
                rec.push_event(JobEvent {
                    at_ms: unix_now_ms(),
                    kind: "resumed".into(),
                    peer_id: None,
                    state: rec.state,
                    detail: "the submitting node restarted; the job goes on".into(),
                });
                start(ctx, rec, spec, q);
            }
            Err(e) => warn!(job = %rec.id().short(), error = %e, "cannot resume job"),
        }
    }
}

impl JobTask {
    async fn run(mut self) {
        if self.rec.state == JobState::Pending && !self.rec.allow_local {
            if let Some(why) = self.no_capable_node() {
                self.fail(why).await;
                return;
            }
        }
        loop {
            if self.rec.state.is_final() {
                return;
            }
            // Also after a restart, when the checked answer came in before.
            self.release_held().await;
            let decision = self.quorum.decision();
            if decision.is_final() {
                self.finish(decision).await;
                return;
            }
            if let Decision::NeedMore { how_many, .. } = decision {
                if let Err(why) = self.fill(usize::from(how_many)).await {
                    self.fail(why).await;
                    return;
                }
                if self.quorum.decision() != decision {
                    continue;
                }
            }
            let wake = self.next_wake();
            tokio::select! {
                biased;
                () = self.ctx.cancel.cancelled() => return,
                input = self.rx.recv() => match input {
                    Some(i) => self.on_input(i).await,
                    None => return,
                },
                () = tokio::time::sleep_until(wake) => self.on_timers().await,
            }
        }
    }

    fn id(&self) -> ContentId {
        self.rec.id()
    }

    /// The capacities of online nodes other than this one.
    fn online_capacities(&self) -> (Vec<Capacity>, usize) {
        let now = unix_now_ms();
        let book = lock_book(&self.ctx.book);
        let known = book
            .list(now)
            .iter()
            .filter(|v| v.peer != self.ctx.me)
            .count();
        let caps = book
            .online(now)
            .into_iter()
            .filter(|p| *p != self.ctx.me)
            .filter_map(|p| book.get(&p).map(|r| Capacity::from(&r.advert)))
            .collect();
        (caps, known)
    }

    /// Fails fast when the nodes known say nobody can run the job, or too
    /// few for k of them to agree. With no node known yet, the offer goes
    /// out anyway: adverts may be late.
    fn no_capable_node(&self) -> Option<String> {
        let (caps, known) = self.online_capacities();
        if known == 0 {
            return None;
        }
        if let Some(why) = explain_no_capable(&self.spec, &caps, known) {
            return Some(why);
        }
        // Nothing is assigned yet, so none is left out as used.
        let capable = self.capable_count();
        let k = self.quorum.k();
        (capable < usize::from(k)).then(|| {
            format!(
                "too few capable nodes: {k} executors must agree, and {capable} of the {} other node(s) online can run this job (this node knows {known}); lower -k, or add nodes",
                caps.len()
            )
        })
    }

    /// Online nodes, other than this one and those already assigned this
    /// job, whose adverts say they can run it: the ones a new offer may
    /// still bring in.
    fn capable_count(&self) -> usize {
        let now = unix_now_ms();
        let used = self.used();
        let book = lock_book(&self.ctx.book);
        book.online(now)
            .into_iter()
            .filter(|p| *p != self.ctx.me && !used.contains(p))
            .filter_map(|p| book.get(&p).map(|r| Capacity::from(&r.advert)))
            .filter(|c| unmet(&self.spec, c).is_none())
            .count()
    }

    fn used(&self) -> BTreeSet<PeerId> {
        self.rec.executors.iter().map(|e| e.peer).collect()
    }

    fn unused_bidders(&self) -> usize {
        let used = self.used();
        self.pool.keys().filter(|p| !used.contains(p)).count()
    }

    /// Assigns up to `how_many` executors, offering the job (again) when
    /// there are too few bidders. `Err` ends the job.
    async fn fill(&mut self, how_many: usize) -> Result<(), String> {
        let now = Instant::now();
        if let Some(w) = self.window {
            let ready = now >= w.hard
                || (self.unused_bidders() >= how_many && (now >= w.soft || w.bids >= w.expected));
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
        let picked = {
            let cands: Vec<Candidate> = self.pool.values().copied().collect();
            let seed = u64::from_le_bytes(self.id().as_bytes()[..8].try_into().unwrap_or([0; 8]))
                ^ self.rec.executors.len() as u64;
            if self.ctx.cfg.uniform_selection {
                // Benchmarks compare against selection blind to reputation.
                let blank = ReputationBook::new(ReputationConfig::default());
                select_executors(&cands, &blank, want, &self.ctx.me, &self.used(), seed)
            } else {
                let book = lock(&self.ctx.reputation);
                select_executors(&cands, &book, want, &self.ctx.me, &self.used(), seed)
            }
        };
        for peer in &picked {
            self.pool.remove(peer);
            if choosing_plan {
                self.choose_plan(*peer);
            }
            self.assign(*peer).await?;
        }
        if picked.len() >= want {
            return Ok(());
        }
        let me = self.ctx.me;
        if self.rec.allow_local
            && !self.used().contains(&me)
            && self.ctx.worker.can_run(&self.spec).is_none()
            && self.last_window_bids.is_some()
        {
            self.event(
                "local",
                Some(me),
                "no other node can take it: running it on this node (--allow-local)".into(),
            );
            return self.assign(me).await;
        }
        let last_had_bids = self.last_window_bids.is_none_or(|b| b > 0);
        if self.rec.offers < MAX_OFFERS && last_had_bids {
            self.offer().await;
            return Ok(());
        }
        // Nobody bid, yet capable nodes are online: they are busy (a full
        // node does not bid). Offer again after a growing pause, until the
        // job's deadline; only a network with no capable node fails now.
        if !last_had_bids && self.capable_count() > 0 && unix_now_ms() < self.deadline_ms {
            match self.retry_at {
                Some(at) if Instant::now() < at => {}
                Some(_) => {
                    self.retry_at = None;
                    self.offer().await;
                }
                None => {
                    let pause = BUSY_RETRY_MIN
                        .saturating_mul(1 << self.busy_retries.min(5))
                        .min(BUSY_RETRY_MAX);
                    self.busy_retries += 1;
                    self.retry_at = Some(Instant::now() + pause);
                    self.event(
                        "waiting",
                        None,
                        format!("every capable node is busy; offering again in {pause:?}"),
                    );
                }
            }
            return Ok(());
        }
        if self.quorum.running().is_empty() {
            return Err(self.no_bids_reason());
        }
        Ok(())
    }

    fn no_bids_reason(&self) -> String {
        if let Decision::NeedMore {
            why: MoreReason::Escalate,
            ..
        } = self.quorum.decision()
        {
            return format!(
                "the answers disagree ({}) and no other capable node is left to settle it: a result must lead the others by {} attestations",
                tally_text(&self.quorum.tally()),
                self.quorum.k()
            );
        }
        let (caps, known) = self.online_capacities();
        if let Some(why) = explain_no_capable(&self.spec, &caps, known) {
            return why;
        }
        let capable = self.capable_count();
        let mut why = format!(
            "no capable node answered: {} bid(s) in {:?} after {} offer(s); this node knows {known} other node(s), {} online, {capable} of them capable per their adverts and not yet assigned this job",
            self.rec.bids,
            self.ctx.cfg.bid_window_max,
            self.rec.offers,
            caps.len(),
        );
        if let Some(e) = &self.publish_error {
            why.push_str(&format!("; the last offer was not delivered: {e}"));
        }
        why
    }

    /// Gossips a signed offer and opens a bid window.
    async fn offer(&mut self) {
        let now_ms = unix_now_ms();
        let cfg = &self.ctx.cfg;
        let offer = JobOffer {
            spec: self.rec.spec.clone(),
            timestamp_ms: now_ms,
            nonce: rand::random(),
            bid_deadline_ms: now_ms.saturating_add(duration_ms(cfg.bid_window_max)),
        };
        let signed = self.ctx.key.sign(&offer);
        let expected = self.capable_count();
        self.publish_error = match self.ctx.net.publish(TOPIC_JOBS, signed.encode()).await {
            Ok(_) => None,
            Err(e) => {
                debug!(error = %e, "offer not published");
                Some(e.to_string())
            }
        };
        let now = Instant::now();
        self.window = Some(Window {
            soft: now + cfg.bid_window,
            hard: now + cfg.bid_window_max,
            // Unknown capacity: wait for the soft window.
            expected: if expected == 0 { usize::MAX } else { expected },
            bids: 0,
        });
        self.rec.offers += 1;
        if self.rec.state == JobState::Pending {
            self.set_state(JobState::Scheduled);
        }
        let detail = match &self.publish_error {
            None => format!(
                "offer #{} gossiped; {expected} capable node(s) known",
                self.rec.offers
            ),
            Some(e) => format!("offer #{} not delivered: {e}", self.rec.offers),
        };
        self.event("offered", None, detail);
        self.persist().await;
    }

    /// Records, persists, then sends an assignment to `peer`.
    async fn assign(&mut self, peer: PeerId) -> Result<(), String> {
        let attempt = u32::try_from(self.rec.executors.len()).unwrap_or(u32::MAX);
        let now = unix_now_ms();
        let deadline_ms = now
            .saturating_add(self.spec.resources.timeout_ms)
            .saturating_add(duration_ms(ASSIGN_GRACE));
        if let Err(e) = self.quorum.assign(peer) {
            warn!(%peer, error = %e, "quorum refused an assignment");
            return Ok(());
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
        });
        if !matches!(self.rec.state, JobState::Running) {
            self.set_state(JobState::Running);
        }
        self.event("assigned", Some(peer), format!("attempt {attempt}"));
        self.persist().await;
        let signed = self.ctx.key.sign(&Assignment {
            spec: self.rec.spec.clone(),
            executor: peer,
            attempt,
            deadline_ms,
        });
        let ctx = self.ctx.clone();
        let tx = lock(&ctx.active).get(&self.id()).map(|a| a.tx.clone());
        self.ctx.tasks.spawn(
            async move {
                let input = match deliver(&ctx, peer, Request::Assign(signed)).await {
                    Ok(Response::Accepted(acceptance)) => JobInput::Accepted {
                        peer,
                        attempt,
                        acceptance,
                    },
                    // Taken without a signed acceptance: it runs, but can
                    // never be charged with a miss.
                    Ok(_) => return,
                    Err(e) => JobInput::Failed {
                        peer,
                        attempt,
                        error: match e {
                            DeliverError::Refused(r) => format!("refused the assignment: {r}"),
                            DeliverError::Network(n) => format!("unreachable: {n}"),
                        },
                        ran: false,
                    },
                };
                if let Some(tx) = tx {
                    // The task may have ended meanwhile; then the input no
                    // longer matters.
                    let _ = tx.send(input).await;
                }
            }
            .in_current_span(),
        );
        Ok(())
    }

    async fn on_input(&mut self, input: JobInput) {
        match input {
            JobInput::Bid { peer, bid } => self.on_bid(peer, bid),
            JobInput::Report { peer, report } => self.on_report(peer, report).await,
            JobInput::Failed {
                peer,
                attempt,
                error,
                ran,
            } => self.on_failed(peer, attempt, error, ran).await,
            JobInput::Accepted {
                peer,
                attempt,
                acceptance,
            } => self.on_accepted(peer, attempt, acceptance),
            JobInput::PeerGone(peer) => self.check_alive(peer),
            JobInput::Cancel(reply) => {
                if let Ok(d) = self.quorum.cancel() {
                    self.finish(d).await;
                }
                let _ = reply.send(());
            }
        }
    }

    /// Keeps an executor's acceptance if it is what was assigned: this
    /// job, from this node, that attempt and deadline, signed by it. It is
    /// written with the record's next change (it only matters for the
    /// verdict). The answer may already be in: reports travel separately.
    fn on_accepted(&mut self, peer: PeerId, attempt: u32, acceptance: Signed<Acceptance>) {
        let (id, me) = (self.id(), self.ctx.me);
        let Some(e) = self
            .rec
            .executors
            .iter_mut()
            .find(|e| e.peer == peer && e.attempt == attempt)
        else {
            return;
        };
        match acceptance.verify() {
            Ok(a)
                if a.signer == peer
                    && a.value.job == id
                    && a.value.submitter == me
                    && a.value.attempt == attempt
                    && a.value.deadline_ms == e.deadline_ms =>
            {
                e.acceptance = Some(acceptance);
            }
            _ => warn!(%peer, "an acceptance that does not match its assignment"),
        }
    }

    /// A running executor lost its connection: if it does not answer a
    /// ping either, it went offline and is replaced now rather than at its
    /// deadline. (Connections also close for harmless reasons.)
    fn check_alive(&self, peer: PeerId) {
        let Some(attempt) = self
            .rec
            .executors
            .iter()
            .find(|e| e.peer == peer && e.state == ExecutorState::Running && !is_held(e))
            .map(|e| e.attempt)
        else {
            return;
        };
        let Some(tx) = lock(&self.ctx.active).get(&self.id()).map(|a| a.tx.clone()) else {
            return;
        };
        let net = self.ctx.net.clone();
        self.ctx.tasks.spawn(
            async move {
                tokio::time::sleep(OFFLINE_CHECK_DELAY).await;
                let ping = net.request(
                    peer,
                    Request::Ping {
                        nonce: rand::random(),
                    },
                );
                let alive = matches!(
                    tokio::time::timeout(OFFLINE_CHECK_TIMEOUT, ping).await,
                    Ok(Ok(_))
                );
                if !alive {
                    let _ = tx
                        .send(JobInput::Failed {
                            peer,
                            attempt,
                            error: "went offline while assigned".into(),
                            ran: false,
                        })
                        .await;
                }
            }
            .in_current_span(),
        );
    }

    fn on_bid(&mut self, peer: PeerId, bid: Bid) {
        if peer == self.ctx.me || self.pool.contains_key(&peer) || self.used().contains(&peer) {
            return;
        }
        let subnet = subnet_of_peer(&self.ctx.peer_addrs, &peer);
        self.pool
            .insert(peer, Candidate::from_bid(peer, &bid).with_subnet(subnet));
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

    /// The running slot of `peer` for `attempt`, if it is still running.
    fn running_slot(&mut self, peer: &PeerId, attempt: u32) -> Option<&mut StoredExecutor> {
        self.rec
            .executors
            .iter_mut()
            .find(|e| e.peer == *peer && e.attempt == attempt && e.state == ExecutorState::Running)
    }

    async fn on_report(&mut self, peer: PeerId, report: AttestReport) {
        if self.running_slot(&peer, report.attempt).is_none() {
            debug!(%peer, "report for no running assignment: ignored");
            return;
        }
        let claimed = match report.attestation.verify() {
            Ok(a) if a.signer == peer => a.value.result_hash,
            Ok(a) => {
                let why = format!("sent an attestation signed by {}", a.signer);
                self.end_executor(peer, report.attempt, ExecutorState::Crashed, why)
                    .await;
                return;
            }
            Err(e) => {
                let why = format!("sent a bad attestation: {e}");
                self.end_executor(peer, report.attempt, ExecutorState::Crashed, why)
                    .await;
                return;
            }
        };
        if let BundleRef::Inline(b) = &report.bundle {
            if b.result_hash() != claimed {
                self.end_executor(
                    peer,
                    report.attempt,
                    ExecutorState::Crashed,
                    "its bundle does not hash to the result it signed".into(),
                )
                .await;
                return;
            }
        }
        if self.spot_check_pending(&peer) {
            if let Some(slot) = self.running_slot(&peer, report.attempt) {
                slot.report = Some(report);
            }
            self.event(
                "held",
                Some(peer),
                "spot check: counted once the checked executor has answered".into(),
            );
            self.persist().await;
            return;
        }
        self.accept_report(peer, report, claimed).await;
    }

    /// Whether `peer`'s answer must wait: the job is a spot check and the
    /// checked executor (the first) has not answered or failed yet.
    fn spot_check_pending(&self, peer: &PeerId) -> bool {
        self.rec.plan == Some(AdaptivePlan::SpotCheck)
            && self.rec.executors.first().is_some_and(|f| {
                f.peer != *peer && f.state == ExecutorState::Running && !is_held(f)
            })
    }

    /// Feeds the held reports of a spot check to the quorum once the
    /// checked executor's answer (or failure) is in.
    async fn release_held(&mut self) {
        let held: Vec<(PeerId, u32)> = self
            .rec
            .executors
            .iter()
            .filter(|e| is_held(e) && !self.spot_check_pending(&e.peer))
            .map(|e| (e.peer, e.attempt))
            .collect();
        for (peer, attempt) in held {
            let Some(report) = self
                .running_slot(&peer, attempt)
                .and_then(|s| s.report.take())
            else {
                continue;
            };
            // Checked when it arrived; the signature is verified again
            // because only the checked value may reach the quorum.
            if let Ok(a) = report.attestation.verify() {
                self.accept_report(peer, report, a.value.result_hash).await;
            }
        }
    }

    /// Feeds a checked report to the quorum and records it.
    async fn accept_report(&mut self, peer: PeerId, report: AttestReport, claimed: ContentId) {
        match self.quorum.attest(&report.attestation) {
            Ok(_) => {
                let now = unix_now_ms();
                let attempt = report.attempt;
                self.rec
                    .log
                    .push(QuorumInput::Attest(report.attestation.clone()));
                if let Some(slot) = self.running_slot(&peer, attempt) {
                    slot.state = ExecutorState::Answered;
                    slot.ended_at_ms = Some(now);
                    slot.result_hash = Some(claimed);
                    slot.report = Some(report);
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
                self.persist().await;
            }
            Err(e) => {
                warn!(%peer, error = %e, "attestation refused");
                self.end_executor(
                    peer,
                    report.attempt,
                    ExecutorState::Crashed,
                    format!("attestation refused: {e}"),
                )
                .await;
            }
        }
    }

    async fn on_failed(&mut self, peer: PeerId, attempt: u32, error: String, ran: bool) {
        // A held report already answers for the executor.
        if self.running_slot(&peer, attempt).is_none_or(|s| is_held(s)) {
            return;
        }
        self.end_executor(peer, attempt, ExecutorState::Crashed, error.clone())
            .await;
        if ran {
            self.job_errors.push(error);
            self.fail_on_repeated_error().await;
        }
    }

    /// The same error from k executors that ran the job is the job's own
    /// doing (a limit it breaks, a module that traps): fail now rather
    /// than burn through every replacement.
    async fn fail_on_repeated_error(&mut self) {
        let k = usize::from(self.quorum.k());
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &self.job_errors {
            *counts.entry(e.as_str()).or_default() += 1;
        }
        let repeated = counts
            .into_iter()
            .find(|(_, c)| *c >= k)
            .map(|(err, _)| err.to_string());
        if let Some(err) = repeated {
            if let Ok(d) = self.quorum.job_deadline_passed() {
                debug!(?d, "ending the quorum after repeated identical failures");
            }
            self.fail(format!("{k} executor(s) ran the job and it failed: {err}"))
                .await;
        }
    }

    /// Ends a running executor as missed or crashed.
    async fn end_executor(
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
        if let Err(e) = r {
            debug!(%peer, error = %e, "quorum refused the end of an executor");
            return;
        }
        self.rec.log.push(match state {
            ExecutorState::Missed => QuorumInput::Missed(peer),
            _ => QuorumInput::Crashed(peer),
        });
        if let Some(slot) = self.running_slot(&peer, attempt) {
            slot.state = state;
            slot.ended_at_ms = Some(unix_now_ms());
            slot.error = Some(error.clone());
        }
        self.event(state.as_str(), Some(peer), error);
        if self.rec.plan == Some(AdaptivePlan::Solo) {
            self.fall_back_to_full();
        }
        self.persist().await;
    }

    /// Picks the adaptive plan for a job whose first executor is `first`,
    /// with a fresh secret seed: the executor must not be able to tell a
    /// spot check from a solo run.
    fn choose_plan(&mut self, first: PeerId) {
        let r = self.spec.replication;
        let policy = &self.ctx.cfg.adaptive;
        let (plan, streak, needed) = {
            let book = lock(&self.ctx.reputation);
            (
                policy.plan(&book, &first, r.n, r.k, rand::random()),
                book.clean_streak(&first),
                policy.required_streak(&book, &first),
            )
        };
        let (kind, detail) = match plan.kind {
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

    /// The solo executor failed to answer: the job needs the full k-of-n.
    fn fall_back_to_full(&mut self) {
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

    /// Records `plan` and rebuilds the quorum for its replication.
    fn set_plan(&mut self, plan: AdaptivePlan) {
        self.rec.plan = Some(plan);
        self.ctx
            .metrics
            .plans
            .with_label_values(&[plan.as_str()])
            .inc();
        match rebuild_quorum(&self.rec, &self.spec) {
            Ok(q) => self.quorum = q,
            // Unreachable with a validated spec; the old quorum stays.
            Err(e) => warn!(error = %e, "quorum for the adaptive plan refused"),
        }
    }

    async fn on_timers(&mut self) {
        let now = unix_now_ms();
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
            )
            .await;
        }
        if now >= self.deadline_ms && !self.rec.state.is_final() {
            if let Ok(d) = self.quorum.job_deadline_passed() {
                if d.is_final() {
                    self.finish(d).await;
                }
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let now_ms = unix_now_ms();
        let now = Instant::now();
        let at = |ms: u64| now + Duration::from_millis(ms.saturating_sub(now_ms));
        let mut wake = at(self.deadline_ms);
        for e in &self.rec.executors {
            if e.state == ExecutorState::Running && !is_held(e) {
                wake = wake.min(at(e.deadline_ms));
            }
        }
        if let Some(w) = &self.window {
            wake = wake.min(if now < w.soft { w.soft } else { w.hard });
        }
        if let Some(at) = self.retry_at {
            wake = wake.min(at);
        }
        wake
    }

    /// Records a final decision, keeps the result, signs and gossips the
    /// verdict.
    async fn finish(&mut self, decision: Decision) {
        match decision {
            Decision::Verified { hash, agreeing, .. } => {
                match self.keep_result(hash, &agreeing).await {
                    Ok(result) => {
                        self.rec.result = Some(result);
                        self.set_state(JobState::Verified);
                        let took = unix_now_ms().saturating_sub(self.rec.submitted_at_ms);
                        self.ctx
                            .metrics
                            .verify_seconds
                            .observe(took as f64 / 1000.0);
                        let who: Vec<String> = agreeing.iter().map(short_peer).collect();
                        self.event(
                            "verified",
                            None,
                            format!("result {} signed by {}", hash.short(), who.join(", ")),
                        );
                    }
                    Err(why) => {
                        self.rec.reason = Some(why.clone());
                        self.set_state(JobState::Failed);
                        self.event("failed", None, why);
                    }
                }
            }
            Decision::Failed(f) => {
                let why = self.failure_reason(&f);
                self.rec.reason = Some(why.clone());
                self.set_state(JobState::Failed);
                self.event("failed", None, why);
            }
            Decision::Cancelled => {
                self.rec.reason = Some("cancelled by the user".into());
                self.set_state(JobState::Cancelled);
                self.event("cancelled", None, "cancelled by the user".into());
            }
            Decision::Pending | Decision::NeedMore { .. } => return,
        }
        self.release_running();
        self.note_spot_check();
        let Some(v) = self.verdict() else {
            self.persist().await;
            return;
        };
        let signed = self.ctx.key.sign(&v);
        if self.rec.plan == Some(AdaptivePlan::Solo) {
            // One signature, the executor's own: no evidence about it.
            self.rec.verdict = Some(signed);
            self.persist().await;
            return;
        }
        if let Err(e) =
            reputation::apply_own(&self.ctx.reputation, &self.ctx.reputation_writes, &signed)
        {
            debug!(error = %e, "own verdict not applied");
        }
        self.rec.verdict = Some(signed.clone());
        self.persist().await;
        // A k = 1 verdict rests on one signature: other nodes refuse it.
        if v.k < 2 {
            return;
        }
        if let Err(e) = self.ctx.net.publish(TOPIC_VERDICTS, signed.encode()).await {
            debug!(error = %e, "verdict not gossiped");
        }
    }

    /// The decided job's verdict, with the spec and the acceptances of
    /// the executors that took the job on.
    fn verdict(&self) -> Option<Verdict> {
        let acceptances: BTreeMap<PeerId, Signed<Acceptance>> = self
            .rec
            .executors
            .iter()
            .filter_map(|e| Some((e.peer, e.acceptance.clone()?)))
            .collect();
        self.quorum
            .verdict(&self.rec.spec, &acceptances, unix_now_ms())
    }

    /// Says how the checked executor of a decided spot check did.
    fn note_spot_check(&mut self) {
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
    /// (their answers are no longer needed).
    fn release_running(&mut self) {
        let now = unix_now_ms();
        for e in &mut self.rec.executors {
            if e.state == ExecutorState::Running {
                e.state = ExecutorState::Released;
                e.ended_at_ms = Some(now);
            }
        }
        self.rec.finished_at_ms = Some(now);
    }

    /// Ends the job as failed with `why`.
    async fn fail(&mut self, why: String) {
        info!(reason = %why, "job failed");
        self.rec.reason = Some(why.clone());
        self.release_running();
        self.set_state(JobState::Failed);
        self.event("failed", None, why);
        if let Some(v) = self.verdict() {
            self.rec.verdict = Some(self.ctx.key.sign(&v));
        }
        self.persist().await;
    }

    fn failure_reason(&self, f: &Failure) -> String {
        match f {
            Failure::NoConsensus { hashes } => format!(
                "no consensus: no result led the others by {} attestations within {} executors ({})",
                self.quorum.k(),
                self.quorum.cap(),
                tally_text(hashes)
            ),
            Failure::Timeout => {
                let errs: Vec<String> = self
                    .rec
                    .executors
                    .iter()
                    .filter_map(|e| {
                        e.error
                            .as_ref()
                            .map(|err| format!("{}: {err}", short_peer(&e.peer)))
                    })
                    .collect();
                if unix_now_ms() >= self.deadline_ms {
                    format!(
                        "deadline passed before {} executors agreed",
                        self.quorum.k()
                    )
                } else if errs.is_empty() {
                    format!("too few executors answered to reach {}", self.quorum.k())
                } else {
                    format!(
                        "too few executors answered to reach {}: {}",
                        self.quorum.k(),
                        errs.join("; ")
                    )
                }
            }
        }
    }

    /// Gets the bundle of `hash` from an agreeing executor and keeps its
    /// parts as blobs of this node.
    async fn keep_result(
        &self,
        hash: ContentId,
        agreeing: &[PeerId],
    ) -> Result<StoredResult, String> {
        let mut errors = Vec::new();
        for peer in agreeing {
            let Some(report) = self
                .rec
                .executors
                .iter()
                .find(|e| e.peer == *peer && e.result_hash == Some(hash))
                .and_then(|e| e.report.as_ref())
            else {
                continue;
            };
            match self.bundle_of(*peer, &report.bundle).await {
                Ok(b) if b.result_hash() == hash => {
                    return self.store_result(hash, b, agreeing.to_vec()).await;
                }
                Ok(_) => errors.push(format!("{}: bundle does not match", short_peer(peer))),
                Err(e) => errors.push(format!("{}: {e}", short_peer(peer))),
            }
        }
        Err(format!(
            "{} executors agreed on {}, but none delivered the result: {}",
            agreeing.len(),
            hash.short(),
            errors.join("; ")
        ))
    }

    async fn bundle_of(&self, peer: PeerId, bundle: &BundleRef) -> Result<ResultBundle, String> {
        match bundle {
            BundleRef::Inline(b) => Ok(b.clone()),
            BundleRef::Blob { id, size } => {
                if *size > MAX_BUNDLE_BYTES {
                    return Err(format!("bundle of {size} bytes is too large"));
                }
                blobs::fetch(
                    &self.ctx.blobs,
                    &self.ctx.net,
                    *id,
                    &[peer],
                    MAX_BUNDLE_BYTES,
                    BUNDLE_FETCH,
                )
                .await
                .map_err(|e| e.to_string())?;
                let store = self.ctx.blobs.clone();
                let id = *id;
                let bytes = tokio::task::spawn_blocking(move || store.get(&id))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                codec::decode::<ResultBundle>(
                    &bytes,
                    usize::try_from(MAX_BUNDLE_BYTES).unwrap_or(usize::MAX),
                )
                .map_err(|e| format!("bundle does not decode: {e}"))
            }
        }
    }

    async fn store_result(
        &self,
        hash: ContentId,
        bundle: ResultBundle,
        agreeing: Vec<PeerId>,
    ) -> Result<StoredResult, String> {
        let store = self.ctx.blobs.clone();
        tokio::task::spawn_blocking(move || {
            let put = |bytes: &[u8]| -> Result<StoredBlob, String> {
                let id = store.put(bytes).map_err(|e| e.to_string())?;
                Ok(StoredBlob {
                    id,
                    size: bytes.len() as u64,
                })
            };
            let mut outputs = BTreeMap::new();
            for (name, data) in &bundle.outputs {
                outputs.insert(name.clone(), put(data)?);
            }
            Ok(StoredResult {
                result_hash: hash,
                exit_code: bundle.exit_code,
                stdout: put(&bundle.stdout)?,
                stderr: put(&bundle.stderr)?,
                outputs,
                agreeing,
            })
        })
        .await
        .map_err(|e| e.to_string())?
    }

    fn set_state(&mut self, state: JobState) {
        self.ctx.metrics.transition(Some(self.rec.state), state);
        self.rec.state = state;
    }

    fn event(&mut self, kind: &str, peer: Option<PeerId>, detail: String) {
        let ev = JobEvent {
            at_ms: unix_now_ms(),
            kind: kind.into(),
            peer_id: peer.map(|p| p.to_base58()),
            state: self.rec.state,
            detail,
        };
        debug!(kind, peer = ?peer, detail = %ev.detail, "job event");
        self.rec.push_event(ev.clone());
        if ev.state.is_final() {
            // Announced once the record is on disk, so whoever reacts to
            // it (fetching the result) finds the record final.
            self.final_event = Some(ev);
        } else {
            // Nobody may be listening.
            let _ = self.events.send(ev);
        }
    }

    /// Flushes the record; a store failure is logged, and the job goes on
    /// (a restart would then resume from the last good write).
    async fn persist(&mut self) {
        if let Err(e) = self.ctx.db.put_job(&self.rec).await {
            warn!(error = %e, "cannot persist the job record");
        }
        if let Some(ev) = self.final_event.take() {
            let _ = self.events.send(ev);
        }
    }
}

/// The first 12 characters of a PeerId's base58 form, for messages.
pub fn short_peer(p: &PeerId) -> String {
    let s = p.to_base58();
    let skip = s.len().saturating_sub(12);
    s[skip..].to_string()
}
