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
    codec, validate, Acceptance, Attestation, Bid, ContentId, ExecutorSpec, JobSpec, PeerId,
    Signed, ValidatedSpec,
};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn, Instrument};

use super::checks::{check_assignment, read_offer, unmet, Capacity, Requirement};
use super::fault::Tampered;
use super::link::{deliver, DeliverError};
use super::record::{WorkItem, WorkState};
use super::{Ctx, JobsConfig};
use crate::blobs;
use crate::clock::unix_now_ms;
use crate::executor::docker::DockerExecutor;
use crate::executor::wasm::WasmExecutor;
use crate::executor::{ExecError, ExecRequest, Executor};
use crate::lock;
use agora_protocol::limits::MAX_INLINE_BUNDLE_BYTES;
use agora_protocol::rpc::{AttestReport, BundleRef, Request, Response, RpcError};

/// Offers remembered so each is bid on once.
const BID_MEMORY: usize = 4096;
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
    wasm: WasmExecutor,
    docker: Option<DockerExecutor>,
    docker_images: Arc<Mutex<Option<Vec<String>>>>,
    memory_bytes: u64,
    cpu_cores: u32,
    /// Operator labels, matched against jobs' `requires`.
    labels: BTreeMap<String, String>,
    max_jobs: u32,
    queue_len: u32,
    /// One permit per job run at once.
    slots: Arc<Semaphore>,
    /// Accepted assignments not finished yet.
    accepted: Mutex<HashSet<ContentId>>,
    /// Of those, the ones running in a sandbox now.
    running: AtomicU32,
    /// Jobs bid on recently, oldest first.
    bid_on: Mutex<(VecDeque<ContentId>, HashSet<ContentId>)>,
    /// Bids not yet answered by an assignment, with when they lapse: a bid
    /// promises a place, so the node never bids beyond its capacity.
    promised: Mutex<HashMap<ContentId, Instant>>,
    /// Results produced since start (a `sleeper` fault counts them).
    produced: AtomicU64,
}

impl WorkerState {
    pub(crate) fn new(
        cfg: &JobsConfig,
        wasm: WasmExecutor,
        docker: Option<DockerExecutor>,
        docker_images: Arc<Mutex<Option<Vec<String>>>>,
    ) -> Self {
        let max_jobs = cfg.max_jobs.max(1);
        Self {
            wasm,
            docker,
            docker_images,
            memory_bytes: cfg.memory_bytes,
            cpu_cores: cfg.cpu_cores,
            labels: cfg.labels.clone(),
            max_jobs,
            queue_len: cfg.queue_len,
            slots: Arc::new(Semaphore::new(max_jobs as usize)),
            accepted: Mutex::new(HashSet::new()),
            running: AtomicU32::new(0),
            bid_on: Mutex::new((VecDeque::new(), HashSet::new())),
            promised: Mutex::new(HashMap::new()),
            produced: AtomicU64::new(0),
        }
    }

    /// The Docker sandbox, if Docker runs here.
    pub(crate) fn docker(&self) -> Option<&DockerExecutor> {
        self.docker.as_ref()
    }

    /// Assignments accepted and not finished.
    pub(crate) fn active_count(&self) -> u32 {
        u32::try_from(lock(&self.accepted).len()).unwrap_or(u32::MAX)
    }

    fn capacity(&self) -> Capacity {
        Capacity {
            wasm: true,
            docker_images: self
                .docker
                .as_ref()
                .and_then(|_| lock(&self.docker_images).clone()),
            memory_bytes: self.memory_bytes,
            cpu_cores: self.cpu_cores,
            labels: self.labels.clone(),
        }
    }

    /// Checks a Wasm module with this node's engine (see
    /// [`WasmExecutor::validate`]).
    pub(crate) fn validate_wasm(&self, bytes: &[u8]) -> Result<(), ExecError> {
        self.wasm.validate(bytes)
    }

    /// The first need of `spec` this node does not meet.
    pub(crate) fn can_run(&self, spec: &JobSpec) -> Option<Requirement> {
        unmet(spec, &self.capacity())
    }

    fn limit(&self) -> usize {
        (self.max_jobs + self.queue_len) as usize
    }

    /// Takes a place for `job`; false when full (or already taken). A
    /// place promised by a bid on `job` becomes this one.
    fn reserve(&self, job: ContentId) -> bool {
        let promised = {
            let mut p = lock(&self.promised);
            p.remove(&job);
            p.len()
        };
        let mut acc = lock(&self.accepted);
        acc.len() + promised < self.limit() && acc.insert(job)
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

    /// Whether this node already bid on `job`.
    fn has_bid(&self, job: ContentId) -> bool {
        lock(&self.bid_on).1.contains(&job)
    }

    /// Records that `job` was bid on; false if it already was.
    fn first_bid(&self, job: ContentId) -> bool {
        let mut guard = lock(&self.bid_on);
        let (order, set) = &mut *guard;
        if !set.insert(job) {
            return false;
        }
        order.push_back(job);
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

/// Bids on an offer this node can run and has room for.
pub(crate) fn on_offer(ctx: &Arc<Ctx>, data: &[u8], source: Option<PeerId>) {
    let offer = match read_offer(data, source) {
        Ok(o) => o,
        Err(e) => {
            debug!(error = %e, "unreadable offer");
            return;
        }
    };
    let w = &ctx.worker;
    if offer.submitter == ctx.me
        || unix_now_ms() > offer.bid_deadline_ms
        || w.can_run(offer.validated.spec()).is_some()
        || w.has_bid(offer.job)
        || !w.promise(offer.job)
        || !w.first_bid(offer.job)
    {
        return;
    }
    let bid = ctx.key.sign(&w.bid_for(offer.job));
    let ctx2 = ctx.clone();
    let span = tracing::debug_span!("bid", job = %offer.job.short(), submitter = %offer.submitter);
    ctx.tasks.spawn(
        async move {
            if let Err(e) = deliver(&ctx2, offer.submitter, Request::Bid(bid)).await {
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
    if !ctx.worker.reserve(job) {
        return Response::Error(RpcError::Declined(format!(
            "no room: {} assignments accepted (max {})",
            ctx.worker.active_count(),
            ctx.worker.limit()
        )));
    }
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
    spawn_execute(ctx, job, item, checked.validated);
    response
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

fn spawn_execute(ctx: &Arc<Ctx>, job: ContentId, item: WorkItem, spec: ValidatedSpec) {
    let ctx2 = ctx.clone();
    let span = tracing::info_span!("execute", job = %job.short(), submitter = %item.submitter);
    ctx.tasks
        .spawn(async move { execute(&ctx2, job, item, spec).await }.instrument(span));
}

async fn execute(ctx: &Arc<Ctx>, job: ContentId, mut item: WorkItem, spec: ValidatedSpec) {
    let outcome = tokio::select! {
        // Shutdown: the item stays Accepted and is resumed at restart.
        () = ctx.cancel.cancelled() => { ctx.worker.release(&job); return; }
        r = run_job(ctx, job, &item, spec) => r,
    };
    item.state = match outcome {
        Ok(Some(report)) => WorkState::Done(report),
        // A `drop` fault: accepted, never answered.
        Ok(None) => WorkState::Delivered,
        Err(e) => {
            info!(error = %e, "assignment failed");
            WorkState::Failed(truncate(&e, MAX_ERROR_CHARS))
        }
    };
    if let Err(e) = ctx.db.put_work(&job, &item).await {
        warn!(error = %e, "cannot persist a finished assignment");
    }
    ctx.worker.release(&job);
    deliver_result(ctx, job, item).await;
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
) -> Result<Option<AttestReport>, String> {
    let remaining = || Duration::from_millis(item.deadline_ms.saturating_sub(unix_now_ms()));
    let w = &ctx.worker;
    let _permit = tokio::time::timeout(remaining(), w.slots.clone().acquire_owned())
        .await
        .map_err(|_| "no free slot before the deadline".to_string())?
        .map_err(|_| "the worker is shutting down".to_string())?;
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
            .map_err(|e| format!("fetching blob {}: {e}", id.short()))?;
        }
    }
    let (module, stdin, inputs) = {
        let store = ctx.blobs.clone();
        let s = spec.spec().clone();
        tokio::task::spawn_blocking(move || -> Result<_, String> {
            let get = |id: &ContentId| {
                store
                    .get(id)
                    .map_err(|e| format!("blob {}: {e}", id.short()))
            };
            let module = match &s.executor {
                ExecutorSpec::Wasm { module } => get(module)?,
                ExecutorSpec::Docker { .. } => Vec::new(),
            };
            let stdin = s.stdin.as_ref().map(get).transpose()?.unwrap_or_default();
            let mut inputs = std::collections::BTreeMap::new();
            for (name, id) in &s.inputs {
                inputs.insert(name.clone(), get(id)?);
            }
            Ok((module, stdin, inputs))
        })
        .await
        .map_err(|e| e.to_string())??
    };
    let docker = matches!(spec.spec().executor, ExecutorSpec::Docker { .. });
    let req = ExecRequest {
        job_id: job,
        spec,
        module,
        stdin,
        inputs,
    };
    let result = if docker {
        match &w.docker {
            Some(d) => d.execute(req).await,
            None => return Err("this node does not run docker jobs".into()),
        }
    } else {
        w.wasm.execute(req).await
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    ctx.metrics.executions.with_label_values(&[outcome]).inc();
    let bundle = result.map_err(|e| e.to_string())?;
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
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("storing the result bundle: {e}"))?;
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
        WorkState::Failed(e) => Request::ExecFailed {
            job,
            attempt: item.attempt,
            error: e.clone(),
            kind: agora_protocol::FailKind::Crashed,
        },
        WorkState::Accepted | WorkState::Delivered => return,
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
            WorkState::Delivered => {}
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
                match spec {
                    Ok(spec) if runnable && ctx.worker.reserve(job) => {
                        info!(job = %job.short(), "resuming an accepted assignment");
                        spawn_execute(ctx, job, item, spec);
                    }
                    other => {
                        let why = match other {
                            Err(e) => format!("stored assignment unreadable: {e}"),
                            Ok(_) => {
                                "the executor restarted and could not finish before the deadline"
                                    .into()
                            }
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
