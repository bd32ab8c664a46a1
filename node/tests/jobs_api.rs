//! The job routes of the control API on a small network: bad input gets a
//! 4xx with a message and changes nothing; a good job runs through the
//! API to a verified result whose bytes come back as blobs; progress
//! streams as server-sent events; metrics count the job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jobs_harness;

use std::net::SocketAddr;

use agora_node::api::types::{BlobInfo, JobList, JobRecord, JobResult, JobState};
use jobs_harness::{fixture, wait_final, Net, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 request; returns (status, body).
async fn http(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut body = out[split..].to_vec();
    if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + n]);
        b = &b[line_end + 2 + n + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_api_refuses_bad_input_and_runs_good_jobs() {
    let net = Net::start(4, false).await;
    let node = net.node(3);
    let (addr, token) = (node.api_addr(), node.token().to_owned());
    let list = |addr, token: String| async move {
        let (s, b) = http(addr, &token, "GET", "/api/v1/jobs", b"").await;
        assert_eq!(s, 200);
        serde_json::from_slice::<JobList>(&b).unwrap().jobs.len()
    };

    let (s, b) = http(addr, &token, "POST", "/api/v1/blobs", &fixture("hello")).await;
    assert_eq!(s, 201);
    let module: BlobInfo = serde_json::from_slice(&b).unwrap();

    let bad: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            b"{\"executor\": ".to_vec(),
            400,
            "bad job request",
        ),
        (
            "unknown field",
            br#"{"executor":{"wasm":{"module":"ab"}},"colour":"red"}"#.to_vec(),
            400,
            "colour",
        ),
        (
            "unknown blob",
            format!(
                r#"{{"executor":{{"wasm":{{"module":"{}"}}}}}}"#,
                "e".repeat(64)
            )
            .into_bytes(),
            400,
            "upload it",
        ),
        (
            "k > n",
            format!(
                r#"{{"executor":{{"wasm":{{"module":"{}"}}}},"n":2,"k":3}}"#,
                module.id
            )
            .into_bytes(),
            400,
            "replication",
        ),
        (
            "oversize spec",
            format!(
                r#"{{"executor":{{"wasm":{{"module":"{}"}}}},"args":[{}]}}"#,
                module.id,
                vec!["\"x\""; 300].join(",")
            )
            .into_bytes(),
            400,
            "spec.args",
        ),
        ("body too large", vec![b' '; 2 * 1024 * 1024], 413, ""),
    ];
    for (what, body, want, needle) in bad {
        let (s, b) = http(addr, &token, "POST", "/api/v1/jobs", &body).await;
        let msg = String::from_utf8_lossy(&b).into_owned();
        assert_eq!(s, want, "{what}: {msg}");
        assert!(msg.contains(needle), "{what}: {msg}");
        if want != 413 {
            assert!(
                msg.starts_with("{\"error\":"),
                "{what}: JSON error body, got {msg}"
            );
        }
        assert_eq!(list(addr, token.clone()).await, 0, "{what} created a job");
    }
    let (s, _) = http(addr, &token, "GET", "/api/v1/jobs/zz", b"").await;
    assert_eq!(s, 400, "malformed id");
    let (s, _) = http(
        addr,
        &token,
        "GET",
        &format!("/api/v1/jobs/{}", "a".repeat(64)),
        b"",
    )
    .await;
    assert_eq!(s, 404, "unknown job");
    let (s, _) = http(addr, &token, "GET", "/api/v1/jobs?state=sideways", b"").await;
    assert_eq!(s, 400, "unknown state");

    // A good job, through the API, with a unique prefix of the module id.
    let body = format!(
        r#"{{"executor":{{"wasm":{{"module":"{}"}}}},"n":3,"k":2}}"#,
        &module.id[..8]
    );
    let (s, b) = http(addr, &token, "POST", "/api/v1/jobs", body.as_bytes()).await;
    assert_eq!(s, 202, "{}", String::from_utf8_lossy(&b));
    let rec: JobRecord = serde_json::from_slice(&b).unwrap();
    let done = wait_final(node, &rec.id, DEADLINE).await;
    assert_eq!(done.state, JobState::Verified);
    let (s, b) = http(
        addr,
        &token,
        "GET",
        &format!("/api/v1/jobs/{}/result", &rec.id[..12]),
        b"",
    )
    .await;
    assert_eq!(s, 200);
    let result: JobResult = serde_json::from_slice(&b).unwrap();
    let (s, out) = http(
        addr,
        &token,
        "GET",
        &format!("/api/v1/blobs/{}", result.stdout.id),
        b"",
    )
    .await;
    assert_eq!((s, out.as_slice()), (200, &b"hello, agora\n"[..]));

    // The event stream replays the job's progress and ends at the verdict.
    let (s, b) = http(
        addr,
        &token,
        "GET",
        &format!("/api/v1/jobs/{}/events", rec.id),
        b"",
    )
    .await;
    assert_eq!(s, 200);
    let text = String::from_utf8(b).unwrap();
    assert!(text.contains("event: job"), "{text}");
    let last = text.lines().rfind(|l| l.starts_with("data:")).unwrap();
    assert!(last.contains("\"verified\""), "{last}");

    // Cancelling a finished job is a conflict; the record is unchanged.
    let (s, _) = http(
        addr,
        &token,
        "DELETE",
        &format!("/api/v1/jobs/{}", rec.id),
        b"",
    )
    .await;
    assert_eq!(s, 409);
    assert_eq!(node.jobs().get(&rec.id).unwrap().state, JobState::Verified);

    let (s, b) = http(addr, &token, "GET", "/api/v1/jobs?state=verified", b"").await;
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_slice::<JobList>(&b).unwrap().jobs.len(), 1);
    let (_, metrics) = http(addr, &token, "GET", "/metrics", b"").await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("agora_jobs_verified_total 1"), "{metrics}");
    assert!(
        metrics.contains("agora_jobs{state=\"verified\"} 1"),
        "{metrics}"
    );
    net.shutdown().await;
}
