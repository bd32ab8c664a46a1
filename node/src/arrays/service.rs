//! What the control API asks of job arrays: submit one, read it and its
//! items, its reduce result, cancel, retry, follow its changes.

use agora_protocol::limits::MAX_STRING_BYTES;
use agora_protocol::{codec, ContentId, IdPrefix};
use tokio::sync::{broadcast, oneshot};

use super::driver;
use super::record::{
    replication_of, ArrayRecordDb, ItemInput, ItemRecordDb, MAX_ARRAY_ITEMS, MAX_PARALLEL,
};
use super::template;
use crate::api::types::{
    ArrayCounts, ArrayEvent, ArrayInfo, ArrayItemInfo, ArrayItemPage, ArrayItems, ArrayState,
    BlobInfo, ItemState, JobResult, SubmitArray, SubmitExecutor, SubmitJob, MAX_LISTED_FAILURES,
};
use crate::clock::unix_now_ms;
use crate::jobs::record::StoredBlob;
use crate::jobs::store::StoreError;
use crate::jobs::{Jobs, JobsError};
use crate::lock;
use crate::network::adverts::lock_book;

/// Largest `--lines` text.
pub const MAX_LINES_BYTES: u64 = 64 * 1024 * 1024;
/// Most items in one page of `GET /api/v1/arrays/{id}/items`.
pub const MAX_PAGE: u32 = 1000;
/// Wait for a cancel to be carried out.
const CANCEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn internal(e: StoreError) -> JobsError {
    JobsError::Internal(e.to_string())
}

impl Jobs {
    /// Validates an array, stores it with all its items and starts it.
    pub async fn submit_array(&self, req: SubmitArray) -> Result<ArrayInfo, JobsError> {
        let template = self.pinned(req.job).await?;
        let reduce = match req.reduce {
            Some(r) => Some(self.pinned(r).await?),
            None => None,
        };
        let items = self.items_of(&req.items, &template)?;
        let total = u32::try_from(items.len()).unwrap_or(u32::MAX);
        if total == 0 || total > MAX_ARRAY_ITEMS {
            return Err(JobsError::BadRequest(format!(
                "an array has 1 to {MAX_ARRAY_ITEMS} items, this one {}",
                items.len()
            )));
        }
        // Every item job is the template with its value filled in: the
        // first shows now whether the template makes a valid job.
        self.prepare(template::item_job(&template, &items[0], 0))
            .await
            .map_err(|e| JobsError::BadRequest(format!("item 0: {e}")))?;
        if let Some(r) = &reduce {
            let most = template::max_reduce_items(&template);
            if items.len() > most {
                return Err(JobsError::BadRequest(format!(
                    "a reduce step takes at most {most} items (each item's stdout and \
                     outputs are inputs of one job), this array has {total}"
                )));
            }
            self.prepare(r.clone())
                .await
                .map_err(|e| JobsError::BadRequest(format!("reduce job: {e}")))?;
        }
        let parallel = match req.parallel {
            Some(p) if (1..=MAX_PARALLEL).contains(&p) => p,
            Some(p) => {
                return Err(JobsError::BadRequest(format!(
                    "--parallel must be between 1 and {MAX_PARALLEL}, got {p}"
                )))
            }
            None => self.default_parallel(&template),
        };
        let now = unix_now_ms();
        let nonce: u64 = rand::random();
        let id = ContentId::of(&codec::encode(&(&template, &reduce, total, now, nonce)));
        let rec = ArrayRecordDb {
            id,
            template,
            reduce,
            total,
            parallel,
            state: ArrayState::Running,
            counts: ArrayCounts {
                pending: total,
                ..ArrayCounts::default()
            },
            reduce_job: None,
            submitted_at_ms: now,
            finished_at_ms: None,
            reason: None,
        };
        self.ctx
            .arrays
            .db
            .create(&rec, items.into_iter().map(ItemRecordDb::new))
            .await
            .map_err(internal)?;
        let info = self.array_info(&rec, false)?;
        driver::start(self, rec);
        Ok(info)
    }

    /// The job with its blobs as full ids and its image pinned, so every
    /// item runs the same program whatever is uploaded or tagged later.
    async fn pinned(&self, mut job: SubmitJob) -> Result<SubmitJob, JobsError> {
        match &mut job.executor {
            SubmitExecutor::Wasm { module } => *module = self.blob(module)?.to_hex(),
            SubmitExecutor::Docker { image } => {
                if !image.contains('@') && !image.starts_with("sha256:") {
                    let digest = self.resolve_image(image).await?;
                    *image = format!("{image}@{digest}");
                }
            }
        }
        if let Some(s) = &mut job.stdin {
            *s = self.blob(s)?.to_hex();
        }
        for v in job.inputs.values_mut() {
            *v = self.blob(v)?.to_hex();
        }
        Ok(job)
    }

    fn items_of(
        &self,
        src: &ArrayItems,
        template: &SubmitJob,
    ) -> Result<Vec<ItemInput>, JobsError> {
        let too_many = |n: u128| {
            JobsError::BadRequest(format!(
                "an array has at most {MAX_ARRAY_ITEMS} items, this one {n}"
            ))
        };
        match src {
            ArrayItems::Range { from, to } => {
                if to < from {
                    return Err(JobsError::BadRequest(format!(
                        "--range {from}..{to}: the end is before the start"
                    )));
                }
                let n = (i128::from(*to) - i128::from(*from) + 1) as u128;
                if n > u128::from(MAX_ARRAY_ITEMS) {
                    return Err(too_many(n));
                }
                Ok((*from..=*to).map(ItemInput::Int).collect())
            }
            ArrayItems::Lines { blob } => {
                let id = self.blob(blob)?;
                let size = self.ctx.blobs.size(&id).unwrap_or(u64::MAX);
                if size > MAX_LINES_BYTES {
                    return Err(JobsError::BadRequest(format!(
                        "--lines: the text is {size} bytes, at most {MAX_LINES_BYTES}"
                    )));
                }
                let bytes = self.ctx.blobs.get(&id).map_err(|e| {
                    JobsError::Internal(format!("reading blob {}: {e}", id.short()))
                })?;
                let text = std::str::from_utf8(&bytes)
                    .map_err(|e| JobsError::BadRequest(format!("--lines: not UTF-8 text: {e}")))?;
                let lines: Vec<&str> = text.lines().collect();
                if lines.len() as u128 > u128::from(MAX_ARRAY_ITEMS) {
                    return Err(too_many(lines.len() as u128));
                }
                lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        if l.len() > MAX_STRING_BYTES {
                            Err(JobsError::BadRequest(format!(
                                "--lines: line {} is {} bytes, at most {MAX_STRING_BYTES}",
                                i + 1,
                                l.len()
                            )))
                        } else {
                            Ok(ItemInput::Line((*l).to_string()))
                        }
                    })
                    .collect()
            }
            ArrayItems::Files { files } => {
                if files.len() as u128 > u128::from(MAX_ARRAY_ITEMS) {
                    return Err(too_many(files.len() as u128));
                }
                files
                    .iter()
                    .map(|f| {
                        if f.name.is_empty()
                            || f.name == "."
                            || f.name == ".."
                            || f.name.contains(['/', '\\', '\0'])
                        {
                            return Err(JobsError::BadRequest(format!(
                                "--each: {:?} is not a plain file name",
                                f.name
                            )));
                        }
                        if template.inputs.contains_key(&f.name) {
                            return Err(JobsError::BadRequest(format!(
                                "--each {}: the job already has an input of that name",
                                f.name
                            )));
                        }
                        Ok(ItemInput::File {
                            name: f.name.clone(),
                            blob: self.blob(&f.blob)?,
                        })
                    })
                    .collect()
            }
        }
    }

    /// Twice the item jobs the online nodes can run at once, so the next
    /// items collect bids while others run.
    fn default_parallel(&self, template: &SubmitJob) -> u32 {
        let now = unix_now_ms();
        let book = lock_book(&self.ctx.book);
        let slots: u32 = book
            .online(now)
            .into_iter()
            .filter(|p| *p != self.ctx.me || template.allow_local)
            .filter_map(|p| book.get(&p).map(|r| r.advert.max_jobs))
            .sum();
        let n = u32::from(replication_of(template).n.max(1));
        (slots / n * 2).clamp(1, 256)
    }

    fn resolve_array(&self, prefix: &str) -> Result<ContentId, JobsError> {
        let p: IdPrefix = prefix
            .parse()
            .map_err(|e: agora_protocol::CidError| JobsError::BadRequest(e.to_string()))?;
        p.resolve(self.ctx.arrays.db.array_ids())
            .map_err(|e| match e {
                agora_protocol::CidError::NotFound(_) => {
                    JobsError::NotFound(format!("no array with id {prefix}"))
                }
                other => JobsError::BadRequest(other.to_string()),
            })
    }

    fn load_array(&self, prefix: &str) -> Result<ArrayRecordDb, JobsError> {
        let id = self.resolve_array(prefix)?;
        self.ctx
            .arrays
            .db
            .array(&id)
            .map_err(internal)?
            .ok_or_else(|| JobsError::NotFound(format!("no array with id {prefix}")))
    }

    /// One array, with its failed items.
    pub fn array(&self, prefix: &str) -> Result<ArrayInfo, JobsError> {
        let rec = self.load_array(prefix)?;
        self.array_info(&rec, true)
    }

    /// Arrays submitted through this node, newest first.
    pub fn arrays(&self) -> Result<Vec<ArrayInfo>, JobsError> {
        let (recs, _) = self.ctx.arrays.db.arrays();
        let mut out = recs
            .iter()
            .map(|r| self.array_info(r, false))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| {
            b.submitted_at_ms
                .cmp(&a.submitted_at_ms)
                .then(a.id.cmp(&b.id))
        });
        Ok(out)
    }

    fn array_info(&self, rec: &ArrayRecordDb, with_failures: bool) -> Result<ArrayInfo, JobsError> {
        let mut failed_items = Vec::new();
        if with_failures && rec.counts.failed + rec.counts.cancelled > 0 {
            for r in self.ctx.arrays.db.items_from(&rec.id, 0) {
                let (index, item) = r.map_err(internal)?;
                if matches!(item.state, ItemState::Failed | ItemState::Cancelled) {
                    failed_items.push(item_info(index, &item));
                    if failed_items.len() >= MAX_LISTED_FAILURES {
                        break;
                    }
                }
            }
        }
        let t = &rec.template;
        let replication = rec.replication();
        Ok(ArrayInfo {
            id: rec.id.to_hex(),
            state: rec.state,
            executor: match t.executor {
                SubmitExecutor::Wasm { .. } => "wasm",
                SubmitExecutor::Docker { .. } => "docker",
            }
            .into(),
            total: rec.total,
            counts: rec.counts,
            parallel: rec.parallel,
            n: replication.n,
            k: replication.k,
            has_reduce: rec.reduce.is_some(),
            reduce_job: rec.reduce_job.map(|j| j.to_hex()),
            submitted_at_ms: rec.submitted_at_ms,
            finished_at_ms: rec.finished_at_ms,
            reason: rec.reason.clone(),
            failed_items,
        })
    }

    /// Items `from..from+limit` of an array.
    pub fn array_items(
        &self,
        prefix: &str,
        from: u32,
        limit: u32,
    ) -> Result<ArrayItemPage, JobsError> {
        let rec = self.load_array(prefix)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let mut items = Vec::new();
        for r in self.ctx.arrays.db.items_from(&rec.id, from) {
            let (index, item) = r.map_err(internal)?;
            items.push(item_info(index, &item));
            if items.len() as u32 == limit {
                break;
            }
        }
        let next = items
            .last()
            .map(|i| i.index + 1)
            .filter(|n| *n < rec.total && items.len() as u32 == limit);
        Ok(ArrayItemPage { items, next })
    }

    /// The verified result of an array's reduce job.
    pub fn array_result(&self, prefix: &str) -> Result<JobResult, JobsError> {
        let rec = self.load_array(prefix)?;
        let short = rec.id.short();
        if rec.reduce.is_none() {
            return Err(JobsError::Conflict(format!(
                "array {short} has no reduce step: its results are its items' \
                 (GET /api/v1/arrays/{short}/items)"
            )));
        }
        match (rec.state, rec.reduce_job) {
            (ArrayState::Verified, Some(job)) => self.result(&job.to_hex()),
            (state, _) => Err(JobsError::Conflict(format!(
                "array {short} is {}{}",
                state.as_str(),
                rec.reason.map(|r| format!(": {r}")).unwrap_or_default()
            ))),
        }
    }

    /// Cancels every unfinished item of an array.
    pub async fn cancel_array(&self, prefix: &str) -> Result<ArrayInfo, JobsError> {
        let id = self.resolve_array(prefix)?;
        let tx = lock(&self.ctx.arrays.active).get(&id).map(|a| a.tx.clone());
        let gone = || {
            self.load_array(prefix).and_then(|r| {
                Err(JobsError::Conflict(format!(
                    "array {} is already {}",
                    id.short(),
                    r.state.as_str()
                )))
            })
        };
        let Some(tx) = tx else { return gone() };
        let (reply, done) = oneshot::channel();
        if tx.send(super::ArrayCmd::Cancel(reply)).await.is_err() {
            return gone();
        }
        tokio::time::timeout(CANCEL_TIMEOUT, done)
            .await
            .map_err(|_| JobsError::Internal("the array did not finish cancelling in time".into()))?
            .map_err(|_| JobsError::Conflict(format!("array {} just ended", id.short())))?;
        self.array(&id.to_hex())
    }

    /// Runs failed and cancelled items again (all of them, or those of
    /// `indices`), or the reduce job if that is what failed.
    pub async fn retry_array(&self, prefix: &str, indices: &[u32]) -> Result<ArrayInfo, JobsError> {
        let id = self.resolve_array(prefix)?;
        let mut rec = self.load_array(prefix)?;
        // The stored state decides: a driver that just ended may still be
        // listed as active for a moment.
        if !rec.state.is_final() {
            return Err(JobsError::Conflict(format!(
                "array {} is still {}; retry it once it ends (or cancel it)",
                id.short(),
                rec.state.as_str()
            )));
        }
        let db = &self.ctx.arrays.db;
        let mut chosen = Vec::new();
        if indices.is_empty() {
            for r in db.items_from(&id, 0) {
                let (index, item) = r.map_err(internal)?;
                if item.retryable() {
                    chosen.push(index);
                }
            }
        } else {
            for &index in indices {
                let item = db.item(&id, index).map_err(internal)?.ok_or_else(|| {
                    JobsError::BadRequest(format!(
                        "array {} has items 0 to {}, not {index}",
                        id.short(),
                        rec.total - 1
                    ))
                })?;
                if !item.retryable() {
                    return Err(JobsError::Conflict(format!(
                        "item {index} is {}: only failed or cancelled items are retried",
                        item.state.as_str()
                    )));
                }
                chosen.push(index);
            }
        }
        let reduce_failed = rec.state == ArrayState::Failed
            && rec.reduce.is_some()
            && rec.counts.verified == rec.total;
        if chosen.is_empty() && !reduce_failed {
            return Err(JobsError::Conflict(format!(
                "array {} is {} and has no failed or cancelled item",
                id.short(),
                rec.state.as_str()
            )));
        }
        for index in chosen {
            if let Some(mut item) = db.item(&id, index).map_err(internal)? {
                rec.count_move(item.state, ItemState::Pending);
                item.state = ItemState::Pending;
                item.reason = None;
                db.set_item(&id, index, &item).map_err(internal)?;
            }
        }
        rec.reduce_job = None;
        rec.reopen(if rec.counts.pending > 0 {
            ArrayState::Running
        } else {
            ArrayState::Reducing
        });
        db.put_array(&rec).await.map_err(internal)?;
        let info = self.array_info(&rec, false)?;
        driver::start(self, rec);
        Ok(info)
    }

    /// The array now, and its live changes if it is not final.
    pub fn array_events(
        &self,
        prefix: &str,
    ) -> Result<(ArrayInfo, Option<broadcast::Receiver<ArrayEvent>>), JobsError> {
        let id = self.resolve_array(prefix)?;
        let live = lock(&self.ctx.arrays.active)
            .get(&id)
            .map(|a| a.events.subscribe());
        let info = self.array(&id.to_hex())?;
        let live = if info.state.is_final() { None } else { live };
        Ok((info, live))
    }
}

fn blob_info(b: &StoredBlob) -> BlobInfo {
    BlobInfo {
        id: b.id.to_hex(),
        size: b.size,
    }
}

fn item_info(index: u32, item: &ItemRecordDb) -> ArrayItemInfo {
    let r = item.result.as_ref();
    ArrayItemInfo {
        index,
        value: item.input.value(),
        state: item.state,
        job: item.job.map(|j| j.to_hex()),
        attempts: item.attempts,
        exit_code: r.map(|r| r.exit_code),
        stdout: r.map(|r| blob_info(&r.stdout)),
        outputs: r
            .map(|r| {
                r.outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), blob_info(v)))
                    .collect()
            })
            .unwrap_or_default(),
        reason: item.reason.clone(),
    }
}
