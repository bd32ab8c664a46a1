//! Property tests of the verifier: quorum safety under any honest/lying split and event order, evidence checks on forged verdicts, score clamping and selection rules.

// Helpers outside #[test] fns are not covered by clippy's
// allow-unwrap-in-tests; here a panic is simply a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use agora_protocol::limits::MAX_GOSSIP_BYTES;
use agora_protocol::{
    Acceptance, Attestation, ContentId, JobSpec, NodeKey, PeerId, Replication, Signed, Verdict,
    VerdictOutcome, Verified,
};
use agora_verifier::{
    select_executors, Candidate, Decision, Observation, PeerRecord, Quorum, QuorumError,
    ReputationBook, ReputationConfig, VerdictError,
};
use proptest::prelude::*;

/// Keys 0..48 play executors; the rest are outsiders and reporters.
const POOL: usize = 64;
const OUTSIDER: usize = 60;
const REPORTER: usize = 61;
const ATTACKER: usize = 62;

fn keys() -> &'static [NodeKey] {
    static KEYS: OnceLock<Vec<NodeKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..POOL)
            .map(|i| {
                let mut secret = [7u8; 32];
                secret[0] = i as u8;
                NodeKey::from_secret(secret)
            })
            .collect()
    })
}

fn peer(i: usize) -> PeerId {
    keys()[i].peer_id()
}

/// The REPORTER's signed spec of a k-of-n job.
fn spec(n: u8, k: u8) -> Signed<JobSpec> {
    keys()[REPORTER].sign(&JobSpec {
        replication: Replication { n, k },
        ..JobSpec::wasm(ContentId::of(b"module"))
    })
}

/// The job the quorum properties run (its spec is [`spec`]`(3, 2)`).
fn job() -> ContentId {
    static JOB: OnceLock<ContentId> = OnceLock::new();
    *JOB.get_or_init(|| spec(3, 2).id())
}

fn honest() -> ContentId {
    ContentId::of(b"honest result")
}

fn collusion() -> ContentId {
    ContentId::of(b"the agreed lie")
}

fn lie(i: usize) -> ContentId {
    ContentId::of(format!("lie {i}").as_bytes())
}

fn attest(i: usize, job: ContentId, hash: ContentId) -> Signed<Attestation> {
    keys()[i].sign(&Attestation {
        job,
        result_hash: hash,
        exit_code: 0,
        finished_at_ms: 1_000,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Honest,
    /// Lies with the hash every colluder uses.
    Collude,
    /// Lies with a hash of its own.
    LieAlone,
    Miss,
    Crash,
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        4 => Just(Behaviour::Honest),
        2 => Just(Behaviour::Collude),
        2 => Just(Behaviour::LieAlone),
        1 => Just(Behaviour::Miss),
        1 => Just(Behaviour::Crash),
    ]
}

fn answer_of(i: usize, b: Behaviour) -> Option<ContentId> {
    match b {
        Behaviour::Honest => Some(honest()),
        Behaviour::Collude => Some(collusion()),
        Behaviour::LieAlone => Some(lie(i)),
        Behaviour::Miss | Behaviour::Crash => None,
    }
}

/// n, k with 2k > n, and a cap >= n.
fn replication() -> impl Strategy<Value = (u8, u8, u8)> {
    (1u8..=9)
        .prop_flat_map(|n| (Just(n), (n / 2 + 1)..=n, 0u8..=4))
        .prop_map(|(n, k, extra)| (n, k, n + extra))
}

fn feed(q: &mut Quorum, i: usize, b: Behaviour) -> Result<Decision, QuorumError> {
    match b {
        Behaviour::Miss => q.missed(peer(i)),
        Behaviour::Crash => q.crashed(peer(i)),
        _ => q.attest(&attest(i, job(), answer_of(i, b).unwrap())),
    }
}

/// Assigns the next `how_many` executors of the pool and queues their events.
fn assign(
    q: &mut Quorum,
    queue: &mut Vec<usize>,
    next: &mut usize,
    how_many: u8,
    pool: &[Behaviour],
    behaviours: &mut BTreeMap<PeerId, Behaviour>,
) {
    for _ in 0..how_many {
        q.assign(peer(*next)).unwrap();
        behaviours.insert(peer(*next), pool[*next]);
        queue.push(*next);
        *next += 1;
    }
}

/// Checks what a decision claims against what each executor really sent.
fn check_decision(
    d: &Decision,
    k: u8,
    sent: &BTreeMap<PeerId, ContentId>,
    behaviours: &BTreeMap<PeerId, Behaviour>,
) {
    if let Decision::Verified {
        hash,
        agreeing,
        disagreeing,
    } = d
    {
        assert!(agreeing.len() >= usize::from(k));
        // The accepted hash leads every other answer by k.
        let mut tally: BTreeMap<ContentId, usize> = BTreeMap::new();
        for h in sent.values() {
            *tally.entry(*h).or_default() += 1;
        }
        let runner_up = tally
            .iter()
            .filter(|(h, _)| *h != hash)
            .map(|(_, c)| *c)
            .max()
            .unwrap_or(0);
        assert!(
            tally.get(hash).copied().unwrap_or(0) >= runner_up + usize::from(k),
            "accepted without a lead of k: {tally:?}"
        );
        let distinct: BTreeSet<_> = agreeing.iter().collect();
        assert_eq!(distinct.len(), agreeing.len(), "an executor counted twice");
        for p in agreeing {
            assert_eq!(sent.get(p), Some(hash), "{p} counted as agreeing");
        }
        for (p, h) in disagreeing {
            assert_ne!(h, hash);
            assert_eq!(sent.get(p), Some(h));
        }
        if *hash == honest() {
            for p in agreeing {
                assert_eq!(behaviours.get(p), Some(&Behaviour::Honest), "a liar agreed");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Any split, any order, replacements and escalation as asked for:
    /// a verified hash leads every answer sent by k, decisions are
    /// truthful, a decided quorum never changes, duplicates and outsiders
    /// change nothing, and with a cap's worth of executors the quorum
    /// always ends.
    #[test]
    fn quorum_is_safe_under_any_split_and_order(
        (n, k, cap) in replication(),
        pool in prop::collection::vec(behaviour(), 13),
        picks in prop::collection::vec(any::<u16>(), 40),
        noise in prop::collection::vec(0u8..4, 40),
    ) {
        let behaviours_vec = &pool[..usize::from(cap)];
        let mut q = Quorum::new(job(), n, k, cap).unwrap();
        let mut queue: Vec<usize> = Vec::new();
        let mut next = 0usize;
        let mut behaviours = BTreeMap::new();
        let mut sent: BTreeMap<PeerId, ContentId> = BTreeMap::new();
        let first = q.decision();
        prop_assert_eq!(first.clone(), Decision::NeedMore { how_many: n, why: agora_verifier::MoreReason::Replace });
        assign(&mut q, &mut queue, &mut next, n, behaviours_vec, &mut behaviours);
        let mut final_decision: Option<Decision> = None;
        let mut step = 0usize;
        while !queue.is_empty() {
            let pick = usize::from(picks[step % picks.len()]) % queue.len();
            let i = queue.remove(pick);
            let before_count = q.attestations().count();
            let r = feed(&mut q, i, behaviours_vec[i]);
            match (&final_decision, r) {
                (Some(fd), r) => {
                    prop_assert!(r.is_err(), "accepted after the decision");
                    prop_assert_eq!(q.attestations().count(), before_count);
                    prop_assert_eq!(&q.decision(), fd);
                }
                (None, r) => {
                    let d = r.unwrap();
                    if let Some(h) = answer_of(i, behaviours_vec[i]) {
                        sent.insert(peer(i), h);
                    }
                    check_decision(&d, k, &sent, &behaviours);
                    if d.is_final() {
                        final_decision = Some(d.clone());
                    } else if let Decision::NeedMore { how_many, .. } = d {
                        prop_assert!(next + usize::from(how_many) <= usize::from(cap));
                        assign(&mut q, &mut queue, &mut next, how_many, behaviours_vec, &mut behaviours);
                    }
                }
            }

            // Noise: a second answer from an executor that already
            // answered, or an answer from an outsider. Neither may count.
            let snapshot = (q.decision(), q.attestations().count());
            match noise[step % noise.len()] {
                1 if sent.contains_key(&peer(i)) => {
                    let r = q.attest(&attest(i, job(), lie(1000 + i)));
                    prop_assert!(matches!(r, Err(QuorumError::Duplicate(_)) | Err(QuorumError::Late(_))), "{:?}", r);
                }
                2 => {
                    let r = q.attest(&attest(OUTSIDER, job(), honest()));
                    prop_assert!(matches!(r, Err(QuorumError::Unassigned(_))), "{:?}", r);
                }
                3 => {
                    let r = q.attest(&attest(i, ContentId::of(b"another job"), honest()));
                    prop_assert!(matches!(r, Err(QuorumError::WrongJob { .. })), "{:?}", r);
                }
                _ => {}
            }
            prop_assert_eq!((q.decision(), q.attestations().count()), snapshot);
            step += 1;
        }
        prop_assert!(final_decision.is_some(), "quorum did not end: {:?}", q.decision());
        let fd = final_decision.unwrap_or(Decision::Pending);
        let verdict = q.verdict(&spec(3, 2), &BTreeMap::new(), 5).unwrap();
        prop_assert!(verdict.attestations.len() <= usize::from(cap));
        match fd {
            Decision::Verified { hash, .. } => {
                prop_assert_eq!(verdict.outcome, VerdictOutcome::Verified);
                prop_assert_eq!(verdict.accepted, Some(hash));
            }
            Decision::Failed(_) => prop_assert!(verdict.accepted.is_none()),
            other => prop_assert!(false, "unexpected final decision {:?}", other),
        }
        // The quorum's own verdict passes the book's evidence checks.
        let mut book = ReputationBook::default();
        let signed = keys()[REPORTER].sign(&verdict).verify().unwrap();
        let applied = book.apply_verdict(&signed, true, 1);
        prop_assert!(applied.is_ok(), "{:?}", applied);
    }

    /// With at least k honest executors among the first n, and honest
    /// ones drawn when the quorum asks for more (up to 2n - k in all), the
    /// honest hash is verified whatever the liars do and in whatever order
    /// the answers come, and no liar agrees.
    #[test]
    fn honest_quorum_wins(
        (n, k, _) in replication(),
        liars in prop::collection::vec(behaviour(), 9),
        honest_at in prop::collection::vec(any::<bool>(), 9),
        picks in prop::collection::vec(any::<u16>(), 20),
    ) {
        let n_us = usize::from(n);
        // Mark executors honest until at least k are.
        let mut b: Vec<Behaviour> = (0..n_us)
            .map(|i| if honest_at[i] { Behaviour::Honest } else { liars[i] })
            .collect();
        let mut i = 0;
        while b.iter().filter(|x| **x == Behaviour::Honest).count() < usize::from(k) {
            b[i] = Behaviour::Honest;
            i += 1;
        }
        let mut q = Quorum::new(job(), n, k, 2 * n - k).unwrap();
        for e in 0..n_us {
            q.assign(peer(e)).unwrap();
        }
        let mut queue: Vec<usize> = (0..n_us).collect();
        let mut step = 0;
        let mut decided = None;
        while !queue.is_empty() {
            let e = queue.remove(usize::from(picks[step % picks.len()]) % queue.len());
            step += 1;
            if let Ok(d) = feed(&mut q, e, b[e]) {
                prop_assert!(!matches!(d, Decision::Failed(_)), "failed with an honest quorum: {:?}", d);
                if d.is_final() {
                    decided = Some(d);
                } else if let Decision::NeedMore { how_many, .. } = d {
                    for _ in 0..how_many {
                        q.assign(peer(b.len())).unwrap();
                        queue.push(b.len());
                        b.push(Behaviour::Honest);
                    }
                }
            }
        }
        let Some(Decision::Verified { hash, agreeing, disagreeing }) = decided else {
            return Err(TestCaseError::fail(format!("not verified: {:?}", q.decision())));
        };
        prop_assert_eq!(hash, honest());
        for p in &agreeing {
            let idx = (0..b.len()).find(|&e| peer(e) == *p).unwrap();
            prop_assert_eq!(b[idx], Behaviour::Honest);
        }
        for (p, h) in &disagreeing {
            prop_assert_ne!(*h, honest());
            prop_assert!(!agreeing.contains(p));
        }
    }
}

/// Replaces the first occurrence of `from` in `bytes` by `to`.
fn splice(bytes: &mut [u8], from: &[u8], to: &[u8]) -> bool {
    match bytes.windows(from.len()).position(|w| w == from) {
        Some(at) => {
            bytes[at..at + to.len()].copy_from_slice(to);
            true
        }
        None => false,
    }
}

/// An attestation whose envelope names `victim` as signer but was signed
/// by the attacker's key.
fn impersonate(victim: usize, job: ContentId, hash: ContentId) -> Signed<Attestation> {
    let real = attest(ATTACKER, job, hash);
    let mut bytes = real.encode();
    assert!(splice(
        &mut bytes,
        &keys()[ATTACKER].public(),
        &keys()[victim].public()
    ));
    Signed::decode(&bytes, MAX_GOSSIP_BYTES).unwrap()
}

/// The same attestation with one signature bit flipped (the signature is
/// the envelope's last field, so its last byte ends the encoding).
fn corrupt(s: &Signed<Attestation>) -> Signed<Attestation> {
    let mut bytes = s.encode();
    if let Some(last) = bytes.last_mut() {
        *last ^= 1;
    }
    Signed::decode(&bytes, MAX_GOSSIP_BYTES).unwrap()
}

fn snapshot(b: &ReputationBook) -> Vec<(PeerId, PeerRecord)> {
    b.records().map(|(p, r)| (*p, *r)).collect()
}

fn honest_verdict(n: u8, k: u8, liars: &[Behaviour], missed: usize) -> Verdict {
    // Executors 0..k are honest; the rest follow `liars`, then `missed`
    // more are listed as missed, with their acceptances.
    let spec = spec(n, k);
    let job = spec.id();
    let mut atts = Vec::new();
    for (i, &liar) in liars.iter().enumerate().take(usize::from(n)) {
        let b = if i < usize::from(k) {
            Behaviour::Honest
        } else {
            liar
        };
        if let Some(h) = answer_of(i, b) {
            atts.push(attest(i, job, h));
        }
    }
    // Honest executors added until the honest hash leads by k, as the
    // quorum escalates.
    let mut lies: BTreeMap<ContentId, usize> = BTreeMap::new();
    for a in &atts {
        let h = a.verify().unwrap().value.result_hash;
        if h != honest() {
            *lies.entry(h).or_default() += 1;
        }
    }
    for extra in 0..lies.values().copied().max().unwrap_or(0) {
        atts.push(attest(usize::from(n) + extra, job, honest()));
    }
    let accept = |m: usize| {
        keys()[40 + m].sign(&Acceptance {
            job,
            submitter: peer(REPORTER),
            attempt: 0,
            deadline_ms: 1,
        })
    };
    Verdict {
        job,
        spec,
        k,
        n,
        outcome: VerdictOutcome::Verified,
        accepted: Some(honest()),
        attestations: atts,
        missed: (0..missed).map(accept).collect(),
        decided_at_ms: 9,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// A forged verdict changes no score, locally or by gossip, while the
    /// genuine one it was forged from is accepted.
    #[test]
    fn forged_verdicts_change_nothing(
        (n, k, _) in replication(),
        liars in prop::collection::vec(behaviour(), 9),
        missed in 0usize..3,
        which in 0usize..5,
        target in any::<prop::sample::Index>(),
        local in any::<bool>(),
        history in prop::collection::vec((0usize..12, 0u8..3), 0..20),
    ) {
        let mut book = ReputationBook::default();
        for (t, (p, o)) in history.iter().enumerate() {
            let obs = [Observation::Agreed, Observation::Disagreed, Observation::Missed][usize::from(*o)];
            book.observe(peer(*p), obs, t as u64);
        }
        // A 1-of-n verdict is no evidence for others at all (a unit test
        // covers that refusal); here both paths are exercised from k = 2.
        let local = local || k < 2;
        let genuine = honest_verdict(n, k, &liars, missed);
        let reporter = &keys()[REPORTER];
        {
            let mut copy = book.clone();
            prop_assert!(copy.apply_verdict(&reporter.sign(&genuine).verify().unwrap(), local, 50).is_ok());
        }
        let mut forged = genuine.clone();
        let t = target.index(forged.attestations.len());
        let expect: fn(&VerdictError) -> bool = match which {
            0 => {
                forged.attestations[t] = corrupt(&forged.attestations[t]);
                |e| matches!(e, VerdictError::BadAttestation { .. })
            }
            1 => {
                // Keep only k-1 honest attestations.
                let mut kept_honest = 0;
                forged.attestations.retain(|s| {
                    let h = s.verify().unwrap().value.result_hash;
                    if h == honest() {
                        kept_honest += 1;
                        kept_honest < usize::from(k)
                    } else {
                        true
                    }
                });
                |e| matches!(e, VerdictError::NotEnoughSupport { .. })
            }
            2 => {
                // Pin a lie on whoever signed attestation t.
                let victim = (0..POOL)
                    .find(|&i| Some(peer(i)) == forged.attestations[t].claimed_signer())
                    .unwrap();
                forged.attestations[t] = impersonate(victim, genuine.job, collusion());
                |e| matches!(e, VerdictError::BadAttestation { .. })
            }
            3 => {
                let victim = (0..POOL)
                    .find(|&i| Some(peer(i)) == forged.attestations[t].claimed_signer())
                    .unwrap();
                forged.attestations[t] = attest(victim, ContentId::of(b"old job"), lie(victim));
                |e| matches!(e, VerdictError::WrongJob { .. })
            }
            _ => {
                let copy = forged.attestations[t].clone();
                forged.attestations.push(copy);
                |e| matches!(e, VerdictError::DuplicateAttester(_))
            }
        };
        let before = snapshot(&book);
        let signed = reporter.sign(&forged).verify().unwrap();
        let r = book.apply_verdict(&signed, local, 50);
        prop_assert!(matches!(&r, Err(e) if expect(e)), "case {}: {:?}", which, r);
        prop_assert_eq!(snapshot(&book), before);
        // Refusal does not burn the job id: the genuine verdict still applies.
        prop_assert!(book.apply_verdict(&reporter.sign(&genuine).verify().unwrap(), local, 60).is_ok());
    }

    /// Scores stay within [0, max] whatever the config and history, and
    /// trust never exceeds full weight.
    #[test]
    fn reputation_clamps(
        start in 0u32..=1500,
        max_score in 1u32..=1000,
        steps in (0u32..=2000, 0u32..=2000, 0u32..=2000),
        threshold in 0u32..=1000,
        history in prop::collection::vec((0usize..6, 0u8..3), 0..120),
    ) {
        let cfg = ReputationConfig {
            start,
            agree_bonus: steps.0,
            disagree_penalty: steps.1,
            missed_penalty: steps.2,
            max_score,
            exclusion_threshold: threshold,
            ..ReputationConfig::default()
        };
        let mut book = ReputationBook::new(cfg);
        for (t, (p, o)) in history.iter().enumerate() {
            let obs = [Observation::Agreed, Observation::Disagreed, Observation::Missed][usize::from(*o)];
            let c = book.observe(peer(*p), obs, t as u64).unwrap();
            prop_assert!(c.after <= max_score);
            match obs {
                Observation::Agreed => prop_assert!(c.after >= c.before),
                _ => prop_assert!(c.after <= c.before),
            }
        }
        for i in 0..8 {
            prop_assert!(book.score(&peer(i)) <= max_score);
            prop_assert!(book.trust_permille(&peer(i)) <= 1000);
            prop_assert_eq!(book.is_excluded(&peer(i)), book.score(&peer(i)) < threshold);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Selection never returns the submitter, an excluded or banned peer,
    /// a full peer or a duplicate; returns min(n, eligible) peers; and is
    /// the same for the same seed whatever the candidates' order.
    #[test]
    fn selection_rules(
        cands in prop::collection::vec((0usize..20, 0u32..1500, 0u32..5, 0u32..5), 0..30),
        banned in prop::collection::btree_set(0usize..20, 0..5),
        exclude in prop::collection::btree_set(0usize..20, 0..5),
        submitter in 0usize..20,
        n in 0usize..12,
        seed in any::<u64>(),
        rotate in any::<prop::sample::Index>(),
    ) {
        let mut book = ReputationBook::default();
        for &b in &banned {
            for t in 0..3 {
                book.observe(peer(b), Observation::Missed, t);
            }
        }
        let candidates: Vec<Candidate> = cands
            .iter()
            .map(|&(p, load, running, max_jobs)| Candidate {
                peer: peer(p),
                load_permille: load,
                running,
                max_jobs,
                subnet: None,
            })
            .collect();
        let exclude: BTreeSet<PeerId> = exclude.iter().map(|&i| peer(i)).collect();
        let got = select_executors(&candidates, &book, n, &peer(submitter), &exclude, seed);

        // A peer is eligible if some bid of it has room; duplicate bids of
        // one peer collapse to the smallest (peer, load, running, max_jobs).
        let mut first: BTreeMap<PeerId, &Candidate> = BTreeMap::new();
        for c in &candidates {
            let e = first.entry(c.peer).or_insert(c);
            if (c.load_permille, c.running, c.max_jobs) < (e.load_permille, e.running, e.max_jobs) {
                *e = c;
            }
        }
        let eligible: BTreeSet<PeerId> = first
            .values()
            .filter(|c| {
                c.peer != peer(submitter)
                    && !exclude.contains(&c.peer)
                    && !book.is_excluded(&c.peer)
                    && c.running < c.max_jobs
            })
            .map(|c| c.peer)
            .collect();
        let distinct: BTreeSet<PeerId> = got.iter().copied().collect();
        prop_assert_eq!(distinct.len(), got.len(), "duplicate pick");
        prop_assert!(distinct.is_subset(&eligible), "picked an ineligible peer");
        prop_assert_eq!(got.len(), n.min(eligible.len()));

        let mut rotated = candidates.clone();
        if !rotated.is_empty() {
            let r = rotate.index(rotated.len());
            rotated.rotate_left(r);
        }
        prop_assert_eq!(
            select_executors(&rotated, &book, n, &peer(submitter), &exclude, seed),
            got
        );
    }
}

/// A gossiped verdict from a reporter we do not trust at all moves nothing,
/// even though its evidence is sound.
#[test]
fn excluded_reporter_gossip_moves_nothing() {
    let mut book = ReputationBook::default();
    for t in 0..3 {
        book.observe(peer(REPORTER), Observation::Missed, t);
    }
    let v = honest_verdict(3, 2, &[Behaviour::Honest; 9], 1);
    let signed: Verified<Verdict> = keys()[REPORTER].sign(&v).verify().unwrap();
    let before = snapshot(&book);
    let eff = book.apply_verdict(&signed, false, 10).unwrap();
    assert_eq!(eff.weight_permille, 0);
    assert!(eff.changes.is_empty());
    assert_eq!(snapshot(&book), before);
}
