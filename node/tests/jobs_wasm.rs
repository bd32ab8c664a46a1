//! The job lifecycle on a five-node network of real daemons on loopback:
//! a Wasm job verified 2-of-3 by three other nodes with the same result as
//! a local run, fast failures when no node can run a job, and 100 jobs
//! from two submitters all verified exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jobs_harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use agora_node::api::types::{JobState, SubmitExecutor};
use agora_node::executor::wasm::{WasmConfig, WasmExecutor};
use agora_node::executor::{ExecRequest, Executor};
use agora_protocol::{validate, ContentId, ExecutorSpec, JobSpec, Replication, Resources};
use jobs_harness::{fixture, wait_final, wasm_job, Net, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_jobs_on_a_five_node_network() {
    let net = Net::start(5, false).await;
    let sub = net.node(4);
    let jobs = sub.jobs();

    // A job with an input file and a declared output, verified 2-of-3.
    let module = fixture("copy");
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let module_id = jobs.blobs().put(&module).unwrap();
    let data_id = jobs.blobs().put(&data).unwrap();
    let mut req = wasm_job(&module_id.to_hex()[..12], 3, 2);
    req.args = vec!["data.bin".into(), "copy.bin".into()];
    req.inputs.insert("data.bin".into(), data_id.to_hex());
    req.outputs = vec!["copy.bin".into()];
    let rec = jobs.submit(req.clone()).await.unwrap();
    assert_eq!(rec.state, JobState::Pending);
    let done = wait_final(sub, &rec.id, DEADLINE).await;
    assert_eq!(done.state, JobState::Verified, "{done:#?}");
    let executors: Vec<&str> = done.executors.iter().map(|e| e.peer_id.as_str()).collect();
    let distinct: BTreeSet<&str> = executors.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        executors.len(),
        "executors are distinct peers"
    );
    assert!(
        !distinct.contains(sub.peer_id().to_base58().as_str()),
        "never the submitter"
    );
    let agreeing = done
        .executors
        .iter()
        .filter(|e| e.agrees == Some(true))
        .count();
    assert!(agreeing >= 2, "{done:#?}");
    let kinds: Vec<&str> = done.events.iter().map(|e| e.kind.as_str()).collect();
    for k in [
        "submitted",
        "offered",
        "bid",
        "assigned",
        "attested",
        "verified",
    ] {
        assert!(kinds.contains(&k), "event {k} missing: {kinds:?}");
    }

    // The same job run locally, as `agora exec` does, gives the same
    // result hash, stdout and output.
    let result = jobs.result(&rec.id[..10]).unwrap();
    let local = WasmExecutor::new(WasmConfig::default())
        .unwrap()
        .execute(ExecRequest {
            job_id: ContentId::of(b"local"),
            spec: validate(JobSpec {
                executor: ExecutorSpec::Wasm { module: module_id },
                args: req.args.clone(),
                env: BTreeMap::new(),
                stdin: None,
                inputs: [("data.bin".to_string(), data_id)].into(),
                outputs: req.outputs.clone(),
                resources: Resources {
                    timeout_ms: 30_000,
                    ..Resources::default()
                },
                replication: Replication::default(),
                created_at_ms: 0,
                nonce: 0,
                requires: BTreeMap::new(),
            })
            .unwrap(),
            module: module.clone(),
            stdin: vec![],
            inputs: [("data.bin".to_string(), data.clone())].into(),
        })
        .await
        .unwrap();
    assert_eq!(result.result_hash, local.result_hash().to_hex());
    assert_eq!(result.exit_code, 0);
    let blob = |id: &str| jobs.blobs().get(&id.parse().unwrap()).unwrap();
    assert_eq!(blob(&result.stdout.id), local.stdout.to_vec());
    assert_eq!(blob(&result.stdout.id), b"copied\n");
    assert_eq!(blob(&result.outputs["copy.bin"].id), data);

    // Nobody holds this image: the job fails within seconds, naming it.
    let digest = format!("sha256:{}", "ab".repeat(32));
    let mut docker = wasm_job("", 3, 2);
    docker.executor = SubmitExecutor::Docker {
        image: format!("nothere@{digest}"),
    };
    let started = Instant::now();
    let rec = jobs.submit(docker).await.unwrap();
    let failed = wait_final(sub, &rec.id, Duration::from_secs(20)).await;
    assert_eq!(failed.state, JobState::Failed);
    let reason = failed.reason.unwrap();
    assert!(
        reason.contains("docker") && reason.contains("4 online node(s)"),
        "{reason}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    // More memory than any node offers: fails at once, naming the memory.
    let mut big = wasm_job(&module_id.to_hex(), 3, 2);
    big.memory_bytes = Some(60 * 1024 * 1024 * 1024);
    let rec = jobs.submit(big).await.unwrap();
    let failed = wait_final(sub, &rec.id, Duration::from_secs(20)).await;
    let reason = failed.reason.unwrap();
    assert!(reason.contains("61440 MiB of memory"), "{reason}");
    assert!(reason.contains("the most any offers is"), "{reason}");

    // 100 jobs at once from two nodes: all verified, none lost or
    // duplicated.
    let hello = fixture("hello");
    let subs = [net.node(3), net.node(4)];
    let mut ids = Vec::new();
    let mut submitted = Vec::new();
    for (i, s) in subs.iter().enumerate() {
        let h = s.jobs().blobs().put(&hello).unwrap().to_hex();
        for _ in 0..50 {
            let j = s.jobs().clone();
            let req = wasm_job(&h, 3, 2);
            submitted.push(tokio::spawn(
                async move { (i, j.submit(req).await.unwrap().id) },
            ));
        }
    }
    for s in submitted {
        ids.push(s.await.unwrap());
    }
    let unique: BTreeSet<&String> = ids.iter().map(|(_, id)| id).collect();
    assert_eq!(unique.len(), 100, "100 distinct jobs");
    for (i, id) in &ids {
        let r = wait_final(subs[*i], id, DEADLINE).await;
        assert_eq!(r.state, JobState::Verified, "{r:#?}");
        assert_eq!(r.exit_code, Some(0));
    }
    for (i, s) in subs.iter().enumerate() {
        let listed = s.jobs().list(Some(JobState::Verified)).unwrap();
        let mine: BTreeSet<&String> = ids
            .iter()
            .filter(|(j, _)| *j == i)
            .map(|(_, id)| id)
            .collect();
        let found: BTreeSet<&String> = listed
            .iter()
            .map(|r| &r.id)
            .filter(|id| mine.contains(id))
            .collect();
        assert_eq!(found.len(), 50, "node {i} lists its 50 jobs as verified");
    }
    net.shutdown().await;
}
