//! Counts the signature checks one verified job costs the whole network:
//! starts in-process daemons (one process, so the protocol's
//! process-wide check counter sums every node), runs trivial Wasm jobs
//! 2-of-3 one after another, and prints the checks per job as JSON.
//!
//! Adverts are slowed to one an hour after start-up so their checks do
//! not mix in. Usage: `bench-checks MODULE.wasm JOBS [NODES]`
//! (`testnet/bench-checks.sh` builds the fixture and runs it).

// The result is this program's output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_node::api::types::{SubmitExecutor, SubmitJob};
use agora_node::config::DaemonConfig;
use agora_node::daemon::{self, Daemon};
use agora_node::network::adverts::lock_book;
use anyhow::{bail, Context, Result};
use libp2p::multiaddr::Protocol;

/// Longest wait for the network to form or a job to end.
const WAIT: Duration = Duration::from_secs(120);

fn config(dir: &Path) -> Result<DaemonConfig> {
    let mut c = DaemonConfig::new(dir.to_owned());
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    c.api = "127.0.0.1:0".parse()?;
    c.docker = false;
    c.advert_interval = Duration::from_secs(3600);
    Ok(c)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn wait_online(nodes: &[Daemon]) -> Result<()> {
    let started = Instant::now();
    loop {
        let all = nodes
            .iter()
            .all(|d| lock_book(d.peer_book()).online(now_ms()).len() >= nodes.len() - 1);
        if all {
            return Ok(());
        }
        if started.elapsed() > WAIT {
            bail!("the nodes did not all see each other online");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submits one 2-of-3 job to `node` and waits for its final event.
async fn run_job(node: &Daemon, module: &str) -> Result<()> {
    let job = SubmitJob {
        n: Some(3),
        k: Some(2),
        timeout_ms: Some(10_000),
        ..SubmitJob::new(SubmitExecutor::Wasm {
            module: module.into(),
        })
    };
    let id = node.jobs().submit(job).await?.id;
    let (_, live) = node.jobs().events(&id)?;
    if let Some(mut live) = live {
        let wait = async {
            while let Ok(ev) = live.recv().await {
                if ev.state.is_final() {
                    return;
                }
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .context("a job did not end")?;
    }
    let rec = node.jobs().get(&id)?;
    if rec.state.as_str() != "verified" {
        bail!("job {id} ended {}: {:?}", rec.state.as_str(), rec.reason);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [module_path, jobs, rest @ ..] = args.as_slice() else {
        bail!("usage: bench-checks MODULE.wasm JOBS [NODES]");
    };
    let jobs: u64 = jobs.parse().context("JOBS")?;
    let n: usize = rest.first().map_or(Ok(4), |s| s.parse()).context("NODES")?;
    let module = std::fs::read(module_path).with_context(|| module_path.clone())?;

    let dirs: Vec<tempfile::TempDir> = (0..n)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let first = daemon::start(config(dirs[0].path())?).await?;
    let boot = first
        .listen_addrs(WAIT)
        .await
        .into_iter()
        .next()
        .context("node 0 listens")?
        .with(Protocol::P2p(first.peer_id()));
    let mut nodes = vec![first];
    for d in &dirs[1..] {
        let mut c = config(d.path())?;
        c.bootstrap = vec![boot.clone()];
        nodes.push(daemon::start(c).await?);
    }
    wait_online(&nodes).await?;
    let id = nodes[0].jobs().blobs().put(&module)?.to_hex();
    // One job first: blobs reach the executors' stores, connections settle.
    run_job(&nodes[0], &id).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = agora_protocol::sign::verifications();
    let started = Instant::now();
    for _ in 0..jobs {
        run_job(&nodes[0], &id).await?;
    }
    let took = started.elapsed();
    let checks = agora_protocol::sign::verifications() - before;
    println!(
        "{{\"nodes\":{n},\"jobs\":{jobs},\"replication\":\"2-of-3\",\"signature_checks\":{checks},\"checks_per_job\":{:.1},\"seconds\":{:.1}}}",
        checks as f64 / jobs as f64,
        took.as_secs_f64()
    );
    for d in nodes {
        d.shutdown().await?;
    }
    Ok(())
}
