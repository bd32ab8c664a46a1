//! Unit and property tests of the job core: a table stands in for the
//! network, keys sign real attestations, time is a number.

use std::collections::{BTreeMap, BTreeSet};

use agora_protocol::{
    Attestation, Bid, ExecutorSpec, FailKind, JobSpec, NodeKey, PeerId, Replication, Resources,
    ResultBundle,
};
use agora_verifier::select::Candidate;
use agora_verifier::PlanKind;
use proptest::prelude::*;
use serde_bytes::ByteBuf;

use super::*;
use crate::jobs::checks::Capacity;
use crate::jobs::record::JobRecordDb;
use crate::jobs::state::{JobState, ReplicationMode};

const TIMEOUT_MS: u64 = 10_000;

/// The network as a table: every node online runs Wasm.
struct Table {
    online: Vec<PeerId>,
    plan: PlanKind,
    /// Labels advertised, by node (none for the others).
    labels: BTreeMap<PeerId, BTreeMap<String, String>>,
    /// Docker images held, by node (every node runs Docker and fetches
    /// images it lacks).
    images: BTreeMap<PeerId, Vec<String>>,
}

fn capable() -> Capacity {
    Capacity {
        executors: BTreeMap::from([("wasm".to_string(), Vec::new())]),
        memory_bytes: 1 << 30,
        cpu_cores: 4,
        labels: BTreeMap::new(),
        image_fetch: false,
    }
}

impl World for Table {
    fn online(&self) -> (Vec<(PeerId, Capacity)>, usize) {
        let online = self
            .online
            .iter()
            .map(|p| {
                let mut c = capable();
                c.labels = self.labels.get(p).cloned().unwrap_or_default();
                let held = self.images.get(p).cloned().unwrap_or_default();
                c.executors.insert("docker".into(), held);
                c.image_fetch = true;
                (*p, c)
            })
            .collect();
        (online, self.online.len())
    }

    fn select(
        &self,
        candidates: &[Candidate],
        want: usize,
        used: &BTreeSet<PeerId>,
        _seed: u64,
    ) -> Vec<PeerId> {
        candidates
            .iter()
            .map(|c| c.peer)
            .filter(|p| !used.contains(p))
            .take(want)
            .collect()
    }

    fn plan(&self, _first: &PeerId, _n: u8, _k: u8) -> PlanChoice {
        PlanChoice {
            kind: self.plan,
            streak: 10,
            needed: 10,
        }
    }

    fn runs_here(&self, _spec: &JobSpec) -> bool {
        false
    }
}

/// A job, its submitter and a pool of executors with their keys.
struct Fixture {
    core: JobCore,
    world: Table,
    keys: Vec<NodeKey>,
    now: u64,
    /// Every action the core asked for, in order.
    log: Vec<Action>,
}

fn bundle(answer: u8) -> ResultBundle {
    ResultBundle {
        exit_code: 0,
        stdout: ByteBuf::from(vec![answer]),
        stderr: ByteBuf::new(),
        outputs: BTreeMap::new(),
        duration_ms: 1,
    }
}

impl Fixture {
    fn new(n: u8, k: u8, executors: usize) -> Self {
        Self::with(n, k, executors, ReplicationMode::Fixed)
    }

    fn with(n: u8, k: u8, executors: usize, replication: ReplicationMode) -> Self {
        Self::requiring(n, k, executors, replication, BTreeMap::new())
    }

    fn requiring(
        n: u8,
        k: u8,
        executors: usize,
        replication: ReplicationMode,
        requires: BTreeMap<String, String>,
    ) -> Self {
        let wasm = ExecutorSpec::Wasm {
            module: ContentId::of(b"module"),
        };
        Self::build(n, k, executors, replication, requires, wasm)
    }

    fn build(
        n: u8,
        k: u8,
        executors: usize,
        replication: ReplicationMode,
        requires: BTreeMap<String, String>,
        executor: ExecutorSpec,
    ) -> Self {
        let submitter = NodeKey::generate();
        let spec = submitter.sign(&JobSpec {
            executor,
            args: vec![],
            env: BTreeMap::new(),
            stdin: None,
            inputs: BTreeMap::new(),
            outputs: vec![],
            resources: Resources {
                timeout_ms: TIMEOUT_MS,
                ..Resources::default()
            },
            replication: Replication { n, k },
            created_at_ms: 1,
            nonce: 7,
            requires,
        });
        let rec = JobRecordDb {
            spec,
            state: JobState::Pending,
            allow_local: false,
            submitted_at_ms: 1_000,
            finished_at_ms: None,
            reason: None,
            bids: 0,
            offers: 0,
            cap: cap_for(n),
            log: vec![],
            executors: vec![],
            result: None,
            verdict: None,
            events: vec![],
            replication,
            plan: None,
        };
        let cfg = CoreConfig {
            me: submitter.peer_id(),
            bid_window_ms: 300,
            bid_window_max_ms: 2_000,
        };
        let keys: Vec<NodeKey> = (0..executors).map(|_| NodeKey::generate()).collect();
        Self {
            core: JobCore::new(cfg, rec).unwrap(),
            world: Table {
                online: keys.iter().map(NodeKey::peer_id).collect(),
                plan: PlanKind::Full,
                labels: BTreeMap::new(),
                images: BTreeMap::new(),
            },
            keys,
            now: 1_000,
            log: Vec::new(),
        }
    }

    fn peer(&self, i: usize) -> PeerId {
        self.keys[i].peer_id()
    }

    /// Feeds `input`, answering offers and result fetches at once as the
    /// shell does; returns the actions.
    fn step(&mut self, input: Input) -> Vec<Action> {
        let mut pending = vec![input];
        let mut all = Vec::new();
        while let Some(input) = pending.pop() {
            for a in self.core.step(input, self.now, &self.world) {
                match &a {
                    Action::Offer { .. } => pending.push(Input::OfferSent(Ok(()))),
                    Action::FetchResult { hash, agreeing, .. } => {
                        pending.push(Input::ResultKept(Ok(kept(*hash, agreeing.clone()))));
                    }
                    _ => {}
                }
                all.push(a);
            }
        }
        self.log.extend(all.iter().cloned());
        all
    }

    fn at(&mut self, ms: u64) -> Vec<Action> {
        self.now = self.now.max(ms);
        self.step(Input::Tick)
    }

    fn bid(&mut self, i: usize) -> Vec<Action> {
        let bid = Bid {
            job: self.core.id(),
            running_jobs: 0,
            max_jobs: 4,
            queue_len: 0,
            load_permille: 0,
        };
        self.step(Input::Bid {
            peer: self.peer(i),
            bid,
            subnet: None,
        })
    }

    /// The latest attempt assigned to executor `i`.
    fn attempt(&self, i: usize) -> u32 {
        let p = self.peer(i);
        self.core
            .record()
            .executors
            .iter()
            .rev()
            .find(|e| e.peer == p)
            .map(|e| e.attempt)
            .expect("assigned")
    }

    fn report(&mut self, i: usize, answer: u8) -> Vec<Action> {
        self.report_signed_by(i, i, answer)
    }

    fn report_signed_by(&mut self, from: usize, signer: usize, answer: u8) -> Vec<Action> {
        let b = bundle(answer);
        let attestation = self.keys[signer].sign(&Attestation {
            job: self.core.id(),
            result_hash: b.result_hash(),
            exit_code: 0,
            finished_at_ms: self.now,
        });
        let report = CheckedReport {
            attestation: attestation.check().unwrap(),
            attempt: self.attempt(from),
            bundle: BundleRef::Inline(b),
        };
        self.step(Input::Report {
            peer: self.peer(from),
            report: Box::new(report),
        })
    }

    /// Starts the job and assigns executors 0..n (only they bid; the
    /// others stay in reserve).
    fn assigned(mut self) -> Self {
        self.step(Input::Start);
        let n = spec_of(self.core.record()).unwrap().replication.n;
        for i in 0..usize::from(n) {
            self.bid(i);
        }
        let soft = self.now + 300;
        self.at(soft);
        self
    }

    fn state(&self) -> JobState {
        self.core.record().state
    }

    fn executor_state(&self, i: usize) -> ExecutorState {
        let p = self.peer(i);
        self.core
            .record()
            .executors
            .iter()
            .rev()
            .find(|e| e.peer == p)
            .map(|e| e.state)
            .unwrap()
    }
}

fn kept(hash: ContentId, agreeing: Vec<PeerId>) -> StoredResult {
    let blob = crate::jobs::record::StoredBlob {
        id: ContentId::of(b"blob"),
        size: 1,
    };
    StoredResult {
        result_hash: hash,
        exit_code: 0,
        stdout: blob.clone(),
        stderr: blob,
        outputs: BTreeMap::new(),
        agreeing,
    }
}

fn assigns(actions: &[Action]) -> Vec<PeerId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign { peer, .. } => Some(*peer),
            _ => None,
        })
        .collect()
}

fn stops(actions: &[Action]) -> Vec<PeerId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop { peer, .. } => Some(*peer),
            _ => None,
        })
        .collect()
}

#[test]
fn a_job_is_offered_assigned_and_verified_when_every_answer_agrees() {
    let mut f = Fixture::new(3, 2, 3);
    let start = f.step(Input::Start);
    assert!(matches!(
        start[..],
        [Action::Transition { .. }, Action::Offer { .. }, ..]
    ));
    assert_eq!(f.state(), JobState::Scheduled);
    for i in 0..3 {
        f.bid(i);
    }
    // Every capable node bid: no need to wait for the window.
    let a = f.at(f.now + 1);
    assert_eq!(assigns(&a).len(), 0, "assigned on the last bid already");
    assert_eq!(f.core.record().executors.len(), 3);
    assert_eq!(f.state(), JobState::Running);
    f.report(0, 1);
    f.report(1, 1);
    // k agree, but the third could still dispute: wait for it.
    assert_eq!(f.state(), JobState::Running);
    let done = f.report(2, 1);
    assert_eq!(f.state(), JobState::Verified);
    assert!(done
        .iter()
        .any(|a| matches!(a, Action::SignVerdict { apply: true, .. })));
    assert_eq!(done.last(), Some(&Action::GossipVerdict));
    let persist = done.iter().position(|a| *a == Action::Persist).unwrap();
    let final_event = done
        .iter()
        .position(|a| matches!(a, Action::Event(e) if e.state.is_final()))
        .unwrap();
    assert!(persist < final_event, "the final event waits for the write");
}

#[test]
fn a_job_requiring_a_label_takes_bids_only_from_nodes_advertising_it() {
    let gpu = BTreeMap::from([("gpu".to_string(), "true".to_string())]);
    let mut f = Fixture::requiring(2, 2, 4, ReplicationMode::Fixed, gpu.clone());
    for i in [1, 3] {
        let p = f.peer(i);
        f.world.labels.insert(p, gpu.clone());
    }
    f.step(Input::Start);
    for i in 0..4 {
        f.bid(i);
    }
    f.at(f.now + 2_000);
    let mut ran: Vec<PeerId> = f.core.record().executors.iter().map(|e| e.peer).collect();
    ran.sort();
    let mut want = vec![f.peer(1), f.peer(3)];
    want.sort();
    assert_eq!(ran, want);
    let refused = f
        .core
        .record()
        .events
        .iter()
        .filter(|e| e.kind == "bid_refused");
    assert_eq!(refused.count(), 2);
}

#[test]
fn bidders_holding_the_image_are_chosen_first_and_the_others_fill_in() {
    let digest = format!("sha256:{}", "d".repeat(64));
    let docker = ExecutorSpec::Docker {
        image: "img".into(),
        digest: digest.clone(),
        manifest: Some(ContentId::of(b"manifest")),
    };
    let run = |n: u8, holders: &[usize]| {
        let mut f = Fixture::build(
            n,
            2,
            5,
            ReplicationMode::Fixed,
            BTreeMap::new(),
            docker.clone(),
        );
        for &i in holders {
            let p = f.peer(i);
            f.world.images.insert(p, vec![digest.clone()]);
        }
        f.step(Input::Start);
        for i in 0..5 {
            f.bid(i);
        }
        f.at(f.now + 2_000);
        let ran: BTreeSet<PeerId> = f.core.record().executors.iter().map(|e| e.peer).collect();
        (f, ran)
    };
    // Two of five bidders hold the image: a 2-of-2 job goes to them.
    let (f, ran) = run(2, &[1, 4]);
    assert_eq!(ran, BTreeSet::from([f.peer(1), f.peer(4)]));
    // One holder: it is chosen, and a node that fetches the image fills
    // in, with the fetch allowance on top of its deadline.
    let (f, ran) = run(2, &[3]);
    assert_eq!(ran.len(), 2);
    assert!(ran.contains(&f.peer(3)));
    let deadline = |p: PeerId| {
        let e = f
            .core
            .record()
            .executors
            .iter()
            .find(|e| e.peer == p)
            .unwrap();
        e.deadline_ms - e.assigned_at_ms
    };
    let other = *ran.iter().find(|p| **p != f.peer(3)).unwrap();
    assert_eq!(deadline(f.peer(3)), TIMEOUT_MS + ASSIGN_GRACE_MS);
    assert_eq!(
        deadline(other),
        TIMEOUT_MS + ASSIGN_GRACE_MS + IMAGE_FETCH_MS
    );
    // Nobody holds it: the job still runs on nodes that fetch it.
    let (_, ran) = run(3, &[]);
    assert_eq!(ran.len(), 3);
}

#[test]
fn a_job_requiring_a_label_nobody_offers_fails_at_start_naming_it() {
    let gpu = BTreeMap::from([("gpu".to_string(), "true".to_string())]);
    let mut f = Fixture::requiring(2, 2, 3, ReplicationMode::Fixed, gpu);
    f.step(Input::Start);
    assert_eq!(f.state(), JobState::Failed);
    let reason = f.core.record().reason.clone().unwrap();
    assert!(reason.contains("label gpu=true"), "{reason}");
}

#[test]
fn a_quorum_larger_than_the_capable_nodes_fails_at_start() {
    let mut f = Fixture::new(3, 3, 2);
    let a = f.step(Input::Start);
    assert_eq!(f.state(), JobState::Failed);
    assert!(!a.iter().any(|a| matches!(a, Action::Offer { .. })));
    let reason = f.core.record().reason.clone().unwrap();
    assert!(
        reason.starts_with("too few capable nodes: 3 executors must agree, and 2"),
        "{reason}"
    );
}

#[test]
fn an_executor_lost_and_back_with_its_answer_still_counts() {
    // 3-of-3 on exactly three nodes: nobody can replace a lost executor.
    let mut f = Fixture::new(3, 3, 3).assigned();
    f.report(0, 1);
    f.report(1, 1);
    let attempt = f.attempt(2);
    f.step(Input::PeerGone(f.peer(2)));
    f.step(Input::Lost {
        peer: f.peer(2),
        attempt,
        error: "went offline while assigned".into(),
    });
    assert_eq!(f.executor_state(2), ExecutorState::Crashed);
    // No other node can take its place: the job waits instead of failing.
    for t in 0..20 {
        f.at(f.now + 1_000 + t);
    }
    assert_eq!(f.state(), JobState::Running, "{:?}", f.core.record().reason);
    assert!(f
        .core
        .record()
        .events
        .iter()
        .any(|e| e.kind == "waiting" && e.detail.contains("went offline while assigned")));
    // It restarted, resumed the job and reports for the same attempt.
    f.report(2, 1);
    assert_eq!(f.state(), JobState::Verified);
    assert_eq!(f.executor_state(2), ExecutorState::Answered);
    assert!(f.core.record().events.iter().any(|e| e.kind == "back"));
    // The record replays to the same quorum.
    let q = rebuild_quorum(f.core.record(), &spec_of(f.core.record()).unwrap()).unwrap();
    assert_eq!(q.decision(), f.core.quorum().decision());
}

#[test]
fn a_resumed_job_sends_again_the_assignments_never_acknowledged() {
    let mut f = Fixture::new(3, 2, 3).assigned();
    let assigned = f.core.record().executors.clone();
    assert_eq!(assigned.len(), 3);
    // The first executor acknowledged its assignment; the others had not
    // when the submitting node stopped.
    let first = (0..3).find(|i| f.peer(*i) == assigned[0].peer).unwrap();
    let acceptance = f.keys[first].sign(&agora_protocol::Acceptance {
        job: f.core.id(),
        submitter: f.core.cfg.me,
        attempt: assigned[0].attempt,
        deadline_ms: assigned[0].deadline_ms,
    });
    f.step(Input::Accepted {
        peer: assigned[0].peer,
        attempt: assigned[0].attempt,
        acceptance,
    });
    let rec = f.core.record().clone();
    let mut resumed = JobCore::new(f.core.cfg, rec).unwrap();
    let actions = resumed.step(Input::Start, f.now, &f.world);
    let resent: Vec<(PeerId, u32, u64)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign {
                peer,
                attempt,
                deadline_ms,
            } => Some((*peer, *attempt, *deadline_ms)),
            _ => None,
        })
        .collect();
    let want: Vec<(PeerId, u32, u64)> = assigned[1..]
        .iter()
        .map(|e| (e.peer, e.attempt, e.deadline_ms))
        .collect();
    assert_eq!(resent, want);
    // A fresh job has nothing to send again.
    let mut fresh = Fixture::new(3, 2, 3);
    assert!(assigns(&fresh.step(Input::Start)).is_empty());
}

#[test]
fn a_lost_executor_that_never_returns_fails_the_job_at_its_deadline() {
    let mut f = Fixture::new(3, 3, 3).assigned();
    f.report(0, 1);
    f.report(1, 1);
    let attempt = f.attempt(2);
    f.step(Input::Lost {
        peer: f.peer(2),
        attempt,
        error: "went offline while assigned".into(),
    });
    let deadline = f.core.record().executors[2].deadline_ms;
    f.at(deadline + 1);
    f.at(deadline + 10_000);
    assert_eq!(f.state(), JobState::Failed);
}

#[test]
fn a_cancel_stops_every_running_executor() {
    let mut f = Fixture::new(3, 2, 3).assigned();
    f.report(0, 1);
    let a = f.step(Input::Cancel);
    assert_eq!(f.state(), JobState::Cancelled);
    let mut stopped = stops(&a);
    stopped.sort();
    let mut want = vec![f.peer(1), f.peer(2)];
    want.sort();
    assert_eq!(stopped, want, "the answered one is not told to stop");
    assert_eq!(f.executor_state(1), ExecutorState::Released);
}

#[test]
fn a_verified_job_stops_the_executors_it_no_longer_needs() {
    // 3-of-5: four agreeing answers lead by 4, more than k plus the one
    // still running, which cannot change the result any more.
    let mut f = Fixture::new(5, 3, 5).assigned();
    for i in 0..3 {
        f.report(i, 1);
    }
    assert_eq!(f.state(), JobState::Running);
    let a = f.report(3, 1);
    assert_eq!(f.state(), JobState::Verified);
    assert_eq!(stops(&a), vec![f.peer(4)]);
    assert_eq!(f.executor_state(4), ExecutorState::Released);
}

#[test]
fn a_broken_limit_is_named_and_k_identical_ones_fail_the_job() {
    let mut f = Fixture::new(3, 2, 4).assigned();
    for i in 0..2 {
        let attempt = f.attempt(i);
        f.step(Input::Failed {
            peer: f.peer(i),
            attempt,
            error: "timed out after 10 s (--timeout 10s)".into(),
            kind: FailKind::TimedOut,
            ran: true,
        });
        assert_eq!(f.executor_state(i), ExecutorState::TimedOut);
    }
    assert_eq!(f.state(), JobState::Failed);
    let reason = f.core.record().reason.clone().unwrap();
    assert_eq!(
        reason,
        "2 executor(s) ran the job and it failed: timed out after 10 s (--timeout 10s)"
    );
    assert!(f.core.record().events.iter().any(|e| e.kind == "timed_out"));
}

#[test]
fn a_report_signed_by_another_key_ends_that_executor() {
    let mut f = Fixture::new(3, 2, 4).assigned();
    f.report_signed_by(0, 3, 1);
    assert_eq!(f.executor_state(0), ExecutorState::Crashed);
    let p = f.peer(0);
    let e = f.core.record().executors.iter().find(|e| e.peer == p);
    let err = e.unwrap().error.clone().unwrap();
    assert!(err.starts_with("sent an attestation signed by"), "{err}");
}

#[test]
fn a_solo_plan_runs_one_executor_and_neither_applies_nor_gossips_its_verdict() {
    let mut f = Fixture::with(3, 2, 3, ReplicationMode::Adaptive);
    f.world.plan = PlanKind::Solo;
    let f = &mut f;
    f.step(Input::Start);
    f.bid(0);
    // Fewer bids than n: the window runs its full length.
    assert!(assigns(&f.at(f.now + 300)).is_empty());
    let a = f.at(f.now + 2_000);
    assert_eq!(assigns(&a).len(), 1);
    let done = f.report(0, 1);
    assert_eq!(f.state(), JobState::Verified);
    assert!(done
        .iter()
        .any(|a| matches!(a, Action::SignVerdict { apply: false, .. })));
    assert!(!done.contains(&Action::GossipVerdict));
}

#[test]
fn a_job_nobody_can_run_fails_after_one_unanswered_offer() {
    let mut f = Fixture::new(3, 2, 3);
    f.world.online.clear();
    f.step(Input::Start);
    for _ in 0..40 {
        f.at(f.now + 2_000);
    }
    assert_eq!(f.state(), JobState::Failed);
    let reason = f.core.record().reason.clone().unwrap();
    assert_eq!(
        reason,
        "no capable node: this node knows 0 other node(s) and none is online"
    );
    assert_eq!(f.core.record().offers, 1);
}

/// One thing that can happen to a running job, for the property tests.
#[derive(Debug, Clone)]
enum Step {
    Bid(usize),
    Report(usize, u8),
    Fail(usize),
    Lost(usize),
    Gone(usize),
    Wait(u64),
    Cancel,
}

fn step_strategy(executors: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..executors).prop_map(Step::Bid),
        4 => (0..executors, 1u8..3).prop_map(|(i, a)| Step::Report(i, a)),
        1 => (0..executors).prop_map(Step::Fail),
        1 => (0..executors).prop_map(Step::Lost),
        1 => (0..executors).prop_map(Step::Gone),
        3 => (1u64..20_000).prop_map(Step::Wait),
        1 => Just(Step::Cancel),
    ]
}

impl Fixture {
    fn assigned_to(&self, i: usize) -> bool {
        let p = self.peer(i);
        self.core.record().executors.iter().any(|e| e.peer == p)
    }

    fn apply(&mut self, s: &Step) -> Vec<Action> {
        match *s {
            Step::Bid(i) => self.bid(i),
            Step::Report(i, a) if self.assigned_to(i) => self.report(i, a),
            Step::Fail(i) if self.assigned_to(i) => {
                let attempt = self.attempt(i);
                self.step(Input::Failed {
                    peer: self.peer(i),
                    attempt,
                    error: format!("trap {i}"),
                    kind: FailKind::Crashed,
                    ran: true,
                })
            }
            Step::Lost(i) if self.assigned_to(i) => {
                let attempt = self.attempt(i);
                self.step(Input::Lost {
                    peer: self.peer(i),
                    attempt,
                    error: "went offline while assigned".into(),
                })
            }
            Step::Gone(i) => self.step(Input::PeerGone(self.peer(i))),
            Step::Wait(ms) => self.at(self.now + ms),
            Step::Cancel => self.step(Input::Cancel),
            _ => Vec::new(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever happens: nothing is asked after a final state; a final
    /// job has no executor left running; the stored log replays to the
    /// live quorum's decision; the job is final once its deadline passed.
    #[test]
    fn the_core_keeps_its_invariants(
        (n, k) in prop_oneof![Just((1u8, 1u8)), Just((3, 2)), Just((3, 3)), Just((5, 3))],
        executors in 3usize..7,
        steps in proptest::collection::vec(step_strategy(6), 1..60),
    ) {
        let mut f = Fixture::new(n, k, executors);
        f.step(Input::Start);
        for s in &steps {
            let s = match s {
                Step::Bid(i) | Step::Report(i, _) | Step::Fail(i) | Step::Lost(i) | Step::Gone(i)
                    if *i >= executors => continue,
                s => s,
            };
            let was_final = f.core.is_final();
            let actions = f.apply(s);
            if was_final {
                prop_assert!(actions.is_empty(), "{actions:?} after a final state");
            }
            let rec = f.core.record();
            if rec.state.is_final() {
                prop_assert!(
                    rec.executors.iter().all(|e| e.state != ExecutorState::Running),
                    "an executor still running in a final job"
                );
            }
            let spec = spec_of(rec).unwrap();
            let replayed = rebuild_quorum(rec, &spec).unwrap();
            let live = f.core.quorum();
            // Only an undecided job is ever replayed (at a restart); a
            // decided one may have ended outside the quorum (a cancel,
            // a job failing the same way everywhere).
            if !rec.state.is_final() {
                prop_assert_eq!(replayed.decision(), live.decision());
            }
            prop_assert_eq!(replayed.tally(), live.tally());
        }
        // Deadlines hold: past the job's deadline, it is decided.
        let deadline = job_deadline_ms(f.core.record(), &spec_of(f.core.record()).unwrap());
        f.at(deadline + 1);
        prop_assert!(f.core.is_final(), "not final after its deadline: {:?}", f.state());
        // Every executor it assigned was told to stop, answered or ended.
        let stopped: BTreeSet<(PeerId, u32)> = f.log.iter().filter_map(|a| match a {
            Action::Stop { peer, attempt } => Some((*peer, *attempt)),
            _ => None,
        }).collect();
        for e in &f.core.record().executors {
            prop_assert!(
                e.state != ExecutorState::Released || stopped.contains(&(e.peer, e.attempt)) || e.report.is_some(),
                "released without a stop: {:?}", e.peer
            );
        }
    }
}
