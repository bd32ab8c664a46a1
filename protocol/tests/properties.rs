//! Property tests of the wire format: canonical round trips, tamper
//! evidence, domain separation and panic-free decoding of arbitrary bytes.

use std::collections::BTreeMap;

use agora_protocol::codec::{self, DecodeError};
use agora_protocol::limits::MAX_GOSSIP_BYTES;
use agora_protocol::{
    Attestation, Bid, CapabilityAdvert, ContentId, ExecutorSpec, JobOffer, JobSpec, NodeKey,
    Replication, Resources, ResultBundle, SignError, Signed, Verdict,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_bytes::ByteBuf;

fn cid() -> impl Strategy<Value = ContentId> {
    any::<[u8; 32]>().prop_map(ContentId::from_digest)
}

fn executor() -> impl Strategy<Value = ExecutorSpec> {
    prop_oneof![
        cid().prop_map(|module| ExecutorSpec::Wasm { module }),
        ("[a-z]{1,12}(:[a-z0-9]{1,5})?", cid()).prop_map(|(image, d)| ExecutorSpec::Docker {
            image,
            digest: format!("sha256:{d}"),
            manifest: None,
        }),
    ]
}

fn spec() -> impl Strategy<Value = JobSpec> {
    (
        executor(),
        vec(".{0,16}", 0..6),
        btree_map("[A-Z_]{1,8}", ".{0,12}", 0..4),
        proptest::option::of(cid()),
        btree_map("[a-z]{1,8}", cid(), 0..4),
        vec("[a-z]{1,8}(/[a-z]{1,8})?", 0..4),
        (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<Option<u64>>(),
            any::<u64>(),
        ),
        (1u8..=32, 1u8..=32),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(executor, args, env, stdin, inputs, outputs, r, (n, k), created_at_ms, nonce)| {
                JobSpec {
                    executor,
                    args,
                    env,
                    stdin,
                    inputs,
                    outputs,
                    resources: Resources {
                        milli_cpus: r.0,
                        memory_bytes: r.1 % agora_protocol::limits::MAX_MEMORY_BYTES,
                        timeout_ms: r.2 % agora_protocol::limits::MAX_TIMEOUT_MS,
                        fuel: r.3,
                        max_output_bytes: r.4 % agora_protocol::limits::MAX_OUTPUT_BYTES,
                    },
                    replication: Replication { n, k },
                    created_at_ms,
                    nonce,
                    requires: BTreeMap::new(),
                }
            },
        )
        .prop_map(|mut s| {
            s.resources.milli_cpus %= agora_protocol::limits::MAX_MILLI_CPUS;
            s
        })
}

fn bundle() -> impl Strategy<Value = ResultBundle> {
    (
        any::<i32>(),
        vec(any::<u8>(), 0..64),
        vec(any::<u8>(), 0..64),
        btree_map("[a-z]{1,6}", vec(any::<u8>(), 0..16), 0..4),
        any::<u64>(),
    )
        .prop_map(
            |(exit_code, stdout, stderr, outputs, duration_ms)| ResultBundle {
                exit_code,
                stdout: ByteBuf::from(stdout),
                stderr: ByteBuf::from(stderr),
                outputs: outputs
                    .into_iter()
                    .map(|(k, v)| (k, ByteBuf::from(v)))
                    .collect(),
                duration_ms,
            },
        )
}

fn key(seed: u8) -> NodeKey {
    NodeKey::from_secret([seed; 32])
}

fn offer(spec: JobSpec, k: &NodeKey) -> JobOffer {
    JobOffer {
        spec: k.sign(&spec),
        timestamp_ms: 1_700_000_000_000,
        nonce: 7,
        bid_deadline_ms: 1_700_000_002_000,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn spec_round_trips_and_encoding_is_canonical(s in spec()) {
        let bytes = codec::encode(&s);
        let back: JobSpec = codec::decode(&bytes, MAX_GOSSIP_BYTES).unwrap();
        prop_assert_eq!(&back, &s);
        prop_assert_eq!(codec::encode(&back), bytes);
    }

    #[test]
    fn bundle_round_trips_and_hash_is_stable(b in bundle()) {
        let bytes = codec::encode(&b);
        let back: ResultBundle = codec::decode(&bytes, 1 << 20).unwrap();
        prop_assert_eq!(back.result_hash(), b.result_hash());
        prop_assert_eq!(back, b);
    }

    #[test]
    fn signed_offer_round_trips_and_verifies(s in spec(), seed in 1u8..=255) {
        let k = key(seed);
        let signed = k.sign(&offer(s.clone(), &k));
        let bytes = signed.encode();
        let decoded = Signed::<JobOffer>::decode(&bytes, MAX_GOSSIP_BYTES).unwrap();
        prop_assert_eq!(decoded.encode(), bytes);
        let v = decoded.verify().unwrap();
        prop_assert_eq!(v.signer, k.peer_id());
        let inner = v.value.spec.verify().unwrap();
        prop_assert_eq!(inner.value, s);
        prop_assert_eq!(v.value.job_id(), signed.verify().unwrap().value.spec.id());
    }

    #[test]
    fn any_flipped_bit_pattern_breaks_a_signed_bid(idx in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let k = key(3);
        let bid = Bid { job: ContentId::of(b"job"), running_jobs: 1, max_jobs: 4, queue_len: 0, load_permille: 250 };
        let mut bytes = k.sign(&bid).encode();
        let i = idx.index(bytes.len());
        bytes[i] ^= mask;
        let verified = Signed::<Bid>::decode(&bytes, 4096).ok().and_then(|s| s.verify().ok());
        prop_assert!(verified.is_none(), "byte {} ^ {:#x} still verified", i, mask);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..512)) {
        let _ = Signed::<JobOffer>::decode(&bytes, MAX_GOSSIP_BYTES).map(|s| s.verify().is_ok());
        let _ = Signed::<CapabilityAdvert>::decode(&bytes, MAX_GOSSIP_BYTES).map(|s| s.verify().is_ok());
        let _ = Signed::<Verdict>::decode(&bytes, MAX_GOSSIP_BYTES).map(|s| s.verify().is_ok());
        let _ = codec::decode::<JobSpec>(&bytes, MAX_GOSSIP_BYTES);
        let _ = codec::decode::<ResultBundle>(&bytes, MAX_GOSSIP_BYTES);
    }

    #[test]
    fn decoding_mutated_valid_messages_never_panics(s in spec(), idx in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let k = key(9);
        let mut bytes = k.sign(&offer(s, &k)).encode();
        let i = idx.index(bytes.len());
        bytes[i] = byte;
        if let Ok(env) = Signed::<JobOffer>::decode(&bytes, MAX_GOSSIP_BYTES) {
            if let Ok(v) = env.verify() {
                let _ = v.value.spec.verify();
            }
        }
    }
}

#[test]
fn every_single_byte_tamper_of_a_signed_offer_fails() {
    let k = key(5);
    let s = JobSpec {
        executor: ExecutorSpec::Wasm {
            module: ContentId::of(b"m"),
        },
        args: vec!["--n".into(), "10".into()],
        env: BTreeMap::from([("MODE".into(), "fast".into())]),
        stdin: Some(ContentId::of(b"in")),
        inputs: BTreeMap::from([("data.csv".into(), ContentId::of(b"csv"))]),
        outputs: vec!["out.txt".into()],
        resources: Resources::default(),
        replication: Replication::default(),
        created_at_ms: 1,
        nonce: 2,
        requires: BTreeMap::new(),
    };
    let original = k.sign(&offer(s, &k)).encode();
    for i in 0..original.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bytes = original.clone();
            bytes[i] ^= mask;
            let ok = Signed::<JobOffer>::decode(&bytes, MAX_GOSSIP_BYTES)
                .ok()
                .and_then(|e| e.verify().ok());
            assert!(ok.is_none(), "byte {i} ^ {mask:#x} still verified");
        }
    }
}

#[test]
fn a_signature_under_one_domain_does_not_verify_under_another() {
    let k = key(4);
    let att = Attestation {
        job: ContentId::of(b"job"),
        result_hash: ContentId::of(b"result"),
        exit_code: 0,
        finished_at_ms: 5,
    };
    let signed = k.sign(&att);
    assert!(signed.clone().verify().is_ok());
    // The same bytes presented as a Bid: the domain differs, so the
    // signature check fails before the payload is even decoded.
    let as_bid: Signed<Bid> = signed.retag();
    assert!(matches!(
        as_bid.verify(),
        Err(SignError::BadSignature {
            domain: "agora/bid",
            ..
        })
    ));
}

#[test]
fn signer_is_the_libp2p_peer_id() {
    let kp = NodeKey::generate();
    let libp2p = kp.to_libp2p();
    assert_eq!(libp2p.public().to_peer_id(), kp.peer_id());
    let back = NodeKey::from_libp2p(&libp2p).unwrap();
    assert_eq!(back.secret_bytes(), kp.secret_bytes());
    let bid = Bid {
        job: ContentId::of(b"j"),
        running_jobs: 0,
        max_jobs: 1,
        queue_len: 0,
        load_permille: 0,
    };
    assert_eq!(back.sign(&bid).verify().unwrap().signer, kp.peer_id());
}

#[test]
fn unknown_version_and_oversize_are_typed_errors() {
    let k = key(6);
    let bid = Bid {
        job: ContentId::of(b"j"),
        running_jobs: 0,
        max_jobs: 1,
        queue_len: 0,
        load_permille: 0,
    };
    let bytes = k.sign(&bid).encode();
    // The envelope is a map whose first entry is "v": 1 (0x61 0x76 0x01).
    let pos = bytes
        .windows(3)
        .position(|w| w == [0x61, b'v', 0x01])
        .unwrap();
    let mut v2 = bytes.clone();
    v2[pos + 2] = 0x02;
    assert!(matches!(
        Signed::<Bid>::decode(&v2, 4096),
        Err(DecodeError::UnknownVersion {
            found: 2,
            supported: 1
        })
    ));
    assert!(matches!(
        Signed::<Bid>::decode(&bytes, 10),
        Err(DecodeError::TooLarge { .. })
    ));
    // A spec with too many args is refused at decode time.
    let mut s = JobSpec {
        executor: ExecutorSpec::Wasm {
            module: ContentId::of(b"m"),
        },
        args: vec![],
        env: BTreeMap::new(),
        stdin: None,
        inputs: BTreeMap::new(),
        outputs: vec![],
        resources: Resources::default(),
        replication: Replication::default(),
        created_at_ms: 0,
        nonce: 0,
        requires: BTreeMap::new(),
    };
    s.args = vec!["a".into(); agora_protocol::limits::MAX_ARGS + 1];
    assert!(matches!(
        codec::decode::<JobSpec>(&codec::encode(&s), MAX_GOSSIP_BYTES),
        Err(DecodeError::Limit(_))
    ));
}
