//! Job arrays: `agora run ... --each/--range/--lines` runs one job per
//! input file, integer or line, each verified k-of-n on its own, and
//! optionally a reduce job over their verified stdouts.
//!
//! run.rs builds the item job as for a single job and hands it here with
//! the checked array flags ([`ArrayPlan`]); this module uploads the items,
//! submits the array, polls it until it is final and delivers its result.
//! `agora job status|result|cancel|retry` come here for an array id.
//! How all this reads on a terminal is in `show`.

mod show;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_node::api::client::{ApiClient, ClientError};
use agora_node::api::types::{
    ArrayFile, ArrayInfo, ArrayItemInfo, ArrayItemPage, ArrayItems, ArrayList, ArrayState,
    JobResult, RetryArray, SubmitArray, SubmitExecutor, SubmitJob,
};
use agora_node::arrays::record::MAX_ARRAY_ITEMS;
use agora_node::arrays::service::MAX_PAGE;
use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::time::Instant;

use crate::job::{fetch_blob, get_record, note, short_id};
use crate::node::{explain, print_json};
use crate::output::write_output;
use crate::run::{upload, EXIT_INTERRUPTED};
use crate::EXIT_AGORA_ERROR;

use self::show::{counts_line, done, print_failure, Meter};
pub use self::show::{print_list, print_status};

/// Most items in one array: the daemon refuses more, so a range or file
/// list that big is refused before anything is uploaded.
const MAX_ITEMS: u64 = MAX_ARRAY_ITEMS as u64;
/// Pause between two polls of an array's state.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How long the daemon may stay unreachable (a restart) before waiting
/// for an array gives up.
const MAX_UNREACHABLE: Duration = Duration::from_secs(60);
/// Items asked for per page of `/items`: the most the daemon sends.
const PAGE: u32 = MAX_PAGE;

/// Where `agora run --help` lists the array flags. Set per flag: a
/// heading for the whole struct would also take the trailing arguments.
const HEADING: &str = "Job arrays (one job per item)";

/// The flags that turn `agora run` into a job array: one job per item,
/// each verified k-of-n on its own.
#[derive(Debug, Args)]
pub struct ArrayOpts {
    /// Run one job per FILE: each job sees its file at /in/NAME (NAME its
    /// base name); in the arguments `{}` becomes /in/NAME and `{#}` the
    /// item's index, from 0. Takes every value up to the next flag or
    /// `--`, so give it after the module or image.
    #[arg(long, help_heading = HEADING, value_name = "FILE", num_args = 1.., conflicts_with_all = ["range", "lines"])]
    pub each: Vec<PathBuf>,
    /// Run one job per integer from A to B, both included (e.g. 1..100 or
    /// -5..5; at most 100000 items): `{}` in the arguments becomes the
    /// integer and `{#}` the item's index, from 0.
    #[arg(long, help_heading = HEADING, value_name = "A..B", value_parser = parse_range, allow_hyphen_values = true,
          conflicts_with = "lines")]
    pub range: Option<IntRange>,
    /// Run one job per line of FILE (a final newline starts no empty
    /// line): `{}` in the arguments becomes the line and `{#}` the item's
    /// index, from 0.
    #[arg(long, help_heading = HEADING, value_name = "FILE")]
    pub lines: Option<PathBuf>,
    /// Items in flight at most; default: the daemon picks from the
    /// network's capacity.
    #[arg(long, help_heading = HEADING, value_name = "P", value_parser = clap::value_parser!(u32).range(1..))]
    pub parallel: Option<u32>,
    /// Once every item is verified, run PROG over their verified results:
    /// it sees item I's stdout at /in/I.out (and its outputs under /in/I/),
    /// and its verified stdout and exit code are the array's. PROG is a
    /// Wasm module if it names an existing file, else a Docker image. It
    /// runs with the items' -n, -k, limits, --env and --require.
    #[arg(long, help_heading = HEADING, value_name = "PROG")]
    pub reduce: Option<String>,
    /// An argument for the --reduce program (repeatable, kept in order).
    #[arg(long = "reduce-arg", help_heading = HEADING, value_name = "ARG", allow_hyphen_values = true)]
    pub reduce_args: Vec<String>,
}

/// The integers of `--range A..B`: A <= B, at most [`MAX_ITEMS`] of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntRange {
    /// First integer.
    from: i64,
    /// Last integer, included.
    to: i64,
}

/// Parses `A..B` for `--range`.
fn parse_range(s: &str) -> Result<IntRange, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("expected A..B, e.g. 1..100, got {s:?}"))?;
    let int = |v: &str| {
        v.trim()
            .parse::<i64>()
            .map_err(|e| format!("{v:?} in {s:?} is not an integer: {e}"))
    };
    let (from, to) = (int(a)?, int(b)?);
    if from > to {
        return Err(format!("{from}..{to} is empty: A must not be more than B"));
    }
    // i128: `i64::MIN..i64::MAX` has more items than an i64 holds.
    let count = i128::from(to) - i128::from(from) + 1;
    if count > i128::from(MAX_ITEMS) {
        return Err(format!(
            "{from}..{to} is {count} items, more than the {MAX_ITEMS} an array may have"
        ));
    }
    Ok(IntRange { from, to })
}

/// The array flags, checked: what `agora run` hands to [`run`].
#[derive(Debug)]
pub struct ArrayPlan {
    /// Where the items come from.
    items: ItemSource,
    /// `--parallel`.
    parallel: Option<u32>,
    /// `--reduce` and its arguments.
    reduce: Option<Reduce>,
}

/// Where the items come from, before anything is uploaded.
#[derive(Debug, PartialEq)]
enum ItemSource {
    /// `--each`: the name under /in and the local file.
    Files(Vec<(String, PathBuf)>),
    /// `--range`.
    Range(IntRange),
    /// `--lines`.
    Lines(PathBuf),
}

/// `--reduce PROG --reduce-arg ARG...`.
#[derive(Debug, PartialEq)]
struct Reduce {
    /// A module file or an image name.
    program: String,
    /// Its arguments.
    args: Vec<String>,
}

impl ArrayOpts {
    /// The checked plan, or `None` when no item flag is given. Runs before
    /// anything is uploaded, so a misused flag costs nothing.
    pub fn plan(self) -> Result<Option<ArrayPlan>> {
        let items = match (self.each.is_empty(), self.range, self.lines) {
            (false, None, None) => ItemSource::Files(each_names(self.each)?),
            (true, Some(r), None) => ItemSource::Range(r),
            (true, None, Some(p)) => ItemSource::Lines(p),
            (true, None, None) => {
                let orphan = [
                    (self.reduce.is_some(), "--reduce"),
                    (!self.reduce_args.is_empty(), "--reduce-arg"),
                    (self.parallel.is_some(), "--parallel"),
                ]
                .into_iter()
                .find_map(|(given, flag)| given.then_some(flag));
                if let Some(flag) = orphan {
                    bail!("{flag} applies to job arrays only: give --each, --range or --lines too");
                }
                return Ok(None);
            }
            // clap refuses these combinations first; kept for safety.
            _ => bail!("--each, --range and --lines exclude each other"),
        };
        let reduce = match self.reduce {
            Some(program) => Some(Reduce {
                program: reduce_program(program)?,
                args: self.reduce_args,
            }),
            None if !self.reduce_args.is_empty() => {
                bail!("--reduce-arg needs --reduce: it is an argument of the reduce program")
            }
            None => None,
        };
        Ok(Some(ArrayPlan {
            items,
            parallel: self.parallel,
            reduce,
        }))
    }
}

/// `--each` files with the names they get under /in.
fn each_names(paths: Vec<PathBuf>) -> Result<Vec<(String, PathBuf)>> {
    if paths.len() as u64 > MAX_ITEMS {
        bail!(
            "--each: {} files, more than the {MAX_ITEMS} an array may have",
            paths.len()
        );
    }
    paths
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| {
                    format!(
                        "--each {}: has no UTF-8 file name to use as /in/NAME",
                        p.display()
                    )
                })?
                .to_owned();
            Ok((name, p))
        })
        .collect()
}

/// Checks `--reduce PROG`: a name ending in `.wasm` is meant as a module,
/// so a missing file is a typo, not an image name.
fn reduce_program(program: String) -> Result<String> {
    if program.ends_with(".wasm") && !Path::new(&program).is_file() {
        bail!("--reduce {program}: no such module file");
    }
    Ok(program)
}

impl ArrayPlan {
    /// Uploads what the items and the reduce job need and builds the
    /// submission around `template`, the job every item runs.
    async fn submission(self, c: &ApiClient, template: SubmitJob) -> Result<SubmitArray> {
        let items = match self.items {
            ItemSource::Files(files) => {
                let mut out = Vec::with_capacity(files.len());
                for (name, path) in files {
                    let blob = upload(c, &path, "--each file").await?;
                    out.push(ArrayFile { name, blob });
                }
                ArrayItems::Files { files: out }
            }
            ItemSource::Range(r) => ArrayItems::Range {
                from: r.from,
                to: r.to,
            },
            ItemSource::Lines(path) => ArrayItems::Lines {
                blob: upload(c, &path, "--lines file").await?,
            },
        };
        let reduce = match self.reduce {
            Some(r) => {
                let path = Path::new(&r.program);
                let executor = if path.is_file() {
                    SubmitExecutor::Wasm {
                        module: upload(c, path, "--reduce module").await?,
                    }
                } else {
                    SubmitExecutor::Docker { image: r.program }
                };
                Some(reduce_job(&template, executor, r.args))
            }
            None => None,
        };
        Ok(SubmitArray {
            job: template,
            items,
            parallel: self.parallel,
            reduce,
        })
    }
}

/// The reduce job: the items' replication, limits, env and labels with its
/// own program and arguments. No stdin, inputs or outputs: the daemon gives
/// it the items' results as inputs.
fn reduce_job(template: &SubmitJob, executor: SubmitExecutor, args: Vec<String>) -> SubmitJob {
    SubmitJob {
        executor,
        args,
        env: template.env.clone(),
        stdin: None,
        inputs: BTreeMap::new(),
        outputs: Vec::new(),
        n: template.n,
        k: template.k,
        memory_bytes: template.memory_bytes,
        timeout_ms: template.timeout_ms,
        fuel: template.fuel,
        milli_cpus: template.milli_cpus,
        max_output_bytes: template.max_output_bytes,
        allow_local: template.allow_local,
        replication: template.replication,
        requires: template.requires.clone(),
    }
}

/// What to do with a final array.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// Where item outputs (DIR/INDEX/NAME) or the reduce job's are written.
    pub output_dir: Option<&'a Path>,
    /// Print the final [`ArrayInfo`] as JSON instead of the result.
    pub json: bool,
}

/// Submits the array whose items run `template`, waits for it unless
/// `detach`, delivers its result and returns the process exit code.
pub async fn run(
    c: &ApiClient,
    plan: ArrayPlan,
    template: SubmitJob,
    detach: bool,
    to: Delivery<'_>,
    data_dir: &Path,
) -> Result<i32> {
    let submit = plan.submission(c, template).await?;
    let info: ArrayInfo = c
        .post_json("/api/v1/arrays", &submit)
        .await
        .map_err(|e| explain(e, data_dir))
        .context("submitting the array")?;
    if detach {
        if to.json {
            print_json(&info)?;
        } else {
            writeln!(std::io::stdout().lock(), "{}", info.id)?;
        }
        return Ok(0);
    }
    note(&format!(
        "array {}: {} items",
        short_id(&info.id),
        info.total
    ));
    if info.k == 1 {
        note(
            "warning: k=1: each item's result will be one executor's word, not verified by others",
        );
    }
    let meter = Meter::new(info.total);
    let id = info.id;
    tokio::select! {
        r = wait_and_deliver(c, &id, &meter, to, data_dir) => r,
        r = tokio::signal::ctrl_c() => {
            r.context("listening for Ctrl-C")?;
            meter.clear();
            let short = short_id(&id);
            note(&format!(
                "stopped waiting; array {id} goes on: `agora job status {short}`, `agora job result {short}`"
            ));
            Ok(EXIT_INTERRUPTED)
        }
    }
}

/// Polls the array until it is final, then delivers it.
async fn wait_and_deliver(
    c: &ApiClient,
    id: &str,
    meter: &Meter,
    to: Delivery<'_>,
    data_dir: &Path,
) -> Result<i32> {
    let info = wait_final(c, id, meter).await;
    meter.clear();
    let info = info.map_err(|e| explain(e, data_dir)).with_context(|| {
        format!(
            "waiting for array {id}; it may go on: `agora job status {}`",
            short_id(id)
        )
    })?;
    deliver(c, &info, to, data_dir).await
}

/// Polls `GET /api/v1/arrays/{id}` until the array is final. Polling, not
/// the event stream: a poll after a daemon restart simply works again.
async fn wait_final(c: &ApiClient, id: &str, meter: &Meter) -> Result<ArrayInfo, ClientError> {
    let path = format!("/api/v1/arrays/{id}");
    let mut unreachable_since: Option<Instant> = None;
    loop {
        match c.get_json::<ArrayInfo>(&path).await {
            Ok(info) => {
                meter.show(&info);
                if info.state.is_final() {
                    return Ok(info);
                }
                unreachable_since = None;
            }
            Err(e) if is_unreachable(&e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= MAX_UNREACHABLE {
                    return Err(e);
                }
                tracing::debug!(error = %e, "daemon unreachable; polling again");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Whether an error says the daemon could not be reached, as while it
/// restarts, rather than that it answered.
fn is_unreachable(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Connect { .. } | ClientError::Timeout { .. } | ClientError::Http { .. }
    )
}

/// Hands a final array to the user and returns the exit code: the reduce
/// job's result, or the items' stdouts in index order; a summary on stderr
/// and 125 for a failed or cancelled one.
pub async fn deliver(
    c: &ApiClient,
    info: &ArrayInfo,
    to: Delivery<'_>,
    data_dir: &Path,
) -> Result<i32> {
    match info.state {
        ArrayState::Verified => {
            // `--json` prints no result, so only outputs could be wanted.
            let code = if to.json && to.output_dir.is_none() {
                0
            } else if info.has_reduce {
                deliver_reduce(c, info, to, data_dir).await?
            } else {
                deliver_items(c, info, to, data_dir).await?
            };
            if to.json {
                print_json(info)?;
                return Ok(0);
            }
            Ok(code)
        }
        ArrayState::Failed | ArrayState::Cancelled => {
            if to.json {
                print_json(info)?;
            } else {
                print_failure(info);
            }
            Ok(i32::from(EXIT_AGORA_ERROR))
        }
        ArrayState::Running | ArrayState::Reducing => bail!(
            "array {} is {}: {} of {} items done; follow it with `agora job status {}`",
            short_id(&info.id),
            info.state.as_str(),
            done(info),
            info.total,
            short_id(&info.id)
        ),
    }
}

/// Delivers the reduce job's verified result as a single job's is, and
/// returns its exit code. With `--json` only its outputs are written.
async fn deliver_reduce(
    c: &ApiClient,
    info: &ArrayInfo,
    to: Delivery<'_>,
    data_dir: &Path,
) -> Result<i32> {
    let res: JobResult = c
        .get_json(&format!("/api/v1/arrays/{}/result", info.id))
        .await
        .map_err(|e| explain(e, data_dir))
        .with_context(|| format!("fetching the result of array {}", info.id))?;
    if res.unverified {
        note(&format!(
            "array {}: the reduce result is one executor's word, not verified by others",
            short_id(&info.id)
        ));
    }
    crate::job::deliver(c, &res, to.output_dir, !to.json)
        .await
        .with_context(|| format!("fetching the result of array {}", info.id))?;
    Ok(res.exit_code)
}

/// Writes each item's stdout to stdout in index order (unless `--json`)
/// and its outputs to DIR/INDEX/NAME, one item at a time so a big array
/// never sits in memory. Returns 0 if every item exited with 0, else 1.
async fn deliver_items(
    c: &ApiClient,
    info: &ArrayInfo,
    to: Delivery<'_>,
    data_dir: &Path,
) -> Result<i32> {
    let mut tally = Tally::default();
    let mut from = Some(0);
    while let Some(start) = from {
        let page = item_page(c, &info.id, start)
            .await
            .map_err(|e| explain(e, data_dir))
            .with_context(|| format!("listing the items of array {}", info.id))?;
        for item in &page.items {
            deliver_item(c, item, to)
                .await
                .with_context(|| format!("item {} of array {}", item.index, info.id))?;
            tally.add(item);
        }
        from = next_page(start, page.next)?;
    }
    Ok(tally.finish(info, to))
}

/// `GET /api/v1/arrays/{id}/items?from=..`: one page of items.
async fn item_page(c: &ApiClient, id: &str, from: u32) -> Result<ArrayItemPage, ClientError> {
    c.get_json(&format!(
        "/api/v1/arrays/{id}/items?from={from}&limit={PAGE}"
    ))
    .await
}

/// Where the page after the one at `start` begins; a `next` that does not
/// move forward would make the listing loop forever.
fn next_page(start: u32, next: Option<u32>) -> Result<Option<u32>> {
    match next {
        Some(n) if n <= start => {
            bail!("the daemon sent item page {n} after page {start}: it must move forward")
        }
        n => Ok(n),
    }
}

/// Writes one verified item: its stdout to stdout (unless `--json`), its
/// outputs under DIR/INDEX.
async fn deliver_item(c: &ApiClient, item: &ArrayItemInfo, to: Delivery<'_>) -> Result<()> {
    if !to.json {
        if let Some(blob) = &item.stdout {
            let data = fetch_blob(c, blob).await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&data)
                .and_then(|()| out.flush())
                .context("writing stdout")?;
        }
    }
    if let Some(dir) = to.output_dir {
        let dir = dir.join(item.index.to_string());
        for (name, blob) in &item.outputs {
            let data = fetch_blob(c, blob).await?;
            write_output(&dir, name, &data)?;
        }
    }
    Ok(())
}

/// What the delivered items add up to.
#[derive(Debug, Default)]
struct Tally {
    /// Items whose exit code is not 0.
    nonzero: u32,
    /// Items with outputs.
    with_outputs: u32,
}

impl Tally {
    fn add(&mut self, item: &ArrayItemInfo) {
        if item.exit_code != Some(0) {
            self.nonzero += 1;
        }
        if !item.outputs.is_empty() {
            self.with_outputs += 1;
        }
    }

    /// Says on stderr what was not delivered and returns the exit code.
    fn finish(&self, info: &ArrayInfo, to: Delivery<'_>) -> i32 {
        let short = short_id(&info.id);
        if self.with_outputs > 0 && to.output_dir.is_none() {
            note(&format!(
                "outputs of {} item(s) not written; pass --output-dir DIR, or later `agora job result {short} --output-dir DIR`",
                self.with_outputs
            ));
        }
        if self.nonzero == 0 {
            return 0;
        }
        note(&format!(
            "array {short}: {} of {} items exited with a non-zero code",
            self.nonzero, info.total
        ));
        1
    }
}

/// `GET /api/v1/arrays/{id}`, or `None` when no array has that id (it may
/// be a job's).
pub async fn find(c: &ApiClient, id: &str) -> Result<Option<ArrayInfo>, ClientError> {
    not_found_is_none(c.get_json(&format!("/api/v1/arrays/{id}")).await)
}

/// `DELETE /api/v1/arrays/{id}`, or `None` when no array has that id.
pub async fn cancel(c: &ApiClient, id: &str) -> Result<Option<ArrayInfo>, ClientError> {
    not_found_is_none(c.delete_json(&format!("/api/v1/arrays/{id}")).await)
}

fn not_found_is_none<T>(r: Result<T, ClientError>) -> Result<Option<T>, ClientError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ClientError::Status { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `agora job retry ID [INDEX...]`: runs the failed or cancelled items
/// again (all of them without indices).
pub async fn retry(c: &ApiClient, id: &str, indices: Vec<u32>, data_dir: &Path) -> Result<i32> {
    let body = RetryArray { indices };
    let r = c
        .post_json::<_, ArrayInfo>(&format!("/api/v1/arrays/{id}/retry"), &body)
        .await;
    let info = match r {
        Ok(info) => info,
        Err(e @ ClientError::Status { status: 404, .. }) => {
            if get_record(c, id).await.is_ok() {
                bail!(
                    "{id} is a job: agora job retry works on arrays; resubmit a job with agora run"
                );
            }
            return Err(explain(e, data_dir)).with_context(|| format!("no array {id}"));
        }
        Err(e) => return Err(explain(e, data_dir)).with_context(|| format!("retrying array {id}")),
    };
    writeln!(
        std::io::stdout().lock(),
        "array {} {}",
        info.id,
        info.state.as_str()
    )?;
    note(&format!(
        "{}; follow it with `agora job status {}`",
        counts_line(&info),
        short_id(&info.id)
    ));
    Ok(0)
}

/// `GET /api/v1/arrays`, or an empty list from a daemon without arrays.
pub async fn list(c: &ApiClient) -> Result<ArrayList, ClientError> {
    Ok(not_found_is_none(c.get_json("/api/v1/arrays").await)?
        .unwrap_or(ArrayList { arrays: Vec::new() }))
}

#[cfg(test)]
mod tests {
    use agora_node::api::types::ReplicationMode;
    use clap::Parser;

    use super::*;
    use crate::run::RunCommand;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        run: RunCommand,
    }

    fn parse(args: &[&str]) -> Result<RunCommand, clap::Error> {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.run)
    }

    fn array_opts(cmd: RunCommand) -> ArrayOpts {
        match cmd {
            RunCommand::Wasm { array, .. } | RunCommand::Docker { array, .. } => array,
        }
    }

    #[test]
    fn ranges_parse_and_are_bounded() {
        assert_eq!(parse_range("1..10"), Ok(IntRange { from: 1, to: 10 }));
        assert_eq!(parse_range("-5..-5"), Ok(IntRange { from: -5, to: -5 }));
        assert_eq!(
            parse_range("0..99999"),
            Ok(IntRange {
                from: 0,
                to: 99_999
            })
        );
        let reversed = parse_range("10..1").unwrap_err();
        assert!(reversed.contains("empty"), "{reversed}");
        let many = parse_range("0..100000").unwrap_err();
        assert!(many.contains("100001 items"), "{many}");
        let huge = parse_range(&format!("{}..{}", i64::MIN, i64::MAX)).unwrap_err();
        assert!(huge.contains("more than"), "{huge}");
        for garbage in ["", "1", "1..", "..5", "a..b", "1..=5", "1...5", "1-5"] {
            assert!(parse_range(garbage).is_err(), "{garbage}");
        }
    }

    #[test]
    fn the_issue_example_parses() {
        let cmd = parse(&[
            "wasm",
            "m.wasm",
            "--range",
            "1..10",
            "--reduce",
            "r.wasm",
            "--reduce-arg",
            "x",
            "--",
            "{}",
        ])
        .unwrap();
        let RunCommand::Wasm {
            module,
            array,
            args,
            ..
        } = cmd
        else {
            panic!("not wasm");
        };
        assert_eq!(module, PathBuf::from("m.wasm"));
        assert_eq!(args, ["{}"]);
        assert_eq!(array.range, Some(IntRange { from: 1, to: 10 }));
        assert_eq!(array.reduce.as_deref(), Some("r.wasm"));
        assert_eq!(array.reduce_args, ["x"]);
        assert!(array.each.is_empty() && array.lines.is_none() && array.parallel.is_none());
    }

    #[test]
    fn item_flags_exclude_each_other() {
        for bad in [
            &["wasm", "m.wasm", "--each", "a", "b", "--range", "1..2"][..],
            &["wasm", "m.wasm", "--range", "1..2", "--lines", "l.txt"],
            &["docker", "busybox", "--lines", "l.txt", "--each", "a"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn array_flags_without_items_are_refused_by_name() {
        let refused = |args: &[&str], flag: &str| {
            let e = array_opts(parse(args).unwrap()).plan().unwrap_err();
            assert!(e.to_string().starts_with(flag), "{e}");
        };
        refused(&["wasm", "m.wasm", "--reduce", "busybox"], "--reduce ");
        refused(&["wasm", "m.wasm", "--reduce-arg", "-v"], "--reduce-arg ");
        refused(&["docker", "busybox", "--parallel", "4"], "--parallel ");
        // With items, --reduce-arg still needs --reduce.
        refused(
            &["wasm", "m.wasm", "--range", "1..2", "--reduce-arg", "x"],
            "--reduce-arg ",
        );
        assert!(parse(&["wasm", "m.wasm", "--range", "1..2", "--parallel", "0"]).is_err());
        // No array flag: a plain job.
        assert!(array_opts(parse(&["wasm", "m.wasm"]).unwrap())
            .plan()
            .unwrap()
            .is_none());
    }

    #[test]
    fn each_takes_many_files_named_by_base_name() {
        let cmd = parse(&[
            "docker",
            "busybox",
            "--each",
            "data/a.txt",
            "/tmp/b.csv",
            "--parallel",
            "8",
            "--",
            "wc",
            "{}",
        ])
        .unwrap();
        let RunCommand::Docker { cmd, array, .. } = cmd else {
            panic!("not docker");
        };
        assert_eq!(cmd, ["wc", "{}"]);
        let plan = array.plan().unwrap().unwrap();
        assert_eq!(plan.parallel, Some(8));
        assert_eq!(
            plan.items,
            ItemSource::Files(vec![
                ("a.txt".into(), PathBuf::from("data/a.txt")),
                ("b.csv".into(), PathBuf::from("/tmp/b.csv")),
            ])
        );
        assert!(each_names(vec![PathBuf::from("..")]).is_err());
        assert!(each_names(vec![PathBuf::from("/")]).is_err());
    }

    #[test]
    fn a_missing_wasm_reduce_is_a_typo_not_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("r.wasm");
        assert!(reduce_program(module.display().to_string()).is_err());
        std::fs::write(&module, b"\0asm").unwrap();
        assert!(reduce_program(module.display().to_string()).is_ok());
        assert_eq!(
            reduce_program("busybox:latest".into()).unwrap(),
            "busybox:latest"
        );
    }

    #[test]
    fn the_reduce_job_shares_the_items_settings_but_not_their_files() {
        let mut t = SubmitJob::new(SubmitExecutor::Docker {
            image: "busybox".into(),
        });
        t.args = vec!["{}".into()];
        t.env.insert("K".into(), "V".into());
        t.stdin = Some("aa".repeat(32));
        t.inputs.insert("x".into(), "bb".repeat(32));
        t.outputs = vec!["o.txt".into()];
        t.n = Some(5);
        t.k = Some(3);
        t.memory_bytes = Some(1 << 30);
        t.timeout_ms = Some(1000);
        t.milli_cpus = Some(500);
        t.allow_local = true;
        t.replication = ReplicationMode::Adaptive;
        t.requires.insert("gpu".into(), "true".into());
        let module = "cc".repeat(32);
        let r = reduce_job(
            &t,
            SubmitExecutor::Wasm {
                module: module.clone(),
            },
            vec!["sum".into()],
        );
        assert_eq!(r.executor, SubmitExecutor::Wasm { module });
        assert_eq!(r.args, ["sum"]);
        assert!(r.stdin.is_none() && r.inputs.is_empty() && r.outputs.is_empty());
        assert_eq!((r.n, r.k), (Some(5), Some(3)));
        assert_eq!((r.memory_bytes, r.timeout_ms), (Some(1 << 30), Some(1000)));
        assert_eq!(r.milli_cpus, Some(500));
        assert!(r.allow_local);
        assert_eq!(r.replication, ReplicationMode::Adaptive);
        assert_eq!((&r.env, &r.requires), (&t.env, &t.requires));
    }

    #[test]
    fn item_pages_must_move_forward() {
        assert_eq!(next_page(0, Some(1000)).unwrap(), Some(1000));
        assert_eq!(next_page(1000, None).unwrap(), None);
        assert!(next_page(1000, Some(1000)).is_err());
        assert!(next_page(1000, Some(3)).is_err());
    }

    #[test]
    fn only_an_unreachable_daemon_is_waited_out() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let refused = ClientError::Connect {
            addr,
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(is_unreachable(&refused));
        let answered = ClientError::Status {
            status: 404,
            message: "no array".into(),
        };
        assert!(!is_unreachable(&answered));
        assert!(matches!(not_found_is_none::<()>(Err(answered)), Ok(None)));
    }
}
