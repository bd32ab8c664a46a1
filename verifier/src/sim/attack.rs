//! Reputation attacks mounted beside a simulation's jobs ([`Attack`]):
//! framers, executors that work honestly for the submitter until it
//! trusts their word, and Sybils, fresh identities that bid for its jobs
//! and all return the same wrong hash. Both gossip signed verdicts to the
//! submitter's book.
//!
//! Every verdict carries the strongest evidence such an attacker can get
//! without the victims' help: jobs it submitted itself; acceptances honest
//! victims signed when they took those jobs on, so it may claim they
//! missed; fellow attackers' attestations of a wrong hash, so a victim's
//! right answer "disagrees"; fellow attackers' attestations beside the
//! Sybils', to praise them. A quarter are plain forgeries (a victim's
//! acceptance of another submitter's job) that the book must refuse.
//! The attack draws from its own random stream, so a run with gossip and
//! its control run without draw the same jobs and executors until the
//! gossip changes the submitter's choices.

use agora_protocol::{
    Acceptance, Attestation, ContentId, JobSpec, NodeKey, PeerId, Replication, Verdict,
    VerdictOutcome, Verified,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{hash_of, Role, SimError, World};

/// A reputation attack: who mounts it and how hard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attack {
    /// Framers (executors besides `nodes`): they always answer right.
    pub framers: usize,
    /// Sybils (executors besides `nodes`): they always return the one
    /// wrong hash the attacker wants accepted.
    pub sybils: usize,
    /// Verdicts the attackers gossip after each of the submitter's jobs,
    /// each signed by one of them drawn at random (0: a control run).
    pub verdicts_per_job: u32,
}

/// What an attack achieved, at the end of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttackCounts {
    /// Verdicts the attackers gossiped.
    pub gossiped: u64,
    /// Of those, refused by the book as forged.
    pub refused: u64,
    /// Points gossip took from honest executors' scores, in all.
    pub taken_from_honest: u64,
    /// Points gossip gave Sybils, in all.
    pub given_to_sybils: u64,
    /// Honest executors excluded (on the submitter's own evidence).
    pub honest_excluded: u64,
    /// Honest executors on probation (excluded on the attackers' word
    /// only; still selected, as newcomers).
    pub honest_on_probation: u64,
    /// Honest executors established with the submitter.
    pub honest_established: u64,
    /// Sybils established with the submitter.
    pub sybils_established: u64,
    /// Sybils the default adaptive policy would let run jobs alone.
    pub sybils_trusted: u64,
}

impl AttackCounts {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &AttackCounts) {
        self.gossiped += o.gossiped;
        self.refused += o.refused;
        self.taken_from_honest += o.taken_from_honest;
        self.given_to_sybils += o.given_to_sybils;
        self.honest_excluded += o.honest_excluded;
        self.honest_on_probation += o.honest_on_probation;
        self.honest_established += o.honest_established;
        self.sybils_established += o.sybils_established;
        self.sybils_trusted += o.sybils_trusted;
    }
}

/// The four kinds of verdict the attackers send.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A victim "missed" a job it accepted.
    Miss,
    /// A victim's right answer against three attackers' wrong one (the
    /// fewest that lead it by k = 2).
    Disagreement,
    /// Sybils agreeing with two fellow attackers.
    Praise,
    /// A miss backed by an acceptance of someone else's job.
    Forged,
}

/// Gossips this job's attack verdicts into the submitter's book.
pub(super) fn gossip(
    world: &mut World,
    attack: &Attack,
    job: u64,
    now_ms: u64,
    rng: &mut ChaCha8Rng,
    counts: &mut AttackCounts,
) -> Result<(), SimError> {
    if world.attackers.is_empty() || world.honest.is_empty() {
        return Ok(());
    }
    for i in 0..attack.verdicts_per_job {
        let publisher = world.attackers[rng.gen_range(0..world.attackers.len())];
        let victim = world.honest[rng.gen_range(0..world.honest.len())];
        let kind = match rng.gen_range(0..4) {
            0 => Kind::Miss,
            1 => Kind::Disagreement,
            2 => Kind::Praise,
            _ => Kind::Forged,
        };
        let nonce = job * u64::from(attack.verdicts_per_job) + u64::from(i);
        let verdict = forge(world, kind, publisher, victim, nonce, now_ms, rng);
        counts.gossiped += 1;
        let signed = Verified {
            signer: world.peers[publisher],
            value: verdict,
        };
        match world.book.apply_verdict(&signed, false, now_ms) {
            Ok(effect) => {
                for c in effect.changes {
                    match world.roles[world.index[&c.peer]] {
                        Role::Honest => {
                            counts.taken_from_honest += u64::from(c.before.saturating_sub(c.after))
                        }
                        Role::Sybil => {
                            counts.given_to_sybils += u64::from(c.after.saturating_sub(c.before))
                        }
                        Role::Liar | Role::Framer => {}
                    }
                }
            }
            Err(e) if e.is_forgery() => counts.refused += 1,
            Err(source) => {
                return Err(SimError::Verdict {
                    job,
                    source: Box::new(source),
                })
            }
        }
    }
    Ok(())
}

/// Counts where honest executors and Sybils stand at the end of a run.
pub(super) fn tally(world: &World, counts: &mut AttackCounts) {
    use crate::reputation::Standing;
    let policy = crate::adaptive::AdaptivePolicy::default();
    for (i, peer) in world.peers.iter().enumerate() {
        let standing = world.book.standing(peer);
        match world.roles[i] {
            Role::Honest => match standing {
                Standing::Excluded => counts.honest_excluded += 1,
                Standing::Probation => counts.honest_on_probation += 1,
                Standing::Established => counts.honest_established += 1,
                Standing::Newcomer => {}
            },
            Role::Sybil => {
                counts.sybils_established += u64::from(standing == Standing::Established);
                counts.sybils_trusted += u64::from(policy.is_trusted(&world.book, peer));
            }
            Role::Liar | Role::Framer => {}
        }
    }
}

/// One attack verdict of `kind`, signed by nobody yet (the caller names
/// `publisher` as its signer): its spec and every embedded signature are
/// real.
fn forge(
    world: &World,
    kind: Kind,
    publisher: usize,
    victim: usize,
    nonce: u64,
    now_ms: u64,
    rng: &mut ChaCha8Rng,
) -> Verdict {
    // Fellow attackers to co-sign: framers (whom the submitter may know)
    // while there are enough of them, else any attacker.
    let others: Vec<usize> = world.framers.iter().chain(&world.sybils).copied().collect();
    let framers = world.framers.iter().filter(|f| **f != publisher).count();
    let fellows = |count: usize, rng: &mut ChaCha8Rng| {
        let pool = if framers >= count {
            &world.framers[..]
        } else {
            &others[..]
        };
        pick(pool, count, publisher, rng)
    };
    let signers = match kind {
        Kind::Miss | Kind::Forged => Vec::new(),
        Kind::Disagreement => fellows(3, rng),
        Kind::Praise => {
            let mut signers = fellows(2, rng);
            for s in pick(&world.sybils, 3, publisher, rng) {
                if !signers.contains(&s) {
                    signers.push(s);
                }
            }
            signers
        }
    };
    let (n, k) = match kind {
        // Everyone agreed: the smallest valid k for that many.
        Kind::Praise => {
            let n = u8::try_from(signers.len().max(1)).unwrap_or(u8::MAX);
            (n, n / 2 + 1)
        }
        _ => (3, 2),
    };
    let pkey = &world.keys[publisher];
    let spec = pkey.sign(&JobSpec {
        replication: Replication { n, k },
        nonce,
        ..JobSpec::wasm(hash_of(b"attack module", 0, publisher as u64))
    });
    let job = spec.id();
    let right = hash_of(b"attack right", nonce, 0);
    let wrong = hash_of(b"attack wrong", nonce, 0);
    let attest = |key: &NodeKey, result_hash: ContentId| {
        key.sign(&Attestation {
            job,
            result_hash,
            exit_code: 0,
            finished_at_ms: now_ms,
        })
    };
    let accept = |submitter: PeerId| {
        world.keys[victim].sign(&Acceptance {
            job,
            submitter,
            attempt: 0,
            deadline_ms: now_ms.saturating_sub(1),
        })
    };
    let mut v = Verdict {
        job,
        spec,
        k,
        n,
        outcome: VerdictOutcome::Timeout,
        accepted: None,
        attestations: Vec::new(),
        missed: Vec::new(),
        decided_at_ms: now_ms,
    };
    match kind {
        Kind::Miss => v.missed.push(accept(world.peers[publisher])),
        Kind::Forged => v.missed.push(accept(world.peers[victim])),
        Kind::Disagreement => {
            v.outcome = VerdictOutcome::Verified;
            v.accepted = Some(wrong);
            v.attestations.push(attest(&world.keys[victim], right));
            for a in signers {
                v.attestations.push(attest(&world.keys[a], wrong));
            }
        }
        Kind::Praise => {
            v.outcome = VerdictOutcome::Verified;
            v.accepted = Some(wrong);
            for a in signers {
                v.attestations.push(attest(&world.keys[a], wrong));
            }
        }
    }
    v
}

/// Up to `count` distinct members of `pool` other than `not`, at random.
fn pick(pool: &[usize], count: usize, not: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut left: Vec<usize> = pool.iter().copied().filter(|a| *a != not).collect();
    let mut picked = Vec::with_capacity(count.min(left.len()));
    while picked.len() < count && !left.is_empty() {
        picked.push(left.swap_remove(rng.gen_range(0..left.len())));
    }
    picked
}
