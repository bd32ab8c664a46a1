//! Shared helpers of the job lifecycle tests: a local network of real
//! daemons on loopback, job submission and waiting for a final state.

#![allow(dead_code)] // each test file uses a different part
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_node::api::types::{JobRecord, SubmitExecutor, SubmitJob};
use agora_node::config::DaemonConfig;
use agora_node::daemon::{self, Daemon};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tempfile::TempDir;

/// Generous: the test box has 2 busy cores.
pub const DEADLINE: Duration = Duration::from_secs(180);

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A WAT fixture of testnet/fixtures/wasm, compiled.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = repo_root()
        .join("testnet/fixtures/wasm")
        .join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A module that sleeps `secs` seconds in one host call, then prints
/// "slept\n": slow enough to kill a node while it runs.
pub fn sleeper(secs: u64) -> Vec<u8> {
    let ns = secs * 1_000_000_000;
    wat::parse_str(format!(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "slept\n")
  (func (export "_start")
    (i64.store (i32.const 256) (i64.const 0))
    (i32.store8 (i32.const 264) (i32.const 0))
    (i32.store (i32.const 272) (i32.const 1))
    (i64.store (i32.const 280) (i64.const {ns}))
    (i64.store (i32.const 288) (i64.const 0))
    (i32.store16 (i32.const 296) (i32.const 0))
    (drop (call $poll (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 768)))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    ))
    .unwrap()
}

/// A daemon config on 127.0.0.1 with OS-chosen ports and quick adverts.
pub fn loopback_config(data_dir: &Path, docker: bool) -> DaemonConfig {
    let mut c = DaemonConfig::new(data_dir.to_owned());
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.api = "127.0.0.1:0".parse().unwrap();
    c.docker = docker;
    c.max_jobs = 4;
    c.advert_interval = Duration::from_millis(500);
    c
}

/// A network of daemons; node 0 is everyone's bootstrap.
pub struct Net {
    /// Data directories (kept for restarts).
    pub dirs: Vec<TempDir>,
    /// The daemons; `None` once stopped.
    pub nodes: Vec<Option<Daemon>>,
    /// Node 0's address with its PeerId.
    pub bootstrap: Multiaddr,
    /// Whether the nodes run Docker.
    pub docker: bool,
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

impl Net {
    /// Starts `n` daemons and waits until each sees every other online.
    pub async fn start(n: usize, docker: bool) -> Self {
        Self::start_with(n, docker, |_, _| {}).await
    }

    /// Like [`Net::start`], with `tweak(i, config)` applied to node `i`.
    pub async fn start_with(
        n: usize,
        docker: bool,
        tweak: impl Fn(usize, &mut DaemonConfig),
    ) -> Self {
        Self::start_with_ids(n, docker, |i, cfg, _| tweak(i, cfg)).await
    }

    /// Like [`Net::start_with`]; the tweak also gets every node's PeerId
    /// (the identities are made before any node starts).
    pub async fn start_with_ids(
        n: usize,
        docker: bool,
        tweak: impl Fn(usize, &mut DaemonConfig, &[PeerId]),
    ) -> Self {
        init_logs();
        let dirs: Vec<TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let ids: Vec<PeerId> = dirs
            .iter()
            .map(|d| {
                agora_node::identity::load_or_create(
                    &d.path().join(agora_node::identity::IDENTITY_FILE),
                )
                .unwrap()
                .peer_id()
            })
            .collect();
        let tweak = |i: usize, cfg: &mut DaemonConfig| tweak(i, cfg, &ids);
        let mut cfg = loopback_config(dirs[0].path(), docker);
        tweak(0, &mut cfg);
        let first = daemon::start(cfg).await.unwrap();
        let bootstrap = first
            .listen_addrs(DEADLINE)
            .await
            .into_iter()
            .next()
            .expect("node 0 listens")
            .with(Protocol::P2p(first.peer_id()));
        let mut nodes = vec![Some(first)];
        for (i, d) in dirs.iter().enumerate().skip(1) {
            let mut cfg = loopback_config(d.path(), docker);
            cfg.bootstrap = vec![bootstrap.clone()];
            tweak(i, &mut cfg);
            nodes.push(Some(daemon::start(cfg).await.unwrap()));
        }
        let net = Self {
            dirs,
            nodes,
            bootstrap,
            docker,
        };
        net.wait_all_online().await;
        net
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Daemon {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Waits until every running node lists every other running node
    /// online in its peer book.
    pub async fn wait_all_online(&self) {
        let ids: BTreeSet<_> = self.nodes.iter().flatten().map(|d| d.peer_id()).collect();
        for d in self.nodes.iter().flatten() {
            let want: BTreeSet<_> = ids.iter().filter(|p| **p != d.peer_id()).copied().collect();
            wait_for(DEADLINE, "every node online in every peer book", || {
                let book = d.peer_book().clone();
                let want = want.clone();
                async move {
                    let now = agora_node::clock::unix_now_ms();
                    let online: BTreeSet<_> = agora_node::network::adverts::lock_book(&book)
                        .online(now)
                        .into_iter()
                        .collect();
                    want.is_subset(&online).then_some(())
                }
            })
            .await;
        }
    }

    /// Stops node `i` cleanly (its tasks end; peers see it go).
    pub async fn stop(&mut self, i: usize) {
        let d = self.nodes[i].take().expect("node is running");
        tokio::time::timeout(Duration::from_secs(60), d.shutdown())
            .await
            .expect("shutdown finishes")
            .unwrap();
    }

    /// Restarts node `i` on the same data directory and p2p address.
    pub async fn restart(&mut self, i: usize, listen: Multiaddr) {
        let mut cfg = loopback_config(self.dirs[i].path(), self.docker);
        cfg.listen = vec![listen];
        if i != 0 {
            cfg.bootstrap = vec![self.bootstrap.clone()];
        }
        // sled releases its file lock when its last handle, some held by
        // its own flusher thread, is gone: in one process that can lag
        // the old daemon's shutdown a little (a new process never waits).
        let started = std::time::Instant::now();
        let d = loop {
            match daemon::start(cfg.clone()).await {
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && started.elapsed() < Duration::from_secs(10) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                r => break r.unwrap(),
            }
        };
        self.nodes[i] = Some(d);
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_some() {
                self.stop(i).await;
            }
        }
    }
}

/// A Wasm job of `module` (already a blob on the submitting node).
pub fn wasm_job(module: &str, n: u8, k: u8) -> SubmitJob {
    SubmitJob {
        n: Some(n),
        k: Some(k),
        timeout_ms: Some(30_000),
        ..SubmitJob::new(SubmitExecutor::Wasm {
            module: module.into(),
        })
    }
}

/// Waits until job `id` on `node` is final and returns its record.
pub async fn wait_final(node: &Daemon, id: &str, within: Duration) -> JobRecord {
    let jobs = node.jobs().clone();
    let id = id.to_owned();
    wait_for(within, &format!("job {id} to end"), || {
        let jobs = jobs.clone();
        let id = id.clone();
        async move {
            let r = jobs.get(&id).ok()?;
            r.state.is_final().then_some(r)
        }
    })
    .await
}

/// Polls `f` every 100 ms until it yields a value, panicking after
/// `deadline` with `what`.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
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
