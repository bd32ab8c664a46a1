//! Jobs that require operator labels (`agora run --require gpu=true`):
//! they run only on nodes advertising them, and fail at once, naming the
//! label, when no online node does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jobs_harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use agora_node::api::types::JobState;
use jobs_harness::{fixture, wait_final, wasm_job, Net, DEADLINE};

fn requiring_gpu(module: &str, n: u8, k: u8) -> agora_node::api::types::SubmitJob {
    let mut job = wasm_job(module, n, k);
    job.requires.insert("gpu".into(), "true".into());
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_no_online_node_offers_fails_at_once_naming_it() {
    let net = Net::start_with(3, false, |i, c| {
        c.labels.insert("region".into(), "eu".into());
        if i == 1 {
            c.labels.insert("gpu".into(), "false".into());
        }
    })
    .await;
    let sub = net.node(0);
    let module = sub.jobs().blobs().put(&fixture("hello")).unwrap().to_hex();

    let started = Instant::now();
    let id = sub
        .jobs()
        .submit(requiring_gpu(&module, 2, 2))
        .await
        .unwrap()
        .id;
    let job = wait_final(sub, &id, DEADLINE).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let reason = job.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("label gpu=true"), "{reason}");
    assert!(reason.contains("gpu=false (1 node)"), "{reason}");
    assert!(job.executors.is_empty(), "{job:#?}");
    // The job's timeout is 30 s and the bid window at most 2 s: failing
    // before either means the preflight, not a wait, decided.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_requiring_a_label_runs_only_on_nodes_offering_it() {
    const GPU: [usize; 2] = [2, 4];
    let net = Net::start_with(5, false, |i, c| {
        if GPU.contains(&i) {
            c.labels.insert("gpu".into(), "true".into());
        } else if i != 0 {
            c.labels.insert("gpu".into(), "false".into());
        }
    })
    .await;
    let sub = net.node(0);
    let module = sub.jobs().blobs().put(&fixture("hello")).unwrap().to_hex();
    let want: BTreeSet<String> = GPU
        .iter()
        .map(|&i| net.node(i).peer_id().to_base58())
        .collect();

    for round in 0..4 {
        let id = sub
            .jobs()
            .submit(requiring_gpu(&module, 2, 2))
            .await
            .unwrap()
            .id;
        let job = wait_final(sub, &id, DEADLINE).await;
        assert_eq!(job.state, JobState::Verified, "round {round}: {job:#?}");
        let ran: BTreeSet<String> = job.executors.iter().map(|e| e.peer_id.clone()).collect();
        assert_eq!(ran, want, "round {round}: {job:#?}");
        assert_eq!(job.executors.len(), 2, "round {round}: {job:#?}");
    }
    net.shutdown().await;
}
