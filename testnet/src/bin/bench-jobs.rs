//! Job benchmark against a running local testnet (`testnet/bench-jobs.sh`
//! starts one): end-to-end latency of a trivial Wasm job verified 2-of-3,
//! and sustained verified jobs per second with many jobs in flight.
//!
//! Usage: `bench-jobs MODULE.wasm LATENCY_JOBS THROUGHPUT_JOBS IN_FLIGHT
//! DATA_DIR...`: each DATA_DIR is a node's (its `api.addr` and `api.token`
//! are read). Latency jobs are submitted one at a time to the first node
//! and followed over the event stream; throughput jobs are spread over
//! every node, `IN_FLIGHT` at a time per node. Prints one JSON object.

// The result is this program's output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_node::api::client::ApiClient;
use agora_node::api::types::{BlobInfo, JobRecord, JobState, SubmitExecutor, SubmitJob};
use anyhow::{bail, Context, Result};
use tokio::sync::Semaphore;

fn client(dir: &Path) -> Result<ApiClient> {
    let addr = std::fs::read_to_string(dir.join("api.addr"))
        .with_context(|| format!("{}: is the node running?", dir.display()))?;
    let token = std::fs::read_to_string(dir.join("api.token"))?;
    Ok(ApiClient::new(
        addr.trim().parse()?,
        Some(token.trim().to_string()),
    ))
}

fn job(module: &str) -> SubmitJob {
    SubmitJob {
        n: Some(3),
        k: Some(2),
        timeout_ms: Some(10_000),
        ..SubmitJob::new(SubmitExecutor::Wasm {
            module: module.into(),
        })
    }
}

/// Submits one job and waits for its final event; returns the record. The
/// daemon ends API connections after a minute, so a stream that ends early
/// is followed again (events repeat; only the final state matters).
async fn run_one(c: &ApiClient, module: &str) -> Result<(JobRecord, Duration)> {
    let start = Instant::now();
    let rec: JobRecord = c.post_json("/api/v1/jobs", &job(module)).await?;
    let path = format!("/api/v1/jobs/{}/events", rec.id);
    let mut last = None;
    for _ in 0..60 {
        let r = c
            .follow_events(&path, |e| {
                let done = e.state.is_final();
                last = Some(e.state);
                !done
            })
            .await;
        if last.is_some_and(JobState::is_final) {
            break;
        }
        if let Err(e) = r {
            eprintln!("event stream of {} broke ({e}); following it again", rec.id);
        }
    }
    let took = start.elapsed();
    if last != Some(JobState::Verified) {
        let r: JobRecord = c.get_json(&format!("/api/v1/jobs/{}", rec.id)).await?;
        bail!("job {} ended {:?}: {:?}", r.id, r.state, r.reason);
    }
    Ok((rec, took))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        bail!("usage: bench-jobs MODULE.wasm LATENCY_JOBS THROUGHPUT_JOBS IN_FLIGHT DATA_DIR...");
    }
    let wasm = std::fs::read(&args[0]).with_context(|| args[0].clone())?;
    let latency_jobs: usize = args[1].parse()?;
    let throughput_jobs: usize = args[2].parse()?;
    let in_flight: usize = args[3].parse()?;
    let clients: Vec<ApiClient> = args[4..]
        .iter()
        .map(|d| client(Path::new(d)))
        .collect::<Result<_>>()?;
    let mut modules = Vec::new();
    for c in &clients {
        let b: BlobInfo = c.post_bytes("/api/v1/blobs", wasm.clone().into()).await?;
        modules.push(b.id);
    }

    // Warm-up: compiled-module caches and connections.
    for _ in 0..5 {
        run_one(&clients[0], &modules[0]).await?;
    }
    let mut lat = Vec::new();
    for _ in 0..latency_jobs {
        let (_, took) = run_one(&clients[0], &modules[0]).await?;
        lat.push(took.as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in clients.iter().enumerate() {
        let sem = Arc::new(Semaphore::new(in_flight));
        let share =
            throughput_jobs / clients.len() + usize::from(i < throughput_jobs % clients.len());
        for _ in 0..share {
            let permit = sem.clone().acquire_owned().await?;
            let (c, m) = (c.clone(), modules[i].clone());
            tasks.spawn(async move {
                let r = run_one(&c, &m).await;
                drop(permit);
                r
            });
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    while let Some(r) = tasks.join_next().await {
        let (rec, _) = r??;
        ids.insert(rec.id);
    }
    let secs = start.elapsed().as_secs_f64();
    if ids.len() != throughput_jobs {
        bail!("{} distinct jobs verified of {throughput_jobs}", ids.len());
    }
    println!(
        "{}",
        serde_json::json!({
            "latency_jobs": latency_jobs,
            "latency_p50_ms": percentile(&lat, 0.50),
            "latency_p99_ms": percentile(&lat, 0.99),
            "latency_min_ms": lat[0],
            "throughput_jobs": throughput_jobs,
            "throughput_seconds": secs,
            "jobs_per_second": throughput_jobs as f64 / secs,
            "in_flight_per_node": in_flight,
            "submitting_nodes": clients.len(),
        })
    );
    Ok(())
}
