//! `agora`: the command line of the agora peer-to-peer compute network.
//!
//! Glue only: argument parsing, output formatting and exit codes. The work
//! happens in `agora-node`.

use std::path::PathBuf;
use std::process::ExitCode;

use agora_node::config::LogFormat;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod array;
mod exec;
mod image;
mod job;
mod jobopts;
mod node;
mod output;
mod reputation;
mod run;
mod units;

/// agora runs your program on independent machines of a peer-to-peer
/// network and hands back the output only when k of n of them signed the
/// same result.
///
/// Jobs run in a Wasm (wasmtime) or Docker sandbox. `agora exec` runs one
/// locally with the same sandbox and limits an executor would use.
#[derive(Debug, Parser)]
#[command(name = "agora", version, about, long_about)]
struct Cli {
    /// The node's data directory (keys, store, module cache).
    #[arg(long, global = true, env = "AGORA_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format on stderr (default text; `agora daemon` also reads it
    /// from config.toml).
    #[arg(long, global = true, value_name = "text|json")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a job locally in a sandbox, without the network.
    ///
    /// Prints the program's stdout and stderr, writes declared outputs to
    /// --output-dir and exits with the program's exit code. agora's own
    /// errors (missing file, image absent, a limit exceeded) exit with 125.
    #[command(subcommand)]
    Exec(exec::ExecCommand),
    /// Run a job on the network: n executors run it and the result is
    /// accepted when k of them sign the same one.
    ///
    /// Needs a running daemon (`agora daemon`). Shows progress on stderr,
    /// then prints the verified stdout, writes outputs to --output-dir and
    /// exits with the job's exit code. A failed or cancelled job, or
    /// agora's own error, exits with 125; Ctrl-C stops waiting (the job
    /// goes on) and exits with 130.
    ///
    /// With --each, --range or --lines it runs one job per item (a job
    /// array), each verified on its own, optionally followed by a --reduce
    /// job over their results.
    #[command(subcommand)]
    Run(run::RunCommand),
    /// Inspect, fetch, cancel or retry the jobs and job arrays submitted
    /// through the daemon.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Run a node: join the network, advertise this machine's sandboxes
    /// and serve the control API, until SIGINT or SIGTERM.
    ///
    /// Settings come from DATA_DIR/config.toml, overridden by these flags.
    Daemon(node::DaemonArgs),
    /// Share Docker images with the network: push a local image so
    /// executors without it can fetch it, list the images served here.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Show the running daemon's identity, addresses and executors.
    Id(node::QueryArgs),
    /// List the peers the running daemon is connected to.
    Peers(node::QueryArgs),
    /// List the nodes the running daemon has heard from, online first.
    Nodes(node::QueryArgs),
    /// Show the daemon's opinion of its peers: score, agreements,
    /// disagreements, misses, exclusion and where the evidence came from.
    Reputation(reputation::ReputationArgs),
}

/// Exit code for agora's own failures, as `docker run` uses it.
const EXIT_AGORA_ERROR: u8 = 125;

fn data_dir(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = flag {
        return Ok(d);
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".agora"))
}

/// Sets up logging for a client command and resolves the data directory.
fn client_setup(dir: Option<PathBuf>, log_format: Option<LogFormat>) -> Result<PathBuf> {
    agora_node::logging::init(log_format.unwrap_or_default(), "warn");
    data_dir(dir)
}

async fn daemon(
    args: node::DaemonArgs,
    dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
) -> Result<i32> {
    let config = node::daemon_config(&args, dir, log_format)?;
    // The format may come from config.toml, so logging starts only once
    // the config is read; operators want the start-up lines, hence info.
    agora_node::logging::init(config.log_format, "info");
    node::run_daemon(config).await
}

async fn run(cli: Cli) -> Result<i32> {
    let (dir, log) = (cli.data_dir, cli.log_format);
    match cli.command {
        Command::Exec(cmd) => exec::run(cmd, &client_setup(dir, log)?).await,
        Command::Run(cmd) => run::run(cmd, &client_setup(dir, log)?).await,
        Command::Job(cmd) => job::run(cmd, &client_setup(dir, log)?).await,
        Command::Daemon(args) => daemon(args, dir, log).await,
        Command::Image(cmd) => image::run(cmd, &client_setup(dir, log)?).await,
        Command::Id(args) => node::id(args, &client_setup(dir, log)?).await,
        Command::Peers(args) => node::peers(args, &client_setup(dir, log)?).await,
        Command::Nodes(args) => node::nodes(args, &client_setup(dir, log)?).await,
        Command::Reputation(args) => reputation::run(args, &client_setup(dir, log)?).await,
    }
}

/// A job's exit code as a process exit code. Wasm programs may exit with
/// any i32; taking the low byte would turn 256 into success, so codes
/// outside 0..=255 become 1.
fn process_exit_code(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(1)
}

/// Exit code when stdout's reader went away (128 + SIGPIPE, as a shell
/// reports a filter killed by the signal).
const EXIT_BROKEN_PIPE: u8 = 141;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(code) => ExitCode::from(process_exit_code(code)),
        // The reader went away (`agora job status X | head`): not an error
        // worth a message, like any Unix filter.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::from(EXIT_BROKEN_PIPE)
        }
        Err(e) => {
            eprintln!("agora: {e:#}");
            ExitCode::from(EXIT_AGORA_ERROR)
        }
    }
}
