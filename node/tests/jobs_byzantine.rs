//! Byzantine executors on an eight-node network of real daemons: two
//! independent liars (`--fault lie`) among the executors of 100 jobs at
//! 2-of-3. No wrong result is accepted, each liar is excluded after at most
//! ten disagreements and then gets no work. A node that never submitted a
//! job, whose operator vouches for the honest nodes (`--trust`), learns of
//! the liars from gossiped verdicts alone: one submitter's word can only
//! bring them down to the threshold, a second submitter's excludes them
//! there, and since that is others' word, they stand on probation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jobs_harness;

use std::collections::BTreeSet;

use agora_node::api::types::JobState;
use agora_node::jobs::fault::Fault;
use jobs_harness::{fixture, wait_final, wait_for, wasm_job, Net, DEADLINE};

const LIARS: [usize; 2] = [1, 2];
const SUBMITTER: usize = 7;
/// Submits after the first, until its own evidence excludes both liars.
const SECOND: usize = 6;
const BYSTANDER: usize = 0;
/// Jobs in flight at once: small, so a liar's exclusion shows up before
/// many more jobs are assigned.
const WAVE: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liars_are_outvoted_excluded_and_known_from_gossip() {
    let net = Net::start_with_ids(8, false, |i, cfg, ids| {
        cfg.testnet = true;
        if LIARS.contains(&i) {
            cfg.fault = Some(Fault::Lie);
        }
        if i == BYSTANDER {
            cfg.trust = (0..ids.len())
                .filter(|j| !LIARS.contains(j))
                .map(|j| ids[j])
                .collect();
        }
    })
    .await;
    let liars: BTreeSet<String> = LIARS
        .iter()
        .map(|i| net.node(*i).peer_id().to_base58())
        .collect();
    let sub = net.node(SUBMITTER);
    let module = sub.jobs().blobs().put(&fixture("hello")).unwrap().to_hex();

    let mut records = Vec::new();
    for _ in 0..(100 / WAVE + 1) {
        let mut ids = Vec::new();
        for _ in 0..WAVE.min(100 - records.len()) {
            ids.push(sub.jobs().submit(wasm_job(&module, 3, 2)).await.unwrap().id);
        }
        for id in ids {
            records.push(wait_final(sub, &id, DEADLINE).await);
        }
        if records.len() >= 100 {
            break;
        }
    }
    assert_eq!(records.len(), 100);

    // Zero wrong results: every job verified with the honest output.
    for r in &records {
        assert_eq!(r.state, JobState::Verified, "{r:#?}");
        let res = sub.jobs().result(&r.id).unwrap();
        let out = sub
            .jobs()
            .blobs()
            .get(&res.stdout.id.parse().unwrap())
            .unwrap();
        assert_eq!(
            out, b"hello, agora\n",
            "job {} accepted a wrong result",
            r.id
        );
        assert!(res.agreeing.iter().all(|p| !liars.contains(p)));
    }

    // Each liar: excluded after at most ten disagreements, then no work.
    let rep = sub.jobs().reputation_list(None);
    for liar in &liars {
        let row = rep
            .iter()
            .find(|r| &r.peer_id == liar)
            .expect("liar has a record");
        assert!(row.excluded, "{row:#?}");
        assert!(row.disagreed <= 10, "{row:#?}");
        assert!(
            row.disagreed >= 1,
            "the liar was given work and caught: {row:#?}"
        );
        // No work after it was excluded: once its last disagreement made
        // it excluded, at most the jobs already in flight in that wave
        // could still name it.
        let assigned: Vec<usize> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.executors.iter().any(|e| &e.peer_id == liar))
            .map(|(i, _)| i)
            .collect();
        let caught: Vec<usize> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.executors
                    .iter()
                    .any(|e| &e.peer_id == liar && e.agrees == Some(false))
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(caught.len() as u64, row.disagreed);
        let (last_assigned, last_caught) = (*assigned.last().unwrap(), *caught.last().unwrap());
        assert!(
            last_assigned < last_caught + WAVE,
            "liar {liar} got work in job #{last_assigned} after being excluded at job #{last_caught}"
        );
    }

    for row in rep.iter().filter(|r| liars.contains(&r.peer_id)) {
        assert_eq!(row.standing, "excluded", "on the submitter's own evidence");
    }

    // A second submitter catches the liars on its own.
    let second = net.node(SECOND);
    let module2 = second
        .jobs()
        .blobs()
        .put(&fixture("hello"))
        .unwrap()
        .to_hex();
    let mut second_jobs = 0;
    loop {
        let rows = second.jobs().reputation_list(None);
        let excluded = rows
            .iter()
            .filter(|r| liars.contains(&r.peer_id) && r.standing == "excluded")
            .count();
        if excluded == 2 {
            break;
        }
        assert!(
            second_jobs < 100,
            "the second submitter never excluded both liars"
        );
        let mut ids = Vec::new();
        for _ in 0..WAVE {
            ids.push(
                second
                    .jobs()
                    .submit(wasm_job(&module2, 3, 2))
                    .await
                    .unwrap()
                    .id,
            );
        }
        for id in ids {
            let r = wait_final(second, &id, DEADLINE).await;
            assert_eq!(r.state, JobState::Verified, "{r:#?}");
            let res = second.jobs().result(&r.id).unwrap();
            assert!(res.agreeing.iter().all(|p| !liars.contains(p)));
            second_jobs += 1;
        }
    }

    // The bystander never submitted: it knows the liars from the two
    // submitters' verdicts only, and since that is others' word, they
    // are on probation there rather than excluded for good.
    let bystander = net.node(BYSTANDER);
    assert!(bystander.jobs().list(None).unwrap().is_empty());
    wait_for(DEADLINE, "the bystander to learn of the liars", || {
        let rows = bystander.jobs().reputation_list(None);
        let liars = liars.clone();
        async move {
            let low = rows
                .iter()
                .filter(|r| liars.contains(&r.peer_id) && r.excluded)
                .count();
            (low == 2).then_some(())
        }
    })
    .await;
    let rows = bystander.jobs().reputation_list(None);
    let honest_min = rows
        .iter()
        .filter(|r| !liars.contains(&r.peer_id))
        .map(|r| r.score)
        .min()
        .unwrap();
    let submitters = [sub.peer_id().to_base58(), second.peer_id().to_base58()];
    for r in rows.iter().filter(|r| liars.contains(&r.peer_id)) {
        assert!(r.score < honest_min, "{r:#?}");
        assert_eq!(r.standing, "probation", "{r:#?}");
        assert!(
            r.evidence.iter().all(|e| submitters.contains(&e.source)),
            "all evidence came from the submitters' verdicts: {r:#?}"
        );
    }
    net.shutdown().await;
}
