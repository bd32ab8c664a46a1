//! The scenario harness: a TOML file says what network to start, what to
//! do to it and when (submit jobs, kill, stop, start, restart, partition,
//! heal nodes, wait), and what must hold at the end; `agora-scenario` runs
//! it on the container host testnet (`testnet/hosts.sh`) and says which
//! checks passed.
//!
//! - [`parse`]: file → checked [`Scenario`] (pure; errors name the line).
//! - [`driver`]: the [`Driver`] trait and [`HostsDriver`], which runs
//!   `hosts.sh` commands.
//! - [`run`]: the timeline, on threads → [`Outcome`].
//! - [`check`]: outcome → [`Report`] (pure).
//!
//! # Scenario files
//!
//! ```toml
//! description = "what this shows"          # optional
//!
//! [network]
//! nodes = 8                                # 1..50, plus a bootstrap
//! faults = { 3 = "collude=pair" }          # optional: node → --fault MODE
//! engines = false                          # optional: per-node Docker
//!                                          # engines; default: on iff a
//!                                          # step submits Docker jobs
//!
//! [[step]]                                 # steps run in file order
//! at = 0                                   # seconds since the network is up,
//!                                          # or `after = S`: S seconds after
//!                                          # the previous step ended (default
//!                                          # after = 0)
//! submit = { count = 200, rate = 4, kind = "wasm", from = "round-robin", n = 3, k = 2, program = "testnet/fixtures/build/hello.wasm", args = ["hi"], timeout = "30s" }
//!                                          # (an inline table is one line)
//!
//! [[step]]
//! at = 20
//! kill = [6, 7, "bootstrap"]               # also stop, start, restart,
//!                                          # partition, heal
//!
//! [[step]]
//! wait = { until = "final", timeout = 600 } # or wait = { seconds = 30 }
//!
//! [checks]
//! all_final = true
//! results_match_exec = true
//! none_lost = true
//! all_online_within = 30
//! min_verified = 150
//! failed_reason_contains = ["no capable node", "too few executors"]
//! fail_within = 60
//! ```
//!
//! **Steps.** Each `[[step]]` has one action. A step starts at `at`
//! (seconds since the network came up; never before an earlier step's
//! `at`) or `after` seconds after the previous step ended; a step whose
//! time has passed (the one before ran long) starts at once. Node steps
//! take node numbers (1..nodes) and `"bootstrap"`; `start` and `restart`
//! end when the node is back and sees its peers (`hosts.sh` waits).
//!
//! **submit** runs in the background while later steps go on: `count`
//! jobs, one every `1/rate` seconds, each `agora run ... --detach` through
//! a node: `from` is `"round-robin"` (every running node in turn, the
//! default), a node number or a list of them (in turn; a node that is
//! down is skipped). `kind` is `wasm` (`program`, default
//! `testnet/fixtures/build/hello.wasm`, relative to the repository root,
//! and `args`), `docker` (`image`, default `agora-busybox:latest`, and
//! `cmd`) or `mixed` (the two in turn). `n`/`k` default to 3/2;
//! `timeout` is `agora run --timeout`.
//!
//! **wait** pauses the timeline: `{ seconds = S }`, or `{ until = "final",
//! timeout = S }` (default 600): until every job submitted so far, and
//! every job a running submit step has still to submit, is verified,
//! failed or cancelled as its submitter reports it.
//!
//! **Refused before anything starts**, with the line: unknown keys, wrong
//! types, a node out of range, a step with no action or two, a start of a
//! running node, a kill, stop or restart of a node that is down, a
//! partition of a partitioned node or a heal of one that is not, a
//! negative time or an `at` before an earlier one, `rate` or `count` not
//! above 0, `n` above the other nodes, `k` not in 1..n, a submit from a
//! node that is down, a fault mode agora does not know, and checks that
//! read jobs without a `wait = { until = "final" }` after the last submit.
//!
//! **Checks** (all optional; a step that failed to run always fails the
//! scenario): `all_final`: every job is verified, failed or cancelled.
//! `results_match_exec`: every verified result hash equals the one
//! `agora exec` gives for the same program locally. `none_lost`: every
//! submission got a job id, ids are distinct, each job is in its
//! submitter's list in a final state, and no executor appears twice in a
//! job. `all_online_within = S`: after the last start, restart or heal
//! (or after the last step, with none), every running unpartitioned node
//! lists every other one online and is connected to it within S seconds. `min_verified = X`.
//! `failed_reason_contains`: every failed job's reason contains one of
//! these strings. `fail_within = S`: every failed job failed within S
//! seconds of its submission.
//!
//! **Output**: a summary on stdout (jobs submitted, verified, failed, not
//! final, refused; wrong results accepted; lies outvoted; latency; each
//! step with the time to recover from it: when every node saw every other
//! online again, and when the first job submitted after it verified; each
//! check, pass or FAIL) and the same as JSON with `--json FILE`. The exit
//! code is 0 exactly when every check passes.

pub mod check;
pub mod driver;
pub mod parse;
pub mod run;

pub use check::{evaluate, Report};
pub use driver::{Driver, DriverError, HostsDriver, JobRequest};
pub use parse::{parse, ParseError, Scenario};
pub use run::{run, Outcome, RunOptions};

#[cfg(test)]
mod tests {
    use super::parse::parse;

    /// The ```toml blocks of a text (lines stripped of `prefix`).
    fn toml_blocks(text: &str, prefix: &str) -> Vec<String> {
        let mut blocks = Vec::new();
        let mut cur: Option<String> = None;
        for line in text.lines() {
            let Some(l) = line.strip_prefix(prefix) else {
                continue;
            };
            let l = l.strip_prefix(' ').unwrap_or(l);
            match (&mut cur, l.trim()) {
                (None, "```toml") => cur = Some(String::new()),
                (Some(b), "```") => {
                    blocks.push(std::mem::take(b));
                    cur = None;
                }
                (Some(b), _) => {
                    b.push_str(l);
                    b.push('\n');
                }
                (None, _) => {}
            }
        }
        blocks
    }

    #[test]
    fn every_shipped_scenario_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "toml") {
                let src = std::fs::read_to_string(&path).unwrap();
                let name = path.display().to_string();
                let sc = parse(&name, &src).unwrap_or_else(|e| panic!("{e}"));
                assert!(sc.description.is_some(), "{name}: no description");
                assert!(sc.job_count() > 0, "{name}: no jobs");
                names.push(path.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
        names.sort();
        for want in [
            "bootstraps-gone",
            "bootstraps-gone-short",
            "kill-30pct",
            "kill-30pct-short",
            "liars",
            "partition-5-3",
            "partition-5-3-short",
            "rolling-restart",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
    }

    #[test]
    fn the_documented_examples_parse() {
        let doc = include_str!("mod.rs");
        let chaos = include_str!("../../../docs/chaos.md");
        let blocks: Vec<String> = toml_blocks(doc, "//!")
            .into_iter()
            .chain(toml_blocks(chaos, ""))
            .collect();
        assert_eq!(blocks.len(), 2, "one example in each");
        for b in blocks {
            parse("example", &b).unwrap_or_else(|e| panic!("{e}\n{b}"));
        }
    }
}
