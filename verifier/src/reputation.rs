//! Reputation: this node's opinion of every peer, built only from
//! verifiable evidence — its own quorum decisions, and gossiped verdicts
//! whose embedded signatures check out and whose publisher has earned a
//! say.
//!
//! **Evidence.** A verdict must embed the submitter's signed spec (the job
//! exists and is the signer's), the executors' signed attestations (who
//! answered what) and, for every executor it charges with a miss, that
//! executor's own signed [`Acceptance`] of the job from this submitter. A
//! gossiped miss counts only once the accepted deadline had passed when
//! the verdict was decided. Verdicts with `k < 2` carry no agreement: one
//! signature is nobody's cross-check (`check_evidence`).
//!
//! **Standing ([`Standing`]).** Trust is anchored in this node's own
//! experience, as EigenTrust anchors in pre-trusted peers: a peer is
//! *established* once it agreed with `establish_after` results of this
//! node's own jobs, or when the operator pinned it
//! ([`ReputationBook::set_trusted`]). Only established publishers' verdicts
//! weigh anything; a newcomer's change nothing. Standing is decided by this
//! node's own evidence first: gossip can neither exclude a peer nor take
//! away the standing it earned here, nor lift one this node excluded.
//!
//! **Weighting (fixed point).** A local verdict applies each change at full
//! weight. A gossiped verdict applies it scaled by our trust in its
//! established publisher, in thousandths:
//! `weight_permille = min(1000, publisher_score * 1000 / start)`. A change
//! of `delta` points becomes `delta * weight_permille / 1000`, rounded
//! toward zero, and then at most what is left of the publisher's budget for
//! that peer: one publisher moves one peer's score by at most
//! `gossip_budget` points per `gossip_window_ms` (by default exactly the
//! distance from the start score to exclusion, so no single publisher can
//! exclude a fresh peer within a window). All publishers together move one
//! peer by at most `gossip_peer_budget` points per window, so a handful of
//! established framers is no worse than one. A publisher's verdict never
//! changes its own record.
//!
//! **Sybils.** Gossiped agreement and disagreement count only when at least
//! `min_known_supporters` of the executors behind the accepted hash are
//! already known here (pinned, or agreed with one of this node's own
//! results, and not excluded here), and gossiped agreement is credited
//! only to known executors, so fresh identities endorsing one another gain
//! nothing and cannot become known through each other.
//!
//! **Probation.** A peer below the exclusion threshold whose own score
//! (this node's evidence alone) is not, and that has not established itself
//! here, is excluded on others' word only: it stays selectable as a
//! newcomer, so this node's own jobs re-test it. An established peer that
//! gossip pushes below the threshold stays established for selection (at
//! the threshold's weight) but never runs alone and its verdicts weigh
//! nothing until its score recovers.
//!
//! **Invariant:** [`ReputationBook::apply_verdict`] checks all the evidence
//! before touching anything; when it returns an error the book is exactly
//! as it was.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use agora_protocol::limits::{Bounded, LimitError, MAX_REPLICATION};
use agora_protocol::{
    Acceptance, ContentId, PeerId, SignError, Signed, Verdict, VerdictOutcome, Verified,
};
use serde::{Deserialize, Serialize};

use crate::quorum;

/// The numbers of the reputation model. The defaults are the reference
/// design's: start 100, +5 agree, -10 disagree, -20 missed, scores in
/// `[0, 1000]`, excluded below 50; and agora's gossip rules: 3 own
/// agreements to establish a peer, 50 points per publisher and peer per
/// hour and 100 per peer from all publishers together, 2 known
/// supporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReputationConfig {
    /// Score of a peer never seen before.
    pub start: u32,
    /// Added when the peer agreed with the verified result.
    pub agree_bonus: u32,
    /// Taken when the peer attested a result other than the verified one.
    pub disagree_penalty: u32,
    /// Taken when the peer missed its deadline, crashed or went offline.
    pub missed_penalty: u32,
    /// Highest score (lowest is 0).
    pub max_score: u32,
    /// A peer scoring below this is excluded: never selected (unless on
    /// probation), and its gossiped verdicts carry no weight.
    pub exclusion_threshold: u32,
    /// Most peer records kept; bounds memory against floods of fresh
    /// identities in gossiped verdicts.
    pub max_peers: usize,
    /// How many applied verdicts (by job id) are remembered, so a replayed
    /// verdict is not counted twice.
    pub remembered_verdicts: usize,
    /// Agreements with this node's own verified results after which a
    /// peer is established: its gossiped verdicts count.
    pub establish_after: u64,
    /// Most points one publisher's gossip moves one peer's score by within
    /// one window (changes either way add up).
    pub gossip_budget: u32,
    /// Most points all publishers together move one peer's score by
    /// within one window.
    #[serde(default = "default_gossip_peer_budget")]
    pub gossip_peer_budget: u32,
    /// The window of `gossip_budget` and `gossip_peer_budget`, in ms.
    pub gossip_window_ms: u64,
    /// Publisher and peer pairs whose spending is tracked; when full,
    /// gossip changes nothing until windows expire.
    pub max_budget_entries: usize,
    /// Executors behind a gossiped accepted hash that must already be
    /// known here before its agreement or disagreement counts.
    pub min_known_supporters: usize,
    /// How far in the future a gossiped verdict's decision time may lie
    /// (clock skew), in ms.
    pub max_clock_skew_ms: u64,
}

impl Default for ReputationConfig {
    fn default() -> Self {
        Self {
            start: 100,
            agree_bonus: 5,
            disagree_penalty: 10,
            missed_penalty: 20,
            max_score: 1000,
            exclusion_threshold: 50,
            max_peers: 100_000,
            remembered_verdicts: 16_384,
            establish_after: 3,
            gossip_budget: 50,
            gossip_peer_budget: default_gossip_peer_budget(),
            gossip_window_ms: 60 * 60 * 1000,
            max_budget_entries: 65_536,
            min_known_supporters: 2,
            max_clock_skew_ms: 60_000,
        }
    }
}

/// The default of [`ReputationConfig::gossip_peer_budget`].
fn default_gossip_peer_budget() -> u32 {
    100
}

/// What this node knows of one peer. Persisted by the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Current score, within `[0, max_score]`.
    pub score: u32,
    /// Times it agreed with a verified result.
    pub agreed: u64,
    /// Times it attested a result other than the verified one.
    pub disagreed: u64,
    /// Times it missed a deadline or crashed.
    pub missed: u64,
    /// When the record was created (ms since the Unix epoch).
    pub first_seen_ms: u64,
    /// When the record last changed (ms since the Unix epoch).
    pub last_seen_ms: u64,
    /// Agreements in a row from this node's own verdicts since the peer
    /// last disagreed or missed (from any evidence). Adaptive replication
    /// trusts a peer to run jobs alone on the strength of this streak, so
    /// only local evidence extends it: gossip could otherwise pump a
    /// colluder's streak with made-up jobs. Defaults to 0 so records
    /// persisted before it existed still decode.
    #[serde(default)]
    pub clean_streak: u64,
    /// Agreements seen in this node's own jobs: what establishes a peer.
    #[serde(default)]
    pub local_agreed: u64,
    /// The score from this node's own evidence alone (`None`: none yet,
    /// i.e. the start score). A peer excluded while this is not is on
    /// probation.
    #[serde(default)]
    pub own_score: Option<u32>,
}

/// Where a peer stands with this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Not (yet) established: selectable, bounded per job; its verdicts
    /// change nothing.
    Newcomer,
    /// Agreed with enough of this node's own results, or pinned by the
    /// operator, and not excluded by this node's own evidence: its
    /// verdicts count (while its score is above the threshold), and gossip
    /// cannot take this standing away.
    Established,
    /// A newcomer below the exclusion threshold on others' word only:
    /// selectable as a newcomer so this node's own jobs can re-test it.
    Probation,
    /// Below the exclusion threshold on this node's own evidence: never
    /// selected.
    Excluded,
}

impl Standing {
    /// The lower-case name the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Newcomer => "newcomer",
            Standing::Established => "established",
            Standing::Probation => "probation",
            Standing::Excluded => "excluded",
        }
    }
}

/// One piece of evidence about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// Agreed with the verified result.
    Agreed,
    /// Attested another result than the verified one.
    Disagreed,
    /// Missed its deadline, crashed or went offline.
    Missed,
}

/// A score change made by an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreChange {
    /// The peer.
    pub peer: PeerId,
    /// Why.
    pub observation: Observation,
    /// Score before.
    pub before: u32,
    /// Score after.
    pub after: u32,
}

/// What applying a verdict did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictEffect {
    /// Weight the verdict was applied with, in thousandths.
    pub weight_permille: u32,
    /// Every score change, in the verdict's order.
    pub changes: Vec<ScoreChange>,
}

/// Why a verdict was refused. The book is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum VerdictError {
    /// A verdict for this job was already applied.
    #[error("a verdict for job {0} was already applied")]
    AlreadyApplied(ContentId),
    /// The verdict's n and k break the protocol's rules.
    #[error("verdict claims replication {k}-of-{n}, which is invalid")]
    Replication {
        /// Executors.
        n: u8,
        /// Threshold.
        k: u8,
    },
    /// A gossiped verdict with `k < 2` rests on one signature: it is no
    /// evidence for anyone but its submitter.
    #[error("a {k}-of-{n} verdict is no evidence for other nodes")]
    SingleSignature {
        /// Executors.
        n: u8,
        /// Threshold.
        k: u8,
    },
    /// Too many attestations or missed peers.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The embedded spec's signature does not verify.
    #[error("the verdict's spec: {0}")]
    BadSpec(Box<SignError>),
    /// The embedded spec is not the verdict's job.
    #[error("the verdict's spec is job {found}, not {job}")]
    SpecMismatch {
        /// The verdict's job.
        job: ContentId,
        /// The embedded spec's id.
        found: ContentId,
    },
    /// The spec was signed by someone else than the verdict: only a job's
    /// submitter may judge it.
    #[error("the job was submitted by {submitter}, not by the verdict's signer")]
    NotTheSubmitter {
        /// The spec's signer.
        submitter: PeerId,
    },
    /// The verdict's n and k are not the ones its spec asked for.
    #[error("verdict says {k}-of-{n} but the spec asked for {spec_k}-of-{spec_n}")]
    ReplicationMismatch {
        /// Verdict's executors.
        n: u8,
        /// Verdict's threshold.
        k: u8,
        /// The spec's executors.
        spec_n: u8,
        /// The spec's threshold.
        spec_k: u8,
    },
    /// An embedded attestation's signature does not verify.
    #[error("attestation #{index} in the verdict: {source}")]
    BadAttestation {
        /// Position in the verdict.
        index: usize,
        /// The signature failure (boxed: the protocol error is large).
        source: Box<SignError>,
    },
    /// An embedded attestation is for another job.
    #[error("attestation #{index} by {signer} is for job {found}, not the verdict's")]
    WrongJob {
        /// Position in the verdict.
        index: usize,
        /// Its signer.
        signer: PeerId,
        /// The job it names.
        found: ContentId,
    },
    /// An acceptance behind a miss does not verify.
    #[error("acceptance #{index} in the verdict: {source}")]
    BadAcceptance {
        /// Position in `missed`.
        index: usize,
        /// The signature failure.
        source: Box<SignError>,
    },
    /// An acceptance behind a miss is not of this job from this submitter.
    #[error("acceptance #{index} by {signer} is not of this job from the verdict's signer")]
    ForeignAcceptance {
        /// Position in `missed`.
        index: usize,
        /// Its signer.
        signer: PeerId,
    },
    /// Two attestations by the same executor.
    #[error("{0} has more than one attestation in the verdict")]
    DuplicateAttester(PeerId),
    /// The same peer is listed as missed twice.
    #[error("{0} is listed as missed more than once")]
    DuplicateMissed(PeerId),
    /// A peer is listed as missed yet has an attestation.
    #[error("{0} is listed as missed but attested")]
    MissedButAttested(PeerId),
    /// Outcome verified but no accepted hash.
    #[error("verified verdict names no accepted hash")]
    MissingAccepted,
    /// Outcome failed but an accepted hash is named.
    #[error("failed verdict names accepted hash {0}")]
    UnexpectedAccepted(ContentId),
    /// The accepted hash does not lead every other answer by k
    /// attestations (see [`crate::quorum`]).
    #[error("accepted hash {hash} leads the other answers by {have} attestations, {need} needed")]
    NotEnoughSupport {
        /// The accepted hash.
        hash: ContentId,
        /// Its lead (0 when it is not the most attested).
        have: usize,
        /// k.
        need: u8,
    },
    /// Outcome failed although a hash leads by k attestations.
    #[error("verdict says {outcome:?} but {hash} leads by k attestations")]
    QuorumWasReached {
        /// The claimed outcome.
        outcome: VerdictOutcome,
        /// The hash that reached k.
        hash: ContentId,
    },
    /// A gossiped verdict decided later than our clock allows.
    #[error("verdict decided at {decided_at_ms} ms, in the future")]
    FromTheFuture {
        /// Its claimed decision time.
        decided_at_ms: u64,
    },
}

impl VerdictError {
    /// Whether the verdict is provably false or malformed, so whoever sent
    /// it is to blame (rather than a replay or a clock out of step).
    pub fn is_forgery(&self) -> bool {
        !matches!(
            self,
            VerdictError::AlreadyApplied(_) | VerdictError::FromTheFuture { .. }
        )
    }
}

/// Who the checked evidence says did what.
struct Evidence {
    /// The executors behind the accepted hash.
    supporters: Vec<PeerId>,
    /// Agreements and disagreements, in the verdict's order.
    answers: Vec<(PeerId, Observation)>,
    /// Executors charged with a miss.
    missed: Vec<PeerId>,
}

/// Where an update comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// This node's own evidence: full weight, own score and streak.
    Local,
    /// A gossiped verdict by an established publisher.
    Gossip {
        /// The verdict's signer.
        publisher: PeerId,
        /// Trust in it, in thousandths.
        weight_permille: u32,
    },
}

/// Points one publisher moved one peer by in the current window.
#[derive(Debug, Clone, Copy)]
struct Spent {
    /// When the window began (ms since the Unix epoch).
    window_start_ms: u64,
    /// Points moved so far.
    points: u32,
}

/// Per-peer reputation records plus the memory of applied verdicts.
#[derive(Debug, Clone)]
pub struct ReputationBook {
    /// The model's numbers.
    config: ReputationConfig,
    /// Every known peer.
    records: BTreeMap<PeerId, PeerRecord>,
    /// Peers the operator vouches for: established and known whatever the
    /// record says, unless this node's own evidence excludes them.
    trusted: BTreeSet<PeerId>,
    /// Gossip budget spent, by (publisher, peer). Kept in memory only: a
    /// restart gives every publisher a fresh window.
    spent: HashMap<(PeerId, PeerId), Spent>,
    /// Gossip budget spent by all publishers together, by peer.
    spent_on: HashMap<PeerId, Spent>,
    /// Job ids of applied verdicts, oldest first, for bounded forgetting.
    applied_order: VecDeque<ContentId>,
    /// The same ids, for lookup.
    applied: HashSet<ContentId>,
}

impl Default for ReputationBook {
    fn default() -> Self {
        Self::new(ReputationConfig::default())
    }
}

impl ReputationBook {
    /// An empty book.
    pub fn new(config: ReputationConfig) -> Self {
        Self {
            config,
            records: BTreeMap::new(),
            trusted: BTreeSet::new(),
            spent: HashMap::new(),
            spent_on: HashMap::new(),
            applied_order: VecDeque::new(),
            applied: HashSet::new(),
        }
    }

    /// The model's numbers.
    pub fn config(&self) -> &ReputationConfig {
        &self.config
    }

    /// Pins the peers the operator vouches for (EigenTrust's pre-trusted
    /// peers): they are established and known from the start.
    pub fn set_trusted(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        self.trusted = peers.into_iter().collect();
    }

    /// Whether the operator pinned `peer`.
    pub fn is_pinned(&self, peer: &PeerId) -> bool {
        self.trusted.contains(peer)
    }

    /// The record of `peer`, if any.
    pub fn get(&self, peer: &PeerId) -> Option<&PeerRecord> {
        self.records.get(peer)
    }

    /// Every record, ordered by PeerId.
    pub fn records(&self) -> impl Iterator<Item = (&PeerId, &PeerRecord)> {
        self.records.iter()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The score of `peer`; the start score if unknown.
    pub fn score(&self, peer: &PeerId) -> u32 {
        self.records.get(peer).map_or(self.start(), |r| r.score)
    }

    /// The score of `peer` from this node's own evidence alone.
    pub fn own_score(&self, peer: &PeerId) -> u32 {
        self.records
            .get(peer)
            .and_then(|r| r.own_score)
            .unwrap_or(self.start())
    }

    /// Agreements in a row this node has seen from `peer`
    /// ([`PeerRecord::clean_streak`]); 0 if unknown.
    pub fn clean_streak(&self, peer: &PeerId) -> u64 {
        self.records.get(peer).map_or(0, |r| r.clean_streak)
    }

    /// Whether `peer` scores below the exclusion threshold, on any
    /// evidence: never trusted to run alone, its verdicts weigh nothing,
    /// and unless established here it is selected only as a newcomer
    /// ([`Standing`]) or, when excluded on this node's own evidence, not
    /// at all.
    pub fn is_excluded(&self, peer: &PeerId) -> bool {
        self.score(peer) < self.config.exclusion_threshold
    }

    /// Where `peer` stands with this node: this node's own evidence
    /// decides exclusion and establishment; others' word only moves a
    /// newcomer to probation.
    pub fn standing(&self, peer: &PeerId) -> Standing {
        if self.own_score(peer) < self.config.exclusion_threshold {
            return Standing::Excluded;
        }
        let local = self.records.get(peer).map_or(0, |r| r.local_agreed);
        if self.is_pinned(peer) || local >= self.config.establish_after {
            Standing::Established
        } else if self.is_excluded(peer) {
            Standing::Probation
        } else {
            Standing::Newcomer
        }
    }

    /// Whether `peer` is excluded on others' word only, so it may still be
    /// given work to re-test it.
    pub fn on_probation(&self, peer: &PeerId) -> bool {
        self.standing(peer) == Standing::Probation
    }

    /// Whether `peer` is known here well enough to vouch for a gossiped
    /// result: pinned, or agreed with one of this node's own results; and
    /// not excluded here. Gossip alone never makes a peer known, so
    /// strangers cannot vouch for one another in a chain.
    pub fn knows(&self, peer: &PeerId) -> bool {
        self.standing(peer) != Standing::Excluded
            && (self.is_pinned(peer) || self.records.get(peer).is_some_and(|r| r.local_agreed > 0))
    }

    /// How much a verdict signed by `reporter` counts, in thousandths: 0
    /// unless it is established and scores at least the threshold.
    pub fn trust_permille(&self, reporter: &PeerId) -> u32 {
        if self.standing(reporter) != Standing::Established || self.is_excluded(reporter) {
            return 0;
        }
        if self.config.start == 0 {
            return 1000;
        }
        let w = u64::from(self.score(reporter)) * 1000 / u64::from(self.config.start);
        u32::try_from(w.min(1000)).unwrap_or(1000)
    }

    /// Puts back a persisted record (e.g. loaded from sled). The scores
    /// are clamped, since the file may be from a differently configured
    /// node or damaged. When the book is full the stalest record makes
    /// room.
    pub fn restore(&mut self, peer: PeerId, mut record: PeerRecord) {
        record.score = record.score.min(self.config.max_score);
        record.own_score = record.own_score.map(|s| s.min(self.config.max_score));
        if !self.records.contains_key(&peer) && !self.make_room() {
            return;
        }
        self.records.insert(peer, record);
    }

    /// Applies one piece of local evidence at full weight.
    pub fn observe(
        &mut self,
        peer: PeerId,
        observation: Observation,
        now_ms: u64,
    ) -> Option<ScoreChange> {
        self.update(peer, observation, Source::Local, now_ms)
    }

    /// Checks a verdict's evidence and applies it: at full weight when
    /// `local` (this node decided it), otherwise as the module docs say
    /// (established publishers only, weighted, budgeted, vouched for by
    /// known supporters). On error nothing changes.
    pub fn apply_verdict(
        &mut self,
        verdict: &Verified<Verdict>,
        local: bool,
        now_ms: u64,
    ) -> Result<VerdictEffect, VerdictError> {
        let v = &verdict.value;
        if self.applied.contains(&v.job) {
            return Err(VerdictError::AlreadyApplied(v.job));
        }
        let gossip_now = (!local).then_some(now_ms);
        let evidence = check_evidence(v, &verdict.signer, gossip_now, &self.config)?;
        self.remember(v.job);
        if local {
            let mut changes = Vec::new();
            for (peer, obs) in evidence.answers.into_iter().chain(
                evidence
                    .missed
                    .into_iter()
                    .map(|p| (p, Observation::Missed)),
            ) {
                changes.extend(self.update(peer, obs, Source::Local, now_ms));
            }
            return Ok(VerdictEffect {
                weight_permille: 1000,
                changes,
            });
        }
        let publisher = verdict.signer;
        let weight_permille = self.trust_permille(&publisher);
        if weight_permille == 0 {
            return Ok(VerdictEffect {
                weight_permille,
                changes: Vec::new(),
            });
        }
        // Counted before anything is applied, so the verdict cannot vouch
        // for itself.
        let known = evidence
            .supporters
            .iter()
            .filter(|p| **p != publisher && self.knows(p))
            .count();
        let answers = if known >= self.config.min_known_supporters {
            // Praise for a stranger is how Sybils would vouch for each
            // other: only disagreement, which the stranger signed itself,
            // counts against one.
            evidence
                .answers
                .into_iter()
                .filter(|(p, obs)| *obs != Observation::Agreed || self.knows(p))
                .collect()
        } else {
            Vec::new()
        };
        let source = Source::Gossip {
            publisher,
            weight_permille,
        };
        let mut changes = Vec::new();
        for (peer, obs) in answers.into_iter().chain(
            evidence
                .missed
                .into_iter()
                .map(|p| (p, Observation::Missed)),
        ) {
            // A node's own verdict is no evidence about itself.
            if peer != publisher {
                changes.extend(self.update(peer, obs, source, now_ms));
            }
        }
        Ok(VerdictEffect {
            weight_permille,
            changes,
        })
    }

    fn start(&self) -> u32 {
        self.config.start.min(self.config.max_score)
    }

    fn remember(&mut self, job: ContentId) {
        if self.config.remembered_verdicts == 0 {
            return;
        }
        while self.applied_order.len() >= self.config.remembered_verdicts {
            if let Some(old) = self.applied_order.pop_front() {
                self.applied.remove(&old);
            }
        }
        self.applied_order.push_back(job);
        self.applied.insert(job);
    }

    /// Frees a slot for a new record if the book is full, by forgetting
    /// the record unchanged for longest. Returns whether there is room.
    fn make_room(&mut self) -> bool {
        if self.records.len() < self.config.max_peers {
            return true;
        }
        let stalest = self
            .records
            .iter()
            .min_by_key(|(p, r)| (r.last_seen_ms, **p))
            .map(|(p, _)| *p);
        match stalest {
            Some(p) => {
                self.records.remove(&p);
                true
            }
            None => false,
        }
    }

    /// Takes up to `wanted` points from both `publisher`'s budget for
    /// `peer` and the budget of all publishers for `peer`, in the windows
    /// around `now_ms`; returns what was granted.
    fn spend(&mut self, publisher: PeerId, peer: PeerId, wanted: u32, now_ms: u64) -> u32 {
        let cfg = self.config;
        let Some(left_pair) = left_in(
            &mut self.spent,
            (publisher, peer),
            cfg.gossip_budget,
            &cfg,
            now_ms,
        ) else {
            return 0;
        };
        let Some(left_peer) = left_in(
            &mut self.spent_on,
            peer,
            cfg.gossip_peer_budget,
            &cfg,
            now_ms,
        ) else {
            return 0;
        };
        let granted = wanted.min(left_pair).min(left_peer);
        for s in [
            self.spent.get_mut(&(publisher, peer)),
            self.spent_on.get_mut(&peer),
        ]
        .into_iter()
        .flatten()
        {
            s.points += granted;
        }
        granted
    }

    /// Applies one observation. A new record is made for an unknown peer;
    /// when the book is full only local evidence may evict an old record,
    /// so gossip cannot flush what we learnt. Only local evidence moves
    /// the own score, counts toward establishment and extends the clean
    /// streak; gossip is weighted and budgeted, and once a publisher's
    /// budget for the peer is spent its verdicts change nothing about it.
    fn update(
        &mut self,
        peer: PeerId,
        observation: Observation,
        source: Source,
        now_ms: u64,
    ) -> Option<ScoreChange> {
        let cfg = self.config;
        let step = match observation {
            Observation::Agreed => cfg.agree_bonus,
            Observation::Disagreed => cfg.disagree_penalty,
            Observation::Missed => cfg.missed_penalty,
        };
        let local = matches!(source, Source::Local);
        let magnitude = match source {
            Source::Local => step,
            Source::Gossip {
                publisher,
                weight_permille,
            } => {
                let weighted = u64::from(step) * u64::from(weight_permille.min(1000)) / 1000;
                let weighted = u32::try_from(weighted).unwrap_or(step);
                let granted = self.spend(publisher, peer, weighted, now_ms);
                if granted == 0 && weighted > 0 {
                    return None;
                }
                granted
            }
        };
        if !self.records.contains_key(&peer) {
            let full = self.records.len() >= cfg.max_peers;
            if full && !(local && self.make_room()) {
                return None;
            }
            let start = self.start();
            self.records.insert(
                peer,
                PeerRecord {
                    score: start,
                    agreed: 0,
                    disagreed: 0,
                    missed: 0,
                    first_seen_ms: now_ms,
                    last_seen_ms: now_ms,
                    clean_streak: 0,
                    local_agreed: 0,
                    own_score: None,
                },
            );
        }
        let start = self.start();
        let rec = self.records.get_mut(&peer)?;
        let sign = match observation {
            Observation::Agreed => {
                rec.agreed = rec.agreed.saturating_add(1);
                if local {
                    rec.clean_streak = rec.clean_streak.saturating_add(1);
                    rec.local_agreed = rec.local_agreed.saturating_add(1);
                }
                1i64
            }
            Observation::Disagreed => {
                rec.disagreed = rec.disagreed.saturating_add(1);
                rec.clean_streak = 0;
                -1
            }
            Observation::Missed => {
                rec.missed = rec.missed.saturating_add(1);
                rec.clean_streak = 0;
                -1
            }
        };
        let moved = |score: u32| {
            let after =
                (i64::from(score) + sign * i64::from(magnitude)).clamp(0, i64::from(cfg.max_score));
            u32::try_from(after).unwrap_or(cfg.max_score)
        };
        let before = rec.score;
        rec.score = moved(before);
        if local {
            rec.own_score = Some(moved(rec.own_score.unwrap_or(start)));
        }
        rec.last_seen_ms = rec.last_seen_ms.max(now_ms);
        Some(ScoreChange {
            peer,
            observation,
            before,
            after: rec.score,
        })
    }
}

/// What is left of a `budget` tracked under `key` in `table` in the window
/// around `now_ms`, starting a fresh window (and entry) when needed; `None`
/// when the table is full of live windows.
fn left_in<K: std::hash::Hash + Eq>(
    table: &mut HashMap<K, Spent>,
    key: K,
    budget: u32,
    cfg: &ReputationConfig,
    now_ms: u64,
) -> Option<u32> {
    let expired = |s: &Spent| now_ms.saturating_sub(s.window_start_ms) >= cfg.gossip_window_ms;
    if !table.contains_key(&key) && table.len() >= cfg.max_budget_entries {
        table.retain(|_, s| !expired(s));
        if table.len() >= cfg.max_budget_entries {
            return None;
        }
    }
    let s = table.entry(key).or_insert(Spent {
        window_start_ms: now_ms,
        points: 0,
    });
    if expired(s) {
        *s = Spent {
            window_start_ms: now_ms,
            points: 0,
        };
    }
    Some(budget.saturating_sub(s.points))
}

/// Checks everything a verdict claims against its embedded signed spec,
/// attestations and acceptances, and says who agreed, disagreed and
/// missed. `gossip_now` is `Some(now)` for a gossiped verdict, which must
/// also have `k >= 2`, not come from the future, and charges a miss only
/// once the accepted deadline had passed at its decision.
fn check_evidence(
    v: &Verdict,
    signer: &PeerId,
    gossip_now: Option<u64>,
    config: &ReputationConfig,
) -> Result<Evidence, VerdictError> {
    if v.k < 1 || v.k > v.n || v.n > MAX_REPLICATION || 2 * u16::from(v.k) <= u16::from(v.n) {
        return Err(VerdictError::Replication { n: v.n, k: v.k });
    }
    if gossip_now.is_some() && v.k < 2 {
        return Err(VerdictError::SingleSignature { n: v.n, k: v.k });
    }
    v.check_bounds()?;
    let spec = v
        .spec
        .verify()
        .map_err(|e| VerdictError::BadSpec(Box::new(e)))?;
    let found = v.spec.id();
    if found != v.job {
        return Err(VerdictError::SpecMismatch { job: v.job, found });
    }
    if spec.signer != *signer {
        return Err(VerdictError::NotTheSubmitter {
            submitter: spec.signer,
        });
    }
    let r = spec.value.replication;
    if gossip_now.is_some() && (r.n, r.k) != (v.n, v.k) {
        return Err(VerdictError::ReplicationMismatch {
            n: v.n,
            k: v.k,
            spec_n: r.n,
            spec_k: r.k,
        });
    }
    if let Some(now) = gossip_now {
        if v.decided_at_ms > now.saturating_add(config.max_clock_skew_ms) {
            return Err(VerdictError::FromTheFuture {
                decided_at_ms: v.decided_at_ms,
            });
        }
    }
    let mut by_signer: Vec<(PeerId, ContentId)> = Vec::with_capacity(v.attestations.len());
    let mut signers = BTreeSet::new();
    for (index, signed) in v.attestations.iter().enumerate() {
        let a = signed.verify().map_err(|e| VerdictError::BadAttestation {
            index,
            source: Box::new(e),
        })?;
        if a.value.job != v.job {
            return Err(VerdictError::WrongJob {
                index,
                signer: a.signer,
                found: a.value.job,
            });
        }
        if !signers.insert(a.signer) {
            return Err(VerdictError::DuplicateAttester(a.signer));
        }
        by_signer.push((a.signer, a.value.result_hash));
    }
    let mut missed = Vec::with_capacity(v.missed.len());
    let mut seen = BTreeSet::new();
    for (index, signed) in v.missed.iter().enumerate() {
        let a = accepted_by(signed, index, v, signer)?;
        if signers.contains(&a.signer) {
            return Err(VerdictError::MissedButAttested(a.signer));
        }
        if !seen.insert(a.signer) {
            return Err(VerdictError::DuplicateMissed(a.signer));
        }
        // An executor whose deadline had not passed at the decision may
        // have been cut off by the submitter (or gone offline, which only
        // the submitter saw): no proof of a miss for anyone else.
        if gossip_now.is_none() || a.value.deadline_ms <= v.decided_at_ms {
            missed.push(a.signer);
        }
    }
    let tally = quorum::tally(by_signer.iter().map(|(_, h)| *h));
    let leader = tally.first().map(|&(h, _)| h);
    let lead = quorum::lead(&tally) as usize;
    let k = usize::from(v.k);
    let mut supporters = Vec::new();
    let mut answers = Vec::new();
    match (v.outcome, v.accepted) {
        (VerdictOutcome::Verified, None) => return Err(VerdictError::MissingAccepted),
        (VerdictOutcome::Verified, Some(hash)) => {
            let have = if leader == Some(hash) { lead } else { 0 };
            if have < k {
                return Err(VerdictError::NotEnoughSupport {
                    hash,
                    have,
                    need: v.k,
                });
            }
            for (peer, h) in &by_signer {
                if *h == hash {
                    supporters.push(*peer);
                    // One signature agrees with nobody.
                    if k >= 2 {
                        answers.push((*peer, Observation::Agreed));
                    }
                } else {
                    answers.push((*peer, Observation::Disagreed));
                }
            }
        }
        (outcome @ (VerdictOutcome::NoConsensus | VerdictOutcome::Timeout), accepted) => {
            if let Some(hash) = accepted {
                return Err(VerdictError::UnexpectedAccepted(hash));
            }
            if let Some(hash) = leader.filter(|_| lead >= k) {
                return Err(VerdictError::QuorumWasReached { outcome, hash });
            }
            // Nobody is known to be right, so attesters are left alone.
        }
    }
    Ok(Evidence {
        supporters,
        answers,
        missed,
    })
}

/// The verified acceptance at `index` of `v.missed`, if it is of this job
/// from the verdict's signer.
fn accepted_by(
    signed: &Signed<Acceptance>,
    index: usize,
    v: &Verdict,
    signer: &PeerId,
) -> Result<Verified<Acceptance>, VerdictError> {
    let a = signed.verify().map_err(|e| VerdictError::BadAcceptance {
        index,
        source: Box::new(e),
    })?;
    if a.value.job != v.job || a.value.submitter != *signer {
        return Err(VerdictError::ForeignAcceptance {
            index,
            signer: a.signer,
        });
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::{Attestation, JobSpec, NodeKey, Replication};

    /// Errors carry a protocol SignError, which has no PartialEq, so
    /// results are compared by their full Debug form.
    fn dbg<T: std::fmt::Debug>(x: T) -> String {
        format!("{x:?}")
    }

    fn key(i: u8) -> NodeKey {
        NodeKey::from_secret([i; 32])
    }

    fn h(x: &str) -> ContentId {
        ContentId::of(x.as_bytes())
    }

    /// A 2-of-3 job submitted by `sub`.
    struct Job {
        spec: Signed<JobSpec>,
        id: ContentId,
    }

    fn job_by(sub: &NodeKey, nonce: u64) -> Job {
        job_with(sub, nonce, 3, 2)
    }

    fn job_with(sub: &NodeKey, nonce: u64, n: u8, k: u8) -> Job {
        let spec = sub.sign(&JobSpec {
            nonce,
            replication: Replication { n, k },
            ..JobSpec::wasm(h("module"))
        });
        let id = spec.id();
        Job { spec, id }
    }

    fn att(k: &NodeKey, job: ContentId, hash: ContentId) -> Signed<Attestation> {
        k.sign(&Attestation {
            job,
            result_hash: hash,
            exit_code: 0,
            finished_at_ms: 1,
        })
    }

    /// `k`'s acceptance of `job` from `sub`, due at `deadline_ms`.
    fn accept(k: &NodeKey, job: &Job, sub: &NodeKey, deadline_ms: u64) -> Signed<Acceptance> {
        k.sign(&Acceptance {
            job: job.id,
            submitter: sub.peer_id(),
            attempt: 0,
            deadline_ms,
        })
    }

    /// A 2-of-3 verdict on `job`, decided at 1 000.
    fn verdict(job: &Job, atts: &[&NodeKey], hashes: &[&str], accepted: Option<&str>) -> Verdict {
        Verdict {
            job: job.id,
            spec: job.spec.clone(),
            k: 2,
            n: 3,
            outcome: if accepted.is_some() {
                VerdictOutcome::Verified
            } else {
                VerdictOutcome::NoConsensus
            },
            accepted: accepted.map(h),
            attestations: atts
                .iter()
                .zip(hashes)
                .map(|(k, x)| att(k, job.id, h(x)))
                .collect(),
            missed: vec![],
            decided_at_ms: 1_000,
        }
    }

    fn signed_by(reporter: &NodeKey, v: Verdict) -> Verified<Verdict> {
        reporter.sign(&v).verify().unwrap()
    }

    fn snapshot(b: &ReputationBook) -> Vec<(PeerId, PeerRecord)> {
        b.records().map(|(p, r)| (*p, *r)).collect()
    }

    /// Makes `p` established here: `establish_after` own agreements.
    fn establish(b: &mut ReputationBook, p: &NodeKey) {
        for _ in 0..b.config().establish_after {
            b.observe(p.peer_id(), Observation::Agreed, 0);
        }
        assert_eq!(b.standing(&p.peer_id()), Standing::Established);
    }

    /// Gossips `v` as `reporter` at time 2 000.
    fn gossip(b: &mut ReputationBook, reporter: &NodeKey, v: Verdict) -> VerdictEffect {
        b.apply_verdict(&signed_by(reporter, v), false, 2_000)
            .unwrap()
    }

    #[test]
    fn defaults_and_steps() {
        let mut b = ReputationBook::default();
        let p = key(1).peer_id();
        assert_eq!(b.score(&p), 100);
        assert!(!b.is_excluded(&p));
        assert_eq!(b.standing(&p), Standing::Newcomer);
        let c = b.observe(p, Observation::Agreed, 10).unwrap();
        assert_eq!((c.before, c.after), (100, 105));
        b.observe(p, Observation::Disagreed, 20);
        assert_eq!(b.score(&p), 95);
        b.observe(p, Observation::Missed, 30);
        assert_eq!(b.score(&p), 75);
        let r = b.get(&p).unwrap();
        assert_eq!((r.agreed, r.disagreed, r.missed), (1, 1, 1));
        assert_eq!((r.first_seen_ms, r.last_seen_ms), (10, 30));
        assert_eq!((r.local_agreed, r.own_score), (1, Some(75)));
        b.observe(p, Observation::Missed, 40);
        assert_eq!(b.score(&p), 55);
        assert!(!b.is_excluded(&p));
        b.observe(p, Observation::Disagreed, 50);
        assert_eq!(b.score(&p), 45);
        assert!(b.is_excluded(&p));
        assert_eq!(b.standing(&p), Standing::Excluded, "on its own evidence");
    }

    #[test]
    fn scores_clamp() {
        let mut b = ReputationBook::default();
        let p = key(1).peer_id();
        for t in 0..20 {
            b.observe(p, Observation::Missed, t);
        }
        assert_eq!(b.score(&p), 0);
        for t in 0..300 {
            b.observe(p, Observation::Agreed, t);
        }
        assert_eq!(b.score(&p), 1000);
        b.restore(
            p,
            PeerRecord {
                score: 5000,
                agreed: 0,
                disagreed: 0,
                missed: 0,
                first_seen_ms: 0,
                last_seen_ms: 0,
                clean_streak: 0,
                local_agreed: 0,
                own_score: Some(7000),
            },
        );
        assert_eq!(b.score(&p), 1000);
        assert_eq!(b.own_score(&p), 1000);
    }

    #[test]
    fn local_verdict_full_weight() {
        let ks: Vec<NodeKey> = (1..=5).map(key).collect();
        let me = key(9);
        let job = job_by(&me, 0);
        let mut b = ReputationBook::default();
        let mut v = verdict(
            &job,
            &[&ks[0], &ks[1], &ks[2], &ks[4]],
            &["a", "b", "a", "a"],
            Some("a"),
        );
        // Locally the submitter saw the miss itself: the deadline need not
        // have passed.
        v.missed = vec![accept(&ks[3], &job, &me, 5_000)];
        let eff = b
            .apply_verdict(&signed_by(&me, v.clone()), true, 7)
            .unwrap();
        assert_eq!(eff.weight_permille, 1000);
        assert_eq!(b.score(&ks[0].peer_id()), 105);
        assert_eq!(b.score(&ks[1].peer_id()), 90);
        assert_eq!(b.score(&ks[2].peer_id()), 105);
        assert_eq!(b.score(&ks[3].peer_id()), 80);
        assert_eq!(b.score(&ks[4].peer_id()), 105);
        assert_eq!(b.get(&ks[0].peer_id()).unwrap().local_agreed, 1);
        assert_eq!(eff.changes.len(), 5);
        // Replayed: refused, nothing counted twice, and not a forgery.
        let before = snapshot(&b);
        let err = b.apply_verdict(&signed_by(&me, v), true, 8).unwrap_err();
        assert_eq!(dbg(&err), dbg(VerdictError::AlreadyApplied(job.id)));
        assert!(!err.is_forgery());
        assert_eq!(snapshot(&b), before);
    }

    #[test]
    fn gossip_is_weighted_by_trust_in_an_established_reporter() {
        let ks: Vec<NodeKey> = (1..=3).map(key).collect();
        let reporter = key(8);
        let mut b = ReputationBook::default();
        // Established by 3 own agreements (115), then down to 75 ->
        // weight 750: +5 -> +3 (3.75 rounded toward zero), -10 -> -7.
        establish(&mut b, &reporter);
        b.observe(reporter.peer_id(), Observation::Missed, 0);
        b.observe(reporter.peer_id(), Observation::Disagreed, 0);
        b.observe(reporter.peer_id(), Observation::Disagreed, 0);
        assert_eq!(b.score(&reporter.peer_id()), 75);
        assert_eq!(b.standing(&reporter.peer_id()), Standing::Established);
        // Both supporters are known here.
        b.observe(ks[0].peer_id(), Observation::Agreed, 0);
        b.observe(ks[2].peer_id(), Observation::Agreed, 0);
        let job = job_by(&reporter, 0);
        // A stranger's agreement makes the lead k; it is not credited.
        let v = verdict(
            &job,
            &[&ks[0], &ks[1], &ks[2], &key(4)],
            &["a", "b", "a", "a"],
            Some("a"),
        );
        let eff = gossip(&mut b, &reporter, v);
        assert_eq!(eff.weight_permille, 750);
        assert_eq!(b.get(&key(4).peer_id()), None);
        assert_eq!(b.score(&ks[0].peer_id()), 108);
        assert_eq!(b.score(&ks[1].peer_id()), 93);
        // Gossip moves neither the own score nor establishment.
        let r = b.get(&ks[0].peer_id()).unwrap();
        assert_eq!((r.agreed, r.local_agreed, r.own_score), (2, 1, Some(105)));
    }

    #[test]
    fn trusted_reporter_weight_is_capped_and_excluded_reporter_counts_nothing() {
        let ks: Vec<NodeKey> = (1..=3).map(key).collect();
        let reporter = key(8);
        let mut b = ReputationBook::default();
        for t in 0..40 {
            b.observe(reporter.peer_id(), Observation::Agreed, t);
        }
        assert_eq!(b.trust_permille(&reporter.peer_id()), 1000);
        let liar = key(7);
        establish(&mut b, &liar);
        for t in 0..4 {
            b.observe(liar.peer_id(), Observation::Missed, t);
        }
        assert_eq!(b.standing(&liar.peer_id()), Standing::Excluded);
        assert_eq!(b.trust_permille(&liar.peer_id()), 0);
        b.observe(ks[0].peer_id(), Observation::Agreed, 0);
        b.observe(ks[1].peer_id(), Observation::Agreed, 0);
        let job = job_by(&liar, 0);
        let v = verdict(&job, &[&ks[0], &ks[1]], &["a", "a"], Some("a"));
        let before = snapshot(&b);
        let eff = gossip(&mut b, &liar, v);
        assert!(eff.changes.is_empty());
        assert_eq!(snapshot(&b), before);
    }

    #[test]
    fn newcomer_publishers_change_nothing() {
        // A fresh identity with a well-formed verdict on a job it really
        // submitted, naming executors this node knows: no effect at all.
        let ks: Vec<NodeKey> = (1..=4).map(key).collect();
        let fresh = key(8);
        let mut b = ReputationBook::default();
        for k in &ks {
            b.observe(k.peer_id(), Observation::Agreed, 0);
        }
        let job = job_by(&fresh, 0);
        let mut v = verdict(
            &job,
            &[&ks[0], &ks[1], &ks[2], &key(5)],
            &["a", "b", "a", "a"],
            Some("a"),
        );
        v.missed = vec![accept(&ks[3], &job, &fresh, 500)];
        let before = snapshot(&b);
        let eff = gossip(&mut b, &fresh, v);
        assert_eq!(eff.weight_permille, 0);
        assert!(eff.changes.is_empty());
        assert_eq!(snapshot(&b), before);
        // Two own agreements are not enough either.
        b.observe(fresh.peer_id(), Observation::Agreed, 0);
        b.observe(fresh.peer_id(), Observation::Agreed, 0);
        assert_eq!(b.standing(&fresh.peer_id()), Standing::Newcomer);
        assert_eq!(b.trust_permille(&fresh.peer_id()), 0);
    }

    #[test]
    fn pinned_peers_are_established_and_known() {
        let (pin, other, fresh) = (key(1), key(2), key(3));
        let mut b = ReputationBook::default();
        b.set_trusted([pin.peer_id(), other.peer_id()]);
        assert_eq!(b.standing(&pin.peer_id()), Standing::Established);
        assert_eq!(b.trust_permille(&pin.peer_id()), 1000);
        assert!(b.knows(&other.peer_id()));
        assert!(!b.knows(&fresh.peer_id()));
        // Its verdict credits the known executors that agreed, but not
        // the stranger beside them: praise never makes a peer known.
        let job = job_by(&pin, 0);
        let v = verdict(
            &job,
            &[&other, &key(4), &fresh],
            &["a", "a", "a"],
            Some("a"),
        );
        b.observe(key(4).peer_id(), Observation::Agreed, 0);
        gossip(&mut b, &pin, v);
        assert_eq!(b.score(&other.peer_id()), 105);
        assert_eq!(b.score(&key(4).peer_id()), 110);
        assert_eq!(b.get(&fresh.peer_id()), None);
        assert!(!b.knows(&fresh.peer_id()));
        // Own evidence still excludes a pinned peer.
        for t in 0..3 {
            b.observe(pin.peer_id(), Observation::Missed, t);
        }
        assert_eq!(b.standing(&pin.peer_id()), Standing::Excluded);
    }

    #[test]
    fn sybil_supporters_gain_nothing() {
        let reporter = key(8);
        let mut b = ReputationBook::default();
        establish(&mut b, &reporter);
        let known = key(1);
        b.observe(known.peer_id(), Observation::Agreed, 0);
        let (s1, s2, s3, honest) = (key(20), key(21), key(22), key(2));
        b.observe(honest.peer_id(), Observation::Agreed, 0);
        let before = snapshot(&b);
        // Three fresh identities endorse each other, and "outvote" an
        // honest node: neither the praise nor the blame counts.
        let job = job_by(&reporter, 0);
        let v = verdict(
            &job,
            &[&s1, &s2, &s3, &honest],
            &["x", "x", "x", "y"],
            Some("x"),
        );
        let eff = gossip(&mut b, &reporter, v);
        assert!(eff.changes.is_empty(), "{eff:?}");
        assert_eq!(snapshot(&b), before);
        // One known supporter is not enough either.
        let job = job_by(&reporter, 1);
        let v = verdict(
            &job,
            &[&s1, &s2, &known, &honest],
            &["x", "x", "x", "y"],
            Some("x"),
        );
        assert!(gossip(&mut b, &reporter, v).changes.is_empty());
        assert_eq!(snapshot(&b), before);
        // Sybils never become established through gossip.
        assert_eq!(b.standing(&s1.peer_id()), Standing::Newcomer);
        // Beside two known supporters, Sybils still gain nothing, while
        // the honest node's own signed dissent counts against it.
        let known2 = key(3);
        b.observe(known2.peer_id(), Observation::Agreed, 0);
        let job = job_with(&reporter, 2, 5, 3);
        let v = Verdict {
            n: 5,
            k: 3,
            ..verdict(
                &job,
                &[&s1, &known, &known2, &s2, &honest],
                &["x", "x", "x", "x", "y"],
                Some("x"),
            )
        };
        let eff = gossip(&mut b, &reporter, v);
        let moved: BTreeSet<PeerId> = eff.changes.iter().map(|c| c.peer).collect();
        assert_eq!(
            moved,
            [known.peer_id(), known2.peer_id(), honest.peer_id()].into()
        );
        assert_eq!((b.get(&s1.peer_id()), b.get(&s2.peer_id())), (None, None));
        assert!(!b.knows(&s1.peer_id()));
    }

    #[test]
    fn all_publishers_together_are_bounded_per_peer() {
        let victim = key(1);
        // A high start score, so the bound shows before the floor does.
        let mut b = ReputationBook::new(ReputationConfig {
            start: 300,
            ..ReputationConfig::default()
        });
        let publishers: Vec<NodeKey> = (10..15).map(key).collect();
        for p in &publishers {
            establish(&mut b, p);
        }
        // Five established publishers, each within its own budget of 50
        // (250 in all): together they move the victim by 100 in the
        // window, no more.
        for (i, p) in publishers.iter().enumerate() {
            for nonce in 0..3 {
                let job = job_by(p, nonce);
                let v = Verdict {
                    outcome: VerdictOutcome::Timeout,
                    missed: vec![accept(&victim, &job, p, 1)],
                    decided_at_ms: 1_000 + i as u64,
                    ..verdict(&job, &[], &[], None)
                };
                b.apply_verdict(&signed_by(p, v), false, 1_000 + i as u64)
                    .unwrap();
            }
        }
        assert_eq!(b.score(&victim.peer_id()), 200);
        assert_eq!(b.get(&victim.peer_id()).unwrap().missed, 6);
    }

    #[test]
    fn gossip_moves_no_standing_earned_or_lost_here() {
        let publishers: Vec<NodeKey> = (10..13).map(key).collect();
        let (earned, lost) = (key(1), key(2));
        let mut b = ReputationBook::default();
        for p in &publishers {
            establish(&mut b, p);
        }
        establish(&mut b, &earned);
        for t in 0..3 {
            b.observe(lost.peer_id(), Observation::Missed, t);
        }
        assert_eq!(b.standing(&lost.peer_id()), Standing::Excluded);
        for (i, p) in publishers.iter().enumerate() {
            for nonce in 0..5 {
                let job = job_by(p, nonce);
                // Blame for the one this node established...
                let blame = Verdict {
                    outcome: VerdictOutcome::Timeout,
                    missed: vec![accept(&earned, &job, p, 1)],
                    decided_at_ms: 1_000,
                    ..verdict(&job, &[], &[], None)
                };
                b.apply_verdict(&signed_by(p, blame), false, 1_000).unwrap();
                // ...and praise for the one it excluded, beside two
                // known supporters.
                let job = job_by(p, 100 + nonce);
                let o1 = &publishers[(i + 1) % publishers.len()];
                let o2 = &publishers[(i + 2) % publishers.len()];
                let praise = verdict(&job, &[&lost, o1, o2], &["a", "a", "a"], Some("a"));
                b.apply_verdict(&signed_by(p, praise), false, 1_000)
                    .unwrap();
            }
        }
        assert!(
            b.is_excluded(&earned.peer_id()),
            "{:?}",
            b.get(&earned.peer_id())
        );
        assert_eq!(b.standing(&earned.peer_id()), Standing::Established);
        assert!(b.knows(&earned.peer_id()));
        assert_eq!(b.trust_permille(&earned.peer_id()), 0);
        // The excluded peer is not known, so it is not praised at all.
        assert_eq!(b.standing(&lost.peer_id()), Standing::Excluded);
        assert_eq!(b.score(&lost.peer_id()), 40);
    }

    #[test]
    fn gossiped_misses_need_the_accused_acceptance_and_a_passed_deadline() {
        let reporter = key(8);
        let (a, b_, c) = (key(1), key(2), key(3));
        let other_sub = key(9);
        let mut b = ReputationBook::default();
        establish(&mut b, &reporter);
        let job = job_by(&reporter, 0);
        let timeout = |missed: Vec<Signed<Acceptance>>| Verdict {
            outcome: VerdictOutcome::Timeout,
            missed,
            ..verdict(&job, &[], &[], None)
        };
        // Accepted from another submitter, or for another job: forged.
        let other_job = job_by(&reporter, 1);
        for bad in [
            accept(&a, &job, &other_sub, 500),
            accept(&a, &other_job, &reporter, 500),
        ] {
            let err = b
                .apply_verdict(&signed_by(&reporter, timeout(vec![bad])), false, 2_000)
                .unwrap_err();
            assert!(
                matches!(err, VerdictError::ForeignAcceptance { index: 0, .. }),
                "{err}"
            );
            assert!(err.is_forgery());
        }
        assert_eq!(b.get(&a.peer_id()), None);
        // The deadline had not passed at the decision (1 000): b_ is not
        // charged; a is.
        let eff = gossip(
            &mut b,
            &reporter,
            timeout(vec![
                accept(&a, &job, &reporter, 900),
                accept(&b_, &job, &reporter, 1_001),
            ]),
        );
        assert_eq!(eff.changes.len(), 1);
        assert_eq!(b.score(&a.peer_id()), 80);
        assert_eq!(b.get(&b_.peer_id()), None);
        // A miss signed by nobody but the publisher can only name the
        // publisher, which its own verdict never changes.
        let job2 = job_by(&reporter, 2);
        let v = Verdict {
            outcome: VerdictOutcome::Timeout,
            missed: vec![accept(&reporter, &job2, &reporter, 1)],
            ..verdict(&job2, &[], &[], None)
        };
        assert!(gossip(&mut b, &reporter, v).changes.is_empty());
        assert_eq!(b.get(&c.peer_id()), None);
    }

    #[test]
    fn single_signature_verdicts_are_no_evidence() {
        let reporter = key(8);
        let (acc, x) = (key(1), key(2));
        let mut b = ReputationBook::default();
        establish(&mut b, &reporter);
        b.observe(x.peer_id(), Observation::Agreed, 0);
        let job = job_with(&reporter, 0, 1, 1);
        let v = Verdict {
            k: 1,
            n: 1,
            ..verdict(&job, &[&acc], &["a"], Some("a"))
        };
        let err = b
            .apply_verdict(&signed_by(&reporter, v.clone()), false, 2_000)
            .unwrap_err();
        assert!(
            matches!(err, VerdictError::SingleSignature { n: 1, k: 1 }),
            "{err}"
        );
        assert!(err.is_forgery());
        // Even its own submitter credits no agreement from it.
        let eff = b
            .apply_verdict(&signed_by(&reporter, v), true, 2_000)
            .unwrap();
        assert!(eff.changes.is_empty());
        assert_eq!(b.get(&acc.peer_id()), None);
    }

    #[test]
    fn one_publisher_moves_one_peer_by_a_bounded_amount_per_window() {
        let reporter = key(8);
        let victim = key(1);
        let mut b = ReputationBook::default();
        establish(&mut b, &reporter);
        let window = b.config().gossip_window_ms;
        let charge = |b: &mut ReputationBook, nonce: u64, now: u64| {
            let job = job_by(&reporter, nonce);
            let v = Verdict {
                outcome: VerdictOutcome::Timeout,
                missed: vec![accept(&victim, &job, &reporter, 1)],
                decided_at_ms: now,
                ..verdict(&job, &[], &[], None)
            };
            b.apply_verdict(&signed_by(&reporter, v), false, now)
                .unwrap()
        };
        for nonce in 0..10 {
            charge(&mut b, nonce, 1_000);
        }
        // 50 points in the window: down to exactly the threshold, which
        // does not exclude.
        assert_eq!(b.score(&victim.peer_id()), 50);
        assert_eq!(b.get(&victim.peer_id()).unwrap().missed, 3);
        assert!(!b.is_excluded(&victim.peer_id()));
        // A second established publisher can add its own share...
        let second = key(9);
        establish(&mut b, &second);
        let job = job_by(&second, 0);
        let v = Verdict {
            outcome: VerdictOutcome::Timeout,
            missed: vec![accept(&victim, &job, &second, 1)],
            ..verdict(&job, &[], &[], None)
        };
        gossip(&mut b, &second, v);
        assert_eq!(b.score(&victim.peer_id()), 30);
        // ...and then it is excluded on others' word only: probation.
        assert_eq!(b.standing(&victim.peer_id()), Standing::Probation);
        assert!(b.on_probation(&victim.peer_id()));
        // The next window gives the first publisher a fresh budget.
        charge(&mut b, 100, 1_000 + window);
        assert_eq!(b.score(&victim.peer_id()), 10);
        // Own agreement lifts it; own faults exclude it for good.
        b.observe(victim.peer_id(), Observation::Agreed, 0);
        assert_eq!(b.own_score(&victim.peer_id()), 105);
        for t in 0..3 {
            b.observe(victim.peer_id(), Observation::Missed, t);
        }
        assert_eq!(b.standing(&victim.peer_id()), Standing::Excluded);
    }

    #[test]
    fn budget_table_is_bounded() {
        let cfg = ReputationConfig {
            max_budget_entries: 1,
            ..ReputationConfig::default()
        };
        let reporter = key(8);
        let mut b = ReputationBook::new(cfg);
        establish(&mut b, &reporter);
        let timeout = |job: &Job, who: &NodeKey| Verdict {
            outcome: VerdictOutcome::Timeout,
            missed: vec![accept(who, job, &reporter, 1)],
            ..verdict(job, &[], &[], None)
        };
        let (j0, j1) = (job_by(&reporter, 0), job_by(&reporter, 1));
        assert_eq!(
            gossip(&mut b, &reporter, timeout(&j0, &key(1)))
                .changes
                .len(),
            1
        );
        // No room to track a second pair within the window: no change.
        assert!(gossip(&mut b, &reporter, timeout(&j1, &key(2)))
            .changes
            .is_empty());
        assert_eq!(b.get(&key(2).peer_id()), None);
    }

    #[test]
    fn inconsistent_verdicts_are_refused() {
        let ks: Vec<NodeKey> = (1..=3).map(key).collect();
        let rep = key(9);
        let job = job_by(&rep, 0);
        let other = job_by(&rep, 1);
        let strangers = job_by(&key(7), 0);
        let mut b = ReputationBook::default();
        let v = |a: &[&NodeKey], x: &[&str], acc| verdict(&job, a, x, acc);
        type Case = (Verdict, fn(&VerdictError) -> bool);
        let mut wrong_job = v(&[&ks[0]], &["a"], None);
        wrong_job.attestations.push(att(&ks[1], h("x"), h("a")));
        let cases: Vec<Case> = vec![
            (v(&[&ks[0], &ks[1]], &["a", "b"], Some("a")), |e| {
                matches!(
                    e,
                    VerdictError::NotEnoughSupport {
                        have: 0,
                        need: 2,
                        ..
                    }
                )
            }),
            // Two outvoting one: k agree, but the lead is 1.
            (
                v(&[&ks[0], &ks[1], &ks[2]], &["a", "a", "b"], Some("a")),
                |e| {
                    matches!(
                        e,
                        VerdictError::NotEnoughSupport {
                            have: 1,
                            need: 2,
                            ..
                        }
                    )
                },
            ),
            (v(&[&ks[0], &ks[0]], &["a", "a"], Some("a")), |e| {
                matches!(e, VerdictError::DuplicateAttester(_))
            }),
            (wrong_job, |e| {
                matches!(e, VerdictError::WrongJob { index: 1, .. })
            }),
            (v(&[&ks[0], &ks[1]], &["a", "a"], None), |e| {
                matches!(e, VerdictError::QuorumWasReached { .. })
            }),
            (
                Verdict {
                    outcome: VerdictOutcome::Verified,
                    ..v(&[&ks[0]], &["a"], None)
                },
                |e| matches!(e, VerdictError::MissingAccepted),
            ),
            (
                Verdict {
                    outcome: VerdictOutcome::Timeout,
                    ..v(&[&ks[0]], &["a"], Some("a"))
                },
                |e| matches!(e, VerdictError::UnexpectedAccepted(_)),
            ),
            (
                Verdict {
                    missed: vec![accept(&ks[0], &job, &rep, 1)],
                    ..v(&[&ks[0]], &["a"], None)
                },
                |e| matches!(e, VerdictError::MissedButAttested(_)),
            ),
            (
                Verdict {
                    missed: vec![accept(&ks[2], &job, &rep, 1), accept(&ks[2], &job, &rep, 2)],
                    ..v(&[], &[], None)
                },
                |e| matches!(e, VerdictError::DuplicateMissed(_)),
            ),
            (
                Verdict {
                    n: 4,
                    ..v(&[], &[], None)
                },
                |e| matches!(e, VerdictError::Replication { n: 4, k: 2 }),
            ),
            (
                Verdict {
                    missed: (0..=64u8)
                        .map(|i| accept(&key(100 + i), &job, &rep, 1))
                        .collect(),
                    ..v(&[], &[], None)
                },
                |e| matches!(e, VerdictError::Limit(_)),
            ),
            (
                Verdict {
                    spec: other.spec.clone(),
                    ..v(&[], &[], None)
                },
                |e| matches!(e, VerdictError::SpecMismatch { .. }),
            ),
            (verdict(&strangers, &[], &[], None), |e| {
                matches!(e, VerdictError::NotTheSubmitter { .. })
            }),
            (
                Verdict {
                    missed: vec![{
                        let mut a = accept(&ks[2], &job, &rep, 1).encode();
                        let last = a.len() - 1;
                        a[last] ^= 1;
                        Signed::decode(&a, 4096).unwrap()
                    }],
                    ..v(&[], &[], None)
                },
                |e| matches!(e, VerdictError::BadAcceptance { index: 0, .. }),
            ),
        ];
        for (i, (v, want)) in cases.into_iter().enumerate() {
            let before = snapshot(&b);
            // Built directly: the over-limit case could not pass the
            // envelope's own decoding, and the verdict signature is not
            // what is under test here.
            let verified = Verified {
                signer: rep.peer_id(),
                value: v,
            };
            let err = b.apply_verdict(&verified, true, 1).unwrap_err();
            assert!(want(&err), "case {i}: {err:?}");
            assert!(err.is_forgery(), "case {i}");
            assert_eq!(snapshot(&b), before, "case {i} changed the book");
        }
        assert!(b.is_empty());
    }

    #[test]
    fn gossip_checks_replication_and_the_clock() {
        let rep = key(9);
        let ks: Vec<NodeKey> = (1..=2).map(key).collect();
        let mut b = ReputationBook::default();
        establish(&mut b, &rep);
        // The spec asked for 5-of-3? No: 3-of-5, the verdict says 2-of-3.
        let job = job_with(&rep, 0, 5, 3);
        let v = verdict(&job, &[&ks[0], &ks[1]], &["a", "a"], Some("a"));
        let err = b
            .apply_verdict(&signed_by(&rep, v), false, 2_000)
            .unwrap_err();
        assert!(
            matches!(err, VerdictError::ReplicationMismatch { .. }),
            "{err}"
        );
        // Decided further ahead than the clock skew allows: not applied,
        // not blamed.
        let job = job_by(&rep, 1);
        let v = Verdict {
            decided_at_ms: 2_000 + b.config().max_clock_skew_ms + 1,
            ..verdict(&job, &[&ks[0], &ks[1]], &["a", "a"], Some("a"))
        };
        let err = b
            .apply_verdict(&signed_by(&rep, v), false, 2_000)
            .unwrap_err();
        assert!(matches!(err, VerdictError::FromTheFuture { .. }), "{err}");
        assert!(!err.is_forgery());
    }

    #[test]
    fn reporter_cannot_praise_itself() {
        let reporter = key(1);
        let others = [key(2), key(3)];
        let mut b = ReputationBook::default();
        b.set_trusted([reporter.peer_id()]);
        for o in &others {
            b.observe(o.peer_id(), Observation::Agreed, 0);
        }
        let job = job_by(&reporter, 0);
        let v = verdict(
            &job,
            &[&reporter, &others[0], &others[1]],
            &["a", "a", "a"],
            Some("a"),
        );
        gossip(&mut b, &reporter, v);
        assert_eq!(b.get(&reporter.peer_id()), None);
        assert_eq!(b.score(&others[0].peer_id()), 110);
    }

    #[test]
    fn failed_verdict_only_penalises_the_missing() {
        let ks: Vec<NodeKey> = (1..=3).map(key).collect();
        let me = key(9);
        let job = job_by(&me, 0);
        let mut b = ReputationBook::default();
        let v = Verdict {
            missed: vec![accept(&ks[2], &job, &me, 1)],
            ..verdict(&job, &[&ks[0], &ks[1]], &["a", "b"], None)
        };
        let eff = b.apply_verdict(&signed_by(&me, v), true, 1).unwrap();
        assert_eq!(eff.changes.len(), 1);
        assert_eq!(b.get(&ks[0].peer_id()), None);
        assert_eq!(b.score(&ks[2].peer_id()), 80);
    }

    #[test]
    fn book_is_bounded_and_gossip_cannot_evict() {
        let cfg = ReputationConfig {
            max_peers: 3,
            remembered_verdicts: 1,
            ..ReputationConfig::default()
        };
        let mut b = ReputationBook::new(cfg);
        let reporter = key(9);
        b.set_trusted([reporter.peer_id(), key(1).peer_id(), key(2).peer_id()]);
        b.observe(key(1).peer_id(), Observation::Agreed, 1);
        b.observe(key(2).peer_id(), Observation::Agreed, 2);
        b.observe(key(5).peer_id(), Observation::Missed, 2);
        // Gossip about a fourth peer finds no room.
        let job = job_by(&reporter, 0);
        let v = verdict(
            &job,
            &[&key(1), &key(2), &key(3)],
            &["a", "a", "a"],
            Some("a"),
        );
        let eff = gossip(&mut b, &reporter, v);
        assert_eq!(eff.changes.len(), 2, "only the known records change");
        assert_eq!(b.len(), 3);
        assert_eq!(b.get(&key(3).peer_id()), None);
        // Local evidence evicts the stalest record.
        b.observe(key(3).peer_id(), Observation::Agreed, 4);
        assert_eq!(b.len(), 3);
        assert_eq!(b.get(&key(5).peer_id()), None);
        // Remembered verdicts are bounded too: the oldest is forgotten.
        let other = job_by(&reporter, 1);
        b.apply_verdict(
            &signed_by(&reporter, verdict(&other, &[], &[], None)),
            true,
            5,
        )
        .unwrap();
        assert_eq!(b.applied.len(), 1);
        assert_eq!(b.applied_order.len(), 1);
    }

    #[test]
    fn clean_streak_grows_on_local_agreement_only_and_resets_on_any_fault() {
        let mut b = ReputationBook::default();
        let ks: Vec<NodeKey> = (1..=3).map(key).collect();
        let p = ks[0].peer_id();
        assert_eq!(b.clean_streak(&p), 0);
        for t in 0..3 {
            b.observe(p, Observation::Agreed, t);
        }
        assert_eq!(b.clean_streak(&p), 3);
        b.observe(p, Observation::Disagreed, 4);
        assert_eq!(b.clean_streak(&p), 0);
        b.observe(p, Observation::Agreed, 5);
        b.observe(p, Observation::Missed, 6);
        assert_eq!(b.clean_streak(&p), 0);
        b.observe(p, Observation::Agreed, 7);
        assert_eq!(b.clean_streak(&p), 1);

        // Gossip praise moves the score but not the streak...
        let reporter = key(8);
        establish(&mut b, &reporter);
        b.observe(ks[1].peer_id(), Observation::Agreed, 7);
        let job = job_by(&reporter, 0);
        let praise = verdict(&job, &[&ks[0], &ks[1]], &["a", "a"], Some("a"));
        let before = b.score(&p);
        gossip(&mut b, &reporter, praise);
        assert!(b.score(&p) > before);
        assert_eq!(b.clean_streak(&p), 1);
        // ...while gossiped blame resets it.
        b.observe(ks[2].peer_id(), Observation::Agreed, 7);
        let job2 = job_by(&reporter, 1);
        let blame = verdict(
            &job2,
            &[&ks[0], &ks[1], &ks[2], &key(30)],
            &["b", "a", "a", "a"],
            Some("a"),
        );
        gossip(&mut b, &reporter, blame);
        assert_eq!(b.clean_streak(&p), 0);
        // A local verdict extends it.
        let me = key(9);
        let job3 = job_by(&me, 0);
        let local = verdict(&job3, &[&ks[0], &ks[1]], &["a", "a"], Some("a"));
        b.apply_verdict(&signed_by(&me, local), true, 10).unwrap();
        assert_eq!(b.clean_streak(&p), 1);
        assert_eq!(b.clean_streak(&ks[1].peer_id()), 2);
    }

    #[test]
    fn records_without_the_newer_fields_still_decode() {
        /// The record as persisted before `clean_streak` existed.
        #[derive(Serialize)]
        struct OldRecord {
            score: u32,
            agreed: u64,
            disagreed: u64,
            missed: u64,
            first_seen_ms: u64,
            last_seen_ms: u64,
        }
        let old = OldRecord {
            score: 42,
            agreed: 1,
            disagreed: 2,
            missed: 3,
            first_seen_ms: 4,
            last_seen_ms: 5,
        };
        let bytes = agora_protocol::codec::encode(&old);
        let back: PeerRecord = agora_protocol::codec::decode_unbounded(&bytes, 1024).unwrap();
        assert_eq!(back.score, 42);
        assert_eq!(back.last_seen_ms, 5);
        assert_eq!(back.clean_streak, 0);
        assert_eq!((back.local_agreed, back.own_score), (0, None));
        // Excluded before own scores were kept: now on probation, since no
        // own evidence is on record.
        let mut b = ReputationBook::default();
        b.restore(key(1).peer_id(), back);
        assert_eq!(b.standing(&key(1).peer_id()), Standing::Probation);
    }

    #[test]
    fn records_round_trip_through_cbor() {
        let r = PeerRecord {
            score: 42,
            agreed: 1,
            disagreed: 2,
            missed: 3,
            first_seen_ms: 4,
            last_seen_ms: 5,
            clean_streak: 6,
            local_agreed: 7,
            own_score: Some(8),
        };
        let bytes = agora_protocol::codec::encode(&r);
        let back: PeerRecord = agora_protocol::codec::decode_unbounded(&bytes, 1024).unwrap();
        assert_eq!(back, r);
    }
}
