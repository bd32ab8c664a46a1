//! Forged adverts are rejected before forwarding: attacker -> victim ->
//! witness in a line; each forgery (bad signature, exact replay, replayed
//! seq, over-limit payload, bad encoding, someone else's advert) is counted
//! as rejected at the victim, lowers the attacker's gossip score there, and
//! never reaches the witness, while the attacker's honest adverts before
//! and after it do.

// In tests a failed unwrap is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod network_harness;

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use agora_node::clock::unix_now_ms;
use agora_node::network::adverts::{AdvertValidator, SharedPeerBook};
use agora_node::network::{KadMode, NetworkError, TopicValidators};
use agora_protocol::{CapabilityAdvert, NodeKey, TOPIC_ADVERTS};
use network_harness::*;

/// The victim and witness remember message ids this long; the exact
/// replay waits it out so the duplicate cache cannot hide the replay.
const DUP_CACHE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
enum Forgery {
    BadSignature,
    ExactReplay,
    ReplayedSeq,
    OverLimitPayload,
    BadEncoding,
    SomeoneElses,
}

fn advert(seq: u64) -> CapabilityAdvert {
    CapabilityAdvert {
        seq,
        timestamp_ms: unix_now_ms(),
        ..template_advert()
    }
}

/// Publishes a freshly signed advert until a peer is subscribed; returns
/// its seq and bytes.
async fn publish_honest(node: &TestNode, min_seq: u64) -> (u64, Vec<u8>) {
    wait_for(
        DEADLINE,
        "the attacker to publish an honest advert",
        || async {
            // A new timestamp each try, so a retry is never a duplicate.
            let seq = min_seq.max(unix_now_ms());
            let bytes = node.key.sign(&advert(seq)).encode();
            match node.handle.publish(TOPIC_ADVERTS, bytes.clone()).await {
                Ok(_) => Some((seq, bytes)),
                Err(NetworkError::NoPeers { .. }) => None,
                Err(e) => panic!("publish failed: {e}"),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_adverts_are_rejected_counted_and_not_forwarded() {
    let mk = |book: &SharedPeerBook| {
        let mut cfg = test_config(NodeKey::generate(), vec![], book);
        // No discovery: the line topology must stay a line.
        cfg.discovery_interval = Duration::from_secs(3600);
        cfg.min_peers = 0;
        cfg.gossip_duplicate_cache = DUP_CACHE;
        // Older adverts up to 1 s old count as late deliveries; the exact
        // replay below is older than that.
        cfg.validator = Arc::new(TopicValidators::new().with(
            TOPIC_ADVERTS,
            Arc::new(AdvertValidator::new(book.clone()).with_late_grace(Duration::from_secs(1))),
        ));
        cfg
    };
    let victim_book = new_book();
    let mut victim = start(mk(&victim_book), victim_book, None);
    let victim_addr = victim.dial_addr().await;

    // The witness only knows the victim. Client mode keeps it out of the
    // victim's routing table, so no attacker's DHT query can find it.
    let witness_book = new_book();
    let mut wcfg = mk(&witness_book);
    wcfg.kad_mode = KadMode::Client;
    let mut witness = start(wcfg, witness_book, None);
    witness.handle.dial(victim_addr.clone()).await.unwrap();

    let forgeries = [
        Forgery::BadSignature,
        Forgery::ExactReplay,
        Forgery::ReplayedSeq,
        Forgery::OverLimitPayload,
        Forgery::BadEncoding,
        Forgery::SomeoneElses,
    ];
    for (i, forgery) in forgeries.into_iter().enumerate() {
        // A fresh attacker per forgery, so one attack's score penalty
        // cannot graylist the next.
        let book = new_book();
        let mut acfg = mk(&book);
        acfg.kad_mode = KadMode::Client;
        let mut attacker = start(acfg, book, None);
        let a = attacker.peer_id();
        attacker.handle.dial(victim_addr.clone()).await.unwrap();

        // Control: the attacker's honest advert passes through the victim
        // to the witness.
        let (s1, m1) = publish_honest(&attacker, 0).await;
        wait_until(DEADLINE, "the honest advert to reach the witness", || {
            let ok = witness.seq_of(&a) == Some(s1);
            async move { ok }
        })
        .await;

        let forged: Vec<u8> = match forgery {
            Forgery::BadSignature => {
                let mut b = attacker.key.sign(&advert(s1 + 1)).encode();
                let last = b.len() - 1;
                b[last] ^= 0x01;
                b
            }
            Forgery::ExactReplay => {
                // Move the attacker's seq on, then replay the first advert
                // byte for byte once the duplicate caches have forgotten it.
                let (s2, _) = publish_honest(&attacker, s1 + 1).await;
                wait_until(DEADLINE, "the second advert to reach the witness", || {
                    let ok = witness.seq_of(&a) == Some(s2);
                    async move { ok }
                })
                .await;
                tokio::time::sleep(DUP_CACHE + Duration::from_secs(1)).await;
                // gossipsub expires its caches lazily, on the next insert:
                // one more honest advert clears the old id out of the
                // attacker's cache (the victim's clears on the replay).
                let (s3, _) = publish_honest(&attacker, s2 + 1).await;
                wait_until(DEADLINE, "the third advert to reach the witness", || {
                    let ok = witness.seq_of(&a) == Some(s3);
                    async move { ok }
                })
                .await;
                m1.clone()
            }
            Forgery::ReplayedSeq => attacker.key.sign(&advert(s1)).encode(),
            Forgery::OverLimitPayload => {
                let mut big = advert(s1 + 1);
                big.labels = BTreeMap::from([(
                    "blob".to_owned(),
                    "x".repeat(agora_protocol::limits::MAX_STRING_BYTES + 1),
                )]);
                attacker.key.sign(&big).encode()
            }
            Forgery::BadEncoding => b"\xa4not an advert at all".to_vec(),
            Forgery::SomeoneElses => NodeKey::generate().sign(&advert(s1 + 1)).encode(),
        };
        let seq_before = victim.seq_of(&a);
        let rejected_before = victim.handle.metrics().rejected(TOPIC_ADVERTS);
        attacker
            .handle
            .publish(TOPIC_ADVERTS, forged)
            .await
            .unwrap_or_else(|e| panic!("{forgery:?}: attacker could not publish: {e}"));
        wait_until(DEADLINE, "the victim to reject the forgery", || {
            let n = victim.handle.metrics().rejected(TOPIC_ADVERTS);
            async move { n > rejected_before }
        })
        .await;
        assert_eq!(
            victim.handle.metrics().rejected(TOPIC_ADVERTS),
            rejected_before + 1,
            "{forgery:?}: exactly one rejection"
        );
        assert_eq!(victim.seq_of(&a), seq_before, "{forgery:?}: book unchanged");
        let score = victim
            .handle
            .peer_score(a)
            .await
            .unwrap()
            .expect("the victim scores the attacker");
        assert!(
            score < 0.0,
            "{forgery:?}: attacker penalised, score {score}"
        );

        // Sentinel: a later honest advert from the attacker reaches the
        // witness; had the victim forwarded the forgery, the witness would
        // have received (and rejected) it first on the same stream.
        let (s3, _) = publish_honest(&attacker, s1 + 10).await;
        wait_until(DEADLINE, "the sentinel advert to reach the witness", || {
            let ok = witness.seq_of(&a) == Some(s3);
            async move { ok }
        })
        .await;
        assert_eq!(
            witness.handle.metrics().rejected(TOPIC_ADVERTS),
            0,
            "{forgery:?}: the forgery reached the witness"
        );
        assert_eq!(
            victim.handle.metrics().rejected(TOPIC_ADVERTS),
            i as u64 + 1
        );
        attacker.stop().await;
    }
    assert_eq!(witness.handle.metrics().rejected(TOPIC_ADVERTS), 0);
    assert!(witness.handle.metrics().received(TOPIC_ADVERTS) >= forgeries.len() as u64 * 2);
    witness.stop().await;
    victim.stop().await;
}
