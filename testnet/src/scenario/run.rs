//! Runs a [`Scenario`] through a [`Driver`] on a network that is up, and
//! records what happened as an [`Outcome`]: every submission and the job
//! id it got, the last record each job's submitter gave, when each step
//! ran, and how long the network took to be whole again after a node came
//! back. Judging that outcome is `check`'s job.
//!
//! Threads, not tasks: every driver call is a child process. The step
//! timeline runs on the caller's thread; each submit step is a thread that
//! spaces its jobs at the step's rate and hands each submission to a
//! short-lived thread (at most [`RunOptions::max_in_flight`] at once); each
//! start, restart or heal leaves a thread measuring when every running node
//! sees every other online, until the next node step makes that moot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Scope, ScopedJoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_node::api::types::JobRecord;
use serde::Serialize;
use tracing::{info, warn};

use super::driver::{Driver, JobRequest};
use super::parse::{Action, From, NodeOp, Program, Scenario, Submit, Target, Wait, When};

/// Knobs of a run; the defaults suit the host testnet.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Pause between two polls of the submitters' job lists.
    pub poll: Duration,
    /// Pause between two looks at who sees whom online.
    pub mesh_poll: Duration,
    /// How long a mesh measurement goes on before it gives up.
    pub mesh_cap: Duration,
    /// Submissions in flight at once (each is a CLI process).
    pub max_in_flight: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(2),
            mesh_poll: Duration::from_secs(1),
            mesh_cap: Duration::from_secs(180),
            max_in_flight: 16,
        }
    }
}

/// What a run did and saw.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// When the timeline started (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// How long the run took, in seconds.
    pub duration_s: f64,
    /// The steps, in order.
    pub steps: Vec<StepOutcome>,
    /// Every submission, in the order they were made.
    pub submissions: Vec<Submission>,
    /// Job id → the last record its submitter gave.
    pub jobs: BTreeMap<String, Observed>,
    /// The honest result of each program, from `agora exec`.
    pub expected: Vec<Expected>,
    /// The measurement `all_online_within` judges: after the last start,
    /// restart or heal, or after the last step without one.
    pub mesh: Option<Mesh>,
    /// Node i's peer id at index i (index 0, the bootstrap: empty).
    pub peers: Vec<String>,
}

/// One step as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct StepOutcome {
    /// Its line in the file.
    pub line: usize,
    /// What it did, in words.
    pub action: String,
    /// Its node op, if it is a node step.
    pub op: Option<NodeOp>,
    /// When it was due (seconds since the start).
    pub due_s: f64,
    /// When it started.
    pub started_s: f64,
    /// When it ended.
    pub ended_s: f64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Something worth knowing (a wait that timed out).
    pub note: Option<String>,
    /// After a start, restart or heal: when every running node saw every
    /// other online.
    pub mesh: Option<Mesh>,
}

/// How long until every running node listed every other one online.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mesh {
    /// The step it was measured after (none: after the last step).
    pub after_line: Option<usize>,
    /// Seconds from that step's start, if it happened.
    pub secs: Option<f64>,
    /// Why not, or who saw whom.
    pub note: String,
}

/// One submission.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submission {
    /// The submit step's line.
    pub step_line: usize,
    /// Its place in that step (0-based).
    pub index: usize,
    /// The node it went through, if one was running.
    pub node: Option<usize>,
    /// What the job runs.
    pub program: Program,
    /// When it was made (seconds since the start).
    pub at_s: f64,
    /// The job id the node gave.
    pub job_id: Option<String>,
    /// Why there is none.
    pub error: Option<String>,
}

/// A job record and the node that reported it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observed {
    /// The submitter.
    pub node: usize,
    /// Its last record of the job.
    pub record: JobRecord,
}

/// The honest result of a program.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expected {
    /// The program.
    pub program: Program,
    /// Its result hash, from `agora exec`.
    pub result_hash: Option<String>,
    /// Why there is none.
    pub error: Option<String>,
}

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A node's identity could not be read.
    #[error("cannot read node {node}'s peer id: {source}")]
    PeerId {
        /// The node.
        node: usize,
        /// Why.
        source: super::driver::DriverError,
    },
}

/// Runs the steps of `sc` on a network that is up (`Driver::up` done).
pub fn run(sc: &Scenario, driver: &dyn Driver, opts: &RunOptions) -> Result<Outcome, RunError> {
    let mut peers = vec![String::new()];
    for i in 1..=sc.network.nodes {
        peers.push(
            driver
                .peer_id(i)
                .map_err(|source| RunError::PeerId { node: i, source })?,
        );
    }
    let mut expected = Vec::new();
    for p in sc.programs() {
        let r = driver.exec(&p);
        match &r {
            Ok(h) => info!("honest result of {p}: {h}"),
            Err(e) => warn!("no honest result for {p}: {e}"),
        }
        expected.push(Expected {
            program: p,
            result_hash: r.as_ref().ok().cloned(),
            error: r.err().map(|e| e.to_string()),
        });
    }
    let state = State {
        sc,
        driver,
        opts,
        t0: Instant::now(),
        t0_ms: unix_ms(),
        peers,
        nodes: Mutex::new(vec![
            NodeState {
                running: true,
                partitioned: false,
            };
            sc.network.nodes + 1
        ]),
        submissions: Mutex::new(Vec::new()),
        jobs: Mutex::new(BTreeMap::new()),
        outstanding: AtomicUsize::new(0),
        generation: AtomicU64::new(0),
        in_flight: Semaphore::new(opts.max_in_flight.max(1)),
    };
    let (steps, mesh) = thread::scope(|s| state.timeline(s));
    let submissions = lock(&state.submissions).clone();
    let jobs = lock(&state.jobs).clone();
    Ok(Outcome {
        started_at_ms: state.t0_ms,
        duration_s: state.now_s(),
        steps,
        submissions,
        jobs,
        expected,
        mesh,
        peers: state.peers.clone(),
    })
}

#[derive(Debug, Clone, Copy)]
struct NodeState {
    running: bool,
    partitioned: bool,
}

/// Everything the run's threads share.
struct State<'a> {
    sc: &'a Scenario,
    driver: &'a dyn Driver,
    opts: &'a RunOptions,
    /// The start of the timeline.
    t0: Instant,
    /// The same, as wall-clock ms (job records use those).
    t0_ms: u64,
    /// Node i's peer id at index i.
    peers: Vec<String>,
    /// Index 0: the bootstrap. A node being restarted is not running.
    nodes: Mutex<Vec<NodeState>>,
    submissions: Mutex<Vec<Submission>>,
    jobs: Mutex<BTreeMap<String, Observed>>,
    /// Submissions planned and not yet made.
    outstanding: AtomicUsize,
    /// Bumped by every node step: a mesh measurement of an older
    /// generation stops.
    generation: AtomicU64,
    in_flight: Semaphore,
}

type MeshHandle<'s> = (usize, ScopedJoinHandle<'s, Mesh>);

impl<'a> State<'a> {
    fn now_s(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn timeline<'s>(&'s self, s: &'s Scope<'s, '_>) -> (Vec<StepOutcome>, Option<Mesh>) {
        let mut outcomes: Vec<StepOutcome> = Vec::new();
        let mut streams = Vec::new();
        let mut meshes: Vec<MeshHandle<'s>> = Vec::new();
        let mut prev_end = self.t0;
        for step in &self.sc.steps {
            let due = match step.when {
                When::At(t) => self.t0 + Duration::from_secs_f64(t),
                When::After(d) => prev_end + Duration::from_secs_f64(d),
            };
            sleep_until(due);
            let due_s = due.duration_since(self.t0).as_secs_f64();
            let started = Instant::now();
            let started_s = self.now_s();
            let late = started_s - due_s;
            if late > 1.0 {
                warn!(
                    "line {}: {:.1} s late (the step before ran long)",
                    step.line, late
                );
            }
            info!("t={started_s:6.1}s line {}: {}", step.line, step.action);
            let mut out = StepOutcome {
                line: step.line,
                action: step.action.to_string(),
                op: None,
                due_s,
                started_s,
                ended_s: started_s,
                error: None,
                note: None,
                mesh: None,
            };
            match &step.action {
                Action::Submit(sub) => {
                    self.outstanding.fetch_add(sub.count, Ordering::SeqCst);
                    let line = step.line;
                    streams.push(s.spawn(move || self.stream(s, line, sub)));
                }
                Action::Node(op, targets) => {
                    out.op = Some(*op);
                    if let Err(e) = self.node_op(*op, targets) {
                        warn!("line {}: {e}", step.line);
                        out.error = Some(e);
                    }
                    if op.recovers() {
                        let gen = self.generation.load(Ordering::SeqCst);
                        let line = step.line;
                        meshes.push((
                            outcomes.len(),
                            s.spawn(move || self.mesh(gen, started, Some(line))),
                        ));
                    }
                }
                Action::Wait(Wait::Seconds(secs)) => {
                    thread::sleep(Duration::from_secs_f64(*secs));
                }
                Action::Wait(Wait::Final { timeout_s }) => {
                    out.note = self.wait_final(Duration::from_secs_f64(*timeout_s));
                }
            }
            out.ended_s = self.now_s();
            prev_end = Instant::now();
            outcomes.push(out);
        }
        // Submissions still to come, then one last look at every job.
        for h in streams {
            if h.join().is_err() {
                warn!("a submit thread panicked");
            }
        }
        while self.outstanding.load(Ordering::SeqCst) > 0 {
            thread::sleep(Duration::from_millis(100));
        }
        self.observe();
        let last_recovery = meshes.last().map(|(i, _)| *i);
        for (i, h) in meshes {
            let m = h.join().unwrap_or_else(|_| Mesh {
                after_line: Some(outcomes[i].line),
                secs: None,
                note: "the measuring thread panicked".into(),
            });
            outcomes[i].mesh = Some(m);
        }
        let mesh = match last_recovery {
            Some(i) => outcomes[i].mesh.clone(),
            None if self.sc.checks.all_online_within.is_some() => {
                let gen = self.generation.load(Ordering::SeqCst);
                Some(self.mesh(gen, Instant::now(), None))
            }
            None => None,
        };
        (outcomes, mesh)
    }

    /// Submits one step's jobs at its rate.
    fn stream<'s>(&'s self, s: &'s Scope<'s, '_>, line: usize, sub: &'s Submit) {
        let start = Instant::now();
        let mut turn = 0;
        for i in 0..sub.count {
            sleep_until(start + Duration::from_secs_f64(i as f64 / sub.rate));
            let program = sub.programs[i % sub.programs.len()].clone();
            let mut rec = Submission {
                step_line: line,
                index: i,
                node: self.pick(&sub.from, &mut turn),
                program,
                at_s: self.now_s(),
                job_id: None,
                error: None,
            };
            let Some(node) = rec.node else {
                rec.error = Some("no running node to submit from".into());
                self.record(rec);
                continue;
            };
            self.in_flight.acquire();
            let req = JobRequest {
                program: rec.program.clone(),
                n: sub.n,
                k: sub.k,
                timeout: sub.timeout.clone(),
            };
            s.spawn(move || {
                match self.driver.submit(node, &req) {
                    Ok(id) => rec.job_id = Some(id),
                    Err(e) => {
                        warn!("line {line}: submission {i} through node {node}: {e}");
                        rec.error = Some(e.to_string());
                    }
                }
                self.in_flight.release();
                self.record(rec);
            });
            if (i + 1) % 50 == 0 || i + 1 == sub.count {
                info!(
                    "t={:6.1}s line {line}: {} of {} submitted",
                    self.now_s(),
                    i + 1,
                    sub.count
                );
            }
        }
    }

    fn record(&self, rec: Submission) {
        lock(&self.submissions).push(rec);
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
    }

    /// The next running node of `from`, in turn.
    fn pick(&self, from: &From, turn: &mut usize) -> Option<usize> {
        let nodes = lock(&self.nodes);
        let candidates: Vec<usize> = match from {
            From::RoundRobin => (1..nodes.len()).collect(),
            From::Nodes(list) => list.clone(),
        };
        for _ in 0..candidates.len() {
            let c = candidates[*turn % candidates.len()];
            *turn += 1;
            if nodes[c].running {
                return Some(c);
            }
        }
        None
    }

    fn node_op(&self, op: NodeOp, targets: &[Target]) -> Result<(), String> {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let idx = |t: &Target| match t {
            Target::Bootstrap => 0,
            Target::Node(i) => *i,
        };
        {
            let mut nodes = lock(&self.nodes);
            for t in targets {
                let n = &mut nodes[idx(t)];
                match op {
                    NodeOp::Kill | NodeOp::Stop | NodeOp::Restart => n.running = false,
                    NodeOp::Partition => n.partitioned = true,
                    NodeOp::Start | NodeOp::Heal => {}
                }
            }
        }
        let r = self.driver.node_op(op, targets).map_err(|e| e.to_string());
        let mut nodes = lock(&self.nodes);
        for t in targets {
            let n = &mut nodes[idx(t)];
            match op {
                NodeOp::Start | NodeOp::Restart => n.running = true,
                NodeOp::Heal => n.partitioned = false,
                NodeOp::Kill | NodeOp::Stop | NodeOp::Partition => {}
            }
        }
        r
    }

    /// Polls until every job submitted so far is final, or `timeout`.
    fn wait_final(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut last_report = Instant::now();
        loop {
            self.observe();
            let (pending, line) = self.progress();
            if pending == 0 {
                info!("t={:6.1}s {line}", self.now_s());
                return None;
            }
            if Instant::now() >= deadline {
                let msg = format!("{pending} job(s) not final after {} s", timeout.as_secs());
                warn!("{msg}");
                return Some(msg);
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                info!("t={:6.1}s {line}", self.now_s());
                last_report = Instant::now();
            }
            thread::sleep(self.opts.poll);
        }
    }

    /// Jobs not final yet (submissions still to come included), and a
    /// line of counts.
    fn progress(&self) -> (usize, String) {
        let subs = lock(&self.submissions);
        let jobs = lock(&self.jobs);
        let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
        let mut pending = self.outstanding.load(Ordering::SeqCst);
        for id in subs.iter().filter_map(|s| s.job_id.as_ref()) {
            match jobs.get(id) {
                Some(o) => {
                    *by_state.entry(o.record.state.as_str()).or_default() += 1;
                    if !o.record.state.is_final() {
                        pending += 1;
                    }
                }
                None => {
                    *by_state.entry("unseen").or_default() += 1;
                    pending += 1;
                }
            }
        }
        let counts: Vec<String> = by_state.iter().map(|(k, v)| format!("{v} {k}")).collect();
        (
            pending,
            format!(
                "jobs: {} ({} still to submit)",
                counts.join(", "),
                self.outstanding.load(Ordering::SeqCst)
            ),
        )
    }

    /// Reads the job list of every node that submitted, all at once.
    fn observe(&self) {
        let (nodes, ids): (BTreeSet<usize>, BTreeSet<String>) = {
            let subs = lock(&self.submissions);
            (
                subs.iter()
                    .filter(|s| s.job_id.is_some())
                    .filter_map(|s| s.node)
                    .collect(),
                subs.iter().filter_map(|s| s.job_id.clone()).collect(),
            )
        };
        let lists: Vec<(usize, Vec<JobRecord>)> = thread::scope(|s| {
            let handles: Vec<_> = nodes
                .iter()
                .map(|&n| (n, s.spawn(move || self.driver.jobs(n))))
                .collect();
            handles
                .into_iter()
                .filter_map(|(n, h)| match h.join() {
                    Ok(Ok(list)) => Some((n, list)),
                    // A node that is down keeps its last records.
                    Ok(Err(_)) | Err(_) => None,
                })
                .collect()
        });
        let mut jobs = lock(&self.jobs);
        for (node, list) in lists {
            for record in list {
                if ids.contains(&record.id) {
                    jobs.insert(record.id.clone(), Observed { node, record });
                }
            }
        }
    }

    /// Waits until every running, connected node lists every other one
    /// online; measured from `since`.
    fn mesh(&self, gen: u64, since: Instant, after_line: Option<usize>) -> Mesh {
        loop {
            if self.generation.load(Ordering::SeqCst) != gen {
                return Mesh {
                    after_line,
                    secs: None,
                    note: "not measured to the end: the next node step came first".into(),
                };
            }
            let up: Vec<usize> = {
                let nodes = lock(&self.nodes);
                (1..nodes.len())
                    .filter(|&i| nodes[i].running && !nodes[i].partitioned)
                    .collect()
            };
            let views: Vec<(usize, Option<Vec<String>>)> = thread::scope(|s| {
                let hs: Vec<_> = up
                    .iter()
                    .map(|&i| (i, s.spawn(move || self.driver.online(i).ok())))
                    .collect();
                hs.into_iter()
                    .map(|(i, h)| (i, h.join().ok().flatten()))
                    .collect()
            });
            let short: Vec<String> = views
                .iter()
                .filter_map(|(i, seen)| {
                    let Some(seen) = seen else {
                        return Some(format!("node {i}: API unreachable"));
                    };
                    let missing: Vec<String> = up
                        .iter()
                        .filter(|&&j| j != *i && !seen.contains(&self.peers[j]))
                        .map(ToString::to_string)
                        .collect();
                    (!missing.is_empty()).then(|| format!("node {i} misses {}", missing.join(",")))
                })
                .collect();
            let secs = since.elapsed().as_secs_f64();
            if short.is_empty() {
                let m = Mesh {
                    after_line,
                    secs: Some(secs),
                    note: format!("{} running nodes see each other", up.len()),
                };
                match after_line {
                    Some(l) => info!("t={:6.1}s line {l}: every running node sees every other online and connected after {secs:.1} s", self.now_s()),
                    None => info!("t={:6.1}s every running node sees every other online and connected", self.now_s()),
                }
                return m;
            }
            if since.elapsed() >= self.opts.mesh_cap {
                return Mesh {
                    after_line,
                    secs: None,
                    note: format!(
                        "after {} s: {}",
                        self.opts.mesh_cap.as_secs(),
                        short.join("; ")
                    ),
                };
            }
            thread::sleep(self.opts.mesh_poll);
        }
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A counting semaphore for the submissions in flight.
struct Semaphore {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Semaphore {
    fn new(n: usize) -> Self {
        Self {
            free: Mutex::new(n),
            cv: Condvar::new(),
        }
    }

    fn acquire(&self) {
        let mut f = lock(&self.free);
        while *f == 0 {
            f = self.cv.wait(f).unwrap_or_else(PoisonError::into_inner);
        }
        *f -= 1;
    }

    fn release(&self) {
        *lock(&self.free) += 1;
        self.cv.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::check::evaluate;
    use crate::scenario::driver::DriverError;
    use crate::scenario::parse::{parse, Network};
    use agora_node::api::types::{JobState, ReplicationMode};

    /// An in-memory network: jobs verify as soon as they are listed, every
    /// node sees every other online, and the calls are recorded.
    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<String>>,
        jobs: Mutex<BTreeMap<usize, Vec<JobRecord>>>,
    }

    impl Driver for Fake {
        fn up(&self, _: &Network) -> Result<(), DriverError> {
            Ok(())
        }
        fn down(&self) -> Result<(), DriverError> {
            Ok(())
        }
        fn node_op(&self, op: NodeOp, targets: &[Target]) -> Result<(), DriverError> {
            let t: Vec<String> = targets.iter().map(ToString::to_string).collect();
            lock(&self.calls).push(format!("{op} {}", t.join(" ")));
            Ok(())
        }
        fn submit(&self, node: usize, job: &JobRequest) -> Result<String, DriverError> {
            let mut jobs = lock(&self.jobs);
            let id = format!("{node}-{}", jobs.get(&node).map_or(0, Vec::len));
            let now = unix_ms();
            jobs.entry(node).or_default().push(JobRecord {
                id: id.clone(),
                state: JobState::Verified,
                executor: "wasm".into(),
                program: "m".into(),
                n: job.n,
                k: job.k,
                unverified: false,
                replication: ReplicationMode::Fixed,
                plan: None,
                submitted_at_ms: now,
                finished_at_ms: Some(now + 1),
                reason: None,
                result_hash: Some("h".into()),
                exit_code: Some(0),
                bids: 3,
                executors: vec![],
                events: vec![],
            });
            lock(&self.calls).push(format!("submit via {node}"));
            Ok(id)
        }
        fn jobs(&self, node: usize) -> Result<Vec<JobRecord>, DriverError> {
            Ok(lock(&self.jobs).get(&node).cloned().unwrap_or_default())
        }
        fn peer_id(&self, node: usize) -> Result<String, DriverError> {
            Ok(format!("peer{node}"))
        }
        fn online(&self, node: usize) -> Result<Vec<String>, DriverError> {
            Ok((1..=4)
                .filter(|i| *i != node)
                .map(|i| format!("peer{i}"))
                .collect())
        }
        fn exec(&self, _: &Program) -> Result<String, DriverError> {
            Ok("h".into())
        }
    }

    fn fast() -> RunOptions {
        RunOptions {
            poll: Duration::from_millis(10),
            mesh_poll: Duration::from_millis(10),
            mesh_cap: Duration::from_secs(5),
            max_in_flight: 2,
        }
    }

    #[test]
    fn a_timeline_on_a_fake_network() {
        let sc = parse(
            "t.toml",
            r#"
[network]
nodes = 4
[[step]]
kill = [2]
[[step]]
submit = { count = 6, rate = 100 }
[[step]]
after = 0.1
start = [2]
[[step]]
wait = { until = "final", timeout = 5 }
[checks]
all_final = true
results_match_exec = true
none_lost = true
all_online_within = 5
min_verified = 6
"#,
        )
        .unwrap();
        let fake = Fake::default();
        let out = run(&sc, &fake, &fast()).unwrap();
        let calls = lock(&fake.calls).clone();
        assert_eq!(calls[0], "kill 2");
        assert!(calls.contains(&"start 2".to_owned()), "{calls:?}");
        // Round-robin skipped node 2 while it was down.
        let via: BTreeSet<usize> = out
            .submissions
            .iter()
            .filter(|s| s.at_s < out.steps[2].started_s)
            .filter_map(|s| s.node)
            .collect();
        assert!(!via.contains(&2), "{via:?}");
        assert_eq!(out.submissions.len(), 6);
        assert_eq!(out.jobs.len(), 6);
        assert!(out.steps[2].mesh.as_ref().unwrap().secs.is_some());
        assert_eq!(
            out.mesh.as_ref().unwrap().after_line,
            Some(8),
            "the start step's [[step]] line"
        );
        let r = evaluate("t.toml", &sc, &out);
        assert!(r.pass, "{}", r.summary());
        assert_eq!(r.jobs.verified, 6);
    }

    #[test]
    fn a_fixed_submitter_that_is_down_is_a_refusal() {
        let sc = parse(
            "t.toml",
            "[network]\nnodes = 4\n[[step]]\nsubmit = { count = 3, rate = 50, from = 1 }\n[[step]]\nkill = [1]\n[[step]]\nafter = 0.2\nwait = { until = \"final\", timeout = 1 }\n[checks]\nnone_lost = true\n",
        )
        .unwrap();
        let fake = Fake::default();
        let out = run(&sc, &fake, &fast()).unwrap();
        assert_eq!(out.submissions.len(), 3);
        let refused = out
            .submissions
            .iter()
            .filter(|s| s.job_id.is_none())
            .count();
        // The kill comes right after the first submission (rate 50: 20 ms
        // apart), so at least the last one finds node 1 down.
        assert!(refused >= 1, "{:?}", out.submissions);
        let r = evaluate("t.toml", &sc, &out);
        assert!(!r.pass);
    }
}
