//! `agora-bootstrap` as a real process: prints dialable `/p2p/` addresses,
//! keeps its PeerId across restarts, stops cleanly on SIGTERM, and refuses
//! a corrupt key file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Generous: the test box has 2 busy cores.
const DEADLINE: Duration = Duration::from_secs(120);

/// Kills the process if the test fails before stopping it.
struct Proc(Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts the bootstrap node; returns it with its peer id and first
/// listen address as printed.
fn start(key: &Path) -> (Proc, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agora-bootstrap"))
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--key-file"])
        .arg(key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let proc = Proc(Some(child));
    let first = rx.recv_timeout(DEADLINE).expect("a peer id line");
    let id = first
        .strip_prefix("peer id: ")
        .expect("peer id first")
        .to_owned();
    let addr_line = rx.recv_timeout(DEADLINE).expect("a listen line");
    let addr = addr_line
        .strip_prefix("listening on: ")
        .expect("listening line")
        .to_owned();
    (proc, id, addr)
}

fn stop(mut p: Proc) {
    let mut child = p.0.take().unwrap();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let end = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            panic!("bootstrap did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn the_bootstrap_node_keeps_its_id_and_prints_dialable_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("boot.key");
    let (p, id, addr) = start(&key);
    assert!(id.starts_with("12D3KooW"), "{id}");
    assert!(addr.starts_with("/ip4/127.0.0.1/tcp/"), "{addr}");
    assert!(addr.ends_with(&format!("/p2p/{id}")), "{addr}");
    let port: u16 = addr.split('/').nth(4).unwrap().parse().unwrap();
    std::net::TcpStream::connect(("127.0.0.1", port))
        .expect("the printed address accepts connections");
    stop(p);

    let (p, id2, _) = start(&key);
    assert_eq!(id2, id, "same key file, same PeerId");
    stop(p);
}

#[test]
fn a_corrupt_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("boot.key");
    std::fs::write(&key, b"garbage").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agora-bootstrap"))
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--key-file"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("boot.key") && stderr.contains("expected 32"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), b"garbage");
}
