//! A node with no listen address of its own takes part through a relay:
//! it reserves a slot on the bootstrap's relay, advertises the relayed
//! address, and another node reaches it over that circuit.

// In tests a failed unwrap is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod network_harness;

use std::time::Duration;

use agora_node::network::{KadMode, NetworkEvent};
use agora_protocol::rpc::{Request, Response};
use agora_protocol::NodeKey;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use network_harness::*;

fn is_circuit(a: &Multiaddr) -> bool {
    a.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_listen_address_is_reached_through_the_relay() {
    let relay_book = new_book();
    let mut rcfg = test_config(NodeKey::generate(), vec![], &relay_book);
    rcfg.relay_server = true;
    rcfg.listen_addrs_are_external = true;
    let mut relay = start(rcfg, relay_book, None);
    let relay_addr = relay.dial_addr().await;

    // Hidden: dials out only. Neither node runs discovery, so the only
    // way between them is the relay.
    let quiet = |cfg: &mut agora_node::network::NetworkConfig| {
        cfg.kad_mode = KadMode::Client;
        cfg.discovery_interval = Duration::from_secs(3600);
        cfg.min_peers = 0;
    };
    let hidden_book = new_book();
    let mut hcfg = test_config(NodeKey::generate(), vec![relay_addr.clone()], &hidden_book);
    hcfg.listen = vec![];
    quiet(&mut hcfg);
    let mut hidden = start(hcfg, hidden_book, Some(Duration::from_millis(300)));
    let hidden_id = hidden.peer_id();

    let seeker_book = new_book();
    let mut scfg = test_config(NodeKey::generate(), vec![relay_addr.clone()], &seeker_book);
    quiet(&mut scfg);
    let mut seeker = start(scfg, seeker_book.clone(), None);
    let mut seeker_events = seeker.handle.subscribe();

    // The hidden node listens through the relay...
    let h = hidden.handle.clone();
    let circuit = wait_for(DEADLINE, "a relayed listen address", || {
        let h = h.clone();
        async move { h.listen_addrs().await.ok()?.into_iter().find(is_circuit) }
    })
    .await;
    assert!(circuit.to_string().contains(&relay.peer_id().to_string()));

    // ...and says so in its adverts, which reach the seeker via the relay.
    let advertised: Multiaddr = wait_for(DEADLINE, "the hidden node's relayed advert", || {
        let addr = agora_node::network::adverts::lock_book(&seeker_book)
            .get(&hidden_id)
            .and_then(|r| r.advert.listen_addrs.iter().find_map(|a| a.parse().ok()))
            .filter(is_circuit);
        async move { addr }
    })
    .await;
    assert!(
        !seeker
            .handle
            .connected_peers()
            .await
            .unwrap()
            .contains(&hidden_id),
        "no direct connection before the seeker dials the circuit"
    );

    // The seeker dials the advertised circuit and talks to the hidden node.
    let target = match advertised.iter().last() {
        Some(Protocol::P2p(p)) => {
            assert_eq!(p, hidden_id);
            advertised
        }
        _ => advertised.with(Protocol::P2p(hidden_id)),
    };
    seeker.handle.dial(target).await.unwrap();
    let via = wait_for(DEADLINE, "a connection to the hidden node", || {
        let mut got = None;
        while let Ok(ev) = seeker_events.try_recv() {
            if let NetworkEvent::PeerConnected { peer, addr } = ev {
                if peer == hidden_id {
                    got = Some(addr);
                }
            }
        }
        async move { got }
    })
    .await;
    assert!(is_circuit(&via), "first connection is relayed, got {via}");
    let r = seeker
        .handle
        .request(hidden_id, Request::Ping { nonce: 7 })
        .await
        .unwrap();
    assert_eq!(r, Response::Pong { nonce: 7 });

    seeker.stop().await;
    hidden.stop().await;
    relay.stop().await;
}
