//! Routes what arrives from the network to the two sides of the lifecycle:
//! offers (gossip on `agora/jobs/1`) to the worker, bids and reports to the
//! submitting job's task, assignments to the worker, blob requests to the
//! blob store.

use std::sync::{Arc, Mutex};

use agora_protocol::validate::ReplayGuard;
use agora_protocol::{FailKind, PeerId, TOPIC_JOBS};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, warn, Instrument};

use super::checks::{check_offer, read_bid, CheckedOffer};
use super::core::{CheckedReport, Input};
use super::input::JobInput;
use super::link::Answer;
use super::{worker, Ctx};
use crate::blobs;
use crate::clock::unix_now_ms;
use crate::lock;
use crate::network::peeraddrs::subnet_of_peer;
use crate::network::{CheckedValue, GossipMessage, GossipValidator, NetworkEvent, Validation};
use agora_protocol::rpc::{Request, Response, RpcError};

/// Offers remembered for replay detection.
const REPLAY_MEMORY: usize = 65_536;

/// [`handle`] as the in-process [`super::link::LocalHandler`].
pub(crate) fn handle_local(ctx: Arc<Ctx>, peer: PeerId, request: Request) -> Answer {
    // Boxed: handling a local request may deliver again (a report to the
    // local submitter), and the future type must not contain itself.
    Box::pin(async move { handle(&ctx, peer, request).await })
}

/// Answers one request, or `None` if another part of the node answers it
/// (ping, adverts).
pub(crate) async fn handle(ctx: &Arc<Ctx>, peer: PeerId, request: Request) -> Option<Response> {
    Some(match request {
        Request::Ping { .. } | Request::GetAdvert => return None,
        Request::Bid(signed) => match read_bid(&signed, peer) {
            Ok(bid) => {
                let job = bid.job;
                let subnet = subnet_of_peer(&ctx.peer_addrs, &peer);
                to_job(ctx, &job, Input::Bid { peer, bid, subnet })
            }
            Err(e) => Response::Error(RpcError::Invalid(e.to_string())),
        },
        Request::Attest(report) => {
            let report = match CheckedReport::check(report) {
                Ok(r) => r,
                Err(e) => return Some(Response::Error(RpcError::Invalid(e.to_string()))),
            };
            let job = report.attestation.value().job;
            let report = Box::new(report);
            to_job(ctx, &job, Input::Report { peer, report })
        }
        Request::ExecFailed {
            job,
            attempt,
            error,
            kind,
        } => to_job(
            ctx,
            &job,
            Input::Failed {
                peer,
                attempt,
                error,
                kind,
                // An executor that could not start the job (a blob it
                // could not fetch) says nothing about the job itself.
                ran: kind != FailKind::Unable,
            },
        ),
        Request::ImageProgress {
            job,
            attempt,
            have,
            total,
            providers,
            loaded,
        } => to_job(
            ctx,
            &job,
            Input::ImageProgress {
                peer,
                attempt,
                progress: crate::images::Progress {
                    have,
                    total,
                    providers,
                    loaded,
                },
            },
        ),
        Request::Assign(signed) => worker::on_assign(ctx, peer, signed).await,
        Request::Cancel { job, attempt } => worker::on_cancel(ctx, peer, job, attempt).await,
        Request::GetBlob { id, offset, len } => {
            let chunk = blobs::serve_chunk(&ctx.blobs, id, offset, len).await;
            match &ctx.cfg.fault {
                Some(f) => f.tamper_chunk(chunk),
                None => chunk,
            }
        }
    })
}

/// Queues `input` for the task of `job`. A finished job of this node
/// acknowledges (the sender may stop retrying); an unknown one is
/// not found.
fn to_job(ctx: &Ctx, job: &agora_protocol::ContentId, input: Input) -> Response {
    let tx = lock(&ctx.active).get(job).map(|a| a.tx.clone());
    match tx {
        Some(tx) => match tx.try_send(JobInput::Core(input)) {
            Ok(()) => Response::Ack,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => Response::Error(RpcError::Busy),
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Response::Ack,
        },
        None => match ctx.db.job(job) {
            Ok(Some(_)) => Response::Ack,
            Ok(None) => Response::Error(RpcError::NotFound(format!("job {}", job.short()))),
            Err(e) => {
                warn!(error = %e, "job store read failed");
                Response::Error(RpcError::Busy)
            }
        },
    }
}

/// Serves gossip and requests until the node stops.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    let mut events = ctx.net.subscribe();
    loop {
        let ev = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => break,
            ev = events.recv() => ev,
        };
        match ev {
            Ok(NetworkEvent::Gossip(g)) if g.topic == TOPIC_JOBS => {
                match g.checked.as_ref().and_then(|c| c.get::<CheckedOffer>()) {
                    Some(offer) => worker::on_offer(&ctx, offer),
                    // Every offer passes the validator above first.
                    None => debug!("an offer without its checked value: dropped"),
                }
            }
            Ok(NetworkEvent::PeerDisconnected(peer)) => {
                let txs: Vec<_> = lock(&ctx.active).values().map(|a| a.tx.clone()).collect();
                for tx in txs {
                    // A full queue means the job is busy with inputs; the
                    // deadline still catches a dead executor.
                    let _ = tx.try_send(JobInput::Core(Input::PeerGone(peer)));
                }
            }
            Ok(NetworkEvent::InboundRequest { peer, id, request }) => {
                let ctx2 = ctx.clone();
                let span = tracing::debug_span!("request", %peer);
                ctx.tasks.spawn(
                    async move {
                        if let Some(resp) = handle(&ctx2, peer, request).await {
                            if let Err(e) = ctx2.net.respond(id, resp).await {
                                debug!(error = %e, "answer not sent");
                            }
                        }
                    }
                    .instrument(span),
                );
            }
            Ok(_) => {}
            // Lost requests time out at their sender, which retries;
            // lost offers are re-offered by their submitter.
            Err(RecvError::Lagged(n)) => warn!(skipped = n, "job dispatcher lagged"),
            Err(RecvError::Closed) => break,
        }
    }
}

/// The gossip validator of `agora/jobs/1`: [`check_offer`] with a bounded
/// replay memory.
#[derive(Debug)]
pub struct OfferValidator {
    /// Offers seen, by (submitter, nonce).
    guard: Mutex<ReplayGuard>,
}

impl Default for OfferValidator {
    fn default() -> Self {
        Self {
            guard: Mutex::new(ReplayGuard::new(REPLAY_MEMORY)),
        }
    }
}

impl GossipValidator for OfferValidator {
    fn validate(&self, msg: &GossipMessage<'_>) -> Validation {
        let mut guard = lock(&self.guard);
        match check_offer(msg.data, msg.source, unix_now_ms(), &mut guard) {
            // The worker takes the checked offer as it is.
            Ok(offer) => Validation::AcceptChecked(CheckedValue::new(offer)),
            Err(e) => Validation::Reject(e.to_string()),
        }
    }
}
