//! The image routes of the control API: `POST /api/v1/images` stores a
//! local Docker image as blobs so peers can fetch it (`agora image push`),
//! `GET /api/v1/images` lists the images this node serves (`agora image
//! ls`). Submitting a Docker job stores its image the same way.

use std::sync::Arc;

use agora_protocol::ContentId;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use super::jobs::jobs;
use super::types::{BlobInfo, ImageInfo, ImageList, PushImage};
use super::{HttpError, Shared};
use crate::images::{Images, SharedImage};
use crate::jobs::{Jobs, JobsError};

/// The image routes (mounted under `/api/v1`, behind the token).
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/images", get(list).post(push))
}

async fn list(State(shared): State<Arc<Shared>>) -> Result<Json<ImageList>, HttpError> {
    let images = jobs(&shared)?.image_list()?;
    Ok(Json(ImageList { images }))
}

async fn push(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<PushImage>, JsonRejection>,
) -> Result<(StatusCode, Json<ImageInfo>), HttpError> {
    let Json(req) = body.map_err(|e| HttpError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let info = jobs(&shared)?.push_image(&req.image).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

impl Jobs {
    fn images_here(&self) -> Result<&Images, JobsError> {
        self.images().ok_or_else(|| {
            JobsError::BadRequest("this node runs no docker, so it holds no images".into())
        })
    }

    /// The images this node serves to peers.
    pub fn image_list(&self) -> Result<Vec<ImageInfo>, JobsError> {
        Ok(self.images_here()?.list().iter().map(info).collect())
    }

    /// Stores the local image `image` (name or id) as blobs.
    pub async fn push_image(&self, image: &str) -> Result<ImageInfo, JobsError> {
        let images = self.images_here()?;
        let id = self.resolve_image(image).await?;
        let shared = images
            .share(&id)
            .await
            .map_err(|e| JobsError::BadRequest(format!("image {image}: {e}")))?;
        Ok(info(&shared))
    }

    /// The manifest a Docker job pinning `digest` names, storing the image
    /// as blobs first if this node's engine holds it; `None` when this node
    /// can neither serve nor export it (then only nodes that hold the
    /// image can run the job).
    pub(crate) async fn manifest_for(&self, digest: &str) -> Result<Option<ContentId>, JobsError> {
        let Some(images) = self.ctx.images.as_ref() else {
            return Ok(None);
        };
        if let Some(s) = images.shared(digest) {
            return Ok(Some(s.manifest_id));
        }
        let held = match self.ctx.worker.sandboxes().docker() {
            Some(d) => d.has_image(digest).await.unwrap_or(false),
            None => false,
        };
        if !held {
            return Ok(None);
        }
        images
            .share(digest)
            .await
            .map(|s| Some(s.manifest_id))
            .map_err(|e| JobsError::Internal(format!("image {digest}: storing it for peers: {e}")))
    }
}

fn info(s: &SharedImage) -> ImageInfo {
    ImageInfo {
        id: s.id.clone(),
        manifest: s.manifest_id.to_hex(),
        size: s.manifest.total_bytes(),
        layers: s
            .manifest
            .layers
            .iter()
            .map(|l| BlobInfo {
                id: l.id.to_hex(),
                size: l.size,
            })
            .collect(),
        loaded: s.loaded,
        last_used_ms: s.last_used_ms,
    }
}
