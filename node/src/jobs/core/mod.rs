//! One submitted job's life as a pure state machine:
//! `(state, input, now) -> actions`.
//!
//! [`JobCore`] owns the job's record and its [`Quorum`]. Each input (a
//! bid, a report, a failure, a timer, a cancel) changes them and returns
//! the [`Action`]s the async shell ([`super::submitter`]) performs: offer,
//! assign, ping, stop an executor, fetch the agreed result, sign the
//! verdict, persist, emit events. No I/O, no clock (the caller passes
//! `now`), no randomness; what the core must ask of the node (who is
//! online, selection by reputation, the adaptive plan) it asks through
//! [`World`]. So every rule here is unit- and property-tested (see
//! `tests.rs`).
//!
//! Bids are collected for the bid window (or until every capable node
//! known has bid), at most the longest window; executors are chosen by the
//! verifier's weighted selection among the bidders; the quorum says when
//! to re-dispatch (misses, crashes) or escalate (disagreement).
//!
//! An adaptive job (`--replication adaptive`) first picks one executor and
//! asks [`World::plan`]: a trusted executor runs it alone (1-of-1) or, on
//! a spot check, with the full k-of-n; anyone else gets the full k-of-n.
//! In a spot check the other executors' reports are held until the checked
//! executor has answered or failed, so the quorum cannot decide without
//! its answer. A solo verdict rests on one signature and is neither
//! applied nor gossiped; a solo executor that fails to answer turns the
//! job into a full k-of-n one.
//!
//! An executor that went offline while assigned is replaced, but its
//! answer still counts if it comes back (a restarted executor resumes its
//! assignments); while nobody else can take its place, the job waits for
//! it until its deadline instead of failing.
//!
//! File length: about 800 lines, over the usual 700, because the job's
//! rules read best in one place; texts are in [`failure`], tests apart.

pub mod failure;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use agora_protocol::limits::MAX_ATTESTATIONS;
use agora_protocol::rpc::{AttestReport, BundleRef};
use agora_protocol::{
    Acceptance, Attestation, Bid, Checked, ContentId, FailKind, JobSpec, PeerId, SignError, Signed,
    Verdict,
};
use agora_verifier::quorum::{Decision, Failure, MoreReason, Quorum};
use agora_verifier::select::Candidate;
use agora_verifier::PlanKind;

use self::failure::{tally_text, JobFailure};
use super::checks::{explain_no_capable, unmet, Capacity};
use super::record::{ExecutorState, JobRecordDb, QuorumInput, StoredExecutor, StoredResult};
use super::state::{AdaptivePlan, JobEvent, JobState, ReplicationMode};

/// Offers made per job at most (the first, plus re-offers for
/// re-dispatch and escalation).
pub const MAX_OFFERS: u32 = 8;
/// Time an executor gets beyond the job's own timeout: fetching blobs,
/// queueing, reporting.
pub const ASSIGN_GRACE_MS: u64 = 30_000;
/// First pause before offering again to a network whose capable nodes
/// are all busy; it doubles up to [`BUSY_RETRY_MAX_MS`].
const BUSY_RETRY_MIN_MS: u64 = 250;
/// Longest such pause.
const BUSY_RETRY_MAX_MS: u64 = 5_000;

/// The node's settings the core needs.
#[derive(Debug, Clone, Copy)]
pub struct CoreConfig {
    /// This node.
    pub me: PeerId,
    /// Assign once this passed after an offer and there are enough bids.
    pub bid_window_ms: u64,
    /// Assign (or give up) this long after an offer, whatever came.
    pub bid_window_max_ms: u64,
}

/// What the adaptive policy chose for a job's first executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanChoice {
    /// Solo, spot check or full.
    pub kind: PlanKind,
    /// The executor's clean jobs in a row here.
    pub streak: u64,
    /// The clean jobs in a row it needs to run alone.
    pub needed: u64,
}

/// What the core asks of the node: read-only views of the network and
/// reputation. The daemon answers from its peer book and reputation
/// book; tests answer from a table.
pub trait World {
    /// Online nodes other than this one with what they offer, and how
    /// many other nodes this node knows at all.
    fn online(&self) -> (Vec<(PeerId, Capacity)>, usize);
    /// Picks up to `want` of `candidates`, never one in `used`.
    fn select(
        &self,
        candidates: &[Candidate],
        want: usize,
        used: &BTreeSet<PeerId>,
        seed: u64,
    ) -> Vec<PeerId>;
    /// The adaptive plan for a job of `n`/`k` whose first executor is
    /// `first` (its randomness is the world's, so an executor cannot
    /// predict a spot check).
    fn plan(&self, first: &PeerId, n: u8, k: u8) -> PlanChoice;
    /// Whether this node itself can run `spec` (`--allow-local`).
    fn runs_here(&self, spec: &JobSpec) -> bool;
}

/// An executor's report whose attestation signature was checked once, on
/// arrival; nothing downstream checks it again.
#[derive(Debug, Clone)]
pub struct CheckedReport {
    /// The executor's signed claim of the result hash, checked.
    pub attestation: Checked<Attestation>,
    /// The assignment attempt it answers.
    pub attempt: u32,
    /// The bundle whose `result_hash()` is the attested hash.
    pub bundle: BundleRef,
}

impl CheckedReport {
    /// Checks the attestation of a report from the wire.
    pub fn check(report: AttestReport) -> Result<Self, SignError> {
        Ok(Self {
            attestation: report.attestation.check()?,
            attempt: report.attempt,
            bundle: report.bundle,
        })
    }

    /// The report as the wire and the record carry it.
    pub fn to_report(&self) -> AttestReport {
        AttestReport {
            attestation: self.attestation.signed().clone(),
            attempt: self.attempt,
            bundle: self.bundle.clone(),
        }
    }
}

/// What reaches the core.
#[derive(Debug, Clone)]
pub enum Input {
    /// The job starts (new, or resumed after a restart).
    Start,
    /// A checked bid.
    Bid {
        /// The bidder.
        peer: PeerId,
        /// Its bid.
        bid: Bid,
        /// The subnet its connection came from.
        subnet: Option<u64>,
    },
    /// An executor's report, its signature checked on arrival.
    Report {
        /// The executor (the request's sender).
        peer: PeerId,
        /// Its report (boxed: an inline bundle makes it large).
        report: Box<CheckedReport>,
    },
    /// An executor could not run the job, or refused the assignment.
    Failed {
        /// The executor.
        peer: PeerId,
        /// The attempt it answers.
        attempt: u32,
        /// Why.
        error: String,
        /// Which limit it broke, if one.
        kind: FailKind,
        /// Whether it ran the job and the job itself failed, as opposed
        /// to a refusal.
        ran: bool,
    },
    /// An executor could not be reached while assigned.
    Lost {
        /// The executor.
        peer: PeerId,
        /// The attempt.
        attempt: u32,
        /// Why ("went offline while assigned", "unreachable: ...").
        error: String,
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
    /// The user cancels the job.
    Cancel,
    /// Time passed (a timer the core asked for with [`JobCore::next_wake_ms`]).
    Tick,
    /// The outcome of the last [`Action::Offer`].
    OfferSent(Result<(), String>),
    /// The outcome of [`Action::FetchResult`]: the kept result, or
    /// "PEER: error" for each source tried.
    ResultKept(Result<StoredResult, Vec<String>>),
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Sign and gossip an offer of the job, then answer
    /// [`Input::OfferSent`].
    Offer {
        /// Bids are due by then.
        bid_deadline_ms: u64,
    },
    /// Sign and send an assignment; answer [`Input::Accepted`], or
    /// [`Input::Failed`] / [`Input::Lost`] when refused or unreachable.
    Assign {
        /// The executor.
        peer: PeerId,
        /// The attempt.
        attempt: u32,
        /// Its answer is due by then.
        deadline_ms: u64,
    },
    /// Check that an executor whose connection closed is still there;
    /// answer [`Input::Lost`] if not.
    Ping {
        /// The executor.
        peer: PeerId,
        /// Its attempt.
        attempt: u32,
    },
    /// Tell an executor its answer is no longer needed, so it stops its
    /// sandbox.
    Stop {
        /// The executor.
        peer: PeerId,
        /// Its attempt.
        attempt: u32,
    },
    /// Fetch the agreed bundle from one of `sources` (in order), keep it,
    /// and answer [`Input::ResultKept`].
    FetchResult {
        /// The agreed hash.
        hash: ContentId,
        /// Agreeing executors and where their bundles are.
        sources: Vec<(PeerId, BundleRef)>,
        /// Every agreeing executor.
        agreeing: Vec<PeerId>,
    },
    /// Sign the verdict and keep it ([`JobCore::keep_verdict`]); apply it
    /// to this node's reputation book when `apply`.
    SignVerdict {
        /// The verdict.
        verdict: Verdict,
        /// Whether it is evidence to apply here.
        apply: bool,
    },
    /// Gossip the kept verdict.
    GossipVerdict,
    /// Write the record.
    Persist,
    /// Tell listeners.
    Event(JobEvent),
    /// The job's state changed (for metrics).
    Transition {
        /// From (`None` when the job starts).
        from: Option<JobState>,
        /// To.
        to: JobState,
    },
    /// Adaptive replication chose a plan (for metrics).
    PlanChosen(AdaptivePlan),
    /// The job verified this long after submission (for metrics).
    VerifiedAfter {
        /// Milliseconds.
        ms: u64,
    },
}

/// Collecting bids after an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    /// Assign once this passed and there are enough bids.
    soft_ms: u64,
    /// Assign (or give up) at this point whatever came.
    hard_ms: u64,
    /// Capable nodes known: once that many bid, waiting is pointless.
    expected: usize,
    /// Bids received in this window.
    bids: usize,
}

/// The quorum's cap for `n`: room to replace every executor once more.
pub fn cap_for(n: u8) -> u8 {
    let cap = (usize::from(n) * 2).max(usize::from(n) + 2);
    u8::try_from(cap.min(MAX_ATTESTATIONS)).unwrap_or(u8::MAX)
}

/// The job's overall deadline: three rounds of runs, plus bidding.
pub fn job_deadline_ms(rec: &JobRecordDb, spec: &JobSpec) -> u64 {
    let round = spec.resources.timeout_ms.saturating_add(ASSIGN_GRACE_MS);
    rec.submitted_at_ms
        .saturating_add(round.saturating_mul(3))
        .saturating_add(10_000)
}

/// The spec of a stored record (signed by this node; checked again since
/// the store is a file).
pub fn spec_of(rec: &JobRecordDb) -> Result<JobSpec, String> {
    rec.spec
        .verify()
        .map(|v| v.value)
        .map_err(|e| format!("stored spec: {e}"))
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
        // the log still counts. (Attestations come from the file, so the
        // quorum checks their signatures again.)
        let _ = match input {
            QuorumInput::Assign(p) => q.assign(*p),
            QuorumInput::Attest(a) => q.attest(a),
            QuorumInput::Missed(p) => q.missed(*p),
            QuorumInput::Crashed(p) => q.crashed(*p),
            QuorumInput::Reinstate(p) => q.reinstate(*p),
        };
    }
    Ok(q)
}

/// The first 12 characters of a PeerId's base58 form, for messages.
pub fn short_peer(p: &PeerId) -> String {
    let s = p.to_base58();
    let skip = s.len().saturating_sub(12);
    s[skip..].to_string()
}

/// Whether `e` answered a spot check and waits for the checked executor.
fn is_held(e: &StoredExecutor) -> bool {
    e.state == ExecutorState::Running && e.report.is_some()
}

/// The state of one submitted job.
#[derive(Debug, Clone)]
pub struct JobCore {
    cfg: CoreConfig,
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
    /// Reports held for a spot check, checked when they arrived.
    held: BTreeMap<(PeerId, u32), Checked<Attestation>>,
    /// The final event, sent once the record is persisted.
    final_event: Option<JobEvent>,
    /// When to offer again to a busy network.
    retry_at_ms: Option<u64>,
    /// Offers made to a busy network so far.
    busy_retries: u32,
    /// The whole job must be decided by then.
    deadline_ms: u64,
    /// A verified decision waiting for its result to be fetched.
    fetching: Option<(ContentId, Vec<PeerId>)>,
    now_ms: u64,
    out: Vec<Action>,
}

impl JobCore {
    /// The core of `rec` (new, or read back after a restart: its quorum is
    /// rebuilt from the record's log).
    pub fn new(cfg: CoreConfig, rec: JobRecordDb) -> Result<Self, JobFailure> {
        let spec = spec_of(&rec).map_err(JobFailure::Internal)?;
        let quorum = rebuild_quorum(&rec, &spec).map_err(JobFailure::Internal)?;
        let deadline_ms = job_deadline_ms(&rec, &spec);
        Ok(Self {
            cfg,
            rec,
            spec,
            quorum,
            pool: BTreeMap::new(),
            window: None,
            last_window_bids: None,
            publish_error: None,
            job_errors: Vec::new(),
            held: BTreeMap::new(),
            final_event: None,
            retry_at_ms: None,
            busy_retries: 0,
            deadline_ms,
            fetching: None,
            now_ms: 0,
            out: Vec::new(),
        })
    }

    /// The job id.
    pub fn id(&self) -> ContentId {
        self.rec.id()
    }

    /// The record as it stands.
    pub fn record(&self) -> &JobRecordDb {
        &self.rec
    }

    /// The quorum as it stands.
    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    /// Whether the job is decided (nothing more will happen to it).
    pub fn is_final(&self) -> bool {
        self.rec.state.is_final()
    }

    /// When the core next needs a [`Input::Tick`] (ms since the epoch).
    pub fn next_wake_ms(&self) -> u64 {
        let mut wake = self.deadline_ms;
        for e in &self.rec.executors {
            if e.state == ExecutorState::Running && !is_held(e) {
                wake = wake.min(e.deadline_ms);
            }
        }
        if let Some(w) = &self.window {
            wake = wake.min(if self.now_ms < w.soft_ms {
                w.soft_ms
            } else {
                w.hard_ms
            });
        }
        if let Some(at) = self.retry_at_ms {
            wake = wake.min(at);
        }
        wake
    }

    /// Keeps the verdict the shell signed for [`Action::SignVerdict`]; the
    /// next [`Action::Persist`] writes it.
    pub fn keep_verdict(&mut self, signed: Signed<Verdict>) {
        self.rec.verdict = Some(signed);
    }

    /// Feeds one input at `now_ms` and returns what to do. Nothing happens
    /// to a decided job.
    pub fn step(&mut self, input: Input, now_ms: u64, world: &dyn World) -> Vec<Action> {
        self.now_ms = now_ms.max(self.now_ms);
        if self.is_final() {
            return Vec::new();
        }
        if let Some((hash, agreeing)) = self.fetching.take() {
            match input {
                Input::ResultKept(r) => self.result_kept(hash, agreeing, r),
                // The shell fetches before it reads another input.
                _ => self.fetching = Some((hash, agreeing)),
            }
            return std::mem::take(&mut self.out);
        }
        match input {
            Input::Start => self.on_start(world),
            Input::Bid { peer, bid, subnet } => self.on_bid(peer, &bid, subnet),
            Input::Report { peer, report } => self.on_report(peer, *report),
            Input::Failed {
                peer,
                attempt,
                error,
                kind,
                ran,
            } => self.on_failed(peer, attempt, error, kind, ran),
            Input::Lost {
                peer,
                attempt,
                error,
            } => self.on_lost(peer, attempt, error),
            Input::Accepted {
                peer,
                attempt,
                acceptance,
            } => self.on_accepted(peer, attempt, acceptance),
            Input::PeerGone(peer) => self.on_peer_gone(peer),
            Input::Cancel => {
                if let Ok(d) = self.quorum.cancel() {
                    self.finish(d);
                }
            }
            Input::Tick => self.on_tick(),
            Input::OfferSent(r) => self.on_offer_sent(r),
            Input::ResultKept(_) => {}
        }
        self.advance(world);
        std::mem::take(&mut self.out)
    }

    /// Acts on the quorum's decision until nothing changes: finishes a
    /// decided job, fills the executors a job needs.
    fn advance(&mut self, world: &dyn World) {
        loop {
            if self.is_final() || self.fetching.is_some() {
                return;
            }
            self.release_held();
            let decision = self.quorum.decision();
            if decision.is_final() {
                self.finish(decision);
                return;
            }
            let Decision::NeedMore { how_many, .. } = decision else {
                return;
            };
            if let Err(why) = self.fill(usize::from(how_many), world) {
                self.fail(&why);
                return;
            }
            if self.quorum.decision() == decision {
                return;
            }
        }
    }

    fn on_start(&mut self, world: &dyn World) {
        if self.rec.state == JobState::Pending && !self.rec.allow_local {
            if let Some(why) = self.no_capable_node(world) {
                self.fail(&why);
            }
        }
    }

    /// Fails fast when the nodes known say nobody can run the job, or too
    /// few for k of them to agree. With no node known yet, the offer goes
    /// out anyway: adverts may be late.
    fn no_capable_node(&self, world: &dyn World) -> Option<JobFailure> {
        let (online, known) = world.online();
        if known == 0 {
            return None;
        }
        let caps: Vec<Capacity> = online.iter().map(|(_, c)| c.clone()).collect();
        if let Some(why) = explain_no_capable(&self.spec, &caps, known) {
            return Some(JobFailure::NoCapable(why));
        }
        let capable = self.capable_count(world);
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
    fn capable_count(&self, world: &dyn World) -> usize {
        let used = self.used();
        world
            .online()
            .0
            .iter()
            .filter(|(p, _)| *p != self.cfg.me && !used.contains(p))
            .filter(|(_, c)| unmet(&self.spec, c).is_none())
            .count()
    }

    fn used(&self) -> BTreeSet<PeerId> {
        self.rec.executors.iter().map(|e| e.peer).collect()
    }

    fn unused_bidders(&self) -> usize {
        let used = self.used();
        self.pool.keys().filter(|p| !used.contains(p)).count()
    }

    /// An executor that went offline while assigned and may still answer
    /// before its deadline (a restarted executor resumes its work).
    fn lost_may_return(&self) -> Option<PeerId> {
        self.rec
            .executors
            .iter()
            .find(|e| e.lost && e.state == ExecutorState::Crashed && e.deadline_ms > self.now_ms)
            .map(|e| e.peer)
    }

    /// Assigns up to `how_many` executors, offering the job (again) when
    /// there are too few bidders. `Err` ends the job.
    fn fill(&mut self, how_many: usize, world: &dyn World) -> Result<(), JobFailure> {
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
        let picked = {
            let cands: Vec<Candidate> = self.pool.values().copied().collect();
            let seed = u64::from_le_bytes(self.id().as_bytes()[..8].try_into().unwrap_or([0; 8]))
                ^ self.rec.executors.len() as u64;
            world.select(&cands, want, &self.used(), seed)
        };
        for peer in &picked {
            self.pool.remove(peer);
            if choosing_plan {
                self.choose_plan(*peer, world);
            }
            self.assign(*peer);
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
            self.assign(me);
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

    fn no_bids_reason(&self, world: &dyn World) -> JobFailure {
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
            capable: self.capable_count(world),
            undelivered: self.publish_error.clone(),
        }
    }

    /// Asks the shell to gossip an offer, and opens a bid window.
    fn offer(&mut self, world: &dyn World) {
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

    fn on_offer_sent(&mut self, r: Result<(), String>) {
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
    fn assign(&mut self, peer: PeerId) {
        let attempt = u32::try_from(self.rec.executors.len()).unwrap_or(u32::MAX);
        let now = self.now_ms;
        let deadline_ms = now
            .saturating_add(self.spec.resources.timeout_ms)
            .saturating_add(ASSIGN_GRACE_MS);
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

    /// Keeps an executor's acceptance if it is what was assigned: this
    /// job, from this node, that attempt and deadline, signed by it. It is
    /// written with the record's next change (it only matters for the
    /// verdict). The answer may already be in: reports travel separately.
    fn on_accepted(&mut self, peer: PeerId, attempt: u32, acceptance: Signed<Acceptance>) {
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
    fn on_peer_gone(&mut self, peer: PeerId) {
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

    fn on_bid(&mut self, peer: PeerId, bid: &Bid, subnet: Option<u64>) {
        if peer == self.cfg.me || self.pool.contains_key(&peer) || self.used().contains(&peer) {
            return;
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

    /// The slot of `peer` for `attempt`, if it is still running.
    fn running_slot(&mut self, peer: &PeerId, attempt: u32) -> Option<&mut StoredExecutor> {
        self.rec
            .executors
            .iter_mut()
            .find(|e| e.peer == *peer && e.attempt == attempt && e.state == ExecutorState::Running)
    }

    /// Takes back an executor that went offline and answers after all.
    fn reinstate_lost(&mut self, peer: &PeerId, attempt: u32) -> bool {
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

    fn on_report(&mut self, peer: PeerId, report: CheckedReport) {
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
    fn spot_check_pending(&self, peer: &PeerId) -> bool {
        self.rec.plan == Some(AdaptivePlan::SpotCheck)
            && self.rec.executors.first().is_some_and(|f| {
                f.peer != *peer && f.state == ExecutorState::Running && !is_held(f)
            })
    }

    /// Feeds the held reports of a spot check to the quorum once the
    /// checked executor's answer (or failure) is in.
    fn release_held(&mut self) {
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
    fn accept_report(&mut self, peer: PeerId, report: &CheckedReport) {
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

    fn on_failed(&mut self, peer: PeerId, attempt: u32, error: String, kind: FailKind, ran: bool) {
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

    fn on_lost(&mut self, peer: PeerId, attempt: u32, error: String) {
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
    fn fail_on_repeated_error(&mut self) {
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
    fn end_executor(&mut self, peer: PeerId, attempt: u32, state: ExecutorState, error: String) {
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

    /// Picks the adaptive plan for a job whose first executor is `first`.
    fn choose_plan(&mut self, first: PeerId, world: &dyn World) {
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
        self.out.push(Action::PlanChosen(plan));
        // Unreachable with a validated spec; the old quorum stays.
        if let Ok(q) = rebuild_quorum(&self.rec, &self.spec) {
            self.quorum = q;
        }
    }

    fn on_tick(&mut self) {
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

    /// Acts on a final decision: a verified one first has its result
    /// fetched; the others end the job now.
    fn finish(&mut self, decision: Decision) {
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

    fn result_kept(
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
    fn end(&mut self, state: JobState, detail: String, kind: &str) {
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
    fn sign_verdict(&mut self) {
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
    fn verdict(&self) -> Option<Verdict> {
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
    /// (their answers are no longer needed) and told to stop.
    fn release_running(&mut self) {
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
    fn fail(&mut self, why: &JobFailure) {
        self.end(JobState::Failed, why.to_string(), "failed");
        if let Some(verdict) = self.verdict() {
            self.out.push(Action::SignVerdict {
                verdict,
                apply: false,
            });
        }
        self.persist();
    }

    fn failure_reason(&self, f: &Failure) -> JobFailure {
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

    fn set_state(&mut self, state: JobState) {
        self.out.push(Action::Transition {
            from: Some(self.rec.state),
            to: state,
        });
        self.rec.state = state;
    }

    fn event(&mut self, kind: &str, peer: Option<PeerId>, detail: String) {
        let ev = JobEvent {
            at_ms: self.now_ms,
            kind: kind.into(),
            peer_id: peer.map(|p| p.to_base58()),
            state: self.rec.state,
            detail,
        };
        self.rec.push_event(ev.clone());
        if ev.state.is_final() {
            // Announced once the record is on disk, so whoever reacts to
            // it (fetching the result) finds the record final.
            self.final_event = Some(ev);
        } else {
            self.out.push(Action::Event(ev));
        }
    }

    fn persist(&mut self) {
        self.out.push(Action::Persist);
        if let Some(ev) = self.final_event.take() {
            self.out.push(Action::Event(ev));
        }
    }
}
