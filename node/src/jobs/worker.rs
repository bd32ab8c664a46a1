//! The worker side: bid on offers this node can run, accept assignments
//! into a bounded queue, fetch the job's blobs, run the sandbox, sign the
//! attestation and deliver it to the submitter (retrying until the
//! assignment's deadline has long passed).
//!
//! Capacity: at most `max_jobs` run at once; at most `max_jobs +
//! queue_len` are accepted. A restarted worker finishes what it had
//! accepted if the deadline still allows, and otherwise reports it failed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_protocol::{
    codec, validate, Acceptance, Attestation, Bid, ContentId, JobSpec, PeerId, Signed,
    ValidatedSpec,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::checks::{check_assignment, unmet, Capacity, CheckedOffer, Requirement};
use super::fault::Tampered;
use super::link::{deliver, DeliverError};
use super::record::{Failure, WorkItem, WorkState};
use super::{Ctx, JobsConfig};
use crate::blobs;
use crate::clock::unix_now_ms;
use crate::executor::registry::Sandboxes;
use crate::executor::{ExecError, ExecRequest, Executor};
use crate::lock;
use agora_protocol::limits::MAX_INLINE_BUNDLE_BYTES;
use agora_protocol::rpc::{AttestReport, BundleRef, FailKind, Request, Response, RpcError};

/// Offers remembered so each is bid on once.
const BID_MEMORY: usize = 4096;
/// One offer of a job: its id and the offer's bid deadline.
type OfferKey = (ContentId, u64);
/// Longest error text sent to a submitter.
const MAX_ERROR_CHARS: usize = 2048;
/// How long after the deadline a result is still offered to the submitter.
const DELIVERY_GRACE_MS: u64 = 60_000;
/// How long a bid holds a place for its job.
const PROMISE: Duration = Duration::from_secs(5);
/// Longest pause between delivery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The worker's shared state.
pub(crate) struct WorkerState {
    /// The sandboxes by executor kind; the worker names no kind itself.
    sandboxes: Arc<Sandboxes>,
    memory_bytes: u64,
    cpu_cores: u32,
    /// Operator labels, matched against jobs' `requires`.
    labels: BTreeMap<String, String>,
    /// Whether it fetches Docker images it lacks.
    image_fetch: bool,
    max_jobs: u32,
    queue_len: u32,
    /// One permit per job run at once.
    slots: Arc<Semaphore>,
    /// Accepted assignments not finished yet, each with the token that
    /// stops it (queued or running) when its submitter cancels it.
    accepted: Mutex<HashMap<ContentId, CancellationToken>>,
    /// Of those, the ones running in a sandbox now.
    running: AtomicU32,
    /// Offers bid on recently (job and the offer's bid deadline, which
    /// tells its offers apart), oldest first. One bid per offer, not per
    /// job: a submitter that restarted lost the bids it had, and its next
    /// offer must get them again.
    bid_on: Mutex<(VecDeque<OfferKey>, HashSet<OfferKey>)>,
    /// Bids not yet answered by an assignment, with when they lapse: a bid
    /// promises a place, so the node never bids beyond its capacity.
    promised: Mutex<HashMap<ContentId, Instant>>,
    /// Results produced since start (a `sleeper` fault counts them).
    produced: AtomicU64,
}

impl WorkerState {
    pub(crate) fn new(cfg: &JobsConfig, sandboxes: Arc<Sandboxes>) -> Self {
        let max_jobs = cfg.max_jobs.max(1);
        Self {
            sandboxes,
            memory_bytes: cfg.memory_bytes,
            cpu_cores: cfg.cpu_cores,
            labels: cfg.labels.clone(),
            image_fetch: cfg.image_fetch,
            max_jobs,
            queue_len: cfg.queue_len,
            slots: Arc::new(Semaphore::new(max_jobs as usize)),
            accepted: Mutex::new(HashMap::new()),
            running: AtomicU32::new(0),
            bid_on: Mutex::new((VecDeque::new(), HashSet::new())),
            promised: Mutex::new(HashMap::new()),
            produced: AtomicU64::new(0),
        }
    }

    /// The sandboxes, for the submit API's per-kind checks.
    pub(crate) fn sandboxes(&self) -> &Sandboxes {
        &self.sandboxes
    }

    /// Assignments accepted and not finished.
    pub(crate) fn active_count(&self) -> u32 {
        u32::try_from(lock(&self.accepted).len()).unwrap_or(u32::MAX)
    }

    fn capacity(&self) -> Capacity {
        Capacity {
            executors: self
                .sandboxes
                .capabilities()
                .into_iter()
                .map(|c| (c.kind.to_string(), c.images.unwrap_or_default()))
                .collect(),
            memory_bytes: self.memory_bytes,
            cpu_cores: self.cpu_cores,
            labels: self.labels.clone(),
            image_fetch: self.image_fetch,
        }
    }

    /// The first need of `spec` this node does not meet.
    pub(crate) fn can_run(&self, spec: &JobSpec) -> Option<Requirement> {
        unmet(spec, &self.capacity())
    }

    fn limit(&self) -> usize {
        (self.max_jobs + self.queue_len) as usize
    }

    /// Takes a place for `job` and returns the token that cancels it;
    /// `None` when full (or already taken). A place promised by a bid on
    /// `job` becomes this one.
    fn reserve(&self, job: ContentId) -> Option<CancellationToken> {
        let promised = {
            let mut p = lock(&self.promised);
            p.remove(&job);
            p.len()
        };
        let mut acc = lock(&self.accepted);
        if acc.len() + promised >= self.limit() || acc.contains_key(&job) {
            return None;
        }
        let token = CancellationToken::new();
        acc.insert(job, token.clone());
        Some(token)
    }

    /// Stops `job` if it is queued or running here; false if it is not.
    fn stop(&self, job: &ContentId) -> bool {
        match lock(&self.accepted).get(job) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Promises a place to `job` for a bid; false when every place is
    /// taken or promised.
    fn promise(&self, job: ContentId) -> bool {
        let now = Instant::now();
        let mut p = lock(&self.promised);
        p.retain(|_, until| *until > now);
        if lock(&self.accepted).len() + p.len() >= self.limit() {
            return false;
        }
        p.insert(job, now + PROMISE);
        true
    }

    fn release(&self, job: &ContentId) {
        lock(&self.accepted).remove(job);
    }

    /// Whether this node already bid on this offer of `job`.
    fn has_bid(&self, job: ContentId, offer: u64) -> bool {
        lock(&self.bid_on).1.contains(&(job, offer))
    }

    /// Records that this offer of `job` was bid on; false if it already
    /// was.
    fn first_bid(&self, job: ContentId, offer: u64) -> bool {
        let mut guard = lock(&self.bid_on);
        let (order, set) = &mut *guard;
        if !set.insert((job, offer)) {
            return false;
        }
        order.push_back((job, offer));
        if order.len() > BID_MEMORY {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }

    /// The bid for `job`. Capacity is what the node accepts (running
    /// plus queue), since the bid itself holds a place: `running_jobs`
    /// counts accepted assignments and `max_jobs` all places, so a node
    /// whose sandboxes are busy but whose queue has room stays eligible,
    /// while its load (accepted per sandbox slot) still ranks it below
    /// idle nodes.
    fn bid_for(&self, job: ContentId) -> Bid {
        let accepted = self.active_count();
        let running = self.running.load(Ordering::Relaxed);
        Bid {
            job,
            running_jobs: accepted,
            max_jobs: u32::try_from(self.limit()).unwrap_or(u32::MAX),
            queue_len: accepted.saturating_sub(running),
            load_permille: accepted.saturating_mul(1000) / self.max_jobs,
        }
    }
}

/// Bids on an offer this node can run and has room for. The offer was
/// checked by the gossip validator ([`super::dispatch::OfferValidator`]).
pub(crate) fn on_offer(ctx: &Arc<Ctx>, offer: &CheckedOffer) {
    let w = &ctx.worker;
    if offer.submitter == ctx.me
        || unix_now_ms() > offer.bid_deadline_ms
        || w.can_run(offer.validated.spec()).is_some()
        || w.has_bid(offer.job, offer.bid_deadline_ms)
        || !w.promise(offer.job)
        || !w.first_bid(offer.job, offer.bid_deadline_ms)
    {
        return;
    }
    let bid = ctx.key.sign(&w.bid_for(offer.job));
    let (ctx2, submitter) = (ctx.clone(), offer.submitter);
    let span = tracing::debug_span!("bid", job = %offer.job.short(), submitter = %offer.submitter);
    ctx.tasks.spawn(
        async move {
            if let Err(e) = deliver(&ctx2, submitter, Request::Bid(bid)).await {
                debug!(error = %e, "bid not delivered");
            }
        }
        .instrument(span),
    );
}

/// Accepts (and persists) an assignment, then runs it in the background.
pub(crate) async fn on_assign(
    ctx: &Arc<Ctx>,
    peer: PeerId,
    signed: Signed<agora_protocol::Assignment>,
) -> Response {
    let checked = match check_assignment(&signed, peer, ctx.me, unix_now_ms()) {
        Ok(c) => c,
        Err(e) => return Response::Error(RpcError::Invalid(e.to_string())),
    };
    let job = checked.job;
    match ctx.db.work(&job) {
        Ok(Some(item)) if item.attempt == checked.assignment.attempt => {
            return accepted(ctx, job, &item)
        }
        Ok(_) => {}
        Err(e) => {
            warn!(error = %e, "work store read failed");
            return Response::Error(RpcError::Busy);
        }
    }
    if let Some(req) = ctx.worker.can_run(checked.validated.spec()) {
        return Response::Error(RpcError::Declined(format!("this node lacks {req}")));
    }
    let Some(stop) = ctx.worker.reserve(job) else {
        return Response::Error(RpcError::Declined(format!(
            "no room: {} assignments accepted (max {})",
            ctx.worker.active_count(),
            ctx.worker.limit()
        )));
    };
    let item = WorkItem {
        spec: checked.assignment.spec.clone(),
        submitter: checked.submitter,
        attempt: checked.assignment.attempt,
        deadline_ms: checked.assignment.deadline_ms,
        accepted_at_ms: unix_now_ms(),
        state: WorkState::Accepted,
    };
    if let Err(e) = ctx.db.put_work(&job, &item).await {
        ctx.worker.release(&job);
        warn!(error = %e, "cannot persist an assignment");
        return Response::Error(RpcError::Busy);
    }
    let response = accepted(ctx, job, &item);
    spawn_execute(ctx, job, item, checked.validated, stop);
    response
}

/// Stops an assignment its submitter no longer needs: a queued one leaves
/// the queue, a running one's sandbox is stopped at once, and the record
/// is marked [`WorkState::Cancelled`] so a restart does not resume it.
/// Only the job's submitter may; for an unknown or finished job it is a
/// no-op (cancelling twice is fine).
pub(crate) async fn on_cancel(
    ctx: &Arc<Ctx>,
    peer: PeerId,
    job: ContentId,
    attempt: u32,
) -> Response {
    let mut item = match ctx.db.work(&job) {
        Ok(Some(item)) => item,
        Ok(None) => return Response::Ack,
        Err(e) => {
            warn!(error = %e, "work store read failed");
            return Response::Error(RpcError::Busy);
        }
    };
    if item.submitter != peer {
        return Response::Error(RpcError::Declined(
            "only the job's submitter may cancel it".into(),
        ));
    }
    if item.attempt != attempt || !matches!(item.state, WorkState::Accepted) {
        return Response::Ack;
    }
    info!(job = %job.short(), "cancelled by its submitter");
    // The execute task records the cancel; without one (it already
    // ended), the record is marked here.
    if !ctx.worker.stop(&job) {
        item.state = WorkState::Cancelled;
        if let Err(e) = ctx.db.put_work(&job, &item).await {
            warn!(error = %e, "cannot persist a cancelled assignment");
            return Response::Error(RpcError::Busy);
        }
    }
    Response::Ack
}

/// The signed acceptance of a persisted assignment.
fn accepted(ctx: &Ctx, job: ContentId, item: &WorkItem) -> Response {
    Response::Accepted(ctx.key.sign(&Acceptance {
        job,
        submitter: item.submitter,
        attempt: item.attempt,
        deadline_ms: item.deadline_ms,
    }))
}

fn spawn_execute(
    ctx: &Arc<Ctx>,
    job: ContentId,
    item: WorkItem,
    spec: ValidatedSpec,
    stop: CancellationToken,
) {
    let ctx2 = ctx.clone();
    let span = tracing::info_span!("execute", job = %job.short(), submitter = %item.submitter);
    ctx.tasks
        .spawn(async move { execute(&ctx2, job, item, spec, stop).await }.instrument(span));
}

async fn execute(
    ctx: &Arc<Ctx>,
    job: ContentId,
    mut item: WorkItem,
    spec: ValidatedSpec,
    stop: CancellationToken,
) {
    // Dropping run_job's future stops the sandbox (see Executor::execute)
    // and frees its slot.
    let outcome = tokio::select! {
        // Shutdown: the item stays Accepted and is resumed at restart.
        () = ctx.cancel.cancelled() => { ctx.worker.release(&job); return; }
        () = stop.cancelled() => None,
        r = run_job(ctx, job, &item, spec) => Some(r),
    };
    item.state = match outcome {
        None => {
            ctx.metrics
                .executions
                .with_label_values(&["cancelled"])
                .inc();
            WorkState::Cancelled
        }
        Some(Ok(Some(report))) => WorkState::Done(report),
        // A `drop` fault: accepted, never answered.
        Some(Ok(None)) => WorkState::Delivered,
        Some(Err(e)) => {
            info!(error = %e.text, kind = e.kind.as_str(), "assignment failed");
            WorkState::Failed(Failure {
                error: truncate(&e.text, MAX_ERROR_CHARS),
                kind: e.kind,
            })
        }
    };
    if let Err(e) = ctx.db.put_work(&job, &item).await {
        warn!(error = %e, "cannot persist a finished assignment");
    }
    ctx.worker.release(&job);
    deliver_result(ctx, job, item).await;
}

/// Why a run produced no report: the text for people and the kind the
/// submitter records.
#[derive(Debug)]
struct RunError {
    /// The broken limit, or whether the job could not be started here.
    kind: FailKind,
    /// What went wrong.
    text: String,
}

impl RunError {
    /// The job could not be started here (a blob, a slot).
    fn unable(text: impl Into<String>) -> Self {
        Self {
            kind: FailKind::Unable,
            text: text.into(),
        }
    }

    /// Something failed that is neither a limit nor a missing input.
    fn crashed(text: impl Into<String>) -> Self {
        Self {
            kind: FailKind::Crashed,
            text: text.into(),
        }
    }
}

impl From<ExecError> for RunError {
    fn from(e: ExecError) -> Self {
        Self {
            kind: e.fail_kind(),
            text: e.to_string(),
        }
    }
}

/// Decrements the running count when a run ends, however it ends.
struct Running<'a>(&'a AtomicU32);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn run_job(
    ctx: &Arc<Ctx>,
    job: ContentId,
    item: &WorkItem,
    spec: ValidatedSpec,
) -> Result<Option<AttestReport>, RunError> {
    let remaining = || Duration::from_millis(item.deadline_ms.saturating_sub(unix_now_ms()));
    let w = &ctx.worker;
    let _permit = tokio::time::timeout(remaining(), w.slots.clone().acquire_owned())
        .await
        .map_err(|_| RunError::unable("no free slot before the deadline"))?
        .map_err(|_| RunError::unable("the worker is shutting down"))?;
    w.running.fetch_add(1, Ordering::Relaxed);
    let _running = Running(&w.running);

    for id in spec.spec().blobs() {
        if !ctx.blobs.has(&id) {
            blobs::fetch(
                &ctx.blobs,
                &ctx.net,
                id,
                &[item.submitter],
                ctx.cfg.max_blob_bytes,
                remaining(),
            )
            .await
            .map_err(|e| RunError::unable(format!("fetching blob {}: {e}", id.short())))?;
        }
    }
    super::image::ensure(ctx, job, item, &spec)
        .await
        .map_err(RunError::unable)?;
    let sandbox = w.sandboxes.for_spec(&spec.spec().executor)?.clone();
    let program = sandbox.program(&spec.spec().executor);
    let (module, stdin, inputs) = {
        let store = ctx.blobs.clone();
        let s = spec.spec().clone();
        tokio::task::spawn_blocking(move || -> Result<_, RunError> {
            let get = |id: &ContentId| {
                store
                    .get(id)
                    .map_err(|e| RunError::unable(format!("blob {}: {e}", id.short())))
            };
            let module = program.as_ref().map(get).transpose()?.unwrap_or_default();
            let stdin = s.stdin.as_ref().map(get).transpose()?.unwrap_or_default();
            let mut inputs = std::collections::BTreeMap::new();
            for (name, id) in &s.inputs {
                inputs.insert(name.clone(), get(id)?);
            }
            Ok((module, stdin, inputs))
        })
        .await
        .map_err(|e| RunError::crashed(e.to_string()))??
    };
    let req = ExecRequest {
        job_id: job,
        spec,
        module,
        stdin,
        inputs,
    };
    let result = sandbox.execute(req).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    ctx.metrics.executions.with_label_values(&[outcome]).inc();
    let bundle = result?;
    let nth = ctx.worker.produced.fetch_add(1, Ordering::Relaxed);
    let bundle = match ctx
        .cfg
        .fault
        .as_ref()
        .map(|f| f.tamper(&job, &ctx.me, nth, bundle.clone()))
    {
        None => bundle,
        Some(Tampered::Report(b)) => b,
        Some(Tampered::Delay(b, d)) => {
            tokio::time::sleep(d).await;
            b
        }
        Some(Tampered::Withhold) => return Ok(None),
    };
    let attestation = ctx.key.sign(&Attestation {
        job,
        result_hash: bundle.result_hash(),
        exit_code: bundle.exit_code,
        finished_at_ms: unix_now_ms(),
    });
    let encoded = codec::encode(&bundle);
    let bundle = if encoded.len() <= MAX_INLINE_BUNDLE_BYTES {
        BundleRef::Inline(bundle)
    } else {
        let store = ctx.blobs.clone();
        let size = encoded.len() as u64;
        let id = tokio::task::spawn_blocking(move || store.put(&encoded))
            .await
            .map_err(|e| RunError::crashed(e.to_string()))?
            .map_err(|e| RunError::crashed(format!("storing the result bundle: {e}")))?;
        BundleRef::Blob { id, size }
    };
    Ok(Some(AttestReport {
        attestation,
        attempt: item.attempt,
        bundle,
    }))
}

/// Delivers a finished assignment's report or failure to its submitter,
/// retrying network failures until [`DELIVERY_GRACE_MS`] after the
/// deadline; a refusal (the job is over, or unknown) ends it too.
async fn deliver_result(ctx: &Arc<Ctx>, job: ContentId, mut item: WorkItem) {
    let request = match &item.state {
        WorkState::Done(r) => Request::Attest(r.clone()),
        WorkState::Failed(f) => Request::ExecFailed {
            job,
            attempt: item.attempt,
            error: f.error.clone(),
            kind: f.kind,
        },
        WorkState::Accepted | WorkState::Delivered | WorkState::Cancelled => return,
    };
    let give_up = item.deadline_ms.saturating_add(DELIVERY_GRACE_MS);
    let mut backoff = Duration::from_millis(250);
    loop {
        match deliver(ctx, item.submitter, request.clone()).await {
            Ok(_) => break,
            Err(DeliverError::Refused(e)) => {
                debug!(error = %e, "submitter refused the report");
                break;
            }
            Err(DeliverError::Network(e)) => {
                if unix_now_ms() > give_up {
                    warn!(error = %e, "giving up delivering the result");
                    break;
                }
                debug!(error = %e, ?backoff, "result not delivered; retrying");
                tokio::select! {
                    () = ctx.cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    item.state = WorkState::Delivered;
    if let Err(e) = ctx.db.put_work(&job, &item).await {
        warn!(error = %e, "cannot persist a delivered assignment");
    }
}

/// Picks up what a previous run of this node accepted: runs again what the
/// deadline still allows, reports the rest failed, re-delivers answers.
pub(crate) async fn resume_all(ctx: &Arc<Ctx>) {
    let (items, bad) = ctx.db.work_items();
    for e in bad {
        warn!(error = %e, "skipping an unreadable work record");
    }
    for (job, mut item) in items {
        match &item.state {
            WorkState::Delivered | WorkState::Cancelled => {}
            WorkState::Done(_) | WorkState::Failed(_) => {
                let ctx2 = ctx.clone();
                ctx.tasks
                    .spawn(async move { deliver_result(&ctx2, job, item).await });
            }
            WorkState::Accepted => {
                let spec = item
                    .spec
                    .verify()
                    .map_err(|e| e.to_string())
                    .and_then(|v| validate(v.value).map_err(|e| e.to_string()));
                let runnable = unix_now_ms() < item.deadline_ms;
                let stop = match &spec {
                    Ok(_) if runnable => ctx.worker.reserve(job),
                    _ => None,
                };
                match (spec, stop) {
                    (Ok(spec), Some(stop)) => {
                        info!(job = %job.short(), "resuming an accepted assignment");
                        spawn_execute(ctx, job, item, spec, stop);
                    }
                    (other, _) => {
                        let why = match other {
                            Err(e) => Failure::from(format!("stored assignment unreadable: {e}")),
                            Ok(_) => Failure {
                                error: "the executor restarted and could not finish before the deadline"
                                    .into(),
                                kind: FailKind::Unable,
                            },
                        };
                        item.state = WorkState::Failed(why);
                        if let Err(e) = ctx.db.put_work(&job, &item).await {
                            warn!(error = %e, "cannot persist a failed assignment");
                        }
                        let ctx2 = ctx.clone();
                        ctx.tasks
                            .spawn(async move { deliver_result(&ctx2, job, item).await });
                    }
                }
            }
        }
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max_chars).collect();
    t.push('…');
    t
}
