//! The engines harness itself: two private Docker engines side by side, an
//! image copied into one only, and nothing left behind once they are
//! dropped. Needs root, Docker and `agora-busybox:latest` (build it with
//! `testnet/fixtures/docker/build-image.sh`); fails, never skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod engines_harness;

use std::path::Path;
use std::time::Instant;

use bollard::Docker;
use engines_harness::{mounts_under, processes_under, Engine};

const IMAGE: &str = "agora-busybox:latest";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_hold_separate_images_and_leave_nothing_behind() {
    let host = Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let id = host
        .inspect_image(IMAGE)
        .await
        .unwrap_or_else(|e| panic!("{IMAGE}: {e}; run testnet/fixtures/docker/build-image.sh"))
        .id
        .unwrap();

    let started = Instant::now();
    let (one, two) = tokio::join!(Engine::start("one"), Engine::start("two"));
    eprintln!("two engines answered after {:?}", started.elapsed());
    assert_ne!(one.socket, two.socket);
    assert!(
        one.image_ids().await.is_empty(),
        "a new engine has no image"
    );
    assert!(
        two.image_ids().await.is_empty(),
        "a new engine has no image"
    );

    one.load_from_host(IMAGE).await;
    assert!(one.has_image(&id).await);
    assert!(one.has_image(IMAGE).await, "the tag travels with the image");
    assert_eq!(one.image_ids().await, vec![id.clone()]);
    assert!(!two.has_image(&id).await, "the other engine must lack it");
    assert!(!two.has_image(IMAGE).await);
    assert!(two.image_ids().await.is_empty());

    let gone: Vec<(u32, std::path::PathBuf)> = [&one, &two]
        .iter()
        .map(|e| (e.pid, e.dir().to_path_buf()))
        .collect();
    let stopping = Instant::now();
    drop(one);
    drop(two);
    eprintln!("two engines stopped after {:?}", stopping.elapsed());
    for (pid, dir) in gone {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "dockerd {pid} still runs"
        );
        assert_eq!(processes_under(&dir), Vec::<u32>::new(), "strays of {pid}");
        assert_eq!(mounts_under(&dir), Vec::<std::path::PathBuf>::new());
        assert!(!dir.exists(), "{} not removed", dir.display());
    }
}
