//! Job arrays on a local network of real daemons: every item verified
//! k-of-n on its own and aggregated by a verified reduce job, despite a
//! lying executor; files and lines fill the placeholders; a reduce step
//! sees item outputs under /in/<index>/; cancel and retry; a restart of
//! the submitting node mid-array keeps every verified item and re-runs
//! none. The C fixtures come from testnet/fixtures/build-wasm.sh.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jobs_harness;

use std::collections::BTreeMap;
use std::time::Duration;

use agora_node::api::types::{
    ArrayFile, ArrayInfo, ArrayItemInfo, ArrayItems, ArrayState, ItemState, SubmitArray, SubmitJob,
};
use agora_node::daemon::Daemon;
use agora_node::jobs::fault::Fault;
use jobs_harness::{fixture, repo_root, sleeper, wait_for, wasm_job, Net, DEADLINE};

/// A C fixture, built by testnet/fixtures/build-wasm.sh.
fn built(name: &str) -> Vec<u8> {
    let path = repo_root().join(format!("testnet/fixtures/build/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run testnet/fixtures/build-wasm.sh first",
            path.display()
        )
    })
}

fn put(node: &Daemon, bytes: Vec<u8>) -> String {
    node.jobs().blobs().put(&bytes).unwrap().to_hex()
}

fn blob_text(node: &Daemon, id: &str) -> String {
    let cid = node.jobs().blobs().resolve(id).unwrap();
    String::from_utf8(node.jobs().blobs().get(&cid).unwrap()).unwrap()
}

async fn wait_array(node: &Daemon, id: &str, within: Duration) -> ArrayInfo {
    let jobs = node.jobs().clone();
    let id = id.to_owned();
    wait_for(within, &format!("array {id} to end"), || {
        let jobs = jobs.clone();
        let id = id.clone();
        async move {
            let a = jobs.array(&id).ok()?;
            a.state.is_final().then_some(a)
        }
    })
    .await
}

/// Waits until at least `n` items of array `id` are verified. The jobs
/// handle it clones is dropped on return (one kept would hold the store
/// open across a restart).
async fn wait_verified(node: &Daemon, id: &str, n: u32) {
    let jobs = node.jobs().clone();
    let id = id.to_owned();
    wait_for(DEADLINE, &format!("{n} verified items"), || {
        let (jobs, id) = (jobs.clone(), id.clone());
        async move { (jobs.array(&id).ok()?.counts.verified >= n).then_some(()) }
    })
    .await;
}

fn all_items(node: &Daemon, id: &str) -> Vec<ArrayItemInfo> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let page = node.jobs().array_items(id, from, 7).unwrap();
        out.extend(page.items);
        match page.next {
            Some(n) => from = n,
            None => return out,
        }
    }
}

/// What sweep prints for `n`: Collatz steps and peak.
fn collatz(n: u64) -> (u64, u64) {
    let (mut x, mut steps, mut peak) = (n, 0, n);
    while x > 1 {
        x = if x % 2 == 0 { x / 2 } else { 3 * x + 1 };
        peak = peak.max(x);
        steps += 1;
    }
    (steps, peak)
}

fn array_of(job: SubmitJob, items: ArrayItems) -> SubmitArray {
    SubmitArray {
        job,
        items,
        parallel: Some(8),
        reduce: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_is_verified_on_its_own_and_the_reduce_is_right_despite_a_liar() {
    // Node 0 submits; 1-4 execute, and 4 lies about every result.
    let net = Net::start_with(5, false, |i, cfg| {
        if i == 4 {
            cfg.fault = Some(Fault::Lie);
        }
    })
    .await;
    let sub = net.node(0);
    let sweep = put(sub, built("sweep"));
    let reduce = put(sub, built("sweep_reduce"));
    let mut job = wasm_job(&sweep, 3, 2);
    job.args = vec!["{}".into()];
    let mut req = array_of(job, ArrayItems::Range { from: 1, to: 40 });
    req.reduce = Some(wasm_job(&reduce, 3, 2));
    let info = sub.jobs().submit_array(req).await.unwrap();
    assert_eq!((info.total, info.counts.pending), (40, 40));
    let done = wait_array(sub, &info.id, DEADLINE).await;
    assert_eq!(done.state, ArrayState::Verified, "{done:?}");
    assert_eq!(done.counts.verified, 40);

    let items = all_items(sub, &info.id);
    assert_eq!(items.len(), 40);
    for (i, item) in items.iter().enumerate() {
        let n = i as u64 + 1;
        let (steps, peak) = collatz(n);
        assert_eq!(item.value, n.to_string());
        assert_eq!(item.attempts, 1);
        let out = blob_text(sub, &item.stdout.as_ref().unwrap().id);
        assert_eq!(out, format!("{n} {steps} {peak}\n"), "item {i}");
    }
    let (total, (max_steps, at)) = (1..=40u64).fold((0, (0, 0)), |(t, best), n| {
        let s = collatz(n).0;
        (t + s, if s > best.0 { (s, n) } else { best })
    });
    let (max_peak, peak_at) =
        (1..=40u64)
            .map(|n| (collatz(n).1, n))
            .fold((0, 0), |b, x| if x.0 > b.0 { x } else { b });
    let result = sub.jobs().array_result(&info.id).unwrap();
    assert_eq!(
        blob_text(sub, &result.stdout.id),
        format!(
            "items 40\ntotal_steps {total}\nmax_steps {max_steps} at {at}\nmax_peak {max_peak} at {peak_at}\n"
        )
    );
    // The liar ran items and was outvoted: the submitter saw it disagree.
    let liar = net.node(4).peer_id().to_base58();
    let rep = sub.jobs().reputation_list(Some(&liar));
    assert!(rep[0].disagreed > 0, "the liar never took part: {rep:?}");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_lines_fill_the_placeholders_and_a_reduce_sees_item_outputs() {
    let net = Net::start(3, false).await;
    let sub = net.node(0);
    let hello = put(sub, built("hello"));
    let a = put(sub, b"A".to_vec());
    let b = put(sub, b"BB".to_vec());
    let mut job = wasm_job(&hello, 2, 2);
    job.args = vec!["{}".into(), "{#}".into()];
    job.outputs = vec!["greeting.txt".into()];
    job.env = BTreeMap::from([("GREETING".into(), "item {#}".into())]);
    let files = vec![
        ArrayFile {
            name: "a.txt".into(),
            blob: a,
        },
        ArrayFile {
            name: "b.txt".into(),
            blob: b,
        },
    ];
    let mut req = array_of(job.clone(), ArrayItems::Files { files });
    // The reduce prints item 1's output file.
    let mut reduce = wasm_job(&put(sub, fixture("read_path")), 2, 2);
    reduce.args = vec!["1/greeting.txt".into()];
    req.reduce = Some(reduce);
    let info = sub.jobs().submit_array(req).await.unwrap();
    let done = wait_array(sub, &info.id, DEADLINE).await;
    assert_eq!(done.state, ArrayState::Verified, "{done:?}");
    let items = all_items(sub, &info.id);
    let out = blob_text(sub, &items[1].stdout.as_ref().unwrap().id);
    assert!(out.contains("arg 1: /in/b.txt\narg 2: 1\n"), "{out}");
    assert!(items[1].outputs.contains_key("greeting.txt"));
    let result = sub.jobs().array_result(&info.id).unwrap();
    assert_eq!(blob_text(sub, &result.stdout.id), "greetings, item 1\n");

    let lines = put(sub, b"first line\nsecond\n".to_vec());
    job.outputs.clear();
    let info = sub
        .jobs()
        .submit_array(array_of(job, ArrayItems::Lines { blob: lines }))
        .await
        .unwrap();
    assert_eq!(info.total, 2, "a final newline starts no empty line");
    wait_array(sub, &info.id, DEADLINE).await;
    let items = all_items(sub, &info.id);
    let out = blob_text(sub, &items[0].stdout.as_ref().unwrap().id);
    assert!(out.contains("arg 1: first line\n"), "{out}");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arrays_are_refused_before_anything_is_stored() {
    let net = Net::start(1, false).await;
    let sub = net.node(0);
    let hello = put(sub, built("hello"));
    let job = wasm_job(&hello, 1, 1);
    let cases = [
        (ArrayItems::Range { from: 5, to: 4 }, "before the start"),
        (
            ArrayItems::Range {
                from: 0,
                to: 100_000,
            },
            "at most 100000 items",
        ),
        (
            ArrayItems::Files {
                files: vec![ArrayFile {
                    name: "../x".into(),
                    blob: hello.clone(),
                }],
            },
            "not a plain file name",
        ),
        (
            ArrayItems::Lines {
                blob: "ff".repeat(32),
            },
            "blob",
        ),
    ];
    for (items, want) in cases {
        let err = sub
            .jobs()
            .submit_array(array_of(job.clone(), items))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(want), "{err} lacks {want}");
    }
    let mut req = array_of(job.clone(), ArrayItems::Range { from: 0, to: 2000 });
    req.reduce = Some(job);
    let err = sub.jobs().submit_array(req).await.unwrap_err();
    assert!(err.to_string().contains("at most 1024 items"), "{err}");
    assert!(sub.jobs().arrays().unwrap().is_empty());
    assert!(sub.jobs().list(None).unwrap().is_empty());
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_every_unfinished_item_and_retry_runs_only_those() {
    let net = Net::start(3, false).await;
    let sub = net.node(0);
    let slow = put(sub, sleeper(1));
    let mut req = array_of(wasm_job(&slow, 2, 2), ArrayItems::Range { from: 0, to: 11 });
    req.parallel = Some(2);
    let info = sub.jobs().submit_array(req).await.unwrap();
    wait_verified(sub, &info.id, 1).await;
    let cancelled = sub.jobs().cancel_array(&info.id).await.unwrap();
    assert_eq!(cancelled.state, ArrayState::Cancelled);
    let c = cancelled.counts;
    assert_eq!((c.pending, c.running), (0, 0), "{c:?}");
    assert_eq!(c.verified + c.cancelled + c.failed, 12);
    assert!(c.cancelled >= 8, "{c:?}");
    let before: Vec<ArrayItemInfo> = all_items(sub, &info.id);
    assert!(sub.jobs().cancel_array(&info.id).await.is_err(), "twice");

    let retried = sub.jobs().retry_array(&info.id, &[]).await.unwrap();
    assert_eq!(retried.state, ArrayState::Running);
    let done = wait_array(sub, &info.id, DEADLINE).await;
    assert_eq!(done.state, ArrayState::Verified, "{done:?}");
    for (old, new) in before.iter().zip(all_items(sub, &info.id)) {
        if old.state == ItemState::Verified {
            assert_eq!((old.job.clone(), old.attempts), (new.job, new.attempts));
        } else {
            assert_eq!(new.state, ItemState::Verified);
        }
    }
    let err = sub.jobs().retry_array(&info.id, &[0]).await.unwrap_err();
    assert!(
        err.to_string().contains("only failed or cancelled"),
        "{err}"
    );
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_the_submitter_mid_array_keeps_every_verified_item_and_reruns_none() {
    let mut net = Net::start(4, false).await;
    let listen = net.node(0).listen_addrs(DEADLINE).await[0].clone();
    let sub = net.node(0);
    let slow = put(sub, sleeper(1));
    let mut req = array_of(wasm_job(&slow, 2, 2), ArrayItems::Range { from: 0, to: 23 });
    req.parallel = Some(3);
    let info = sub.jobs().submit_array(req).await.unwrap();
    wait_verified(sub, &info.id, 4).await;
    let before = all_items(sub, &info.id);
    net.stop(0).await;
    net.restart(0, listen).await;
    let sub = net.node(0);
    let done = wait_array(sub, &info.id, DEADLINE).await;
    assert_eq!(done.state, ArrayState::Verified, "{done:?}");
    let after = all_items(sub, &info.id);
    let kept = before
        .iter()
        .filter(|b| b.state == ItemState::Verified)
        .count();
    assert!(kept >= 4);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.state, ItemState::Verified);
        if b.job.is_some() {
            assert_eq!(b.job, a.job, "item {} got another job", b.index);
        }
        if b.state == ItemState::Verified {
            assert_eq!(b.stdout, a.stdout, "item {} changed", b.index);
        }
    }
    // One job per item: none was submitted twice.
    assert_eq!(sub.jobs().list(None).unwrap().len(), 24);
    assert!(after.iter().all(|a| a.attempts == 1));
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_an_array_and_streams_each_item_change_until_it_ends() {
    use agora_node::api::client::ApiClient;
    use agora_node::api::types::{ArrayEvent, ArrayList};

    let net = Net::start(3, false).await;
    let sub = net.node(0);
    let api = ApiClient::new(sub.api_addr(), Some(sub.token().to_owned()))
        .with_timeout(DEADLINE)
        .with_idle_timeout(DEADLINE);
    let hello = put(sub, built("hello"));
    let mut job = wasm_job(&hello, 2, 2);
    job.args = vec!["{}".into()];
    let req = array_of(job, ArrayItems::Range { from: 1, to: 5 });
    let info: ArrayInfo = api.post_json("/api/v1/arrays", &req).await.unwrap();
    // The stream ends after the array's final event, so this returns then.
    let raw = api
        .get(&format!("/api/v1/arrays/{}/events", info.id))
        .await
        .unwrap();
    assert_eq!(raw.status, 200);
    let events: Vec<ArrayEvent> = String::from_utf8(raw.body.to_vec())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    let first = events.first().unwrap();
    assert_eq!(
        first.index, None,
        "the first event is the array as it stands"
    );
    let last = events.last().unwrap();
    assert_eq!(last.state, ArrayState::Verified);
    assert_eq!(last.counts.verified, 5);
    for index in 0..5 {
        let states: Vec<ItemState> = events
            .iter()
            .filter(|e| e.index == Some(index))
            .filter_map(|e| e.item_state)
            .collect();
        // An item submitted before the stream opened shows only its end.
        assert_eq!(states.last(), Some(&ItemState::Verified), "item {index}");
    }
    let list: ArrayList = api.get_json("/api/v1/arrays").await.unwrap();
    assert_eq!(list.arrays[0].id, info.id);
    let gone = api.get("/api/v1/arrays/00ff").await.unwrap();
    assert_eq!(gone.status, 404);
    net.shutdown().await;
}
