//! A deterministic simulation of verification without a network: `nodes`
//! executors, some of them liars, and one submitter that runs `jobs` jobs
//! one after another through the real [`select_executors_with`],
//! [`AdaptivePolicy`], [`Quorum`] (with signed attestations) and
//! [`ReputationBook`], and counts how many wrong results it accepted and
//! how many executions each verified job cost.
//!
//! **Model.** Honest executors always return the job's true hash. A liar,
//! when it lies, returns its own random hash ([`Liars::Independent`]) or
//! the one wrong hash all liars agree on ([`Liars::Colluding`]); *when* it
//! lies is its [`Strategy`]. Every executor answers; answers arrive in a
//! random order, escalated executors after the first ones, and in a spot
//! check the checked executor's answer is fed first (as the adaptive
//! module requires of the node). Every assigned executor runs the job, so
//! every assignment counts as one execution even when its answer arrives
//! after the decision. Nobody misses a deadline. The submitter's book is
//! the only view of reputation and every verdict is local; solo verdicts
//! are not applied ([`ReplicationPlan::counts_as_evidence`]). The same
//! config and seed give the same report. An optional [`Attack`] adds
//! framers and Sybils that gossip verdicts into the submitter's book
//! between jobs ([`attack`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use agora_protocol::{Attestation, ContentId, JobSpec, NodeKey, PeerId, Verified};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::adaptive::{AdaptivePolicy, PlanKind, ReplicationPlan};
use crate::quorum::{Decision, Quorum, QuorumConfigError, QuorumError};
use crate::reputation::{ReputationBook, VerdictError};
use crate::select::{select_executors_with, Candidate, SelectConfig};

pub mod attack;
pub use attack::{Attack, AttackCounts};

/// Most executors a simulation may have (each has a key and a record).
pub const MAX_SIM_NODES: usize = 100_000;

/// How liars choose their wrong hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liars {
    /// Each liar returns a wrong hash of its own.
    Independent,
    /// All liars return the same wrong hash.
    Colluding,
}

/// When a liar lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// On every job.
    Always,
    /// On each job with this probability, in thousandths (a faulty node).
    Flaky {
        /// Chance of a wrong answer, in thousandths.
        lie_permille: u32,
    },
    /// Honestly until the submitter would trust it to run jobs alone
    /// (by the run's adaptive policy, or the default policy under fixed
    /// replication), then on every job: the attack adaptive replication is
    /// weakest against. The liar is shown the submitter's book, which a
    /// real one could only estimate.
    Sleeper,
}

/// How executors are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// [`select_executors_with`] over the submitter's book: weighted by
    /// score, excluded peers never, newcomers bounded, subnets spread.
    Weighted(SelectConfig),
    /// The same draw over an empty book: every peer equally likely, nobody
    /// excluded ("without reputation"); subnets are still spread.
    Uniform,
}

/// The replication every job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// Always k-of-n.
    Fixed {
        /// Executors.
        n: u8,
        /// Equal hashes needed.
        k: u8,
    },
    /// k-of-n, or 1-of-1 on a trusted executor, as the policy says.
    Adaptive {
        /// Executors at full replication.
        n: u8,
        /// Equal hashes needed at full replication.
        k: u8,
        /// When to run alone.
        policy: AdaptivePolicy,
    },
}

impl Replication {
    /// The full replication, n and k.
    fn full(&self) -> (u8, u8) {
        match *self {
            Replication::Fixed { n, k } | Replication::Adaptive { n, k, .. } => (n, k),
        }
    }
}

/// One simulation run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    /// Executors (the submitter is extra).
    pub nodes: usize,
    /// Share of executors that lie, in thousandths (rounded to the
    /// nearest whole node).
    pub liar_permille: u32,
    /// Independent or colluding liars.
    pub liars: Liars,
    /// When liars lie.
    pub strategy: Strategy,
    /// Replication asked for.
    pub replication: Replication,
    /// How executors are drawn.
    pub selection: Selection,
    /// Jobs submitted, one after another.
    pub jobs: u64,
    /// Most executors one job may use, escalation included (at least the
    /// full n).
    pub escalation_cap: u8,
    /// Executors per subnet key (0: no subnet known for anyone).
    pub nodes_per_subnet: usize,
    /// Whether liars sit together on their own subnets (an attacker's
    /// machines) rather than scattered among honest nodes.
    pub liars_share_subnets: bool,
    /// Simulated time between two jobs, in ms: it paces the gossip
    /// budgets' windows.
    pub ms_per_job: u64,
    /// A reputation attack beside the jobs (none by default).
    pub attack: Attack,
    /// Seed of everything random.
    pub seed: u64,
}

impl Default for SimConfig {
    /// 1,000 nodes, 10% independent liars that always lie, fixed 2-of-3
    /// with weighted selection, 10,000 jobs one second apart, cap 6, 8
    /// nodes per subnet, no attack.
    fn default() -> Self {
        Self {
            nodes: 1000,
            liar_permille: 100,
            liars: Liars::Independent,
            strategy: Strategy::Always,
            replication: Replication::Fixed { n: 3, k: 2 },
            selection: Selection::Weighted(SelectConfig::default()),
            jobs: 10_000,
            escalation_cap: 6,
            nodes_per_subnet: 8,
            liars_share_subnets: false,
            ms_per_job: 1000,
            attack: Attack::default(),
            seed: 1,
        }
    }
}

/// What a run counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Jobs submitted.
    pub jobs: u64,
    /// Jobs that ended verified.
    pub verified: u64,
    /// Verified jobs whose accepted hash was wrong.
    pub wrong: u64,
    /// Jobs that ended failed (no consensus within the cap, or no
    /// executor left to ask).
    pub failed: u64,
    /// Executor assignments, each one execution.
    pub executions: u64,
    /// Jobs run by one trusted executor alone.
    pub solo: u64,
    /// Solo jobs whose (unchecked) result was wrong.
    pub solo_wrong: u64,
    /// Jobs spot-checked at full replication.
    pub spot_checks: u64,
    /// Spot checks in which the checked executor disagreed with the
    /// accepted result.
    pub spot_checks_caught: u64,
    /// Liars in the run.
    pub liars: u64,
    /// Liars the book excludes at the end.
    pub liars_excluded: u64,
    /// Honest executors trusted to run alone at the end (adaptive only).
    pub honest_trusted: u64,
    /// Index of the last job whose wrong result was accepted.
    pub last_wrong_job: Option<u64>,
    /// The same counts for the second half of the jobs only, when
    /// reputation has settled.
    pub second_half: HalfCounts,
    /// What the run's attack achieved.
    pub attack: AttackCounts,
}

/// Counts over part of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HalfCounts {
    /// Jobs submitted.
    pub jobs: u64,
    /// Jobs verified.
    pub verified: u64,
    /// Verified with a wrong hash.
    pub wrong: u64,
    /// Executions.
    pub executions: u64,
}

impl HalfCounts {
    /// Wrong acceptances per submitted job.
    pub fn wrong_rate(&self) -> f64 {
        ratio(self.wrong, self.jobs)
    }

    /// Executions per verified job.
    pub fn executions_per_verified(&self) -> f64 {
        ratio(self.executions, self.verified)
    }
}

impl SimReport {
    /// Wrong acceptances per submitted job.
    pub fn wrong_rate(&self) -> f64 {
        ratio(self.wrong, self.jobs)
    }

    /// Executions per verified job (failed jobs' executions included).
    pub fn executions_per_verified(&self) -> f64 {
        ratio(self.executions, self.verified)
    }

    /// Adds another run's counts (for averaging over seeds).
    pub fn add(&mut self, other: &SimReport) {
        self.jobs += other.jobs;
        self.verified += other.verified;
        self.wrong += other.wrong;
        self.failed += other.failed;
        self.executions += other.executions;
        self.solo += other.solo;
        self.solo_wrong += other.solo_wrong;
        self.spot_checks += other.spot_checks;
        self.spot_checks_caught += other.spot_checks_caught;
        self.liars += other.liars;
        self.liars_excluded += other.liars_excluded;
        self.honest_trusted += other.honest_trusted;
        self.last_wrong_job = self.last_wrong_job.max(other.last_wrong_job);
        self.second_half.jobs += other.second_half.jobs;
        self.second_half.verified += other.second_half.verified;
        self.second_half.wrong += other.second_half.wrong;
        self.second_half.executions += other.second_half.executions;
        self.attack.add(&other.attack);
    }
}

/// `a / b`, 0 when `b` is 0.
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Why a run stopped. Any of these means a bug in the simulation or the
/// code under test, not a simulated outcome.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// More nodes than [`MAX_SIM_NODES`], or none.
    #[error("{0} nodes: a simulation needs 1 to {MAX_SIM_NODES}")]
    Nodes(usize),
    /// The replication or cap is invalid.
    #[error(transparent)]
    Config(#[from] QuorumConfigError),
    /// The quorum refused an event the simulation fed it.
    #[error("job {job}: {source}")]
    Quorum {
        /// Job index.
        job: u64,
        /// The refusal (boxed: it is large).
        source: Box<QuorumError>,
    },
    /// The book refused a verdict the quorum produced.
    #[error("job {job}: {source}")]
    Verdict {
        /// Job index.
        job: u64,
        /// The refusal (boxed: it is large).
        source: Box<VerdictError>,
    },
}

/// What one executor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Always right.
    Honest,
    /// Lies as the strategy says.
    Liar,
    /// Answers right; gossips attack verdicts.
    Framer,
    /// Always returns the attacker's wrong hash; gossips attack verdicts.
    Sybil,
}

/// The simulated network: keys, roles, bids, and the submitter's book.
struct World {
    /// Each executor's signing key.
    keys: Vec<NodeKey>,
    /// Each executor's PeerId (cached: deriving it is not free).
    peers: Vec<PeerId>,
    /// Each executor's role.
    roles: Vec<Role>,
    /// Indices of the honest executors.
    honest: Vec<usize>,
    /// Indices of the framers.
    framers: Vec<usize>,
    /// Indices of the Sybils.
    sybils: Vec<usize>,
    /// Indices of both.
    attackers: Vec<usize>,
    /// PeerId back to index.
    index: HashMap<PeerId, usize>,
    /// Every executor's standing bid.
    candidates: Vec<Candidate>,
    /// The submitter's key: it signs every job's spec.
    submitter_key: NodeKey,
    /// The submitter.
    submitter: PeerId,
    /// The submitter's opinion of everyone.
    book: ReputationBook,
    /// An empty book, for uniform selection.
    blank: ReputationBook,
}

/// Deterministic 32-byte secret for key `i` of a run.
fn secret(seed: u64, i: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&i.to_le_bytes());
    s[16..].copy_from_slice(b"agora-sim-key-v1");
    s
}

/// A hash naming `what` for job `job` and executor `who`.
fn hash_of(what: &[u8], job: u64, who: u64) -> ContentId {
    let mut b = Vec::with_capacity(what.len() + 16);
    b.extend_from_slice(what);
    b.extend_from_slice(&job.to_le_bytes());
    b.extend_from_slice(&who.to_le_bytes());
    ContentId::of(&b)
}

impl World {
    fn new(cfg: &SimConfig, rng: &mut ChaCha8Rng) -> Result<Self, SimError> {
        if cfg.nodes == 0 || cfg.nodes > MAX_SIM_NODES {
            return Err(SimError::Nodes(cfg.nodes));
        }
        let a = cfg.attack;
        if a.framers.saturating_add(a.sybils) > MAX_SIM_NODES - cfg.nodes {
            return Err(SimError::Nodes(
                cfg.nodes.saturating_add(a.framers).saturating_add(a.sybils),
            ));
        }
        let total = cfg.nodes + a.framers + a.sybils;
        let keys: Vec<NodeKey> = (0..total as u64)
            .map(|i| NodeKey::from_secret(secret(cfg.seed, i)))
            .collect();
        let peers: Vec<PeerId> = keys.iter().map(NodeKey::peer_id).collect();
        let liars = (cfg.nodes as u64 * u64::from(cfg.liar_permille.min(1000)) + 500) / 1000;
        let mut order: Vec<usize> = (0..cfg.nodes).collect();
        order.shuffle(rng);
        let mut roles = vec![Role::Honest; cfg.nodes];
        for &i in order.iter().take(liars as usize) {
            roles[i] = Role::Liar;
        }
        // Subnets are handed out along `order`; liars come first in it, so
        // to scatter them the order is shuffled again.
        if !cfg.liars_share_subnets {
            order.shuffle(rng);
        }
        // Attackers come after: each on a subnet of its own (no key), the
        // attacker's best case.
        let mut subnet = vec![None; total];
        for (pos, &i) in order.iter().enumerate() {
            subnet[i] = pos.checked_div(cfg.nodes_per_subnet).map(|s| s as u64);
        }
        roles.extend(std::iter::repeat_n(Role::Framer, a.framers));
        roles.extend(std::iter::repeat_n(Role::Sybil, a.sybils));
        let with = |role| (0..total).filter(|i| roles[*i] == role).collect::<Vec<_>>();
        let (honest, framers, sybils) = (with(Role::Honest), with(Role::Framer), with(Role::Sybil));
        let attackers = framers.iter().chain(&sybils).copied().collect();
        let candidates = peers
            .iter()
            .zip(&subnet)
            .map(|(peer, s)| Candidate {
                peer: *peer,
                load_permille: 0,
                running: 0,
                max_jobs: 4,
                subnet: *s,
            })
            .collect();
        let index = peers.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        let submitter_key = NodeKey::from_secret(secret(cfg.seed, u64::MAX));
        let submitter = submitter_key.peer_id();
        Ok(Self {
            submitter_key,
            keys,
            peers,
            roles,
            honest,
            framers,
            sybils,
            attackers,
            index,
            candidates,
            submitter,
            book: ReputationBook::default(),
            blank: ReputationBook::default(),
        })
    }

    fn select(
        &self,
        cfg: &SimConfig,
        n: usize,
        exclude: &BTreeSet<PeerId>,
        seed: u64,
    ) -> Vec<PeerId> {
        let (book, sc) = match cfg.selection {
            Selection::Weighted(sc) => (&self.book, sc),
            Selection::Uniform => (&self.blank, SelectConfig::default()),
        };
        select_executors_with(
            &self.candidates,
            book,
            n,
            &self.submitter,
            exclude,
            seed,
            &sc,
        )
    }

    /// The hash executor `i` returns for job `job`.
    fn answer(&self, cfg: &SimConfig, i: usize, job: u64, rng: &mut ChaCha8Rng) -> ContentId {
        if self.roles[i] == Role::Sybil {
            return hash_of(b"agreed lie", job, 0);
        }
        let lies = self.roles[i] == Role::Liar
            && match cfg.strategy {
                Strategy::Always => true,
                Strategy::Flaky { lie_permille } => rng.gen_range(0..1000) < lie_permille,
                Strategy::Sleeper => {
                    let policy = match cfg.replication {
                        Replication::Adaptive { policy, .. } => policy,
                        Replication::Fixed { .. } => AdaptivePolicy::default(),
                    };
                    policy.is_trusted(&self.book, &self.peers[i])
                }
            };
        match (lies, cfg.liars) {
            (false, _) => hash_of(b"right", job, 0),
            (true, Liars::Colluding) => hash_of(b"agreed lie", job, 0),
            (true, Liars::Independent) => hash_of(b"own lie", job, i as u64),
        }
    }
}

/// Runs one simulation.
pub fn run(cfg: &SimConfig) -> Result<SimReport, SimError> {
    let (n, k) = cfg.replication.full();
    // Checks n, k and the cap once, before any work.
    Quorum::new(ContentId::of(b"check"), n, k, cfg.escalation_cap)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut world = World::new(cfg, &mut rng)?;
    let mut attack_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xa77ac4);
    let mut report = SimReport {
        liars: world.roles.iter().filter(|r| **r == Role::Liar).count() as u64,
        ..SimReport::default()
    };
    for job in 0..cfg.jobs {
        let before = report;
        run_job(cfg, &mut world, job, &mut rng, &mut report)?;
        if cfg.attack.verdicts_per_job > 0 {
            let now = now_ms(cfg, job);
            attack::gossip(
                &mut world,
                &cfg.attack,
                job,
                now,
                &mut attack_rng,
                &mut report.attack,
            )?;
        }
        if job >= cfg.jobs / 2 {
            let h = &mut report.second_half;
            h.jobs += 1;
            h.verified += report.verified - before.verified;
            h.wrong += report.wrong - before.wrong;
            h.executions += report.executions - before.executions;
        }
    }
    report.jobs = cfg.jobs;
    for (i, peer) in world.peers.iter().enumerate() {
        match world.roles[i] {
            Role::Liar => report.liars_excluded += u64::from(world.book.is_excluded(peer)),
            Role::Honest => {
                if let Replication::Adaptive { policy, .. } = cfg.replication {
                    report.honest_trusted += u64::from(policy.is_trusted(&world.book, peer));
                }
            }
            Role::Framer | Role::Sybil => {}
        }
    }
    attack::tally(&world, &mut report.attack);
    Ok(report)
}

/// The simulated clock at job `job` (ms; job 0 ends at `ms_per_job`).
fn now_ms(cfg: &SimConfig, job: u64) -> u64 {
    job.saturating_add(1).saturating_mul(cfg.ms_per_job)
}

/// Submits, runs and judges one job.
fn run_job(
    cfg: &SimConfig,
    world: &mut World,
    job: u64,
    rng: &mut ChaCha8Rng,
    report: &mut SimReport,
) -> Result<(), SimError> {
    let qerr = |source| SimError::Quorum {
        job,
        source: Box::new(source),
    };
    let (n, k) = cfg.replication.full();
    let none = BTreeSet::new();
    let (plan, first) = match cfg.replication {
        Replication::Fixed { .. } => (
            ReplicationPlan {
                n,
                k,
                kind: PlanKind::Full,
            },
            None,
        ),
        Replication::Adaptive { policy, .. } => {
            let Some(first) = world.select(cfg, 1, &none, rng.gen()).first().copied() else {
                report.failed += 1;
                return Ok(());
            };
            (
                policy.plan(&world.book, &first, n, k, rng.gen()),
                Some(first),
            )
        }
    };
    match plan.kind {
        PlanKind::Solo => report.solo += 1,
        PlanKind::SpotCheck => report.spot_checks += 1,
        PlanKind::Full => {}
    }
    let cap = if plan.is_solo() {
        1
    } else {
        cfg.escalation_cap
    };
    let spec = world.submitter_key.sign(&JobSpec {
        replication: agora_protocol::Replication {
            n: plan.n,
            k: plan.k,
        },
        nonce: job,
        ..JobSpec::wasm(hash_of(b"module", 0, cfg.seed))
    });
    let job_id = spec.id();
    let mut q = Quorum::new(job_id, plan.n, plan.k, cap)?;
    let mut queue: VecDeque<usize> = VecDeque::new();
    if let Some(first) = first {
        q.assign(first).map_err(qerr)?;
        queue.push_back(world.index[&first]);
    }
    // Answers come in a random order, each batch of executors after the
    // ones assigned before it, except that the adaptive first pick joins
    // the first batch's shuffle unless it is being spot-checked: then it
    // answers first.
    let mut shuffle_from = usize::from(plan.kind == PlanKind::SpotCheck);
    let mut decision = q.decision();
    while !decision.is_final() {
        let more = match decision {
            Decision::NeedMore { how_many, .. } => {
                let used: BTreeSet<PeerId> = q.assigned().iter().copied().collect();
                world.select(cfg, usize::from(how_many), &used, rng.gen())
            }
            _ => Vec::new(),
        };
        if !more.is_empty() {
            let start = queue.len();
            for p in &more {
                decision = q.assign(*p).map_err(qerr)?;
                queue.push_back(world.index[p]);
            }
            let from = shuffle_from.min(start);
            queue.make_contiguous()[from..].shuffle(rng);
            shuffle_from = usize::MAX;
            continue;
        }
        let Some(i) = queue.pop_front() else {
            // Nobody left to ask: the job runs out its deadline.
            decision = q.job_deadline_passed().map_err(qerr)?;
            break;
        };
        let result_hash = world.answer(cfg, i, job, rng);
        let att = world.keys[i].sign(&Attestation {
            job: job_id,
            result_hash,
            exit_code: 0,
            finished_at_ms: job,
        });
        decision = q.attest(&att).map_err(qerr)?;
    }
    report.executions += q.assigned().len() as u64;
    match &decision {
        Decision::Verified {
            hash, disagreeing, ..
        } => {
            report.verified += 1;
            if *hash != hash_of(b"right", job, 0) {
                report.wrong += 1;
                report.solo_wrong += u64::from(plan.is_solo());
                report.last_wrong_job = Some(job);
            }
            if plan.kind == PlanKind::SpotCheck
                && first.is_some_and(|f| disagreeing.iter().any(|(p, _)| *p == f))
            {
                report.spot_checks_caught += 1;
            }
        }
        _ => report.failed += 1,
    }
    if plan.counts_as_evidence() {
        let now = now_ms(cfg, job);
        if let Some(verdict) = q.verdict(&spec, &BTreeMap::new(), now) {
            let signed = Verified {
                signer: world.submitter,
                value: verdict,
            };
            world
                .book
                .apply_verdict(&signed, true, now)
                .map_err(|source| SimError::Verdict {
                    job,
                    source: Box::new(source),
                })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reputation::ReputationConfig;

    fn small(replication: Replication, liars: Liars, liar_permille: u32) -> SimConfig {
        SimConfig {
            nodes: 200,
            liar_permille,
            liars,
            replication,
            jobs: 1000,
            ..SimConfig::default()
        }
    }

    const FIXED_2_3: Replication = Replication::Fixed { n: 3, k: 2 };

    fn adaptive(streak: u64, permille: u32) -> Replication {
        Replication::Adaptive {
            n: 3,
            k: 2,
            policy: AdaptivePolicy::new(streak, permille).unwrap(),
        }
    }

    #[test]
    fn without_liars_every_job_is_right_at_exactly_n_executions() {
        for (rep, n) in [(FIXED_2_3, 3), (Replication::Fixed { n: 5, k: 3 }, 5)] {
            let cfg = SimConfig {
                jobs: 300,
                escalation_cap: 10,
                ..small(rep, Liars::Independent, 0)
            };
            let r = run(&cfg).unwrap();
            assert_eq!((r.liars, r.wrong, r.failed), (0, 0, 0));
            assert_eq!(r.verified, 300);
            assert_eq!(r.executions, 300 * n);
            assert_eq!(r.last_wrong_job, None);
            assert_eq!(r.second_half.jobs, 150);
        }
    }

    #[test]
    fn same_config_same_report() {
        let cfg = SimConfig {
            jobs: 300,
            ..small(FIXED_2_3, Liars::Colluding, 300)
        };
        assert_eq!(run(&cfg).unwrap(), run(&cfg).unwrap());
    }

    #[test]
    fn independent_liars_never_win_and_liars_count_is_rounded() {
        // k = 2 equal wrong hashes are needed; independent liars never
        // produce two, whatever the selection.
        for selection in [
            Selection::Uniform,
            Selection::Weighted(SelectConfig::default()),
        ] {
            let cfg = SimConfig {
                selection,
                ..small(FIXED_2_3, Liars::Independent, 300)
            };
            let r = run(&cfg).unwrap();
            assert_eq!(r.liars, 60);
            assert_eq!(r.wrong, 0, "{selection:?}");
            // Disagreement costs escalation: more than 3 per job.
            assert!(r.executions_per_verified() > 3.0);
        }
    }

    #[test]
    fn colluders_fewer_than_k_never_win() {
        // 8 nodes, 2 colluders, 3-of-5: at most 2 equal wrong hashes.
        let cfg = SimConfig {
            nodes: 8,
            nodes_per_subnet: 0,
            escalation_cap: 10,
            jobs: 400,
            ..small(Replication::Fixed { n: 5, k: 3 }, Liars::Colluding, 250)
        };
        for selection in [
            Selection::Uniform,
            Selection::Weighted(SelectConfig::default()),
        ] {
            let r = run(&SimConfig { selection, ..cfg }).unwrap();
            assert_eq!(r.liars, 2);
            assert_eq!(r.wrong, 0);
            assert_eq!(r.verified, 400);
        }
    }

    #[test]
    fn reputation_cuts_colluders_wins() {
        let cfg = small(FIXED_2_3, Liars::Colluding, 300);
        let uniform = run(&SimConfig {
            selection: Selection::Uniform,
            ..cfg
        })
        .unwrap();
        let weighted = run(&cfg).unwrap();
        // Uniform picks put two colluders together on ~22% of jobs; they
        // win where escalation then draws enough colluders to lead by k.
        assert!(uniform.wrong > 50, "{uniform:?}");
        assert!(
            weighted.wrong * 4 < uniform.wrong,
            "{weighted:?} vs {uniform:?}"
        );
    }

    #[test]
    fn colluders_on_one_subnet_are_kept_apart() {
        // 9 nodes on 3 subnets of 3; the 3 colluders share one. Scattered,
        // they can fill a job's places, or two of them and the one its
        // dispute adds, and lead by k.
        let cfg = SimConfig {
            nodes: 9,
            nodes_per_subnet: 3,
            liars_share_subnets: true,
            jobs: 400,
            ..small(FIXED_2_3, Liars::Colluding, 334)
        };
        assert_eq!(run(&cfg).unwrap().wrong, 0);
        let uniform = run(&SimConfig {
            selection: Selection::Uniform,
            ..cfg
        })
        .unwrap();
        assert_eq!(
            uniform.wrong, 0,
            "the subnet spread applies to uniform draws too"
        );
        let scattered = run(&SimConfig {
            selection: Selection::Uniform,
            nodes_per_subnet: 0,
            ..cfg
        })
        .unwrap();
        assert!(scattered.wrong > 0);
    }

    #[test]
    fn adaptive_costs_less_and_always_liars_never_run_alone() {
        let fixed = run(&small(FIXED_2_3, Liars::Colluding, 100)).unwrap();
        let adaptive = run(&small(adaptive(3, 50), Liars::Colluding, 100)).unwrap();
        assert!(adaptive.solo > 0);
        assert!(adaptive.spot_checks > 0);
        assert!(
            adaptive.executions < fixed.executions,
            "{adaptive:?} vs {fixed:?}"
        );
        assert!(
            adaptive.second_half.executions_per_verified() < 2.0,
            "{adaptive:?}"
        );
        // Liars that always lie never build a streak: no solo job is
        // theirs, so no solo result is wrong and no spot check catches one.
        assert_eq!(adaptive.solo_wrong, 0);
        assert_eq!(adaptive.spot_checks_caught, 0);
    }

    #[test]
    fn spot_checks_are_what_stops_trusted_liars() {
        let sleeper = |permille| SimConfig {
            strategy: Strategy::Sleeper,
            ..small(adaptive(3, permille), Liars::Independent, 100)
        };
        // Never checked: once trusted, a sleeper's lies are accepted.
        let unchecked = run(&sleeper(0)).unwrap();
        assert_eq!(unchecked.spot_checks, 0);
        assert!(unchecked.solo_wrong > 0, "{unchecked:?}");
        assert_eq!(unchecked.solo_wrong, unchecked.wrong);
        // Always checked: nobody runs alone, independent lies are caught.
        let checked = run(&sleeper(1000)).unwrap();
        assert_eq!(checked.solo, 0);
        assert_eq!(checked.wrong, 0);
        assert!(checked.spot_checks_caught > 0, "{checked:?}");
    }

    /// 200 honest nodes, 1,000 jobs ten minutes apart (two gossip
    /// windows), and an attack of `framers` and `sybils` gossiping ten
    /// verdicts per job (none: the control run).
    fn attacked(framers: usize, sybils: usize, verdicts_per_job: u32) -> SimConfig {
        SimConfig {
            ms_per_job: 600_000 / 100,
            attack: Attack {
                framers,
                sybils,
                verdicts_per_job,
            },
            ..small(FIXED_2_3, Liars::Independent, 0)
        }
    }

    #[test]
    fn framers_exclude_no_honest_node_and_every_forgery_is_refused() {
        let r = run(&attacked(10, 0, 10)).unwrap();
        let a = r.attack;
        assert_eq!(a.gossiped, 10_000);
        // A quarter of the verdicts are forged: every one refused, and the
        // rest carry valid evidence.
        assert!(a.refused > 2000 && a.refused < 3000, "{a:?}");
        // The framers' word moved honest scores, within the budgets...
        assert!(a.taken_from_honest > 0, "{a:?}");
        let windows = 1000 * 6_000 / ReputationConfig::default().gossip_window_ms + 1;
        let cap = u64::from(ReputationConfig::default().gossip_peer_budget) * windows * 200;
        assert!(a.taken_from_honest <= cap, "{a:?}");
        // ...but never got anyone excluded or demoted from established.
        assert_eq!(a.honest_excluded, 0, "{a:?}");
        let control = run(&attacked(10, 0, 0)).unwrap().attack;
        assert_eq!(control.gossiped, 0);
        assert!(control.honest_established > 0);
        assert_eq!(r.wrong, 0);
        assert_eq!(r.verified, 1000);
    }

    #[test]
    fn sybils_praised_by_framers_never_become_trusted_or_win() {
        for (framers, verdicts) in [(0, 10), (10, 10)] {
            let r = run(&attacked(framers, 50, verdicts)).unwrap();
            let a = r.attack;
            // Praise reaches only Sybils this node itself saw agree (two
            // of them on one job at the start); none is ever established.
            assert_eq!(
                (a.sybils_established, a.sybils_trusted),
                (0, 0),
                "{framers} framers: {a:?}"
            );
            assert_eq!(a.honest_excluded, 0, "{a:?}");
            // Two Sybils on one job could win it: only while everyone is
            // a newcomer, as in the control run without gossip.
            let control = run(&attacked(framers, 50, 0)).unwrap();
            assert!(
                r.second_half.wrong <= control.second_half.wrong,
                "{r:?} vs {control:?}"
            );
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        let none = SimConfig {
            nodes: 0,
            ..SimConfig::default()
        };
        assert!(matches!(run(&none), Err(SimError::Nodes(0))));
        let bad = SimConfig {
            replication: Replication::Fixed { n: 4, k: 2 },
            ..SimConfig::default()
        };
        assert!(matches!(run(&bad), Err(SimError::Config(_))));
        let low_cap = SimConfig {
            escalation_cap: 2,
            ..SimConfig::default()
        };
        assert!(matches!(run(&low_cap), Err(SimError::Config(_))));
    }
}
