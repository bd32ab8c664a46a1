//! The submitter's async shell: one task per submitted job feeds the
//! job's [`JobCore`] its inputs (from the dispatcher, timers and helper
//! tasks) and performs the actions it returns: network, store, clock.
//! Every rule about the job is the core's; this file only does I/O.

use std::sync::Arc;
use std::time::Duration;

use agora_protocol::rpc::{Request, Response};
use agora_protocol::{Assignment, FailKind, JobOffer, PeerId, TOPIC_JOBS, TOPIC_VERDICTS};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn, Instrument};

use super::core::{Action, CoreConfig, Input, JobCore};
use super::input::JobInput;
use super::link::{deliver, DeliverError};
use super::record::JobRecordDb;
use super::state::{JobEvent, JobState};
use super::world::NodeWorld;
use super::{results, ActiveJob, Ctx};
use crate::clock::{millis, unix_now_ms};
use crate::lock;
use crate::reputation;

/// Inputs queued per job task.
const INPUT_QUEUE: usize = 256;
/// Wait after a disconnect before checking the executor is gone.
const OFFLINE_CHECK_DELAY: Duration = Duration::from_millis(500);
/// How long the liveness ping may take.
const OFFLINE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Registers and starts the task of `rec` (new or resumed).
pub(crate) fn start(ctx: &Arc<Ctx>, rec: JobRecordDb) -> Result<(), String> {
    let cfg = CoreConfig {
        me: ctx.me,
        bid_window_ms: millis(ctx.cfg.bid_window),
        bid_window_max_ms: millis(ctx.cfg.bid_window_max),
    };
    let core = JobCore::new(cfg, rec).map_err(|e| e.to_string())?;
    let id = core.id();
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let (events, _) = broadcast::channel(64);
    lock(&ctx.active).insert(
        id,
        ActiveJob {
            tx: tx.clone(),
            events: events.clone(),
        },
    );
    let task = JobTask {
        ctx: ctx.clone(),
        core,
        tx,
        rx,
        events,
    };
    let span = tracing::info_span!("job", job = %id.short());
    let ctx2 = ctx.clone();
    ctx.tasks.spawn(
        async move {
            task.run().await;
            lock(&ctx2.active).remove(&id);
            let _ = ctx2.finished.send(id);
        }
        .instrument(span),
    );
    Ok(())
}

/// Restarts the task of every unfinished job in the store.
pub(crate) async fn resume_all(ctx: &Arc<Ctx>) {
    let (jobs, bad) = ctx.db.jobs();
    for e in bad {
        warn!(error = %e, "skipping an unreadable job record");
    }
    for mut rec in jobs {
        ctx.metrics.transition(None, rec.state);
        if rec.state.is_final() {
            continue;
        }
        let id = rec.id();
        info!(job = %id.short(), state = rec.state.as_str(), "resuming job");
        rec.push_event(JobEvent {
            at_ms: unix_now_ms(),
            kind: "resumed".into(),
            peer_id: None,
            state: rec.state,
            detail: "the submitting node restarted; the job goes on".into(),
        });
        if let Err(e) = start(ctx, rec) {
            warn!(job = %id.short(), error = %e, "cannot resume job");
        }
    }
}

/// One job's task.
struct JobTask {
    ctx: Arc<Ctx>,
    core: JobCore,
    /// The task's own input queue, for helper tasks to answer on.
    tx: mpsc::Sender<JobInput>,
    rx: mpsc::Receiver<JobInput>,
    events: broadcast::Sender<JobEvent>,
}

impl JobTask {
    async fn run(mut self) {
        self.step(Input::Start).await;
        while !self.core.is_final() {
            let wait = self.core.next_wake_ms().saturating_sub(unix_now_ms());
            let (input, reply) = tokio::select! {
                biased;
                () = self.ctx.cancel.cancelled() => return,
                input = self.rx.recv() => match input {
                    Some(JobInput::Cancel(reply)) => (Input::Cancel, Some(reply)),
                    Some(JobInput::Core(i)) => (i, None),
                    None => return,
                },
                () = tokio::time::sleep(Duration::from_millis(wait)) => (Input::Tick, None),
            };
            self.step(input).await;
            if let Some(reply) = reply {
                // The record is written: the caller may read it now.
                let _ = reply.send(());
            }
        }
    }

    /// Feeds `input` to the core and performs what it asks, including the
    /// inputs that answers (an offer's outcome, a fetched result) bring.
    async fn step(&mut self, input: Input) {
        let mut pending = vec![input];
        while let Some(input) = pending.pop() {
            let actions = self.core.step(input, unix_now_ms(), &NodeWorld(&self.ctx));
            for action in actions {
                if let Some(next) = self.perform(action).await {
                    pending.push(next);
                }
            }
        }
    }

    /// Performs one action; some answer with an input at once.
    async fn perform(&mut self, action: Action) -> Option<Input> {
        match action {
            Action::Offer { bid_deadline_ms } => {
                Some(Input::OfferSent(self.offer(bid_deadline_ms).await))
            }
            Action::Assign {
                peer,
                attempt,
                deadline_ms,
            } => {
                self.assign(peer, attempt, deadline_ms);
                None
            }
            Action::Ping { peer, attempt } => {
                self.ping(peer, attempt);
                None
            }
            Action::Stop { peer, attempt } => {
                self.stop(peer, attempt);
                None
            }
            Action::FetchResult {
                hash,
                sources,
                agreeing,
            } => Some(Input::ResultKept(
                results::keep_result(&self.ctx, hash, &sources, agreeing).await,
            )),
            Action::SignVerdict { verdict, apply } => {
                let signed = self.ctx.key.sign(&verdict);
                if apply {
                    if let Err(e) = reputation::apply_own(
                        &self.ctx.reputation,
                        &self.ctx.reputation_writes,
                        &signed,
                    ) {
                        debug!(error = %e, "own verdict not applied");
                    }
                }
                self.core.keep_verdict(signed);
                None
            }
            Action::GossipVerdict => {
                if let Some(v) = &self.core.record().verdict {
                    if let Err(e) = self.ctx.net.publish(TOPIC_VERDICTS, v.encode()).await {
                        debug!(error = %e, "verdict not gossiped");
                    }
                }
                None
            }
            Action::Persist => {
                // A store failure is logged and the job goes on: a restart
                // resumes from the last good write.
                if let Err(e) = self.ctx.db.put_job(self.core.record()).await {
                    warn!(error = %e, "cannot persist the job record");
                }
                None
            }
            Action::Event(ev) => {
                debug!(kind = %ev.kind, peer = ?ev.peer_id, detail = %ev.detail, "job event");
                if ev.state == JobState::Failed {
                    info!(reason = %ev.detail, "job failed");
                }
                // Nobody may be listening.
                let _ = self.events.send(ev);
                None
            }
            Action::Transition { from, to } => {
                self.ctx.metrics.transition(from, to);
                None
            }
            Action::PlanChosen(plan) => {
                self.ctx
                    .metrics
                    .plans
                    .with_label_values(&[plan.as_str()])
                    .inc();
                None
            }
            Action::VerifiedAfter { ms } => {
                self.ctx.metrics.verify_seconds.observe(ms as f64 / 1000.0);
                None
            }
        }
    }

    /// Signs and gossips an offer.
    async fn offer(&self, bid_deadline_ms: u64) -> Result<(), String> {
        let offer = JobOffer {
            spec: self.core.record().spec.clone(),
            timestamp_ms: unix_now_ms(),
            nonce: rand::random(),
            bid_deadline_ms,
        };
        let signed = self.ctx.key.sign(&offer);
        self.ctx
            .net
            .publish(TOPIC_JOBS, signed.encode())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Sends a signed assignment in the background; the answer comes back
    /// as an input.
    fn assign(&self, peer: PeerId, attempt: u32, deadline_ms: u64) {
        let signed = self.ctx.key.sign(&Assignment {
            spec: self.core.record().spec.clone(),
            executor: peer,
            attempt,
            deadline_ms,
        });
        let (ctx, tx) = (self.ctx.clone(), self.tx.clone());
        self.ctx.tasks.spawn(
            async move {
                let input = match deliver(&ctx, peer, Request::Assign(signed)).await {
                    Ok(Response::Accepted(acceptance)) => Input::Accepted {
                        peer,
                        attempt,
                        acceptance,
                    },
                    // Taken without a signed acceptance: it runs, but can
                    // never be charged with a miss.
                    Ok(_) => return,
                    Err(DeliverError::Refused(r)) => Input::Failed {
                        peer,
                        attempt,
                        error: format!("refused the assignment: {r}"),
                        kind: FailKind::Unable,
                        ran: false,
                    },
                    Err(DeliverError::Network(n)) => Input::Lost {
                        peer,
                        attempt,
                        error: format!("unreachable: {n}"),
                    },
                };
                // The task may have ended meanwhile; then the input no
                // longer matters.
                let _ = tx.send(JobInput::Core(input)).await;
            }
            .in_current_span(),
        );
    }

    /// Pings an executor whose connection closed; reports it lost if it
    /// does not answer.
    fn ping(&self, peer: PeerId, attempt: u32) {
        let (net, tx) = (self.ctx.net.clone(), self.tx.clone());
        self.ctx.tasks.spawn(
            async move {
                tokio::time::sleep(OFFLINE_CHECK_DELAY).await;
                let ping = net.request(
                    peer,
                    Request::Ping {
                        nonce: rand::random(),
                    },
                );
                let alive = matches!(
                    tokio::time::timeout(OFFLINE_CHECK_TIMEOUT, ping).await,
                    Ok(Ok(_))
                );
                if !alive {
                    let lost = Input::Lost {
                        peer,
                        attempt,
                        error: "went offline while assigned".into(),
                    };
                    let _ = tx.send(JobInput::Core(lost)).await;
                }
            }
            .in_current_span(),
        );
    }

    /// Tells an executor to stop; it may be gone, so failures are only
    /// logged (its sandbox then ends at the job's own timeout).
    fn stop(&self, peer: PeerId, attempt: u32) {
        let (ctx, job) = (self.ctx.clone(), self.core.id());
        self.ctx.tasks.spawn(
            async move {
                let request = Request::Cancel { job, attempt };
                if let Err(e) = deliver(&ctx, peer, request).await {
                    debug!(%peer, error = %e, "cancel not delivered");
                }
            }
            .in_current_span(),
        );
    }
}
