//! Adaptive replication (`--replication adaptive`) on networks of real
//! daemons: a trusted executor runs a job alone and its solo verdict is no
//! evidence; a spot check always counts the checked executor's answer and
//! catches a node that lies once trusted; a solo executor that goes away
//! turns the job into a full k-of-n one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jobs_harness;

use agora_node::api::types::{AdaptivePlan, JobRecord, JobState, ReplicationMode, SubmitJob};
use agora_node::daemon::Daemon;
use agora_node::jobs::fault::Fault;
use agora_verifier::AdaptivePolicy;
use jobs_harness::{fixture, sleeper, wait_final, wait_for, wasm_job, Net, DEADLINE};

const SUBMITTER: usize = 0;
const HELLO: &[u8] = b"hello, agora\n";

fn adaptive(module: &str) -> SubmitJob {
    SubmitJob {
        replication: ReplicationMode::Adaptive,
        ..wasm_job(module, 3, 2)
    }
}

async fn run(node: &Daemon, job: SubmitJob) -> JobRecord {
    let id = node.jobs().submit(job).await.unwrap().id;
    wait_final(node, &id, DEADLINE).await
}

fn stdout_of(node: &Daemon, job: &JobRecord) -> Vec<u8> {
    let res = node.jobs().result(&job.id).unwrap();
    node.jobs()
        .blobs()
        .get(&res.stdout.id.parse().unwrap())
        .unwrap()
}

/// (agreed, clean streak, trusted) of `peer` in `node`'s book.
fn standing(node: &Daemon, peer: &str) -> (u64, u64, bool) {
    let rows = node.jobs().reputation_list(Some(peer));
    rows.first()
        .map_or((0, 0, false), |r| (r.agreed, r.clean_streak, r.trusted))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_executor_runs_alone_and_its_verdict_is_not_evidence() {
    let net = Net::start_with(4, false, |_, cfg| {
        cfg.adaptive = AdaptivePolicy::new(2, 0).unwrap();
    })
    .await;
    let sub = net.node(SUBMITTER);
    let module = sub.jobs().blobs().put(&fixture("hello")).unwrap().to_hex();

    // Full 2-of-3 jobs build streaks; within a few jobs the first executor
    // drawn has agreed twice in a row and runs the next job alone.
    let mut solo = None;
    for _ in 0..12 {
        let before = sub.jobs().reputation_list(None);
        let job = run(sub, adaptive(&module)).await;
        assert_eq!(job.state, JobState::Verified, "{job:#?}");
        assert_eq!(stdout_of(sub, &job), HELLO);
        match job.plan {
            Some(AdaptivePlan::Full) => assert!(job.executors.len() >= 2, "{job:#?}"),
            Some(AdaptivePlan::Solo) => {
                solo = Some((job, before));
                break;
            }
            other => panic!("unexpected plan {other:?}: {job:#?}"),
        }
    }
    let (job, before) = solo.expect("no job ran alone in 12 adaptive jobs");
    assert_eq!(job.executors.len(), 1, "{job:#?}");
    assert!(job.unverified);
    let res = sub.jobs().result(&job.id).unwrap();
    assert_eq!(res.plan, Some(AdaptivePlan::Solo));
    assert!(res.unverified);
    let exec = &job.executors[0].peer_id;
    assert_eq!(res.agreeing, vec![exec.clone()]);
    // The solo verdict changed nothing in the book.
    let was = before.iter().find(|r| &r.peer_id == exec).unwrap();
    assert!(was.trusted && was.clean_streak >= 2, "{was:#?}");
    assert_eq!(
        standing(sub, exec),
        (was.agreed, was.clean_streak, true),
        "a solo verdict must not count as evidence"
    );
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_checks_count_the_checked_answer_and_catch_a_sleeper() {
    // Node 3 answers its first two jobs honestly, then lies on every job.
    // Four executors: when it lies, the job's dispute goes to the fourth.
    const SLEEPER: usize = 3;
    let net = Net::start_with(5, false, |i, cfg| {
        cfg.testnet = true;
        // Every job of a trusted executor is spot-checked.
        cfg.adaptive = AdaptivePolicy::new(2, 1000).unwrap();
        if i == SLEEPER {
            cfg.fault = Some(Fault::Sleeper(2));
        }
    })
    .await;
    let sub = net.node(SUBMITTER);
    let sleeper = net.node(SLEEPER).peer_id().to_base58();
    let module = sub.jobs().blobs().put(&fixture("hello")).unwrap().to_hex();

    let mut spot_checks = 0;
    let mut sleeper_faulted = false;
    for n in 0..12 {
        let job = run(sub, adaptive(&module)).await;
        // No lie is ever accepted.
        assert_eq!(job.state, JobState::Verified, "job {n}: {job:#?}");
        assert_eq!(stdout_of(sub, &job), HELLO, "job {n} accepted a lie");
        let first = &job.executors[0];
        match job.plan {
            Some(AdaptivePlan::SpotCheck) => {
                spot_checks += 1;
                // The checked executor's answer reached the quorum: it was
                // never released unheard, whatever the others' speed.
                assert_eq!(first.state, "answered", "job {n}: {job:#?}");
                let agrees = first.agrees.expect("judged");
                // Honest nodes always agree; the sleeper agrees only while
                // its first two results last.
                assert!(agrees || first.peer_id == sleeper, "job {n}: {job:#?}");
                let said = job
                    .events
                    .iter()
                    .find(|e| e.kind == "spot_check")
                    .expect("a spot_check event");
                assert_eq!(said.detail.contains("disagreed"), !agrees, "{said:#?}");
            }
            Some(AdaptivePlan::Full) => {}
            other => panic!("job {n}: plan {other:?} with every trusted job checked"),
        }
        // Once the sleeper is caught it is untrusted for good (it always
        // lies now), so it is never checked again.
        if sleeper_faulted {
            assert!(
                first.peer_id != sleeper || job.plan == Some(AdaptivePlan::Full),
                "job {n}: {job:#?}"
            );
        }
        let (_, streak, trusted) = standing(sub, &sleeper);
        let rows = sub.jobs().reputation_list(Some(&sleeper));
        if rows.first().is_some_and(|r| r.disagreed > 0) {
            sleeper_faulted = true;
            assert_eq!((streak, trusted), (0, false));
        }
    }
    assert!(spot_checks > 0, "no spot check in 12 jobs");
    assert!(sleeper_faulted, "the sleeper's lies were never judged");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_solo_executor_falls_back_to_the_full_quorum() {
    let mut net = Net::start_with(5, false, |_, cfg| {
        cfg.adaptive = AdaptivePolicy::new(1, 0).unwrap();
    })
    .await;
    let sub = net.node(SUBMITTER);
    let hello = sub.jobs().blobs().put(&fixture("hello")).unwrap().to_hex();
    let slow = sub.jobs().blobs().put(&sleeper(3)).unwrap().to_hex();
    let full = run(sub, wasm_job(&hello, 3, 2)).await;
    assert_eq!(full.state, JobState::Verified);

    // A 3-second job; once it runs alone, its executor is stopped.
    let mut stopped = None;
    for _ in 0..8 {
        let sub = net.node(SUBMITTER);
        let id = sub.jobs().submit(adaptive(&slow)).await.unwrap().id;
        let jobs = sub.jobs().clone();
        let plan = wait_for(DEADLINE, "a plan", || {
            let jobs = jobs.clone();
            let id = id.clone();
            async move { jobs.get(&id).ok().and_then(|r| r.plan) }
        })
        .await;
        if plan != AdaptivePlan::Solo {
            wait_final(sub, &id, DEADLINE).await;
            continue;
        }
        let rec = jobs.get(&id).unwrap();
        let exec = rec.executors[0].peer_id.clone();
        let i = (1..5)
            .find(|i| net.node(*i).peer_id().to_base58() == exec)
            .unwrap();
        net.stop(i).await;
        stopped = Some((id, exec));
        break;
    }
    let (id, gone) = stopped.expect("no job ran alone in 8 adaptive jobs");
    let sub = net.node(SUBMITTER);
    let job = wait_final(sub, &id, DEADLINE).await;
    assert_eq!(job.state, JobState::Verified, "{job:#?}");
    assert_eq!(job.plan, Some(AdaptivePlan::Fallback), "{job:#?}");
    assert_eq!(stdout_of(sub, &job), b"slept\n");
    assert_eq!(job.executors[0].peer_id, gone);
    assert!(["crashed", "missed"].contains(&job.executors[0].state.as_str()));
    let res = sub.jobs().result(&job.id).unwrap();
    assert!(!res.unverified);
    assert!(res.agreeing.len() >= 2 && !res.agreeing.contains(&gone));
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_check_waits_for_a_slow_checked_executor() {
    // Node 3 answers right but 5 s late: in a 2-of-3 job the other two
    // agree first, so without holding their answers the quorum would
    // decide without it and the spot check would prove nothing.
    const SLOW: usize = 3;
    let net = Net::start_with(4, false, |i, cfg| {
        cfg.testnet = true;
        cfg.adaptive = AdaptivePolicy::new(2, 1000).unwrap();
        // Every idle executor equally likely first: the slow node's score
        // falls behind (its late answers are not judged).
        cfg.uniform_selection = true;
        if i == SLOW {
            cfg.fault = Some(Fault::Slow);
        }
    })
    .await;
    let sub = net.node(SUBMITTER);
    let slow = net.node(SLOW).peer_id().to_base58();
    let module = sub.jobs().blobs().put(&fixture("hello")).unwrap().to_hex();
    // 3-of-3 jobs wait for everyone, so the slow node earns its streak.
    for _ in 0..2 {
        let job = run(sub, wasm_job(&module, 3, 3)).await;
        assert_eq!(job.state, JobState::Verified, "{job:#?}");
    }
    assert!(standing(sub, &slow).2, "the slow node should be trusted");

    let mut checked = None;
    for _ in 0..20 {
        let job = run(sub, adaptive(&module)).await;
        assert_eq!(job.state, JobState::Verified, "{job:#?}");
        if job.plan == Some(AdaptivePlan::SpotCheck) && job.executors[0].peer_id == slow {
            checked = Some(job);
            break;
        }
        // Its late answers keep it busy; a busy node is drawn less often.
        let jobs = net.node(SLOW).jobs().clone();
        wait_for(DEADLINE, "the slow node to be idle", || {
            let idle = jobs.running_jobs() == 0;
            async move { idle.then_some(()) }
        })
        .await;
    }
    // Each of the 20 draws picks it with chance 1/3: missing it every
    // time has odds of 1 in 3,300.
    let job = checked.expect("the slow node was never the checked executor in 20 jobs");
    let first = &job.executors[0];
    assert_eq!(first.state, "answered", "{job:#?}");
    assert_eq!(first.agrees, Some(true), "{job:#?}");
    assert!(
        job.events.iter().any(|e| e.kind == "held"),
        "the faster answers were not held: {job:#?}"
    );
    let res = sub.jobs().result(&job.id).unwrap();
    assert!(res.agreeing.contains(&slow), "{res:#?}");
    net.shutdown().await;
}
