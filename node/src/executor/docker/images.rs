//! The engine's side of moving images between nodes: export an image as a
//! `docker save` tar stream, load one (`docker load`), remove one. What
//! goes into the tar and out of it is `crate::images`' business.

use std::collections::HashSet;
use std::time::Duration;

use agora_protocol::image::chain_ids;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    ImportImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::{api_err, DockerExecutor};
use crate::executor::ExecError;

/// Whether a removal took place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// The image is gone.
    Yes,
    /// It was not there.
    Absent,
    /// A container still uses it (Docker answers 409); it stays.
    InUse,
}

impl DockerExecutor {
    /// Whether the image with id `id` (`sha256:<hex>`) is present.
    pub async fn has_image(&self, id: &str) -> Result<bool, ExecError> {
        Ok(self
            .inspect_image(id)
            .await?
            .is_some_and(|img| img.id == id))
    }

    /// The chain ids of every layer of the engine's images (at most
    /// `max_images` images looked at): the layers `docker load` will not
    /// need to be given.
    pub async fn layer_chains(&self, max_images: usize) -> Result<HashSet<String>, ExecError> {
        let images = self
            .docker
            .list_images(Some(ListImagesOptionsBuilder::new().all(false).build()))
            .await
            .map_err(|e| api_err("list images", e))?;
        let mut chains = HashSet::new();
        for img in images.iter().take(max_images) {
            let inspected = self
                .docker
                .inspect_image(&img.id)
                .await
                .map_err(|e| api_err(&format!("inspect image {}", img.id), e))?;
            let diffs = inspected.root_fs.and_then(|r| r.layers).unwrap_or_default();
            chains.extend(chain_ids(&diffs));
        }
        Ok(chains)
    }

    /// The image `id` as a `docker save` tar stream. Each API call is
    /// bounded by `within` (an export of a large image outlasts the
    /// usual per-call bound).
    pub fn export_image(
        &self,
        id: &str,
        within: Duration,
    ) -> impl Stream<Item = Result<Bytes, ExecError>> + Send + 'static {
        let docker = self.docker.clone().with_timeout(within);
        let context = format!("export image {id}");
        docker
            .export_image(id)
            .map(move |r| r.map_err(|e| api_err(&context, e)))
    }

    /// Loads a `docker save` tar stream into the engine (`docker load`),
    /// waiting for the engine to finish, within `within`. Returns the ids
    /// of the untagged images the engine says it loaded.
    pub async fn load_image(
        &self,
        tar: impl Stream<Item = Bytes> + Send + 'static,
        within: Duration,
    ) -> Result<Vec<String>, ExecError> {
        let docker = self.docker.clone().with_timeout(within);
        let opts = ImportImageOptionsBuilder::new().quiet(true).build();
        let mut answers = docker.import_image_stream(opts, tar, None);
        let mut loaded = Vec::new();
        while let Some(answer) = answers.next().await {
            let info = answer.map_err(|e| api_err("load image", e))?;
            loaded.extend(info.stream.as_deref().and_then(loaded_id));
        }
        Ok(loaded)
    }

    /// Removes image `id` unless a container uses it. Tags pointing at it
    /// go with it (agora loads images untagged).
    pub async fn remove_image(&self, id: &str) -> Result<Removed, ExecError> {
        let opts = RemoveImageOptionsBuilder::new()
            .force(false)
            .noprune(false)
            .build();
        match self.docker.remove_image(id, Some(opts), None).await {
            Ok(_) => Ok(Removed::Yes),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(Removed::Absent),
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(Removed::InUse),
            Err(e) => Err(api_err(&format!("remove image {id}"), e)),
        }
    }
}

/// The image id in a line of `docker load`'s answer
/// (`Loaded image ID: sha256:...`), if the line names one.
fn loaded_id(line: &str) -> Option<String> {
    line.trim()
        .strip_prefix("Loaded image ID: ")
        .map(|id| id.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::loaded_id;

    #[test]
    fn load_answers_name_the_loaded_id() {
        assert_eq!(
            loaded_id("Loaded image ID: sha256:abc\n").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(loaded_id("Loaded image: busybox:latest\n"), None);
    }
}
