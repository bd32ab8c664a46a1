//! Docker images travel between nodes: executors whose engines are empty
//! (each node has its own dockerd) fetch a job's image from the network,
//! check it, load it and run the job. Fails (never skips) when Docker or
//! the test images are missing: `testnet/fixtures/build.sh` builds them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod engines_harness;
mod jobs_harness;

use std::time::Duration;

use agora_node::api::types::{JobState, SubmitExecutor};
use agora_node::daemon::Daemon;
use agora_node::executor::docker::{DockerConfig, DockerExecutor};
use agora_node::images::{ImageFetchError, Progress};
use engines_harness::Engine;
use jobs_harness::{wait_final, wasm_job, Net, DEADLINE};
use tokio::sync::watch;

const IMAGE_A: &str = "agora-layers-a:latest";
const IMAGE_B: &str = "agora-layers-b:latest";
/// The size of the shared base layer's payload (`/data/base.bin`).
const BASE_BYTES: u64 = 24 * 1024 * 1024;

async fn host_image(name: &str) -> String {
    let host = DockerExecutor::connect(DockerConfig::default())
        .await
        .unwrap_or_else(|e| panic!("Docker is required for this test: {e}"));
    host.resolve_image(name)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}; run testnet/fixtures/build.sh"))
}

/// A network whose node 0 uses the host's engine (which holds the test
/// images) and every other node a fresh engine of its own; `tweak` may
/// change node i's config further.
async fn net(
    engines: &[Engine],
    tweak: impl Fn(usize, &mut agora_node::config::DaemonConfig),
) -> Net {
    Net::start_with(engines.len() + 1, true, |i, cfg| {
        if i > 0 {
            cfg.docker_host = Some(engines[i - 1].socket.clone());
        }
        tweak(i, cfg);
    })
    .await
}

async fn engines(names: &[&str]) -> Vec<Engine> {
    let mut out = Vec::new();
    for n in names {
        out.push(Engine::start(n).await);
    }
    out
}

fn bytes_in(d: &Daemon) -> u64 {
    d.jobs().blobs().metrics().bytes_in()
}

/// Runs `sh -c script` in `image` from node 0 at 2-of-3, on executors
/// that must fetch the image, and returns the verified stdout.
async fn run(net: &Net, image: &str, script: &str) -> String {
    let sub = net.node(0);
    let mut req = wasm_job("", 3, 2);
    req.executor = SubmitExecutor::Docker {
        image: image.into(),
    };
    req.args = vec!["sh".into(), "-c".into(), script.into()];
    req.timeout_ms = Some(30_000);
    let rec = sub.jobs().submit(req).await.unwrap();
    let done = wait_final(sub, &rec.id, DEADLINE * 2).await;
    assert_eq!(done.state, JobState::Verified, "{done:#?}");
    let me = sub.peer_id().to_base58();
    assert!(done.executors.iter().all(|e| e.peer_id != me));
    let agreeing = done
        .executors
        .iter()
        .filter(|e| e.agrees == Some(true))
        .count();
    assert!(agreeing >= 2, "{done:#?}");
    // Each agreeing executor fetched the image first and said so.
    let loaded = done
        .events
        .iter()
        .filter(|e| e.kind == "image" && e.detail.starts_with("image fetched and loaded"))
        .count();
    assert!(loaded >= 2, "{:#?}", done.events);
    let result = sub.jobs().result(&rec.id).unwrap();
    let stdout = sub
        .jobs()
        .blobs()
        .get(&result.stdout.id.parse().unwrap())
        .unwrap();
    String::from_utf8(stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_only_the_submitter_holds_is_fetched_verified_and_a_shared_base_moves_once() {
    let a = host_image(IMAGE_A).await;
    let b = host_image(IMAGE_B).await;
    let busybox = host_image("agora-busybox:latest").await;
    let engines = engines(&["ia", "ib", "ic"]).await;
    for e in &engines {
        assert!(!e.has_image(&a).await, "a fresh engine holds {a}");
    }
    // Executor 1's operator has an image of their own, and lets images
    // agora loads take 30 MiB: room for one of the two test images.
    engines[0].load_from_host("agora-busybox:latest").await;
    let net = net(&engines, |i, cfg| {
        if i == 1 {
            cfg.image_cache_bytes = 30 * 1024 * 1024;
        }
    })
    .await;

    let before: Vec<u64> = (1..=3).map(|i| bytes_in(net.node(i))).collect();
    let out = run(
        &net,
        IMAGE_A,
        "head -n1 /data/a.txt; wc -c < /data/base.bin",
    )
    .await;
    assert_eq!(out, format!("layer a\n{BASE_BYTES}\n"));
    let after_a: Vec<u64> = (1..=3).map(|i| bytes_in(net.node(i))).collect();
    for (i, e) in engines.iter().enumerate() {
        assert!(e.has_image(&a).await, "executor {} did not load {a}", i + 1);
        let moved = after_a[i] - before[i];
        eprintln!("image a: executor {} fetched {moved} bytes", i + 1);
        assert!(
            moved >= BASE_BYTES,
            "executor {} fetched only {moved} bytes",
            i + 1
        );
    }

    // Executor 1's engine held the busybox layer under the image (the
    // operator's own image): it did not fetch that layer.
    let moved: Vec<u64> = (0..3).map(|i| after_a[i] - before[i]).collect();
    assert!(
        moved[0] + 1_000_000 < moved[1] && moved[1] == moved[2],
        "bytes fetched for {a}: {moved:?}"
    );

    // The second image shares every layer but its last: only that moves.
    let out = run(&net, IMAGE_B, "head -n1 /data/b.txt").await;
    assert_eq!(out, "layer b\n");
    for (i, e) in engines.iter().enumerate() {
        assert!(e.has_image(&b).await, "executor {} did not load {b}", i + 1);
        let moved = bytes_in(net.node(i + 1)) - after_a[i];
        eprintln!("image b: executor {} fetched {moved} bytes", i + 1);
        assert!(
            moved < BASE_BYTES / 8,
            "executor {} fetched {moved} bytes for an image whose base it held",
            i + 1
        );
        assert!(moved > 0, "executor {} fetched nothing for {b}", i + 1);
    }
    // Executors serve the images whose every blob they hold; executor 1
    // lacks the busybox layer as a blob, so it serves neither.
    for i in 1..=3 {
        let images = net.node(i).jobs().image_list().unwrap();
        let ids: Vec<&str> = images
            .iter()
            .filter(|x| x.loaded)
            .map(|x| x.id.as_str())
            .collect();
        if i == 1 {
            assert!(ids.is_empty(), "node 1 serves {ids:?}");
        } else {
            assert_eq!(ids.len(), 2, "node {i}: {images:?}");
            assert!(ids.contains(&a.as_str()) && ids.contains(&b.as_str()));
        }
    }
    // Over its 30 MiB, executor 1 removed the image agora loaded least
    // recently, and never the operator's own.
    assert!(
        !engines[0].has_image(&a).await,
        "{a} outlived --image-cache"
    );
    assert!(engines[0].has_image(&b).await);
    assert!(
        engines[0].has_image(&busybox).await,
        "the operator's image was removed"
    );
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_layer_is_refused_and_fetched_from_another_provider() {
    let a = host_image(IMAGE_A).await;
    let engines = engines(&["ca", "cb"]).await;
    // Node 1 (host engine, like node 0) serves the image's blobs with every
    // byte flipped; nodes 2 and 3 must fetch the image.
    let net = Net::start_with(4, true, |i, cfg| {
        if i >= 2 {
            cfg.docker_host = Some(engines[i - 2].socket.clone());
        }
        if i == 1 {
            cfg.testnet = true;
            cfg.fault = Some("corrupt-blobs".parse().unwrap());
        }
    })
    .await;
    net.node(1).jobs().push_image(IMAGE_A).await.unwrap();
    // Wait until the fetching nodes know node 1 serves the image.
    let corrupt = net.node(1).peer_id();
    for i in [2, 3] {
        jobs_harness::wait_for(DEADLINE, "node 1's advert listing the image", || async {
            let book = net.node(i).peer_book().clone();
            let book = agora_node::network::adverts::lock_book(&book);
            book.get(&corrupt)
                .is_some_and(|r| r.advert.shared_images.contains(&a))
                .then_some(())
        })
        .await;
    }
    let served_before = net.node(1).jobs().blobs().metrics().bytes_out();
    let before: Vec<u64> = (2..=3).map(|i| bytes_in(net.node(i))).collect();
    let out = run(&net, IMAGE_A, "head -n1 /data/a.txt").await;
    assert_eq!(out, "layer a\n");
    let served = net.node(1).jobs().blobs().metrics().bytes_out() - served_before;
    eprintln!("the corrupting provider served {served} bytes");
    assert!(
        served >= BASE_BYTES,
        "the corrupting provider was not asked first"
    );
    for (j, i) in [2usize, 3].into_iter().enumerate() {
        assert!(engines[j].has_image(&a).await);
        let moved = bytes_in(net.node(i)) - before[j];
        eprintln!("node {i} received {moved} bytes");
    }
    // Between them, the two fetching nodes received the corrupted bytes
    // and then the right ones.
    let moved: u64 =
        (2..=3).map(|i| bytes_in(net.node(i))).sum::<u64>() - before.iter().sum::<u64>();
    assert!(
        moved >= served + BASE_BYTES,
        "moved {moved}, corrupted {served}"
    );
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_of_another_image_is_refused_and_a_node_may_refuse_fetching() {
    let a = host_image(IMAGE_A).await;
    let b = host_image(IMAGE_B).await;
    let engines = engines(&["ma", "mb"]).await;
    // Node 2's operator refuses image fetches.
    let net = net(&engines, |i, cfg| cfg.image_fetch = i != 2).await;
    // The submitter serves image A; a forged job pins B but names A's
    // manifest.
    let manifest_a = net.node(0).jobs().push_image(IMAGE_A).await.unwrap();
    let manifest_a = manifest_a.manifest.parse().unwrap();
    let images = net.node(1).jobs().images().expect("node 1 runs docker");
    let (tx, _rx) = watch::channel(Progress::default());
    let r = images
        .ensure(
            &b,
            Some(manifest_a),
            &[net.node(0).peer_id()],
            net.node(1).network(),
            Duration::from_secs(60),
            &tx,
        )
        .await;
    match r {
        Err(ImageFetchError::Mismatch(e)) => {
            let text = e.to_string();
            assert!(text.contains(&b), "{text}");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert!(!engines[0].has_image(&a).await, "image A was loaded anyway");
    assert!(!engines[0].has_image(&b).await);

    // A node that does not fetch images says so, and refuses even a
    // manifest that matches.
    let book = net.node(0).peer_book().clone();
    let me2 = net.node(2).peer_id();
    let fetches = agora_node::network::adverts::lock_book(&book)
        .get(&me2)
        .map(|r| r.advert.image_fetch);
    assert_eq!(fetches, Some(false));
    let images = net.node(2).jobs().images().unwrap();
    let r = images
        .ensure(
            &a,
            Some(manifest_a),
            &[net.node(0).peer_id()],
            net.node(2).network(),
            Duration::from_secs(60),
            &tx,
        )
        .await;
    assert!(matches!(r, Err(ImageFetchError::Disabled(_))), "{r:?}");
    assert!(!engines[1].has_image(&a).await);
    net.shutdown().await;
}
