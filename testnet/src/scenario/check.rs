//! Judges an [`Outcome`] against a scenario's `[checks]`: pure, so every
//! check is tested on made-up outcomes. [`evaluate`] returns a [`Report`]
//! (counts, timings, each check with pass or FAIL and why), which the
//! binary prints with [`Report::summary`] and writes as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use agora_node::api::types::JobState;
use serde::Serialize;

use super::parse::{Program, Scenario};
use super::run::{Expected, Mesh, Observed, Outcome, Submission};

/// The judged run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario file.
    pub scenario: String,
    /// Its description.
    pub description: Option<String>,
    /// Whether every check passed.
    pub pass: bool,
    /// Nodes besides the bootstrap.
    pub nodes: usize,
    /// Node → fault mode.
    pub faults: BTreeMap<usize, String>,
    /// When the timeline started (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// How long it ran, in seconds.
    pub duration_s: f64,
    /// Job counts.
    pub jobs: Counts,
    /// Submission to verification, in seconds, of the verified jobs.
    pub latency_s: Option<Latency>,
    /// Why jobs failed: the reason up to its first `:`, with a count and
    /// one full example.
    pub failure_reasons: Vec<Reason>,
    /// The honest results.
    pub expected: Vec<Expected>,
    /// Each step, with the time the network took to recover from it.
    pub steps: Vec<StepReport>,
    /// Each check.
    pub checks: Vec<CheckResult>,
    /// Each submission and what became of it.
    pub submissions: Vec<JobRow>,
}

/// How many jobs ended how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Submissions made.
    pub submitted: usize,
    /// Submissions that got no job id.
    pub refused: usize,
    /// Verified.
    pub verified: usize,
    /// Failed.
    pub failed: usize,
    /// Cancelled.
    pub cancelled: usize,
    /// Seen, not final.
    pub not_final: usize,
    /// Got an id, never seen in its submitter's list.
    pub unseen: usize,
    /// Verified with a result other than `agora exec`'s.
    pub wrong_results: usize,
    /// Jobs an executor appears in twice.
    pub run_twice: usize,
    /// Attestations the quorum outvoted (a hash other than the accepted
    /// one): lies caught.
    pub outvoted_attestations: usize,
    /// Jobs that needed executors beyond their first n (re-dispatched
    /// after a miss or a crash, or escalated after a disagreement).
    pub redispatched: usize,
    /// Executor assignments by how they ended (`answered`, `missed`,
    /// `crashed`, `released`, `running`).
    pub executor_states: BTreeMap<String, usize>,
}

/// Latency percentiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Slowest.
    pub max: f64,
}

/// A kind of failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// The reason up to its first `:`.
    pub reason: String,
    /// Jobs that failed so.
    pub count: usize,
    /// One full reason.
    pub example: String,
}

/// A step, judged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// Its line.
    pub line: usize,
    /// What it did.
    pub action: String,
    /// When it started (seconds since the start).
    pub started_s: f64,
    /// How long it took.
    pub took_s: f64,
    /// Why it failed.
    pub error: Option<String>,
    /// A remark (a wait that timed out).
    pub note: Option<String>,
    /// After a start, restart or heal: seconds until every running node
    /// saw every other online and connected.
    pub mesh_s: Option<f64>,
    /// Why that was not measured, if it was not.
    pub mesh_note: Option<String>,
    /// After a node step: seconds until the first job submitted after it
    /// verified (the network serving new work again).
    pub next_verified_s: Option<f64>,
}

/// One check, judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Its key in `[checks]` (`steps` for the implicit one).
    pub name: String,
    /// Whether it holds.
    pub pass: bool,
    /// Why.
    pub detail: String,
}

/// A submission and its end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    /// The submit step's line.
    pub step_line: usize,
    /// The submitter.
    pub node: Option<usize>,
    /// When it was submitted (seconds since the start).
    pub at_s: f64,
    /// Its job id.
    pub id: Option<String>,
    /// Its last known state (`refused`: no id, `unseen`: never listed).
    pub state: String,
    /// Why it failed, or why it was refused.
    pub reason: Option<String>,
    /// Submission to final state, in seconds.
    pub took_s: Option<f64>,
    /// Whether a verified result equals `agora exec`'s.
    pub correct: Option<bool>,
    /// Who ran it.
    pub executors: Vec<ExecutorRow>,
}

/// One executor of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecutorRow {
    /// Its node number, if it is one of the scenario's nodes.
    pub node: Option<usize>,
    /// Its peer id.
    pub peer: String,
    /// How its assignment ended (`answered`, `missed`, `crashed`,
    /// `released`, `running`).
    pub state: String,
    /// `right` or `wrong` against `agora exec`'s result, once it answered.
    pub result: Option<String>,
}

/// One submission's job, as far as known.
struct View<'a> {
    sub: &'a Submission,
    obs: Option<&'a Observed>,
}

impl View<'_> {
    fn state(&self) -> Option<JobState> {
        self.obs.map(|o| o.record.state)
    }
    fn took_s(&self) -> Option<f64> {
        let r = &self.obs?.record;
        let end = r.finished_at_ms?;
        Some(end.saturating_sub(r.submitted_at_ms) as f64 / 1000.0)
    }
}

/// Judges `out` against `sc`'s checks; `file` names the scenario.
pub fn evaluate(file: &str, sc: &Scenario, out: &Outcome) -> Report {
    let views: Vec<View<'_>> = out
        .submissions
        .iter()
        .map(|sub| View {
            sub,
            obs: sub
                .job_id
                .as_ref()
                .and_then(|id| out.jobs.get(id))
                .filter(|o| Some(o.node) == sub.node),
        })
        .collect();
    let expected: BTreeMap<&Program, &Expected> =
        out.expected.iter().map(|e| (&e.program, e)).collect();
    let correct = |v: &View<'_>| -> Option<bool> {
        let r = &v.obs?.record;
        if r.state != JobState::Verified {
            return None;
        }
        let want = expected.get(&v.sub.program)?.result_hash.as_ref()?;
        Some(r.result_hash.as_ref() == Some(want))
    };

    let mut c = Counts {
        submitted: views.len(),
        ..Counts::default()
    };
    for v in &views {
        match (&v.sub.job_id, v.state()) {
            (None, _) => c.refused += 1,
            (Some(_), None) => c.unseen += 1,
            (Some(_), Some(JobState::Verified)) => c.verified += 1,
            (Some(_), Some(JobState::Failed)) => c.failed += 1,
            (Some(_), Some(JobState::Cancelled)) => c.cancelled += 1,
            (Some(_), Some(_)) => c.not_final += 1,
        }
        if correct(v) == Some(false) {
            c.wrong_results += 1;
        }
        if let Some(o) = v.obs {
            if ran_twice(o) {
                c.run_twice += 1;
            }
            if o.record.executors.len() > usize::from(o.record.n) {
                c.redispatched += 1;
            }
            for e in &o.record.executors {
                *c.executor_states.entry(e.state.clone()).or_default() += 1;
            }
            if o.record.state == JobState::Verified {
                c.outvoted_attestations += o
                    .record
                    .executors
                    .iter()
                    .filter(|e| e.result_hash.is_some() && e.result_hash != o.record.result_hash)
                    .count();
            }
        }
    }

    let mut lat: Vec<f64> = views
        .iter()
        .filter(|v| v.state() == Some(JobState::Verified))
        .filter_map(View::took_s)
        .collect();
    lat.sort_by(f64::total_cmp);
    let latency_s = (!lat.is_empty()).then(|| Latency {
        p50: percentile(&lat, 0.5),
        p95: percentile(&lat, 0.95),
        max: lat[lat.len() - 1],
    });

    let mut reasons: BTreeMap<String, Reason> = BTreeMap::new();
    for v in &views {
        let Some(o) = v.obs.filter(|o| o.record.state == JobState::Failed) else {
            continue;
        };
        let full = o
            .record
            .reason
            .clone()
            .unwrap_or_else(|| "(no reason)".into());
        let head = full.split(':').next().unwrap_or_default().trim().to_owned();
        reasons
            .entry(head.clone())
            .or_insert_with(|| Reason {
                reason: head,
                count: 0,
                example: full,
            })
            .count += 1;
    }
    let mut failure_reasons: Vec<Reason> = reasons.into_values().collect();
    failure_reasons.sort_by_key(|r| std::cmp::Reverse(r.count));

    let steps: Vec<StepReport> = out
        .steps
        .iter()
        .map(|s| StepReport {
            line: s.line,
            action: s.action.clone(),
            started_s: s.started_s,
            took_s: s.ended_s - s.started_s,
            error: s.error.clone(),
            note: s.note.clone(),
            mesh_s: s.mesh.as_ref().and_then(|m| m.secs),
            mesh_note: s
                .mesh
                .as_ref()
                .filter(|m| m.secs.is_none())
                .map(|m| m.note.clone()),
            next_verified_s: s
                .op
                .and_then(|_| next_verified(out.started_at_ms, s.started_s, &views)),
        })
        .collect();

    let mut checks = vec![check_steps(out)];
    let k = &sc.checks;
    if k.all_final {
        checks.push(check_all_final(&views));
    }
    if k.results_match_exec {
        checks.push(check_results(&views, &out.expected, &correct));
    }
    if k.none_lost {
        checks.push(check_none_lost(&views));
    }
    if let Some(limit) = k.all_online_within {
        checks.push(check_online(out.mesh.as_ref(), limit));
    }
    if let Some(min) = k.min_verified {
        checks.push(CheckResult {
            name: "min_verified".into(),
            pass: c.verified >= min,
            detail: format!("{} verified, at least {min} wanted", c.verified),
        });
    }
    if !k.failed_reason_contains.is_empty() {
        checks.push(check_reasons(&views, &k.failed_reason_contains));
    }
    if let Some(limit) = k.fail_within {
        checks.push(check_fail_within(&views, limit));
    }

    let submissions = views
        .iter()
        .map(|v| JobRow {
            step_line: v.sub.step_line,
            node: v.sub.node,
            at_s: v.sub.at_s,
            id: v.sub.job_id.clone(),
            state: match (&v.sub.job_id, v.state()) {
                (None, _) => "refused".into(),
                (Some(_), None) => "unseen".into(),
                (Some(_), Some(s)) => s.as_str().into(),
            },
            reason: v
                .sub
                .error
                .clone()
                .or_else(|| v.obs.and_then(|o| o.record.reason.clone())),
            took_s: v.took_s(),
            correct: correct(v),
            executors: v
                .obs
                .map(|o| {
                    let want = expected
                        .get(&v.sub.program)
                        .and_then(|e| e.result_hash.as_ref());
                    o.record
                        .executors
                        .iter()
                        .map(|e| ExecutorRow {
                            node: out.peers.iter().position(|p| *p == e.peer_id),
                            peer: e.peer_id.clone(),
                            state: e.state.clone(),
                            result: match (&e.result_hash, want) {
                                (Some(h), Some(w)) => {
                                    Some(if h == w { "right" } else { "wrong" }.into())
                                }
                                _ => None,
                            },
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();

    Report {
        scenario: file.to_owned(),
        description: sc.description.clone(),
        pass: checks.iter().all(|c| c.pass),
        nodes: sc.network.nodes,
        faults: sc.network.faults.clone(),
        started_at_ms: out.started_at_ms,
        duration_s: out.duration_s,
        jobs: c,
        latency_s,
        failure_reasons,
        expected: out.expected.clone(),
        steps,
        checks,
        submissions,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Whether an executor appears twice among a job's executors.
fn ran_twice(o: &Observed) -> bool {
    let mut seen = BTreeSet::new();
    !o.record.executors.iter().all(|e| seen.insert(&e.peer_id))
}

/// Seconds from a step's start until the first job submitted after it
/// verified.
fn next_verified(t0_ms: u64, step_s: f64, views: &[View<'_>]) -> Option<f64> {
    let step_ms = t0_ms + (step_s * 1000.0) as u64;
    views
        .iter()
        .filter_map(|v| v.obs)
        .filter(|o| o.record.state == JobState::Verified && o.record.submitted_at_ms >= step_ms)
        .filter_map(|o| o.record.finished_at_ms)
        .min()
        .map(|end| end.saturating_sub(step_ms) as f64 / 1000.0)
}

/// Up to five short job ids.
fn some_ids<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = ids.collect();
    let mut s: Vec<String> = all
        .iter()
        .take(5)
        .map(|i| i.chars().take(12).collect())
        .collect();
    if all.len() > 5 {
        s.push(format!("and {} more", all.len() - 5));
    }
    s.join(", ")
}

fn check_steps(out: &Outcome) -> CheckResult {
    let bad: Vec<String> = out
        .steps
        .iter()
        .filter_map(|s| {
            s.error
                .as_ref()
                .map(|e| format!("line {} ({}): {e}", s.line, s.action))
        })
        .collect();
    CheckResult {
        name: "steps".into(),
        pass: bad.is_empty(),
        detail: if bad.is_empty() {
            format!("all {} steps ran", out.steps.len())
        } else {
            bad.join("; ")
        },
    }
}

fn check_all_final(views: &[View<'_>]) -> CheckResult {
    let jobs: Vec<&View<'_>> = views.iter().filter(|v| v.sub.job_id.is_some()).collect();
    let mut by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for v in &jobs {
        let id = v.sub.job_id.as_deref().unwrap_or_default();
        match v.state() {
            Some(s) if s.is_final() => {}
            Some(s) => by.entry(s.as_str()).or_default().push(id),
            None => by.entry("never seen").or_default().push(id),
        }
    }
    let bad: usize = by.values().map(Vec::len).sum();
    CheckResult {
        name: "all_final".into(),
        pass: bad == 0 && !jobs.is_empty(),
        detail: if jobs.is_empty() {
            "no job was submitted".into()
        } else if bad == 0 {
            format!("{} of {} jobs final", jobs.len(), jobs.len())
        } else {
            let parts: Vec<String> = by
                .iter()
                .map(|(s, ids)| format!("{} {s} ({})", ids.len(), some_ids(ids.iter().copied())))
                .collect();
            format!(
                "{bad} of {} jobs not final: {}",
                jobs.len(),
                parts.join("; ")
            )
        },
    }
}

fn check_results(
    views: &[View<'_>],
    expected: &[Expected],
    correct: &dyn Fn(&View<'_>) -> Option<bool>,
) -> CheckResult {
    let missing: Vec<String> = expected
        .iter()
        .filter(|e| e.result_hash.is_none())
        .map(|e| {
            format!(
                "{}: {}",
                e.program,
                e.error.as_deref().unwrap_or("no result")
            )
        })
        .collect();
    if !missing.is_empty() {
        return CheckResult {
            name: "results_match_exec".into(),
            pass: false,
            detail: format!("no honest result to compare with: {}", missing.join("; ")),
        };
    }
    let verified: Vec<&View<'_>> = views
        .iter()
        .filter(|v| v.state() == Some(JobState::Verified))
        .collect();
    let wrong: Vec<&str> = verified
        .iter()
        .filter(|v| correct(v) != Some(true))
        .filter_map(|v| v.sub.job_id.as_deref())
        .collect();
    CheckResult {
        name: "results_match_exec".into(),
        pass: wrong.is_empty(),
        detail: if wrong.is_empty() {
            format!(
                "{} verified results, all equal to agora exec's",
                verified.len()
            )
        } else {
            format!(
                "{} of {} verified results differ from agora exec's: {}",
                wrong.len(),
                verified.len(),
                some_ids(wrong.into_iter())
            )
        },
    }
}

fn check_none_lost(views: &[View<'_>]) -> CheckResult {
    let mut problems = Vec::new();
    let refused: Vec<String> = views
        .iter()
        .filter(|v| v.sub.job_id.is_none())
        .map(|v| {
            format!(
                "line {} #{}: {}",
                v.sub.step_line,
                v.sub.index,
                v.sub.error.as_deref().unwrap_or("no job id")
            )
        })
        .collect();
    if !refused.is_empty() {
        let first = refused
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        problems.push(format!(
            "{} submission(s) got no job id ({first})",
            refused.len()
        ));
    }
    let mut seen = BTreeSet::new();
    let dup: Vec<&str> = views
        .iter()
        .filter_map(|v| v.sub.job_id.as_deref())
        .filter(|id| !seen.insert(*id))
        .collect();
    if !dup.is_empty() {
        problems.push(format!(
            "{} job id(s) given twice ({})",
            dup.len(),
            some_ids(dup.into_iter())
        ));
    }
    let unseen: Vec<&str> = views
        .iter()
        .filter(|v| v.obs.is_none())
        .filter_map(|v| v.sub.job_id.as_deref())
        .collect();
    if !unseen.is_empty() {
        problems.push(format!(
            "{} job(s) missing from their submitter's list ({})",
            unseen.len(),
            some_ids(unseen.into_iter())
        ));
    }
    let open: Vec<&str> = views
        .iter()
        .filter(|v| v.state().is_some_and(|s| !s.is_final()))
        .filter_map(|v| v.sub.job_id.as_deref())
        .collect();
    if !open.is_empty() {
        problems.push(format!(
            "{} job(s) with no final state ({})",
            open.len(),
            some_ids(open.into_iter())
        ));
    }
    let twice: Vec<&str> = views
        .iter()
        .filter(|v| v.obs.is_some_and(ran_twice))
        .filter_map(|v| v.sub.job_id.as_deref())
        .collect();
    if !twice.is_empty() {
        problems.push(format!(
            "{} job(s) run twice by one executor ({})",
            twice.len(),
            some_ids(twice.into_iter())
        ));
    }
    CheckResult {
        name: "none_lost".into(),
        pass: problems.is_empty() && !views.is_empty(),
        detail: if views.is_empty() {
            "no job was submitted".into()
        } else if problems.is_empty() {
            format!(
                "{} submissions, {} distinct job ids, each final at its submitter and run once per executor",
                views.len(),
                views.len()
            )
        } else {
            problems.join("; ")
        },
    }
}

fn check_online(mesh: Option<&Mesh>, limit: f64) -> CheckResult {
    let after = |m: &Mesh| match m.after_line {
        Some(l) => format!("after the step at line {l}"),
        None => "after the last step".into(),
    };
    let (pass, detail) = match mesh {
        None => (false, "not measured".into()),
        Some(m) => match m.secs {
            Some(s) => (
                s <= limit,
                format!(
                    "every running node saw every other online and connected {s:.1} s {} (limit {limit} s)",
                    after(m)
                ),
            ),
            None => (false, format!("{}: {}", after(m), m.note)),
        },
    };
    CheckResult {
        name: "all_online_within".into(),
        pass,
        detail,
    }
}

fn check_reasons(views: &[View<'_>], wanted: &[String]) -> CheckResult {
    let failed: Vec<&Observed> = views
        .iter()
        .filter_map(|v| v.obs)
        .filter(|o| o.record.state == JobState::Failed)
        .collect();
    let bad: Vec<String> = failed
        .iter()
        .filter_map(|o| {
            let r = o.record.reason.as_deref().unwrap_or_default();
            (!wanted.iter().any(|w| r.contains(w.as_str())))
                .then(|| format!("{}: {r}", o.record.id.chars().take(12).collect::<String>()))
        })
        .collect();
    let quoted: Vec<String> = wanted.iter().map(|w| format!("{w:?}")).collect();
    CheckResult {
        name: "failed_reason_contains".into(),
        pass: bad.is_empty(),
        detail: if bad.is_empty() {
            format!(
                "{} failed job(s), each reason naming {}",
                failed.len(),
                quoted.join(" or ")
            )
        } else {
            format!(
                "{} of {} failed job(s) give another reason than {}, e.g. {}",
                bad.len(),
                failed.len(),
                quoted.join(" or "),
                bad[0]
            )
        },
    }
}

fn check_fail_within(views: &[View<'_>], limit: f64) -> CheckResult {
    let failed: Vec<&View<'_>> = views
        .iter()
        .filter(|v| v.state() == Some(JobState::Failed))
        .collect();
    let slowest = failed
        .iter()
        .filter_map(|v| v.took_s())
        .fold(0.0_f64, f64::max);
    let slow = failed
        .iter()
        .filter(|v| v.took_s().is_none_or(|t| t > limit))
        .count();
    CheckResult {
        name: "fail_within".into(),
        pass: slow == 0,
        detail: if failed.is_empty() {
            "no job failed".into()
        } else if slow == 0 {
            format!(
                "{} failed job(s), the slowest in {slowest:.1} s (limit {limit} s)",
                failed.len()
            )
        } else {
            format!(
                "{slow} of {} failed job(s) took longer than {limit} s (slowest {slowest:.1} s)",
                failed.len()
            )
        },
    }
}

impl Report {
    /// The human summary: counts, steps with their recovery times, checks.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let faults = if self.faults.is_empty() {
            String::new()
        } else {
            let f: Vec<String> = self
                .faults
                .iter()
                .map(|(i, m)| format!("{i}={m}"))
                .collect();
            format!(", faults {}", f.join(" "))
        };
        let _ = writeln!(
            s,
            "scenario {}: {} nodes{faults}, ran {:.1} s",
            self.scenario, self.nodes, self.duration_s
        );
        if let Some(d) = &self.description {
            let _ = writeln!(s, "  {d}");
        }
        let _ = writeln!(s, "\nsteps:");
        let _ = writeln!(
            s,
            "  {:>5} {:>7} {:>7}  {:<44} recovery",
            "line", "at s", "took s", "action"
        );
        for st in &self.steps {
            let mut rec = Vec::new();
            if let Some(m) = st.mesh_s {
                rec.push(format!("all online and connected after {m:.1} s"));
            }
            if let Some(n) = &st.mesh_note {
                rec.push(format!("mesh: {n}"));
            }
            if let Some(v) = st.next_verified_s {
                rec.push(format!("next new job verified {v:.1} s later"));
            }
            if let Some(n) = &st.note {
                rec.push(n.clone());
            }
            if let Some(e) = &st.error {
                rec.push(format!("ERROR {e}"));
            }
            let _ = writeln!(
                s,
                "  {:>5} {:>7.1} {:>7.1}  {:<44} {}",
                st.line,
                st.started_s,
                st.took_s,
                st.action,
                rec.join("; ")
            );
        }
        let j = &self.jobs;
        let _ = writeln!(
            s,
            "\njobs: {} submitted, {} verified, {} failed, {} cancelled, {} not final, {} refused, {} unseen",
            j.submitted, j.verified, j.failed, j.cancelled, j.not_final, j.refused, j.unseen
        );
        let _ = writeln!(
            s,
            "      {} wrong results accepted, {} run twice, {} lying attestations outvoted",
            j.wrong_results, j.run_twice, j.outvoted_attestations
        );
        if !j.executor_states.is_empty() {
            let states: Vec<String> = j
                .executor_states
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            let _ = writeln!(
                s,
                "      executors: {}; {} job(s) needed more than their first n",
                states.join(", "),
                j.redispatched
            );
        }
        if let Some(l) = &self.latency_s {
            let _ = writeln!(
                s,
                "      submission to verified: p50 {:.1} s, p95 {:.1} s, max {:.1} s",
                l.p50, l.p95, l.max
            );
        }
        let wrong: Vec<&JobRow> = self
            .submissions
            .iter()
            .filter(|r| r.correct == Some(false))
            .collect();
        for r in wrong.iter().take(10) {
            let ex: Vec<String> = r
                .executors
                .iter()
                .map(|e| {
                    let who = e.node.map_or_else(
                        || e.peer.chars().rev().take(8).collect::<String>(),
                        |n| format!("n{n}"),
                    );
                    match &e.result {
                        Some(res) => format!("{who} {res}"),
                        None => format!("{who} {}", e.state),
                    }
                })
                .collect();
            let _ = writeln!(
                s,
                "      wrong result accepted: job {} from node {}: {}",
                r.id.as_deref()
                    .unwrap_or("-")
                    .chars()
                    .take(12)
                    .collect::<String>(),
                r.node.map_or("-".into(), |n| n.to_string()),
                ex.join(", ")
            );
        }
        for r in &self.failure_reasons {
            let _ = writeln!(s, "      failed {}x: {}", r.count, r.example);
        }
        let _ = writeln!(s, "\nchecks:");
        for c in &self.checks {
            let _ = writeln!(
                s,
                "  {} {}: {}",
                if c.pass { "pass" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        let failed = self.checks.iter().filter(|c| !c.pass).count();
        let _ = writeln!(
            s,
            "\n{}: {} of {} checks passed",
            if self.pass { "PASS" } else { "FAIL" },
            self.checks.len() - failed,
            self.checks.len()
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse::{parse, NodeOp};
    use crate::scenario::run::StepOutcome;
    use agora_node::api::types::{ExecutorRecord, JobRecord, ReplicationMode};

    const T0: u64 = 1_000_000;

    fn scenario(checks: &str) -> Scenario {
        parse(
            "t.toml",
            &format!(
                "[network]\nnodes = 4\n[[step]]\nsubmit = {{ count = 2, rate = 1 }}\n[[step]]\nkill = [4]\n[[step]]\nstart = [4]\n[[step]]\nwait = {{ until = \"final\" }}\n[checks]\n{checks}\n"
            ),
        )
        .unwrap()
    }

    fn program() -> Program {
        Program::Wasm {
            module: "testnet/fixtures/build/hello.wasm".into(),
            args: vec![],
        }
    }

    fn executor(peer: &str, hash: &str) -> ExecutorRecord {
        ExecutorRecord {
            peer_id: peer.into(),
            attempt: 0,
            state: "answered".into(),
            result_hash: Some(hash.into()),
            agrees: None,
            assigned_at_ms: T0,
            ended_at_ms: Some(T0 + 100),
            error: None,
        }
    }

    fn record(
        id: &str,
        state: JobState,
        hash: Option<&str>,
        submitted: u64,
        took: u64,
    ) -> JobRecord {
        JobRecord {
            id: id.into(),
            state,
            executor: "wasm".into(),
            program: "m".into(),
            n: 3,
            k: 2,
            unverified: false,
            replication: ReplicationMode::Fixed,
            plan: None,
            submitted_at_ms: submitted,
            finished_at_ms: state.is_final().then_some(submitted + took),
            reason: (state == JobState::Failed)
                .then(|| "no capable node answered: 0 bid(s)".into()),
            result_hash: hash.map(Into::into),
            exit_code: hash.map(|_| 0),
            bids: 3,
            executors: vec![
                executor("a", "good"),
                executor("b", "good"),
                executor("c", "bad"),
            ],
            events: vec![],
        }
    }

    /// Two jobs through node 1, both verified right; kill at 10 s, start
    /// at 20 s, all online 5 s after the start.
    fn good() -> Outcome {
        let subs = (0..2)
            .map(|i| Submission {
                step_line: 4,
                index: i,
                node: Some(1),
                program: program(),
                at_s: i as f64 * 15.0,
                job_id: Some(format!("job{i}")),
                error: None,
            })
            .collect();
        let jobs = (0..2)
            .map(|i| {
                let id = format!("job{i}");
                let submitted = T0 + i * 15_000;
                (
                    id.clone(),
                    Observed {
                        node: 1,
                        record: record(&id, JobState::Verified, Some("good"), submitted, 2000),
                    },
                )
            })
            .collect();
        let step = |line, action: &str, op, at: f64, mesh: Option<f64>| StepOutcome {
            line,
            action: action.into(),
            op,
            due_s: at,
            started_s: at,
            ended_s: at + 1.0,
            error: None,
            note: None,
            mesh: mesh.map(|s| Mesh {
                after_line: Some(line),
                secs: Some(s),
                note: String::new(),
            }),
        };
        Outcome {
            started_at_ms: T0,
            duration_s: 40.0,
            steps: vec![
                step(4, "submit", None, 0.0, None),
                step(6, "kill 4", Some(NodeOp::Kill), 10.0, None),
                step(8, "start 4", Some(NodeOp::Start), 12.0, Some(5.0)),
                step(10, "wait", None, 20.0, None),
            ],
            submissions: subs,
            jobs,
            expected: vec![Expected {
                program: program(),
                result_hash: Some("good".into()),
                error: None,
            }],
            mesh: Some(Mesh {
                after_line: Some(8),
                secs: Some(5.0),
                note: String::new(),
            }),
            peers: ["", "p1", "a", "b", "c"].map(String::from).to_vec(),
        }
    }

    const ALL: &str = "all_final = true\nresults_match_exec = true\nnone_lost = true\nall_online_within = 30\nmin_verified = 2\nfailed_reason_contains = \"no capable node\"\nfail_within = 10";

    fn check<'a>(r: &'a Report, name: &str) -> &'a CheckResult {
        r.checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn a_clean_run_passes_every_check() {
        let r = evaluate("t.toml", &scenario(ALL), &good());
        assert!(r.pass, "{}", r.summary());
        assert_eq!(r.checks.len(), 8, "the 7 asked for and `steps`");
        assert_eq!(r.jobs.verified, 2);
        assert_eq!(r.jobs.outvoted_attestations, 2, "c's bad hash, twice");
        assert_eq!(r.jobs.executor_states["answered"], 6);
        assert_eq!(r.jobs.redispatched, 0);
        assert_eq!(r.latency_s.as_ref().unwrap().max, 2.0);
        // The kill at 10 s: job1 (submitted at 15 s) verified at 17 s.
        assert_eq!(r.steps[1].next_verified_s, Some(7.0));
        assert_eq!(r.steps[2].mesh_s, Some(5.0));
        assert!(
            r.summary().contains("PASS: 8 of 8 checks passed"),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn a_wrong_result_fails_results_match_exec() {
        let mut out = good();
        out.jobs.get_mut("job1").unwrap().record.result_hash = Some("bad".into());
        let r = evaluate("t.toml", &scenario(ALL), &out);
        assert!(!r.pass);
        let c = check(&r, "results_match_exec");
        assert!(!c.pass && c.detail.contains("1 of 2"), "{c:?}");
        assert_eq!(r.jobs.wrong_results, 1);
        assert!(check(&r, "all_final").pass);
        let row = &r.submissions[1];
        assert_eq!(row.executors[2].node, Some(4));
        assert_eq!(row.executors[2].result.as_deref(), Some("wrong"));
        assert!(
            r.summary().contains(
                "wrong result accepted: job job1 from node 1: n2 right, n3 right, n4 wrong"
            ),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn no_honest_result_fails_results_match_exec() {
        let mut out = good();
        out.expected[0].result_hash = None;
        out.expected[0].error = Some("exec failed".into());
        let r = evaluate("t.toml", &scenario(ALL), &out);
        let c = check(&r, "results_match_exec");
        assert!(!c.pass && c.detail.contains("exec failed"), "{c:?}");
    }

    #[test]
    fn a_missing_final_state_fails_all_final_and_none_lost() {
        let mut out = good();
        out.jobs.get_mut("job0").unwrap().record.state = JobState::Running;
        out.jobs.remove("job1");
        let r = evaluate("t.toml", &scenario(ALL), &out);
        let c = check(&r, "all_final");
        assert!(!c.pass, "{c:?}");
        assert!(
            c.detail.contains("1 running") && c.detail.contains("1 never seen"),
            "{c:?}"
        );
        let c = check(&r, "none_lost");
        assert!(
            !c.pass && c.detail.contains("missing from their submitter"),
            "{c:?}"
        );
        assert_eq!((r.jobs.not_final, r.jobs.unseen), (1, 1));
    }

    #[test]
    fn a_job_listed_by_another_node_is_not_its_submitters() {
        let mut out = good();
        out.jobs.get_mut("job0").unwrap().node = 2;
        let r = evaluate("t.toml", &scenario(ALL), &out);
        assert!(!check(&r, "none_lost").pass);
    }

    #[test]
    fn none_lost_catches_refusals_duplicates_and_double_runs() {
        let mut out = good();
        out.submissions[1].job_id = None;
        out.submissions[1].error = Some("node down".into());
        let r = evaluate("t.toml", &scenario("none_lost = true"), &out);
        let c = check(&r, "none_lost");
        assert!(!c.pass && c.detail.contains("node down"), "{c:?}");
        assert_eq!(r.jobs.refused, 1);

        let mut out = good();
        out.submissions[1].job_id = Some("job0".into());
        let c = evaluate("t.toml", &scenario("none_lost = true"), &out);
        assert!(check(&c, "none_lost").detail.contains("given twice"));

        let mut out = good();
        let ex = &mut out.jobs.get_mut("job0").unwrap().record.executors;
        ex.push(executor("a", "good"));
        let r = evaluate("t.toml", &scenario("none_lost = true"), &out);
        let c = check(&r, "none_lost");
        assert!(!c.pass && c.detail.contains("run twice"), "{c:?}");
        assert_eq!(r.jobs.run_twice, 1);
        assert_eq!(r.jobs.redispatched, 1, "4 executors for n = 3");
    }

    #[test]
    fn online_within() {
        let mut out = good();
        out.mesh.as_mut().unwrap().secs = Some(31.0);
        let r = evaluate("t.toml", &scenario("all_online_within = 30"), &out);
        assert!(!check(&r, "all_online_within").pass);
        out.mesh.as_mut().unwrap().secs = None;
        out.mesh.as_mut().unwrap().note = "node 2 misses 4".into();
        let r = evaluate("t.toml", &scenario("all_online_within = 30"), &out);
        let c = check(&r, "all_online_within");
        assert!(!c.pass && c.detail.contains("node 2 misses 4"), "{c:?}");
        out.mesh = None;
        let r = evaluate("t.toml", &scenario("all_online_within = 30"), &out);
        assert!(!check(&r, "all_online_within").pass);
    }

    #[test]
    fn failures_min_verified_reasons_and_speed() {
        let mut out = good();
        let rec = &mut out.jobs.get_mut("job1").unwrap().record;
        *rec = record("job1", JobState::Failed, None, T0 + 15_000, 8_000);
        let r = evaluate("t.toml", &scenario(ALL), &out);
        assert!(!check(&r, "min_verified").pass);
        assert!(check(&r, "failed_reason_contains").pass);
        assert!(check(&r, "fail_within").pass);
        assert!(check(&r, "all_final").pass, "failed is final");
        assert_eq!(r.failure_reasons[0].reason, "no capable node answered");

        let r = evaluate(
            "t.toml",
            &scenario("failed_reason_contains = [\"too few\", \"deadline\"]\nfail_within = 5"),
            &out,
        );
        let c = check(&r, "failed_reason_contains");
        assert!(
            !c.pass && c.detail.contains("no capable node answered"),
            "{c:?}"
        );
        let c = check(&r, "fail_within");
        assert!(!c.pass && c.detail.contains("8.0 s"), "{c:?}");
    }

    #[test]
    fn a_failed_step_fails_the_run() {
        let mut out = good();
        out.steps[2].error = Some("hosts.sh start 4 failed".into());
        let r = evaluate("t.toml", &scenario(""), &out);
        assert!(!r.pass);
        let c = check(&r, "steps");
        assert!(c.detail.contains("line 8"), "{c:?}");
        assert!(r.summary().contains("ERROR hosts.sh start 4 failed"));
    }
}
