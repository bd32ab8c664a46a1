//! Micro-benchmarks of the wire hot paths: encode+decode of a JobOffer,
//! signing and verifying. Run: `cargo bench -p agora-protocol --bench codec`.
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use agora_protocol::codec;
use agora_protocol::limits::MAX_GOSSIP_BYTES;
use agora_protocol::{
    Bid, ContentId, ExecutorSpec, JobOffer, JobSpec, NodeKey, Replication, Resources, Signed,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn offer(key: &NodeKey) -> JobOffer {
    let spec = JobSpec {
        executor: ExecutorSpec::Wasm {
            module: ContentId::of(b"module"),
        },
        args: vec!["--iterations".into(), "1000".into()],
        env: BTreeMap::from([("MODE".into(), "bench".into())]),
        stdin: Some(ContentId::of(b"stdin")),
        inputs: BTreeMap::from([("data.csv".into(), ContentId::of(b"data"))]),
        outputs: vec!["result.txt".into()],
        resources: Resources::default(),
        replication: Replication::default(),
        created_at_ms: 1_700_000_000_000,
        nonce: 42,
        requires: BTreeMap::new(),
    };
    JobOffer {
        spec: key.sign(&spec),
        timestamp_ms: 1_700_000_000_000,
        nonce: 43,
        bid_deadline_ms: 1_700_000_001_000,
    }
}

fn benches(c: &mut Criterion) {
    let key = NodeKey::from_secret([7; 32]);
    let offer = offer(&key);
    let mut g = c.benchmark_group("protocol");
    g.throughput(Throughput::Elements(1));
    g.bench_function("offer_encode_decode", |b| {
        b.iter(|| {
            let bytes = codec::encode(black_box(&offer));
            let back: JobOffer = codec::decode(&bytes, MAX_GOSSIP_BYTES).unwrap_or_else(|e| {
                panic!("benchmark offer failed to decode: {e}");
            });
            black_box(back)
        })
    });
    let bid = Bid {
        job: offer.job_id(),
        running_jobs: 1,
        max_jobs: 4,
        queue_len: 0,
        load_permille: 250,
    };
    g.bench_function("sign_bid", |b| {
        b.iter(|| black_box(key.sign(black_box(&bid))))
    });
    let signed: Signed<Bid> = key.sign(&bid);
    g.bench_function("verify_bid", |b| {
        b.iter(|| black_box(black_box(&signed).verify().is_ok()))
    });
    let signed_offer = key.sign(&offer);
    g.bench_function("verify_offer", |b| {
        b.iter(|| black_box(black_box(&signed_offer).verify().is_ok()))
    });
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
