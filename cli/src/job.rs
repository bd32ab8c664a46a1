//! `agora job list|status|result|cancel|retry`: the jobs and job arrays
//! submitted through the running daemon, and the result delivery `agora
//! run` shares. An id is tried as an array's first (array.rs), then as a
//! job's.

use std::io::Write;
use std::path::{Path, PathBuf};

use agora_node::api::client::{ApiClient, ClientError};
use agora_node::api::types::{
    AdaptivePlan, BlobInfo, ExecutorRecord, JobEvent, JobList, JobRecord, JobResult, JobState,
    ReplicationMode,
};
use agora_node::clock::unix_now_ms;
use agora_protocol::cid::SHORT_HEX_LEN;
use agora_protocol::{ContentId, IdPrefix};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};

use crate::array::{self, Delivery};
use crate::node::{explain, human_bytes, print_json, print_table, short_peer, ApiOpt};
use crate::output::{
    check_output_dir, executor_failure, executor_state, write_output, write_streams,
};

/// What `agora job` does.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// List the jobs submitted through the daemon, newest first, then
    /// the job arrays if there are any.
    List {
        /// Only jobs in this state: pending, scheduled, running, verified,
        /// failed or cancelled (arrays in the state of that name).
        #[arg(long, value_name = "STATE")]
        state: Option<JobState>,
        /// Print the jobs as JSON instead of a table (arrays are not
        /// included).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiOpt,
    },
    /// Show one job: its executors, the result hash each signed and
    /// whether it agrees, timings and the events so far. For an array:
    /// its items per state and each failed item with its reason.
    Status {
        #[command(flatten)]
        id: JobId,
        /// Print the job record (or the array's) as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiOpt,
    },
    /// Print a verified job's stdout (and its stderr on stderr), write its
    /// outputs, and exit with the job's exit code.
    ///
    /// For an array with --reduce, the reduce job's result. Without one,
    /// every item's stdout in index order, outputs under DIR/INDEX/, and
    /// exit code 1 if any item exited non-zero.
    Result {
        #[command(flatten)]
        id: JobId,
        /// Directory where declared outputs are written (an array's items'
        /// as DIR/INDEX/NAME); without it they are only listed.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
        #[command(flatten)]
        api: ApiOpt,
    },
    /// Cancel a job that has not finished; executors already running it
    /// are no longer waited for. For an array: every unfinished item.
    Cancel {
        #[command(flatten)]
        id: JobId,
        #[command(flatten)]
        api: ApiOpt,
    },
    /// Run an array's failed or cancelled items again, once it is no
    /// longer running; the verified items are kept.
    Retry {
        #[command(flatten)]
        id: JobId,
        /// Indices of the items to run again (as `agora job status` lists
        /// them); default: every failed or cancelled item.
        #[arg(value_name = "INDEX")]
        indices: Vec<u32>,
        #[command(flatten)]
        api: ApiOpt,
    },
}

/// The job a command is about.
#[derive(Debug, Args)]
pub struct JobId {
    /// Job or array id, or any unique prefix of it (as `agora job list`
    /// shows).
    #[arg(value_name = "ID", value_parser = parse_job_id)]
    pub id: String,
}

/// Accepts 1 to 64 hex digits: an id or a prefix. Checked here because
/// the id goes into a URL path.
fn parse_job_id(s: &str) -> Result<String, String> {
    s.parse::<IdPrefix>()
        .map(|p| p.as_str().to_owned())
        .map_err(|e| e.to_string())
}

/// Runs `agora job ...` and returns the process exit code.
pub async fn run(cmd: JobCommand, data_dir: &Path) -> Result<i32> {
    match cmd {
        JobCommand::List { state, json, api } => {
            let c = api.client(data_dir)?;
            let path = match state {
                Some(s) => format!("/api/v1/jobs?state={}", s.as_str()),
                None => "/api/v1/jobs".to_owned(),
            };
            let list: JobList = c.get_json(&path).await.map_err(|e| explain(e, data_dir))?;
            if json {
                print_json(&list)?;
                return Ok(0);
            }
            let now = unix_now_ms();
            let rows: Vec<Vec<String>> = list.jobs.iter().map(|j| list_row(j, now)).collect();
            print_table(&["ID", "STATE", "EXECUTOR", "K/N", "AGE", "REASON"], &rows)?;
            let mut arrays = array::list(&c)
                .await
                .map_err(|e| explain(e, data_dir))?
                .arrays;
            arrays.retain(|a| state.is_none_or(|s| a.state.as_str() == s.as_str()));
            if !arrays.is_empty() {
                writeln!(std::io::stdout().lock())?;
                array::print_list(&arrays, now)?;
            }
            Ok(0)
        }
        JobCommand::Status { id, json, api } => {
            let c = api.client(data_dir)?;
            if let Some(info) = array::find(&c, &id.id)
                .await
                .map_err(|e| explain(e, data_dir))?
            {
                if json {
                    print_json(&info)?;
                } else {
                    array::print_status(&info, unix_now_ms())?;
                }
                return Ok(0);
            }
            let rec = get_record(&c, &id.id)
                .await
                .map_err(|e| explain(e, data_dir))?;
            if json {
                print_json(&rec)?;
            } else {
                print_status(&rec, unix_now_ms())?;
            }
            Ok(0)
        }
        JobCommand::Result {
            id,
            output_dir,
            api,
        } => {
            if let Some(dir) = &output_dir {
                check_output_dir(dir)?;
            }
            let c = api.client(data_dir)?;
            if let Some(info) = array::find(&c, &id.id)
                .await
                .map_err(|e| explain(e, data_dir))?
            {
                let to = Delivery {
                    output_dir: output_dir.as_deref(),
                    json: false,
                };
                return array::deliver(&c, &info, to, data_dir).await;
            }
            let res = get_result(&c, &id.id)
                .await
                .map_err(|e| explain(e, data_dir))?;
            if res.unverified {
                note(&format!(
                    "job {}: the result is one executor's word ({}), not verified by others",
                    short_id(&res.id),
                    if res.plan == Some(AdaptivePlan::Solo) {
                        "adaptive replication ran it on one trusted executor"
                    } else {
                        "k=1"
                    }
                ));
            }
            deliver(&c, &res, output_dir.as_deref(), true)
                .await
                .map_err(|e| e.context(format!("fetching the result of job {}", res.id)))?;
            Ok(res.exit_code)
        }
        JobCommand::Cancel { id, api } => {
            let c = api.client(data_dir)?;
            if let Some(info) = array::cancel(&c, &id.id)
                .await
                .map_err(|e| explain(e, data_dir))?
            {
                let mut out = std::io::stdout().lock();
                writeln!(out, "array {} {}", info.id, info.state.as_str())?;
                return Ok(0);
            }
            let rec: JobRecord = c
                .delete_json(&format!("/api/v1/jobs/{}", id.id))
                .await
                .map_err(|e| explain(e, data_dir))?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "job {} {}", rec.id, rec.state.as_str())?;
            Ok(0)
        }
        JobCommand::Retry { id, indices, api } => {
            let c = api.client(data_dir)?;
            array::retry(&c, &id.id, indices, data_dir).await
        }
    }
}

/// `GET /api/v1/jobs/{id}`.
pub async fn get_record(c: &ApiClient, id: &str) -> Result<JobRecord, ClientError> {
    c.get_json(&format!("/api/v1/jobs/{id}")).await
}

/// `GET /api/v1/jobs/{id}/result`.
pub async fn get_result(c: &ApiClient, id: &str) -> Result<JobResult, ClientError> {
    c.get_json(&format!("/api/v1/jobs/{id}/result")).await
}

/// One line on stderr; a closed stderr is no reason to fail the command.
pub fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The short form of a job id (or of any content id).
pub fn short_id(id: &str) -> &str {
    id.get(..SHORT_HEX_LEN).unwrap_or(id)
}

/// Fetches a blob of a result and checks it is the content its id names,
/// so a truncated or mixed-up answer is never written as output.
pub async fn fetch_blob(c: &ApiClient, blob: &BlobInfo) -> Result<Bytes> {
    // Nothing to fetch; the daemon need not keep an empty blob.
    if blob.size == 0 {
        return Ok(Bytes::new());
    }
    let bytes = c
        .get_bytes(&format!("/api/v1/blobs/{}", blob.id))
        .await
        .with_context(|| format!("fetching blob {}", short_id(&blob.id)))?;
    let got = ContentId::of(&bytes).to_hex();
    if bytes.len() as u64 != blob.size || got != blob.id.to_ascii_lowercase() {
        bail!(
            "blob {} came back as {} bytes with id {}: expected {} bytes",
            short_id(&blob.id),
            bytes.len(),
            short_id(&got),
            blob.size
        );
    }
    Ok(bytes)
}

/// Hands a verified result to the user: stdout on stdout and the job's
/// stderr on stderr (when `print_streams`), outputs written to
/// `output_dir`, or listed on stderr without one.
pub async fn deliver(
    c: &ApiClient,
    res: &JobResult,
    output_dir: Option<&Path>,
    print_streams: bool,
) -> Result<()> {
    if print_streams {
        let stdout = fetch_blob(c, &res.stdout).await?;
        let stderr = fetch_blob(c, &res.stderr).await?;
        write_streams(&stdout, &stderr)?;
    }
    for (name, blob) in &res.outputs {
        match output_dir {
            Some(dir) => {
                let data = fetch_blob(c, blob).await?;
                write_output(dir, name, &data)?;
            }
            None => note(&format!(
                "output {name}: {} (not written; pass --output-dir DIR, or later `agora job result {} --output-dir DIR`)",
                human_bytes(blob.size),
                short_id(&res.id)
            )),
        }
    }
    Ok(())
}

/// `5s`, `3m`, `2h`, `4d`: how long ago, roughly.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A span in seconds with one decimal: `12.3s`.
pub fn secs(ms: u64) -> String {
    format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
}

/// Longest reason shown in the list; `agora job status` shows all of it.
const MAX_REASON_CHARS: usize = 60;

fn list_row(j: &JobRecord, now: u64) -> Vec<String> {
    let mut reason = j.reason.clone().unwrap_or_else(|| "-".into());
    if reason.chars().count() > MAX_REASON_CHARS {
        reason = reason.chars().take(MAX_REASON_CHARS - 1).collect();
        reason.push('…');
    }
    vec![
        short_id(&j.id).to_owned(),
        j.state.as_str().to_owned(),
        j.executor.clone(),
        format!("{}/{}", j.k, j.n),
        age(now.saturating_sub(j.submitted_at_ms)),
        reason,
    ]
}

fn executor_row(e: &ExecutorRecord) -> Vec<String> {
    let agrees = match e.agrees {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "-",
    };
    let took = match e.ended_at_ms {
        Some(end) => secs(end.saturating_sub(e.assigned_at_ms)),
        None => "-".into(),
    };
    vec![
        short_peer(&e.peer_id),
        e.attempt.to_string(),
        executor_state(&e.state).to_owned(),
        e.result_hash
            .as_deref()
            .map_or_else(|| "-".into(), |h| short_id(h).to_owned()),
        agrees.to_owned(),
        took,
        e.error.clone().unwrap_or_else(|| "-".into()),
    ]
}

/// One event as `+1.2s kind peer: detail`, timed from `start_ms`.
fn event_line(e: &JobEvent, start_ms: u64) -> String {
    let mut line = format!("+{}", secs(e.at_ms.saturating_sub(start_ms)));
    let peer = e.peer_id.as_deref().map(short_peer);
    // An executor's failure reads as a sentence about it, as `agora run`
    // shows it: `12D3KooW…abcdef ran out of memory`.
    match (executor_failure(&e.kind), peer) {
        (Some(failure), Some(p)) => line.push_str(&format!(" {p} {failure}")),
        (_, peer) => {
            line.push(' ');
            line.push_str(&e.kind);
            if let Some(p) = peer {
                line.push(' ');
                line.push_str(&p);
            }
        }
    }
    if !e.detail.is_empty() {
        line.push_str(": ");
        line.push_str(&e.detail);
    }
    line
}

fn print_status(rec: &JobRecord, now: u64) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "job:         {}", rec.id)?;
    writeln!(out, "state:       {}", rec.state.as_str())?;
    writeln!(out, "program:     {} {}", rec.executor, rec.program)?;
    let unverified = if rec.unverified {
        " (unverified: one executor's word)"
    } else {
        ""
    };
    writeln!(
        out,
        "quorum:      {} of {} must agree{unverified}",
        rec.k, rec.n
    )?;
    if rec.replication == ReplicationMode::Adaptive {
        let plan = rec.plan.map_or("not chosen yet", |p| match p {
            AdaptivePlan::Full => "full: the first executor is not trusted yet",
            AdaptivePlan::Solo => "solo: one trusted executor alone (not cross-checked)",
            AdaptivePlan::SpotCheck => "spot check: a trusted executor, checked by others",
            AdaptivePlan::Fallback => "fallback: the trusted executor failed; full quorum",
        });
        writeln!(out, "replication: adaptive, {plan}")?;
    }
    write!(
        out,
        "submitted:   {} ago",
        age(now.saturating_sub(rec.submitted_at_ms))
    )?;
    match rec.finished_at_ms {
        Some(f) => writeln!(
            out,
            ", finished after {}",
            secs(f.saturating_sub(rec.submitted_at_ms))
        )?,
        None => writeln!(out)?,
    }
    writeln!(out, "bids:        {}", rec.bids)?;
    if let Some(h) = &rec.result_hash {
        writeln!(out, "result:      {h}")?;
    }
    if let Some(code) = rec.exit_code {
        writeln!(out, "exit code:   {code}")?;
    }
    if let Some(r) = &rec.reason {
        writeln!(out, "reason:      {r}")?;
    }
    if !rec.executors.is_empty() {
        let agreeing = rec
            .executors
            .iter()
            .filter(|e| e.agrees == Some(true))
            .count();
        writeln!(out)?;
        if rec.state == JobState::Verified {
            writeln!(
                out,
                "executors ({agreeing} of {} agree):",
                rec.executors.len()
            )?;
        } else {
            writeln!(out, "executors:")?;
        }
        // The stdout lock is reentrant: the table may take it again.
        let rows: Vec<Vec<String>> = rec.executors.iter().map(executor_row).collect();
        print_table(
            &[
                "PEER", "ATTEMPT", "STATE", "RESULT", "AGREES", "TOOK", "ERROR",
            ],
            &rows,
        )?;
    }
    if !rec.events.is_empty() {
        writeln!(out)?;
        writeln!(out, "events:")?;
        for e in &rec.events {
            writeln!(out, "  {}", event_line(e, rec.submitted_at_ms))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        job: JobCommand,
    }

    fn parse(args: &[&str]) -> Result<JobCommand, clap::Error> {
        let mut all = vec!["job"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.job)
    }

    #[test]
    fn list_takes_a_state_filter() {
        match parse(&["list", "--state", "verified", "--json"]).unwrap() {
            JobCommand::List { state, json, .. } => {
                assert_eq!(state, Some(JobState::Verified));
                assert!(json);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["list"]).unwrap(),
            JobCommand::List { state: None, .. }
        ));
        assert!(parse(&["list", "--state", "done"]).is_err());
    }

    #[test]
    fn ids_are_hex_prefixes_lowercased() {
        match parse(&["status", "ABCdef12"]).unwrap() {
            JobCommand::Status { id, json, .. } => {
                assert_eq!(id.id, "abcdef12");
                assert!(!json);
            }
            other => panic!("{other:?}"),
        }
        // Anything else could smuggle a path or query into the URL.
        for bad in ["../../id", "abc?state=x", "", &"a".repeat(65)] {
            assert!(parse(&["cancel", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn result_takes_an_output_dir_and_api() {
        match parse(&[
            "result",
            "abc",
            "--output-dir",
            "out",
            "--api",
            "127.0.0.1:1",
        ])
        .unwrap()
        {
            JobCommand::Result { id, output_dir, .. } => {
                assert_eq!(id.id, "abc");
                assert_eq!(output_dir, Some(PathBuf::from("out")));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["result"]).is_err());
    }

    #[test]
    fn retry_takes_an_array_id_and_indices() {
        match parse(&["retry", "ABC", "3", "7"]).unwrap() {
            JobCommand::Retry { id, indices, .. } => {
                assert_eq!(id.id, "abc");
                assert_eq!(indices, [3, 7]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["retry", "abc"]).unwrap(),
            JobCommand::Retry { indices, .. } if indices.is_empty()
        ));
        assert!(parse(&["retry", "abc", "-1"]).is_err());
        assert!(parse(&["retry"]).is_err());
    }

    #[test]
    fn rows_and_lines_are_readable() {
        let rec = JobRecord {
            id: "0123456789abcdef".repeat(4),
            state: JobState::Failed,
            executor: "wasm".into(),
            program: "ff".repeat(32),
            n: 3,
            k: 2,
            unverified: false,
            replication: ReplicationMode::Fixed,
            plan: None,
            submitted_at_ms: 1_000,
            finished_at_ms: Some(5_000),
            reason: Some("x".repeat(100)),
            result_hash: None,
            exit_code: None,
            bids: 0,
            executors: vec![],
            events: vec![],
        };
        let row = list_row(&rec, 181_000);
        assert_eq!(row[0], "0123456789ab");
        assert_eq!(row[3], "2/3");
        assert_eq!(row[4], "3m");
        assert_eq!(row[5].chars().count(), MAX_REASON_CHARS);
        let ev = JobEvent {
            at_ms: 2_250,
            kind: "assigned".into(),
            peer_id: Some("12D3KooWGzBk9qzxRkQbWQy5a8Jm6wW1yfgvYVRz3Q8uMNbRbJmA".into()),
            state: JobState::Running,
            detail: "attempt 0".into(),
        };
        assert_eq!(
            event_line(&ev, 1_000),
            "+1.2s assigned 12D3KooW…bRbJmA: attempt 0"
        );
        let failed = JobEvent {
            kind: "out_of_fuel".into(),
            detail: String::new(),
            ..ev.clone()
        };
        assert_eq!(
            event_line(&failed, 1_000),
            "+1.2s 12D3KooW…bRbJmA ran out of fuel"
        );
        assert_eq!(age(59_999), "59s");
        assert_eq!(age(2 * 86_400_000), "2d");
    }
}
