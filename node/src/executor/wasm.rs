//! Wasm executor: runs WASI preview 1 command modules under wasmtime.
//!
//! In: an [`ExecRequest`] whose spec names a Wasm module, plus the module,
//! stdin and input bytes. Out: a [`ResultBundle`] or an [`ExecError`] that
//! names the broken limit.
//!
//! What a job sees: `argv = ["main.wasm", args...]`, the spec's env, its
//! stdin bytes, its inputs read-only under `/in`, a writable `/out` (the
//! declared files there become the bundle's outputs), and nothing else of
//! the host: no inherited env or stdio, no other directories, no network.
//!
//! **Invariant:** deterministic by default. NaN canonicalization, no
//! threads, deterministic relaxed SIMD, clocks that start at a fixed instant
//! and advance a fixed step per read, and random bytes seeded from the job
//! id. Two honest executors running the same job produce the same result
//! hash (see [`determinism`] for what is pinned and how).
//!
//! **Limits:** the wall-clock limit is enforced through epoch interruption
//! (one ticker thread per executor bumps the engine epoch every
//! [`EPOCH_TICK`]) and, for host calls that block such as sleeps, by
//! dropping the run's future; fuel when the spec sets it; memory and tables
//! through a [`wasmtime::ResourceLimiter`] that traps instead of failing
//! `memory.grow`; stdout/stderr through capped in-memory pipes that trap
//! on the first write past the cap; `/out` disk use through a periodic
//! check from the epoch callback and a final one; open files through a
//! cap on WASI handles ([`MAX_GUEST_HANDLES`]).
//!
//! **Cache:** compiled modules are kept in memory (least-recently-used,
//! keyed by module content id) and, if [`WasmConfig::cache_dir`] is set, on
//! disk through wasmtime's own compilation cache, so a restarted node does
//! not recompile either. [`WasmExecutor::cache_stats`] counts hits and real
//! compilations.
//!
//! **Not yet pinned** (programs that depend on these may make honest
//! executors disagree, which ends in NoConsensus, never in a wrong
//! verified result): the order of `fd_readdir` entries and the inode and
//! device numbers in `filestat` come from the host filesystem; wasmtime's
//! WASI offers no hook to fix them.
//!
//! Runs happen on tokio's blocking pool, each driving wasmtime's async API
//! on a private current-thread runtime, so the caller's reactor is never
//! blocked.
//!
//! Length: just over 700 lines: one run's set-up and its limit mapping
//! read together; limits, pipes, files, determinism and the module cache
//! already live in `wasm/`.

mod cache;
pub mod determinism;
mod fs;
mod limits;
mod pipe;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agora_protocol::{ContentId, ExecutorSpec, ResultBundle};
use serde_bytes::ByteBuf;
use wasmtime::{
    Cache, CacheConfig, Config, Engine, ExternType, InstancePre, Linker, Module, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::preview1::{self, WasiP1Ctx};
use wasmtime_wasi::{DirPerms, FilePerms, I32Exit, ResourceTableError, WasiCtxBuilder, WasiView};

use self::cache::LruMap;
use self::determinism::{job_rng, job_seed_u128, StepClock};
use self::fs::RunDirs;
use self::limits::{Limiter, Stop, StopFlag};
use self::pipe::CappedPipe;
use super::{Capabilities, ExecError, ExecRequest, Executor, OutputStream};
use crate::lock;

/// `argv[0]` of every job: fixed, so programs that print it agree.
pub const ARGV0: &str = "main.wasm";
/// How often the ticker thread bumps the engine epoch; the granularity of
/// the wall-clock limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Check `/out` disk use every this many epoch ticks (~100 ms).
const USAGE_CHECK_TICKS: u64 = 10;
/// How long past a job's timeout the caller waits for the run thread before
/// giving up on it. Only compilation of a huge module can get here: the run
/// itself stops within a tick of its limit.
const JOIN_GRACE: Duration = Duration::from_secs(60);
/// Most WASI handles (open files, directories, streams) one run may hold.
/// Each open file is a host file descriptor of the daemon, so a job must
/// not be able to exhaust the process's descriptor limit.
pub const MAX_GUEST_HANDLES: usize = 1024;
/// Default number of compiled modules kept in memory.
pub const DEFAULT_MEMORY_CACHE_ENTRIES: usize = 32;

/// How a node configures its Wasm executor.
#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// Directory for wasmtime's on-disk compilation cache; `None` keeps
    /// compiled modules in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Most compiled modules kept in memory.
    pub memory_cache_entries: usize,
    /// Where per-run temp dirs (`/in`, `/out`) are created; `None` means
    /// the system temp dir.
    pub scratch_dir: Option<PathBuf>,
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            memory_cache_entries: DEFAULT_MEMORY_CACHE_ENTRIES,
            scratch_dir: None,
        }
    }
}

/// Counters of the compiled-module cache, since the executor was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Runs whose module was already compiled in memory.
    pub memory_hits: u64,
    /// Modules loaded from the on-disk cache instead of being compiled.
    pub disk_hits: u64,
    /// Modules actually compiled by cranelift.
    pub compilations: u64,
    /// Compiled modules held in memory now.
    pub cached_modules: usize,
}

/// The Wasm executor. Cheap to clone; clones share the engine, the module
/// cache and the epoch ticker, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct WasmExecutor {
    /// Everything shared between clones.
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WasmExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmExecutor")
            .field("scratch_dir", &self.inner.scratch_dir)
            .field("disk_cache", &self.inner.disk_cache.is_some())
            .field("stats", &self.cache_stats())
            .finish_non_exhaustive()
    }
}

/// Store data of one run.
struct RunState {
    /// WASI preview 1 state: args, env, stdio, preopens, clocks, random.
    wasi: WasiP1Ctx,
    /// Memory and table limits.
    limiter: Limiter,
}

struct Inner {
    /// The engine: one config for every job, so compiled code is shared.
    engine: Engine,
    /// WASI preview 1 imports, built once.
    linker: Linker<RunState>,
    /// Compiled and import-checked modules by content id.
    modules: Mutex<LruMap<InstancePre<RunState>>>,
    /// Serialises compilation: on a small box one compile at a time is
    /// fastest, and two runs of a new module then compile it once.
    compile_lock: Mutex<()>,
    /// wasmtime's on-disk cache, kept to read its hit counter.
    disk_cache: Option<Cache>,
    /// Parent of per-run temp dirs.
    scratch_dir: PathBuf,
    /// See [`CacheStats::memory_hits`].
    memory_hits: AtomicU64,
    /// See [`CacheStats::disk_hits`].
    disk_hits: AtomicU64,
    /// See [`CacheStats::compilations`].
    compilations: AtomicU64,
    /// Bumps the engine epoch; stops when `Inner` drops.
    _ticker: Ticker,
}

/// The thread that bumps the engine epoch every [`EPOCH_TICK`].
struct Ticker {
    /// Dropping this wakes the thread and makes it exit.
    stop: Option<SyncSender<()>>,
    /// Joined on drop so no thread outlives the executor.
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let (stop, rx) = mpsc::sync_channel::<()>(0);
        let thread = std::thread::Builder::new()
            .name("agora-wasm-epoch".into())
            .spawn(move || {
                // A message or a dropped sender both mean stop.
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::warn!("wasm epoch ticker thread panicked");
            }
        }
    }
}

fn setup_error(context: &str, e: impl std::fmt::Display) -> ExecError {
    ExecError::Io {
        context: context.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl WasmExecutor {
    /// Builds the engine (deterministic settings, fuel and epoch
    /// interruption on), the WASI linker, the optional disk cache, and
    /// starts the epoch ticker.
    pub fn new(config: WasmConfig) -> Result<Self, ExecError> {
        let mut wc = Config::new();
        wc.async_support(true)
            .epoch_interruption(true)
            .consume_fuel(true)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true)
            .wasm_threads(false)
            .wasm_multi_memory(false)
            .wasm_memory64(false);
        let disk_cache = match &config.cache_dir {
            None => None,
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| ExecError::Io {
                    context: format!("creating wasm cache dir {}", dir.display()),
                    source,
                })?;
                // wasmtime wants an absolute cache path.
                let dir = dir.canonicalize().map_err(|source| ExecError::Io {
                    context: format!("resolving wasm cache dir {}", dir.display()),
                    source,
                })?;
                let mut cc = CacheConfig::new();
                cc.with_directory(dir);
                let cache = Cache::new(cc)
                    .map_err(|e| setup_error("configuring the wasm compilation cache", e))?;
                wc.cache(Some(cache.clone()));
                Some(cache)
            }
        };
        let engine =
            Engine::new(&wc).map_err(|e| setup_error("building the wasmtime engine", e))?;
        let mut linker: Linker<RunState> = Linker::new(&engine);
        preview1::add_to_linker_async(&mut linker, |s: &mut RunState| &mut s.wasi)
            .map_err(|e| setup_error("linking WASI preview 1", e))?;
        let ticker = Ticker::start(engine.clone()).map_err(|source| ExecError::Io {
            context: "starting the wasm epoch ticker".into(),
            source,
        })?;
        let scratch_dir = config.scratch_dir.unwrap_or_else(std::env::temp_dir);
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                modules: Mutex::new(LruMap::new(config.memory_cache_entries)),
                compile_lock: Mutex::new(()),
                disk_cache,
                scratch_dir,
                memory_hits: AtomicU64::new(0),
                disk_hits: AtomicU64::new(0),
                compilations: AtomicU64::new(0),
                _ticker: ticker,
            }),
        })
    }

    /// The runtime and its version, for capability adverts
    /// (e.g. `wasmtime 36.0.20`).
    pub fn engine_version() -> String {
        // wasmtime-environ is pinned to the exact wasmtime version, so its
        // version constant is wasmtime's.
        format!(
            "wasmtime {}",
            wasmtime::component::__internal::wasmtime_environ::VERSION
        )
    }

    /// Checks that `bytes` are a binary Wasm module this engine would
    /// compile (its features and limits), without compiling it: a
    /// submitter finds a bad module before executors are sent it.
    pub fn validate(&self, bytes: &[u8]) -> Result<(), ExecError> {
        Module::validate(&self.inner.engine, bytes)
            .map_err(|e| ExecError::InvalidModule(one_line(&format!("{e:#}"))))
    }

    /// Compiled-module cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            memory_hits: self.inner.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.inner.disk_hits.load(Ordering::Relaxed),
            compilations: self.inner.compilations.load(Ordering::Relaxed),
            cached_modules: lock(&self.inner.modules).len(),
        }
    }
}

/// Sets the shared cancel flag when the caller's future is dropped, so an
/// abandoned run stops at its next epoch tick instead of running on.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Executor for WasmExecutor {
    fn kind(&self) -> &'static str {
        "wasm"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: self.kind(),
            version: Some(Self::engine_version()),
            images: None,
        }
    }

    fn program(&self, spec: &ExecutorSpec) -> Option<ContentId> {
        match spec {
            ExecutorSpec::Wasm { module } => Some(*module),
            _ => None,
        }
    }

    async fn execute(&self, req: ExecRequest) -> Result<ResultBundle, ExecError> {
        let limit_ms = req.spec.spec().resources.timeout_ms;
        let span = tracing::info_span!("wasm_exec", job = %req.job_id.short());
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let flag = Arc::clone(&cancel.0);
        let inner = Arc::clone(&self.inner);
        let handle = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let result = inner.run(req, flag);
            match &result {
                Ok(b) => {
                    tracing::debug!(exit_code = b.exit_code, ms = b.duration_ms, "wasm run done")
                }
                Err(e) => tracing::debug!(error = %e, kind = e.kind(), "wasm run failed"),
            }
            result
        });
        let wait = Duration::from_millis(limit_ms).saturating_add(JOIN_GRACE);
        match tokio::time::timeout(wait, handle).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(ExecError::Trap(format!("wasm run thread failed: {join}"))),
            Err(_) => {
                tracing::warn!(limit_ms, "wasm run thread did not finish; abandoning it");
                Err(ExecError::Timeout { limit_ms })
            }
        }
    }
}

/// Resolves once `flag` is set, checking it every [`EPOCH_TICK`].
async fn cancelled(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(EPOCH_TICK).await;
    }
}

/// Which step of a run an error came from.
enum Phase {
    /// Instantiation: imports, initial memory, the start section.
    Instantiate(anyhow::Error),
    /// The `_start` call.
    Run(anyhow::Error),
}

impl Inner {
    /// The module compiled and checked to be a runnable WASI command, from
    /// the memory cache, the disk cache or a fresh compilation.
    fn instance_pre(
        &self,
        id: ContentId,
        bytes: &[u8],
    ) -> Result<InstancePre<RunState>, ExecError> {
        if let Some(pre) = lock(&self.modules).get(&id) {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(pre);
        }
        let _one_compile_at_a_time = lock(&self.compile_lock);
        // Another run may have compiled it while we waited for the lock.
        if let Some(pre) = lock(&self.modules).get(&id) {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(pre);
        }
        let disk_hits_before = self.disk_cache.as_ref().map(Cache::cache_hits);
        // from_binary, not new: the wasmtime `wat` feature would make new()
        // accept text too, and a job's module is defined as binary Wasm.
        let module = Module::from_binary(&self.engine, bytes)
            .map_err(|e| ExecError::InvalidModule(one_line(&format!("{e:#}"))))?;
        let from_disk = match (&self.disk_cache, disk_hits_before) {
            (Some(c), Some(before)) => c.cache_hits() > before,
            _ => false,
        };
        if from_disk {
            self.disk_hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.compilations.fetch_add(1, Ordering::Relaxed);
        }
        check_command(&module)?;
        let pre = self.linker.instantiate_pre(&module).map_err(|e| {
            ExecError::InvalidModule(one_line(&format!(
                "unsupported imports (only WASI preview 1 is provided): {e:#}"
            )))
        })?;
        if let Some(evicted) = lock(&self.modules).insert(id, pre.clone()) {
            tracing::debug!(module = %evicted.short(), "evicted compiled module from memory cache");
        }
        Ok(pre)
    }

    /// One run, start to finish, on the current (blocking) thread.
    fn run(
        &self,
        mut req: ExecRequest,
        cancel: Arc<AtomicBool>,
    ) -> Result<ResultBundle, ExecError> {
        let spec = req.spec.spec();
        let module_id = match &spec.executor {
            ExecutorSpec::Wasm { module } => *module,
            other => {
                return Err(ExecError::WrongExecutor {
                    expected: "wasm",
                    found: other.kind(),
                })
            }
        };
        let actual = ContentId::of(&req.module);
        if actual != module_id {
            return Err(ExecError::InvalidModule(format!(
                "module bytes hash to {actual} but the spec names {module_id}"
            )));
        }
        let pre = self.instance_pre(module_id, &req.module)?;
        let mut inputs = Vec::with_capacity(spec.inputs.len());
        for name in spec.inputs.keys() {
            let bytes = req.inputs.get(name).ok_or_else(|| ExecError::Io {
                context: format!("input {name}"),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "declared by the spec but its bytes were not supplied",
                ),
            })?;
            inputs.push((name.as_str(), bytes.as_slice()));
        }
        let dirs = RunDirs::create(&self.scratch_dir, inputs, &spec.outputs)?;
        let stdin = std::mem::take(&mut req.stdin);
        let result = self.run_in(&req, stdin, pre, &dirs, cancel);
        // Clean up on every path; a failed removal must not hide the
        // result, but the operator should hear about the leftover dir.
        if let Err(e) = dirs.remove() {
            tracing::warn!(error = %e, "could not remove wasm run dir");
        }
        result
    }

    fn run_in(
        &self,
        req: &ExecRequest,
        stdin: Vec<u8>,
        pre: InstancePre<RunState>,
        dirs: &RunDirs,
        cancel: Arc<AtomicBool>,
    ) -> Result<ResultBundle, ExecError> {
        let spec = req.spec.spec();
        let res = &spec.resources;
        let limit_ms = res.timeout_ms;
        let cap_bytes = res.max_output_bytes;
        let cap = usize::try_from(cap_bytes).unwrap_or(usize::MAX);
        let stdout = CappedPipe::new(cap);
        let stderr = CappedPipe::new(cap);

        let mut b = WasiCtxBuilder::new();
        b.arg(ARGV0)
            .args(&spec.args)
            .stdin(MemoryInputPipe::new(stdin))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(StepClock::wall())
            .monotonic_clock(StepClock::monotonic())
            .secure_random(job_rng(&req.job_id, "secure"))
            .insecure_random(job_rng(&req.job_id, "insecure"))
            .insecure_random_seed(job_seed_u128(&req.job_id));
        for (k, v) in &spec.env {
            b.env(k, v);
        }
        b.preopened_dir(dirs.input_dir(), "/in", DirPerms::READ, FilePerms::READ)
            .map_err(|e| setup_error("preopening /in", format!("{e:#}")))?;
        b.preopened_dir(dirs.output_dir(), "/out", DirPerms::all(), FilePerms::all())
            .map_err(|e| setup_error("preopening /out", format!("{e:#}")))?;

        let mut wasi = b.build_p1();
        wasi.ctx().table.set_max_capacity(MAX_GUEST_HANDLES);
        let mut store = Store::new(
            &self.engine,
            RunState {
                wasi,
                limiter: Limiter::new(res.memory_bytes),
            },
        );
        store.limiter(|s| &mut s.limiter);
        store
            .set_fuel(res.fuel.unwrap_or(u64::MAX))
            .map_err(|e| setup_error("setting fuel", e))?;

        let stop = Arc::new(StopFlag::default());
        let watch = Arc::clone(&cancel);
        let limit = Duration::from_millis(limit_ms);
        // Budget for everything in /out: each declared file at its cap,
        // plus one cap of scratch space.
        let budget = cap_bytes.saturating_mul(spec.outputs.len() as u64 + 1);
        let out_dir = dirs.output_dir();
        let started = Instant::now();
        {
            let stop = Arc::clone(&stop);
            let out_dir = out_dir.clone();
            let declared = spec.outputs.clone();
            let mut ticks: u64 = 0;
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_ctx| {
                let abort = |s: Stop| {
                    stop.record(s.clone());
                    Err(anyhow::Error::new(s))
                };
                if cancel.load(Ordering::SeqCst) {
                    return abort(Stop::Cancelled);
                }
                if started.elapsed() >= limit {
                    return abort(Stop::Timeout);
                }
                ticks += 1;
                if ticks.is_multiple_of(USAGE_CHECK_TICKS) {
                    if let Err(over) = fs::check_usage(&out_dir, &declared, cap_bytes, budget) {
                        return abort(Stop::OutputTooLarge(OutputStream::File(over.path)));
                    }
                }
                Ok(UpdateDeadline::Continue(1))
            });
        }

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|source| ExecError::Io {
                context: "starting the wasm run's runtime".into(),
                source,
            })?;
        let outcome = rt.block_on(async {
            // Catches host calls that block past the limit (sleeps, polls),
            // which never reach an epoch check.
            let run = tokio::time::timeout(limit, async {
                let instance = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(Phase::Instantiate)?;
                let start = instance
                    .get_typed_func::<(), ()>(&mut store, "_start")
                    .map_err(Phase::Instantiate)?;
                start.call_async(&mut store, ()).await.map_err(Phase::Run)
            });
            // And a cancel during such a call: the guest is dropped
            // mid-call instead of sleeping on after the caller left.
            tokio::select! {
                r = run => r,
                () = cancelled(&watch) => {
                    stop.record(Stop::Cancelled);
                    Ok(Ok(()))
                }
            }
        });
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let oom = store.data().limiter.hit();
        // Close the guest's files before reading /out.
        drop(store);
        drop(rt);

        let too_large = |stream| ExecError::OutputTooLarge {
            stream,
            limit_bytes: cap_bytes,
        };
        if stdout.overflowed() {
            return Err(too_large(OutputStream::Stdout));
        }
        if stderr.overflowed() {
            return Err(too_large(OutputStream::Stderr));
        }
        match stop.get() {
            Some(Stop::Timeout) => return Err(ExecError::Timeout { limit_ms }),
            Some(Stop::Cancelled) => return Err(ExecError::Trap("run cancelled".into())),
            Some(Stop::OutOfMemory) => {
                return Err(ExecError::OutOfMemory {
                    limit_bytes: res.memory_bytes,
                })
            }
            Some(Stop::OutputTooLarge(s)) => return Err(too_large(s)),
            None => {}
        }
        if oom {
            return Err(ExecError::OutOfMemory {
                limit_bytes: res.memory_bytes,
            });
        }
        let exit_code = match outcome {
            Err(_elapsed) => return Err(ExecError::Timeout { limit_ms }),
            Ok(Ok(())) => 0,
            Ok(Err(Phase::Run(e))) => classify(e, res.fuel, limit_ms)?,
            Ok(Err(Phase::Instantiate(e))) => {
                // A trap or exit in the module's start section is the
                // program's doing; anything else means it cannot be run.
                if e.downcast_ref::<Trap>().is_some() || e.downcast_ref::<I32Exit>().is_some() {
                    classify(e, res.fuel, limit_ms)?
                } else {
                    return Err(ExecError::InvalidModule(one_line(&format!(
                        "cannot instantiate: {e:#}"
                    ))));
                }
            }
        };
        // Judge /out after the run as well, so the verdict does not hinge
        // on whether a periodic check happened to catch it.
        if let Err(over) = fs::check_usage(&out_dir, &spec.outputs, cap_bytes, budget) {
            return Err(too_large(OutputStream::File(over.path)));
        }
        let outputs = fs::collect_outputs(&out_dir, &spec.outputs, cap_bytes)?
            .into_iter()
            .map(|(k, v)| (k, ByteBuf::from(v)))
            .collect();
        Ok(ResultBundle {
            exit_code,
            stdout: ByteBuf::from(stdout.take()),
            stderr: ByteBuf::from(stderr.take()),
            outputs,
            duration_ms,
        })
    }
}

/// Maps an error from running guest code to an exit code (for
/// `proc_exit`) or the error naming what stopped it.
fn classify(e: anyhow::Error, fuel: Option<u64>, limit_ms: u64) -> Result<i32, ExecError> {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return Ok(exit.0);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Err(ExecError::OutOfFuel {
            fuel: fuel.unwrap_or(u64::MAX),
        }),
        Some(Trap::Interrupt) => Err(ExecError::Timeout { limit_ms }),
        Some(trap) => {
            // Trap's Display starts with "wasm trap: ", as does ExecError's.
            let msg = trap.to_string();
            let msg = msg.strip_prefix("wasm trap: ").unwrap_or(&msg);
            Err(ExecError::Trap(one_line(msg)))
        }
        None if e.downcast_ref::<ResourceTableError>().is_some() => Err(ExecError::Trap(format!(
            "too many open files, directories or streams (limit {MAX_GUEST_HANDLES} WASI handles)"
        ))),
        None => {
            // A host function failed (e.g. proc_exit with a status WASI
            // forbids). The outer layers are wasmtime's backtrace; the
            // root cause is what the user can act on.
            tracing::debug!(error = ?e, "wasm run failed in a host call");
            Err(ExecError::Trap(one_line(&e.root_cause().to_string())))
        }
    }
}

/// Collapses runs of whitespace (wasmtime messages may span lines) so the
/// message fits one log line and one JSON string.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Checks that the module is a WASI command: it exports `_start` taking
/// and returning nothing.
fn check_command(module: &Module) -> Result<(), ExecError> {
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => Ok(()),
        Some(_) => Err(ExecError::InvalidModule(
            "`_start` must be a function taking and returning nothing".into(),
        )),
        None => Err(ExecError::InvalidModule(
            "no `_start` export: not a WASI command module (reactors and libraries cannot be run)"
                .into(),
        )),
    }
}
