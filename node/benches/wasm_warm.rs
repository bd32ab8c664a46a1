//! In-process cost of a trivial Wasm job with a warm module cache: the
//! per-job overhead agora adds around wasmtime (store, WASI context, /in and
//! /out scratch dirs, limits, hashing). Run:
//! `cargo bench -p agora-node --bench wasm_warm`.
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use agora_node::executor::wasm::{WasmConfig, WasmExecutor};
use agora_node::executor::{ExecRequest, Executor};
use agora_protocol::{validate, ContentId, ExecutorSpec, JobSpec, Replication, Resources};
use criterion::{criterion_group, criterion_main, Criterion};

fn request(module: &[u8]) -> ExecRequest {
    let spec = JobSpec {
        executor: ExecutorSpec::Wasm {
            module: ContentId::of(module),
        },
        args: vec![],
        env: BTreeMap::new(),
        stdin: None,
        inputs: BTreeMap::new(),
        outputs: vec![],
        resources: Resources::default(),
        replication: Replication { n: 1, k: 1 },
        created_at_ms: 0,
        nonce: 0,
        requires: BTreeMap::new(),
    };
    ExecRequest {
        job_id: ContentId::of(b"bench"),
        spec: validate(spec).unwrap_or_else(|e| panic!("bench spec invalid: {e}")),
        module: module.to_vec(),
        stdin: vec![],
        inputs: BTreeMap::new(),
    }
}

fn benches(c: &mut Criterion) {
    let wat = include_str!("../../testnet/fixtures/wasm/hello.wat");
    let module = wat::parse_str(wat).unwrap_or_else(|e| panic!("hello.wat: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let exec = WasmExecutor::new(WasmConfig::default()).unwrap_or_else(|e| panic!("executor: {e}"));
    let req = request(&module);
    // Warm the compiled-module cache once.
    rt.block_on(exec.execute(req.clone()))
        .unwrap_or_else(|e| panic!("warm-up run: {e}"));
    c.bench_function("wasm_trivial_job_warm_cache", |b| {
        b.iter(|| {
            rt.block_on(exec.execute(req.clone()))
                .unwrap_or_else(|e| panic!("run: {e}"))
        })
    });
}

criterion_group!(group, benches);
criterion_main!(group);
