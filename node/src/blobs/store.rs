//! The content-addressed blob store: each blob is a file named by the hex
//! sha256 of its bytes, indexed in the sled tree [`INDEX_TREE`] with its
//! size and when it was last used.
//!
//! Layout under the store directory: `<hex>` for complete blobs,
//! `partial/<hex>` for downloads in progress (resumable), `tmp/` for
//! writes in progress (emptied at open).
//!
//! **Invariants:** a file at `<hex>` only ever appears by an atomic rename
//! of a synced file whose hash was `<hex>` when it was written; the index
//! is changed only under the store's commit lock, together with the
//! totals. After a crash the index and the files may disagree; [`open`]
//! repairs that: entries without a file are dropped, files without an
//! entry are hashed and indexed (or deleted if the hash is wrong).
//!
//! Everything here is synchronous file and sled I/O: async callers use
//! `spawn_blocking`.
//!
//! Length: about 880 lines before its tests, over the usual 700: the
//! index, the files, partial downloads and GC share one invariant (an
//! indexed blob's file exists and hashes to its id), kept in one place.
//!
//! [`open`]: BlobStore::open

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use crate::clock::{millis, unix_now_ms};
use crate::fsutil::FileError;

use agora_protocol::units::human_bytes;
use agora_protocol::{CidError, ContentId, IdPrefix};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::locks::KeyedLocks;
use super::metrics::BlobMetrics;
use crate::lock;
use agora_protocol::limits::MAX_CHUNK_BYTES;

/// The sled tree holding the index: 32 id bytes to 16 bytes (size, then
/// last-use unix milliseconds, both big-endian u64).
pub const INDEX_TREE: &str = "blobs";
/// Subdirectory of downloads in progress.
pub const PARTIAL_DIR: &str = "partial";
/// Subdirectory of writes in progress.
pub const TMP_DIR: &str = "tmp";
/// A blob used this recently is not collected even when unreferenced:
/// an upload is unreferenced until the job naming it is submitted.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(10 * 60);
/// A partial download untouched this long is stale and collected.
pub const DEFAULT_PARTIAL_MAX_AGE: Duration = Duration::from_secs(60 * 60);
/// Buffer size for streaming reads and writes.
const IO_BUF: usize = 1024 * 1024;

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A file operation failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The sled index failed.
    #[error("blob index: {0}")]
    Db(String),
    /// The reader a blob was being stored from failed (an upload cut
    /// short, an export that broke off); nothing was kept.
    #[error("reading the data to store: {0}")]
    Source(#[source] io::Error),
    /// The store has no such blob (or partial download).
    #[error("no blob {0}")]
    NotFound(ContentId),
    /// The bytes do not hash to the id they were stored or fetched under.
    #[error("blob content hashes to {actual}, expected {expected}")]
    HashMismatch {
        /// The id asked for.
        expected: ContentId,
        /// What the bytes hash to.
        actual: ContentId,
    },
    /// More bytes than allowed.
    #[error("{} exceeds the limit of {}", human_bytes(*.size), human_bytes(*.limit))]
    TooLarge {
        /// Bytes seen (at least; reading stops just past the limit).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A read starts past the end of the blob.
    #[error("offset {offset} is past the end of blob {id} ({size} bytes)")]
    BadRange {
        /// The blob.
        id: ContentId,
        /// The asked offset.
        offset: u64,
        /// The blob's size.
        size: u64,
    },
    /// An append to a partial download does not continue where it ends.
    #[error("append to partial {id} at offset {offset}, but it holds {have} bytes")]
    OutOfOrder {
        /// The blob.
        id: ContentId,
        /// The asked offset.
        offset: u64,
        /// The partial's length.
        have: u64,
    },
    /// A blob id or prefix was malformed, unknown or ambiguous.
    #[error(transparent)]
    Prefix(#[from] CidError),
    /// An index entry could not be decoded.
    #[error("corrupt index entry for key {0}")]
    Decode(String),
    /// The store's metrics could not be created.
    #[error("blob metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl From<sled::Error> for BlobError {
    fn from(e: sled::Error) -> Self {
        Self::Db(e.to_string())
    }
}

/// [`FileError::at`] as a [`BlobError`], for the many direct returns.
fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BlobError + 'a {
    move |source| FileError::at(op, path)(source).into()
}

/// What [`BlobStore::gc`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub removed: usize,
    /// Bytes freed (blobs and stale partial downloads).
    pub freed_bytes: u64,
    /// Stale partial downloads deleted.
    pub partials_removed: usize,
}

/// One index entry: the blob's size and a last-use stamp (unix
/// milliseconds, bumped to stay strictly increasing so LRU order is total).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Bytes.
    size: u64,
    /// Last use.
    last_used: u64,
}

impl Entry {
    /// Fixed encoding: size then stamp, big-endian.
    fn encode(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.size.to_be_bytes());
        out[8..].copy_from_slice(&self.last_used.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let size = bytes.get(..8)?.try_into().ok()?;
        let last_used = bytes.get(8..16)?.try_into().ok()?;
        (bytes.len() == 16).then(|| Self {
            size: u64::from_be_bytes(size),
            last_used: u64::from_be_bytes(last_used),
        })
    }
}

/// An index key back to an id.
fn key_to_id(key: &[u8]) -> Option<ContentId> {
    let digest: [u8; 32] = key.try_into().ok()?;
    Some(ContentId::from_digest(digest))
}

/// Totals of the indexed blobs; its mutex is the commit lock.
#[derive(Debug, Default)]
struct Totals {
    /// Sum of indexed sizes.
    bytes: u64,
    /// Number of indexed blobs.
    count: usize,
}

/// The content-addressed store. Cheap to clone; all clones share one
/// directory, index and set of locks. Thread safe.
#[derive(Debug, Clone)]
pub struct BlobStore {
    /// The shared state.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Complete blobs live here.
    dir: PathBuf,
    /// Partial downloads.
    partial_dir: PathBuf,
    /// Writes in progress.
    tmp_dir: PathBuf,
    /// id -> [`Entry`].
    index: sled::Tree,
    /// gc deletes unreferenced blobs until the total is at most this.
    budget: u64,
    /// Index totals; held while the index and the complete files change.
    totals: Mutex<Totals>,
    /// Last stamp handed out, for strictly increasing last-use stamps.
    clock: AtomicU64,
    /// Names temp files uniquely within this process (the sled lock keeps
    /// other processes out of the store).
    tmp_seq: AtomicU64,
    /// Serialises appends and the final check of one partial download.
    partial_locks: KeyedLocks<Mutex<()>>,
    /// Serialises fetches of one blob (taken by `fetch`).
    fetch_locks: KeyedLocks<tokio::sync::Mutex<()>>,
    /// See [`DEFAULT_GC_GRACE`], in milliseconds.
    gc_grace_ms: AtomicU64,
    /// See [`DEFAULT_PARTIAL_MAX_AGE`], in milliseconds.
    partial_max_age_ms: AtomicU64,
    /// Counters.
    metrics: BlobMetrics,
}

/// Hashes a file, streaming; returns its id and length.
fn hash_file(path: &Path) -> Result<(ContentId, u64), BlobError> {
    let mut f = File::open(path).map_err(io_err("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; IO_BUF];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((ContentId::from_digest(hasher.finalize().into()), len))
}

/// Makes a rename or unlink in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

/// Removes a file; a file already gone is fine.
fn remove_if_present(path: &Path) -> Result<(), BlobError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
        _ => Ok(()),
    }
}

/// The file name as a content id, if it is 64 lowercase hex digits.
fn name_to_id(name: &std::ffi::OsStr) -> Option<ContentId> {
    let s = name.to_str()?;
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    s.parse().ok()
}

impl BlobStore {
    /// Opens (creating) the store: files under `dir`, index in the sled
    /// tree [`INDEX_TREE`] of `db`, `budget_bytes` for [`gc`]. Repairs
    /// what a crash left: writes in progress are deleted, index entries
    /// without a file dropped, files without an entry hashed and indexed
    /// (deleted if the hash is wrong).
    ///
    /// [`gc`]: BlobStore::gc
    pub fn open(dir: &Path, db: &sled::Db, budget_bytes: u64) -> Result<Self, BlobError> {
        let partial_dir = dir.join(PARTIAL_DIR);
        let tmp_dir = dir.join(TMP_DIR);
        for d in [dir, &partial_dir, &tmp_dir] {
            fs::create_dir_all(d).map_err(io_err("creating", d))?;
        }
        let inner = Inner {
            dir: dir.to_owned(),
            partial_dir,
            tmp_dir,
            index: db.open_tree(INDEX_TREE)?,
            budget: budget_bytes,
            totals: Mutex::new(Totals::default()),
            clock: AtomicU64::new(0),
            tmp_seq: AtomicU64::new(0),
            partial_locks: KeyedLocks::default(),
            fetch_locks: KeyedLocks::default(),
            gc_grace_ms: AtomicU64::new(millis(DEFAULT_GC_GRACE)),
            partial_max_age_ms: AtomicU64::new(millis(DEFAULT_PARTIAL_MAX_AGE)),
            metrics: BlobMetrics::new()?,
        };
        let store = Self {
            inner: Arc::new(inner),
        };
        store.repair()?;
        Ok(store)
    }

    /// Brings index and files into agreement and computes the totals.
    fn repair(&self) -> Result<(), BlobError> {
        let inner = &self.inner;
        let mut totals = lock(&inner.totals);

        // Writes that never reached their rename.
        let entries = fs::read_dir(&inner.tmp_dir).map_err(io_err("listing", &inner.tmp_dir))?;
        for e in entries.flatten() {
            remove_if_present(&e.path())?;
        }

        // Index entries must name a file of the recorded size.
        let mut newest = 0u64;
        let mut indexed = HashSet::new();
        for item in inner.index.iter() {
            let (key, value) = item?;
            let entry = Entry::decode(&value);
            let id = key_to_id(&key);
            let (Some(id), Some(entry)) = (id, entry) else {
                warn!(key = %hex::encode(&key), "dropping a corrupt blob index entry");
                inner.index.remove(&key)?;
                continue;
            };
            let on_disk = fs::metadata(self.path(&id)).ok().map(|m| m.len());
            if on_disk != Some(entry.size) {
                // A missing file is dropped; a file of another size gets
                // rehashed below like any unindexed file.
                warn!(blob = %id.short(), ?on_disk, recorded = entry.size, "blob index entry disagrees with its file; dropping it");
                inner.index.remove(&key)?;
                continue;
            }
            newest = newest.max(entry.last_used);
            totals.bytes += entry.size;
            totals.count += 1;
            indexed.insert(id);
        }

        // Files that lost their index entry (crash before the sled flush).
        let now = unix_now_ms();
        let entries = fs::read_dir(&inner.dir).map_err(io_err("listing", &inner.dir))?;
        for e in entries.flatten() {
            let Some(id) = name_to_id(&e.file_name()) else {
                continue;
            };
            if indexed.contains(&id) || !e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                continue;
            }
            let path = e.path();
            let (actual, size) = hash_file(&path)?;
            if actual == id {
                info!(blob = %id.short(), size, "re-indexing a blob found without an index entry");
                let entry = Entry {
                    size,
                    last_used: now,
                };
                inner.index.insert(id.as_bytes(), &entry.encode())?;
                totals.bytes += size;
                totals.count += 1;
                indexed.insert(id);
            } else {
                warn!(blob = %id.short(), %actual, "deleting a blob file whose content does not match its name");
                remove_if_present(&path)?;
            }
        }

        // Partials of blobs that completed before the crash are useless.
        let entries =
            fs::read_dir(&inner.partial_dir).map_err(io_err("listing", &inner.partial_dir))?;
        for e in entries.flatten() {
            match name_to_id(&e.file_name()) {
                Some(id) if !indexed.contains(&id) => {}
                _ => remove_if_present(&e.path())?,
            }
        }

        inner.clock.store(newest.max(now), Ordering::Relaxed);
        inner.metrics.set_stored(totals.bytes);
        debug!(
            blobs = totals.count,
            bytes = totals.bytes,
            "blob store open"
        );
        Ok(())
    }

    /// The file of a complete blob.
    fn path(&self, id: &ContentId) -> PathBuf {
        self.inner.dir.join(id.to_hex())
    }

    /// The file of a partial download.
    fn partial_path(&self, id: &ContentId) -> PathBuf {
        self.inner.partial_dir.join(id.to_hex())
    }

    /// A fresh last-use stamp: now, or just after the last one handed out.
    fn stamp(&self) -> u64 {
        let now = unix_now_ms();
        let prev = self
            .inner
            .clock
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_add(1).max(now))
            })
            .unwrap_or(now);
        prev.saturating_add(1).max(now)
    }

    /// The index entry of `id`.
    fn entry(&self, id: &ContentId) -> Result<Option<Entry>, BlobError> {
        match self.inner.index.get(id.as_bytes())? {
            None => Ok(None),
            Some(v) => Entry::decode(&v)
                .map(Some)
                .ok_or_else(|| BlobError::Decode(id.to_hex())),
        }
    }

    /// The store's counters (register them with [`BlobMetrics::register`]).
    pub fn metrics(&self) -> &BlobMetrics {
        &self.inner.metrics
    }

    /// Registers the store's metrics in `registry` (once per registry).
    pub fn register_metrics(
        &self,
        registry: &prometheus::Registry,
    ) -> Result<(), prometheus::Error> {
        self.inner.metrics.register(registry)
    }

    /// The directory holding the blob files.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The gc budget in bytes.
    pub fn budget_bytes(&self) -> u64 {
        self.inner.budget
    }

    /// Changes how recently used a blob must be to escape gc even when
    /// unreferenced (default [`DEFAULT_GC_GRACE`]).
    pub fn set_gc_grace(&self, grace: Duration) {
        self.inner
            .gc_grace_ms
            .store(millis(grace), Ordering::Relaxed);
    }

    /// Changes how long an untouched partial download is kept (default
    /// [`DEFAULT_PARTIAL_MAX_AGE`]).
    pub fn set_partial_max_age(&self, age: Duration) {
        self.inner
            .partial_max_age_ms
            .store(millis(age), Ordering::Relaxed);
    }

    /// Stores `bytes`; returns their id. Idempotent; atomic (a temp file,
    /// synced, renamed into place).
    pub fn put(&self, bytes: &[u8]) -> Result<ContentId, BlobError> {
        let id = ContentId::of(bytes);
        if self.has(&id) {
            self.touch(&id);
            return Ok(id);
        }
        let (tmp, mut file) = self.temp_file()?;
        let written = file
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_err("writing", &tmp));
        drop(file);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.commit(&id, &tmp, bytes.len() as u64)?;
        Ok(id)
    }

    /// Stores what `r` yields, hashing while writing, so blobs far larger
    /// than memory can be stored; fails with [`BlobError::TooLarge`] past
    /// `max_bytes`. Returns the id and the size.
    pub fn put_reader(
        &self,
        mut r: impl Read,
        max_bytes: u64,
    ) -> Result<(ContentId, u64), BlobError> {
        let (tmp, mut file) = self.temp_file()?;
        let result = (|| {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; IO_BUF];
            let mut size = 0u64;
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(BlobError::Source(e)),
                };
                size += n as u64;
                if size > max_bytes {
                    return Err(BlobError::TooLarge {
                        size,
                        limit: max_bytes,
                    });
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).map_err(io_err("writing", &tmp))?;
            }
            file.sync_all().map_err(io_err("syncing", &tmp))?;
            Ok((ContentId::from_digest(hasher.finalize().into()), size))
        })();
        drop(file);
        match result {
            Ok((id, size)) => {
                self.commit(&id, &tmp, size)?;
                Ok((id, size))
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// A new, empty temp file.
    fn temp_file(&self) -> Result<(PathBuf, File), BlobError> {
        let n = self.inner.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self
            .inner
            .tmp_dir
            .join(format!("{}-{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("creating", &path))?;
        Ok((path, file))
    }

    /// Moves the synced, verified file `src` into place as blob `id` and
    /// indexes it. If the blob is there already, `src` is dropped.
    fn commit(&self, id: &ContentId, src: &Path, size: u64) -> Result<(), BlobError> {
        let dest = self.path(id);
        let mut totals = lock(&self.inner.totals);
        let known = self.entry(id)?;
        if known.is_some() && dest.is_file() {
            drop(totals);
            remove_if_present(src)?;
            self.touch(id);
            return Ok(());
        }
        fs::rename(src, &dest).map_err(io_err("moving a blob into place at", &dest))?;
        sync_dir(&self.inner.dir)?;
        let entry = Entry {
            size,
            last_used: self.stamp(),
        };
        self.inner.index.insert(id.as_bytes(), &entry.encode())?;
        if let Some(old) = known {
            totals.bytes = totals.bytes.saturating_sub(old.size);
        } else {
            totals.count += 1;
        }
        totals.bytes += size;
        self.inner.metrics.set_stored(totals.bytes);
        Ok(())
    }

    /// Forgets blob `id` (index entry and file).
    fn remove_locked(&self, totals: &mut Totals, id: &ContentId) -> Result<Option<u64>, BlobError> {
        let Some(old) = self.inner.index.remove(id.as_bytes())? else {
            return Ok(None);
        };
        let size = Entry::decode(&old).map_or(0, |e| e.size);
        totals.bytes = totals.bytes.saturating_sub(size);
        totals.count = totals.count.saturating_sub(1);
        self.inner.metrics.set_stored(totals.bytes);
        remove_if_present(&self.path(id))?;
        Ok(Some(size))
    }

    /// Forgets blob `id` if its file is gone or wrong, so it can be
    /// fetched or stored again.
    fn forget(&self, id: &ContentId) {
        let mut totals = lock(&self.inner.totals);
        if let Err(e) = self.remove_locked(&mut totals, id) {
            warn!(blob = %id.short(), error = %e, "could not forget a broken blob");
        }
    }

    /// Whether blob `id` is stored complete.
    pub fn has(&self, id: &ContentId) -> bool {
        matches!(self.inner.index.contains_key(id.as_bytes()), Ok(true)) && self.path(id).is_file()
    }

    /// The size of blob `id`, if stored.
    pub fn size(&self, id: &ContentId) -> Option<u64> {
        self.entry(id).ok().flatten().map(|e| e.size)
    }

    /// The whole blob, checked against its id (a blob whose file no longer
    /// matches is forgotten and reported as [`BlobError::HashMismatch`]).
    pub fn get(&self, id: &ContentId) -> Result<Vec<u8>, BlobError> {
        if self.entry(id)?.is_none() {
            return Err(BlobError::NotFound(*id));
        }
        let path = self.path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget(id);
                return Err(BlobError::NotFound(*id));
            }
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        let actual = ContentId::of(&bytes);
        if actual != *id {
            warn!(blob = %id.short(), %actual, "stored blob is corrupt; forgetting it");
            self.forget(id);
            return Err(BlobError::HashMismatch {
                expected: *id,
                actual,
            });
        }
        self.touch(id);
        Ok(bytes)
    }

    /// The blob's file opened for reading, and its size, for readers that
    /// stream a large blob rather than hold it (an image layer handed to
    /// Docker). Not hash-checked here: it was checked when stored, and
    /// whoever consumes it checks what it builds (Docker checks a layer
    /// against the image's diff ids).
    pub fn open_blob(&self, id: &ContentId) -> Result<(File, u64), BlobError> {
        let size = self.entry(id)?.ok_or(BlobError::NotFound(*id))?.size;
        let path = self.path(id);
        match File::open(&path) {
            Ok(f) => {
                self.touch(id);
                Ok((f, size))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget(id);
                Err(BlobError::NotFound(*id))
            }
            Err(e) => Err(io_err("opening", &path)(e)),
        }
    }

    /// Up to `len` bytes of blob `id` from `offset` (fewer at the end) and
    /// the blob's total size. The file is served as it is: it was verified
    /// when stored, and the reader checks the hash anyway. `len` is at most
    /// [`MAX_CHUNK_BYTES`]; `offset` at most the size (at the size, the
    /// data is empty).
    pub fn read_chunk(
        &self,
        id: &ContentId,
        offset: u64,
        len: u32,
    ) -> Result<(u64, Vec<u8>), BlobError> {
        if len > MAX_CHUNK_BYTES {
            return Err(BlobError::TooLarge {
                size: u64::from(len),
                limit: u64::from(MAX_CHUNK_BYTES),
            });
        }
        let size = self.entry(id)?.ok_or(BlobError::NotFound(*id))?.size;
        if offset > size {
            return Err(BlobError::BadRange {
                id: *id,
                offset,
                size,
            });
        }
        let n = u64::from(len).min(size - offset);
        let path = self.path(id);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget(id);
                return Err(BlobError::NotFound(*id));
            }
            Err(e) => return Err(io_err("opening", &path)(e)),
        };
        // n <= MAX_CHUNK_BYTES, so it fits in usize.
        let mut data = vec![0u8; usize::try_from(n).unwrap_or(0)];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut data))
            .map_err(io_err("reading", &path))?;
        if offset == 0 {
            // Once per transfer, not once per chunk.
            self.touch(id);
        }
        Ok((size, data))
    }

    /// The id among the stored blobs that starts with the hex `prefix`.
    /// Fails with [`BlobError::Prefix`] when the prefix is malformed,
    /// matches nothing, or matches several blobs.
    pub fn resolve(&self, prefix: &str) -> Result<ContentId, BlobError> {
        let prefix: IdPrefix = prefix.parse()?;
        // Narrow the scan to the whole bytes of the prefix; the odd last
        // digit is checked by `has_prefix`.
        let digits = prefix.as_str();
        let whole = hex::decode(&digits[..digits.len() / 2 * 2])
            .map_err(|_| CidError::NotHex(digits.to_owned()))?;
        let mut ids = Vec::new();
        for item in self.inner.index.scan_prefix(whole) {
            let (key, _) = item?;
            if let Some(id) = key_to_id(&key).filter(|id| id.has_prefix(&prefix)) {
                ids.push(id);
                if ids.len() > 1 {
                    break;
                }
            }
        }
        Ok(prefix.resolve(ids)?)
    }

    /// Marks blob `id` as just used (gc removes least recently used first).
    /// Unknown ids are ignored.
    pub fn touch(&self, id: &ContentId) {
        let stamp = self.stamp();
        // Only ever rewrites an existing entry: a touch racing with gc must
        // not resurrect an entry whose file is gone.
        let r = self.inner.index.fetch_and_update(id.as_bytes(), |old| {
            let mut e = Entry::decode(old?)?;
            e.last_used = e.last_used.max(stamp);
            Some(e.encode().to_vec())
        });
        if let Err(e) = r {
            warn!(blob = %id.short(), error = %e, "could not update a blob's last use");
        }
    }

    /// Bytes of blob `id` already downloaded (0 if none).
    pub fn partial_len(&self, id: &ContentId) -> u64 {
        let l = self.inner.partial_locks.get(id);
        let _g = lock(&l);
        self.partial_len_locked(id)
    }

    fn partial_len_locked(&self, id: &ContentId) -> u64 {
        fs::metadata(self.partial_path(id)).map_or(0, |m| m.len())
    }

    /// Appends `data` to the partial download of `id`; `offset` must equal
    /// its current length ([`BlobError::OutOfOrder`] otherwise).
    pub fn append_partial(
        &self,
        id: &ContentId,
        offset: u64,
        data: &[u8],
    ) -> Result<(), BlobError> {
        let l = self.inner.partial_locks.get(id);
        let _g = lock(&l);
        let have = self.partial_len_locked(id);
        if offset != have {
            return Err(BlobError::OutOfOrder {
                id: *id,
                offset,
                have,
            });
        }
        let path = self.partial_path(id);
        // Not synced per chunk: a torn tail after a crash fails the final
        // hash check and the download starts over.
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(data))
            .map_err(io_err("appending to", &path))
    }

    /// Completes the partial download of `id`: checks that its bytes hash
    /// to `id`, then moves it into place and indexes it. On a mismatch the
    /// partial is deleted and [`BlobError::HashMismatch`] returned.
    pub fn finish_partial(&self, id: &ContentId) -> Result<(), BlobError> {
        let l = self.inner.partial_locks.get(id);
        let _g = lock(&l);
        let path = self.partial_path(id);
        if !path.is_file() {
            return Err(BlobError::NotFound(*id));
        }
        let (actual, size) = hash_file(&path)?;
        if actual != *id {
            remove_if_present(&path)?;
            return Err(BlobError::HashMismatch {
                expected: *id,
                actual,
            });
        }
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io_err("syncing", &path))?;
        self.commit(id, &path, size)
    }

    /// Deletes the partial download of `id`, if any.
    pub fn discard_partial(&self, id: &ContentId) {
        let l = self.inner.partial_locks.get(id);
        let _g = lock(&l);
        if let Err(e) = remove_if_present(&self.partial_path(id)) {
            warn!(blob = %id.short(), error = %e, "could not delete a partial download");
        }
    }

    /// The lock serialising fetches of blob `id` in this process.
    pub(crate) fn fetch_lock(&self, id: &ContentId) -> Arc<tokio::sync::Mutex<()>> {
        self.inner.fetch_locks.get(id)
    }

    /// Bytes of complete blobs stored.
    pub fn total_bytes(&self) -> u64 {
        lock(&self.inner.totals).bytes
    }

    /// Number of complete blobs stored.
    pub fn count(&self) -> usize {
        lock(&self.inner.totals).count
    }

    /// Deletes blobs not in `keep` (and not used within the gc grace, see
    /// [`BlobStore::set_gc_grace`]), least recently used first, until
    /// [`total_bytes`](BlobStore::total_bytes) is within the budget; also
    /// deletes partial downloads untouched for longer than the partial
    /// max age that no fetch is working on. Returns what it removed.
    pub fn gc(&self, keep: &HashSet<ContentId>) -> Result<GcReport, BlobError> {
        let mut report = GcReport::default();
        let now = unix_now_ms();
        let grace = self.inner.gc_grace_ms.load(Ordering::Relaxed);
        {
            let mut totals = lock(&self.inner.totals);
            if totals.bytes > self.inner.budget {
                let mut candidates = Vec::new();
                for item in self.inner.index.iter() {
                    let (key, value) = item?;
                    let (Some(id), Some(e)) = (key_to_id(&key), Entry::decode(&value)) else {
                        continue;
                    };
                    // Stamps may run a few ms ahead of the clock (they are
                    // made unique), so compare the age, not the sum.
                    if !keep.contains(&id) && now.saturating_sub(e.last_used) >= grace {
                        candidates.push((e.last_used, id));
                    }
                }
                candidates.sort_unstable();
                for (_, id) in candidates {
                    if totals.bytes <= self.inner.budget {
                        break;
                    }
                    if let Some(size) = self.remove_locked(&mut totals, &id)? {
                        debug!(blob = %id.short(), size, "blob collected");
                        report.removed += 1;
                        report.freed_bytes += size;
                    }
                }
                if report.removed > 0 {
                    sync_dir(&self.inner.dir)?;
                }
            }
        }
        self.gc_partials(now, &mut report)?;
        Ok(report)
    }

    /// The stale-partial half of [`BlobStore::gc`].
    fn gc_partials(&self, now: u64, report: &mut GcReport) -> Result<(), BlobError> {
        let max_age = self.inner.partial_max_age_ms.load(Ordering::Relaxed);
        let dir = &self.inner.partial_dir;
        let entries = fs::read_dir(dir).map_err(io_err("listing", dir))?;
        for e in entries.flatten() {
            let Some(id) = name_to_id(&e.file_name()) else {
                continue;
            };
            // Held while deleting, so no fetch starts on this partial
            // meanwhile; a partial a fetch is working on is skipped.
            let fetching = self.inner.fetch_locks.get(&id);
            let Ok(_no_fetch) = fetching.try_lock() else {
                continue;
            };
            let l = self.inner.partial_locks.get(&id);
            let _g = lock(&l);
            let Ok(meta) = e.metadata() else { continue };
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, millis);
            if modified.saturating_add(max_age) <= now {
                remove_if_present(&e.path())?;
                debug!(blob = %id.short(), size = meta.len(), "stale partial download collected");
                report.partials_removed += 1;
                report.freed_bytes += meta.len();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a fresh temp dir, with its db at `<tmp>/db`.
    struct Fixture {
        tmp: tempfile::TempDir,
        db: sled::Db,
        store: BlobStore,
    }

    impl Fixture {
        fn new(budget: u64) -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let db = sled::open(tmp.path().join("db")).unwrap();
            let store = BlobStore::open(&tmp.path().join("blobs"), &db, budget).unwrap();
            Self { tmp, db, store }
        }

        fn blob_dir(&self) -> PathBuf {
            self.tmp.path().join("blobs")
        }

        /// Closes and reopens store and db, as after a restart.
        fn reopen(self) -> Self {
            let Self { tmp, db, store } = self;
            let budget = store.budget_bytes();
            db.flush().unwrap();
            drop(store);
            drop(db);
            let db = sled::open(tmp.path().join("db")).unwrap();
            let store = BlobStore::open(&tmp.path().join("blobs"), &db, budget).unwrap();
            Self { tmp, db, store }
        }
    }

    fn blob(n: u32, size: usize) -> Vec<u8> {
        (0..size)
            .map(|i| (i as u32).wrapping_mul(31).wrapping_add(n) as u8)
            .collect()
    }

    #[test]
    fn put_get_and_idempotence() {
        let f = Fixture::new(u64::MAX);
        let data = blob(1, 5000);
        let id = f.store.put(&data).unwrap();
        assert_eq!(id, ContentId::of(&data));
        assert!(f.store.has(&id));
        assert_eq!(f.store.size(&id), Some(5000));
        assert_eq!(f.store.get(&id).unwrap(), data);
        assert_eq!(f.store.put(&data).unwrap(), id, "same bytes, same id");
        assert_eq!((f.store.count(), f.store.total_bytes()), (1, 5000));
        assert_eq!(f.store.metrics().stored_bytes(), 5000);
        assert!(f.blob_dir().join(id.to_hex()).is_file());
        assert_eq!(
            fs::read_dir(f.blob_dir().join(TMP_DIR)).unwrap().count(),
            0,
            "no temp file left"
        );

        let empty = f.store.put(&[]).unwrap();
        assert_eq!(f.store.get(&empty).unwrap(), Vec::<u8>::new());
        assert_eq!((f.store.count(), f.store.total_bytes()), (2, 5000));

        let unknown = ContentId::of(b"never stored");
        assert!(!f.store.has(&unknown));
        assert_eq!(f.store.size(&unknown), None);
        assert!(matches!(f.store.get(&unknown), Err(BlobError::NotFound(x)) if x == unknown));
    }

    #[test]
    fn put_reader_streams_and_enforces_the_limit() {
        let f = Fixture::new(u64::MAX);
        let data = blob(2, 3 * IO_BUF + 7);
        let (id, size) = f.store.put_reader(&data[..], data.len() as u64).unwrap();
        assert_eq!((id, size), (ContentId::of(&data), data.len() as u64));
        assert_eq!(f.store.get(&id).unwrap(), data);

        let big = blob(3, 2 * IO_BUF);
        let err = f.store.put_reader(&big[..], IO_BUF as u64).unwrap_err();
        assert!(
            matches!(err, BlobError::TooLarge { limit, size } if limit == IO_BUF as u64 && size > limit),
            "{err}"
        );
        assert_eq!(f.store.count(), 1, "nothing stored for the refused upload");
        assert_eq!(fs::read_dir(f.blob_dir().join(TMP_DIR)).unwrap().count(), 0);
    }

    #[test]
    fn concurrent_puts_of_one_blob_count_it_once() {
        let f = Fixture::new(u64::MAX);
        let data = Arc::new(blob(4, 100_000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (s, d) = (f.store.clone(), data.clone());
                std::thread::spawn(move || s.put(&d).unwrap())
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), ContentId::of(&data));
        }
        assert_eq!((f.store.count(), f.store.total_bytes()), (1, 100_000));
    }

    #[test]
    fn resolve_prefixes() {
        let f = Fixture::new(u64::MAX);
        let ids: Vec<ContentId> = (0..300u32)
            .map(|n| f.store.put(&n.to_le_bytes()).unwrap())
            .collect();
        let hex: Vec<String> = ids.iter().map(ContentId::to_hex).collect();

        // Two ids sharing their first three digits or, failing that, two.
        let shared = (2..=3)
            .rev()
            .find_map(|n| {
                let mut seen = std::collections::HashMap::new();
                hex.iter()
                    .find_map(|h| seen.insert(&h[..n], ()).map(|()| h[..n].to_owned()))
            })
            .unwrap();
        match f.store.resolve(&shared) {
            Err(BlobError::Prefix(CidError::Ambiguous { matches, .. })) => assert!(matches >= 2),
            other => panic!("{shared}: {other:?}"),
        }

        for (id, h) in ids.iter().zip(&hex).take(20) {
            assert_eq!(f.store.resolve(h).unwrap(), *id, "full id");
            assert_eq!(f.store.resolve(&h.to_uppercase()).unwrap(), *id, "any case");
            assert_eq!(f.store.resolve(&id.short()).unwrap(), *id, "short form");
        }
        // An odd number of digits works when unique.
        let (id, h) = ids
            .iter()
            .zip(&hex)
            .find(|(_, h)| hex.iter().filter(|o| o.starts_with(&h[..7])).count() == 1)
            .unwrap();
        assert_eq!(f.store.resolve(&h[..7]).unwrap(), *id);

        let unused = (0..4096u32)
            .map(|n| format!("{n:03x}"))
            .find(|p| !hex.iter().any(|h| h.starts_with(p)))
            .unwrap();
        assert!(matches!(
            f.store.resolve(&unused),
            Err(BlobError::Prefix(CidError::NotFound(_)))
        ));
        let absent = ContentId::of(b"absent").to_hex();
        assert!(matches!(
            f.store.resolve(&absent),
            Err(BlobError::Prefix(CidError::NotFound(_)))
        ));
        for bad in ["", "xyz", "12 34", &"a".repeat(65)] {
            assert!(
                matches!(
                    f.store.resolve(bad),
                    Err(BlobError::Prefix(CidError::NotHex(_)))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn read_chunk_at_the_edges() {
        let f = Fixture::new(u64::MAX);
        let data = blob(5, 10);
        let id = f.store.put(&data).unwrap();
        assert_eq!(
            f.store.read_chunk(&id, 0, 4).unwrap(),
            (10, data[..4].to_vec())
        );
        assert_eq!(
            f.store.read_chunk(&id, 8, 4).unwrap(),
            (10, data[8..].to_vec()),
            "short at the end"
        );
        assert_eq!(f.store.read_chunk(&id, 0, 10).unwrap(), (10, data.clone()));
        assert_eq!(
            f.store.read_chunk(&id, 0, 0).unwrap(),
            (10, vec![]),
            "size only"
        );
        assert_eq!(
            f.store.read_chunk(&id, 10, 4).unwrap(),
            (10, vec![]),
            "at the end"
        );
        assert!(matches!(
            f.store.read_chunk(&id, 11, 1),
            Err(BlobError::BadRange {
                offset: 11,
                size: 10,
                ..
            })
        ));
        assert!(matches!(
            f.store.read_chunk(&id, 0, MAX_CHUNK_BYTES + 1),
            Err(BlobError::TooLarge { .. })
        ));
        let unknown = ContentId::of(b"x");
        assert!(matches!(
            f.store.read_chunk(&unknown, 0, 1),
            Err(BlobError::NotFound(_))
        ));

        // A chunk across the 1 MiB boundary of a larger blob.
        let big = blob(6, 3 * IO_BUF);
        let big_id = f.store.put(&big).unwrap();
        let (total, got) = f.store.read_chunk(&big_id, IO_BUF as u64 - 5, 10).unwrap();
        assert_eq!(total, big.len() as u64);
        assert_eq!(got, big[IO_BUF - 5..IO_BUF + 5]);
    }

    #[test]
    fn partial_download_resumes_and_completes() {
        let f = Fixture::new(u64::MAX);
        let data = blob(7, 10_000);
        let id = ContentId::of(&data);
        assert_eq!(f.store.partial_len(&id), 0);
        assert!(matches!(
            f.store.finish_partial(&id),
            Err(BlobError::NotFound(_))
        ));

        f.store.append_partial(&id, 0, &data[..4000]).unwrap();
        assert_eq!(f.store.partial_len(&id), 4000);
        assert!(matches!(
            f.store.append_partial(&id, 3000, &data[3000..5000]),
            Err(BlobError::OutOfOrder {
                offset: 3000,
                have: 4000,
                ..
            })
        ));
        assert_eq!(
            f.store.partial_len(&id),
            4000,
            "refused append wrote nothing"
        );
        assert!(!f.store.has(&id), "not complete yet");

        f.store.append_partial(&id, 4000, &data[4000..]).unwrap();
        f.store.finish_partial(&id).unwrap();
        assert!(f.store.has(&id));
        assert_eq!(f.store.get(&id).unwrap(), data);
        assert_eq!(f.store.partial_len(&id), 0, "partial moved into place");
        assert_eq!(f.store.total_bytes(), 10_000);
    }

    #[test]
    fn partial_with_wrong_bytes_is_discarded() {
        let f = Fixture::new(u64::MAX);
        let data = blob(8, 1000);
        let id = ContentId::of(&data);
        let mut wrong = data.clone();
        wrong[500] ^= 1;
        f.store.append_partial(&id, 0, &wrong).unwrap();
        match f.store.finish_partial(&id) {
            Err(BlobError::HashMismatch { expected, actual }) => {
                assert_eq!((expected, actual), (id, ContentId::of(&wrong)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.store.partial_len(&id), 0, "bad partial deleted");
        assert!(!f.store.has(&id));
        assert_eq!(f.store.count(), 0);

        f.store.append_partial(&id, 0, &data[..10]).unwrap();
        f.store.discard_partial(&id);
        assert_eq!(f.store.partial_len(&id), 0);
        f.store.discard_partial(&id); // nothing there: fine
    }

    #[test]
    fn get_detects_and_forgets_a_corrupted_file() {
        let f = Fixture::new(u64::MAX);
        let data = blob(9, 64);
        let id = f.store.put(&data).unwrap();
        fs::write(f.blob_dir().join(id.to_hex()), blob(10, 64)).unwrap();
        assert!(matches!(
            f.store.get(&id),
            Err(BlobError::HashMismatch { .. })
        ));
        assert!(!f.store.has(&id), "forgotten so it can be stored again");
        assert_eq!((f.store.count(), f.store.total_bytes()), (0, 0));
        assert_eq!(f.store.put(&data).unwrap(), id);
        assert_eq!(f.store.get(&id).unwrap(), data);
    }

    #[test]
    fn gc_removes_unreferenced_least_recently_used_first() {
        let f = Fixture::new(200);
        f.store.set_gc_grace(Duration::ZERO);
        let ids: Vec<ContentId> = (0..4)
            .map(|n| f.store.put(&blob(n, 100)).unwrap())
            .collect();
        let [a, b, c, d] = ids[..] else {
            unreachable!()
        };
        f.store.touch(&a); // LRU order now: b, c, d, a
        assert_eq!(f.store.total_bytes(), 400);

        let keep = HashSet::from([b]);
        let report = f.store.gc(&keep).unwrap();
        assert_eq!((report.removed, report.freed_bytes), (2, 200));
        assert!(
            f.store.has(&a) && f.store.has(&b),
            "recently used and kept survive"
        );
        assert!(!f.store.has(&c) && !f.store.has(&d));
        assert!(!f.blob_dir().join(c.to_hex()).exists(), "file deleted");
        assert_eq!((f.store.count(), f.store.total_bytes()), (2, 200));
        assert_eq!(f.store.metrics().stored_bytes(), 200);

        assert_eq!(
            f.store.gc(&keep).unwrap(),
            GcReport::default(),
            "within budget"
        );
        assert!(matches!(f.store.get(&c), Err(BlobError::NotFound(_))));
    }

    #[test]
    fn gc_keeps_referenced_and_recent_blobs_even_over_budget() {
        let f = Fixture::new(0);
        let ids: HashSet<ContentId> = (0..3).map(|n| f.store.put(&blob(n, 50)).unwrap()).collect();
        // Default grace: just-stored blobs are safe (an upload waits for its job).
        assert_eq!(f.store.gc(&HashSet::new()).unwrap().removed, 0);
        f.store.set_gc_grace(Duration::ZERO);
        assert_eq!(f.store.gc(&ids).unwrap().removed, 0, "all referenced");
        assert_eq!(f.store.count(), 3);
        let report = f.store.gc(&HashSet::new()).unwrap();
        assert_eq!((report.removed, report.freed_bytes), (3, 150));
        assert_eq!((f.store.count(), f.store.total_bytes()), (0, 0));
    }

    #[test]
    fn gc_removes_stale_partials_not_being_fetched() {
        let f = Fixture::new(u64::MAX);
        let (x, y) = (ContentId::of(b"x"), ContentId::of(b"y"));
        f.store.append_partial(&x, 0, b"partial x").unwrap();
        f.store.append_partial(&y, 0, b"partial y").unwrap();
        assert_eq!(
            f.store.gc(&HashSet::new()).unwrap(),
            GcReport::default(),
            "fresh"
        );

        f.store.set_partial_max_age(Duration::ZERO);
        let fetching = f.store.fetch_lock(&y);
        let _held = fetching.try_lock().unwrap();
        let report = f.store.gc(&HashSet::new()).unwrap();
        assert_eq!(
            (report.partials_removed, report.freed_bytes, report.removed),
            (1, 9, 0)
        );
        assert_eq!(f.store.partial_len(&x), 0);
        assert_eq!(f.store.partial_len(&y), 9, "a fetch is working on it");
    }

    #[test]
    fn reopen_keeps_the_index_and_lru_order() {
        let f = Fixture::new(100);
        f.store.set_gc_grace(Duration::ZERO);
        let old = f.store.put(&blob(1, 100)).unwrap();
        let new = f.store.put(&blob(2, 100)).unwrap();
        let partial = ContentId::of(&blob(3, 100));
        f.store
            .append_partial(&partial, 0, &blob(3, 100)[..40])
            .unwrap();

        let f = f.reopen();
        f.store.set_gc_grace(Duration::ZERO);
        assert_eq!((f.store.count(), f.store.total_bytes()), (2, 200));
        assert_eq!(f.store.get(&old).unwrap(), blob(1, 100));
        assert_eq!(f.store.partial_len(&partial), 40, "download can resume");
        // `get` touched `old`, so `new` is now least recently used.
        let report = f.store.gc(&HashSet::new()).unwrap();
        assert_eq!(report.removed, 1);
        assert!(f.store.has(&old) && !f.store.has(&new));
    }

    #[test]
    fn open_repairs_crash_leftovers() {
        let f = Fixture::new(u64::MAX);
        let unindexed = f.store.put(&blob(1, 300)).unwrap();
        let fileless = f.store.put(&blob(2, 200)).unwrap();
        let resized = f.store.put(&blob(3, 100)).unwrap();
        let done_partial = f.store.put(&blob(4, 50)).unwrap();
        let dir = f.blob_dir();
        let tree = f.db.open_tree(INDEX_TREE).unwrap();

        // A crash before the index entry reached disk.
        tree.remove(unindexed.as_bytes()).unwrap();
        // An entry whose file is gone.
        fs::remove_file(dir.join(fileless.to_hex())).unwrap();
        // An entry whose size disagrees (file replaced by other bytes).
        fs::write(dir.join(resized.to_hex()), blob(3, 99)).unwrap();
        // A file whose bytes do not match its name.
        let liar = ContentId::of(b"liar");
        fs::write(dir.join(liar.to_hex()), b"not the liar bytes").unwrap();
        // A corrupt entry, a write that never got renamed, a partial of a
        // blob that completed, and a file that is none of ours.
        tree.insert([1u8; 5], &[0u8; 3]).unwrap();
        fs::write(dir.join(TMP_DIR).join("123-0"), b"half written").unwrap();
        fs::write(dir.join(PARTIAL_DIR).join(done_partial.to_hex()), b"xx").unwrap();
        fs::write(dir.join("README"), b"hands off").unwrap();
        drop(tree); // it holds the db open

        let f = f.reopen();
        assert!(f.store.has(&unindexed), "file without entry re-indexed");
        assert_eq!(f.store.get(&unindexed).unwrap(), blob(1, 300));
        assert!(!f.store.has(&fileless), "entry without file dropped");
        assert!(!f.store.has(&resized), "entry with wrong size dropped");
        assert!(
            !dir.join(resized.to_hex()).exists(),
            "and its wrong file deleted"
        );
        assert!(!f.store.has(&liar) && !dir.join(liar.to_hex()).exists());
        assert!(f.store.has(&done_partial));
        assert_eq!(
            f.store.partial_len(&done_partial),
            0,
            "useless partial removed"
        );
        assert_eq!(fs::read_dir(dir.join(TMP_DIR)).unwrap().count(), 0);
        assert!(dir.join("README").exists(), "unknown files left alone");
        assert_eq!(f.db.open_tree(INDEX_TREE).unwrap().len(), 2);
        assert_eq!((f.store.count(), f.store.total_bytes()), (2, 350));
    }

    #[test]
    fn touch_never_resurrects_a_removed_entry() {
        let f = Fixture::new(0);
        f.store.set_gc_grace(Duration::ZERO);
        let id = f.store.put(b"gone soon").unwrap();
        f.store.gc(&HashSet::new()).unwrap();
        f.store.touch(&id);
        assert_eq!(f.store.size(&id), None);
        assert_eq!(f.db.open_tree(INDEX_TREE).unwrap().len(), 0);
    }

    #[test]
    fn index_entries_round_trip() {
        let e = Entry {
            size: 1 << 40,
            last_used: 1_700_000_000_123,
        };
        assert_eq!(Entry::decode(&e.encode()), Some(e));
        assert_eq!(Entry::decode(&e.encode()[..15]), None);
        assert_eq!(Entry::decode(&[0u8; 17]), None);
    }
}
