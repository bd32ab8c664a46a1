//! A daemon restarted on the same data directory keeps its PeerId and
//! token, writes its API address, and refuses a corrupt key file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod daemon_harness;

use agora_node::api::client::{ApiClient, ADDR_FILE};
use agora_node::api::types::IdInfo;
use agora_node::daemon::{self, DaemonError};
use daemon_harness::loopback_config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_the_same_data_dir_keeps_the_peer_id() {
    let dir = tempfile::tempdir().unwrap();
    let first = daemon::start(loopback_config(dir.path())).await.unwrap();
    let id1 = first.peer_id();
    let token1 = first.token().to_owned();
    let addr_file = std::fs::read_to_string(dir.path().join(ADDR_FILE)).unwrap();
    assert_eq!(addr_file.trim(), first.api_addr().to_string());
    let info: IdInfo = ApiClient::new(first.api_addr(), Some(token1.clone()))
        .get_json("/api/v1/id")
        .await
        .unwrap();
    assert_eq!(info.peer_id, id1.to_string());
    first.shutdown().await.unwrap();
    assert!(
        !dir.path().join(ADDR_FILE).exists(),
        "api.addr is removed on clean shutdown"
    );

    let second = daemon::start(loopback_config(dir.path())).await.unwrap();
    assert_eq!(second.peer_id(), id1);
    assert_eq!(second.token(), token1);
    let info: IdInfo = ApiClient::new(second.api_addr(), Some(token1))
        .get_json("/api/v1/id")
        .await
        .unwrap();
    assert_eq!(info.peer_id, id1.to_string());
    assert_eq!(info.executors[0].kind, "wasm");
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_identity_file_stops_the_start_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("identity.key");
    std::fs::write(&key, [1u8; 31]).unwrap();
    let err = daemon::start(loopback_config(dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(err, DaemonError::Identity(_)), "{err}");
    assert!(err.to_string().contains("identity.key"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), [1u8; 31]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = daemon::start(loopback_config(dir.path())).await.unwrap();
    let err = daemon::start(loopback_config(dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(err, DaemonError::Store { .. }), "{err}");
    first.shutdown().await.unwrap();
}
