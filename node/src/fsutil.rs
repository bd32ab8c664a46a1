//! The node's small files (identity key, API token, API address) and its
//! directories: written atomically with a chosen mode, read with a size
//! bound, created with context. One error type, [`FileError`], says which
//! operation on which path failed, so every caller reports it alike.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A file-system operation that failed, with the path it was about.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct FileError {
    /// What was being done, e.g. `reading API token`.
    pub op: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl FileError {
    /// A `map_err` adapter: the error of doing `op` on `path`.
    pub fn at<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FileError + 'a {
        move |source| FileError {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// Whether [`write_atomic`] may replace a file already at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace it (a file rewritten at each start).
    Replace,
    /// Keep it and report [`Written::Kept`] (a file made once, such as a
    /// key, that two processes starting at once must agree on).
    Keep,
}

/// What [`write_atomic`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The new contents are at the path.
    Written,
    /// Another file was there first and was left alone.
    Kept,
}

/// Writes `data` to `path` through a synced temp file in the same
/// directory (named `prefix...`, mode `mode` before any byte is written)
/// and a rename, so a reader or a crash never sees half of it. Creates
/// missing parent directories.
pub fn write_atomic(
    path: &Path,
    data: &[u8],
    prefix: &str,
    mode: u32,
    existing: Existing,
) -> Result<Written, FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    create_dir(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(FileError::at("creating a temp file in", dir))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(FileError::at("writing", path))?;
    let persisted = match existing {
        Existing::Replace => tmp.persist(path),
        Existing::Keep => tmp.persist_noclobber(path),
    };
    match persisted {
        Ok(_) => Ok(Written::Written),
        Err(e) if existing == Existing::Keep && e.error.kind() == io::ErrorKind::AlreadyExists => {
            Ok(Written::Kept)
        }
        Err(e) => Err(FileError::at("creating", path)(e.error)),
    }
}

/// What [`read_bounded`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bounded {
    /// No file at the path.
    Missing,
    /// The file is larger than allowed (its size); nothing was read.
    TooLarge(u64),
    /// The whole file.
    Data(Vec<u8>),
}

/// Reads the file at `path` if it is at most `max` bytes, so a huge file
/// put at the path is never loaded; `op` names the read in errors.
pub fn read_bounded(path: &Path, max: u64, op: &'static str) -> Result<Bounded, FileError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Bounded::Missing),
        Err(e) => return Err(FileError::at(op, path)(e)),
    };
    let len = file.metadata().map_err(FileError::at(op, path))?.len();
    if len > max {
        return Ok(Bounded::TooLarge(len));
    }
    let mut data = Vec::new();
    // The file may grow after the size check: read at most one byte more
    // than allowed to notice, never all of it.
    file.take(max.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(FileError::at(op, path))?;
    if data.len() as u64 > max {
        return Ok(Bounded::TooLarge(data.len() as u64));
    }
    Ok(Bounded::Data(data))
}

/// Creates `dir` and any missing parents.
pub fn create_dir(dir: &Path) -> Result<(), FileError> {
    std::fs::create_dir_all(dir).map_err(FileError::at("creating directory", dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn writes_are_atomic_with_the_mode_and_keep_or_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/f");
        let w = write_atomic(&p, b"one", ".t-", 0o600, Existing::Keep).unwrap();
        assert_eq!(w, Written::Written);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let w = write_atomic(&p, b"two", ".t-", 0o600, Existing::Keep).unwrap();
        assert_eq!(w, Written::Kept);
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        write_atomic(&p, b"three", ".t-", 0o644, Existing::Replace).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        // No temp file is left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }

    #[test]
    fn reads_are_bounded_and_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert_eq!(read_bounded(&p, 4, "reading").unwrap(), Bounded::Missing);
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(
            read_bounded(&p, 4, "reading").unwrap(),
            Bounded::TooLarge(5)
        );
        assert_eq!(
            read_bounded(&p, 5, "reading").unwrap(),
            Bounded::Data(b"12345".to_vec())
        );
        let e = create_dir(&p.join("x")).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("creating directory "), "{text}");
        assert!(text.contains(&p.display().to_string()), "{text}");
    }
}
