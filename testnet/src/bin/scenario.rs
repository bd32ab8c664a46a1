//! `agora-scenario`: runs a scenario file (testnet/scenarios/*.toml; the
//! format is in `agora_testnet::scenario`'s documentation and in
//! docs/chaos.md) on the container host testnet, `testnet/hosts.sh`:
//! starts the network, runs the steps, removes the network, prints a
//! summary on stdout and exits 0 exactly when every check passed (1 when
//! one failed, 2 when the scenario could not run).
//!
//! Needs `testnet/hosts.sh build` done (or `--build`). After an interrupt,
//! remove the network with `testnet/hosts.sh down`.

// The summary is this program's output.
#![allow(clippy::print_stdout)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agora_testnet::scenario::parse::{Action, Program};
use agora_testnet::scenario::{self, Driver, HostsDriver, RunOptions, Scenario};
use anyhow::{bail, Context, Result};
use clap::Parser;

/// Runs a scenario file on the container host testnet (testnet/hosts.sh)
/// and checks what must hold.
#[derive(Parser)]
#[command(name = "agora-scenario")]
struct Args {
    /// The scenario file (e.g. testnet/scenarios/kill-30pct-short.toml).
    file: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Only parse and check the file; start nothing.
    #[arg(long)]
    check: bool,
    /// Run `testnet/hosts.sh build` first.
    #[arg(long)]
    build: bool,
    /// Leave the network up at the end (remove it with `hosts.sh down`).
    #[arg(long)]
    keep: bool,
    /// The repository root; default: the first directory up from here
    /// with testnet/Cargo.toml.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

fn main() -> ExitCode {
    // Progress lines carry the scenario clock (t=...s) themselves.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGORA_SCENARIO_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("agora-scenario: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether every check passed.
fn run(args: &Args) -> Result<bool> {
    let root = match &args.root {
        Some(r) => r.clone(),
        None => find_root()?,
    };
    let name = args.file.display().to_string();
    let src = std::fs::read_to_string(&args.file).with_context(|| format!("reading {name}"))?;
    let sc = scenario::parse(&name, &src)?;
    check_files(&name, &sc, &root)?;
    if args.check {
        println!(
            "{name}: ok: {} nodes, {} steps, {} jobs",
            sc.network.nodes,
            sc.steps.len(),
            sc.job_count()
        );
        return Ok(true);
    }

    let driver = HostsDriver::new(&root, sc.network.engines);
    if args.build {
        driver.build().context("hosts.sh build")?;
    }
    tracing::info!("starting the network: {} nodes", sc.network.nodes);
    if let Err(e) = driver.up(&sc.network) {
        if !args.keep {
            let _ = driver.down();
        }
        bail!("the network did not come up: {e}");
    }
    let outcome = scenario::run(&sc, &driver, &RunOptions::default());
    if args.keep {
        tracing::info!("leaving the network up (--keep): testnet/hosts.sh down removes it");
    } else if let Err(e) = driver.down() {
        tracing::warn!("removing the network: {e}");
    }
    let outcome = outcome?;
    let report = scenario::evaluate(&name, &sc, &outcome);
    print!("{}", report.summary());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.pass)
}

/// The first directory up from the current one that holds the agora-testnet
/// crate.
fn find_root() -> Result<PathBuf> {
    let here = std::env::current_dir()?;
    here.ancestors()
        .find(|d| d.join("testnet/Cargo.toml").is_file())
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "{} is not in the agora repository; pass --root",
                here.display()
            )
        })
}

/// Every Wasm program a submit step names exists.
fn check_files(name: &str, sc: &Scenario, root: &Path) -> Result<()> {
    for step in &sc.steps {
        let Action::Submit(sub) = &step.action else {
            continue;
        };
        for p in &sub.programs {
            if let Program::Wasm { module, .. } = p {
                if !root.join(module).is_file() {
                    bail!(
                        "{name}:{}: no file {} under {} (testnet/fixtures/build.sh builds the fixtures)",
                        step.line,
                        module.display(),
                        root.display()
                    );
                }
            }
        }
    }
    Ok(())
}
