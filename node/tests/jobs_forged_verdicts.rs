//! One stranger against a four-node network of real daemons: a brand-new
//! identity that never executed or submitted anything joins and gossips
//! forged verdicts on the verdicts topic. Timeout verdicts charge two honest
//! nodes with misses (for a job that does not exist, and for a job of its
//! own with acceptances in the honest nodes' names that they never
//! signed); k=1 verdicts praise an accomplice; a well-formed 2-of-3 verdict
//! has two accomplices endorse each other and outvote an honest node. No
//! node's score, counts or standing of anyone changes, the accomplices are
//! unknown everywhere, the forger is scored down by the node it talks to,
//! and the network still verifies jobs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod jobs_harness;

use std::sync::Arc;
use std::time::Duration;

use agora_node::api::types::{JobState, ReputationInfo};
use agora_node::clock::unix_now_ms;
use agora_node::daemon::Daemon;
use agora_node::network::{spawn, NetworkConfig, NetworkError, TopicValidators};
use agora_protocol::{
    Acceptance, Attestation, ContentId, JobSpec, NodeKey, PeerId, Replication, Signed, Verdict,
    VerdictOutcome, TOPIC_VERDICTS,
};
use jobs_harness::{fixture, wait_final, wait_for, wasm_job, Net, DEADLINE};
use libp2p::identity::PublicKey;
use libp2p::multiaddr::Protocol;
use tokio_util::sync::CancellationToken;

const BYSTANDER: usize = 0;
const VICTIMS: [usize; 2] = [1, 2];

/// Every node's opinion of every peer, as the API shows it (evidence
/// lists aside: a refused verdict must not change the numbers).
type Opinions = Vec<Vec<(String, u32, u64, u64, u64, String)>>;

fn opinions(net: &Net, n: usize) -> Opinions {
    (0..n)
        .map(|i| {
            net.node(i)
                .jobs()
                .reputation_list(None)
                .into_iter()
                .map(|r: ReputationInfo| {
                    (
                        r.peer_id,
                        r.score,
                        r.agreed,
                        r.disagreed,
                        r.missed,
                        r.standing,
                    )
                })
                .collect()
        })
        .collect()
}

fn ed25519_public(peer: &PeerId) -> [u8; 32] {
    let key = PublicKey::try_decode_protobuf(peer.as_ref().digest()).unwrap();
    key.try_into_ed25519().unwrap().to_bytes()
}

/// `value` signed by `forger` with the envelope naming `victim` as signer.
fn impersonate<T: agora_protocol::SignedMessage + serde::Serialize>(
    forger: &NodeKey,
    victim: &PeerId,
    value: &T,
) -> Signed<T> {
    let mut bytes = forger.sign(value).encode();
    let from = forger.public();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("the envelope holds the signer's key");
    bytes[at..at + 32].copy_from_slice(&ed25519_public(victim));
    Signed::decode(&bytes, 4096).unwrap()
}

fn spec(forger: &NodeKey, nonce: u64, n: u8, k: u8) -> Signed<JobSpec> {
    forger.sign(&JobSpec {
        nonce,
        replication: Replication { n, k },
        ..JobSpec::wasm(ContentId::of(b"module"))
    })
}

fn timeout(spec: Signed<JobSpec>, missed: Vec<Signed<Acceptance>>) -> Verdict {
    Verdict {
        job: spec.id(),
        spec,
        k: 2,
        n: 3,
        outcome: VerdictOutcome::Timeout,
        accepted: None,
        attestations: vec![],
        missed,
        decided_at_ms: unix_now_ms(),
    }
}

fn attest(key: &NodeKey, job: ContentId, hash: &[u8]) -> Signed<Attestation> {
    key.sign(&Attestation {
        job,
        result_hash: ContentId::of(hash),
        exit_code: 0,
        finished_at_ms: 1,
    })
}

/// Submits a 2-of-3 job of `module` from `node`; it must verify.
async fn run_verified(node: &Daemon, module: ContentId) {
    let id = node
        .jobs()
        .submit(wasm_job(&module.to_hex(), 3, 2))
        .await
        .unwrap()
        .id;
    let r = wait_final(node, &id, DEADLINE).await;
    assert_eq!(r.state, JobState::Verified, "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_frame_honest_nodes_or_promote_accomplices() {
    let net = Net::start(4, false).await;
    let bystander = net.node(BYSTANDER);
    // The bystander's own jobs give it an opinion of the others.
    let module = bystander.jobs().blobs().put(&fixture("hello")).unwrap();
    for _ in 0..6 {
        run_verified(bystander, module).await;
    }
    let before = opinions(&net, 4);
    assert_eq!(before[BYSTANDER].len(), 3, "{before:#?}");
    assert!(before[BYSTANDER]
        .iter()
        .all(|r| r.2 > 0 && r.5 != "excluded"));

    // The forger: a bare libp2p node with a fresh key, dialling the
    // bystander; it accepts no gossip itself.
    let forger = NodeKey::generate();
    let accomplices = [NodeKey::generate(), NodeKey::generate()];
    let victims: Vec<PeerId> = VICTIMS.iter().map(|i| net.node(*i).peer_id()).collect();
    let target = bystander
        .listen_addrs(DEADLINE)
        .await
        .into_iter()
        .next()
        .unwrap()
        .with(Protocol::P2p(bystander.peer_id()));
    let mut cfg = NetworkConfig::new(forger.clone());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.bootstrap = vec![target];
    cfg.validator = Arc::new(TopicValidators::new());
    let cancel = CancellationToken::new();
    let (handle, task) = spawn(cfg, cancel.clone()).unwrap();
    let net_b = bystander.network().clone();
    wait_for(DEADLINE, "the bystander to see the forger", || {
        let net_b = net_b.clone();
        let id = forger.peer_id();
        async move { net_b.peer_score(id).await.ok().flatten() }
    })
    .await;

    let accept = |victim: &PeerId, job: ContentId| {
        impersonate(
            &forger,
            victim,
            &Acceptance {
                job,
                submitter: forger.peer_id(),
                attempt: 0,
                deadline_ms: 1,
            },
        )
    };
    let publish = |what: &'static str, v: &Verdict| {
        let data = forger.sign(v).encode();
        let h = handle.clone();
        async move {
            wait_for(DEADLINE, what, || {
                let (h, data) = (h.clone(), data.clone());
                async move {
                    match h.publish(TOPIC_VERDICTS, data).await {
                        Ok(_) => Some(()),
                        Err(NetworkError::NoPeers { .. }) => None,
                        Err(e) => panic!("publish failed: {e}"),
                    }
                }
            })
            .await
        }
    };
    let m = net_b.metrics();

    // First a well-formed verdict signed by nobody the bystander trusts:
    // two accomplices endorse each other. Taken in, weighed at nothing.
    let s = spec(&forger, 300, 3, 2);
    let job = s.id();
    let sybil = Verdict {
        job,
        spec: s,
        k: 2,
        n: 3,
        outcome: VerdictOutcome::Verified,
        accepted: Some(ContentId::of(b"lie")),
        attestations: vec![
            attest(&accomplices[0], job, b"lie"),
            attest(&accomplices[1], job, b"lie"),
        ],
        missed: vec![],
        decided_at_ms: unix_now_ms(),
    };
    publish("the accomplices' verdict", &sybil).await;
    wait_for(DEADLINE, "the bystander to take in the verdict", || {
        let n = m.received(TOPIC_VERDICTS);
        async move { (n >= 1).then_some(()) }
    })
    .await;
    assert_eq!(m.rejected(TOPIC_VERDICTS), 0);
    assert_eq!(
        opinions(&net, 4),
        before,
        "an untrusted verdict changed an opinion"
    );

    // Then the forgeries, one of each kind in turn.
    let mut forged: Vec<(&'static str, Verdict)> = Vec::new();
    for nonce in 0..6 {
        // A job that never existed: the spec is another one's.
        let s = spec(&forger, nonce, 3, 2);
        let ghost = ContentId::of(format!("ghost {nonce}").as_bytes());
        let mut v = timeout(s, victims.iter().map(|p| accept(p, ghost)).collect());
        v.job = ghost;
        forged.push(("a miss for a job that never existed", v));
        // Its own job, with acceptances the victims never signed.
        let s = spec(&forger, 100 + nonce, 3, 2);
        let job = s.id();
        forged.push((
            "a miss without the accused's signature",
            timeout(s, victims.iter().map(|p| accept(p, job)).collect()),
        ));
        // k = 1: one accomplice's signature "verifies" a job.
        let s = spec(&forger, 200 + nonce, 1, 1);
        let job = s.id();
        forged.push((
            "k=1 praise of an accomplice",
            Verdict {
                job,
                spec: s,
                k: 1,
                n: 1,
                outcome: VerdictOutcome::Verified,
                accepted: Some(ContentId::of(b"ok")),
                attestations: vec![attest(&accomplices[0], job, b"ok")],
                missed: vec![],
                decided_at_ms: unix_now_ms(),
            },
        ));
    }
    for (what, v) in &forged {
        publish(what, v).await;
    }
    // Each refusal costs the forger gossip score; soon the bystander
    // drops its messages unseen (gossipsub's graylist).
    wait_for(DEADLINE, "the bystander to refuse the forgeries", || {
        let n = m.rejected(TOPIC_VERDICTS);
        async move { (n >= 3).then_some(()) }
    })
    .await;
    let score = net_b.peer_score(forger.peer_id()).await.unwrap().unwrap();
    assert!(score < 0.0, "the forger is scored down: {score}");
    // Stragglers in flight are refused or dropped too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (received, rejected) = (m.received(TOPIC_VERDICTS), m.rejected(TOPIC_VERDICTS));
    assert_eq!(
        received,
        1 + rejected,
        "every forgery taken in was refused ({rejected} of {} sent)",
        forged.len()
    );

    assert_eq!(
        opinions(&net, 4),
        before,
        "a forged verdict changed an opinion"
    );
    for i in 0..4 {
        let rows = net.node(i).jobs().reputation_list(None);
        for a in &accomplices {
            let a = a.peer_id().to_base58();
            assert!(
                rows.iter().all(|r| r.peer_id != a),
                "node {i} knows an accomplice"
            );
        }
    }
    // Honest nodes still run the bystander's jobs.
    run_verified(bystander, module).await;

    cancel.cancel();
    task.await.unwrap();
    net.shutdown().await;
}
