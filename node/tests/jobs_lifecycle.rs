//! A job's life where it cannot run as asked: found at submission, refused
//! or failed at once with the reason, nothing assigned.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jobs_harness;

use agora_node::api::types::JobState;
use agora_node::jobs::JobsError;
use jobs_harness::{fixture, wait_final, wasm_job, Net, DEADLINE};

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
