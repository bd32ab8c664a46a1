//! Scenario files: TOML in, a checked [`Scenario`] out. Pure: no file
//! system, no network. Every refusal names the line it is about, both for
//! what TOML and serde reject (an unknown key, a wrong type) and for what
//! only a walk through the steps can see (a node out of range, a heal of a
//! node that is not partitioned, a start of a running node, a time that
//! goes backwards).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use agora_node::jobs::fault::Fault;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Most nodes `testnet/hosts.sh up` starts.
pub const MAX_NODES: usize = 50;
/// Default timeout of `wait = { until = "final" }`, in seconds.
pub const DEFAULT_FINAL_TIMEOUT_S: f64 = 600.0;
/// The Wasm program of a submit step that names none.
pub const DEFAULT_WASM: &str = "testnet/fixtures/build/hello.wasm";
/// The Docker image of a submit step that names none (built by
/// `testnet/fixtures/build.sh`).
pub const DEFAULT_IMAGE: &str = "agora-busybox:latest";

/// A scenario file that cannot be run, with the line at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The file, as given.
    pub file: String,
    /// 1-based line, when the fault is at one place.
    pub line: Option<usize>,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file, self.msg),
            None => write!(f, "{}: {}", self.file, self.msg),
        }
    }
}

impl std::error::Error for ParseError {}

/// A checked scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// One line saying what it shows (`description`), if given.
    pub description: Option<String>,
    /// The network to start.
    pub network: Network,
    /// What happens, in order.
    pub steps: Vec<Step>,
    /// What must hold at the end.
    pub checks: Checks,
}

/// `[network]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Network {
    /// Nodes besides the bootstrap (1..=[`MAX_NODES`]).
    pub nodes: usize,
    /// Node → `--fault` mode (`agora daemon --testnet --fault MODE`).
    pub faults: BTreeMap<usize, String>,
    /// Whether each node gets its own Docker engine; off makes a lighter,
    /// Wasm-only network. Default: on when a step submits Docker jobs.
    pub engines: bool,
}

/// One `[[step]]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Where it is in the file.
    pub line: usize,
    /// When it starts.
    pub when: When,
    /// What it does.
    pub action: Action,
}

/// When a step starts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Seconds since the network came up.
    At(f64),
    /// Seconds after the previous step ended (0 without `at` or `after`).
    After(f64),
}

/// A step's action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Start submitting jobs; goes on in the background while later
    /// steps run.
    Submit(Submit),
    /// Do something to containers.
    Node(NodeOp, Vec<Target>),
    /// Pause the timeline.
    Wait(Wait),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Submit(s) => {
                write!(
                    f,
                    "submit {} {} jobs at {}/s from {}, {}-of-{}",
                    s.count, s.kind, s.rate, s.from, s.k, s.n
                )
            }
            Self::Node(op, targets) => {
                write!(f, "{op}")?;
                for t in targets {
                    write!(f, " {t}")?;
                }
                Ok(())
            }
            Self::Wait(Wait::Seconds(s)) => write!(f, "wait {s} s"),
            Self::Wait(Wait::Final { timeout_s }) => {
                write!(f, "wait until every job is final (at most {timeout_s} s)")
            }
        }
    }
}

/// What a node step does; `testnet/hosts.sh` has a command for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeOp {
    /// SIGKILL the container.
    Kill,
    /// Stop it (SIGTERM, then SIGKILL after 20 s).
    Stop,
    /// Start a killed or stopped one again (same address and identity).
    Start,
    /// Stop and start a running one.
    Restart,
    /// Cut it off the p2p network.
    Partition,
    /// Put a partitioned one back.
    Heal,
}

impl NodeOp {
    /// Every op, in the order the format documents them.
    pub const ALL: [Self; 6] = [
        Self::Kill,
        Self::Stop,
        Self::Start,
        Self::Restart,
        Self::Partition,
        Self::Heal,
    ];

    /// The key in a step and the `hosts.sh` command.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Restart => "restart",
            Self::Partition => "partition",
            Self::Heal => "heal",
        }
    }

    /// Whether it brings something back (start, restart, heal): the
    /// harness then measures how long until every node sees every other.
    pub fn recovers(self) -> bool {
        matches!(self, Self::Start | Self::Restart | Self::Heal)
    }
}

impl fmt::Display for NodeOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container a node step acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The bootstrap node (`"bootstrap"` in a file).
    Bootstrap,
    /// Node I (1-based).
    Node(usize),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bootstrap => f.write_str("bootstrap"),
            Self::Node(i) => write!(f, "{i}"),
        }
    }
}

/// How long a wait step waits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Wait {
    /// This many seconds.
    Seconds(f64),
    /// Until every job submitted so far is verified, failed or cancelled
    /// as its submitter sees it, or the timeout passes.
    Final {
        /// Seconds at most.
        timeout_s: f64,
    },
}

/// Job kinds of a submit step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Every job runs the Wasm program.
    Wasm,
    /// Every job runs the Docker command.
    Docker,
    /// Wasm and Docker jobs in turn.
    Mixed,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Wasm => "wasm",
            Self::Docker => "docker",
            Self::Mixed => "mixed",
        })
    }
}

/// Which nodes submit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum From {
    /// Every running node in turn (`"round-robin"`).
    RoundRobin,
    /// These nodes in turn (a number or a list of numbers).
    Nodes(Vec<usize>),
}

impl fmt::Display for From {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RoundRobin => f.write_str("every running node"),
            Self::Nodes(n) if n.len() == 1 => write!(f, "node {}", n[0]),
            Self::Nodes(n) => {
                let s: Vec<String> = n.iter().map(ToString::to_string).collect();
                write!(f, "nodes {}", s.join(","))
            }
        }
    }
}

/// A program jobs run. Equal programs have equal honest results, so the
/// harness runs each distinct one once with `agora exec`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Program {
    /// A WASI module; the path is relative to the repository root.
    Wasm {
        /// The module file.
        module: PathBuf,
        /// Its arguments.
        args: Vec<String>,
    },
    /// A command in a local Docker image.
    Docker {
        /// Image name or id.
        image: String,
        /// Command and arguments.
        cmd: Vec<String>,
    },
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, what, rest) = match self {
            Self::Wasm { module, args } => ("wasm", module.display().to_string(), args),
            Self::Docker { image, cmd } => ("docker", image.clone(), cmd),
        };
        write!(f, "{kind} {what}")?;
        if !rest.is_empty() {
            write!(f, " -- {}", rest.join(" "))?;
        }
        Ok(())
    }
}

/// A submit step: `count` jobs at `rate` per second.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submit {
    /// Jobs to submit.
    pub count: usize,
    /// Their kind.
    pub kind: Kind,
    /// Jobs per second (> 0).
    pub rate: f64,
    /// Who submits.
    pub from: From,
    /// Executors per job.
    pub n: u8,
    /// Executors that must agree.
    pub k: u8,
    /// `--timeout` of each job (e.g. `"30s"`), if not the CLI's default.
    pub timeout: Option<String>,
    /// Job i runs `programs[i % programs.len()]` (two for `mixed`).
    pub programs: Vec<Program>,
}

/// `[checks]`: what must hold at the end. Every step that failed to run
/// fails the scenario too.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Checks {
    /// Every job reached verified, failed or cancelled.
    pub all_final: bool,
    /// Every verified result is the one `agora exec` gives locally.
    pub results_match_exec: bool,
    /// Every submission got one job id, which its submitter reports in a
    /// final state; no executor ran a job twice.
    pub none_lost: bool,
    /// After the last start/restart/heal (or the last step, without one),
    /// every running node lists every other running node online, and is
    /// connected to it, within this many seconds.
    pub all_online_within: Option<f64>,
    /// At least this many jobs verified.
    pub min_verified: Option<usize>,
    /// Every failed job's reason contains one of these.
    pub failed_reason_contains: Vec<String>,
    /// Every failed job failed within this many seconds of its submission.
    pub fail_within: Option<f64>,
}

impl Checks {
    /// Whether the checks read job outcomes (so need submissions and a
    /// final wait).
    fn need_jobs(&self) -> bool {
        self.all_final
            || self.results_match_exec
            || self.none_lost
            || self.min_verified.is_some()
            || !self.failed_reason_contains.is_empty()
            || self.fail_within.is_some()
    }
}

impl Scenario {
    /// Every distinct program the submit steps run.
    pub fn programs(&self) -> BTreeSet<Program> {
        self.steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Submit(sub) => Some(sub.programs.iter().cloned()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Jobs the submit steps submit in all.
    pub fn job_count(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match &s.action {
                Action::Submit(sub) => sub.count,
                _ => 0,
            })
            .sum()
    }
}

// ------------------------------------------------------------- raw form

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    description: Option<String>,
    network: Spanned<RawNetwork>,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
    checks: Option<Spanned<RawChecks>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    nodes: Spanned<i64>,
    faults: Option<Spanned<BTreeMap<String, String>>>,
    engines: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at: Option<Spanned<f64>>,
    after: Option<Spanned<f64>>,
    submit: Option<Spanned<RawSubmit>>,
    kill: Option<Spanned<Vec<RawTarget>>>,
    stop: Option<Spanned<Vec<RawTarget>>>,
    start: Option<Spanned<Vec<RawTarget>>>,
    restart: Option<Spanned<Vec<RawTarget>>>,
    partition: Option<Spanned<Vec<RawTarget>>>,
    heal: Option<Spanned<Vec<RawTarget>>>,
    wait: Option<Spanned<RawWait>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubmit {
    count: i64,
    kind: Option<Kind>,
    rate: f64,
    from: Option<RawFrom>,
    n: Option<i64>,
    k: Option<i64>,
    timeout: Option<String>,
    program: Option<String>,
    args: Option<Vec<String>>,
    image: Option<String>,
    cmd: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWait {
    seconds: Option<f64>,
    until: Option<String>,
    timeout: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChecks {
    all_final: Option<bool>,
    results_match_exec: Option<bool>,
    none_lost: Option<bool>,
    all_online_within: Option<Spanned<f64>>,
    min_verified: Option<Spanned<i64>>,
    failed_reason_contains: Option<OneOrMany>,
    fail_within: Option<Spanned<f64>>,
}

/// A node number or `"bootstrap"`.
#[derive(Clone, Copy)]
enum RawTarget {
    Bootstrap,
    Node(i64),
}

impl<'de> Deserialize<'de> for RawTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawTarget;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node number or \"bootstrap\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawTarget, E> {
                Ok(RawTarget::Node(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawTarget, E> {
                Ok(RawTarget::Node(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawTarget, E> {
                match v {
                    "bootstrap" => Ok(RawTarget::Bootstrap),
                    other => Err(E::custom(format!(
                        "unknown node {other:?}: nodes are numbers, the bootstrap is \"bootstrap\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `"round-robin"`, a node number, or a list of node numbers.
enum RawFrom {
    RoundRobin,
    Nodes(Vec<i64>),
}

impl<'de> Deserialize<'de> for RawFrom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFrom;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"round-robin\", a node number or a list of node numbers")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawFrom, E> {
                Ok(RawFrom::Nodes(vec![v]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawFrom, E> {
                Ok(RawFrom::Nodes(vec![i64::try_from(v).unwrap_or(i64::MAX)]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawFrom, E> {
                match v {
                    "round-robin" => Ok(RawFrom::RoundRobin),
                    other => Err(E::custom(format!(
                        "from = {other:?}: expected \"round-robin\", a node number or a list of node numbers"
                    ))),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawFrom, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element::<i64>()? {
                    v.push(x);
                }
                Ok(RawFrom::Nodes(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string or a list of strings.
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element::<String>()? {
                    v.push(x);
                }
                Ok(OneOrMany(v))
            }
        }
        d.deserialize_any(V)
    }
}

// ------------------------------------------------------------- checking

/// Parses and checks a scenario; `file` only names it in errors.
pub fn parse(file: &str, src: &str) -> Result<Scenario, ParseError> {
    let p = Parser { file, src };
    let raw: RawScenario = toml::from_str(src).map_err(|e| ParseError {
        file: file.to_owned(),
        line: e.span().map(|s| p.line(s.start)),
        msg: e.message().trim_end().to_owned(),
    })?;
    p.scenario(raw)
}

struct Parser<'a> {
    file: &'a str,
    src: &'a str,
}

/// A node's state as the steps leave it: what makes a step possible.
#[derive(Clone, Copy)]
struct Sim {
    running: bool,
    partitioned: bool,
    /// The line of the step that last changed it (0: the start).
    changed_at: usize,
}

impl Parser<'_> {
    /// The 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.src.len());
        self.src.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn err(&self, span: Range<usize>, msg: impl Into<String>) -> ParseError {
        ParseError {
            file: self.file.to_owned(),
            line: Some(self.line(span.start)),
            msg: msg.into(),
        }
    }

    fn scenario(&self, raw: RawScenario) -> Result<Scenario, ParseError> {
        let mut network = self.network(&raw.network)?;
        let n = network.nodes;
        // Index 0 is the bootstrap.
        let mut sim = vec![
            Sim {
                running: true,
                partitioned: false,
                changed_at: 0,
            };
            n + 1
        ];
        let mut steps = Vec::new();
        let mut last_at: Option<(f64, usize)> = None;
        let mut last_submit = None;
        let mut last_final_wait = None;
        let mut docker = false;
        for s in &raw.step {
            let line = self.line(s.span().start);
            let step = self.step(s, line, n, &mut sim, &mut last_at)?;
            match &step.action {
                Action::Submit(sub) => {
                    last_submit = Some(line);
                    docker |= sub.kind != Kind::Wasm;
                }
                Action::Wait(Wait::Final { .. }) => last_final_wait = Some(line),
                _ => {}
            }
            steps.push(step);
        }
        if steps.is_empty() {
            return Err(ParseError {
                file: self.file.to_owned(),
                line: None,
                msg: "no [[step]]: a scenario needs at least one".into(),
            });
        }
        match raw.network.get_ref().engines {
            Some(false) if docker => {
                return Err(self.err(
                    raw.network.span(),
                    "engines = false, yet a step submits Docker jobs: they need the nodes' engines",
                ))
            }
            Some(e) => network.engines = e,
            None => network.engines = docker,
        }
        let checks = match &raw.checks {
            Some(c) => self.checks(c, last_submit, last_final_wait)?,
            None => Checks::default(),
        };
        Ok(Scenario {
            description: raw.description,
            network,
            steps,
            checks,
        })
    }

    fn network(&self, raw: &Spanned<RawNetwork>) -> Result<Network, ParseError> {
        let r = raw.get_ref();
        let nodes = *r.nodes.get_ref();
        let nodes = usize::try_from(nodes)
            .ok()
            .filter(|n| (1..=MAX_NODES).contains(n))
            .ok_or_else(|| {
                self.err(
                    r.nodes.span(),
                    format!("nodes = {nodes}: must be 1..{MAX_NODES}"),
                )
            })?;
        let mut faults = BTreeMap::new();
        if let Some(f) = &r.faults {
            for (k, mode) in f.get_ref() {
                let i = k
                    .parse::<usize>()
                    .ok()
                    .filter(|i| (1..=nodes).contains(i))
                    .ok_or_else(|| {
                        self.err(
                            f.span(),
                            format!("faults: no node {k:?} (the network has nodes 1..{nodes})"),
                        )
                    })?;
                mode.parse::<Fault>()
                    .map_err(|e| self.err(f.span(), format!("faults: node {i}: {e}")))?;
                faults.insert(i, mode.clone());
            }
        }
        Ok(Network {
            nodes,
            faults,
            engines: false,
        })
    }

    fn step(
        &self,
        raw: &Spanned<RawStep>,
        line: usize,
        nodes: usize,
        sim: &mut [Sim],
        last_at: &mut Option<(f64, usize)>,
    ) -> Result<Step, ParseError> {
        let r = raw.get_ref();
        let time = |v: &Spanned<f64>, key: &str| {
            let t = *v.get_ref();
            if t.is_finite() && t >= 0.0 {
                Ok(t)
            } else {
                Err(self.err(
                    v.span(),
                    format!("{key} = {t}: must be a number of seconds, 0 or more"),
                ))
            }
        };
        let when = match (&r.at, &r.after) {
            (Some(a), Some(_)) => {
                return Err(self.err(a.span(), "a step has `at` or `after`, not both"))
            }
            (Some(a), None) => {
                let t = time(a, "at")?;
                if let Some((prev, prev_line)) = *last_at {
                    if t < prev {
                        return Err(self.err(
                            a.span(),
                            format!("at = {t} is before the step at line {prev_line} (at = {prev}): steps run in order"),
                        ));
                    }
                }
                *last_at = Some((t, line));
                When::At(t)
            }
            (None, Some(a)) => When::After(time(a, "after")?),
            (None, None) => When::After(0.0),
        };

        let mut actions: Vec<(Range<usize>, Action)> = Vec::new();
        if let Some(s) = &r.submit {
            actions.push((s.span(), Action::Submit(self.submit(s, nodes, sim)?)));
        }
        let ops = [
            (NodeOp::Kill, &r.kill),
            (NodeOp::Stop, &r.stop),
            (NodeOp::Start, &r.start),
            (NodeOp::Restart, &r.restart),
            (NodeOp::Partition, &r.partition),
            (NodeOp::Heal, &r.heal),
        ];
        for (op, v) in ops {
            if let Some(v) = v {
                let targets = self.node_op(op, v, line, nodes, sim)?;
                actions.push((v.span(), Action::Node(op, targets)));
            }
        }
        if let Some(w) = &r.wait {
            actions.push((w.span(), Action::Wait(self.wait(w)?)));
        }
        let mut actions = actions.into_iter();
        let Some((_, action)) = actions.next() else {
            return Err(self.err(
                raw.span(),
                "a step needs one action: submit, kill, stop, start, restart, partition, heal or wait",
            ));
        };
        if let Some((span, second)) = actions.next() {
            return Err(self.err(
                span,
                format!(
                    "a step has one action; this one also has `{}` (make it a [[step]] of its own)",
                    action_key(&second)
                ),
            ));
        }
        Ok(Step { line, when, action })
    }

    fn node(&self, span: &Range<usize>, i: i64, nodes: usize) -> Result<usize, ParseError> {
        usize::try_from(i)
            .ok()
            .filter(|i| (1..=nodes).contains(i))
            .ok_or_else(|| {
                self.err(
                    span.clone(),
                    format!("no node {i}: the network has nodes 1..{nodes}"),
                )
            })
    }

    fn node_op(
        &self,
        op: NodeOp,
        raw: &Spanned<Vec<RawTarget>>,
        line: usize,
        nodes: usize,
        sim: &mut [Sim],
    ) -> Result<Vec<Target>, ParseError> {
        let span = raw.span();
        if raw.get_ref().is_empty() {
            return Err(self.err(span, format!("{op} = []: which nodes?")));
        }
        let mut out = Vec::new();
        for t in raw.get_ref() {
            let t = match *t {
                RawTarget::Bootstrap => Target::Bootstrap,
                RawTarget::Node(i) => Target::Node(self.node(&span, i, nodes)?),
            };
            if out.contains(&t) {
                return Err(self.err(span, format!("{op}: {t} is listed twice")));
            }
            out.push(t);
        }
        for t in &out {
            let idx = match t {
                Target::Bootstrap => 0,
                Target::Node(i) => *i,
            };
            let name = match t {
                Target::Bootstrap => "the bootstrap".to_owned(),
                Target::Node(i) => format!("node {i}"),
            };
            let s = &mut sim[idx];
            let since = if s.changed_at == 0 {
                "since the start".to_owned()
            } else {
                format!("since line {}", s.changed_at)
            };
            let refuse = match op {
                NodeOp::Kill | NodeOp::Stop | NodeOp::Restart if !s.running => {
                    Some(format!("{op} {t}: {name} is down ({since})"))
                }
                NodeOp::Start if s.running => Some(format!(
                    "start {t}: {name} is running ({since}); start is for a killed or stopped node"
                )),
                NodeOp::Partition if s.partitioned => Some(format!(
                    "partition {t}: {name} is already partitioned ({since})"
                )),
                NodeOp::Heal if !s.partitioned => {
                    Some(format!("heal {t}: {name} is not partitioned ({since})"))
                }
                _ => None,
            };
            if let Some(msg) = refuse {
                return Err(self.err(span, msg));
            }
            match op {
                NodeOp::Kill | NodeOp::Stop => s.running = false,
                NodeOp::Start => s.running = true,
                NodeOp::Restart => {}
                NodeOp::Partition => s.partitioned = true,
                NodeOp::Heal => s.partitioned = false,
            }
            if op != NodeOp::Restart {
                s.changed_at = line;
            }
        }
        Ok(out)
    }

    fn submit(
        &self,
        raw: &Spanned<RawSubmit>,
        nodes: usize,
        sim: &[Sim],
    ) -> Result<Submit, ParseError> {
        let r = raw.get_ref();
        let span = raw.span();
        let count = usize::try_from(r.count)
            .ok()
            .filter(|c| *c >= 1)
            .ok_or_else(|| {
                self.err(
                    span.clone(),
                    format!("submit: count = {}: must be 1 or more", r.count),
                )
            })?;
        if !(r.rate.is_finite() && r.rate > 0.0) {
            return Err(self.err(
                span,
                format!(
                    "submit: rate = {}: must be more than 0 jobs per second",
                    r.rate
                ),
            ));
        }
        let from = match &r.from {
            None | Some(RawFrom::RoundRobin) => {
                if !sim[1..].iter().any(|s| s.running) {
                    return Err(self.err(span, "submit: every node is down at this step"));
                }
                From::RoundRobin
            }
            Some(RawFrom::Nodes(list)) => {
                if list.is_empty() {
                    return Err(self.err(span, "submit: from = []: which nodes?"));
                }
                let mut out: Vec<usize> = Vec::new();
                for i in list {
                    let i = self.node(&span, *i, nodes)?;
                    if out.contains(&i) {
                        return Err(self.err(span, format!("submit: from lists node {i} twice")));
                    }
                    let s = sim[i];
                    if !s.running {
                        return Err(self.err(
                            span,
                            format!(
                                "submit from node {i}, which is down (since line {})",
                                s.changed_at
                            ),
                        ));
                    }
                    out.push(i);
                }
                From::Nodes(out)
            }
        };
        let n = r.n.unwrap_or(3);
        let k = r.k.unwrap_or(2);
        let others = nodes - 1;
        let n = u8::try_from(n)
            .ok()
            .filter(|n| *n >= 1 && usize::from(*n) <= others)
            .ok_or_else(|| {
                self.err(
                    span.clone(),
                    format!("submit: n = {n} executors, but a submitter has {others} other node(s) to run its job"),
                )
            })?;
        let k = u8::try_from(k)
            .ok()
            .filter(|k| *k >= 1 && *k <= n)
            .ok_or_else(|| {
                self.err(span.clone(), format!("submit: k = {k}: must be 1..n ({n})"))
            })?;
        let kind = r.kind.unwrap_or(Kind::Wasm);
        let wasm = Program::Wasm {
            module: PathBuf::from(r.program.as_deref().unwrap_or(DEFAULT_WASM)),
            args: r.args.clone().unwrap_or_default(),
        };
        let docker = Program::Docker {
            image: r.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.to_owned()),
            cmd: r
                .cmd
                .clone()
                .unwrap_or_else(|| vec!["echo".into(), "hello from agora".into()]),
        };
        let unused = match kind {
            Kind::Wasm if r.image.is_some() || r.cmd.is_some() => Some("image/cmd"),
            Kind::Docker if r.program.is_some() || r.args.is_some() => Some("program/args"),
            _ => None,
        };
        if let Some(keys) = unused {
            return Err(self.err(
                span,
                format!("submit: {keys} has no use with kind = \"{kind}\""),
            ));
        }
        let programs = match kind {
            Kind::Wasm => vec![wasm],
            Kind::Docker => vec![docker],
            Kind::Mixed => vec![wasm, docker],
        };
        Ok(Submit {
            count,
            kind,
            rate: r.rate,
            from,
            n,
            k,
            timeout: r.timeout.clone(),
            programs,
        })
    }

    fn wait(&self, raw: &Spanned<RawWait>) -> Result<Wait, ParseError> {
        let r = raw.get_ref();
        let span = raw.span();
        let positive = |v: f64, key: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(self.err(
                    span.clone(),
                    format!("wait: {key} = {v}: must be more than 0 seconds"),
                ))
            }
        };
        match (r.seconds, r.until.as_deref()) {
            (Some(s), None) if r.timeout.is_none() => Ok(Wait::Seconds(positive(s, "seconds")?)),
            (None, Some("final")) => Ok(Wait::Final {
                timeout_s: positive(r.timeout.unwrap_or(DEFAULT_FINAL_TIMEOUT_S), "timeout")?,
            }),
            (None, Some(other)) => Err(self.err(
                span,
                format!("wait: until = {other:?}: the one condition is \"final\""),
            )),
            _ => Err(self.err(
                span,
                "wait: either { seconds = S } or { until = \"final\", timeout = S }",
            )),
        }
    }

    fn checks(
        &self,
        raw: &Spanned<RawChecks>,
        last_submit: Option<usize>,
        last_final_wait: Option<usize>,
    ) -> Result<Checks, ParseError> {
        let r = raw.get_ref();
        let positive = |v: &Spanned<f64>, key: &str| {
            let x = *v.get_ref();
            if x.is_finite() && x > 0.0 {
                Ok(x)
            } else {
                Err(self.err(
                    v.span(),
                    format!("{key} = {x}: must be more than 0 seconds"),
                ))
            }
        };
        let min_verified = match &r.min_verified {
            Some(m) => Some(usize::try_from(*m.get_ref()).map_err(|_| {
                self.err(
                    m.span(),
                    format!("min_verified = {}: must be 0 or more", m.get_ref()),
                )
            })?),
            None => None,
        };
        let c = Checks {
            all_final: r.all_final.unwrap_or(false),
            results_match_exec: r.results_match_exec.unwrap_or(false),
            none_lost: r.none_lost.unwrap_or(false),
            all_online_within: r
                .all_online_within
                .as_ref()
                .map(|v| positive(v, "all_online_within"))
                .transpose()?,
            min_verified,
            failed_reason_contains: r
                .failed_reason_contains
                .as_ref()
                .map(|v| v.0.clone())
                .unwrap_or_default(),
            fail_within: r
                .fail_within
                .as_ref()
                .map(|v| positive(v, "fail_within"))
                .transpose()?,
        };
        if c.need_jobs() {
            let Some(submit) = last_submit else {
                return Err(self.err(
                    raw.span(),
                    "these checks read jobs, and no step submits any",
                ));
            };
            if last_final_wait.is_none_or(|w| w < submit) {
                return Err(self.err(
                    raw.span(),
                    format!("these checks read final job states: add a step `wait = {{ until = \"final\" }}` after the last submit (line {submit})"),
                ));
            }
        }
        Ok(c)
    }
}

fn action_key(a: &Action) -> &'static str {
    match a {
        Action::Submit(_) => "submit",
        Action::Node(op, _) => op.as_str(),
        Action::Wait(_) => "wait",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
description = "a test"

[network]
nodes = 4
faults = { 2 = "collude=pair", 3 = "lie" }

[[step]]
at = 0
submit = { count = 10, kind = "mixed", rate = 2.5, from = [1, 4], n = 2, k = 2, program = "x.wasm", args = ["a"], cmd = ["true"] }

[[step]]
at = 3
kill = [2, "bootstrap"]

[[step]]
after = 1
start = [2]

[[step]]
partition = [3]

[[step]]
after = 2
heal = [3]

[[step]]
wait = { until = "final", timeout = 60 }

[checks]
all_final = true
results_match_exec = true
none_lost = true
all_online_within = 30
min_verified = 8
failed_reason_contains = "too few"
fail_within = 20
"#;

    fn err(src: &str) -> ParseError {
        match parse("t.toml", src) {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_a_good_file() {
        let s = parse("t.toml", GOOD).unwrap();
        assert_eq!(s.description.as_deref(), Some("a test"));
        assert_eq!(s.network.nodes, 4);
        assert_eq!(s.network.faults[&2], "collude=pair");
        assert_eq!(s.network.faults[&3], "lie");
        assert!(s.network.engines, "a mixed submit turns the engines on");
        assert_eq!(s.steps.len(), 6);
        assert_eq!(s.steps[0].line, 8);
        assert_eq!(s.steps[0].when, When::At(0.0));
        let Action::Submit(sub) = &s.steps[0].action else {
            panic!("{:?}", s.steps[0].action)
        };
        assert_eq!((sub.count, sub.rate, sub.n, sub.k), (10, 2.5, 2, 2));
        assert_eq!(sub.from, From::Nodes(vec![1, 4]));
        assert_eq!(
            sub.programs,
            vec![
                Program::Wasm {
                    module: "x.wasm".into(),
                    args: vec!["a".into()]
                },
                Program::Docker {
                    image: DEFAULT_IMAGE.into(),
                    cmd: vec!["true".into()]
                }
            ]
        );
        assert_eq!(
            s.steps[1].action,
            Action::Node(NodeOp::Kill, vec![Target::Node(2), Target::Bootstrap])
        );
        assert_eq!(s.steps[2].when, When::After(1.0));
        assert_eq!(s.steps[3].when, When::After(0.0));
        assert_eq!(
            s.steps[5].action,
            Action::Wait(Wait::Final { timeout_s: 60.0 })
        );
        assert_eq!(
            s.checks,
            Checks {
                all_final: true,
                results_match_exec: true,
                none_lost: true,
                all_online_within: Some(30.0),
                min_verified: Some(8),
                failed_reason_contains: vec!["too few".into()],
                fail_within: Some(20.0),
            }
        );
        assert_eq!(s.job_count(), 10);
        assert_eq!(s.programs().len(), 2);
    }

    #[test]
    fn defaults() {
        let s = parse(
            "t.toml",
            "[network]\nnodes = 4\n[[step]]\nsubmit = { count = 1, rate = 1 }\n",
        )
        .unwrap();
        let Action::Submit(sub) = &s.steps[0].action else {
            panic!()
        };
        assert_eq!((sub.n, sub.k, sub.kind), (3, 2, Kind::Wasm));
        assert_eq!(sub.from, From::RoundRobin);
        assert!(!s.network.engines, "Wasm only: no engines");
        assert_eq!(s.checks, Checks::default());
    }

    #[test]
    fn an_unknown_key_names_its_line() {
        let e = err("[network]\nnodes = 3\n\n[[step]]\nat = 1\nkil = [1]\n");
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.msg.contains("unknown field `kil`"), "{e}");
        assert!(e.to_string().starts_with("t.toml:6: "), "{e}");

        let e = err(
            "[network]\nnodes = 3\n[[step]]\nsubmit = { count = 1, rate = 1, colour = \"red\" }\n",
        );
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.msg.contains("colour"), "{e}");

        let e = err("[network]\nnodes = 3\nspeed = 1\n");
        assert_eq!(e.line, Some(3), "{e}");

        let e = err(
            "[network]\nnodes = 3\n[[step]]\nwait = { seconds = 1 }\n[checks]\nall_fine = true\n",
        );
        assert_eq!(e.line, Some(6), "{e}");
    }

    #[test]
    fn impossible_steps_name_their_line() {
        let head = "[network]\nnodes = 3\n";
        let cases: &[(&str, usize, &str)] = &[
            ("[[step]]\nkill = [4]\n", 4, "no node 4"),
            ("[[step]]\nkill = [0]\n", 4, "no node 0"),
            ("[[step]]\nheal = [2]\n", 4, "not partitioned"),
            ("[[step]]\nstart = [1]\n", 4, "is running"),
            (
                "[[step]]\nkill = [1]\n[[step]]\nkill = [1]\n",
                6,
                "node 1 is down (since line 3)",
            ),
            (
                "[[step]]\npartition = [2]\n\n[[step]]\npartition = [2]\n",
                7,
                "already partitioned",
            ),
            ("[[step]]\nat = -1\nwait = { seconds = 1 }\n", 4, "0 or more"),
            (
                "[[step]]\nat = 5\nwait = { seconds = 1 }\n[[step]]\nat = 2\nwait = { seconds = 1 }\n",
                7,
                "before the step at line 3",
            ),
            ("[[step]]\nsubmit = { count = 5, rate = 0 }\n", 4, "rate = 0"),
            ("[[step]]\nsubmit = { count = 0, rate = 1 }\n", 4, "count = 0"),
            ("[[step]]\nsubmit = { count = 1, rate = 1, n = 3 }\n", 4, "2 other node(s)"),
            ("[[step]]\nsubmit = { count = 1, rate = 1, n = 2, k = 3 }\n", 4, "k = 3"),
            (
                "[[step]]\nkill = [2]\n[[step]]\nsubmit = { count = 1, rate = 1, from = 2, n = 1, k = 1 }\n",
                6,
                "which is down",
            ),
            (
                "[[step]]\nkill = [1]\nwait = { seconds = 1 }\n",
                5,
                "also has `wait`",
            ),
            ("[[step]]\nat = 1\n", 3, "needs one action"),
            ("[[step]]\nkill = [\"boot\"]\n", 4, "unknown node \"boot\""),
            ("[[step]]\nwait = { until = \"done\" }\n", 4, "until = \"done\""),
            (
                "[[step]]\nsubmit = { count = 1, rate = 1, n = 2 }\n[checks]\nall_final = true\n",
                5,
                "add a step `wait = { until = \"final\" }`",
            ),
            (
                "[[step]]\nsubmit = { count = 1, rate = 1, n = 2, kind = \"wasm\", image = \"x\" }\n",
                4,
                "no use",
            ),
        ];
        for (body, line, want) in cases {
            let e = err(&format!("{head}{body}"));
            assert_eq!(e.line, Some(*line), "{body}: {e}");
            assert!(e.msg.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn network_errors() {
        assert_eq!(
            err("[network]\nnodes = 0\n[[step]]\nwait = { seconds = 1 }\n").line,
            Some(2)
        );
        let e = err(
            "[network]\nnodes = 3\nfaults = { 4 = \"lie\" }\n[[step]]\nwait = { seconds = 1 }\n",
        );
        assert!(e.msg.contains("no node \"4\""), "{e}");
        assert_eq!(e.line, Some(3));
        let e = err(
            "[network]\nnodes = 3\nfaults = { 1 = \"honest\" }\n[[step]]\nwait = { seconds = 1 }\n",
        );
        assert!(e.msg.contains("unknown fault mode"), "{e}");
        let e = err("[network]\nnodes = 3\nengines = false\n[[step]]\nsubmit = { count = 1, rate = 1, n = 2, kind = \"docker\" }\n");
        assert!(e.msg.contains("engines = false"), "{e}");
        let e = err("[network]\nnodes = 3\n");
        assert!(e.msg.contains("no [[step]]"), "{e}");
        let e = err("[[step]]\nwait = { seconds = 1 }\n");
        assert!(e.msg.contains("network"), "{e}");
    }

    #[test]
    fn restart_and_partitioned_nodes_stay_usable() {
        // A partitioned node can be killed, started and healed; a restart
        // leaves a node running.
        let s = parse(
            "t.toml",
            "[network]\nnodes = 3\n[[step]]\npartition = [1]\n[[step]]\nkill = [1]\n[[step]]\nstart = [1]\n[[step]]\nheal = [1]\n[[step]]\nrestart = [1, \"bootstrap\"]\n[[step]]\nrestart = [1]\n",
        )
        .unwrap();
        assert_eq!(s.steps.len(), 6);
    }
}
