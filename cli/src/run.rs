//! `agora run`: submit a job to the network through the running daemon,
//! show its progress, and hand back the verified result as if the program
//! had run here.
//!
//! Uploads the module, stdin and inputs as blobs, submits, follows the
//! job's event stream (reconnecting when the daemon closes a long-lived
//! stream), then prints the verified stdout and exits with the verified
//! exit code. Ctrl-C only stops the waiting: the job goes on.
//!
//! With `--each`, `--range` or `--lines` the job built here is the one
//! every item of an array runs, and array.rs takes over from submission.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agora_node::api::client::{ApiClient, ClientError};
use agora_node::api::jobs::MAX_UPLOAD_BYTES;
use agora_node::api::types::{
    AdaptivePlan, BlobInfo, JobEvent, JobRecord, JobResult, JobState, ReplicationMode,
    SubmitExecutor, SubmitJob,
};
use agora_protocol::limits::MAX_REPLICATION;
use agora_protocol::ContentId;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::array::{ArrayOpts, Delivery};
use crate::job::{deliver, get_record, get_result, note, short_id};
use crate::jobopts::{milli_cpus, read_file, split_pair, RunOpts};
use crate::node::{explain, human_bytes, print_json, short_peer, ApiOpt};
use crate::output::{check_output_dir, executor_failure};

/// Which sandbox `agora run` asks for.
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Run a WASI preview 1 command module (a .wasm file with `_start`) on
    /// n executors of the network.
    Wasm {
        /// The module file (uploaded to your daemon, which serves it to
        /// the executors).
        module: PathBuf,
        #[command(flatten)]
        opts: RunOpts,
        #[command(flatten)]
        net: NetOpts,
        #[command(flatten)]
        array: ArrayOpts,
        /// Arguments passed to the program (after `--`); with an array,
        /// `{}` becomes the item and `{#}` its index.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a command in a Docker image on n executors of the network.
    ///
    /// Images are never pulled: your daemon resolves the name to its local
    /// image id (or takes `name@sha256:...` as is), and only nodes holding
    /// that image bid for the job.
    Docker {
        /// Image name (`busybox:latest`), `name@sha256:...` or id
        /// (`sha256:...`).
        image: String,
        #[command(flatten)]
        opts: RunOpts,
        #[command(flatten)]
        net: NetOpts,
        /// CPU share, e.g. 0.5 or 2.
        #[arg(long, default_value = "1")]
        cpus: f64,
        #[command(flatten)]
        array: ArrayOpts,
        /// Command and arguments run in the container (after `--`); with
        /// an array, `{}` becomes the item and `{#}` its index.
        #[arg(last = true)]
        cmd: Vec<String>,
    },
}

/// How the job is replicated and how `run` waits for it.
#[derive(Debug, Args)]
pub struct NetOpts {
    /// Executors that run the job.
    #[arg(short = 'n', long = "replicas", value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_REPLICATION)))]
    pub n: u8,
    /// Executors that must sign the same result for it to be accepted
    /// (k=1 means one executor's word: unverified).
    #[arg(short = 'k', long = "quorum", value_name = "K", default_value_t = 2,
          value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_REPLICATION)))]
    pub k: u8,
    /// Let your own node run the job when no other node can (a lone node,
    /// a small test network).
    #[arg(long)]
    pub allow_local: bool,
    /// `fixed`: always N executors, K must agree. `adaptive`: a node with
    /// a long clean record in your node's own jobs may run it alone, with
    /// random spot checks at K-of-N; cheaper, but most such results are
    /// one node's word (see docs/benchmarks.md for the trade-off).
    #[arg(long, value_name = "MODE", default_value = "fixed")]
    pub replication: ReplicationMode,
    /// Run only on nodes whose operator labels include KEY=VALUE
    /// (`agora daemon --label`), e.g. `--require gpu=true`; repeatable,
    /// all must match. Fails at once if no online node has them.
    #[arg(long = "require", value_name = "KEY=VALUE")]
    pub requires: Vec<String>,
    /// Print the job (or array) id and return at once; see it later with
    /// `agora job status ID` and `agora job result ID`.
    #[arg(long)]
    pub detach: bool,
    #[command(flatten)]
    pub api: ApiOpt,
}

impl NetOpts {
    /// The `--require` pairs: label key -> value.
    fn requires_map(&self) -> Result<BTreeMap<String, String>> {
        let mut requires = BTreeMap::new();
        for pair in &self.requires {
            let (k, v) = split_pair(pair, "--require")?;
            if k.is_empty() {
                bail!("--require {pair}: the label key is empty");
            }
            if let Some(old) = requires.insert(k.to_owned(), v.to_owned()) {
                if old != v {
                    bail!("--require {k} is given twice, as {old} and {v}");
                }
            }
        }
        Ok(requires)
    }
}

/// Exit code when the user stops waiting with Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;
/// Pause before following the event stream again after it broke.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// A stream attempt shorter than this that brought no new event counts
/// as a failure; this many in a row give up. Long-lived streams that end
/// (a daemon restart, a dropped connection) never count.
const QUICK_FAILURE: Duration = Duration::from_secs(5);
/// See [`QUICK_FAILURE`].
const MAX_QUICK_FAILURES: u32 = 5;
/// Most events remembered to skip the replay after a reconnect (the
/// daemon keeps at most 256 per job, plus the final one).
const MAX_SEEN_EVENTS: usize = 1024;

/// Runs `agora run` and returns the process exit code.
pub async fn run(cmd: RunCommand, data_dir: &Path) -> Result<i32> {
    let (program, opts, net, array, args, milli_cpus) = match cmd {
        RunCommand::Wasm {
            module,
            opts,
            net,
            array,
            args,
        } => (Program::Wasm(module), opts, net, array, args, None),
        RunCommand::Docker {
            image,
            opts,
            net,
            cpus,
            array,
            cmd,
        } => (
            Program::Docker(image),
            opts,
            net,
            array,
            cmd,
            Some(milli_cpus(cpus)?),
        ),
    };
    // Checked before anything is uploaded.
    let array = array.plan()?;
    if net.k > net.n {
        bail!(
            "-k {} is more than -n {}: k of the n executors must agree",
            net.k,
            net.n
        );
    }
    let env = opts.env_map()?;
    let requires = net.requires_map()?;
    let input_files = opts.input_files()?;
    if let Some(dir) = &opts.output_dir {
        check_output_dir(dir)?;
    }
    let client = net.api.client(data_dir)?;
    let api_err = |e: ClientError| explain(e, data_dir);

    let executor = match program {
        Program::Wasm(path) => SubmitExecutor::Wasm {
            module: upload(&client, &path, "module").await?,
        },
        Program::Docker(image) => SubmitExecutor::Docker { image },
    };
    let stdin = match &opts.stdin {
        Some(p) => Some(upload(&client, p, "stdin file").await?),
        None => None,
    };
    let mut inputs = BTreeMap::new();
    for (name, file) in input_files {
        let id = upload(&client, &file, "input file").await?;
        inputs.insert(name, id);
    }
    let submit = SubmitJob {
        executor,
        args,
        env,
        stdin,
        inputs,
        outputs: opts.outputs.clone(),
        n: Some(net.n),
        k: Some(net.k),
        memory_bytes: Some(opts.memory),
        timeout_ms: Some(opts.timeout_ms()),
        fuel: opts.fuel,
        milli_cpus,
        max_output_bytes: Some(opts.max_output),
        allow_local: net.allow_local,
        replication: net.replication,
        requires,
    };
    if let Some(plan) = array {
        let to = Delivery {
            output_dir: opts.output_dir.as_deref(),
            json: opts.json,
        };
        return crate::array::run(&client, plan, submit, net.detach, to, data_dir).await;
    }
    let rec: JobRecord = client
        .post_json("/api/v1/jobs", &submit)
        .await
        .map_err(api_err)
        .context("submitting the job")?;

    if net.detach {
        if opts.json {
            print_json(&rec)?;
        } else {
            use std::io::Write;
            writeln!(std::io::stdout().lock(), "{}", rec.id)?;
        }
        return Ok(0);
    }
    let adaptive = match rec.replication {
        ReplicationMode::Adaptive => " (adaptive: one trusted executor may run it alone)",
        ReplicationMode::Fixed => "",
    };
    note(&format!(
        "job {} submitted: {} executor(s), {} must agree{adaptive}",
        rec.id, rec.n, rec.k
    ));
    if rec.unverified {
        note("warning: k=1: the result will be one executor's word, not verified by others");
    }
    let id = rec.id.clone();
    tokio::select! {
        r = wait_and_deliver(&client, rec, &opts, data_dir) => r,
        r = tokio::signal::ctrl_c() => {
            r.context("listening for Ctrl-C")?;
            note(&format!(
                "stopped waiting; job {id} goes on: `agora job status {}`, `agora job result {}`",
                short_id(&id),
                short_id(&id)
            ));
            Ok(EXIT_INTERRUPTED)
        }
    }
}

/// What the job runs.
enum Program {
    /// A module file to upload.
    Wasm(PathBuf),
    /// An image name or id, resolved by the daemon.
    Docker(String),
}

/// Uploads a file as a blob and returns its id, after checking the daemon
/// stored exactly these bytes.
pub async fn upload(client: &ApiClient, path: &Path, what: &str) -> Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    // Checked before reading, so a huge file is not loaded only to be
    // refused.
    if meta.len() > MAX_UPLOAD_BYTES as u64 {
        bail!(
            "{what} {} is {}, more than the {} a job input may be",
            path.display(),
            human_bytes(meta.len()),
            human_bytes(MAX_UPLOAD_BYTES as u64)
        );
    }
    let data = read_file(path, what)?;
    let expected = ContentId::of(&data).to_hex();
    let info: BlobInfo = client
        .post_bytes("/api/v1/blobs", data.into())
        .await
        .with_context(|| format!("uploading {what} {}", path.display()))?;
    if info.id != expected {
        bail!(
            "uploading {what} {}: the daemon stored blob {}, expected {}",
            path.display(),
            short_id(&info.id),
            short_id(&expected)
        );
    }
    Ok(info.id)
}

/// Follows the job to its end, then delivers the result (or fails with
/// the reason) and returns the exit code.
async fn wait_and_deliver(
    client: &ApiClient,
    rec: JobRecord,
    opts: &RunOpts,
    data_dir: &Path,
) -> Result<i32> {
    let mut progress = Progress::new(&rec);
    let mut screen = Screen::new();
    let last = follow(client, &rec.id, |e| {
        screen.show(&progress.line(e), image_percent(e))
    })
    .await
    .map_err(|e| explain(e, data_dir))
    .with_context(|| {
        format!(
            "following job {}; it may go on: `agora job status {}`",
            rec.id,
            short_id(&rec.id)
        )
    })?;
    match last.state {
        JobState::Verified => {
            let res = settled_result(client, &rec.id)
                .await
                .map_err(|e| explain(e, data_dir))?;
            let agreeing: Vec<String> = res.agreeing.iter().map(|p| short_peer(p)).collect();
            if res.unverified {
                let why = if res.plan == Some(AdaptivePlan::Solo) {
                    "adaptive: one trusted executor's word, not cross-checked"
                } else {
                    "k=1: one executor's word"
                };
                note(&format!(
                    "done: unverified result {} from {} ({why}); exit code {}",
                    short_id(&res.result_hash),
                    agreeing.join(", "),
                    res.exit_code
                ));
            } else {
                note(&format!(
                    "verified: {} executor(s) agree on result {} ({}); exit code {}",
                    agreeing.len(),
                    short_id(&res.result_hash),
                    agreeing.join(", "),
                    res.exit_code
                ));
            }
            deliver(client, &res, opts.output_dir.as_deref(), !opts.json)
                .await
                .with_context(|| format!("fetching the result of job {}", rec.id))?;
            if opts.json {
                let rec = settled_record(client, &rec.id)
                    .await
                    .map_err(|e| explain(e, data_dir))?;
                print_json(&rec)?;
            }
            Ok(res.exit_code)
        }
        state => {
            // The record's reason is the daemon's summary; the final
            // event's detail says the same if the record cannot be read.
            let now = settled_record(client, &rec.id).await.ok();
            let reason = now
                .as_ref()
                .and_then(|r| r.reason.clone())
                .unwrap_or_else(|| last.detail.clone());
            if opts.json {
                if let Some(r) = &now {
                    print_json(r)?;
                }
            }
            bail!("job {} {}: {reason}", short_id(&rec.id), state.as_str())
        }
    }
}

/// The daemon may announce a job's final event a moment before it stores
/// the final record, so reads right after it can still see the job
/// running: they are retried this many times, this far apart.
const SETTLE_RETRIES: u32 = 20;
/// See [`SETTLE_RETRIES`].
const SETTLE_PAUSE: Duration = Duration::from_millis(250);

/// The verified result of a job whose final event said verified.
async fn settled_result(client: &ApiClient, id: &str) -> Result<JobResult, ClientError> {
    let mut tries = 0;
    loop {
        match get_result(client, id).await {
            Err(ClientError::Status { status: 409, .. }) if tries < SETTLE_RETRIES => {
                tries += 1;
                tokio::time::sleep(SETTLE_PAUSE).await;
            }
            r => return r,
        }
    }
}

/// The record of a job whose final event arrived, once it shows a final
/// state (or as it is after [`SETTLE_RETRIES`]).
async fn settled_record(client: &ApiClient, id: &str) -> Result<JobRecord, ClientError> {
    let mut tries = 0;
    loop {
        let rec = get_record(client, id).await?;
        if rec.state.is_final() || tries >= SETTLE_RETRIES {
            return Ok(rec);
        }
        tries += 1;
        tokio::time::sleep(SETTLE_PAUSE).await;
    }
}

/// Follows `/api/v1/jobs/{id}/events` until the final event, calling
/// `show` once per event even across reconnects (a new stream replays
/// the past events first).
async fn follow<F: FnMut(&JobEvent)>(
    client: &ApiClient,
    id: &str,
    mut show: F,
) -> Result<JobEvent, ClientError> {
    let path = format!("/api/v1/jobs/{id}/events");
    let mut seen: Vec<JobEvent> = Vec::new();
    let mut quick_failures = 0;
    loop {
        let started = Instant::now();
        let mut new_events = false;
        let r = client
            .follow_job(&path, |e| {
                if seen.contains(e) {
                    return;
                }
                if seen.len() < MAX_SEEN_EVENTS {
                    seen.push(e.clone());
                }
                new_events = true;
                show(e);
            })
            .await;
        match r {
            Ok(last) => return Ok(last),
            Err(e @ (ClientError::StreamEnded { .. } | ClientError::StreamIdle { .. })) => {
                if new_events || started.elapsed() >= QUICK_FAILURE {
                    quick_failures = 0;
                } else {
                    quick_failures += 1;
                    if quick_failures >= MAX_QUICK_FAILURES {
                        return Err(e);
                    }
                }
                tracing::debug!(error = %e, "event stream broke; following again");
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Renders events as progress lines, counting attestations.
/// The percentage of an image fetch in progress, from its event
/// (`fetching image 34 MiB/120 MiB (28%) from 3 peer(s)`).
fn image_percent(e: &JobEvent) -> Option<u8> {
    if e.kind != "image" {
        return None;
    }
    let (_, rest) = e.detail.split_once('(')?;
    let (n, _) = rest.split_once("%)")?;
    n.parse().ok().map(|p: u8| p.min(100))
}

/// Where progress lines go: stderr, one per event, except that an image
/// fetch redraws one line with a bar while stderr is a terminal.
struct Screen {
    tty: bool,
    /// A bar is drawn and the cursor sits at its end.
    bar_open: bool,
}

impl Screen {
    fn new() -> Self {
        Self {
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            bar_open: false,
        }
    }

    fn show(&mut self, line: &str, percent: Option<u8>) {
        let mut err = std::io::stderr().lock();
        match percent {
            Some(p) if self.tty => {
                const WIDTH: usize = 24;
                let done = usize::from(p) * WIDTH / 100;
                let bar = format!("{}{}", "#".repeat(done), ".".repeat(WIDTH - done));
                // \r and erase-line: the bar replaces itself.
                let _ = write!(err, "\r\x1b[K[{bar}] {line}");
                let _ = err.flush();
                self.bar_open = true;
            }
            _ => {
                if self.bar_open {
                    let _ = writeln!(err);
                    self.bar_open = false;
                }
                let _ = writeln!(err, "{line}");
            }
        }
    }
}

struct Progress {
    /// Executors first assigned.
    n: u8,
    /// Executors that must agree.
    k: u8,
    /// When the job was submitted (ms since the Unix epoch).
    start_ms: u64,
    /// Attestations received so far.
    attested: u32,
}

impl Progress {
    fn new(rec: &JobRecord) -> Self {
        Self {
            n: rec.n,
            k: rec.k,
            start_ms: rec.submitted_at_ms,
            attested: 0,
        }
    }

    /// The line for `e`: `[+1.2s] assigned to 12D3KooW…abcdef (attempt 0)`.
    fn line(&mut self, e: &JobEvent) -> String {
        let ms = e.at_ms.saturating_sub(self.start_ms);
        let at = format!("[+{}.{}s]", ms / 1000, (ms % 1000) / 100);
        let peer = e.peer_id.as_deref().map(short_peer).unwrap_or_default();
        let detail = if e.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", e.detail)
        };
        let what = match e.kind.as_str() {
            "bid" => format!("bid from {peer}{detail}"),
            "assigned" => {
                let d = if e.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", e.detail)
                };
                format!("assigned to {peer}{d}")
            }
            "attested" => {
                self.attested += 1;
                format!(
                    "attestation {}/{} from {peer} (need {} agreeing){detail}",
                    self.attested, self.n, self.k
                )
            }
            kind => match executor_failure(kind) {
                Some(failure) => format!("{peer} {failure}{detail}"),
                None if peer.is_empty() => format!("{kind}{detail}"),
                None => format!("{kind} {peer}{detail}"),
            },
        };
        format!("{at} {what}")
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

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

    #[test]
    fn an_image_fetch_event_gives_the_bar_its_percentage() {
        let fetching = "fetching image 12.0 MiB/26.1 MiB (45%) from 2 peer(s)";
        assert_eq!(image_percent(&ev("image", None, fetching, 0)), Some(45));
        let loaded = "image fetched and loaded (26.1 MiB)";
        assert_eq!(image_percent(&ev("image", None, loaded, 0)), None);
        assert_eq!(image_percent(&ev("bid", None, "(45%)", 0)), None);
    }

    #[test]
    fn require_is_repeatable_and_checked() {
        let net = |args: &[&str]| match parse(args).unwrap() {
            RunCommand::Wasm { net, .. } | RunCommand::Docker { net, .. } => net,
        };
        let n = net(&[
            "wasm",
            "m.wasm",
            "--require",
            "gpu=true",
            "--require",
            "model=resnet50",
        ]);
        let want: BTreeMap<String, String> = [("gpu", "true"), ("model", "resnet50")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert_eq!(n.requires_map().unwrap(), want);
        assert!(net(&["wasm", "m.wasm"]).requires_map().unwrap().is_empty());
        for bad in [
            &["wasm", "m.wasm", "--require", "gpu"][..],
            &["wasm", "m.wasm", "--require", "=true"],
            &["wasm", "m.wasm", "--require", "gpu=a", "--require", "gpu=b"],
        ] {
            assert!(net(bad).requires_map().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wasm_defaults_mirror_exec() {
        match parse(&["wasm", "m.wasm"]).unwrap() {
            RunCommand::Wasm {
                module,
                opts,
                net,
                args,
                ..
            } => {
                assert_eq!(module, PathBuf::from("m.wasm"));
                assert_eq!((net.n, net.k), (3, 2));
                assert!(!net.allow_local && !net.detach);
                assert_eq!(opts.timeout, Duration::from_secs(60));
                assert_eq!(opts.memory, 64 << 20);
                assert_eq!(opts.max_output, 16 << 20);
                assert!(opts.fuel.is_none() && opts.stdin.is_none() && !opts.json);
                assert!(args.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wasm_takes_every_flag_and_trailing_args() {
        let cmd = parse(&[
            "wasm",
            "m.wasm",
            "-n",
            "5",
            "-k",
            "3",
            "--timeout",
            "2m",
            "--memory",
            "128MiB",
            "--fuel",
            "1000",
            "--stdin",
            "in.txt",
            "--input",
            "a=x.txt",
            "--input",
            "b=y.txt",
            "--output",
            "out.txt",
            "--output-dir",
            "res",
            "-e",
            "K=V",
            "--allow-local",
            "--detach",
            "--json",
            "--api",
            "127.0.0.1:7401",
            "--",
            "--flag",
            "arg",
        ])
        .unwrap();
        let RunCommand::Wasm {
            opts, net, args, ..
        } = cmd
        else {
            panic!("not wasm");
        };
        assert_eq!((net.n, net.k), (5, 3));
        assert!(net.allow_local && net.detach && opts.json);
        assert_eq!(opts.timeout, Duration::from_secs(120));
        assert_eq!(opts.memory, 128 << 20);
        assert_eq!(opts.fuel, Some(1000));
        assert_eq!(opts.stdin, Some(PathBuf::from("in.txt")));
        assert_eq!(opts.input_files().unwrap().len(), 2);
        assert_eq!(opts.outputs, ["out.txt"]);
        assert_eq!(opts.output_dir, Some(PathBuf::from("res")));
        assert_eq!(
            opts.env_map().unwrap().get("K").map(String::as_str),
            Some("V")
        );
        assert_eq!(args, ["--flag", "arg"]);
    }

    #[test]
    fn docker_takes_cpus_and_a_command() {
        match parse(&[
            "docker",
            "busybox:latest",
            "--cpus",
            "0.5",
            "-n",
            "1",
            "-k",
            "1",
            "--",
            "echo",
            "hi",
        ])
        .unwrap()
        {
            RunCommand::Docker {
                image,
                cpus,
                cmd,
                net,
                ..
            } => {
                assert_eq!(image, "busybox:latest");
                assert_eq!(milli_cpus(cpus).unwrap(), 500);
                assert_eq!((net.n, net.k), (1, 1));
                assert_eq!(cmd, ["echo", "hi"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replication_is_bounded() {
        assert!(parse(&["wasm", "m.wasm", "-n", "0"]).is_err());
        assert!(parse(&["wasm", "m.wasm", "-k", "0"]).is_err());
        assert!(parse(&["wasm", "m.wasm", "-n", "33"]).is_err());
        assert!(parse(&["wasm", "m.wasm", "-n", "32", "-k", "32"]).is_ok());
        assert!(parse(&["wasm"]).is_err());
    }

    fn ev(kind: &str, peer: Option<&str>, detail: &str, at_ms: u64) -> JobEvent {
        JobEvent {
            at_ms,
            kind: kind.into(),
            peer_id: peer.map(str::to_owned),
            state: JobState::Running,
            detail: detail.into(),
        }
    }

    #[test]
    fn progress_lines_count_attestations() {
        let peer = "12D3KooWGzBk9qzxRkQbWQy5a8Jm6wW1yfgvYVRz3Q8uMNbRbJmA";
        let rec = JobRecord {
            id: "ab".repeat(32),
            state: JobState::Pending,
            executor: "wasm".into(),
            program: "cd".repeat(32),
            n: 3,
            k: 2,
            unverified: false,
            replication: ReplicationMode::Fixed,
            plan: None,
            submitted_at_ms: 10_000,
            finished_at_ms: None,
            reason: None,
            result_hash: None,
            exit_code: None,
            bids: 0,
            executors: vec![],
            events: vec![],
        };
        let mut p = Progress::new(&rec);
        assert_eq!(
            p.line(&ev("offered", None, "offer #1 gossiped", 10_050)),
            "[+0.0s] offered: offer #1 gossiped"
        );
        assert_eq!(
            p.line(&ev("assigned", Some(peer), "attempt 0", 11_200)),
            "[+1.2s] assigned to 12D3KooW…bRbJmA (attempt 0)"
        );
        assert_eq!(
            p.line(&ev("attested", Some(peer), "result abc", 12_000)),
            "[+2.0s] attestation 1/3 from 12D3KooW…bRbJmA (need 2 agreeing): result abc"
        );
        assert!(p
            .line(&ev("attested", Some(peer), "", 12_500))
            .contains("attestation 2/3"));
        assert_eq!(
            p.line(&ev("missed", Some(peer), "deadline passed", 13_000)),
            "[+3.0s] 12D3KooW…bRbJmA missed: deadline passed"
        );
        assert_eq!(
            p.line(&ev("out_of_memory", Some(peer), "limit 64.0 MiB", 13_100)),
            "[+3.1s] 12D3KooW…bRbJmA ran out of memory: limit 64.0 MiB"
        );
        assert_eq!(
            p.line(&ev("timed_out", Some(peer), "", 13_200)),
            "[+3.2s] 12D3KooW…bRbJmA timed out"
        );
        // Events before the submission time (clock skew) do not wrap.
        assert!(p
            .line(&ev("verified", None, "", 0))
            .starts_with("[+0.0s] verified"));
    }
}
