//! Blob uploads stream to disk: a 200 MiB upload does not grow the
//! daemon's memory by anything like 200 MiB, a body declared over the limit
//! is refused before it is sent, and a body cut short keeps nothing. In its
//! own file so no other test shares (and inflates) this process's memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod daemon_harness;

use std::net::SocketAddr;
use std::time::Duration;

use agora_node::api::jobs::MAX_UPLOAD_BYTES;
use agora_node::daemon;
use daemon_harness::loopback_config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A field of /proc/self/status in KiB (e.g. `VmHWM`, the peak RSS).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sends the head of a blob upload declaring `len` bytes, then `send`
/// bytes of the body (1 MiB at a time, one buffer reused), then reads the
/// answer's status line (the connection is closed after it).
async fn upload(addr: SocketAddr, token: &str, len: u64, send: u64) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/blobs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![7u8; 1024 * 1024];
    let mut sent = 0;
    while sent < send {
        let n = (send - sent).min(chunk.len() as u64) as usize;
        if s.write_all(&chunk[..n]).await.is_err() {
            break; // the daemon answered and closed
        }
        sent += n as u64;
    }
    if send < len {
        let _ = s.shutdown().await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stream_to_disk_and_oversized_or_broken_bodies_keep_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon::start(loopback_config(dir.path())).await.unwrap();
    let (addr, token) = (d.api_addr(), d.token().to_string());
    let blobs = d.jobs().blobs().clone();

    let size: u64 = 200 * 1024 * 1024;
    let hwm_before = status_kib("VmHWM");
    let answer = upload(addr, &token, size, size).await;
    let hwm_after = status_kib("VmHWM");
    eprintln!("200 MiB upload: VmHWM {hwm_before} -> {hwm_after} KiB");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("\"size\":209715200"), "{answer}");
    assert!(
        hwm_after.saturating_sub(hwm_before) < 64 * 1024,
        "the daemon's peak memory grew by {} KiB for a 200 MiB upload",
        hwm_after - hwm_before
    );
    let count = blobs.count();

    // Declared over the limit: refused at once, before any body is sent.
    let answer = upload(addr, &token, MAX_UPLOAD_BYTES as u64 + 1, 0).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("declares 1073741825 bytes"), "{answer}");

    // Cut short: half the declared body, then the client goes away.
    let answer = upload(addr, &token, 8 * 1024 * 1024, 4 * 1024 * 1024).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(blobs.count(), count, "a broken upload left a blob");
    let tmp = dir.path().join("blobs").join("tmp");
    if tmp.is_dir() {
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "temp files left"
        );
    }
    d.shutdown().await.unwrap();
}
