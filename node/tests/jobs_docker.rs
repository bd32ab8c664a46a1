//! A Docker job submitted on a node that is not an executor is verified
//! 2-of-3 by three other nodes, with the same result as a local run of the
//! same container. Fails (never skips) when Docker or the test image is
//! missing: build it with `testnet/fixtures/docker/build-image.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jobs_harness;

use std::collections::{BTreeMap, BTreeSet};

use agora_node::api::types::{JobState, SubmitExecutor};
use agora_node::executor::docker::{DockerConfig, DockerExecutor};
use agora_node::executor::{ExecRequest, Executor};
use agora_protocol::{validate, ContentId, ExecutorSpec, JobSpec, Replication, Resources};
use jobs_harness::{wait_final, wasm_job, Net, DEADLINE};

const IMAGE: &str = "agora-busybox:latest";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_job_is_verified_two_of_three() {
    let local = DockerExecutor::connect(DockerConfig::default())
        .await
        .unwrap_or_else(|e| panic!("Docker is required for this test: {e}"));
    let digest = local
        .resolve_image(IMAGE)
        .await
        .unwrap_or_else(|e| panic!("{IMAGE}: {e}; run testnet/fixtures/docker/build-image.sh"));
    let net = Net::start(4, true).await;
    let sub = net.node(3);
    let args: Vec<String> = ["sh", "-c", "echo agora on docker; echo $((6*7))"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut req = wasm_job("", 3, 2);
    req.executor = SubmitExecutor::Docker {
        image: IMAGE.into(),
    };
    req.args = args.clone();
    let rec = sub.jobs().submit(req).await.unwrap();
    let done = wait_final(sub, &rec.id, DEADLINE).await;
    assert_eq!(done.state, JobState::Verified, "{done:#?}");
    assert_eq!(done.program, digest, "the image is pinned by id");
    let execs: BTreeSet<&str> = done.executors.iter().map(|e| e.peer_id.as_str()).collect();
    assert_eq!(execs.len(), done.executors.len());
    assert!(!execs.contains(sub.peer_id().to_base58().as_str()));
    assert!(
        done.executors
            .iter()
            .filter(|e| e.agrees == Some(true))
            .count()
            >= 2
    );

    let result = sub.jobs().result(&rec.id).unwrap();
    let stdout = sub
        .jobs()
        .blobs()
        .get(&result.stdout.id.parse().unwrap())
        .unwrap();
    let mine = local
        .execute(ExecRequest {
            job_id: ContentId::of(b"local docker run"),
            spec: validate(JobSpec {
                executor: ExecutorSpec::Docker {
                    image: IMAGE.into(),
                    digest,
                    manifest: None,
                },
                args,
                env: BTreeMap::new(),
                stdin: None,
                inputs: BTreeMap::new(),
                outputs: vec![],
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
            module: vec![],
            stdin: vec![],
            inputs: BTreeMap::new(),
        })
        .await
        .unwrap();
    assert_eq!(stdout, b"agora on docker\n42\n");
    assert_eq!(stdout, mine.stdout.to_vec());
    assert_eq!(result.result_hash, mine.result_hash().to_hex());
    net.shutdown().await;
}
