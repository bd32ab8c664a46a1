//! The executor's side of a job's end: a broken limit is reported by name
//! (not as a crash), and a cancel from the submitter stops the sandbox at
//! once while a cancel from anyone else changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jobs_harness;

use std::time::Duration;

use agora_node::api::types::JobState;
use agora_node::network::NetworkError;
use agora_protocol::rpc::{Request, Response, RpcError};
use agora_protocol::ContentId;
use jobs_harness::{sleeper, wait_final, wait_for, wasm_job, Net, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_ends_timed_out_naming_the_flag() {
    let net = Net::start(3, false).await;
    net.wait_all_online().await;
    let sub = net.node(0);
    let module = sub.jobs().blobs().put(&sleeper(10)).unwrap().to_hex();
    let mut job = wasm_job(&module, 2, 2);
    job.timeout_ms = Some(1000);

    let id = sub.jobs().submit(job).await.unwrap().id;
    let rec = wait_final(sub, &id, DEADLINE).await;
    assert_eq!(rec.state, JobState::Failed, "{rec:#?}");
    assert!(!rec.executors.is_empty(), "{rec:#?}");
    for e in &rec.executors {
        assert_eq!(e.state, "timed_out", "{rec:#?}");
        let err = e.error.as_deref().unwrap_or_default();
        assert!(err.contains("timed out after 1 s (--timeout 1s)"), "{err}");
    }
    let reason = rec.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("timed out") && reason.contains("--timeout"),
        "{reason}"
    );
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_the_submitter_stops_the_sandbox_and_others_are_refused() {
    let net = Net::start(3, false).await;
    net.wait_all_online().await;
    let sub = net.node(0);
    let module = sub.jobs().blobs().put(&sleeper(60)).unwrap().to_hex();
    let mut job = wasm_job(&module, 2, 2);
    job.timeout_ms = Some(58_000);
    let id = sub.jobs().submit(job).await.unwrap().id;
    let job_id: ContentId = id.parse().unwrap();

    let (one, two) = (net.node(1), net.node(2));
    wait_for(
        Duration::from_secs(60),
        "both executors to run the job",
        move || async move {
            (one.jobs().running_jobs() == 1 && two.jobs().running_jobs() == 1).then_some(())
        },
    )
    .await;

    // Node 2 is not the submitter: its cancel is refused and node 1 runs on.
    let refused = two
        .network()
        .request(
            one.peer_id(),
            Request::Cancel {
                job: job_id,
                attempt: 0,
            },
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(NetworkError::Refused {
                error: RpcError::Declined(_),
                ..
            })
        ),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        one.jobs().running_jobs(),
        1,
        "a stranger's cancel stopped it"
    );

    // The submitter cancels: both sandboxes stop far sooner than the 58 s
    // timeout.
    sub.jobs().cancel(&id).await.unwrap();
    wait_for(
        Duration::from_secs(10),
        "both executors to stop",
        move || async move {
            (one.jobs().running_jobs() == 0 && two.jobs().running_jobs() == 0).then_some(())
        },
    )
    .await;

    // Cancelling again is fine and changes nothing.
    let again = sub
        .network()
        .request(
            one.peer_id(),
            Request::Cancel {
                job: job_id,
                attempt: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(again, Response::Ack);
    let rec = sub.jobs().get(&id).unwrap();
    assert_eq!(rec.state, JobState::Cancelled, "{rec:#?}");
    net.shutdown().await;
}
