//! Reputation on the node: the [`ReputationBook`] persisted in sled (tree
//! `reputation`) with, per peer, the latest pieces of evidence that moved
//! its score (own job, or a gossiped verdict and from whom), and the
//! gossip validator of `agora/verdicts/1`.
//!
//! A gossiped verdict is applied in the validator (like adverts into the
//! peer book): `ReputationBook::apply_verdict` checks every embedded
//! signature and the quorum arithmetic before it changes anything, so a
//! forged verdict changes no score and is not forwarded. Verdicts are rate
//! limited per signer and deduplicated by job id.

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

use crate::lock;
use crate::network::adverts::unix_now_ms;
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

/// The gossip validator of `agora/verdicts/1`.
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
            Err(VerdictError::AlreadyApplied(_)) => {
                Validation::Ignore("verdict already applied".into())
            }
            Err(e) => Validation::Reject(format!("verdict refused: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use agora_protocol::{Attestation, NodeKey, VerdictOutcome};
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

    fn verdict(job: ContentId, atts: Vec<Signed<Attestation>>, accepted: &[u8]) -> Verdict {
        Verdict {
            job,
            k: 2,
            n: 3,
            outcome: VerdictOutcome::Verified,
            accepted: Some(ContentId::of(accepted)),
            attestations: atts,
            missed: vec![],
            decided_at_ms: 1,
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
    fn forged_verdicts_change_no_score_and_a_true_one_does() {
        let book: SharedReputation =
            Arc::new(Mutex::new(ReputationBook::new(ReputationConfig::default())));
        let (tx, mut rx) = write_queue();
        let v = VerdictValidator::new(book.clone(), tx);
        let submitter = NodeKey::generate();
        let (a, b, c) = (
            NodeKey::generate(),
            NodeKey::generate(),
            NodeKey::generate(),
        );
        let job = ContentId::of(b"job");

        // Fewer than k attestations back the accepted hash: c is framed.
        let thin = verdict(
            job,
            vec![attest(&a, job, b"ok"), attest(&c, job, b"other")],
            b"ok",
        );
        // A second supporter made up from a's signed attestation: a
        // signature names its signer, so it counts as a's, not b's.
        let stolen = attest(&a, job, b"ok");
        let by_other = verdict(
            job,
            vec![attest(&a, job, b"ok"), stolen, attest(&c, job, b"bad")],
            b"ok",
        );
        // A valid verdict, then its bytes with one flipped (bad signature).
        let good = verdict(
            job,
            vec![
                attest(&a, job, b"ok"),
                attest(&b, job, b"ok"),
                attest(&c, job, b"bad"),
            ],
            b"ok",
        );
        let mut tampered = submitter.sign(&good).encode();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;

        for (what, data) in [
            ("fewer than k", submitter.sign(&thin).encode()),
            (
                "attestation by someone else",
                submitter.sign(&by_other).encode(),
            ),
            ("bad signature", tampered),
        ] {
            assert!(
                matches!(gossip(&v, &submitter, &data), Validation::Reject(_)),
                "{what} must be rejected"
            );
            assert!(lock(&book).is_empty(), "{what} changed the book");
            assert!(rx.try_recv().is_err(), "{what} queued a write");
        }
        // Published by someone other than its signer.
        let other = NodeKey::generate();
        assert!(matches!(
            gossip(&v, &other, &submitter.sign(&good).encode()),
            Validation::Reject(_)
        ));
        assert!(lock(&book).is_empty());

        assert_eq!(
            gossip(&v, &submitter, &submitter.sign(&good).encode()),
            Validation::Accept
        );
        let b = lock(&book);
        assert!(
            b.score(&c.peer_id()) < b.score(&a.peer_id()),
            "the liar lost standing"
        );
        drop(b);
        assert!(rx.try_recv().is_ok(), "the change is queued for the store");
        // The same verdict again changes nothing more.
        assert!(matches!(
            gossip(&v, &submitter, &submitter.sign(&good).encode()),
            Validation::Ignore(_)
        ));
    }
}
