//! Shared helpers of the daemon and API tests: a daemon config on
//! loopback ports, and polling with a deadline.

#![allow(dead_code)] // each test file uses a different part
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use agora_node::config::DaemonConfig;

/// Generous: the test box has 2 busy cores.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// A daemon on 127.0.0.1 with OS-chosen ports, no Docker (the Docker path
/// is exercised by the CLI test), and quick adverts.
pub fn loopback_config(data_dir: &Path) -> DaemonConfig {
    let mut c = DaemonConfig::new(data_dir.to_owned());
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.api = "127.0.0.1:0".parse().unwrap();
    c.docker = false;
    c.advert_interval = Duration::from_millis(500);
    c
}

/// Polls `f` every 100 ms until it yields a value, panicking after
/// `deadline` with `what`.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
