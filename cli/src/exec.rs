//! `agora exec`: run one job locally in a sandbox, with no network, and
//! report its result exactly as an executor would attest it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use agora_node::executor::docker::{DockerConfig, DockerExecutor};
use agora_node::executor::wasm::{WasmConfig, WasmExecutor};
use agora_node::executor::{ExecRequest, Executor};
use agora_protocol::{
    validate, ContentId, ExecutorSpec, JobSpec, NodeKey, Replication, Resources, ResultBundle,
};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::units::{parse_duration, parse_size};

/// Which sandbox `agora exec` uses.
#[derive(Debug, Subcommand)]
pub enum ExecCommand {
    /// Run a WASI preview 1 command module (a .wasm file with `_start`).
    Wasm {
        /// The module file.
        module: PathBuf,
        #[command(flatten)]
        opts: RunOpts,
        /// Arguments passed to the program (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a command in a local Docker image (never pulled: it must exist).
    Docker {
        /// Image name (`busybox:latest`) or id (`sha256:...`).
        image: String,
        #[command(flatten)]
        opts: RunOpts,
        /// CPU share, e.g. 0.5 or 2.
        #[arg(long, default_value = "1")]
        cpus: f64,
        /// Command and arguments run in the container (after `--`).
        #[arg(last = true)]
        cmd: Vec<String>,
    },
}

/// Options shared by every way of running a job.
#[derive(Debug, Args)]
pub struct RunOpts {
    /// File whose bytes are fed to the program's stdin.
    #[arg(long, value_name = "FILE")]
    pub stdin: Option<PathBuf>,
    /// An input file visible read-only as /in/NAME (repeatable).
    #[arg(long = "input", value_name = "NAME=FILE")]
    pub inputs: Vec<String>,
    /// A file the program writes under /out that is part of the result
    /// (repeatable). Only declared outputs are returned and hashed.
    #[arg(long = "output", value_name = "PATH")]
    pub outputs: Vec<String>,
    /// Directory where declared outputs are written.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Environment variable for the program (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Wall-clock limit.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Memory limit (e.g. 64MiB, 1GiB).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub memory: u64,
    /// Wasm fuel budget (roughly, instructions); unlimited if absent.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Cap on stdout, stderr and each output file.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub max_output: u64,
    /// Print a JSON summary (exit code, result hash, sizes) instead of the
    /// program's stdout.
    #[arg(long)]
    pub json: bool,
}

/// The `--json` summary of a run.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    job_id: String,
    executor: &'static str,
    exit_code: i32,
    result_hash: String,
    duration_ms: u64,
    stdout_bytes: usize,
    stderr_bytes: usize,
    stdout: Option<&'a str>,
    outputs: BTreeMap<&'a str, OutputSummary>,
}

#[derive(Debug, Serialize)]
struct OutputSummary {
    bytes: usize,
    sha256: String,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

fn split_pair<'a>(s: &'a str, flag: &str) -> Result<(&'a str, &'a str)> {
    s.split_once('=')
        .ok_or_else(|| anyhow::anyhow!("{flag} expects NAME=VALUE, got '{s}'"))
}

/// Runs `agora exec` and returns the process exit code.
pub async fn run(cmd: ExecCommand, data_dir: &Path) -> Result<i32> {
    let (executor_spec, opts, args, milli_cpus, module) = match cmd {
        ExecCommand::Wasm { module, opts, args } => {
            let bytes = read(&module, "module")?;
            let spec = ExecutorSpec::Wasm {
                module: ContentId::of(&bytes),
            };
            (spec, opts, args, 1000, bytes)
        }
        ExecCommand::Docker {
            image,
            opts,
            cpus,
            cmd,
        } => {
            if !(cpus > 0.0 && cpus <= 256.0) {
                anyhow::bail!("--cpus must be between 0.01 and 256, got {cpus}");
            }
            let docker = docker(data_dir).await?;
            let digest = docker.resolve_image(&image).await?;
            let spec = ExecutorSpec::Docker { image, digest };
            (spec, opts, cmd, (cpus * 1000.0).round() as u32, Vec::new())
        }
    };

    let stdin = match &opts.stdin {
        Some(p) => read(p, "stdin file")?,
        None => Vec::new(),
    };
    let mut inputs = BTreeMap::new();
    let mut input_ids = BTreeMap::new();
    for pair in &opts.inputs {
        let (name, file) = split_pair(pair, "--input")?;
        let bytes = read(Path::new(file), "input file")?;
        input_ids.insert(name.to_owned(), ContentId::of(&bytes));
        inputs.insert(name.to_owned(), bytes);
    }
    let mut env = BTreeMap::new();
    for pair in &opts.env {
        let (k, v) = split_pair(pair, "--env")?;
        env.insert(k.to_owned(), v.to_owned());
    }
    let spec = JobSpec {
        executor: executor_spec,
        args,
        env,
        stdin: (!stdin.is_empty()).then(|| ContentId::of(&stdin)),
        inputs: input_ids,
        outputs: opts.outputs.clone(),
        resources: Resources {
            milli_cpus,
            memory_bytes: opts.memory,
            timeout_ms: u64::try_from(opts.timeout.as_millis()).unwrap_or(u64::MAX),
            fuel: opts.fuel,
            max_output_bytes: opts.max_output,
        },
        replication: Replication { n: 1, k: 1 },
        created_at_ms: now_ms(),
        nonce: rand::random(),
    };
    let spec = validate(spec).context("invalid job")?;
    // A local run has no submitter identity; an ephemeral key still gives
    // the job a real id (it seeds Wasm randomness and labels containers).
    let job_id = NodeKey::generate().sign(spec.spec()).id();
    let kind = spec.spec().executor.kind();
    let req = ExecRequest {
        job_id,
        spec,
        module,
        stdin,
        inputs,
    };
    let bundle = match kind {
        "wasm" => {
            let cfg = WasmConfig {
                cache_dir: Some(data_dir.join("cache").join("wasm")),
                ..WasmConfig::default()
            };
            WasmExecutor::new(cfg)?.execute(req).await?
        }
        _ => docker(data_dir).await?.execute(req).await?,
    };

    if let Some(dir) = &opts.output_dir {
        write_outputs(dir, &bundle)?;
    }
    if opts.json {
        print_summary(job_id, kind, &bundle)?;
    } else {
        std::io::stdout()
            .write_all(&bundle.stdout)
            .context("writing stdout")?;
        std::io::stderr()
            .write_all(&bundle.stderr)
            .context("writing stderr")?;
    }
    Ok(bundle.exit_code)
}

async fn docker(data_dir: &Path) -> Result<DockerExecutor> {
    let work_dir = data_dir.join("work");
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    Ok(DockerExecutor::connect(DockerConfig {
        work_dir,
        ..DockerConfig::default()
    })
    .await?)
}

/// Writes declared outputs under `dir`. Paths were validated as relative
/// without `..`, so they stay inside `dir`.
fn write_outputs(dir: &Path, bundle: &ResultBundle) -> Result<()> {
    for (path, data) in &bundle.outputs {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&target, data)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    Ok(())
}

fn print_summary(job_id: ContentId, executor: &'static str, b: &ResultBundle) -> Result<()> {
    let summary = Summary {
        job_id: job_id.to_hex(),
        executor,
        exit_code: b.exit_code,
        result_hash: b.result_hash().to_hex(),
        duration_ms: b.duration_ms,
        stdout_bytes: b.stdout.len(),
        stderr_bytes: b.stderr.len(),
        stdout: std::str::from_utf8(&b.stdout).ok(),
        outputs: b
            .outputs
            .iter()
            .map(|(p, d)| {
                (
                    p.as_str(),
                    OutputSummary {
                        bytes: d.len(),
                        sha256: ContentId::of(d).to_hex(),
                    },
                )
            })
            .collect(),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &summary)?;
    writeln!(out)?;
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
