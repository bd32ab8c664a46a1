//! How arrays read: the progress bar of `agora run`, its summary of a
//! failed array, and the status and list of `agora job`. Formatting only;
//! the requests are in the parent module.

use std::io::{IsTerminal, Write};

use agora_node::api::types::{ArrayInfo, ArrayState, ItemState};
use anyhow::Result;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use crate::job::{age, note, secs, short_id};
use crate::node::print_table;

/// Failed items `agora run` lists when an array fails; `agora job status`
/// lists all the daemon sends.
const RUN_LISTED_FAILURES: usize = 20;
/// Longest item value shown in a line; a `--lines` item may be long.
const MAX_VALUE_CHARS: usize = 40;
/// The progress bar: elapsed, bar, done/total, counts, rate and ETA.
/// `{rate}` is items per second with one decimal (indicatif's own
/// `{per_sec}` shows four).
const BAR_TEMPLATE: &str = "{elapsed_precise} [{wide_bar}] {pos}/{len} {msg} ({rate}, ETA {eta})";

/// The progress bar on stderr, or nothing when stderr is not a terminal
/// (a log file wants no redrawn lines).
pub(super) struct Meter(Option<ProgressBar>);

impl Meter {
    pub(super) fn new(total: u32) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        // The template is a constant checked by a test; the default bar
        // is a harmless fallback all the same.
        let style = ProgressStyle::with_template(BAR_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    // A failed write only leaves the rate out of the bar.
                    let _ = write!(w, "{:.1}/s", state.per_sec());
                },
            );
        Self(Some(ProgressBar::new(u64::from(total)).with_style(style)))
    }

    pub(super) fn show(&self, info: &ArrayInfo) {
        if let Some(bar) = &self.0 {
            // Message first: each call redraws, and the counts in the
            // message should not lag the position.
            bar.set_length(u64::from(info.total));
            bar.set_message(progress_message(info));
            bar.set_position(done(info));
        }
    }

    pub(super) fn clear(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Items that reached an end: verified, failed or cancelled.
pub(super) fn done(info: &ArrayInfo) -> u64 {
    let c = &info.counts;
    u64::from(c.verified) + u64::from(c.failed) + u64::from(c.cancelled)
}

/// The bar's message: `8 verified, 1 failed, 3 running`, and `reducing`
/// once the reduce job runs.
fn progress_message(info: &ArrayInfo) -> String {
    let c = &info.counts;
    let mut m = format!(
        "{} verified, {} failed, {} running",
        c.verified, c.failed, c.running
    );
    if info.state == ArrayState::Reducing {
        m.push_str(", reducing");
    }
    m
}

/// `--each` and `--lines` values can be long; lines show the start.
fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_VALUE_CHARS {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(MAX_VALUE_CHARS - 1).collect();
    out.push('…');
    out
}

/// `10 items: 7 verified, 2 failed, 0 cancelled, 1 running, 0 pending`.
pub(super) fn counts_line(info: &ArrayInfo) -> String {
    let c = &info.counts;
    format!(
        "{} items: {} verified, {} failed, {} cancelled, {} running, {} pending",
        info.total, c.verified, c.failed, c.cancelled, c.running, c.pending
    )
}

/// The failed items, at most `max`, as `  item 3 (/in/c.txt): reason`,
/// and `  ... and N more` for those not listed. The daemon's list also
/// holds cancelled items; the counts line says how many there are.
fn failed_lines(info: &ArrayInfo, max: usize) -> Vec<String> {
    let mut lines: Vec<String> = info
        .failed_items
        .iter()
        .filter(|i| i.state == ItemState::Failed)
        .take(max)
        .map(|i| {
            let reason = i.reason.as_deref().unwrap_or("no reason given");
            format!("  item {} ({}): {reason}", i.index, clip(&i.value))
        })
        .collect();
    let more = u64::from(info.counts.failed).saturating_sub(lines.len() as u64);
    if more > 0 {
        lines.push(format!("  ... and {more} more"));
    }
    lines
}

/// `agora run`'s summary of a failed or cancelled array, on stderr.
pub(super) fn print_failure(info: &ArrayInfo) {
    let short = short_id(&info.id);
    match &info.reason {
        Some(r) => note(&format!("array {short} {}: {r}", info.state.as_str())),
        None => note(&format!("array {short} {}", info.state.as_str())),
    }
    note(&format!("  {}", counts_line(info)));
    for line in failed_lines(info, RUN_LISTED_FAILURES) {
        note(&line);
    }
    note(&format!("retry with: agora job retry {short}"));
}

/// `agora job status` of an array, on stdout.
pub fn print_status(info: &ArrayInfo, now: u64) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "array:       {}", info.id)?;
    writeln!(out, "state:       {}", info.state.as_str())?;
    writeln!(out, "executor:    {}", info.executor)?;
    writeln!(
        out,
        "quorum:      {} of {} must agree, per item",
        info.k, info.n
    )?;
    writeln!(out, "parallel:    {} items at most", info.parallel)?;
    writeln!(out, "items:       {}", counts_line(info))?;
    match (&info.reduce_job, info.has_reduce) {
        (Some(job), _) => writeln!(out, "reduce:      job {job}")?,
        (None, true) => writeln!(
            out,
            "reduce:      not started (after every item is verified)"
        )?,
        (None, false) => {}
    }
    let end = info.finished_at_ms.unwrap_or(now);
    let elapsed = secs(end.saturating_sub(info.submitted_at_ms));
    let so_far = if info.finished_at_ms.is_some() {
        ""
    } else {
        " so far"
    };
    writeln!(
        out,
        "submitted:   {} ago; elapsed {elapsed}{so_far}",
        age(now.saturating_sub(info.submitted_at_ms))
    )?;
    if let Some(r) = &info.reason {
        writeln!(out, "reason:      {r}")?;
    }
    let failed = failed_lines(info, usize::MAX);
    if !failed.is_empty() {
        writeln!(out)?;
        writeln!(out, "failed items:")?;
        for line in failed {
            writeln!(out, "{line}")?;
        }
        writeln!(out, "retry with:  agora job retry {}", short_id(&info.id))?;
    }
    Ok(())
}

/// The arrays of `agora job list`, as a second table.
pub fn print_list(arrays: &[ArrayInfo], now: u64) -> Result<()> {
    let rows: Vec<Vec<String>> = arrays.iter().map(|a| list_row(a, now)).collect();
    print_table(
        &[
            "ARRAY", "STATE", "TOTAL", "VERIFIED", "FAILED", "RUNNING", "AGE",
        ],
        &rows,
    )
}

fn list_row(a: &ArrayInfo, now: u64) -> Vec<String> {
    vec![
        short_id(&a.id).to_owned(),
        a.state.as_str().to_owned(),
        a.total.to_string(),
        a.counts.verified.to_string(),
        a.counts.failed.to_string(),
        a.counts.running.to_string(),
        age(now.saturating_sub(a.submitted_at_ms)),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use agora_node::api::types::{ArrayCounts, ArrayItemInfo};

    use super::*;

    fn item(index: u32, value: &str, reason: &str) -> ArrayItemInfo {
        ArrayItemInfo {
            index,
            value: value.into(),
            state: ItemState::Failed,
            job: None,
            attempts: 1,
            exit_code: None,
            stdout: None,
            outputs: BTreeMap::new(),
            reason: Some(reason.into()),
        }
    }

    fn info(state: ArrayState, counts: ArrayCounts, failed: Vec<ArrayItemInfo>) -> ArrayInfo {
        ArrayInfo {
            id: "0123456789abcdef".repeat(4),
            state,
            executor: "wasm".into(),
            total: 10,
            counts,
            parallel: 4,
            n: 3,
            k: 2,
            has_reduce: false,
            reduce_job: None,
            submitted_at_ms: 1_000,
            finished_at_ms: None,
            reason: None,
            failed_items: failed,
        }
    }

    #[test]
    fn progress_counts_ends_and_says_when_reducing() {
        let counts = ArrayCounts {
            pending: 2,
            running: 3,
            verified: 3,
            failed: 1,
            cancelled: 1,
        };
        let mut a = info(ArrayState::Running, counts, vec![]);
        assert_eq!(done(&a), 5);
        assert_eq!(progress_message(&a), "3 verified, 1 failed, 3 running");
        a.state = ArrayState::Reducing;
        assert!(progress_message(&a).ends_with(", reducing"));
        assert_eq!(
            counts_line(&a),
            "10 items: 3 verified, 1 failed, 1 cancelled, 3 running, 2 pending"
        );
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }

    #[test]
    fn failed_items_are_listed_with_how_many_more() {
        let counts = ArrayCounts {
            failed: 3,
            verified: 7,
            ..ArrayCounts::default()
        };
        let long = "x".repeat(100);
        let a = info(
            ArrayState::Failed,
            counts,
            vec![
                item(1, "/in/a.txt", "timed out"),
                ArrayItemInfo {
                    state: ItemState::Cancelled,
                    ..item(2, "/in/b.txt", "cancelled by the user")
                },
                item(4, &long, "crashed"),
            ],
        );
        let lines = failed_lines(&a, 1);
        assert_eq!(
            lines,
            ["  item 1 (/in/a.txt): timed out", "  ... and 2 more"]
        );
        let all = failed_lines(&a, usize::MAX);
        assert_eq!(all.len(), 3);
        assert!(
            all[1].contains('…') && all[1].chars().count() < 70,
            "{}",
            all[1]
        );
        assert_eq!(all[2], "  ... and 1 more");
        let row = list_row(&a, 61_000);
        assert_eq!(row, ["0123456789ab", "failed", "10", "7", "3", "0", "1m"]);
    }
}
