//! Blob garbage collection: every blob a job record, an unfinished
//! assignment or an image this node serves references is kept; the rest go, least recently used first,
//! once the store is over its budget.

use std::collections::HashSet;
use std::time::Duration;

use agora_protocol::ContentId;
use tracing::{debug, info, warn};

use super::record::{JobRecordDb, WorkState};
use super::Jobs;
use agora_protocol::rpc::BundleRef;

/// Every blob referenced by the records in the store.
pub(crate) fn referenced(jobs: &Jobs) -> HashSet<ContentId> {
    let ctx = &jobs.ctx;
    let mut keep = HashSet::new();
    let (records, _) = ctx.db.jobs();
    for rec in &records {
        add_job(rec, &mut keep);
    }
    let (items, _) = ctx.db.work_items();
    for (_, item) in items {
        if matches!(item.state, WorkState::Delivered) {
            continue;
        }
        if let Ok(spec) = item.spec.verify() {
            keep.extend(spec.value.blobs());
        }
        if let WorkState::Done(report) = &item.state {
            if let BundleRef::Blob { id, .. } = report.bundle {
                keep.insert(id);
            }
        }
    }
    if let Some(images) = &ctx.images {
        // A job under way that names an image manifest needs the layers
        // too, for the executors still fetching them.
        let manifests: Vec<ContentId> = records
            .iter()
            .filter(|r| !r.state.is_final())
            .filter_map(|r| r.spec.verify().ok())
            .filter_map(|s| s.value.executor.image_manifest())
            .collect();
        for m in manifests {
            keep.extend(images.parts(&m));
        }
        keep.extend(images.blobs());
    }
    keep
}

fn add_job(rec: &JobRecordDb, keep: &mut HashSet<ContentId>) {
    if let Ok(spec) = rec.spec.verify() {
        keep.extend(spec.value.blobs());
    }
    if let Some(r) = &rec.result {
        keep.insert(r.stdout.id);
        keep.insert(r.stderr.id);
        keep.extend(r.outputs.values().map(|b| b.id));
    }
    for e in &rec.executors {
        if let Some(BundleRef::Blob { id, .. }) = e.report.as_ref().map(|r| &r.bundle) {
            keep.insert(*id);
        }
    }
}

/// Collects garbage every `interval` until the node stops.
pub async fn run(jobs: Jobs, interval: Duration) {
    let cancel = jobs.ctx.cancel.clone();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let j = jobs.clone();
        let r = tokio::task::spawn_blocking(move || {
            let keep = referenced(&j);
            j.ctx.blobs.gc(&keep)
        })
        .await;
        match r {
            Ok(Ok(report)) if report.removed > 0 => {
                info!(
                    removed = report.removed,
                    freed = report.freed_bytes,
                    "blob gc"
                );
            }
            Ok(Ok(_)) => debug!("blob gc: nothing to remove"),
            Ok(Err(e)) => warn!(error = %e, "blob gc failed"),
            Err(e) => warn!(error = %e, "blob gc task failed"),
        }
    }
}
