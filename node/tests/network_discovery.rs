//! Discovery from a bootstrap address alone: a bootstrap-like node and ten
//! nodes on the memory transport find each other, mesh with each other
//! (not only with the bootstrap), learn every node from adverts, and keep
//! gossiping after the bootstrap is gone.

// In tests a failed unwrap is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod network_harness;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use agora_protocol::{PeerId, TOPIC_ADVERTS};
use network_harness::*;

const NODES: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_find_each_other_from_the_bootstrap_address_alone() {
    // The bootstrap: DHT server and relay, no adverts of its own.
    let boot_book = new_book();
    let mut boot_cfg = test_config(agora_protocol::NodeKey::generate(), vec![], &boot_book);
    boot_cfg.relay_server = true;
    boot_cfg.listen_addrs_are_external = true;
    let mut boot = start(boot_cfg, boot_book, None);
    let boot_addr = boot.dial_addr().await;
    let boot_id = boot.peer_id();

    let mut nodes = Vec::new();
    for _ in 0..NODES {
        let book = new_book();
        let cfg = test_config(
            agora_protocol::NodeKey::generate(),
            vec![boot_addr.clone()],
            &book,
        );
        nodes.push(start(cfg, book, Some(Duration::from_millis(300))));
    }
    let ids: BTreeSet<PeerId> = nodes.iter().map(|n| n.peer_id()).collect();
    assert_eq!(ids.len(), NODES);

    // Every node's peer book shows all ten nodes (itself included) online.
    wait_until(DEADLINE, "every node to list all ten nodes online", || {
        let ok = nodes
            .iter()
            .all(|n| n.online().into_iter().collect::<BTreeSet<_>>() == ids);
        async move { ok }
    })
    .await;
    for n in &nodes {
        assert!(
            n.seq_of(&boot_id).is_none(),
            "the bootstrap never advertised, so no book may list it"
        );
    }

    // The nodes are connected to each other, not only to the bootstrap.
    for n in &nodes {
        let h = n.handle.clone();
        let me = n.peer_id();
        wait_until(DEADLINE, "a node to connect to other nodes", || {
            let h = h.clone();
            async move {
                let peers = h.connected_peers().await.unwrap_or_default();
                peers.iter().filter(|p| **p != boot_id && **p != me).count() >= 2
            }
        })
        .await;
        let rt = n
            .handle
            .routing_table_size()
            .await
            .expect("network answers");
        assert!(rt >= 2, "routing table holds other nodes, got {rt}");
        // Nodes may list each other online from adverts asked for on
        // connection before any was gossiped; gossip still follows.
        let m = n.handle.metrics();
        wait_until(DEADLINE, "a node to publish and receive adverts", || {
            let ok = m.received(TOPIC_ADVERTS) > 0 && m.published(TOPIC_ADVERTS) > 0;
            async move { ok }
        })
        .await;
        assert_eq!(
            n.handle.metrics().rejected(TOPIC_ADVERTS),
            0,
            "honest adverts only"
        );
    }

    // Stop the bootstrap; the nodes notice it is gone.
    boot.stop().await;
    for n in &nodes {
        let h = n.handle.clone();
        wait_until(DEADLINE, "nodes to drop the stopped bootstrap", || {
            let h = h.clone();
            async move {
                !h.connected_peers()
                    .await
                    .unwrap_or_default()
                    .contains(&boot_id)
            }
        })
        .await;
    }

    // Adverts made after the bootstrap stopped still reach every node.
    let origin = nodes[0].peer_id();
    let seen_before: HashMap<PeerId, u64> = nodes
        .iter()
        .map(|n| (n.peer_id(), n.seq_of(&origin).unwrap_or(0)))
        .collect();
    let origin_seq_now = nodes[0]
        .seq_of(&origin)
        .expect("origin records its own advert");
    wait_until(
        DEADLINE,
        "a post-bootstrap advert to reach every node",
        || {
            let ok = nodes[1..].iter().all(|n| {
                n.seq_of(&origin).unwrap_or(0) > seen_before[&n.peer_id()].max(origin_seq_now)
            });
            async move { ok }
        },
    )
    .await;

    for n in &mut nodes {
        n.stop().await;
    }
}
