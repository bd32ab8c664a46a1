//! Wasm executor integration tests: real wasmtime runs of the WAT fixtures
//! in testnet/fixtures/wasm and the C fixtures built by
//! testnet/fixtures/build-wasm.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agora_node::executor::wasm::determinism::{
    CLOCK_STEP_NS, MONOTONIC_START_NS, WALL_CLOCK_START_NS,
};
use agora_node::executor::wasm::{WasmConfig, WasmExecutor};
use agora_node::executor::{ExecError, ExecRequest, Executor, OutputStream};
use agora_protocol::{
    validate, ContentId, ExecutorSpec, JobSpec, Replication, Resources, ResultBundle,
};
use tempfile::TempDir;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A WAT fixture compiled to binary Wasm.
fn wat(name: &str) -> Vec<u8> {
    let path = repo_root()
        .join("testnet/fixtures/wasm")
        .join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A C fixture; fails (never skips) when the build script has not run.
fn c_program(name: &str) -> Vec<u8> {
    let path = repo_root()
        .join("testnet/fixtures/build")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run testnet/fixtures/build-wasm.sh first to build the C fixtures",
            path.display()
        )
    })
}

/// One job to run, built field by field.
struct Job {
    module: Vec<u8>,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    stdin: Vec<u8>,
    inputs: BTreeMap<String, Vec<u8>>,
    outputs: Vec<String>,
    resources: Resources,
    job_seed: String,
}

impl Job {
    fn new(module: Vec<u8>) -> Self {
        Self {
            module,
            args: Vec::new(),
            env: BTreeMap::new(),
            stdin: Vec::new(),
            inputs: BTreeMap::new(),
            outputs: Vec::new(),
            resources: Resources {
                timeout_ms: 30_000,
                ..Resources::default()
            },
            job_seed: "job".into(),
        }
    }

    fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    fn env(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    fn stdin(mut self, b: &[u8]) -> Self {
        self.stdin = b.to_vec();
        self
    }

    fn input(mut self, name: &str, b: &[u8]) -> Self {
        self.inputs.insert(name.into(), b.to_vec());
        self
    }

    fn output(mut self, path: &str) -> Self {
        self.outputs.push(path.into());
        self
    }

    fn resources(mut self, f: impl FnOnce(&mut Resources)) -> Self {
        f(&mut self.resources);
        self
    }

    fn seed(mut self, s: &str) -> Self {
        self.job_seed = s.into();
        self
    }

    fn request(&self) -> ExecRequest {
        let spec = JobSpec {
            executor: ExecutorSpec::Wasm {
                module: ContentId::of(&self.module),
            },
            args: self.args.clone(),
            env: self.env.clone(),
            stdin: (!self.stdin.is_empty()).then(|| ContentId::of(&self.stdin)),
            inputs: self
                .inputs
                .iter()
                .map(|(k, v)| (k.clone(), ContentId::of(v)))
                .collect(),
            outputs: self.outputs.clone(),
            resources: self.resources.clone(),
            replication: Replication::default(),
            created_at_ms: 0,
            nonce: 0,
            requires: BTreeMap::new(),
        };
        ExecRequest {
            job_id: ContentId::of(self.job_seed.as_bytes()),
            spec: validate(spec).unwrap(),
            module: self.module.clone(),
            stdin: self.stdin.clone(),
            inputs: self.inputs.clone(),
        }
    }
}

/// An executor with its own scratch dir (and optionally a disk cache).
struct Harness {
    exec: WasmExecutor,
    scratch: TempDir,
}

impl Harness {
    fn new() -> Self {
        Self::with_cache(None)
    }

    fn with_cache(cache_dir: Option<PathBuf>) -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let exec = WasmExecutor::new(WasmConfig {
            cache_dir,
            scratch_dir: Some(scratch.path().join("runs")),
            ..WasmConfig::default()
        })
        .unwrap();
        Self { exec, scratch }
    }

    async fn run(&self, job: &Job) -> Result<ResultBundle, ExecError> {
        let r = self.exec.execute(job.request()).await;
        self.assert_clean();
        r
    }

    /// Every run dir must be gone once a run returns, whatever the outcome.
    fn assert_clean(&self) {
        let runs = self.scratch.path().join("runs");
        if let Ok(rd) = std::fs::read_dir(&runs) {
            let left: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            assert!(left.is_empty(), "run dirs left behind: {left:?}");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn hello_prints_and_exits_zero() {
    let h = Harness::new();
    let b = h.run(&Job::new(wat("hello"))).await.unwrap();
    assert_eq!(b.exit_code, 0);
    assert_eq!(text(&b.stdout), "hello, agora\n");
    assert!(b.stderr.is_empty());
    assert!(b.outputs.is_empty());
}

#[tokio::test]
async fn args_env_stdin_and_exit_code_round_trip() {
    let h = Harness::new();
    let job = Job::new(wat("echo"))
        .args(&["one", "two words"])
        .env("B", "x y")
        .env("A", "1")
        .stdin(b"piped input\nsecond line\n");
    let b = h.run(&job).await.unwrap();
    assert_eq!(b.exit_code, 3, "proc_exit(3) is the exit code");
    assert_eq!(
        text(&b.stdout),
        "main.wasm\none\ntwo words\nA=1\nB=x y\npiped input\nsecond line\n"
    );
    assert_eq!(text(&b.stderr), "stderr says hi\n");
}

#[tokio::test]
async fn nothing_of_the_host_environment_leaks_in() {
    // The test process has PATH, HOME, CARGO_* and more; none may show.
    assert!(std::env::vars().next().is_some());
    let h = Harness::new();
    let b = h.run(&Job::new(wat("echo"))).await.unwrap();
    assert_eq!(text(&b.stdout), "main.wasm\n", "no args, no env, no stdin");
}

#[tokio::test]
async fn input_is_copied_to_a_declared_output() {
    let h = Harness::new();
    // Larger than the fixture's 16 KiB buffer, so the copy loops.
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let job = Job::new(wat("copy"))
        .args(&["data.bin", "sub/copy.bin"])
        .input("data.bin", &data)
        .output("sub/copy.bin")
        .output("never-written.txt");
    let b = h.run(&job).await.unwrap();
    assert_eq!(b.exit_code, 0, "stderr: {}", text(&b.stderr));
    assert_eq!(text(&b.stdout), "copied\n");
    assert_eq!(
        b.outputs.keys().collect::<Vec<_>>(),
        vec!["sub/copy.bin"],
        "only declared files that exist"
    );
    assert_eq!(b.outputs["sub/copy.bin"].as_slice(), data.as_slice());
}

#[tokio::test]
async fn an_output_file_over_the_cap_is_output_too_large() {
    let h = Harness::new();
    let data = vec![7u8; 50_000];
    let job = Job::new(wat("copy"))
        .args(&["data.bin", "copy.bin"])
        .input("data.bin", &data)
        .output("copy.bin")
        .resources(|r| r.max_output_bytes = 40_000);
    match h.run(&job).await {
        Err(ExecError::OutputTooLarge {
            stream: OutputStream::File(p),
            limit_bytes: 40_000,
        }) => assert_eq!(p, "copy.bin"),
        other => panic!("expected OutputTooLarge on copy.bin, got {other:?}"),
    }
}

#[tokio::test]
async fn writing_to_out_forever_is_stopped_by_the_disk_check() {
    let h = Harness::new();
    let job = Job::new(wat("outflood")).output("big.bin").resources(|r| {
        r.max_output_bytes = 1 << 20;
        r.timeout_ms = 60_000;
    });
    match h.run(&job).await {
        Err(ExecError::OutputTooLarge {
            stream: OutputStream::File(p),
            ..
        }) => assert_eq!(p, "big.bin"),
        other => panic!("expected OutputTooLarge on big.bin, got {other:?}"),
    }
}

#[tokio::test]
async fn stdout_cap_is_exact() {
    let h = Harness::new();
    let fits = Job::new(wat("hello")).resources(|r| r.max_output_bytes = 13);
    assert_eq!(h.run(&fits).await.unwrap().stdout.len(), 13);
    let over = Job::new(wat("hello")).resources(|r| r.max_output_bytes = 12);
    match h.run(&over).await {
        Err(ExecError::OutputTooLarge {
            stream: OutputStream::Stdout,
            limit_bytes: 12,
        }) => {}
        other => panic!("expected OutputTooLarge on stdout, got {other:?}"),
    }
}

#[tokio::test]
async fn stderr_cap_is_enforced_too() {
    let h = Harness::new();
    // echo writes 15 bytes to stderr after "main.wasm\n" (10) on stdout.
    let job = Job::new(wat("echo")).resources(|r| r.max_output_bytes = 12);
    match h.run(&job).await {
        Err(ExecError::OutputTooLarge {
            stream: OutputStream::Stderr,
            ..
        }) => {}
        other => panic!("expected OutputTooLarge on stderr, got {other:?}"),
    }
}

/// Splits clock_random's 56 bytes into (realtime, monotonic, realtime, random).
fn clock_random_fields(stdout: &[u8]) -> (u64, u64, u64, Vec<u8>) {
    assert_eq!(stdout.len(), 56, "clock_random writes 56 bytes");
    let n = |i: usize| u64::from_le_bytes(stdout[i..i + 8].try_into().unwrap());
    (n(0), n(8), n(16), stdout[24..].to_vec())
}

#[tokio::test]
async fn clocks_and_randomness_are_deterministic_per_job() {
    let a = Harness::new();
    let b = Harness::new();
    let job1 = Job::new(wat("clock_random")).seed("job one");
    let r1 = a.run(&job1).await.unwrap();
    let r2 = a.run(&job1).await.unwrap();
    let r3 = b.run(&job1).await.unwrap();
    assert_eq!(r1.exit_code, 0);
    assert_eq!(
        r1.result_hash(),
        r2.result_hash(),
        "same executor, two runs"
    );
    assert_eq!(r1.result_hash(), r3.result_hash(), "two executor instances");

    let (wall1, mono, wall2, random1) = clock_random_fields(&r1.stdout);
    assert_eq!(wall1, WALL_CLOCK_START_NS);
    assert_eq!(wall2, WALL_CLOCK_START_NS + CLOCK_STEP_NS);
    assert_eq!(mono, MONOTONIC_START_NS);
    assert!(
        random1.iter().any(|&x| x != 0),
        "random bytes are not zeros"
    );

    let r4 = a
        .run(&Job::new(wat("clock_random")).seed("job two"))
        .await
        .unwrap();
    let (w, m, w2, random2) = clock_random_fields(&r4.stdout);
    assert_eq!(
        (w, m, w2),
        (wall1, mono, wall2),
        "clocks do not depend on the job"
    );
    assert_ne!(
        random1, random2,
        "different jobs get different random bytes"
    );
    assert_ne!(r1.result_hash(), r4.result_hash());
}

#[tokio::test]
async fn an_infinite_loop_times_out() {
    let h = Harness::new();
    let job = Job::new(wat("loop")).resources(|r| r.timeout_ms = 300);
    let t = Instant::now();
    match h.run(&job).await {
        Err(ExecError::Timeout { limit_ms: 300 }) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(30), "returned, not hung");
}

#[tokio::test]
async fn a_long_sleep_in_a_host_call_times_out() {
    let h = Harness::new();
    let job = Job::new(wat("sleep")).resources(|r| r.timeout_ms = 300);
    let t = Instant::now();
    match h.run(&job).await {
        Err(ExecError::Timeout { limit_ms: 300 }) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(30), "returned, not hung");
}

#[tokio::test]
async fn fuel_runs_out() {
    let h = Harness::new();
    let job = Job::new(wat("loop")).resources(|r| {
        r.fuel = Some(1_000_000);
        r.timeout_ms = 600_000;
    });
    match h.run(&job).await {
        Err(ExecError::OutOfFuel { fuel: 1_000_000 }) => {}
        other => panic!("expected OutOfFuel, got {other:?}"),
    }
}

#[tokio::test]
async fn enough_fuel_lets_a_program_finish() {
    let h = Harness::new();
    let job = Job::new(wat("hello")).resources(|r| r.fuel = Some(1_000_000));
    assert_eq!(h.run(&job).await.unwrap().exit_code, 0);
}

#[tokio::test]
async fn a_memory_bomb_is_out_of_memory() {
    let h = Harness::new();
    let limit = 16 * 1024 * 1024;
    let job = Job::new(wat("membomb")).resources(|r| r.memory_bytes = limit);
    match h.run(&job).await {
        Err(ExecError::OutOfMemory { limit_bytes }) => assert_eq!(limit_bytes, limit),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
}

#[tokio::test]
async fn initial_memory_over_the_limit_is_out_of_memory() {
    let h = Harness::new();
    // 64 pages = 4 MiB of initial memory against a 1 MiB limit.
    let module = wat::parse_str(r#"(module (memory 64) (func (export "_start")))"#).unwrap();
    let job = Job::new(module).resources(|r| r.memory_bytes = 1024 * 1024);
    match h.run(&job).await {
        Err(ExecError::OutOfMemory { .. }) => {}
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
}

#[tokio::test]
async fn opening_files_without_end_is_bounded() {
    let h = Harness::new();
    let job = Job::new(wat("fdbomb")).input("data.txt", b"x");
    // Without a bound the opens would all succeed (or, past the daemon's
    // descriptor limit, fail for every other job too).
    match h.run(&job).await {
        Err(ExecError::Trap(msg)) => assert!(msg.contains("too many open files"), "{msg}"),
        other => panic!("expected a Trap naming the handle limit, got {other:?}"),
    }
}

#[tokio::test]
async fn a_trap_is_reported_as_trap() {
    let h = Harness::new();
    match h.run(&Job::new(wat("trap"))).await {
        Err(ExecError::Trap(msg)) => {
            assert!(msg.contains("unreachable"), "{msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
        other => panic!("expected Trap, got {other:?}"),
    }
}

#[tokio::test]
async fn traps_in_the_start_section_and_bad_exit_statuses_are_traps() {
    let h = Harness::new();
    let start_trap =
        wat::parse_str(r#"(module (func $s unreachable) (start $s) (func (export "_start")))"#)
            .unwrap();
    match h.run(&Job::new(start_trap)).await {
        Err(ExecError::Trap(msg)) => assert!(msg.contains("unreachable"), "{msg}"),
        other => panic!("expected Trap, got {other:?}"),
    }
    // WASI allows exit statuses 0..126 only.
    let bad_exit = wat::parse_str(
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
             (memory (export "memory") 1)
             (func (export "_start") (call $exit (i32.const 200))))"#,
    )
    .unwrap();
    match h.run(&Job::new(bad_exit)).await {
        Err(ExecError::Trap(msg)) => assert!(msg.contains("exit status"), "{msg}"),
        other => panic!("expected Trap, got {other:?}"),
    }
}

#[tokio::test]
async fn host_files_outside_in_are_unreachable() {
    let h = Harness::new();
    let secret = h.scratch.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-HOST-FILE").unwrap();
    let job = |path: &str| {
        Job::new(wat("read_path"))
            .args(&[path])
            .input("data.txt", b"visible input")
    };
    // The program can read what it was given, so its failures below are
    // the sandbox's doing.
    let ok = h.run(&job("data.txt")).await.unwrap();
    assert_eq!(ok.exit_code, 0);
    assert_eq!(text(&ok.stdout), "visible input");

    let secret_abs = secret.to_str().unwrap().to_owned();
    for path in [
        "../secret.txt",
        "../../secret.txt",
        "../../../secret.txt",
        secret_abs.as_str(),
        "/etc/passwd",
        "../../../../../../../../etc/passwd",
    ] {
        let b = h.run(&job(path)).await.unwrap();
        assert_eq!(b.exit_code, 1, "{path}: must not be opened");
        assert_eq!(text(&b.stderr), "denied\n", "{path}");
        assert!(!text(&b.stdout).contains("TOP-SECRET"), "{path}");
        assert!(!text(&b.stdout).contains("root:"), "{path}");
    }
}

#[tokio::test]
async fn invalid_modules_are_rejected_with_a_reason() {
    let h = Harness::new();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"definitely not wasm".to_vec(), ""),
        (wat("nostart"), "_start"),
        (
            wat::parse_str(
                r#"(module (import "env" "host_secret" (func)) (func (export "_start")))"#,
            )
            .unwrap(),
            "import",
        ),
        (
            wat::parse_str(r#"(module (global (export "_start") i32 (i32.const 0)))"#).unwrap(),
            "_start",
        ),
        // Text is not accepted as a module, even valid text.
        (br#"(module (func (export "_start")))"#.to_vec(), ""),
    ];
    for (module, needle) in cases {
        match h.run(&Job::new(module)).await {
            Err(ExecError::InvalidModule(msg)) => {
                assert!(msg.contains(needle), "{msg:?} should mention {needle:?}")
            }
            other => panic!("expected InvalidModule, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn module_bytes_must_match_the_spec() {
    let h = Harness::new();
    let mut req = Job::new(wat("hello")).request();
    req.module = wat("trap");
    match h.exec.execute(req).await {
        Err(ExecError::InvalidModule(msg)) => assert!(msg.contains("hash"), "{msg}"),
        other => panic!("expected InvalidModule, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_input_bytes_are_an_error_not_an_empty_file() {
    let h = Harness::new();
    let mut req = Job::new(wat("copy"))
        .args(&["a", "b"])
        .input("a", b"x")
        .request();
    req.inputs.clear();
    match h.exec.execute(req).await {
        Err(ExecError::Io { context, .. }) => assert!(context.contains("input a"), "{context}"),
        other => panic!("expected Io, got {other:?}"),
    }
    h.assert_clean();
}

#[tokio::test]
async fn docker_specs_are_refused() {
    let h = Harness::new();
    let mut job = Job::new(Vec::new()).request().spec.into_inner();
    job.executor = ExecutorSpec::Docker {
        image: "busybox".into(),
        digest: format!("sha256:{}", "ab".repeat(32)),
        manifest: None,
    };
    let req = ExecRequest {
        job_id: ContentId::of(b"docker"),
        spec: validate(job).unwrap(),
        module: Vec::new(),
        stdin: Vec::new(),
        inputs: BTreeMap::new(),
    };
    match h.exec.execute(req).await {
        Err(ExecError::WrongExecutor {
            expected: "wasm",
            found: "docker",
        }) => {}
        other => panic!("expected WrongExecutor, got {other:?}"),
    }
    assert_eq!(h.exec.kind(), "wasm");
}

#[tokio::test]
async fn compiled_modules_are_cached_in_memory_and_on_disk() {
    let cache = tempfile::tempdir().unwrap();
    let first = Harness::with_cache(Some(cache.path().to_path_buf()));
    let job = Job::new(wat("hello"));
    first.run(&job).await.unwrap();
    let s = first.exec.cache_stats();
    assert_eq!((s.compilations, s.disk_hits, s.memory_hits), (1, 0, 0));
    first.run(&job).await.unwrap();
    let s = first.exec.cache_stats();
    assert_eq!(
        (s.compilations, s.disk_hits, s.memory_hits, s.cached_modules),
        (1, 0, 1, 1),
        "second run reuses the compiled module"
    );

    // A fresh executor (a restarted node) finds it in the disk cache.
    let second = Harness::with_cache(Some(cache.path().to_path_buf()));
    let b = second.run(&job).await.unwrap();
    assert_eq!(text(&b.stdout), "hello, agora\n");
    let s = second.exec.cache_stats();
    assert_eq!((s.compilations, s.disk_hits, s.memory_hits), (0, 1, 0));

    // Without a disk cache a fresh executor must compile again.
    let third = Harness::new();
    third.run(&job).await.unwrap();
    assert_eq!(third.exec.cache_stats().compilations, 1);
}

#[tokio::test]
async fn runs_proceed_concurrently_on_clones() {
    let h = Harness::new();
    let exec2 = h.exec.clone();
    let slow = Job::new(wat("loop")).resources(|r| r.timeout_ms = 1_000);
    let fast = Job::new(wat("hello"));
    let (a, b) = tokio::join!(
        h.exec.execute(slow.request()),
        exec2.execute(fast.request())
    );
    assert!(matches!(a, Err(ExecError::Timeout { .. })), "{a:?}");
    assert_eq!(b.unwrap().exit_code, 0);
    h.assert_clean();
}

#[tokio::test]
async fn an_abandoned_run_stops_and_cleans_up() {
    let h = Harness::new();
    // Ten minutes of spinning unless dropping the future stops it.
    let job = Job::new(wat("loop")).resources(|r| r.timeout_ms = 600_000);
    let exec = h.exec.clone();
    let req = job.request();
    let task = tokio::spawn(async move { exec.execute(req).await });
    let runs = h.scratch.path().join("runs");
    let count = || std::fs::read_dir(&runs).map(|d| d.count()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count() == 0 {
        assert!(Instant::now() < deadline, "run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count() != 0 {
        assert!(
            Instant::now() < deadline,
            "abandoned run still going after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn engine_version_names_wasmtime() {
    let v = WasmExecutor::engine_version();
    assert!(v.starts_with("wasmtime 36."), "{v}");
}

#[tokio::test]
async fn c_hello_uses_stdio_env_and_out() {
    let h = Harness::new();
    let job = Job::new(c_program("hello"))
        .args(&["first", "second arg"])
        .env("GREETING", "agora")
        .stdin(b"12345")
        .output("greeting.txt");
    let b = h.run(&job).await.unwrap();
    assert_eq!(b.exit_code, 0, "stderr: {}", text(&b.stderr));
    assert_eq!(
        text(&b.stdout),
        "hello from C\narg 0: main.wasm\narg 1: first\narg 2: second arg\n\
         GREETING=agora\nstdin bytes: 5\n"
    );
    assert_eq!(text(&b.stderr), "done\n");
    assert_eq!(text(&b.outputs["greeting.txt"]), "greetings, agora\n");
}

/// The same computation as testnet/fixtures/wasm/c/cpu.c, in Rust.
fn cpu_expected(limit: u32) -> String {
    let is_prime = |n: u32| {
        if n < 2 {
            return false;
        }
        if n.is_multiple_of(2) {
            return n == 2;
        }
        let mut d = 3u32;
        while u64::from(d) * u64::from(d) <= u64::from(n) {
            if n.is_multiple_of(d) {
                return false;
            }
            d += 2;
        }
        true
    };
    let mut count = 0u64;
    let mut hash: u64 = 0xcbf29ce484222325;
    for n in 0..limit {
        if is_prime(n) {
            count += 1;
            for b in 0..4 {
                hash ^= u64::from((n >> (8 * b)) & 0xff);
                hash = hash.wrapping_mul(0x100000001b3);
            }
        }
    }
    format!("primes below {limit}: {count}\nchecksum: {hash:016x}\n")
}

#[tokio::test]
async fn c_cpu_benchmark_computes_the_right_answer() {
    let h = Harness::new();
    let b = h
        .run(&Job::new(c_program("cpu")).args(&["30000"]))
        .await
        .unwrap();
    assert_eq!(b.exit_code, 0, "stderr: {}", text(&b.stderr));
    assert_eq!(text(&b.stdout), cpu_expected(30_000));
    assert!(text(&b.stdout).starts_with("primes below 30000: 3245\n"));
    let bad = h
        .run(&Job::new(c_program("cpu")).args(&["lots"]))
        .await
        .unwrap();
    assert_eq!(bad.exit_code, 2, "usage error is the program's exit code");
}
