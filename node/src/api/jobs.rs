//! The job and blob routes of the control API: upload and read blobs,
//! submit, list, read, cancel jobs, fetch a verified result and follow a
//! job's progress as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use agora_protocol::units::human_bytes;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::types::{BlobInfo, JobList, JobState, ReputationList, SubmitJob};
use super::{HttpError, Shared};
use crate::blobs::BlobError;
use crate::jobs::{Jobs, JobsError};

/// Largest blob upload accepted in one request.
pub const MAX_UPLOAD_BYTES: usize = 1024 * 1024 * 1024;
/// Largest job submission body (a spec is small; this bounds abuse).
pub const MAX_SUBMIT_BYTES: usize = 1024 * 1024;
/// SSE keep-alive comment interval.
pub(super) const KEEPALIVE: Duration = Duration::from_secs(15);

/// The job routes (mounted under `/api/v1`, behind the token).
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/blobs",
            // The handler streams and bounds the body itself.
            post(upload_blob).layer(DefaultBodyLimit::disable()),
        )
        .route("/blobs/{id}", get(get_blob))
        .route(
            "/jobs",
            post(submit)
                .layer(DefaultBodyLimit::max(MAX_SUBMIT_BYTES))
                .get(list),
        )
        .route("/jobs/{id}", get(job).delete(cancel))
        .route("/jobs/{id}/result", get(result))
        .route("/jobs/{id}/events", get(events))
        .route("/reputation", get(reputation))
        .route("/reputation/{peer}", get(reputation_of))
}

async fn reputation(State(shared): State<Arc<Shared>>) -> Result<Json<ReputationList>, HttpError> {
    Ok(Json(ReputationList {
        peers: jobs(&shared)?.reputation_list(None),
    }))
}

async fn reputation_of(
    State(shared): State<Arc<Shared>>,
    Path(peer): Path<String>,
) -> Result<Json<ReputationList>, HttpError> {
    let peers = jobs(&shared)?.reputation_list(Some(&peer));
    if peers.is_empty() {
        return Err(HttpError(
            StatusCode::NOT_FOUND,
            format!("no reputation record for a peer starting with {peer}"),
        ));
    }
    Ok(Json(ReputationList { peers }))
}

impl From<JobsError> for HttpError {
    fn from(e: JobsError) -> Self {
        let status = match &e {
            JobsError::BadRequest(_) => StatusCode::BAD_REQUEST,
            JobsError::NotFound(_) => StatusCode::NOT_FOUND,
            JobsError::Conflict(_) => StatusCode::CONFLICT,
            JobsError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            JobsError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HttpError(status, e.to_string())
    }
}

/// The job lifecycle, or 503 on a node without one.
pub(super) fn jobs(shared: &Shared) -> Result<&Jobs, HttpError> {
    shared.state.jobs.as_ref().ok_or_else(|| {
        HttpError(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs no job lifecycle".into(),
        )
    })
}

/// Streams the upload into the blob store, hashing on the way, so memory
/// stays bounded whatever the size and number of uploads; a body over
/// [`MAX_UPLOAD_BYTES`] is refused as soon as its declared length (or, if
/// none, the bytes read) says so, with nothing kept.
async fn upload_blob(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<BlobInfo>), HttpError> {
    let store = jobs(&shared)?.blobs().clone();
    let limit = MAX_UPLOAD_BYTES as u64;
    let too_large = |what: String| {
        HttpError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a blob may be at most {} ({limit} bytes); {what}",
                human_bytes(limit)
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|l| *l > limit) {
        return Err(too_large(format!("this upload declares {len} bytes")));
    }
    let stream = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let reader = SyncIoBridge::new(StreamReader::new(stream));
    let stored = tokio::task::spawn_blocking(move || store.put_reader(reader, limit))
        .await
        .map_err(|e| HttpError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (id, size) = match stored {
        Ok(v) => v,
        Err(BlobError::TooLarge { .. }) => {
            return Err(too_large("this upload sent more".into()));
        }
        // The client's body failed midway (it went away, or sent a
        // malformed chunk): nothing was kept.
        Err(BlobError::Source(e)) => {
            return Err(HttpError(
                StatusCode::BAD_REQUEST,
                format!("reading the upload: {e}"),
            ))
        }
        Err(e) => {
            return Err(HttpError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("storing the blob: {e}"),
            ))
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(BlobInfo {
            id: id.to_hex(),
            size,
        }),
    ))
}

async fn get_blob(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let store = jobs(&shared)?.blobs().clone();
    let bytes = tokio::task::spawn_blocking(move || {
        let cid = store
            .resolve(&id)
            .map_err(|e| HttpError(StatusCode::NOT_FOUND, format!("blob {id}: {e}")))?;
        store
            .get(&cid)
            .map_err(|e| HttpError(StatusCode::INTERNAL_SERVER_ERROR, format!("blob {id}: {e}")))
    })
    .await
    .map_err(|e| HttpError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from(bytes),
    )
        .into_response())
}

async fn submit(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<SubmitJob>, JsonRejection>,
) -> Result<(StatusCode, Json<super::types::JobRecord>), HttpError> {
    let Json(req) = body.map_err(|e| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        HttpError(status, format!("bad job request: {}", e.body_text()))
    })?;
    let rec = jobs(&shared)?.submit(req).await?;
    Ok((StatusCode::ACCEPTED, Json(rec)))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<JobList>, HttpError> {
    let state = q
        .state
        .as_deref()
        .map(str::parse::<JobState>)
        .transpose()
        .map_err(|e| HttpError(StatusCode::BAD_REQUEST, e))?;
    Ok(Json(JobList {
        jobs: jobs(&shared)?.list(state)?,
    }))
}

async fn job(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<super::types::JobRecord>, HttpError> {
    Ok(Json(jobs(&shared)?.get(&id)?))
}

async fn result(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<super::types::JobResult>, HttpError> {
    Ok(Json(jobs(&shared)?.result(&id)?))
}

async fn cancel(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<super::types::JobRecord>, HttpError> {
    Ok(Json(jobs(&shared)?.cancel(&id).await?))
}

/// Every past event, then live ones until the job's final event.
async fn events(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    let (past, live) = jobs(&shared)?.events(&id)?;
    let finished = past.last().is_some_and(|e| e.state.is_final());
    let to_event = |e: &super::types::JobEvent| {
        Ok::<_, Infallible>(
            Event::default()
                .event("job")
                .data(serde_json::to_string(e).unwrap_or_default()),
        )
    };
    let past_stream = stream::iter(past.iter().map(to_event).collect::<Vec<_>>());
    // The live channel was subscribed before the record was read, so its
    // first events may repeat the record's last ones: skip those.
    let live_stream = stream::unfold(
        (live.filter(|_| !finished), past, false),
        |(rx, past, done)| async move {
            let mut rx = rx?;
            if done {
                return None;
            }
            loop {
                match rx.recv().await {
                    Ok(ev) if past.contains(&ev) => continue,
                    Ok(ev) => {
                        let last = ev.state.is_final();
                        return Some((ev, (Some(rx), past, last)));
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    )
    .map(move |e| to_event(&e));
    Ok(Sse::new(past_stream.chain(live_stream)).keep_alive(KeepAlive::new().interval(KEEPALIVE)))
}
