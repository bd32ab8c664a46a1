//! The job lifecycle survives lost nodes: an executor stopped mid-job is
//! replaced and the job still verified; a submitter stopped mid-job and
//! restarted finishes the job with its record intact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jobs_harness;

use agora_node::api::types::JobState;
use jobs_harness::{sleeper, wait_final, wait_for, wasm_job, Net, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_lost_mid_job_is_replaced() {
    let mut net = Net::start(5, false).await;
    let module = sleeper(3);
    let sub = net.node(4);
    let id = sub.jobs().blobs().put(&module).unwrap().to_hex();
    // 2-of-2: losing either executor forces a re-dispatch.
    let rec = sub.jobs().submit(wasm_job(&id, 2, 2)).await.unwrap();
    let running = wait_for(DEADLINE, "two executors assigned", || {
        let jobs = sub.jobs().clone();
        let id = rec.id.clone();
        async move {
            let r = jobs.get(&id).ok()?;
            (r.executors.len() == 2).then_some(r)
        }
    })
    .await;
    let victim = running.executors[0].peer_id.clone();
    let idx = (0..4)
        .find(|i| net.node(*i).peer_id().to_base58() == victim)
        .expect("the executor is one of nodes 0-3");
    net.stop(idx).await;

    let sub = net.node(4);
    let done = wait_final(sub, &rec.id, DEADLINE).await;
    assert_eq!(done.state, JobState::Verified, "{done:#?}");
    let lost = done.executors.iter().find(|e| e.peer_id == victim).unwrap();
    assert!(
        lost.state == "crashed" || lost.state == "missed",
        "the stopped executor is recorded as lost: {lost:#?}"
    );
    assert!(done.executors.len() >= 3, "a replacement was assigned");
    assert_eq!(
        done.executors
            .iter()
            .filter(|e| e.agrees == Some(true))
            .count(),
        2
    );
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_submitter_finishes_its_job() {
    let mut net = Net::start(4, false).await;
    let module = sleeper(3);
    let sub = net.node(3);
    let listen = sub.listen_addrs(DEADLINE).await[0].clone();
    let id = sub.jobs().blobs().put(&module).unwrap().to_hex();
    let rec = sub.jobs().submit(wasm_job(&id, 3, 2)).await.unwrap();
    wait_for(DEADLINE, "the job to run", || {
        let jobs = sub.jobs().clone();
        let id = rec.id.clone();
        async move {
            let r = jobs.get(&id).ok()?;
            (r.state == JobState::Running && r.executors.len() == 3).then_some(())
        }
    })
    .await;
    let before = sub.jobs().get(&rec.id).unwrap();
    net.stop(3).await;
    net.restart(3, listen).await;

    let sub = net.node(3);
    let done = wait_final(sub, &rec.id, DEADLINE).await;
    assert_eq!(done.state, JobState::Verified, "{done:#?}");
    assert_eq!(done.submitted_at_ms, before.submitted_at_ms);
    assert_eq!(
        done.executors[..3]
            .iter()
            .map(|e| &e.peer_id)
            .collect::<Vec<_>>(),
        before
            .executors
            .iter()
            .map(|e| &e.peer_id)
            .collect::<Vec<_>>(),
        "the assignments made before the restart are kept"
    );
    assert!(done.events.iter().any(|e| e.kind == "resumed"));
    let result = sub.jobs().result(&rec.id).unwrap();
    let stdout = sub
        .jobs()
        .blobs()
        .get(&result.stdout.id.parse().unwrap())
        .unwrap();
    assert_eq!(stdout, b"slept\n");
    net.shutdown().await;
}
