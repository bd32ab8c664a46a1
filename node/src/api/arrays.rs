//! The job array routes of the control API: submit an array, list and
//! read arrays and their items, the reduce result, cancel, retry, and
//! follow an array's item changes as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::jobs::{jobs, KEEPALIVE};
use super::types::{
    ArrayEvent, ArrayInfo, ArrayItemPage, ArrayList, JobResult, RetryArray, SubmitArray,
};
use super::{HttpError, Shared};
use crate::arrays::service::MAX_PAGE;

/// Largest array submission (a `--each` array names one blob per file).
pub const MAX_ARRAY_SUBMIT_BYTES: usize = 32 * 1024 * 1024;

/// The array routes (mounted under `/api/v1`, behind the token).
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/arrays",
            post(submit)
                .layer(DefaultBodyLimit::max(MAX_ARRAY_SUBMIT_BYTES))
                .get(list),
        )
        .route("/arrays/{id}", get(array).delete(cancel))
        .route("/arrays/{id}/items", get(items))
        .route("/arrays/{id}/result", get(result))
        .route("/arrays/{id}/retry", post(retry))
        .route("/arrays/{id}/events", get(events))
}

fn bad_json(e: &JsonRejection) -> HttpError {
    let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    HttpError(status, format!("bad array request: {}", e.body_text()))
}

async fn submit(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<SubmitArray>, JsonRejection>,
) -> Result<(StatusCode, Json<ArrayInfo>), HttpError> {
    let Json(req) = body.map_err(|e| bad_json(&e))?;
    let info = jobs(&shared)?.submit_array(req).await?;
    Ok((StatusCode::ACCEPTED, Json(info)))
}

async fn list(State(shared): State<Arc<Shared>>) -> Result<Json<ArrayList>, HttpError> {
    Ok(Json(ArrayList {
        arrays: jobs(&shared)?.arrays()?,
    }))
}

async fn array(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<ArrayInfo>, HttpError> {
    Ok(Json(jobs(&shared)?.array(&id)?))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    from: u32,
    limit: Option<u32>,
}

async fn items(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<ArrayItemPage>, HttpError> {
    let limit = q.limit.unwrap_or(MAX_PAGE);
    Ok(Json(jobs(&shared)?.array_items(&id, q.from, limit)?))
}

async fn result(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<JobResult>, HttpError> {
    Ok(Json(jobs(&shared)?.array_result(&id)?))
}

async fn cancel(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<ArrayInfo>, HttpError> {
    Ok(Json(jobs(&shared)?.cancel_array(&id).await?))
}

async fn retry(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Result<Json<RetryArray>, JsonRejection>,
) -> Result<Json<ArrayInfo>, HttpError> {
    let Json(req) = body.map_err(|e| bad_json(&e))?;
    Ok(Json(jobs(&shared)?.retry_array(&id, &req.indices).await?))
}

/// The array as it stands (an event without an index), then each change
/// until the array is final.
async fn events(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    let (now, live) = jobs(&shared)?.array_events(&id)?;
    let to_event = |e: &ArrayEvent| {
        Ok::<_, Infallible>(
            Event::default()
                .event("array")
                .data(serde_json::to_string(e).unwrap_or_default()),
        )
    };
    let first = ArrayEvent {
        at_ms: crate::clock::unix_now_ms(),
        index: None,
        item_state: None,
        job: None,
        detail: now
            .reason
            .clone()
            .unwrap_or_else(|| now.state.as_str().into()),
        state: now.state,
        counts: now.counts,
    };
    let live_stream = stream::unfold((live, false), |(rx, done)| async move {
        let mut rx = rx?;
        if done {
            return None;
        }
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let last = ev.state.is_final();
                    return Some((ev, (Some(rx), last)));
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    })
    .map(move |e| to_event(&e));
    Ok(
        Sse::new(stream::iter([to_event(&first)]).chain(live_stream))
            .keep_alive(KeepAlive::new().interval(KEEPALIVE)),
    )
}
