//! `agora daemon` as a real process, queried with `agora id --json` and
//! `agora nodes`; the one-line error (exit 125) when no daemon runs; and
//! errors about a job's flags, found before it runs and naming the flag.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Generous: the test box has 2 busy cores.
const DEADLINE: Duration = Duration::from_secs(120);

fn agora(data_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agora"));
    c.arg("--data-dir")
        .arg(data_dir)
        .env_remove("AGORA_API")
        .env_remove("AGORA_DATA_DIR")
        .env_remove("AGORA_LOG");
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("agora runs")
}

/// Kills the daemon if the test fails before stopping it.
struct DaemonProcess(Option<Child>);

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn assert_not_running_error(out: &Output, data_dir: &Path) {
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains(&format!("agora daemon --data-dir {}", data_dir.display())),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn without_a_daemon_the_cli_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["id", "peers", "nodes"] {
        let out = run(agora(dir.path()).arg(cmd));
        assert_not_running_error(&out, dir.path());
    }
    // A stale address from a daemon that died: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(dir.path().join("api.addr"), format!("127.0.0.1:{port}\n")).unwrap();
    std::fs::write(dir.path().join("api.token"), "ab".repeat(32)).unwrap();
    let out = run(agora(dir.path()).args(["nodes", "--json"]));
    assert_not_running_error(&out, dir.path());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no agora daemon is running at 127.0.0.1:")
    );
}

/// Starts `agora daemon` on loopback and waits for its API address file.
fn start_daemon(data_dir: &Path) -> DaemonProcess {
    let child = agora(data_dir)
        .args([
            "daemon",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
            "--label",
            "region=test",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut daemon = DaemonProcess(Some(child));
    let addr_file = data_dir.join("api.addr");
    let start = Instant::now();
    while !addr_file.exists() {
        if let Some(status) = daemon.0.as_mut().unwrap().try_wait().unwrap() {
            panic!("daemon exited early: {status}");
        }
        assert!(start.elapsed() < DEADLINE, "daemon did not write api.addr");
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon
}

#[test]
fn a_daemon_process_answers_id_and_nodes_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut daemon = start_daemon(dir.path());
    let addr_file = dir.path().join("api.addr");

    let out = run(agora(dir.path()).args(["id", "--json"]));
    assert!(out.status.success(), "{out:?}");
    let id: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let peer = id["peer_id"].as_str().unwrap().to_owned();
    assert!(peer.starts_with("12D3KooW"), "{peer}");
    assert_eq!(id["executors"][0]["kind"], "wasm");
    assert!(id["listen_addrs"][0]
        .as_str()
        .unwrap()
        .starts_with("/ip4/127.0.0.1/tcp/"));

    // The node's own advert goes out at start, so it lists itself.
    let table = loop {
        let out = run(agora(dir.path()).arg("nodes"));
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        if text.lines().count() >= 2 {
            break text;
        }
        assert!(start.elapsed() < DEADLINE, "no nodes listed: {text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for col in [
        "PEER",
        "STATE",
        "EXECUTORS",
        "CORES",
        "MEMORY",
        "LOAD",
        "LABELS",
        "LAST SEEN",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = lines.next().unwrap();
    assert!(row.contains("(self)") && row.contains("online"), "{row}");
    assert!(row.contains("region=test"), "{row}");
    assert!(row.contains(&peer[..8]), "{row}");

    let out = run(agora(dir.path()).args(["peers", "--json"]));
    assert!(out.status.success(), "{out:?}");
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(peers["peers"].as_array().unwrap().len(), 0);

    let mut child = daemon.0.take().unwrap();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > DEADLINE * 2 {
            let _ = child.kill();
            panic!("daemon did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(stdout.contains(&format!("peer id: {peer}")), "{stdout}");
    assert!(
        stdout.contains("control API: http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(!addr_file.exists(), "api.addr removed on clean shutdown");
}

#[test]
fn a_config_file_with_an_unknown_key_stops_the_daemon_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "max_jobs = 2\ncolour = \"blue\"\n",
    )
    .unwrap();
    let out = run(agora(dir.path()).args(["daemon", "--api", "127.0.0.1:0"]));
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config.toml") && stderr.contains("colour"),
        "{stderr}"
    );
    assert!(!dir.path().join("identity.key").exists(), "nothing started");
}

/// The smallest valid Wasm module: it compiles, so only the flags under
/// test can make a job fail.
const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

#[test]
fn an_unusable_output_dir_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("m.wasm");
    std::fs::write(&module, EMPTY_MODULE).unwrap();
    // A file where the directory's parent should be: it cannot be created,
    // whoever runs the test.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let bad = blocker.join("out");
    let module = module.to_str().unwrap();
    let bad = bad.to_str().unwrap();
    for args in [
        vec!["exec", "wasm", module, "--output-dir", bad],
        // No daemon runs: the check comes before the daemon is contacted,
        // so before anything is uploaded or submitted.
        vec!["run", "wasm", module, "--output-dir", bad],
        vec!["job", "result", "abcd", "--output-dir", bad],
    ] {
        let out = run(agora(dir.path()).args(&args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("--output-dir {bad}")),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("no agora daemon"), "{args:?}: {stderr}");
    }
    // A missing directory is created up front, and left empty.
    let fresh = dir.path().join("a/b");
    let out = run(agora(dir.path()).args([
        "run",
        "wasm",
        module,
        "--output-dir",
        fresh.to_str().unwrap(),
    ]));
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert_eq!(std::fs::read_dir(&fresh).unwrap().count(), 0);
}

#[test]
fn an_out_of_range_flag_is_named_as_typed_locally_and_by_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("m.wasm");
    std::fs::write(&module, EMPTY_MODULE).unwrap();
    let module = module.to_str().unwrap();
    let assert_names_flag = |out: &Output, flag: &str, field: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{stderr}");
        assert!(stderr.contains(flag), "{stderr}");
        assert!(!stderr.contains(field), "{stderr}");
    };
    let out = run(agora(dir.path()).args(["exec", "wasm", module, "--timeout", "1h30d"]));
    assert_names_flag(&out, "--timeout", "timeout_ms");
    let out = run(agora(dir.path()).args(["exec", "wasm", module, "--memory", "1000"]));
    assert_names_flag(&out, "--memory", "memory_bytes");

    let _daemon = start_daemon(dir.path());
    let out = run(agora(dir.path()).args([
        "run",
        "wasm",
        module,
        "-n",
        "1",
        "-k",
        "1",
        "--allow-local",
        "--timeout",
        "1h30d",
    ]));
    assert_names_flag(&out, "--timeout", "timeout_ms");
    let out = run(agora(dir.path()).args(["job", "list", "--json"]));
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0, "no job stored");
}

#[test]
fn image_push_stores_a_local_image_for_peers_and_image_ls_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let _daemon = start_daemon(dir.path());
    let out = run(agora(dir.path()).args(["image", "push", "agora-layers-a:latest"]));
    assert!(
        out.status.success(),
        "{out:?} (Docker and testnet/fixtures/build.sh are needed)"
    );
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.starts_with("sha256:") && said.contains("3 layer(s)"),
        "{said}"
    );

    let out = run(agora(dir.path()).args(["image", "ls"]));
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().next().unwrap().contains("LAYERS"), "{table}");
    assert_eq!(table.lines().count(), 2, "{table}");
    let out = run(agora(dir.path()).args(["image", "ls", "--json"]));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["images"][0]["layers"].as_array().unwrap().len(), 3);
    assert_eq!(list["images"][0]["loaded"], false);

    let out = run(agora(dir.path()).args(["image", "push", "no-such-image:latest"]));
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no-such-image:latest"), "{err}");
}
