//! Real transports and request-response: nodes talk over TCP and QUIC on
//! 127.0.0.1; Ping is answered by the network task, GetAdvert by the
//! advert loop with a verifiable signed advert; a peer over its request
//! rate is refused and counted.

// In tests a failed unwrap is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod network_harness;

use std::time::Duration;

use agora_node::network::ratelimit::RateLimit;
use agora_node::network::{NetworkError, TransportKind};
use agora_protocol::rpc::{Request, Response, RpcError};
use agora_protocol::NodeKey;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use network_harness::*;

fn tcp_config(
    book: &agora_node::network::adverts::SharedPeerBook,
) -> agora_node::network::NetworkConfig {
    let mut cfg = test_config(NodeKey::generate(), vec![], book);
    cfg.transport = TransportKind::Tcp;
    cfg.listen = vec![
        "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
    ];
    cfg
}

/// The server's listen address using the given transport protocol name.
async fn addr_with(node: &TestNode, quic: bool) -> Multiaddr {
    let h = node.handle.clone();
    let addr = wait_for(DEADLINE, "tcp and quic listen addresses", || {
        let h = h.clone();
        async move {
            h.listen_addrs()
                .await
                .ok()?
                .into_iter()
                .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)) == quic)
        }
    })
    .await;
    addr.with(Protocol::P2p(node.peer_id()))
}

async fn wait_connected(node: &TestNode, peer: agora_protocol::PeerId) {
    let h = node.handle.clone();
    wait_until(DEADLINE, "a connection", || {
        let h = h.clone();
        async move {
            h.connected_peers()
                .await
                .unwrap_or_default()
                .contains(&peer)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_get_advert_over_tcp_and_quic() {
    let server_book = new_book();
    let mut server = start(
        tcp_config(&server_book),
        server_book,
        Some(Duration::from_millis(200)),
    );
    let tcp_addr = addr_with(&server, false).await;
    let quic_addr = addr_with(&server, true).await;
    assert!(tcp_addr.iter().any(|p| matches!(p, Protocol::Tcp(_))));

    for (addr, name) in [(tcp_addr, "tcp"), (quic_addr, "quic")] {
        let book = new_book();
        let mut client = start(tcp_config(&book), book, None);
        client.handle.dial(addr).await.unwrap();
        wait_connected(&client, server.peer_id()).await;

        let r = client
            .handle
            .request(server.peer_id(), Request::Ping { nonce: 42 })
            .await
            .unwrap_or_else(|e| panic!("{name}: ping failed: {e}"));
        assert_eq!(r, Response::Pong { nonce: 42 }, "{name}");
        assert!(
            client.handle.metrics().rpc_answered() >= 1,
            "{name}: latency observed"
        );

        // The advert loop answers with its latest advert; wait for one made
        // after the listeners came up.
        let signed = wait_for(DEADLINE, "an advert listing addresses", || async {
            match client
                .handle
                .request(server.peer_id(), Request::GetAdvert)
                .await
            {
                Ok(Response::Advert(Some(s))) => {
                    let listed = s.verify().map(|v| !v.value.listen_addrs.is_empty());
                    listed.unwrap_or(false).then_some(s)
                }
                Ok(Response::Advert(None)) => None,
                other => panic!("{name}: unexpected answer {other:?}"),
            }
        })
        .await;
        let verified = signed.verify().expect("the advert verifies");
        assert_eq!(verified.signer, server.peer_id(), "{name}");
        assert_eq!(verified.value.cpu_cores, template_advert().cpu_cores);
        assert!(
            !verified.value.listen_addrs.is_empty(),
            "{name}: advert lists where the server listens"
        );
        client.stop().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_per_peer_rate_are_refused() {
    let server_book = new_book();
    let mut cfg = tcp_config(&server_book);
    // Three requests, never refilled: the fourth must be refused.
    cfg.request_rate = RateLimit::new(3, 0);
    let mut server = start(cfg, server_book, None);
    let addr = addr_with(&server, false).await;

    let book = new_book();
    let mut client = start(tcp_config(&book), book, None);
    client.handle.dial(addr).await.unwrap();
    wait_connected(&client, server.peer_id()).await;

    for nonce in 0..3 {
        let r = client
            .handle
            .request(server.peer_id(), Request::Ping { nonce })
            .await
            .unwrap();
        assert_eq!(r, Response::Pong { nonce });
    }
    let err = client
        .handle
        .request(server.peer_id(), Request::Ping { nonce: 3 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            NetworkError::Refused {
                error: RpcError::RateLimited,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(server.handle.metrics().rpc_rate_limited_total(), 1);

    // A request to a peer that is not there fails with a typed error.
    let nobody = NodeKey::generate().peer_id();
    let err = client
        .handle
        .request(nobody, Request::Ping { nonce: 9 })
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetworkError::Request { peer, .. } if peer == nobody),
        "{err}"
    );

    client.stop().await;
    server.stop().await;
}
