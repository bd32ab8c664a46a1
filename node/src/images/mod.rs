//! Docker images as blobs, so they travel between nodes like any other
//! blob: content-addressed, hash-checked, resumable, from any peer that
//! has them. No registry is involved.
//!
//! A submitting node exports the pinned image through the engine
//! ([`Images::share`]): its config and each layer become blobs, and an
//! [`ImageManifest`] blob names them; the job's spec names the manifest.
//! An executor that lacks the image ([`Images::ensure`]) fetches the
//! manifest, checks that its config hashes to the pinned id and that its
//! layers are the config's diff ids, fetches the layers it holds neither
//! as blobs nor in its engine (a base layer shared by several images
//! moves once), loads them
//! through the engine and checks that the engine now holds the pinned id,
//! all before anything runs. Beyond `--image-cache`, images are forgotten
//! least recently used first: their blobs become garbage, and those agora
//! loaded leave the engine; an image agora did not load is never removed
//! from the engine.
//!
//! `record.rs` keeps what is known of each image in sled, `tarball.rs`
//! turns `docker save` tars into blobs and back, `metrics.rs` counts.

pub mod metrics;
pub mod record;
pub mod tarball;

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use agora_protocol::image::chain_ids;
use agora_protocol::limits::{MAX_IMAGES, MAX_IMAGE_CONFIG_BYTES, MAX_IMAGE_MANIFEST_BYTES};
use agora_protocol::units::human_bytes;
use agora_protocol::{codec, ContentId, ImageError, ImageManifest, PeerId};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::io::{StreamReader, SyncIoBridge};
use tracing::{info, warn};

use self::metrics::ImageMetrics;
use self::record::{evictions, ImageDb, ImageRecord};
use crate::blobs::{self, BlobStore, FetchError};
use crate::clock::unix_now_ms;
use crate::executor::docker::images::Removed;
use crate::executor::docker::DockerExecutor;
use crate::executor::{ExecError, Executor};
use crate::network::NetworkHandle;

/// How often a fetch reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Bound on exporting an image from the engine.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(600);

/// What an operator decides about images.
#[derive(Debug, Clone)]
pub struct ImagesConfig {
    /// Whether this node fetches images it lacks from peers
    /// (`--no-image-fetch` turns it off).
    pub fetch: bool,
    /// Bytes the images kept here may take, as blobs and (those agora
    /// loaded) in the engine (`--image-cache`).
    pub budget_bytes: u64,
    /// Largest single layer accepted.
    pub max_blob_bytes: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            fetch: true,
            budget_bytes: 8 * 1024 * 1024 * 1024,
            max_blob_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// An image this node can serve to peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedImage {
    /// Image id (`sha256:<hex>`).
    pub id: String,
    /// Its manifest's blob id.
    pub manifest_id: ContentId,
    /// Its config and layers.
    pub manifest: ImageManifest,
    /// Whether agora loaded it into this node's engine.
    pub loaded: bool,
    /// Last use (ms since the epoch).
    pub last_used_ms: u64,
}

/// How fetching one image goes, for progress events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the image held so far.
    pub have: u64,
    /// Bytes of the image in all.
    pub total: u64,
    /// Peers it is fetched from.
    pub providers: u32,
    /// Whether it is loaded into the engine.
    pub loaded: bool,
}

/// Why an image could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum ImageFetchError {
    /// The operator turned image fetching off.
    #[error("docker image {0} is not here and this node does not fetch images (--no-image-fetch)")]
    Disabled(String),
    /// The job names no manifest, so the image cannot be fetched.
    #[error("docker image {0} is not here and the job names no manifest to fetch it by")]
    NoManifest(String),
    /// The manifest blob is not a manifest.
    #[error("image manifest {id}: {why}")]
    BadManifest {
        /// The manifest's blob id.
        id: ContentId,
        /// What is wrong with it.
        why: String,
    },
    /// The manifest describes another image than the pinned one.
    #[error(transparent)]
    Mismatch(#[from] ImageError),
    /// A part could not be fetched from any provider.
    #[error("fetching the image: {0}")]
    Fetch(#[from] FetchError),
    /// The engine failed to export or load.
    #[error("docker: {0}")]
    Engine(#[from] ExecError),
    /// The engine loaded something other than the pinned image (it is
    /// removed again).
    #[error("loading the image gave {loaded:?}, not the pinned {pinned}; removed, nothing ran")]
    LoadedOther {
        /// The pinned id.
        pinned: String,
        /// What the engine said it loaded.
        loaded: Vec<String>,
    },
    /// Exporting or storing the image's parts failed.
    #[error("{0}")]
    Store(String),
    /// The image is larger than this node keeps, or a layer larger than
    /// it accepts.
    #[error("{what} of {} is more than the {} this node accepts ({flag})", human_bytes(*.size), human_bytes(*.limit))]
    TooLarge {
        /// The image or the layer.
        what: &'static str,
        /// Its size as the manifest gives it.
        size: u64,
        /// The limit.
        limit: u64,
        /// The setting that sets the limit.
        flag: &'static str,
    },
    /// The fetch and load took longer than allowed.
    #[error("fetching and loading the image did not finish within {0:?}")]
    Deadline(Duration),
}

impl ImageFetchError {
    /// A stable name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Disabled(_) => "disabled",
            Self::NoManifest(_) => "no_manifest",
            Self::BadManifest { .. } => "bad_manifest",
            Self::Mismatch(_) => "mismatch",
            Self::Fetch(_) => "fetch",
            Self::Engine(_) => "engine",
            Self::LoadedOther { .. } => "loaded_other",
            Self::Store(_) => "store",
            Self::TooLarge { .. } => "too_large",
            Self::Deadline(_) => "deadline",
        }
    }
}

/// This node's images as blobs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Images {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    docker: DockerExecutor,
    blobs: BlobStore,
    db: ImageDb,
    cfg: ImagesConfig,
    metrics: ImageMetrics,
    /// One fetch-and-load at a time: two jobs of one image wait for one
    /// load, and loads do not compete for the disk.
    load_lock: tokio::sync::Mutex<()>,
}

impl Images {
    /// Images over `docker` and `blobs`, remembered in `db`.
    pub fn open(
        docker: DockerExecutor,
        blobs: BlobStore,
        db: &sled::Db,
        cfg: ImagesConfig,
    ) -> Result<Self, ImageFetchError> {
        let db = ImageDb::open(db).map_err(|e| ImageFetchError::Store(e.to_string()))?;
        let metrics = ImageMetrics::new().map_err(|e| ImageFetchError::Store(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                docker,
                blobs,
                db,
                cfg,
                metrics,
                load_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The counters, to register with the node's registry.
    pub fn metrics(&self) -> &ImageMetrics {
        &self.inner.metrics
    }

    /// Whether this node fetches images it lacks.
    pub fn fetches(&self) -> bool {
        self.inner.cfg.fetch
    }

    /// Stores image `id` (`sha256:<hex>`, present in the engine) as
    /// blobs, unless they are stored already, and returns it.
    pub async fn share(&self, id: &str) -> Result<SharedImage, ImageFetchError> {
        if let Some(shared) = self.shared(id) {
            self.touch(id);
            return Ok(shared);
        }
        let i = &self.inner;
        let stream = i
            .docker
            .export_image(id, EXPORT_TIMEOUT)
            .map(|r| r.map_err(io::Error::other));
        let reader = SyncIoBridge::new(StreamReader::new(Box::pin(stream)));
        let blobs = i.blobs.clone();
        let max = i.cfg.max_blob_bytes;
        let m = tokio::task::spawn_blocking(move || tarball::store_saved(reader, &blobs, max))
            .await
            .map_err(|e| ImageFetchError::Store(e.to_string()))?
            .map_err(|e| ImageFetchError::Store(format!("exporting image {id}: {e}")))?;
        m.check_pinned(id)?;
        let config = self.get_blob(&m.config.id)?;
        let diffs = tarball::diff_ids(&config).map_err(ImageFetchError::Store)?;
        m.check_layers(&diffs).map_err(|e| {
            ImageFetchError::Store(format!(
                "image {id}: {e} (the engine exported compressed layers?)"
            ))
        })?;
        let manifest_id = self.put_blob(&codec::encode(&m))?;
        let rec = ImageRecord {
            manifest: manifest_id,
            size: m.total_bytes(),
            loaded: false,
            last_used_ms: unix_now_ms(),
        };
        self.put_record(id, &rec)?;
        info!(image = %id, manifest = %manifest_id.short(), layers = m.layers.len(), bytes = rec.size, "image stored as blobs");
        self.evict(id).await;
        Ok(SharedImage {
            id: id.to_string(),
            manifest_id,
            manifest: m,
            loaded: false,
            last_used_ms: rec.last_used_ms,
        })
    }

    /// Image `id` if this node holds all its blobs.
    pub fn shared(&self, id: &str) -> Option<SharedImage> {
        let rec = self.inner.db.get(id).ok()??;
        self.complete(id, rec)
    }

    /// Every image this node can serve, most recently used first.
    pub fn list(&self) -> Vec<SharedImage> {
        self.inner
            .db
            .list()
            .into_iter()
            .filter_map(|(id, rec)| self.complete(&id, rec))
            .collect()
    }

    /// Every blob the images here are made of, for blob GC to keep.
    pub fn blobs(&self) -> HashSet<ContentId> {
        let mut keep = HashSet::new();
        for (_, rec) in self.inner.db.list() {
            keep.extend(self.parts(&rec.manifest));
        }
        keep
    }

    /// Makes the pinned image `pinned` present in the engine: at once if
    /// it is, else by fetching the parts of `manifest` this node lacks
    /// from `providers` (in order) and loading them, within `within`.
    /// Progress goes to `progress`. Returns whether it fetched anything.
    pub async fn ensure(
        &self,
        pinned: &str,
        manifest: Option<ContentId>,
        providers: &[PeerId],
        net: &NetworkHandle,
        within: Duration,
        progress: &watch::Sender<Progress>,
    ) -> Result<bool, ImageFetchError> {
        let i = &self.inner;
        if i.docker.has_image(pinned).await? {
            self.touch(pinned);
            return Ok(false);
        }
        if !i.cfg.fetch {
            return Err(ImageFetchError::Disabled(pinned.to_string()));
        }
        let manifest = manifest.ok_or_else(|| ImageFetchError::NoManifest(pinned.to_string()))?;
        let end = Instant::now() + within;
        let _one = tokio::time::timeout_at(end, i.load_lock.lock())
            .await
            .map_err(|_| ImageFetchError::Deadline(within))?;
        if i.docker.has_image(pinned).await? {
            self.touch(pinned);
            return Ok(false);
        }
        let work = self.fetch_and_load(pinned, manifest, providers, net, end, progress);
        let r = match tokio::time::timeout_at(end, work).await {
            Ok(r) => r,
            Err(_) => Err(ImageFetchError::Deadline(within)),
        };
        let outcome = r.as_ref().map_or_else(ImageFetchError::kind, |()| "ok");
        i.metrics.loads.with_label_values(&[outcome]).inc();
        r.map(|()| true)
    }

    async fn fetch_and_load(
        &self,
        pinned: &str,
        manifest_id: ContentId,
        providers: &[PeerId],
        net: &NetworkHandle,
        end: Instant,
        progress: &watch::Sender<Progress>,
    ) -> Result<(), ImageFetchError> {
        let i = &self.inner;
        let left = || end.saturating_duration_since(Instant::now());
        let limit = MAX_IMAGE_MANIFEST_BYTES as u64;
        blobs::fetch(&i.blobs, net, manifest_id, providers, limit, left()).await?;
        let bad = |why: String| ImageFetchError::BadManifest {
            id: manifest_id,
            why,
        };
        let bytes = self.get_blob(&manifest_id)?;
        let m: ImageManifest =
            codec::decode(&bytes, MAX_IMAGE_MANIFEST_BYTES).map_err(|e| bad(e.to_string()))?;
        // Before any layer moves: the manifest must describe the pinned
        // image, fit what this node keeps, and its layers must be the ones
        // the config names. Each part is fetched with the manifest's size
        // as its limit, so the manifest bounds what moves.
        m.check_pinned(pinned)?;
        check_size(&m, i.cfg.budget_bytes, i.cfg.max_blob_bytes)?;
        let config_limit = m.config.size.min(MAX_IMAGE_CONFIG_BYTES);
        blobs::fetch(&i.blobs, net, m.config.id, providers, config_limit, left()).await?;
        let config = self.get_blob(&m.config.id)?;
        let diffs = tarball::diff_ids(&config).map_err(bad)?;
        m.check_layers(&diffs)?;
        // Layers the engine holds already (with the same layers under
        // them) need not move: `docker load` skips them.
        let present = match i.docker.layer_chains(MAX_IMAGES).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot list the engine's layers; fetching every layer");
                HashSet::new()
            }
        };
        let in_engine: Vec<bool> = chain_ids(&diffs)
            .iter()
            .map(|c| present.contains(c))
            .collect();

        let total = m.total_bytes();
        let mut have: u64 = m.config.size;
        let count = u32::try_from(providers.len()).unwrap_or(u32::MAX);
        let report = |have: u64, loaded: bool| {
            progress.send_replace(Progress {
                have,
                total,
                providers: count,
                loaded,
            });
        };
        for (layer, &held) in m.layers.iter().zip(&in_engine) {
            if held || i.blobs.has(&layer.id) {
                i.metrics.layers_reused.inc();
            } else {
                let fetch = blobs::fetch(&i.blobs, net, layer.id, providers, layer.size, left());
                tokio::pin!(fetch);
                let mut tick = tokio::time::interval(PROGRESS_EVERY);
                loop {
                    tokio::select! {
                        r = &mut fetch => { r?; break; }
                        _ = tick.tick() => report(have + i.blobs.partial_len(&layer.id), false),
                    }
                }
                i.metrics.bytes_fetched.inc_by(layer.size);
            }
            have = have.saturating_add(layer.size);
            report(have, false);
        }
        i.metrics.bytes_fetched.inc_by(m.config.size);

        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
        let blobs = i.blobs.clone();
        let m2 = m.clone();
        let writer = tokio::task::spawn_blocking(move || {
            tarball::write_loadable(&m2, &in_engine, &blobs, ChannelWriter::new(tx))
        });
        let body = tokio_stream_of(rx);
        let loaded = i.docker.load_image(body, left()).await;
        let written = writer
            .await
            .map_err(|e| ImageFetchError::Store(e.to_string()))?;
        let loaded = loaded?;
        written.map_err(|e| ImageFetchError::Store(format!("reading the image's blobs: {e}")))?;
        if !i.docker.has_image(pinned).await? {
            for other in loaded.iter().filter(|l| *l != pinned) {
                let _ = i.docker.remove_image(other).await;
            }
            return Err(ImageFetchError::LoadedOther {
                pinned: pinned.to_string(),
                loaded,
            });
        }
        report(total, true);
        let rec = ImageRecord {
            manifest: manifest_id,
            size: total,
            loaded: true,
            last_used_ms: unix_now_ms(),
        };
        self.put_record(pinned, &rec)?;
        info!(image = %pinned, bytes = total, layers = m.layers.len(), "image fetched and loaded");
        self.evict(pinned).await;
        // The advert lists the engine's images: say so now, not at the
        // next periodic refresh.
        if let Err(e) = i.docker.refresh().await {
            warn!(error = %e, "cannot list docker images");
        }
        Ok(())
    }

    /// Forgets images beyond the budget, least recently used first, never
    /// `keep`: their blobs become garbage for blob GC, and an image agora
    /// loaded leaves the engine too (unless a container uses it; then it
    /// stays until a later pass).
    async fn evict(&self, keep: &str) {
        let i = &self.inner;
        let all = i.db.list();
        for id in evictions(&all, i.cfg.budget_bytes, keep) {
            let loaded = all.iter().any(|(x, r)| *x == id && r.loaded);
            if loaded {
                match i.docker.remove_image(&id).await {
                    Ok(Removed::Yes | Removed::Absent) => {
                        info!(image = %id, "removed an image agora loaded (over --image-cache)");
                    }
                    Ok(Removed::InUse) => continue,
                    Err(e) => {
                        warn!(image = %id, error = %e, "cannot remove an image agora loaded");
                        continue;
                    }
                }
            }
            i.metrics.evictions.inc();
            let _ = i.db.remove(&id);
        }
    }

    /// The blobs of the image whose manifest is `manifest` (the manifest
    /// included), if it is stored here: what a job naming it needs kept.
    pub fn parts(&self, manifest: &ContentId) -> Vec<ContentId> {
        let mut out = vec![*manifest];
        if let Some(m) = self.manifest(manifest) {
            out.extend(m.blobs().map(|b| b.id));
        }
        out
    }

    fn complete(&self, id: &str, rec: ImageRecord) -> Option<SharedImage> {
        let m = self.manifest(&rec.manifest)?;
        let all_here = m.blobs().all(|b| self.inner.blobs.has(&b.id));
        all_here.then(|| SharedImage {
            id: id.to_string(),
            manifest_id: rec.manifest,
            manifest: m,
            loaded: rec.loaded,
            last_used_ms: rec.last_used_ms,
        })
    }

    fn manifest(&self, id: &ContentId) -> Option<ImageManifest> {
        let bytes = self.inner.blobs.get(id).ok()?;
        codec::decode(&bytes, MAX_IMAGE_MANIFEST_BYTES).ok()
    }

    fn touch(&self, id: &str) {
        if let Ok(Some(mut rec)) = self.inner.db.get(id) {
            rec.last_used_ms = unix_now_ms();
            let _ = self.inner.db.put(id, &rec);
        }
    }

    fn get_blob(&self, id: &ContentId) -> Result<Vec<u8>, ImageFetchError> {
        self.inner
            .blobs
            .get(id)
            .map_err(|e| ImageFetchError::Store(e.to_string()))
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<ContentId, ImageFetchError> {
        self.inner
            .blobs
            .put(bytes)
            .map_err(|e| ImageFetchError::Store(e.to_string()))
    }

    fn put_record(&self, id: &str, rec: &ImageRecord) -> Result<(), ImageFetchError> {
        self.inner
            .db
            .put(id, rec)
            .map_err(|e| ImageFetchError::Store(format!("image store: {e}")))
    }
}

/// Refuses an image larger than `budget` (`--image-cache`) or with a layer
/// larger than `max_blob`, before anything of it moves.
fn check_size(m: &ImageManifest, budget: u64, max_blob: u64) -> Result<(), ImageFetchError> {
    let total = m.total_bytes();
    if total > budget {
        return Err(ImageFetchError::TooLarge {
            what: "the image",
            size: total,
            limit: budget,
            flag: "--image-cache",
        });
    }
    match m.layers.iter().find(|l| l.size > max_blob) {
        Some(l) => Err(ImageFetchError::TooLarge {
            what: "a layer",
            size: l.size,
            limit: max_blob,
            flag: "the blob size limit",
        }),
        None => Ok(()),
    }
}

/// A blocking writer feeding a bounded channel in chunks, so a tar built
/// on a blocking thread streams to the engine without being held whole.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    buf: Vec<u8>,
}

/// Bytes gathered before a chunk is sent.
const CHUNK: usize = 256 * 1024;

impl ChannelWriter {
    fn new(tx: tokio::sync::mpsc::Sender<bytes::Bytes>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the engine stopped reading"))
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The receiving end of a [`ChannelWriter`] as a stream.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
) -> impl futures::Stream<Item = bytes::Bytes> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use agora_protocol::ImageBlob;

    use super::*;

    #[test]
    fn an_image_over_the_cache_or_a_layer_over_the_blob_limit_is_refused_up_front() {
        let blob = |size: u64| ImageBlob {
            id: ContentId::of(&size.to_le_bytes()),
            size,
        };
        let m = ImageManifest {
            config: blob(10),
            layers: vec![blob(100), blob(50)],
        };
        assert!(check_size(&m, 160, 100).is_ok());
        let e = check_size(&m, 159, 100).unwrap_err();
        assert!(e.to_string().contains("--image-cache"), "{e}");
        assert_eq!(e.kind(), "too_large");
        let e = check_size(&m, 1000, 99).unwrap_err();
        assert!(e.to_string().starts_with("a layer of 100 B"), "{e}");
    }
}
