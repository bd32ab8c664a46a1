//! A job's life where it cannot run as asked, or where a user or an
//! executor interrupts it: found at submission, refused or failed at once
//! with the reason; a restarted executor's answer still counts; a cancel
//! stops the executors' sandboxes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jobs_harness;

use agora_node::api::types::JobState;
use agora_node::jobs::JobsError;
use std::time::Duration;

use jobs_harness::{fixture, sleeper, wait_final, wait_for, wasm_job, Net, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_too_large_for_the_network_fails_at_once_saying_why() {
    // The submitter and two others: 3 executors cannot agree, 2 can.
    let net = Net::start(3, false).await;
    let sub = net.node(0);
    let module = sub.jobs().blobs().put(&fixture("hello")).unwrap().to_hex();

    let id = sub.jobs().submit(wasm_job(&module, 3, 3)).await.unwrap().id;
    let job = wait_final(sub, &id, DEADLINE).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let reason = job.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("too few capable nodes: 3 executors must agree, and 2 of the 2"),
        "{reason}"
    );
    assert!(job.executors.is_empty(), "{job:#?}");
    assert_eq!(job.bids, 0, "it was offered: {job:#?}");

    let id = sub.jobs().submit(wasm_job(&module, 3, 2)).await.unwrap().id;
    let job = wait_final(sub, &id, DEADLINE).await;
    assert_eq!(job.state, JobState::Verified, "{job:#?}");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_wasm_module_is_refused_at_submission() {
    let net = Net::start(3, false).await;
    let sub = net.node(0);
    let text = sub.jobs().blobs().put(b"echo hello\n").unwrap().to_hex();
    let err = sub
        .jobs()
        .submit(wasm_job(&text, 3, 2))
        .await
        .expect_err("a text file was accepted as a module");
    let msg = err.to_string();
    assert!(
        matches!(err, JobsError::BadRequest(_)) && msg.contains("invalid wasm module"),
        "{msg}"
    );
    assert!(
        sub.jobs().list(None).unwrap().is_empty(),
        "a job was created"
    );
    net.shutdown().await;
}

/// Waits until job `id` on node `sub` has `n` executors assigned and
/// returns their PeerIds.
async fn assigned(net: &Net, sub: usize, id: &str, n: usize) -> Vec<String> {
    let jobs = net.node(sub).jobs().clone();
    wait_for(DEADLINE, "the executors assigned", || {
        let jobs = jobs.clone();
        let id = id.to_owned();
        async move {
            let r = jobs.get(&id).ok()?;
            (r.state == JobState::Running && r.executors.len() == n)
                .then(|| r.executors.iter().map(|e| e.peer_id.clone()).collect())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_restarted_mid_job_resumes_and_its_answer_counts() {
    // 3-of-3 on exactly three executors: nobody can replace the one that
    // restarts, so the job verifies only if its answer is taken back.
    let mut net = Net::start(4, false).await;
    let module = net
        .node(3)
        .jobs()
        .blobs()
        .put(&sleeper(4))
        .unwrap()
        .to_hex();
    let id = net
        .node(3)
        .jobs()
        .submit(wasm_job(&module, 3, 3))
        .await
        .unwrap()
        .id;
    let peers = assigned(&net, 3, &id, 3).await;
    let victim = (0..3)
        .find(|i| net.node(*i).peer_id().to_base58() == peers[0])
        .expect("an executor is one of nodes 0-2");
    let listen = net.node(victim).listen_addrs(DEADLINE).await[0].clone();
    net.stop(victim).await;
    // Long enough for the submitter to find it gone and try to replace it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    net.restart(victim, listen).await;

    let job = wait_final(net.node(3), &id, DEADLINE).await;
    assert_eq!(job.state, JobState::Verified, "{job:#?}");
    let back = job
        .executors
        .iter()
        .find(|e| e.peer_id == peers[0])
        .unwrap();
    assert_eq!(back.state, "answered", "{job:#?}");
    assert_eq!(back.agrees, Some(true), "{job:#?}");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_the_executors_and_stops_their_sandboxes() {
    let net = Net::start(4, false).await;
    let sub = net.node(3);
    let module = sub.jobs().blobs().put(&sleeper(60)).unwrap().to_hex();
    let mut job = wasm_job(&module, 3, 2);
    job.timeout_ms = Some(90_000);
    let id = sub.jobs().submit(job).await.unwrap().id;
    assigned(&net, 3, &id, 3).await;
    for i in 0..3 {
        let jobs = net.node(i).jobs().clone();
        wait_for(DEADLINE, "each executor running the job", || {
            let jobs = jobs.clone();
            async move { (jobs.running_jobs() == 1).then_some(()) }
        })
        .await;
    }

    let cancelled = net.node(3).jobs().cancel(&id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    // Far less than the minute the sandboxes would otherwise run.
    for i in 0..3 {
        let jobs = net.node(i).jobs().clone();
        wait_for(
            Duration::from_secs(10),
            "the executor to stop the job",
            || {
                let jobs = jobs.clone();
                async move { (jobs.running_jobs() == 0).then_some(()) }
            },
        )
        .await;
    }
    net.shutdown().await;
}
