//! One task per unfinished array: keeps at most `parallel` items in
//! flight, records each item's end as its job ends, then starts the reduce
//! job (if any) and decides the array. Only the in-flight items are in
//! memory; the rest are read from the store by range when their turn
//! comes.

use std::collections::HashMap;
use std::time::Duration;

use agora_protocol::ContentId;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn, Instrument};

use super::record::{ArrayRecordDb, ItemRecordDb, ItemResult};
use super::store::ArrayDb;
use super::template;
use super::{ActiveArray, ArrayCmd};
use crate::api::types::{ArrayEvent, ArrayState, ItemState, JobState};
use crate::clock::unix_now_ms;
use crate::jobs::record::JobRecordDb;
use crate::jobs::store::StoreError;
use crate::jobs::{Jobs, JobsError};
use crate::lock;
use crate::network::adverts::lock_book;

/// Items are checked this often even without a notice that a job ended
/// (notices can be missed when the channel lags).
const POLL: Duration = Duration::from_secs(1);
/// Pause after the node refused more jobs (too many in flight) or the
/// store failed.
const BACKOFF: Duration = Duration::from_millis(500);
/// Commands queued per array.
const CMD_QUEUE: usize = 8;
/// Item changes buffered per subscriber.
const EVENT_QUEUE: usize = 1024;
/// How long a driver that just started (often: its node just restarted
/// and has not heard from its peers again yet) waits for n online peers
/// before submitting items anyway. Without it every item submitted in the
/// first second after a restart would fail fast for want of executors.
const PEER_WAIT: Duration = Duration::from_secs(30);

/// Starts the driver of `rec` (new, resumed or retried).
pub(crate) fn start(jobs: &Jobs, rec: ArrayRecordDb) {
    let id = rec.id;
    let (tx, rx) = mpsc::channel(CMD_QUEUE);
    let (events, _) = broadcast::channel(EVENT_QUEUE);
    lock(&jobs.ctx.arrays.active).insert(
        id,
        ActiveArray {
            tx: tx.clone(),
            events: events.clone(),
        },
    );
    let driver = Driver {
        jobs: jobs.clone(),
        finished: jobs.ctx.finished.subscribe(),
        started: std::time::Instant::now(),
        rec,
        inflight: HashMap::new(),
        cursor: 0,
        exhausted: false,
        cancelling: false,
        rx,
        events,
    };
    let ctx = jobs.ctx.clone();
    jobs.ctx.tasks.spawn(
        async move {
            driver.run().await;
            // A retry may have started the next driver already.
            let mut active = lock(&ctx.arrays.active);
            if active.get(&id).is_some_and(|a| a.tx.same_channel(&tx)) {
                active.remove(&id);
            }
        }
        .instrument(tracing::info_span!("array", array = %id.short())),
    );
}

/// Restarts the driver of every unfinished array in the store.
pub(crate) fn resume_all(jobs: &Jobs) {
    let (arrays, bad) = jobs.ctx.arrays.db.arrays();
    for e in bad {
        warn!(error = %e, "skipping an unreadable array record");
    }
    for rec in arrays.into_iter().filter(|a| !a.state.is_final()) {
        info!(array = %rec.id.short(), state = rec.state.as_str(), "resuming array");
        start(jobs, rec);
    }
}

struct Driver {
    jobs: Jobs,
    /// Ids of jobs whose task ended.
    finished: broadcast::Receiver<ContentId>,
    /// When this driver started.
    started: std::time::Instant,
    rec: ArrayRecordDb,
    /// In-flight item jobs and their indices.
    inflight: HashMap<ContentId, u32>,
    /// No pending item has an index below this.
    cursor: u32,
    /// Every item was submitted at least once.
    exhausted: bool,
    /// The user cancelled: ending jobs count as cancelled.
    cancelling: bool,
    rx: mpsc::Receiver<ArrayCmd>,
    events: broadcast::Sender<ArrayEvent>,
}

/// What stops the driver from submitting more for now.
enum Stall {
    /// The node has too many jobs in flight.
    Busy,
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for Stall {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl Driver {
    fn db(&self) -> &ArrayDb {
        &self.jobs.ctx.arrays.db
    }

    async fn run(mut self) {
        if let Err(e) = self.recover().await {
            warn!(error = %e, "reading the array back");
        }
        while !self.rec.state.is_final() {
            let pause = match self.advance().await {
                Ok(()) => POLL,
                Err(Stall::Busy) => BACKOFF,
                Err(Stall::Store(e)) => {
                    warn!(error = %e, "array store");
                    BACKOFF
                }
            };
            if self.rec.state.is_final() {
                break;
            }
            tokio::select! {
                biased;
                () = self.jobs.ctx.cancel.cancelled() => return,
                cmd = self.rx.recv() => match cmd {
                    Some(ArrayCmd::Cancel(reply)) => {
                        if let Err(e) = self.cancel().await {
                            warn!(error = %e, "cancelling the array");
                        }
                        let _ = reply.send(());
                    }
                    None => return,
                },
                r = self.finished.recv() => match r {
                    Ok(id) => self.collect_logged(&id).await,
                    Err(RecvError::Lagged(_)) => self.collect_all().await,
                    Err(RecvError::Closed) => return,
                },
                () = tokio::time::sleep(pause) => self.collect_all().await,
            }
        }
    }

    /// After a restart: items marked running whose job is stored are
    /// followed; those whose job never reached the store go back to
    /// pending (they never ran). A reduce job likewise.
    async fn recover(&mut self) -> Result<(), StoreError> {
        let id = self.rec.id;
        let mut reset = Vec::new();
        for r in self.db().items_from(&id, 0) {
            let (index, item) = r?;
            if item.state != ItemState::Running {
                continue;
            }
            match item.job {
                Some(job) if self.jobs.ctx.db.job(&job)?.is_some() => {
                    self.inflight.insert(job, index);
                }
                _ => reset.push((index, item)),
            }
        }
        for (index, mut item) in reset {
            self.rec.count_move(item.state, ItemState::Pending);
            item.state = ItemState::Pending;
            item.job = None;
            self.db().put_item(&self.rec, index, &item).await?;
        }
        if let Some(job) = self.rec.reduce_job {
            if self.jobs.ctx.db.job(&job)?.is_none() {
                self.rec.reduce_job = None;
                self.db().put_array(&self.rec).await?;
            }
        }
        // Jobs that ended while the node was down send no notice.
        self.collect_all().await;
        Ok(())
    }

    /// Submits what may be submitted, and decides once nothing is left.
    async fn advance(&mut self) -> Result<(), Stall> {
        match self.rec.state {
            ArrayState::Running => {
                self.fill().await?;
                if self.exhausted && self.inflight.is_empty() {
                    self.items_done().await?;
                }
            }
            ArrayState::Reducing if self.rec.reduce_job.is_none() => self.submit_reduce().await?,
            _ => {}
        }
        Ok(())
    }

    async fn fill(&mut self) -> Result<(), Stall> {
        if !self.network_ready() {
            return Err(Stall::Busy);
        }
        while !self.exhausted && self.inflight.len() < self.rec.parallel as usize {
            match self.next_pending()? {
                Some((index, item)) => self.submit_item(index, item).await?,
                None => self.exhausted = true,
            }
        }
        Ok(())
    }

    /// Whether enough peers are online for an item's executors, or the
    /// driver has waited long enough for them.
    fn network_ready(&self) -> bool {
        if self.started.elapsed() >= PEER_WAIT {
            return true;
        }
        let n = usize::from(self.rec.replication().n);
        let me = self.jobs.ctx.me;
        let online = lock_book(&self.jobs.ctx.book)
            .online(unix_now_ms())
            .into_iter()
            .filter(|p| *p != me)
            .count();
        online + usize::from(self.rec.template.allow_local) >= n
    }

    fn next_pending(&mut self) -> Result<Option<(u32, ItemRecordDb)>, StoreError> {
        for r in self.db().items_from(&self.rec.id, self.cursor) {
            let (index, item) = r?;
            self.cursor = index.saturating_add(1);
            if item.state == ItemState::Pending {
                return Ok(Some((index, item)));
            }
        }
        Ok(None)
    }

    async fn submit_item(&mut self, index: u32, mut item: ItemRecordDb) -> Result<(), Stall> {
        let req = template::item_job(&self.rec.template, &item.input, index);
        let prepared = match self.jobs.prepare(req).await {
            Ok(p) => p,
            Err(JobsError::Busy(_)) => {
                // Its turn comes again once a job ends.
                self.cursor = index;
                return Err(Stall::Busy);
            }
            Err(e) => {
                // This item's values make no valid job (an argument too
                // long, say): it fails alone.
                self.end_item(index, item, ItemState::Failed, Some(e.to_string()))
                    .await?;
                return Ok(());
            }
        };
        let job = prepared.id();
        self.rec.count_move(item.state, ItemState::Running);
        item.state = ItemState::Running;
        item.job = Some(job);
        item.attempts += 1;
        item.reason = None;
        self.db().put_item(&self.rec, index, &item).await?;
        self.inflight.insert(job, index);
        if let Err(e) = self.jobs.launch(prepared).await {
            self.inflight.remove(&job);
            self.end_item(index, item, ItemState::Failed, Some(e.to_string()))
                .await?;
            return Ok(());
        }
        self.emit(
            Some((index, ItemState::Running)),
            Some(job),
            "submitted".into(),
        );
        Ok(())
    }

    async fn end_item(
        &mut self,
        index: u32,
        mut item: ItemRecordDb,
        to: ItemState,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        self.rec.count_move(item.state, to);
        item.state = to;
        item.reason = reason.clone();
        self.db().put_item(&self.rec, index, &item).await?;
        self.emit(Some((index, to)), item.job, reason.unwrap_or_default());
        Ok(())
    }

    async fn collect_logged(&mut self, job: &ContentId) {
        if let Err(e) = self.collect(job).await {
            warn!(job = %job.short(), error = %e, "recording an item's end");
        }
    }

    async fn collect_all(&mut self) {
        let jobs: Vec<ContentId> = self
            .inflight
            .keys()
            .copied()
            .chain(self.rec.reduce_job)
            .collect();
        for job in jobs {
            self.collect_logged(&job).await;
        }
    }

    /// Records the end of `job` if it is one of ours and has ended.
    async fn collect(&mut self, job: &ContentId) -> Result<(), StoreError> {
        if Some(*job) == self.rec.reduce_job && self.rec.state == ArrayState::Reducing {
            if let Some(rec) = self.final_job(job)? {
                self.reduce_ended(&rec).await?;
            }
            return Ok(());
        }
        let Some(&index) = self.inflight.get(job) else {
            return Ok(());
        };
        let Some(rec) = self.final_job(job)? else {
            return Ok(());
        };
        let Some(mut item) = self.db().item(&self.rec.id, index)? else {
            self.inflight.remove(job);
            return Ok(());
        };
        self.inflight.remove(job);
        let to = match rec.state {
            JobState::Verified => {
                item.result = rec.result.as_ref().map(|r| ItemResult {
                    exit_code: r.exit_code,
                    stdout: r.stdout.clone(),
                    outputs: r.outputs.clone(),
                });
                ItemState::Verified
            }
            JobState::Cancelled if self.cancelling => ItemState::Cancelled,
            _ => ItemState::Failed,
        };
        let reason = (to != ItemState::Verified).then(|| {
            rec.reason
                .clone()
                .unwrap_or_else(|| rec.state.as_str().to_string())
        });
        self.end_item(index, item, to, reason).await
    }

    fn final_job(&self, job: &ContentId) -> Result<Option<JobRecordDb>, StoreError> {
        Ok(self.jobs.ctx.db.job(job)?.filter(|r| r.state.is_final()))
    }

    /// Every item ended: the array fails, reduces or is verified.
    async fn items_done(&mut self) -> Result<(), StoreError> {
        let c = self.rec.counts;
        let unfinished = c.failed + c.cancelled;
        if unfinished > 0 {
            let why = format!(
                "{} of {} items failed{}; `agora job retry {}` runs them again",
                c.failed,
                self.rec.total,
                if c.cancelled > 0 {
                    format!(", {} cancelled", c.cancelled)
                } else {
                    String::new()
                },
                self.rec.id.short()
            );
            return self.finish(ArrayState::Failed, Some(why)).await;
        }
        if self.rec.reduce.is_some() {
            self.rec.state = ArrayState::Reducing;
            self.db().put_array(&self.rec).await?;
            self.emit(None, None, "every item verified; reducing".into());
            return Ok(());
        }
        self.finish(ArrayState::Verified, None).await
    }

    async fn submit_reduce(&mut self) -> Result<(), Stall> {
        let Some(reduce) = self.rec.reduce.clone() else {
            return Ok(());
        };
        // At most MAX_INPUTS items (checked at submit), so this is bounded.
        let mut results = Vec::new();
        for r in self.db().items_from(&self.rec.id, 0) {
            let (index, item) = r?;
            if let Some(res) = item.result {
                results.push((index, res));
            }
        }
        let req = template::reduce_job(&reduce, results.iter().map(|(i, r)| (*i, r)));
        let prepared = match self.jobs.prepare(req).await {
            Ok(p) => p,
            Err(JobsError::Busy(_)) => return Err(Stall::Busy),
            Err(e) => {
                self.finish(ArrayState::Failed, Some(format!("reduce job: {e}")))
                    .await?;
                return Ok(());
            }
        };
        let job = prepared.id();
        self.rec.reduce_job = Some(job);
        self.db().put_array(&self.rec).await?;
        if let Err(e) = self.jobs.launch(prepared).await {
            self.finish(ArrayState::Failed, Some(format!("reduce job: {e}")))
                .await?;
            return Ok(());
        }
        self.emit(None, Some(job), "reduce job submitted".into());
        Ok(())
    }

    async fn reduce_ended(&mut self, job: &JobRecordDb) -> Result<(), StoreError> {
        if job.state == JobState::Verified {
            return self.finish(ArrayState::Verified, None).await;
        }
        let why = format!(
            "reduce job {} {}: {}",
            job.id().short(),
            job.state.as_str(),
            job.reason.as_deref().unwrap_or("no reason given")
        );
        self.finish(ArrayState::Failed, Some(why)).await
    }

    async fn finish(
        &mut self,
        state: ArrayState,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        self.rec.finish(state, reason.clone(), unix_now_ms());
        self.db().put_array(&self.rec).await?;
        info!(state = state.as_str(), "array ended");
        self.emit(None, None, reason.unwrap_or_else(|| state.as_str().into()));
        Ok(())
    }

    /// Cancels the jobs in flight and every pending item.
    async fn cancel(&mut self) -> Result<(), StoreError> {
        self.cancelling = true;
        let running: Vec<ContentId> = self
            .inflight
            .keys()
            .copied()
            .chain(self.rec.reduce_job)
            .collect();
        for job in &running {
            // An ended job answers with a conflict: nothing to cancel.
            let _ = self.jobs.cancel(&job.to_hex()).await;
            self.collect(job).await?;
        }
        // A job that did not answer the cancel in time is left to end on
        // its own; its item no longer counts.
        let stuck: Vec<(ContentId, u32)> = self.inflight.drain().collect();
        for (_, index) in stuck {
            if let Some(item) = self.db().item(&self.rec.id, index)? {
                self.end_item(index, item, ItemState::Cancelled, Some("cancelled".into()))
                    .await?;
            }
        }
        let id = self.rec.id;
        let mut pending = Vec::new();
        for r in self.db().items_from(&id, 0) {
            let (index, item) = r?;
            if item.state == ItemState::Pending {
                pending.push(index);
            }
            // Written in chunks so a large array's cancel stays bounded.
            if pending.len() >= 4096 {
                self.cancel_pending(std::mem::take(&mut pending)).await?;
            }
        }
        self.cancel_pending(pending).await?;
        self.finish(ArrayState::Cancelled, Some("cancelled by the user".into()))
            .await
    }

    async fn cancel_pending(&mut self, indices: Vec<u32>) -> Result<(), StoreError> {
        for index in indices {
            if let Some(mut item) = self.db().item(&self.rec.id, index)? {
                self.rec.count_move(item.state, ItemState::Cancelled);
                item.state = ItemState::Cancelled;
                item.reason = Some("cancelled before it ran".into());
                self.db().set_item(&self.rec.id, index, &item)?;
            }
        }
        self.db().put_array(&self.rec).await
    }

    fn emit(&self, item: Option<(u32, ItemState)>, job: Option<ContentId>, detail: String) {
        let _ = self.events.send(ArrayEvent {
            at_ms: unix_now_ms(),
            index: item.map(|(i, _)| i),
            item_state: item.map(|(_, s)| s),
            job: job.map(|j| j.to_hex()),
            detail,
            state: self.rec.state,
            counts: self.rec.counts,
        });
    }
}
