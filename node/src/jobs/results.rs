//! Fetching and keeping a verified job's result: the agreed bundle comes
//! from one of the executors that attested it (inline with its report,
//! or as a blob fetched in hash-checked chunks), and its parts are kept
//! as blobs of this node.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_protocol::limits::MAX_OUTPUT_BYTES;
use agora_protocol::rpc::BundleRef;
use agora_protocol::{codec, ContentId, PeerId, ResultBundle};

use super::core::short_peer;
use super::record::{StoredBlob, StoredResult};
use super::Ctx;
use crate::blobs;

/// Largest result bundle fetched from an executor.
const MAX_BUNDLE_BYTES: u64 = 4 * MAX_OUTPUT_BYTES;
/// How long fetching one bundle may take.
const BUNDLE_FETCH: Duration = Duration::from_secs(120);

/// Gets the bundle of `hash` from an agreeing executor and keeps its
/// parts as blobs of this node.
pub(crate) async fn keep_result(
    ctx: &Ctx,
    hash: ContentId,
    sources: &[(PeerId, BundleRef)],
    agreeing: Vec<PeerId>,
) -> Result<StoredResult, Vec<String>> {
    let mut errors = Vec::new();
    for (peer, bundle) in sources {
        match bundle_of(ctx, *peer, bundle).await {
            Ok(b) if b.result_hash() == hash => {
                return store_result(ctx, hash, b, agreeing)
                    .await
                    .map_err(|e| vec![e]);
            }
            Ok(_) => errors.push(format!("{}: bundle does not match", short_peer(peer))),
            Err(e) => errors.push(format!("{}: {e}", short_peer(peer))),
        }
    }
    Err(errors)
}

async fn bundle_of(ctx: &Ctx, peer: PeerId, bundle: &BundleRef) -> Result<ResultBundle, String> {
    let (id, size) = match bundle {
        BundleRef::Inline(b) => return Ok(b.clone()),
        BundleRef::Blob { id, size } => (*id, *size),
    };
    if size > MAX_BUNDLE_BYTES {
        return Err(format!("bundle of {size} bytes is too large"));
    }
    blobs::fetch(
        &ctx.blobs,
        &ctx.net,
        id,
        &[peer],
        MAX_BUNDLE_BYTES,
        BUNDLE_FETCH,
    )
    .await
    .map_err(|e| e.to_string())?;
    let store = ctx.blobs.clone();
    let bytes = tokio::task::spawn_blocking(move || store.get(&id))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let limit = usize::try_from(MAX_BUNDLE_BYTES).unwrap_or(usize::MAX);
    codec::decode::<ResultBundle>(&bytes, limit).map_err(|e| format!("bundle does not decode: {e}"))
}

/// Keeps the parts of an agreed bundle as blobs of this node.
async fn store_result(
    ctx: &Ctx,
    hash: ContentId,
    bundle: ResultBundle,
    agreeing: Vec<PeerId>,
) -> Result<StoredResult, String> {
    let store = ctx.blobs.clone();
    tokio::task::spawn_blocking(move || {
        let put = |bytes: &[u8]| -> Result<StoredBlob, String> {
            let id = store.put(bytes).map_err(|e| e.to_string())?;
            Ok(StoredBlob {
                id,
                size: bytes.len() as u64,
            })
        };
        let mut outputs = BTreeMap::new();
        for (name, data) in &bundle.outputs {
            outputs.insert(name.clone(), put(data)?);
        }
        Ok(StoredResult {
            result_hash: hash,
            exit_code: bundle.exit_code,
            stdout: put(&bundle.stdout)?,
            stderr: put(&bundle.stderr)?,
            outputs,
            agreeing,
        })
    })
    .await
    .map_err(|e| e.to_string())?
}
