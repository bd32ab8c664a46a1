//! A Wasm job writing 100 MiB to stdout must end with OutputTooLarge
//! without the executor's process growing by anything like 100 MiB. In its
//! own file so no other test shares (and inflates) this process's memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use agora_node::executor::wasm::{WasmConfig, WasmExecutor};
use agora_node::executor::{ExecError, ExecRequest, Executor, OutputStream};
use agora_protocol::{validate, ContentId, ExecutorSpec, JobSpec, Replication, Resources};

/// A field of /proc/self/status in KiB (e.g. `VmHWM`, the peak RSS).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn hundred_mib_of_stdout_is_capped_without_growing_the_process() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testnet/fixtures/wasm/flood.wat");
    let module = wat::parse_file(&path).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let exec = WasmExecutor::new(WasmConfig {
        scratch_dir: Some(scratch.path().to_path_buf()),
        ..WasmConfig::default()
    })
    .unwrap();
    let cap = 16 * 1024 * 1024;
    let spec = JobSpec {
        executor: ExecutorSpec::Wasm {
            module: ContentId::of(&module),
        },
        args: Vec::new(),
        env: BTreeMap::new(),
        stdin: None,
        inputs: BTreeMap::new(),
        outputs: Vec::new(),
        resources: Resources {
            max_output_bytes: cap,
            timeout_ms: 120_000,
            ..Resources::default()
        },
        replication: Replication::default(),
        created_at_ms: 0,
        nonce: 0,
        requires: BTreeMap::new(),
    };
    let req = ExecRequest {
        job_id: ContentId::of(b"flood"),
        spec: validate(spec).unwrap(),
        module,
        stdin: Vec::new(),
        inputs: BTreeMap::new(),
    };

    let rss_before = status_kib("VmRSS");
    let hwm_before = status_kib("VmHWM");
    let result = exec.execute(req).await;
    let hwm_after = status_kib("VmHWM");
    let rss_after = status_kib("VmRSS");

    match result {
        Err(ExecError::OutputTooLarge {
            stream: OutputStream::Stdout,
            limit_bytes,
        }) => assert_eq!(limit_bytes, cap),
        other => panic!("expected OutputTooLarge on stdout, got {other:?}"),
    }
    let peak_growth_mib = hwm_after.saturating_sub(hwm_before) / 1024;
    let rss_growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    eprintln!("VmHWM {hwm_before} -> {hwm_after} KiB, VmRSS {rss_before} -> {rss_after} KiB");
    assert!(
        peak_growth_mib < 50,
        "peak RSS grew by {peak_growth_mib} MiB while capping 100 MiB of stdout"
    );
    assert!(rss_growth_mib < 50, "RSS grew by {rss_growth_mib} MiB");
}
