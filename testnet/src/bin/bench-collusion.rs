//! Collusion benchmark: eight real daemons in this process on loopback,
//! two of them colluding (`--fault collude=pair`: both return the same
//! wrong result). For 2-of-3 and 3-of-5, with reputation-weighted
//! selection and with selection blind to reputation, a fresh network runs
//! JOBS jobs (a few in flight at a time) and counts how many verified a
//! wrong result.
//!
//! Usage: `bench-collusion MODULE.wasm JOBS`. Prints one JSON object;
//! `testnet/bench-byzantine.sh` writes it to docs/benchmarks.md.

// The result is this program's output.
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::time::{Duration, Instant};

use agora_node::api::types::{JobState, SubmitExecutor, SubmitJob};
use agora_node::config::DaemonConfig;
use agora_node::daemon::{self, Daemon};
use agora_node::executor::wasm::{WasmConfig, WasmExecutor};
use agora_node::executor::{ExecRequest, Executor};
use agora_node::jobs::fault::Fault;
use agora_protocol::{validate, ContentId, ExecutorSpec, JobSpec, Replication, Resources};
use anyhow::{bail, Context, Result};
use libp2p::multiaddr::Protocol;

const NODES: usize = 8;
const COLLUDERS: [usize; 2] = [1, 2];
const SUBMITTER: usize = 7;
const WAVE: usize = 4;

fn config(dir: &Path, i: usize, uniform: bool) -> Result<DaemonConfig> {
    let mut c = DaemonConfig::new(dir.to_owned());
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    c.api = "127.0.0.1:0".parse()?;
    c.docker = false;
    c.advert_interval = Duration::from_millis(500);
    c.testnet = true;
    c.uniform_selection = uniform;
    if COLLUDERS.contains(&i) {
        c.fault = Some(Fault::Collude("pair".into()));
    }
    Ok(c)
}

async fn network(uniform: bool) -> Result<(Vec<tempfile::TempDir>, Vec<Daemon>)> {
    let dirs: Vec<_> = (0..NODES)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let first = daemon::start(config(dirs[0].path(), 0, uniform)?).await?;
    let boot = first
        .listen_addrs(Duration::from_secs(30))
        .await
        .into_iter()
        .next()
        .context("no listen address")?
        .with(Protocol::P2p(first.peer_id()));
    let mut nodes = vec![first];
    for (i, d) in dirs.iter().enumerate().skip(1) {
        let mut c = config(d.path(), i, uniform)?;
        c.bootstrap = vec![boot.clone()];
        nodes.push(daemon::start(c).await?);
    }
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let now = agora_node::clock::unix_now_ms();
        let online = agora_node::network::adverts::lock_book(nodes[SUBMITTER].peer_book())
            .online(now)
            .len();
        if online >= NODES - 1 {
            break;
        }
        if Instant::now() > end {
            bail!("the submitter sees only {online} nodes online");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((dirs, nodes))
}

/// The honest output: the module run here, as `agora exec` runs it.
async fn honest_stdout(module: &[u8]) -> Result<Vec<u8>> {
    let spec = validate(JobSpec {
        executor: ExecutorSpec::Wasm {
            module: ContentId::of(module),
        },
        args: vec![],
        env: Default::default(),
        stdin: None,
        inputs: Default::default(),
        outputs: vec![],
        resources: Resources::default(),
        replication: Replication::default(),
        created_at_ms: 0,
        nonce: 0,
        requires: Default::default(),
    })?;
    let b = WasmExecutor::new(WasmConfig::default())?
        .execute(ExecRequest {
            job_id: ContentId::of(b"truth"),
            spec,
            module: module.to_vec(),
            stdin: vec![],
            inputs: Default::default(),
        })
        .await?;
    Ok(b.stdout.to_vec())
}

/// Runs `jobs` jobs at k-of-n; returns (verified, wrong, failed, executions).
async fn run(module: &[u8], jobs: usize, n: u8, k: u8, uniform: bool) -> Result<[usize; 4]> {
    let truth = honest_stdout(module).await?;
    let (_dirs, nodes) = network(uniform).await?;
    let sub = nodes[SUBMITTER].jobs().clone();
    let m = sub.blobs().put(module)?.to_hex();
    let mut counts = [0usize; 4];
    let mut done = 0;
    while done < jobs {
        let mut ids = Vec::new();
        for _ in 0..WAVE.min(jobs - done) {
            let req = SubmitJob {
                n: Some(n),
                k: Some(k),
                timeout_ms: Some(10_000),
                ..SubmitJob::new(SubmitExecutor::Wasm { module: m.clone() })
            };
            ids.push(sub.submit(req).await?.id);
        }
        for id in ids {
            let rec = loop {
                let r = sub.get(&id)?;
                if r.state.is_final() {
                    break r;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            counts[3] += rec.executors.len();
            if rec.state == JobState::Verified {
                counts[0] += 1;
                let res = sub.result(&id)?;
                if sub.blobs().get(&res.stdout.id.parse()?)? != truth {
                    counts[1] += 1;
                }
            } else {
                counts[2] += 1;
            }
            done += 1;
        }
    }
    for d in nodes {
        d.shutdown().await?;
    }
    Ok(counts)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 {
        bail!("usage: bench-collusion MODULE.wasm JOBS");
    }
    let module = std::fs::read(&args[0]).with_context(|| args[0].clone())?;
    let jobs: usize = args[1].parse()?;
    let mut rows = Vec::new();
    for (n, k) in [(3u8, 2u8), (5, 3)] {
        for uniform in [false, true] {
            let [verified, wrong, failed, executions] = run(&module, jobs, n, k, uniform).await?;
            rows.push(serde_json::json!({
                "n": n, "k": k,
                "selection": if uniform { "uniform" } else { "reputation" },
                "jobs": jobs, "verified": verified, "wrong": wrong, "failed": failed,
                "executions": executions,
            }));
        }
    }
    println!(
        "{}",
        serde_json::json!({ "nodes": NODES, "colluders": COLLUDERS.len(), "rows": rows })
    );
    Ok(())
}
