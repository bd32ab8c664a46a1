//! Disputed jobs on a small network of real daemons. A result must lead
//! every other answer by k: a colluding pair that fills two places of a
//! 2-of-3 job does not win by answering first, and a dispute that no node
//! is left to settle fails at once, saying why, rather than waiting for the
//! job's deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jobs_harness;

use std::collections::BTreeSet;

use agora_node::api::types::JobState;
use agora_node::jobs::fault::Fault;
use jobs_harness::{fixture, wait_final, wasm_job, Net, DEADLINE};

const SUBMITTER: usize = 0;
const PAIR: [usize; 2] = [3, 4];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_colluding_pair_never_wins_and_an_unsettled_dispute_fails_saying_why() {
    // Four executors, two of them colluding: every job draws at least one
    // of the pair and half draw both. Whoever answers first, a dispute
    // draws the fourth executor, and two against two leads by nothing.
    let net = Net::start_with(5, false, |i, cfg| {
        if PAIR.contains(&i) {
            cfg.testnet = true;
            cfg.fault = Some(Fault::Collude("pair".into()));
        }
    })
    .await;
    let sub = net.node(SUBMITTER);
    let pair: BTreeSet<String> = PAIR
        .iter()
        .map(|i| net.node(*i).peer_id().to_base58())
        .collect();
    let module = sub.jobs().blobs().put(&fixture("hello")).unwrap().to_hex();
    for n in 0..6 {
        let id = sub.jobs().submit(wasm_job(&module, 3, 2)).await.unwrap().id;
        let job = wait_final(sub, &id, DEADLINE).await;
        assert_eq!(job.state, JobState::Failed, "job {n}: {job:#?}");
        let reason = job.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains("the answers disagree") && reason.contains("lead the others by 2"),
            "job {n}: {reason}"
        );
        assert_eq!(job.result_hash, None);
        // All four answered: the pair's two lies against two truths.
        let answered: Vec<_> = job
            .executors
            .iter()
            .filter(|e| e.state == "answered")
            .collect();
        assert_eq!(answered.len(), 4, "job {n}: {job:#?}");
        let lies = answered
            .iter()
            .filter(|e| pair.contains(&e.peer_id))
            .count();
        assert_eq!(lies, 2, "job {n}: {job:#?}");
    }
    net.shutdown().await;
}
