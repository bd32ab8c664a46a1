//! A node that restarts with the same key keeps its PeerId and is back in
//! the others' peer books: its new adverts are not taken for replays,
//! because the advert seq is seeded from the clock.

// In tests a failed unwrap is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod network_harness;

use std::time::Duration;

use agora_protocol::NodeKey;
use network_harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_peer_id_and_rejoins_the_books() {
    let boot_book = new_book();
    let mut bcfg = test_config(NodeKey::generate(), vec![], &boot_book);
    bcfg.listen_addrs_are_external = true;
    let mut boot = start(bcfg, boot_book, None);
    let boot_addr = boot.dial_addr().await;

    let every = Some(Duration::from_millis(300));
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let book = new_book();
        let cfg = test_config(NodeKey::generate(), vec![boot_addr.clone()], &book);
        nodes.push(start(cfg, book, every));
    }
    let ids: Vec<_> = nodes.iter().map(|n| n.peer_id()).collect();
    wait_until(DEADLINE, "all three nodes in every book", || {
        let ok = nodes
            .iter()
            .all(|n| ids.iter().all(|id| n.online().contains(id)));
        async move { ok }
    })
    .await;

    // Stop node 2 and note the last seq the others hold for it.
    let key = nodes[2].key.clone();
    nodes[2].stop().await;
    let last_seen: Vec<u64> = nodes[..2]
        .iter()
        .map(|n| n.seq_of(&key.peer_id()).unwrap())
        .collect();

    // Same key, fresh everything else.
    let book = new_book();
    let cfg = test_config(key.clone(), vec![boot_addr.clone()], &book);
    nodes[2] = start(cfg, book, every);
    assert_eq!(
        nodes[2].handle.peer_id(),
        key.peer_id(),
        "the swarm's PeerId is the NodeKey's"
    );
    wait_until(
        DEADLINE,
        "the restarted node's new adverts in the others' books",
        || {
            let ok = nodes[..2]
                .iter()
                .zip(&last_seen)
                .all(|(n, last)| n.seq_of(&key.peer_id()).is_some_and(|s| s > *last));
            async move { ok }
        },
    )
    .await;
    wait_until(DEADLINE, "the restarted node to relearn the others", || {
        let ok = ids.iter().all(|id| nodes[2].online().contains(id));
        async move { ok }
    })
    .await;
    for n in &nodes[..2] {
        assert_eq!(
            n.handle.metrics().rejected(agora_protocol::TOPIC_ADVERTS),
            0
        );
    }

    for n in &mut nodes {
        n.stop().await;
    }
    boot.stop().await;
}
