//! The job and blob routes of the control API: upload and read blobs,
//! submit, list, read, cancel jobs, fetch a verified result and follow a
//! job's progress as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::types::{BlobInfo, JobList, JobState, ReputationList, SubmitJob};
use super::{HttpError, Shared};
use crate::jobs::{Jobs, JobsError};

/// Largest blob upload accepted in one request.
pub const MAX_UPLOAD_BYTES: usize = 1024 * 1024 * 1024;
/// Largest job submission body (a spec is small; this bounds abuse).
pub const MAX_SUBMIT_BYTES: usize = 1024 * 1024;
/// SSE keep-alive comment interval.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The job routes (mounted under `/api/v1`, behind the token).
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/blobs",
            post(upload_blob).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
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

async fn upload_blob(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<(StatusCode, Json<BlobInfo>), HttpError> {
    let store = jobs(&shared)?.blobs().clone();
    let size = body.len() as u64;
    let id = tokio::task::spawn_blocking(move || store.put(&body))
        .await
        .map_err(|e| HttpError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            HttpError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("storing the blob: {e}"),
            )
        })?;
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
