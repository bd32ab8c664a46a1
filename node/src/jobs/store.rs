//! The sled trees that keep job records: `jobs` (the submitter's
//! [`JobRecordDb`] of each job it submitted) and `work` (the worker's
//! [`WorkItem`] of each assignment it accepted).
//!
//! Every change is written (and flushed) before the node acts on it, so a
//! restart resumes from the last decision.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agora_protocol::{codec, ContentId};
use tokio::sync::{watch, Notify};
use tracing::warn;

use super::record::{JobRecordDb, WorkItem};

/// Largest stored record accepted when reading back (a record embeds the
/// spec, up to 64 attestations and a bounded event log).
const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// Why the job store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("job store: {0}")]
    Db(#[from] sled::Error),
    /// The blocking flush task died.
    #[error("job store: flush task failed: {0}")]
    Task(String),
    /// A stored record does not decode (corruption or an older format).
    #[error("job store: record {key} is unreadable: {reason}")]
    Corrupt {
        /// Hex key.
        key: String,
        /// Decoder message.
        reason: String,
    },
}

/// Group commit: every caller of [`Flusher::flush`] takes a ticket after
/// its write; one background task runs sled's blocking flush (fsync) and
/// then releases every ticket taken before that flush began, so concurrent
/// jobs share fsyncs instead of queueing for one each. (Not sled's
/// `flush_async`: concurrent calls of it deadlock in sled 0.34,
/// spacejam/sled#1308.)
#[derive(Debug)]
struct Flusher {
    /// The store (the task holds no clone between flushes, so dropping the
    /// last `JobDb` closes it).
    db: sled::Db,
    /// Tickets handed out.
    taken: AtomicU64,
    /// Highest ticket known durable.
    done: watch::Receiver<u64>,
    /// Wakes the flush task.
    kick: Arc<Notify>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Wakes the task so it sees the store is gone and ends.
        self.kick.notify_one();
    }
}

/// Longest wait for a flush.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

impl Flusher {
    fn start(db: sled::Db) -> Arc<Self> {
        let (tx, rx) = watch::channel(0u64);
        let kick = Arc::new(Notify::new());
        let f = Arc::new(Self {
            db,
            taken: AtomicU64::new(0),
            done: rx,
            kick: kick.clone(),
        });
        let weak = Arc::downgrade(&f);
        tokio::spawn(async move {
            loop {
                kick.notified().await;
                let Some(f) = weak.upgrade() else { break };
                let upto = f.taken.load(Ordering::SeqCst);
                let db = f.db.clone();
                drop(f);
                match tokio::task::spawn_blocking(move || db.flush()).await {
                    Ok(Ok(_)) => {
                        let _ = tx.send(upto);
                    }
                    Ok(Err(e)) => warn!(error = %e, "flushing the store failed"),
                    Err(e) => warn!(error = %e, "store flush task failed"),
                }
            }
        });
        f
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let ticket = self.taken.fetch_add(1, Ordering::SeqCst) + 1;
        self.kick.notify_one();
        let mut done = self.done.clone();
        let wait = async {
            loop {
                if *done.borrow_and_update() >= ticket {
                    return Ok(());
                }
                match tokio::time::timeout(Duration::from_secs(1), done.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(StoreError::Task("the flush task stopped".into())),
                    // A failed flush leaves the ticket pending: ask again.
                    Err(_) => self.kick.notify_one(),
                }
            }
        };
        tokio::time::timeout(FLUSH_TIMEOUT, wait)
            .await
            .map_err(|_| StoreError::Task(format!("no flush within {FLUSH_TIMEOUT:?}")))?
    }
}

/// The two trees.
#[derive(Debug, Clone)]
pub struct JobDb {
    /// Makes writes durable, many at a time.
    flusher: Arc<Flusher>,
    /// Submitted jobs by id.
    jobs: sled::Tree,
    /// Accepted assignments by job id.
    work: sled::Tree,
}

impl JobDb {
    /// Opens (or creates) the trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            flusher: Flusher::start(db.clone()),
            jobs: db.open_tree("jobs")?,
            work: db.open_tree("work")?,
        })
    }

    /// Writes `job` and waits until it is on disk.
    pub async fn put_job(&self, job: &JobRecordDb) -> Result<(), StoreError> {
        self.jobs.insert(job.id().as_bytes(), codec::encode(job))?;
        self.flush().await
    }

    /// Waits until every write so far is on disk.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        self.flusher.flush().await
    }

    /// Reads one job.
    pub fn job(&self, id: &ContentId) -> Result<Option<JobRecordDb>, StoreError> {
        self.jobs
            .get(id.as_bytes())?
            .map(|v| decode(id.as_bytes(), &v))
            .transpose()
    }

    /// Every stored job id.
    pub fn job_ids(&self) -> Result<Vec<ContentId>, StoreError> {
        self.jobs
            .iter()
            .keys()
            .map(|k| {
                let k = k?;
                let digest: [u8; 32] = k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    key: hex::encode(&k),
                    reason: "key is not a 32-byte id".into(),
                })?;
                Ok(ContentId::from_digest(digest))
            })
            .collect()
    }

    /// Every stored job, skipping (and returning) unreadable ones.
    pub fn jobs(&self) -> (Vec<JobRecordDb>, Vec<StoreError>) {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for item in self.jobs.iter() {
            match item
                .map_err(StoreError::from)
                .and_then(|(k, v)| decode(&k, &v))
            {
                Ok(j) => ok.push(j),
                Err(e) => bad.push(e),
            }
        }
        (ok, bad)
    }

    /// Writes `item` for `job` and waits until it is on disk.
    pub async fn put_work(&self, job: &ContentId, item: &WorkItem) -> Result<(), StoreError> {
        self.work.insert(job.as_bytes(), codec::encode(item))?;
        self.flush().await
    }

    /// Reads one work item.
    pub fn work(&self, job: &ContentId) -> Result<Option<WorkItem>, StoreError> {
        self.work
            .get(job.as_bytes())?
            .map(|v| decode(job.as_bytes(), &v))
            .transpose()
    }

    /// Every work item with its job id, skipping unreadable ones.
    pub fn work_items(&self) -> (Vec<(ContentId, WorkItem)>, Vec<StoreError>) {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for item in self.work.iter() {
            let r = item.map_err(StoreError::from).and_then(|(k, v)| {
                let digest: [u8; 32] = k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    key: hex::encode(&k),
                    reason: "key is not a 32-byte id".into(),
                })?;
                Ok((ContentId::from_digest(digest), decode(&k, &v)?))
            });
            match r {
                Ok(x) => ok.push(x),
                Err(e) => bad.push(e),
            }
        }
        (ok, bad)
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    codec::decode_unbounded(bytes, MAX_RECORD_BYTES).map_err(|e| StoreError::Corrupt {
        key: hex::encode(key),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::record::*;
    use crate::jobs::state::*;
    use agora_protocol::{ExecutorSpec, JobSpec, NodeKey, PeerId, Replication, Resources, Signed};
    use std::collections::BTreeMap;

    fn spec(nonce: u64) -> Signed<JobSpec> {
        NodeKey::generate().sign(&JobSpec {
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
            created_at_ms: 1,
            nonce,
            requires: BTreeMap::new(),
        })
    }

    fn record(nonce: u64) -> JobRecordDb {
        JobRecordDb {
            spec: spec(nonce),
            state: JobState::Pending,
            allow_local: false,
            submitted_at_ms: 5,
            finished_at_ms: None,
            reason: None,
            bids: 0,
            offers: 0,
            cap: 6,
            log: vec![QuorumInput::Assign(PeerId::random())],
            executors: vec![],
            result: None,
            verdict: None,
            events: vec![],
            replication: ReplicationMode::Adaptive,
            plan: Some(AdaptivePlan::SpotCheck),
        }
    }

    #[tokio::test]
    async fn jobs_and_work_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let job = record(1);
        let id = job.id();
        let item = WorkItem {
            spec: spec(2),
            submitter: PeerId::random(),
            attempt: 0,
            deadline_ms: 10,
            accepted_at_ms: 3,
            state: WorkState::Failed("boom".into()),
        };
        {
            let db = sled::open(dir.path()).unwrap();
            let store = JobDb::open(&db).unwrap();
            store.put_job(&job).await.unwrap();
            store.put_work(&id, &item).await.unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let store = JobDb::open(&db).unwrap();
        assert_eq!(store.job(&id).unwrap(), Some(job));
        assert_eq!(store.job_ids().unwrap(), vec![id]);
        assert_eq!(store.work(&id).unwrap(), Some(item));
        assert_eq!(store.work_items().0.len(), 1);
    }

    #[tokio::test]
    async fn a_corrupt_record_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = JobDb::open(&db).unwrap();
        store.put_job(&record(1)).await.unwrap();
        db.open_tree("jobs")
            .unwrap()
            .insert([7u8; 32], &b"not cbor"[..])
            .unwrap();
        let (ok, bad) = store.jobs();
        assert_eq!(ok.len(), 1);
        assert_eq!(bad.len(), 1);
        assert!(matches!(bad[0], StoreError::Corrupt { .. }));
    }

    #[test]
    fn the_event_log_is_bounded_but_final_events_get_in() {
        let mut job = record(1);
        let ev = |state| JobEvent {
            at_ms: 1,
            kind: "bid".into(),
            peer_id: None,
            state,
            detail: String::new(),
        };
        for _ in 0..MAX_EVENTS + 10 {
            job.push_event(ev(JobState::Scheduled));
        }
        assert_eq!(job.events.len(), MAX_EVENTS);
        job.push_event(ev(JobState::Verified));
        assert_eq!(job.events.len(), MAX_EVENTS + 1);
    }
}
