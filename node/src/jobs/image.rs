//! The worker's image step: before a Docker job runs, make its pinned
//! image present, fetching it from peers if the job names its manifest,
//! and tell the submitter how the fetch goes. The fetch has its own
//! deadline ([`IMAGE_FETCH_MS`]); the job's timeout starts when its
//! container does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_protocol::limits::IMAGE_FETCH_MS;
use agora_protocol::rpc::Request;
use agora_protocol::{ContentId, PeerId, ValidatedSpec};
use tokio::sync::watch;
use tracing::debug;

use super::link::deliver;
use super::record::WorkItem;
use super::Ctx;
use crate::clock::unix_now_ms;
use crate::images::Progress;
use crate::network::adverts::lock_book;

/// Most peers besides the submitter an image is fetched from.
const MAX_PROVIDERS: usize = 8;
/// Least time between two progress reports to the submitter.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Bound on delivering one progress report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes the image `spec` pins present in this node's engine, within the
/// fetch allowance and the assignment's deadline. Nothing to do for jobs
/// that pin no image or on nodes without image support.
pub(crate) async fn ensure(
    ctx: &Arc<Ctx>,
    job: ContentId,
    item: &WorkItem,
    spec: &ValidatedSpec,
) -> Result<(), String> {
    let executor = &spec.spec().executor;
    let (Some(pinned), Some(images)) = (executor.pinned_image(), ctx.images.as_ref()) else {
        return Ok(());
    };
    let left = Duration::from_millis(item.deadline_ms.saturating_sub(unix_now_ms()));
    let within = Duration::from_millis(IMAGE_FETCH_MS).min(left);
    let providers = providers(ctx, pinned, item.submitter);
    let (tx, rx) = watch::channel(Progress::default());
    let fetch = async move {
        let r = images
            .ensure(
                pinned,
                executor.image_manifest(),
                &providers,
                &ctx.net,
                within,
                &tx,
            )
            .await;
        drop(tx);
        r
    };
    let (r, ()) = tokio::join!(fetch, report(ctx, job, item, rx));
    r.map(|_| ()).map_err(|e| e.to_string())
}

/// Who to fetch `image` from: online peers whose adverts say they serve
/// it (spreading the load off the submitter), then the submitter.
fn providers(ctx: &Ctx, image: &str, submitter: PeerId) -> Vec<PeerId> {
    let now = unix_now_ms();
    let book = lock_book(&ctx.book);
    let mut out: Vec<PeerId> = book
        .online(now)
        .into_iter()
        .filter(|p| *p != ctx.me && *p != submitter)
        .filter(|p| {
            book.get(p)
                .is_some_and(|r| r.advert.shared_images.iter().any(|i| i == image))
        })
        .take(MAX_PROVIDERS)
        .collect();
    out.push(submitter);
    out
}

/// Sends the fetch's progress to the submitter until the fetch ends, at
/// most one report per [`REPORT_EVERY`] (a change that comes sooner is
/// skipped, the next one carries it), the final one always. It never
/// waits between reports, so the run starts as soon as the image is
/// loaded. Reports are best effort: a lost one only delays what the user
/// sees.
async fn report(
    ctx: &Arc<Ctx>,
    job: ContentId,
    item: &WorkItem,
    mut rx: watch::Receiver<Progress>,
) {
    let mut last: Option<Instant> = None;
    while rx.changed().await.is_ok() {
        let p = *rx.borrow_and_update();
        if !p.loaded && last.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
            continue;
        }
        last = Some(Instant::now());
        let request = Request::ImageProgress {
            job,
            attempt: item.attempt,
            have: p.have,
            total: p.total,
            providers: p.providers,
            loaded: p.loaded,
        };
        match tokio::time::timeout(REPORT_TIMEOUT, deliver(ctx, item.submitter, request)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => debug!(error = %e, "image progress not delivered"),
            Err(_) => debug!("image progress not delivered in time"),
        }
    }
}
