//! Docker executor against the real local engine and the `agora-busybox`
//! test image (build it with `testnet/fixtures/docker/build-image.sh`).
//!
//! These tests fail, never skip, when Docker or the image is missing. They
//! take one lock so only one container runs at a time on the 2-core box.

// Helpers outside #[test] fns are not covered by clippy.toml's test
// allowances; here a failed unwrap is exactly the loud failure wanted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use agora_node::executor::docker::{DockerConfig, DockerExecutor, LABEL_JOB, LABEL_NODE};
use agora_node::executor::{ExecError, ExecRequest, Executor, OutputStream};
use agora_protocol::{validate, ContentId, ExecutorSpec, JobSpec, Replication, Resources};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StartContainerOptions,
};
use bollard::Docker;

const IMAGE: &str = "agora-busybox:latest";
const NODE: &str = "agora-docker-tests";
const BUILD_HINT: &str = "run testnet/fixtures/docker/build-image.sh (needs a running Docker \
                          engine and Debian's busybox-static) before these tests";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Harness {
    exec: DockerExecutor,
    digest: String,
    docker: Docker,
}

async fn harness_with(config: DockerConfig) -> Harness {
    let exec = match DockerExecutor::connect(config).await {
        Ok(e) => e,
        Err(e) => panic!("Docker is required for these tests and is not usable: {e}. {BUILD_HINT}"),
    };
    let digest = match exec.resolve_image(IMAGE).await {
        Ok(d) => d,
        Err(e) => panic!("test image {IMAGE} is not usable: {e}. {BUILD_HINT}"),
    };
    let docker = Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    Harness {
        exec,
        digest,
        docker,
    }
}

async fn harness() -> Harness {
    harness_with(DockerConfig {
        node_label: Some(NODE.into()),
        ..DockerConfig::default()
    })
    .await
}

fn base_spec(digest: &str, args: &[&str]) -> JobSpec {
    JobSpec {
        executor: ExecutorSpec::Docker {
            image: IMAGE.into(),
            digest: digest.into(),
            manifest: None,
        },
        args: args.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        stdin: None,
        inputs: BTreeMap::new(),
        outputs: vec![],
        resources: Resources {
            milli_cpus: 1000,
            memory_bytes: 64 << 20,
            timeout_ms: 60_000,
            fuel: None,
            max_output_bytes: 4 << 20,
        },
        replication: Replication::default(),
        created_at_ms: 0,
        nonce: 0,
        requires: BTreeMap::new(),
    }
}

fn job_id() -> ContentId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    ContentId::of(
        format!(
            "{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
        .as_bytes(),
    )
}

fn request(spec: JobSpec) -> ExecRequest {
    ExecRequest {
        job_id: job_id(),
        spec: validate(spec).expect("test spec is valid"),
        module: vec![],
        stdin: vec![],
        inputs: BTreeMap::new(),
    }
}

impl Harness {
    fn spec(&self, args: &[&str]) -> JobSpec {
        base_spec(&self.digest, args)
    }

    async fn containers_with(&self, label: &str) -> Vec<String> {
        let filters = HashMap::from([("label", vec![label.to_string()])]);
        self.docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap()
            .into_iter()
            .filter_map(|c| c.id)
            .collect()
    }

    /// Runs a request and checks that its container is gone afterwards,
    /// whatever the outcome.
    async fn run(&self, req: ExecRequest) -> Result<agora_protocol::ResultBundle, ExecError> {
        let job = req.job_id.to_hex();
        let r = self.exec.execute(req).await;
        let left = self.containers_with(&format!("{LABEL_JOB}={job}")).await;
        assert!(
            left.is_empty(),
            "container(s) left behind: {left:?} (outcome {r:?})"
        );
        r
    }

    /// No container of this test node remains (other agora processes may
    /// share the engine; ours carry the NODE label).
    async fn assert_clean(&self) {
        let left = self.containers_with(&format!("{LABEL_NODE}={NODE}")).await;
        assert!(left.is_empty(), "managed containers left: {left:?}");
    }
}

fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello() {
    let _serial = SERIAL.lock().await;
    let h = harness().await;
    let b = h.run(request(h.spec(&["echo", "hello"]))).await.unwrap();
    assert_eq!(b.exit_code, 0);
    assert_eq!(b.stdout.as_ref(), b"hello\n");
    assert!(b.stderr.is_empty());
    assert!(b.outputs.is_empty());
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_env_stdin_inputs_outputs_round_trip() {
    let _serial = SERIAL.lock().await;
    let h = harness().await;
    let script = r#"echo "$1 $GREETING $(id -u):$(id -g) $(hostname)"
cat
cat /in/data.txt >&2
cp /in/data.txt /out/copy.txt
mkdir -p /out/sub && printf nested > /out/sub/y
exit 3"#;
    let mut spec = h.spec(&["sh", "-c", script, "sh", "first-arg"]);
    spec.env.insert("GREETING".into(), "hi there".into());
    spec.inputs
        .insert("data.txt".into(), ContentId::of(b"input file\n"));
    spec.outputs = vec!["copy.txt".into(), "sub/y".into(), "absent".into()];
    let mut req = request(spec);
    req.stdin = b"from stdin\n".to_vec();
    req.inputs
        .insert("data.txt".into(), b"input file\n".to_vec());
    let again = req.clone();

    let b = h.run(req).await.unwrap();
    assert_eq!(
        b.exit_code,
        3,
        "stderr: {}",
        String::from_utf8_lossy(&b.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&b.stdout),
        "first-arg hi there 65534:65534 agora\nfrom stdin\n"
    );
    assert_eq!(b.stderr.as_ref(), b"input file\n");
    assert_eq!(b.outputs.len(), 2, "{:?}", b.outputs.keys());
    assert_eq!(b.outputs["copy.txt"].as_ref(), b"input file\n");
    assert_eq!(b.outputs["sub/y"].as_ref(), b"nested");

    // A second run of the same job gives the same result hash: what honest
    // executors must agree on.
    let b2 = h.run(again).await.unwrap();
    assert_eq!(b.result_hash(), b2.result_hash());
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_stdin_is_streamed_through() {
    let _serial = SERIAL.lock().await;
    let h = harness().await;
    // Bigger than any pipe buffer: written while output is read, or both
    // sides would stall.
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut req = request(h.spec(&["cat"]));
    req.stdin = data.clone();
    let b = h.run(req).await.unwrap();
    assert_eq!(b.exit_code, 0);
    assert_eq!(b.stdout.len(), data.len());
    assert!(b.stdout.as_ref() == data.as_slice());

    // No stdin at all: the program sees end of file at once.
    let b = h.run(request(h.spec(&["wc", "-c"]))).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&b.stdout).trim(), "0");
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_jobs_are_stopped_by_the_deadline() {
    let _serial = SERIAL.lock().await;
    let h = harness().await;
    for args in [
        &["sleep", "1000"][..],
        &["sh", "-c", "while :; do :; done"][..],
    ] {
        let mut spec = h.spec(args);
        spec.resources.timeout_ms = 2_000;
        let err = h.run(request(spec)).await.unwrap_err();
        assert!(
            matches!(err, ExecError::Timeout { limit_ms: 2_000 }),
            "{args:?}: {err:?}"
        );
    }
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_out_of_memory() {
    let _serial = SERIAL.lock().await;
    let h = harness().await;
    // The string doubles until it no longer fits in 32 MiB.
    let mut spec = h.spec(&["sh", "-c", "x=a; while :; do x=$x$x; done"]);
    spec.resources.memory_bytes = 32 << 20;
    spec.resources.timeout_ms = 60_000;
    let err = h.run(request(spec)).await.unwrap_err();
    assert!(
        matches!(err, ExecError::OutOfMemory { limit_bytes } if limit_bytes == 32 << 20),
        "{err:?}"
    );

    // Filling the /tmp tmpfs (64 MiB) also counts against the job's memory,
    // so it cannot be used to get around the limit.
    let mut spec = h.spec(&[
        "sh",
        "-c",
        "head -c 100000000 /dev/zero > /tmp/fill; echo done",
    ]);
    spec.resources.memory_bytes = 16 << 20;
    let err = h.run(request(spec)).await.unwrap_err();
    assert!(matches!(err, ExecError::OutOfMemory { .. }), "{err:?}");
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_limit_holds_and_fork_bomb_is_contained() {
    let _serial = SERIAL.lock().await;
    let h = harness_with(DockerConfig {
        node_label: Some(NODE.into()),
        pids_limit: 16,
        ..DockerConfig::default()
    })
    .await;
    // Try to start 40 sleepers, recording each success with builtins only
    // (a fork would fail once the limit is reached). busybox sh gives up
    // at the first failed fork.
    let script =
        "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); echo $i > /out/started; done; \
                  kill -9 -1; exit 0";
    let mut spec = h.spec(&["sh", "-c", script]);
    spec.resources.timeout_ms = 30_000;
    spec.outputs = vec!["started".into()];
    let b = h.run(request(spec)).await.unwrap();
    let started: u32 = String::from_utf8_lossy(&b.outputs["started"])
        .trim()
        .parse()
        .unwrap();
    assert!(
        started < 16,
        "{started} background processes under a pids limit of 16"
    );
    assert!(
        started >= 10,
        "only {started} processes: the test did not fork"
    );
    assert_ne!(b.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&b.stderr).contains("fork"),
        "stderr: {}",
        String::from_utf8_lossy(&b.stderr)
    );

    // The classic bomb: it ends by deadline (or by dying) and the host
    // keeps working.
    let h = harness().await;
    let mut spec = h.spec(&["sh", "-c", "f() { f | f & }; f; sleep 1000"]);
    spec.resources.timeout_ms = 5_000;
    match h.run(request(spec)).await {
        Err(ExecError::Timeout { .. }) | Ok(_) => {}
        Err(e) => panic!("fork bomb: unexpected {e:?}"),
    }
    let b = h
        .run(request(h.spec(&["echo", "still fine"])))
        .await
        .unwrap();
    assert_eq!(b.stdout.as_ref(), b"still fine\n");
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn there_is_no_network() {
    let _serial = SERIAL.lock().await;
    let h = harness().await;
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    // 172.17.0.1 is the default bridge gateway: reachable from any
    // container that has a network.
    let script = format!(
        "ls /sys/class/net; \
         if wget -q -T 3 -O - http://172.17.0.1:{port}/ >/dev/null 2>&1; then echo bridge-reached; fi; \
         if wget -q -T 3 -O - http://192.0.2.1/ >/dev/null 2>&1; then echo outside-reached; fi; \
         nc -w 2 127.0.0.1 {port} </dev/null; echo nc=$?"
    );
    let b = h
        .run(request(h.spec(&["sh", "-c", &script])))
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&b.stdout);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("lo"), "interfaces: {out}");
    assert_eq!(
        lines.next().map(|l| l.starts_with("nc=")),
        Some(true),
        "{out}"
    );
    assert_ne!(out.trim_end().rsplit('=').next(), Some("0"), "{out}");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host listener was reached: {other:?}"),
    }
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_out_and_tmp_are_writable() {
    let _serial = SERIAL.lock().await;
    let h = harness().await;
    let script = "for p in /x /etc/x /bin/x /in/x /in/data /tmp/x /out/x /dev/shm/x; do \
                  if (echo x > $p) 2>/dev/null; then echo \"$p ok\"; else echo \"$p denied\"; fi; done";
    let mut spec = h.spec(&["sh", "-c", script]);
    spec.inputs.insert("data".into(), ContentId::of(b"d"));
    let mut req = request(spec);
    req.inputs.insert("data".into(), b"d".to_vec());
    let b = h.run(req).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&b.stdout),
        "/x denied\n/etc/x denied\n/bin/x denied\n/in/x denied\n/in/data denied\n\
         /tmp/x ok\n/out/x ok\n/dev/shm/x ok\n"
    );
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_stdout_is_output_too_large_without_buffering_it() {
    let _serial = SERIAL.lock().await;
    let h = harness().await;
    // Reset the peak-RSS mark so VmHWM measures this test only.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let base = vm_kib("VmRSS:");
    let mut spec = h.spec(&["head", "-c", "100000000", "/dev/zero"]);
    spec.resources.max_output_bytes = 1 << 20;
    let err = h.run(request(spec)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::OutputTooLarge {
                stream: OutputStream::Stdout,
                limit_bytes
            } if limit_bytes == 1 << 20
        ),
        "{err:?}"
    );
    let peak = vm_kib("VmHWM:");
    assert!(
        peak < base + 40 * 1024,
        "peak RSS grew from {base} kB to {peak} kB while 100 MB were refused"
    );

    let mut spec = h.spec(&["sh", "-c", "head -c 5000000 /dev/zero >&2"]);
    spec.resources.max_output_bytes = 1 << 20;
    let err = h.run(request(spec)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::OutputTooLarge {
                stream: OutputStream::Stderr,
                ..
            }
        ),
        "{err:?}"
    );

    let mut spec = h.spec(&["sh", "-c", "head -c 2000 /dev/zero > /out/big"]);
    spec.resources.max_output_bytes = 1000;
    spec.outputs = vec!["big".into()];
    let err = h.run(request(spec)).await.unwrap_err();
    match err {
        ExecError::OutputTooLarge {
            stream: OutputStream::File(p),
            limit_bytes: 1000,
        } => assert_eq!(p, "big"),
        other => panic!("{other:?}"),
    }
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlink_output_is_not_followed() {
    let _serial = SERIAL.lock().await;
    let h = harness().await;
    let mut spec = h.spec(&[
        "sh",
        "-c",
        "ln -s /etc/hostname /out/leak; ln -s / /out/root; echo ok",
    ]);
    spec.outputs = vec!["leak".into(), "root/etc/hostname".into()];
    let b = h.run(request(spec)).await.unwrap();
    assert_eq!(b.stdout.as_ref(), b"ok\n");
    assert!(b.outputs.is_empty(), "{:?}", b.outputs.keys());
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_checks() {
    let _serial = SERIAL.lock().await;
    let h = harness().await;

    let mut spec = h.spec(&["true"]);
    spec.executor = ExecutorSpec::Docker {
        image: "agora-no-such-image:latest".into(),
        digest: format!("sha256:{}", "0".repeat(64)),
        manifest: None,
    };
    match h.run(request(spec)).await.unwrap_err() {
        ExecError::ImageMissing { image } => {
            assert!(image.contains("agora-no-such-image:latest"), "{image}")
        }
        other => panic!("{other:?}"),
    }

    let mut spec = h.spec(&["true"]);
    let wrong = format!("sha256:{}", "1".repeat(64));
    spec.executor = ExecutorSpec::Docker {
        image: IMAGE.into(),
        digest: wrong.clone(),
        manifest: None,
    };
    match h.run(request(spec)).await.unwrap_err() {
        ExecError::DigestMismatch {
            image,
            expected,
            found,
        } => {
            assert_eq!(image, IMAGE);
            assert_eq!(expected, wrong);
            assert_eq!(found, h.digest);
        }
        other => panic!("{other:?}"),
    }

    // The pinned id alone is enough, whatever the name says.
    let mut spec = h.spec(&["echo", "by id"]);
    spec.executor = ExecutorSpec::Docker {
        image: "some-other-name:v1".into(),
        digest: h.digest.clone(),
        manifest: None,
    };
    let b = h.run(request(spec)).await.unwrap();
    assert_eq!(b.stdout.as_ref(), b"by id\n");

    let images = h.exec.list_local_images().await.unwrap();
    assert!(images.contains(&h.digest), "{images:?}");
    assert!(images.iter().any(|i| i == IMAGE), "{images:?}");
    assert_eq!(h.exec.resolve_image(&h.digest).await.unwrap(), h.digest);
    assert!(matches!(
        h.exec.resolve_image("agora-no-such-image:latest").await,
        Err(ExecError::ImageMissing { .. })
    ));

    let mut spec = h.spec(&[]);
    spec.executor = ExecutorSpec::Wasm {
        module: ContentId::of(b"m"),
    };
    assert!(matches!(
        h.exec.execute(request(spec)).await,
        Err(ExecError::WrongExecutor {
            expected: "docker",
            found: "wasm"
        })
    ));

    // A command the image does not have: a typed error, no leftovers.
    let err = h
        .run(request(h.spec(&["/no/such/program"])))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Docker(_)), "{err:?}");
    assert!(err.to_string().contains("start container"), "{err}");
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_docker_is_a_clear_error() {
    let err = DockerExecutor::connect(DockerConfig {
        socket: Some("/nonexistent/agora/docker.sock".into()),
        ..DockerConfig::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, ExecError::DockerUnavailable(_)), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/agora/docker.sock"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_job_still_removes_its_container() {
    let _serial = SERIAL.lock().await;
    let h = harness().await;
    let req = request(h.spec(&["sleep", "1000"]));
    let label = format!("{LABEL_JOB}={}", req.job_id.to_hex());
    let exec = h.exec.clone();
    let run = tokio::spawn(async move { exec.execute(req).await });
    // Wait until the container exists, then cancel the job mid-run.
    let mut seen = false;
    for _ in 0..300 {
        if !h.containers_with(&label).await.is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the job's container never appeared");
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    let mut gone = false;
    for _ in 0..300 {
        if h.containers_with(&label).await.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "container of the dropped job was not removed");
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reap_removes_only_this_nodes_leftovers() {
    let _serial = SERIAL.lock().await;
    let h = harness().await;
    let create = |node: &'static str| {
        let docker = h.docker.clone();
        let image = h.digest.clone();
        async move {
            let body = bollard::models::ContainerCreateBody {
                image: Some(image),
                cmd: Some(vec!["sleep".into(), "1000".into()]),
                labels: Some(HashMap::from([
                    ("agora.managed".to_string(), "true".to_string()),
                    (LABEL_NODE.to_string(), node.to_string()),
                ])),
                host_config: Some(bollard::models::HostConfig {
                    network_mode: Some("none".into()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let name = format!("agora-reap-test-{node}-{}", std::process::id());
            let id = docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                    body,
                )
                .await
                .unwrap()
                .id;
            docker
                .start_container(&id, None::<StartContainerOptions>)
                .await
                .unwrap();
            id
        }
    };
    let ours = create(NODE).await;
    let theirs = create("some-other-node").await;

    let removed = h.exec.reap().await.unwrap();
    assert_eq!(removed, 1);
    let all = h.containers_with("agora.managed=true").await;
    assert!(!all.contains(&ours), "own leftover survived reap");
    assert!(
        all.contains(&theirs),
        "reap removed another node's container"
    );

    h.docker
        .remove_container(
            &theirs,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_volumes_become_bounded_scratch() {
    let _serial = SERIAL.lock().await;
    let h = harness_with(DockerConfig {
        node_label: Some(NODE.into()),
        tmpfs_bytes: 1 << 20,
        ..DockerConfig::default()
    })
    .await;
    // An image declaring VOLUME /data, made locally from the test image.
    let tag = format!("agora-volume-test:{}", std::process::id());
    let base = h
        .docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            bollard::models::ContainerCreateBody {
                image: Some(h.digest.clone()),
                cmd: Some(vec!["true".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .id;
    let (repo, version) = tag.split_once(':').unwrap();
    let committed = h
        .docker
        .commit_container(
            bollard::query_parameters::CommitContainerOptionsBuilder::new()
                .container(&base)
                .repo(repo)
                .tag(version)
                .changes("VOLUME /data")
                .build(),
            bollard::models::ContainerConfig::default(),
        )
        .await;
    h.docker
        .remove_container(
            &base,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    let image_id = committed.unwrap().id;
    let volumes_before = h
        .docker
        .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
        .await
        .unwrap()
        .volumes
        .unwrap_or_default()
        .len();

    let script = "head -c 3000000 /dev/zero > /data/big 2>/dev/null; echo big=$?; \
                  rm -f /data/big; echo small > /data/s && cat /data/s";
    let mut spec = h.spec(&["sh", "-c", script]);
    spec.executor = ExecutorSpec::Docker {
        image: tag.clone(),
        digest: image_id.clone(),
        manifest: None,
    };
    let r = h.run(request(spec)).await;
    let volumes_after = h
        .docker
        .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
        .await
        .unwrap()
        .volumes
        .unwrap_or_default()
        .len();
    h.docker
        .remove_image(
            &tag,
            Some(
                bollard::query_parameters::RemoveImageOptionsBuilder::new()
                    .force(true)
                    .build(),
            ),
            None,
        )
        .await
        .unwrap();
    let b = r.unwrap();
    assert_eq!(String::from_utf8_lossy(&b.stdout), "big=1\nsmall\n");
    assert_eq!(
        volumes_before, volumes_after,
        "an anonymous volume was created"
    );
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_do_not_mix() {
    let _serial = SERIAL.lock().await;
    let h = harness().await;
    let job = |n: u32| {
        let mut spec = h.spec(&[
            "sh",
            "-c",
            "cat /in/n > /out/n; cat /in/n; sleep 1; cat /out/n >&2",
        ]);
        spec.inputs
            .insert("n".into(), ContentId::of(n.to_string().as_bytes()));
        spec.outputs = vec!["n".into()];
        let mut req = request(spec);
        req.inputs.insert("n".into(), n.to_string().into_bytes());
        h.run(req)
    };
    let (a, b) = tokio::join!(job(1), job(2));
    for (n, r) in [(1, a), (2, b)] {
        let r = r.unwrap();
        assert_eq!(r.stdout.as_ref(), n.to_string().as_bytes());
        assert_eq!(r.stderr.as_ref(), n.to_string().as_bytes());
        assert_eq!(r.outputs["n"].as_ref(), n.to_string().as_bytes());
    }
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_dir_disk_budget_is_enforced() {
    let _serial = SERIAL.lock().await;
    let h = harness_with(DockerConfig {
        node_label: Some(NODE.into()),
        out_dir_bytes: 8 << 20,
        ..DockerConfig::default()
    })
    .await;
    // Bytes: one big undeclared file. Entries: endless empty files.
    for script in [
        "head -c 50000000 /dev/zero > /out/fill; sleep 1000",
        "i=0; while :; do : > /out/f$i; i=$((i+1)); done",
    ] {
        let mut spec = h.spec(&["sh", "-c", script]);
        spec.resources.timeout_ms = 120_000;
        let err = h.run(request(spec)).await.unwrap_err();
        match err {
            ExecError::OutputTooLarge {
                stream: OutputStream::File(p),
                limit_bytes,
            } => {
                assert_eq!(p, "");
                assert_eq!(limit_bytes, 8 << 20);
            }
            other => panic!("{script}: {other:?}"),
        }
    }
    h.assert_clean().await;
}
