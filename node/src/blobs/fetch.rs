//! Fetching a missing blob from peers in chunks, and serving chunks to
//! them ([`Request::GetBlob`] / [`Response::BlobChunk`]).
//!
//! A fetch first asks a provider for the blob's size (a zero-length
//! chunk), then for [`FETCH_CHUNK_BYTES`]-sized chunks in order with
//! [`IN_FLIGHT`] requests outstanding, appending each to the store's
//! partial file, so an interrupted fetch resumes where it stopped, from
//! the same provider or another. At the end the whole blob is checked
//! against its sha256. A provider that fails, lacks the blob, claims a
//! different size or sends bytes that do not hash right is given up for
//! the next one; one that says it is busy or rate-limits us is retried
//! after a pause.
//!
//! **Boundary:** the job engine calls [`fetch`] (worker: modules and
//! inputs; submitter: large result bundles) and answers inbound
//! `GetBlob` requests with [`serve_chunk`].

use std::collections::HashSet;
use std::time::Duration;

use agora_protocol::units::human_bytes;
use agora_protocol::{ContentId, PeerId};
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::store::{BlobError, BlobStore};
use crate::network::{NetworkError, NetworkHandle};
use agora_protocol::limits::MAX_CHUNK_BYTES;
use agora_protocol::rpc::{Request, Response, RpcError};

/// Bytes asked for per request: the largest chunk a peer serves, which
/// also keeps a 256 MiB blob within a few dozen requests of the peer's
/// request rate limit.
pub const FETCH_CHUNK_BYTES: u32 = MAX_CHUNK_BYTES;
/// Chunk requests outstanding per fetch (memory: this many chunks).
pub const IN_FLIGHT: usize = 4;
/// Times one chunk is asked again from a provider that answered busy or
/// rate-limited before it is given up.
const BUSY_RETRIES: u32 = 30;
/// First pause after a busy answer; doubles up to [`BUSY_BACKOFF_MAX`].
const BUSY_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause after a busy answer.
const BUSY_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why a blob could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Every provider failed (or none was given).
    #[error("no provider delivered blob {id}: {}", summary(.tried))]
    NoProvider {
        /// The blob.
        id: ContentId,
        /// Each provider tried and what went wrong with it.
        tried: Vec<(PeerId, String)>,
    },
    /// Every provider said the blob is larger than allowed.
    #[error("blob {id} has {}, more than the {} allowed", human_bytes(*.size), human_bytes(*.limit))]
    TooLarge {
        /// The blob.
        id: ContentId,
        /// Its size as a provider gave it.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The fetch did not finish in time; what arrived is kept for a later
    /// fetch to resume from.
    #[error("fetching blob {id} did not finish within {after:?} ({have} bytes so far)")]
    Deadline {
        /// The blob.
        id: ContentId,
        /// The time allowed.
        after: Duration,
        /// Bytes downloaded so far.
        have: u64,
    },
    /// The local store failed.
    #[error("blob store: {0}")]
    Store(#[from] BlobError),
    /// A blocking store task died.
    #[error("blob store task failed: {0}")]
    Task(String),
}

/// One line per provider for [`FetchError::NoProvider`].
fn summary(tried: &[(PeerId, String)]) -> String {
    if tried.is_empty() {
        return "no providers".into();
    }
    tried
        .iter()
        .map(|(p, e)| format!("{p}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs a store call on the blocking pool.
async fn blocking<T, F>(store: &BlobStore, f: F) -> Result<T, FetchError>
where
    T: Send + 'static,
    F: FnOnce(&BlobStore) -> Result<T, BlobError> + Send + 'static,
{
    let s = store.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| FetchError::Task(e.to_string()))?
        .map_err(FetchError::Store)
}

/// Answers a [`Request::GetBlob`]: [`Response::BlobChunk`], or
/// [`RpcError::NotFound`] for a blob this node lacks, or
/// [`RpcError::Invalid`] for `len` over [`MAX_CHUNK_BYTES`] or an offset
/// past the end. A zero `len` is valid: it asks for the size only.
pub async fn serve_chunk(store: &BlobStore, id: ContentId, offset: u64, len: u32) -> Response {
    if len > MAX_CHUNK_BYTES {
        return Response::Error(RpcError::Invalid(format!(
            "chunk of {len} bytes asked; at most {MAX_CHUNK_BYTES} are served"
        )));
    }
    match blocking(store, move |s| s.read_chunk(&id, offset, len)).await {
        Ok((total, data)) => {
            store.metrics().add_out(data.len());
            Response::BlobChunk {
                total,
                data: data.into(),
            }
        }
        Err(FetchError::Store(BlobError::NotFound(_))) => {
            Response::Error(RpcError::NotFound(format!("blob {id}")))
        }
        Err(FetchError::Store(e @ BlobError::BadRange { .. })) => {
            Response::Error(RpcError::Invalid(e.to_string()))
        }
        Err(e) => {
            // Local trouble (disk); the details are for our log, not the peer.
            warn!(blob = %id.short(), error = %e, "serving a blob chunk failed");
            Response::Error(RpcError::Declined("blob unavailable".into()))
        }
    }
}

/// Makes sure blob `id` is in `store`, fetching missing bytes from
/// `providers` in order (the next one when a provider fails, is missing
/// the blob, or sends bad data), resuming from the partial file, checking
/// the hash at the end, refusing blobs larger than `max_bytes`. Each
/// request is bounded by the network's request timeout; the whole fetch,
/// including waiting for another fetch of the same blob in this process,
/// by `deadline`. This node's own id among the providers is skipped.
pub async fn fetch(
    store: &BlobStore,
    net: &NetworkHandle,
    id: ContentId,
    providers: &[PeerId],
    max_bytes: u64,
    deadline: Duration,
) -> Result<(), FetchError> {
    if store.has(&id) {
        return Ok(());
    }
    let end = Instant::now() + deadline;
    let late = || FetchError::Deadline {
        id,
        after: deadline,
        have: store.partial_len(&id),
    };
    // One fetch per blob at a time: a second one waits, then finds the
    // blob stored (or resumes the partial the first left).
    let lock = store.fetch_lock(&id);
    let _guard = tokio::time::timeout_at(end, lock.lock())
        .await
        .map_err(|_| late())?;
    if store.has(&id) {
        return Ok(());
    }

    let me = net.peer_id();
    let mut seen = HashSet::new();
    let mut tried = Vec::new();
    let mut too_large = None;
    let mut too_large_count = 0;
    for &peer in providers {
        if peer == me || !seen.insert(peer) {
            continue;
        }
        // A restart (see `Outcome::Restart`) gets one more go.
        for attempt in 0..2 {
            match from_peer(store, net, id, peer, max_bytes, end).await? {
                Outcome::Done => {
                    info!(blob = %id.short(), %peer, "blob fetched");
                    return Ok(());
                }
                Outcome::Late { have } => {
                    return Err(FetchError::Deadline {
                        id,
                        after: deadline,
                        have,
                    });
                }
                Outcome::Restart(why) if attempt == 0 => {
                    debug!(blob = %id.short(), %peer, %why, "restarting the download");
                }
                Outcome::Restart(why) | Outcome::Failed(why) => {
                    debug!(blob = %id.short(), %peer, %why, "blob provider failed");
                    tried.push((peer, why));
                    break;
                }
                Outcome::Mismatch(actual) => {
                    warn!(blob = %id.short(), %peer, %actual, "provider sent bytes that do not hash to the blob id");
                    tried.push((peer, format!("sent bytes hashing to {actual}")));
                    break;
                }
                Outcome::TooLarge(size) => {
                    too_large = Some(size);
                    too_large_count += 1;
                    tried.push((
                        peer,
                        format!("blob of {size} bytes exceeds the {max_bytes}-byte limit"),
                    ));
                    break;
                }
            }
        }
    }
    match too_large {
        // Only when every provider agreed; otherwise the others' failures
        // are the more useful story.
        Some(size) if too_large_count == tried.len() => Err(FetchError::TooLarge {
            id,
            size,
            limit: max_bytes,
        }),
        _ => Err(FetchError::NoProvider { id, tried }),
    }
}

/// How one provider's attempt ended (errors that end the whole fetch, all
/// local, are the `Err` of [`from_peer`]).
enum Outcome {
    /// The blob is stored.
    Done,
    /// The provider failed; try the next.
    Failed(String),
    /// The provider says the blob exceeds the limit.
    TooLarge(u64),
    /// All bytes came from this provider alone and do not hash to the id
    /// (the partial is gone). Holds what they hash to.
    Mismatch(ContentId),
    /// Not (necessarily) this provider's fault; start over with it: a
    /// resumed download failed the hash check (the old partial may be
    /// what was wrong; it is gone now), or the partial changed underneath
    /// (the last append of an abandoned fetch landed late).
    Restart(String),
    /// The fetch's deadline passed.
    Late {
        /// Bytes in the partial, kept for a later fetch.
        have: u64,
    },
}

/// What a single chunk request yields, if not a chunk.
enum Ask {
    /// The provider failed; try the next.
    Failed(String),
    /// The fetch's deadline passed.
    Late,
}

/// Asks `peer` for one chunk, retrying while it is busy or rate-limits us.
async fn ask(
    net: &NetworkHandle,
    peer: PeerId,
    id: ContentId,
    offset: u64,
    len: u32,
    end: Instant,
) -> Result<(u64, Vec<u8>), Ask> {
    let mut pause = BUSY_BACKOFF;
    for _ in 0..=BUSY_RETRIES {
        let req = Request::GetBlob { id, offset, len };
        let answer = tokio::time::timeout_at(end, net.request(peer, req))
            .await
            .map_err(|_| Ask::Late)?;
        match answer {
            Ok(Response::BlobChunk { total, data }) => return Ok((total, data.into_vec())),
            Ok(other) => return Err(Ask::Failed(format!("answered GetBlob with {other:?}"))),
            Err(NetworkError::Refused {
                error: RpcError::Busy | RpcError::RateLimited,
                ..
            }) => {
                if Instant::now() + pause >= end {
                    return Err(Ask::Late);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(BUSY_BACKOFF_MAX);
            }
            Err(NetworkError::Refused {
                error: RpcError::NotFound(_),
                ..
            }) => return Err(Ask::Failed("does not have the blob".into())),
            Err(e) => return Err(Ask::Failed(e.to_string())),
        }
    }
    Err(Ask::Failed("stayed busy".into()))
}

/// Downloads what is missing of blob `id` from `peer`.
async fn from_peer(
    store: &BlobStore,
    net: &NetworkHandle,
    id: ContentId,
    peer: PeerId,
    max_bytes: u64,
    end: Instant,
) -> Result<Outcome, FetchError> {
    let total = match ask(net, peer, id, 0, 0, end).await {
        Ok((total, _)) => total,
        Err(Ask::Failed(why)) => return Ok(Outcome::Failed(why)),
        Err(Ask::Late) => {
            return Ok(Outcome::Late {
                have: store.partial_len(&id),
            })
        }
    };
    if total > max_bytes {
        return Ok(Outcome::TooLarge(total));
    }
    if total == 0 {
        // Nothing to download; the empty blob either is `id` or is not.
        let stored = blocking(store, |s| s.put(&[])).await?;
        return Ok(if stored == id {
            Outcome::Done
        } else {
            Outcome::Mismatch(stored)
        });
    }

    let mut have = store.partial_len(&id);
    if have > total {
        // Our partial is longer than the blob: it is garbage (or the
        // provider lies, and the hash check will catch that).
        store.discard_partial(&id);
        have = 0;
    }
    let resumed = have > 0;
    if resumed {
        debug!(blob = %id.short(), %peer, have, total, "resuming a blob download");
    }

    let mut next = have;
    let mut inflight = FuturesOrdered::new();
    loop {
        while inflight.len() < IN_FLIGHT && next < total {
            let len = u32::try_from((total - next).min(u64::from(FETCH_CHUNK_BYTES)))
                .unwrap_or(FETCH_CHUNK_BYTES);
            let offset = next;
            inflight.push_back(
                async move { (offset, len, ask(net, peer, id, offset, len, end).await) },
            );
            next += u64::from(len);
        }
        let Some((offset, len, answer)) = inflight.next().await else {
            break;
        };
        let (chunk_total, data) = match answer {
            Ok(chunk) => chunk,
            Err(Ask::Failed(why)) => return Ok(Outcome::Failed(why)),
            Err(Ask::Late) => return Ok(Outcome::Late { have }),
        };
        if chunk_total != total {
            return Ok(Outcome::Failed(format!(
                "said the blob has {total} bytes, then {chunk_total}"
            )));
        }
        if data.len() != len as usize {
            return Ok(Outcome::Failed(format!(
                "sent {} bytes at offset {offset}, expected {len}",
                data.len()
            )));
        }
        store.metrics().add_in(data.len());
        // No timeout around the append: it is bounded by the disk, and
        // abandoning it would leave it to land after the next fetch of
        // this blob has read the partial's length.
        match blocking(store, move |s| s.append_partial(&id, offset, &data)).await {
            Ok(()) => have = offset + u64::from(len),
            Err(FetchError::Store(e @ BlobError::OutOfOrder { .. })) => {
                return Ok(Outcome::Restart(e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }

    match blocking(store, move |s| s.finish_partial(&id)).await {
        Ok(()) => Ok(Outcome::Done),
        Err(FetchError::Store(BlobError::HashMismatch { actual, .. })) if resumed => Ok(
            Outcome::Restart(format!("resumed download hashes to {actual}")),
        ),
        Err(FetchError::Store(BlobError::HashMismatch { actual, .. })) => {
            Ok(Outcome::Mismatch(actual))
        }
        Err(e) => Err(e),
    }
}
