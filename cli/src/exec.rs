//! `agora exec`: run one job locally in a sandbox, with no network, and
//! report its result exactly as an executor would attest it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use agora_node::clock::unix_now_ms;
use agora_node::executor::docker::{DockerConfig, DockerExecutor};
use agora_node::executor::wasm::{WasmConfig, WasmExecutor};
use agora_node::executor::{ExecRequest, Executor};
use agora_protocol::{
    validate, ContentId, ExecutorSpec, JobSpec, NodeKey, Replication, Resources, ResultBundle,
};
use anyhow::{Context, Result};
use clap::Subcommand;
use serde::Serialize;

use crate::jobopts::{milli_cpus, read_file, RunOpts};
use crate::output::{check_output_dir, write_output, write_streams};

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

/// Runs `agora exec` and returns the process exit code.
pub async fn run(cmd: ExecCommand, data_dir: &Path) -> Result<i32> {
    let opts = match &cmd {
        ExecCommand::Wasm { opts, .. } | ExecCommand::Docker { opts, .. } => opts,
    };
    if let Some(dir) = &opts.output_dir {
        check_output_dir(dir)?;
    }
    let (executor_spec, opts, args, milli_cpus, module) = match cmd {
        ExecCommand::Wasm { module, opts, args } => {
            let bytes = read_file(&module, "module")?;
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
            let milli_cpus = milli_cpus(cpus)?;
            let docker = docker(data_dir).await?;
            let digest = docker.resolve_image(&image).await?;
            let spec = ExecutorSpec::Docker {
                image,
                digest,
                manifest: None,
            };
            (spec, opts, cmd, milli_cpus, Vec::new())
        }
    };

    let stdin = match &opts.stdin {
        Some(p) => read_file(p, "stdin file")?,
        None => Vec::new(),
    };
    let mut inputs = BTreeMap::new();
    let mut input_ids = BTreeMap::new();
    for (name, file) in opts.input_files()? {
        let bytes = read_file(&file, "input file")?;
        input_ids.insert(name.clone(), ContentId::of(&bytes));
        inputs.insert(name, bytes);
    }
    let env = opts.env_map()?;
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
            timeout_ms: opts.timeout_ms(),
            fuel: opts.fuel,
            max_output_bytes: opts.max_output,
        },
        replication: Replication { n: 1, k: 1 },
        created_at_ms: unix_now_ms(),
        nonce: rand::random(),
        requires: BTreeMap::new(),
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
        for (path, data) in &bundle.outputs {
            write_output(dir, path, data)?;
        }
    }
    if opts.json {
        print_summary(job_id, kind, &bundle)?;
    } else {
        write_streams(&bundle.stdout, &bundle.stderr)?;
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
