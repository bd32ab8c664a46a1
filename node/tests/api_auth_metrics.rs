//! The control API: the token guards /api/v1 (401 with a JSON error
//! without it or with a wrong one), /health and /metrics are open, and
//! /metrics is valid Prometheus text with the node's metric names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod daemon_harness;

use std::collections::{HashMap, HashSet};

use agora_node::api::client::{ApiClient, ClientError};
use agora_node::api::types::{ErrorBody, Health, NodesInfo, PeersInfo};
use agora_node::daemon;
use daemon_harness::loopback_config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_api_v1() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon::start(loopback_config(dir.path())).await.unwrap();
    let file_token = std::fs::read_to_string(dir.path().join("api.token")).unwrap();
    assert_eq!(file_token.trim(), d.token());

    for path in ["/api/v1/id", "/api/v1/peers", "/api/v1/nodes"] {
        let none = ApiClient::new(d.api_addr(), None).get(path).await.unwrap();
        assert_eq!(none.status, 401, "{path} without a token");
        let body: ErrorBody = serde_json::from_slice(&none.body).unwrap();
        assert!(body.error.contains("missing API token"), "{}", body.error);

        let wrong = "0".repeat(64);
        let bad = ApiClient::new(d.api_addr(), Some(wrong))
            .get(path)
            .await
            .unwrap();
        assert_eq!(bad.status, 401, "{path} with a wrong token");
        let body: ErrorBody = serde_json::from_slice(&bad.body).unwrap();
        assert_eq!(body.error, "wrong API token");

        let good = ApiClient::new(d.api_addr(), Some(d.token().to_owned()))
            .get(path)
            .await
            .unwrap();
        assert_eq!(good.status, 200, "{path} with the token");
        assert_eq!(good.content_type.as_deref(), Some("application/json"));
    }

    let client = ApiClient::new(d.api_addr(), Some(d.token().to_owned()));
    let peers: PeersInfo = client.get_json("/api/v1/peers").await.unwrap();
    assert!(peers.peers.is_empty(), "a lone node has no peers");
    // The node records its own advert, so it lists itself.
    let me = d.peer_id().to_string();
    let nodes: NodesInfo = daemon_harness::wait_for(daemon_harness::DEADLINE, "own advert", || {
        let client = client.clone();
        async move {
            let n: NodesInfo = client.get_json("/api/v1/nodes").await.ok()?;
            (!n.nodes.is_empty()).then_some(n)
        }
    })
    .await;
    assert_eq!(nodes.nodes[0].peer_id, me);
    assert!(nodes.nodes[0].is_self);
    assert_eq!(nodes.nodes[0].state, "online");
    assert_eq!(nodes.nodes[0].executors, ["wasm"]);

    let err = client.get_json::<Health>("/nope").await.unwrap_err();
    assert!(
        matches!(err, ClientError::Status { status: 404, .. }),
        "{err}"
    );

    let health: Health = ApiClient::new(d.api_addr(), None)
        .get_json("/health")
        .await
        .unwrap();
    assert_eq!(health.status, "ok");
    d.shutdown().await.unwrap();
}

/// Checks the Prometheus text exposition format line by line: `# HELP`
/// and `# TYPE` comments, and samples `name{label="v",...} value` whose
/// family was declared by a `# TYPE` line. Returns the declared families
/// with their types.
fn parse_prometheus(text: &str) -> HashMap<String, String> {
    let mut types = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let ty = parts
                .next()
                .unwrap_or_else(|| panic!("line {n}: TYPE without a type"));
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                "line {n}: unknown type {ty}"
            );
            assert!(parts.next().is_none(), "line {n}: junk after the type");
            assert!(valid_name(name), "line {n}: bad metric name {name}");
            types.insert(name.to_owned(), ty.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("line {n}: no value: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "line {n}: bad value {value}"
        );
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("line {n}: unclosed labels"));
                for pair in split_labels(labels) {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("line {n}: label without '=': {pair}"));
                    assert!(valid_name(k), "line {n}: bad label name {k}");
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "line {n}: unquoted label value {v}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(valid_name(name), "line {n}: bad metric name {name}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "line {n}: sample {name} has no # TYPE"
        );
    }
    types
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Splits `a="x",b="y,z"` at the commas between pairs (not inside quotes).
fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

#[test]
fn the_checker_rejects_malformed_text() {
    let ok =
        "# TYPE a gauge\na 1\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n";
    assert_eq!(parse_prometheus(ok).len(), 2);
    for bad in [
        "a 1\n",                      // no TYPE
        "# TYPE a gauge\na one\n",    // bad value
        "# TYPE a gauge\na{x=1} 1\n", // unquoted label
        "# TYPE a wibble\na 1\n",     // unknown type
        "# TYPE a gauge\n9a 1\n",     // bad name
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_prometheus(bad)).is_err(),
            "accepted: {bad:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_open_and_valid_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon::start(loopback_config(dir.path())).await.unwrap();
    // One API request first, so the request histogram has a sample.
    let _ = ApiClient::new(d.api_addr(), None)
        .get("/api/v1/id")
        .await
        .unwrap();
    let resp = ApiClient::new(d.api_addr(), None)
        .get("/metrics")
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("text/plain")));
    let text = String::from_utf8(resp.body.to_vec()).unwrap();
    let types = parse_prometheus(&text);
    let expected: HashSet<&str> = [
        "agora_known_nodes",
        "agora_online_nodes",
        "agora_connected_peers",
        "agora_routing_table_peers",
        "agora_api_request_duration_seconds",
    ]
    .into();
    for name in &expected {
        assert!(types.contains_key(*name), "{name} missing from:\n{text}");
    }
    assert_eq!(types["agora_api_request_duration_seconds"], "histogram");
    assert!(
        text.contains(
            r#"agora_api_request_duration_seconds_count{method="GET",route="/api/v1/id",status="401"} 1"#
        ),
        "{text}"
    );
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_take_more_than_their_share() {
    use agora_node::api::MAX_API_CONNECTIONS;
    let dir = tempfile::tempdir().unwrap();
    let d = daemon::start(loopback_config(dir.path())).await.unwrap();
    // Clients that connect and never send a request fill every slot...
    let mut idle = Vec::new();
    for _ in 0..MAX_API_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(d.api_addr()).await.unwrap());
    }
    let client = ApiClient::new(d.api_addr(), None);
    let blocked = client
        .clone()
        .with_timeout(std::time::Duration::from_secs(2))
        .get("/health")
        .await;
    assert!(
        matches!(blocked, Err(ClientError::Timeout { .. })),
        "a request beyond the connection bound waits: {blocked:?}"
    );
    // ...and one leaving frees a slot for a real request.
    drop(idle.pop());
    let health: Health = client
        .with_timeout(daemon_harness::DEADLINE)
        .get_json("/health")
        .await
        .unwrap();
    assert_eq!(health.status, "ok");
    drop(idle);
    d.shutdown().await.unwrap();
}
