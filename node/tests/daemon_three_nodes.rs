//! Three real daemons on loopback, the second and third given only the
//! first's address: each lists the other two as online in /api/v1/nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod daemon_harness;

use std::collections::BTreeSet;
use std::time::Duration;

use agora_node::api::client::ApiClient;
use agora_node::api::types::{NodesInfo, PeersInfo};
use agora_node::daemon;
use daemon_harness::{loopback_config, wait_for, DEADLINE};
use libp2p::multiaddr::Protocol;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_see_each_other_online() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut cfg = loopback_config(dirs[0].path());
    cfg.labels.insert("role".into(), "first".into());
    let first = daemon::start(cfg).await.unwrap();
    let addr = first
        .listen_addrs(DEADLINE)
        .await
        .into_iter()
        .next()
        .expect("first daemon listens")
        .with(Protocol::P2p(first.peer_id()));
    let mut daemons = vec![first];
    for d in &dirs[1..] {
        let mut cfg = loopback_config(d.path());
        cfg.bootstrap = vec![addr.clone()];
        daemons.push(daemon::start(cfg).await.unwrap());
    }
    let ids: Vec<String> = daemons.iter().map(|d| d.peer_id().to_string()).collect();
    for (i, d) in daemons.iter().enumerate() {
        let client = ApiClient::new(d.api_addr(), Some(d.token().to_owned()));
        let want: BTreeSet<String> = ids
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, id)| id.clone())
            .collect();
        let nodes = wait_for(
            DEADLINE,
            &format!("node {i} to see the other two online"),
            || {
                let client = client.clone();
                let want = want.clone();
                async move {
                    let n: NodesInfo = client.get_json("/api/v1/nodes").await.ok()?;
                    let online: BTreeSet<String> = n
                        .nodes
                        .iter()
                        .filter(|r| r.state == "online" && !r.is_self)
                        .map(|r| r.peer_id.clone())
                        .collect();
                    want.is_subset(&online).then_some(n)
                }
            },
        )
        .await;
        let row = |id: &str| nodes.nodes.iter().find(|r| r.peer_id == id).unwrap();
        assert_eq!(
            row(&ids[0]).labels.get("role").map(String::as_str),
            Some("first")
        );
        for id in &want {
            assert!(row(id).cpu_cores >= 1);
            assert!(row(id).executors.contains(&"wasm".to_owned()));
        }
    }
    // The first node is connected to both others.
    let client = ApiClient::new(daemons[0].api_addr(), Some(daemons[0].token().to_owned()));
    let peers: PeersInfo = wait_for(DEADLINE, "two connected peers", || {
        let client = client.clone();
        async move {
            let p: PeersInfo = client.get_json("/api/v1/peers").await.ok()?;
            (p.peers.len() >= 2).then_some(p)
        }
    })
    .await;
    assert!(peers.peers.iter().all(|p| p.addr.is_some()), "{peers:?}");
    for d in daemons {
        tokio::time::timeout(Duration::from_secs(60), d.shutdown())
            .await
            .expect("shutdown finishes")
            .unwrap();
    }
}
