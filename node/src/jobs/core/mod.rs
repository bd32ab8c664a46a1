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
//! The rules are split by phase: `offer.rs` (fail-fast checks, bidding,
//! assignment), `answer.rs` (reports, failures, lost executors,
//! deadlines), `decide.rs` (results, verdicts, releasing executors); the
//! failure texts are in [`failure`].

mod answer;
mod decide;
pub mod failure;
mod offer;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use agora_protocol::limits::{IMAGE_FETCH_MS, MAX_ATTESTATIONS};
use agora_protocol::rpc::{AttestReport, BundleRef};
use agora_protocol::{
    Acceptance, Attestation, Bid, Checked, ContentId, FailKind, JobSpec, PeerId, SignError, Signed,
    Verdict,
};
use agora_verifier::quorum::{Decision, Failure, MoreReason, Quorum};
use agora_verifier::select::Candidate;
use agora_verifier::PlanKind;

use self::failure::{tally_text, JobFailure};
use super::checks::{explain_no_capable, meets_requirements, unmet, Capacity};
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
    /// An executor reports how fetching the job's image goes.
    ImageProgress {
        /// The executor.
        peer: PeerId,
        /// The attempt it concerns.
        attempt: u32,
        /// How far it got.
        progress: crate::images::Progress,
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

/// Time an executor gets for one run: the job's timeout, the grace, and
/// the time to fetch the image when the job names one to fetch and the
/// executor `may_fetch` it (a fetch does not use up the job's own
/// timeout).
pub fn run_allowance_ms(spec: &JobSpec, may_fetch: bool) -> u64 {
    let image = if may_fetch && spec.executor.image_manifest().is_some() {
        IMAGE_FETCH_MS
    } else {
        0
    };
    spec.resources
        .timeout_ms
        .saturating_add(ASSIGN_GRACE_MS)
        .saturating_add(image)
}

/// The job's overall deadline: three rounds of runs, plus bidding.
pub fn job_deadline_ms(rec: &JobRecordDb, spec: &JobSpec) -> u64 {
    let round = run_allowance_ms(spec, true);
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
            Input::Bid { peer, bid, subnet } => self.on_bid(peer, &bid, subnet, world),
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
            Input::ImageProgress {
                peer,
                attempt,
                progress,
            } => self.on_image_progress(peer, attempt, progress),
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

    /// An event listeners see but the record does not keep (progress that
    /// would crowd the bounded event log).
    fn live_event(&mut self, kind: &str, peer: Option<PeerId>, detail: String) {
        self.out.push(Action::Event(JobEvent {
            at_ms: self.now_ms,
            kind: kind.into(),
            peer_id: peer.map(|p| p.to_base58()),
            state: self.rec.state,
            detail,
        }));
    }

    fn persist(&mut self) {
        self.out.push(Action::Persist);
        if let Some(ev) = self.final_event.take() {
            self.out.push(Action::Event(ev));
        }
    }
}
