//! No node is special: five daemons that found each other through node 0
//! lose it for good, and node 4 restarts on a new port with node 0 as its
//! only bootstrap address (so the others cannot redial it where it was).
//! It dials the peers its persisted peer book remembers, lists them online
//! again, and a job it submits verifies 2-of-3 on them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jobs_harness;

use std::collections::BTreeSet;
use std::time::Instant;

use agora_node::api::types::JobState;
use agora_node::clock::unix_now_ms;
use agora_node::network::adverts::lock_book;
use agora_node::network::peerbook::PeerState;
use jobs_harness::{fixture, wait_final, wait_for, wasm_job, Net, DEADLINE};

const BOOTSTRAP: usize = 0;
const RESTARTED: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_bootstraps_are_gone_rejoins_the_network_it_knew() {
    let mut net = Net::start(5, false).await;
    let others: BTreeSet<_> = (1..RESTARTED).map(|i| net.node(i).peer_id()).collect();
    let boot_id = net.node(BOOTSTRAP).peer_id();
    net.stop(BOOTSTRAP).await;
    net.stop(RESTARTED).await;
    let started = Instant::now();
    // Its configured bootstrap is node 0's address, which is gone.
    net.restart(RESTARTED, "/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await;
    let node = net.node(RESTARTED);
    let book = node.peer_book().clone();
    wait_for(
        DEADLINE,
        "the restarted node to see its old peers online",
        || {
            let online: BTreeSet<_> = lock_book(&book).online(unix_now_ms()).into_iter().collect();
            let others = others.clone();
            async move { others.is_subset(&online).then_some(()) }
        },
    )
    .await;
    eprintln!(
        "rejoined: {} peers online {:?} after the restart",
        others.len(),
        started.elapsed()
    );
    // The bootstrap, silent since, is remembered but not online.
    assert_ne!(
        lock_book(&book).state(&boot_id, unix_now_ms()),
        Some(PeerState::Online)
    );

    let module = node.jobs().blobs().put(&fixture("hello")).unwrap().to_hex();
    let id = node
        .jobs()
        .submit(wasm_job(&module, 3, 2))
        .await
        .unwrap()
        .id;
    let r = wait_final(node, &id, DEADLINE).await;
    assert_eq!(r.state, JobState::Verified, "{r:#?}");
    let ran: BTreeSet<String> = r.executors.iter().map(|e| e.peer_id.clone()).collect();
    let old: BTreeSet<String> = others.iter().map(|p| p.to_base58()).collect();
    assert!(ran.is_subset(&old), "ran on {ran:?}");
    net.shutdown().await;
}
