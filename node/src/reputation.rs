//! Reputation on the node: the [`ReputationBook`] persisted in sled (tree
//! `reputation`) with, per peer, the latest pieces of evidence that moved
//! its score (own job, or a gossiped verdict and from whom), and the
//! gossip validator of [`TOPIC_VERDICTS`].
//!
//! A gossiped verdict is applied in the validator (like adverts into the
//! peer book): `ReputationBook::apply_verdict` checks the embedded spec,
//! every embedded signature (attestations, and the acceptance behind each
//! miss) and the quorum arithmetic before it changes anything, so a forged
//! verdict changes no score, is not forwarded, and costs its sender gossip
//! score (`Validation::Reject`). A well-formed verdict from a publisher
//! this node does not (yet) trust is forwarded but changes nothing here.
//! Verdicts are rate limited per signer and deduplicated by job id.

use std::sync::{Arc, Mutex};

use agora_protocol::codec;
use agora_protocol::limits::MAX_GOSSIP_BYTES;
use agora_protocol::{ContentId, PeerId, Signed, Verdict, TOPIC_VERDICTS};
use agora_verifier::reputation::{
    Observation, PeerRecord, ReputationBook, VerdictEffect, VerdictError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::clock::unix_now_ms;
use crate::lock;
use crate::network::ratelimit::{RateLimit, RateLimiter};
use crate::network::{GossipMessage, GossipValidator, Validation};

/// Pieces of evidence kept per peer (newest last).
pub const MAX_SOURCES: usize = 8;
/// Verdicts accepted per signer: a burst, then per second.
const VERDICT_RATE: RateLimit = RateLimit::new(200, 50);
/// Signers tracked by the rate limiter.
const MAX_SIGNERS: usize = 10_000;
/// Score changes waiting to be written.
const PENDING_WRITES: usize = 4096;

/// The reputation book shared by selection, verdicts and the API.
pub type SharedReputation = Arc<Mutex<ReputationBook>>;

/// One piece of evidence that changed a peer's score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// When it was applied (ms since the Unix epoch).
    pub at_ms: u64,
    /// The job the verdict decided.
    pub job: ContentId,
    /// `None` for this node's own job; else the node whose gossiped
    /// verdict it was.
    pub via: Option<PeerId>,
    /// What the peer did.
    pub observation: Observation,
    /// Score before.
    pub before: u32,
    /// Score after.
    pub after: u32,
}

/// What is stored per peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPeer {
    /// The book's record.
    pub record: PeerRecord,
    /// The latest evidence, at most [`MAX_SOURCES`].
    pub sources: Vec<Evidence>,
}

/// Why the reputation store failed.
#[derive(Debug, thiserror::Error)]
pub enum ReputationStoreError {
    /// sled failed.
    #[error("reputation store: {0}")]
    Db(#[from] sled::Error),
}

/// The persisted side of the book.
#[derive(Debug, Clone)]
pub struct ReputationStore {
    tree: sled::Tree,
}

impl ReputationStore {
    /// Opens the tree in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, ReputationStoreError> {
        Ok(Self {
            tree: db.open_tree("reputation")?,
        })
    }

    /// Restores every stored record into `book`; unreadable ones are
    /// skipped with a warning.
    pub fn load_into(&self, book: &mut ReputationBook) {
        for (peer, stored) in self.all() {
            book.restore(peer, stored.record);
        }
    }

    /// Every stored peer.
    pub fn all(&self) -> Vec<(PeerId, StoredPeer)> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let Ok((k, v)) = item else { continue };
            let peer = PeerId::from_bytes(&k).ok();
            let stored = codec::decode_unbounded::<StoredPeer>(&v, 64 * 1024).ok();
            match (peer, stored) {
                (Some(p), Some(s)) => out.push((p, s)),
                _ => warn!("skipping an unreadable reputation record"),
            }
        }
        out
    }

    /// One stored peer.
    pub fn get(&self, peer: &PeerId) -> Option<StoredPeer> {
        let v = self.tree.get(peer.to_bytes()).ok()??;
        codec::decode_unbounded(&v, 64 * 1024).ok()
    }

    /// Writes the records `effect` changed (their current values in
    /// `records`), with its evidence.
    pub fn record(
        &self,
        records: &[(PeerId, PeerRecord)],
        effect: &VerdictEffect,
        job: ContentId,
        via: Option<PeerId>,
    ) -> Result<(), ReputationStoreError> {
        let now = unix_now_ms();
        for c in &effect.changes {
            let Some(record) = records.iter().find(|(p, _)| *p == c.peer).map(|(_, r)| *r) else {
                continue;
            };
            let mut stored = self.get(&c.peer).unwrap_or(StoredPeer {
                record,
                sources: Vec::new(),
            });
            stored.record = record;
            stored.sources.push(Evidence {
                at_ms: now,
                job,
                via,
                observation: c.observation,
                before: c.before,
                after: c.after,
            });
            if stored.sources.len() > MAX_SOURCES {
                let extra = stored.sources.len() - MAX_SOURCES;
                stored.sources.drain(..extra);
            }
            self.tree
                .insert(c.peer.to_bytes(), codec::encode(&stored))?;
        }
        Ok(())
    }
}

/// A verdict applied to the book, to be written by [`run_writer`].
#[derive(Debug)]
pub struct Applied {
    /// What changed.
    pub effect: VerdictEffect,
    /// The job.
    pub job: ContentId,
    /// Who signed the verdict (`None`: this node).
    pub via: Option<PeerId>,
}

/// Applies a verdict this node decided, at full weight, and queues the
/// write.
pub fn apply_own(
    book: &SharedReputation,
    writes: &mpsc::Sender<Applied>,
    verdict: &Signed<Verdict>,
) -> Result<(), Box<VerdictError>> {
    let Ok(v) = verdict.verify() else {
        return Ok(());
    };
    let effect = lock(book)
        .apply_verdict(&v, true, unix_now_ms())
        .map_err(Box::new)?;
    if writes
        .try_send(Applied {
            effect,
            job: v.value.job,
            via: None,
        })
        .is_err()
    {
        warn!("reputation write queue full; the change is kept in memory only");
    }
    Ok(())
}

/// Writes queued changes until `cancel` fires (then what is queued) or
/// the channel closes.
pub async fn run_writer(
    store: ReputationStore,
    book: SharedReputation,
    mut rx: mpsc::Receiver<Applied>,
    cancel: CancellationToken,
) {
    loop {
        let a = tokio::select! {
            biased;
            a = rx.recv() => a,
            () = cancel.cancelled() => rx.try_recv().ok(),
        };
        let Some(a) = a else { break };
        let records: Vec<(PeerId, PeerRecord)> = {
            let b = lock(&book);
            a.effect
                .changes
                .iter()
                .filter_map(|c| b.get(&c.peer).map(|r| (c.peer, *r)))
                .collect()
        };
        let store = store.clone();
        let r =
            tokio::task::spawn_blocking(move || store.record(&records, &a.effect, a.job, a.via))
                .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot persist a reputation change"),
            Err(e) => warn!(error = %e, "reputation writer task failed"),
        }
    }
}

/// The write queue for [`run_writer`].
pub fn write_queue() -> (mpsc::Sender<Applied>, mpsc::Receiver<Applied>) {
    mpsc::channel(PENDING_WRITES)
}

/// The gossip validator of [`TOPIC_VERDICTS`].
pub struct VerdictValidator {
    book: SharedReputation,
    writes: mpsc::Sender<Applied>,
    limiter: Mutex<RateLimiter<PeerId>>,
}

impl VerdictValidator {
    /// Applies accepted verdicts to `book` and queues them on `writes`.
    pub fn new(book: SharedReputation, writes: mpsc::Sender<Applied>) -> Self {
        Self {
            book,
            writes,
            limiter: Mutex::new(RateLimiter::new(VERDICT_RATE, MAX_SIGNERS)),
        }
    }
}

impl GossipValidator for VerdictValidator {
    fn validate(&self, msg: &GossipMessage<'_>) -> Validation {
        if msg.topic != TOPIC_VERDICTS {
            return Validation::Ignore(format!("not a verdict topic: {}", msg.topic));
        }
        let signed = match Signed::<Verdict>::decode(msg.data, MAX_GOSSIP_BYTES) {
            Ok(s) => s,
            Err(e) => return Validation::Reject(format!("verdict: {e}")),
        };
        let verified = match signed.verify() {
            Ok(v) => v,
            Err(e) => return Validation::Reject(format!("verdict: {e}")),
        };
        if msg.source != Some(verified.signer) {
            return Validation::Reject("verdict not published by its signer".into());
        }
        if !lock(&self.limiter).check(&verified.signer, unix_now_ms()) {
            return Validation::Ignore(format!("verdicts from {} rate limited", verified.signer));
        }
        let job = verified.value.job;
        let result = lock(&self.book).apply_verdict(&verified, false, unix_now_ms());
        match result {
            Ok(effect) => {
                debug!(job = %job.short(), signer = %verified.signer, changes = effect.changes.len(), "verdict applied");
                let _ = self.writes.try_send(Applied {
                    effect,
                    job,
                    via: Some(verified.signer),
                });
                Validation::Accept
            }
            // A replay or a clock out of step: not forwarded, nobody blamed.
            Err(e) if !e.is_forgery() => Validation::Ignore(format!("verdict ignored: {e}")),
            Err(e) => Validation::Reject(format!("verdict refused: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use agora_protocol::{Acceptance, Attestation, JobSpec, NodeKey, VerdictOutcome};
    use agora_verifier::reputation::ReputationConfig;

    use super::*;

    fn attest(key: &NodeKey, job: ContentId, hash: &[u8]) -> Signed<Attestation> {
        key.sign(&Attestation {
            job,
            result_hash: ContentId::of(hash),
            exit_code: 0,
            finished_at_ms: 1,
        })
    }

    /// A 2-of-3 verdict on a job `submitter` really signed, with
    /// attestations made by `atts(job id)`.
    fn verdict(
        submitter: &NodeKey,
        nonce: u64,
        atts: impl Fn(ContentId) -> Vec<Signed<Attestation>>,
        accepted: Option<&[u8]>,
    ) -> Verdict {
        let spec = submitter.sign(&JobSpec {
            nonce,
            ..JobSpec::wasm(ContentId::of(b"module"))
        });
        let job = spec.id();
        Verdict {
            job,
            spec,
            k: 2,
            n: 3,
            outcome: if accepted.is_some() {
                VerdictOutcome::Verified
            } else {
                VerdictOutcome::Timeout
            },
            accepted: accepted.map(ContentId::of),
            attestations: atts(job),
            missed: vec![],
            decided_at_ms: unix_now_ms(),
        }
    }

    fn gossip(v: &VerdictValidator, signer: &NodeKey, data: &[u8]) -> Validation {
        v.validate(&GossipMessage {
            topic: TOPIC_VERDICTS,
            data,
            source: Some(signer.peer_id()),
            propagation_source: signer.peer_id(),
        })
    }

    #[test]
    fn forged_verdicts_are_rejected_and_a_true_one_counts() {
        let submitter = NodeKey::generate();
        let (a, b, c) = (
            NodeKey::generate(),
            NodeKey::generate(),
            NodeKey::generate(),
        );
        // A stranger whose agreement gives the good verdicts' hash a lead
        // of k over c's dissent; it is credited nothing.
        let d = NodeKey::generate();
        let mut book = ReputationBook::new(ReputationConfig::default());
        // The operator vouches for the submitter; a and b are known here.
        book.set_trusted([submitter.peer_id()]);
        book.observe(a.peer_id(), Observation::Agreed, 0);
        book.observe(b.peer_id(), Observation::Agreed, 0);
        let book: SharedReputation = Arc::new(Mutex::new(book));
        let start = lock(&book).clone();
        let (tx, mut rx) = write_queue();
        let v = VerdictValidator::new(book.clone(), tx);
        let same = |x: &ReputationBook| {
            x.records().map(|(p, r)| (*p, *r)).collect::<Vec<_>>()
                == start.records().map(|(p, r)| (*p, *r)).collect::<Vec<_>>()
        };

        // The accepted hash does not lead by k: c is framed.
        let thin = verdict(
            &submitter,
            0,
            |j| vec![attest(&a, j, b"ok"), attest(&c, j, b"other")],
            Some(b"ok"),
        );
        // A second supporter made up from a's signed attestation: a
        // signature names its signer, so it counts as a's, not b's.
        let by_other = verdict(
            &submitter,
            1,
            |j| {
                vec![
                    attest(&a, j, b"ok"),
                    attest(&a, j, b"ok"),
                    attest(&c, j, b"bad"),
                ]
            },
            Some(b"ok"),
        );
        // A miss with no acceptance by the accused: the submitter signs
        // one itself in c's name, which names the submitter, not c, and
        // is for another job.
        let mut framed = verdict(&submitter, 2, |_| vec![], None);
        framed.missed = vec![submitter.sign(&Acceptance {
            job: ContentId::of(b"elsewhere"),
            submitter: submitter.peer_id(),
            attempt: 0,
            deadline_ms: 1,
        })];
        // A job that does not exist: the spec is another job's.
        let mut ghost = verdict(&submitter, 3, |_| vec![], None);
        ghost.job = ContentId::of(b"no such job");
        // k = 1: an accomplice's one signature.
        let mut solo = verdict(&submitter, 4, |j| vec![attest(&c, j, b"ok")], Some(b"ok"));
        solo.k = 1;
        solo.n = 1;
        // A valid verdict, then its bytes with one flipped (bad signature).
        let good = verdict(
            &submitter,
            5,
            |j| {
                vec![
                    attest(&a, j, b"ok"),
                    attest(&b, j, b"ok"),
                    attest(&d, j, b"ok"),
                    attest(&c, j, b"bad"),
                ]
            },
            Some(b"ok"),
        );
        let mut tampered = submitter.sign(&good).encode();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;

        for (what, data) in [
            ("a lead under k", submitter.sign(&thin).encode()),
            (
                "attestation by someone else",
                submitter.sign(&by_other).encode(),
            ),
            (
                "a miss without the accused's acceptance",
                submitter.sign(&framed).encode(),
            ),
            ("a job that does not exist", submitter.sign(&ghost).encode()),
            ("k = 1", submitter.sign(&solo).encode()),
            ("bad signature", tampered),
        ] {
            let r = gossip(&v, &submitter, &data);
            assert!(
                matches!(r, Validation::Reject(_)),
                "{what} must be rejected: {r:?}"
            );
            assert!(same(&lock(&book)), "{what} changed the book");
            assert!(rx.try_recv().is_err(), "{what} queued a write");
        }
        // Published by someone other than its signer.
        let other = NodeKey::generate();
        assert!(matches!(
            gossip(&v, &other, &submitter.sign(&good).encode()),
            Validation::Reject(_)
        ));
        assert!(same(&lock(&book)));

        // A stranger's well-formed verdict is forwarded but changes nothing.
        let stranger = NodeKey::generate();
        let theirs = verdict(
            &stranger,
            0,
            |j| {
                vec![
                    attest(&a, j, b"x"),
                    attest(&b, j, b"x"),
                    attest(&d, j, b"x"),
                    attest(&c, j, b"y"),
                ]
            },
            Some(b"x"),
        );
        assert_eq!(
            gossip(&v, &stranger, &stranger.sign(&theirs).encode()),
            Validation::Accept
        );
        assert!(same(&lock(&book)), "a newcomer's verdict changed the book");

        assert_eq!(
            gossip(&v, &submitter, &submitter.sign(&good).encode()),
            Validation::Accept
        );
        let bk = lock(&book);
        assert!(
            bk.score(&c.peer_id()) < bk.score(&a.peer_id()),
            "the liar lost standing"
        );
        drop(bk);
        assert!(rx.try_recv().is_ok(), "the change is queued for the store");
        // The same verdict again changes nothing more and blames nobody.
        assert!(matches!(
            gossip(&v, &submitter, &submitter.sign(&good).encode()),
            Validation::Ignore(_)
        ));
    }
}
