//! The node's long-lived ed25519 identity, kept in one file so the PeerId
//! survives restarts.
//!
//! The file holds the 32 raw secret bytes and nothing else, mode 0600. It
//! is created once, atomically (temp file in the same directory, then a
//! rename that refuses to overwrite), so a crash never leaves half a key
//! and two processes starting at once agree on one key. A file of the
//! wrong size or unreadable is an error: replacing it would silently
//! change the node's identity.

use std::io::Write;
use std::path::{Path, PathBuf};

use agora_protocol::NodeKey;
use tracing::info;

/// Name of the key file inside the data directory.
pub const IDENTITY_FILE: &str = "identity.key";
/// Size of the key file: an ed25519 secret key.
pub const KEY_BYTES: usize = 32;

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading, writing or creating the key file (or its directory) failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The key file exists but is not a 32-byte ed25519 secret.
    #[error(
        "identity key file {} is {len} bytes, expected {KEY_BYTES}; it is corrupt or not an \
         agora key (restore it from a backup; deleting it gives the node a new identity)",
        path.display()
    )]
    WrongSize {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
}

/// Loads the key at `path`, or creates a new one there (and any missing
/// parent directories) if no file exists.
pub fn load_or_create(path: &Path) -> Result<NodeKey, IdentityError> {
    match load(path)? {
        Some(key) => Ok(key),
        None => create(path),
    }
}

/// Loads the key at `path`; `None` if there is no such file.
pub fn load(path: &Path) -> Result<Option<NodeKey>, IdentityError> {
    let io = |context, source| IdentityError::Io {
        context,
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading identity key file", e)),
    };
    // Checked before reading, so a huge file at the path is never loaded.
    if meta.len() != KEY_BYTES as u64 {
        return Err(IdentityError::WrongSize {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| io("reading identity key file", e))?;
    let secret: [u8; KEY_BYTES] =
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| IdentityError::WrongSize {
                path: path.to_owned(),
                len: bytes.len() as u64,
            })?;
    Ok(Some(NodeKey::from_secret(secret)))
}

/// Creates a new key at `path`. If another process created one meanwhile,
/// that one is loaded instead, so both end up with the same identity.
fn create(path: &Path) -> Result<NodeKey, IdentityError> {
    let io = |context, p: &Path, source| IdentityError::Io {
        context,
        path: p.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| io("creating directory", &dir, e))?;
    let key = NodeKey::generate();
    // tempfile creates the file with mode 0600 on unix.
    let mut tmp = tempfile::Builder::new()
        .prefix(".identity-")
        .tempfile_in(&dir)
        .map_err(|e| io("creating a temp file in", &dir, e))?;
    tmp.write_all(&key.secret_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io("writing identity key to", tmp.path(), e))?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {
            info!(path = %path.display(), peer = %key.peer_id(), "created a new node identity");
            Ok(key)
        }
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => match load(path)? {
            Some(k) => Ok(k),
            None => Err(io("creating identity key file", path, e.error)),
        },
        Err(e) => Err(io("creating identity key file", path, e.error)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(IDENTITY_FILE);
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), KEY_BYTES);
    }

    #[test]
    fn a_corrupt_key_is_an_error_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        std::fs::write(&path, b"not a key").unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(
            matches!(err, IdentityError::WrongSize { len: 9, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("identity.key"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a key");
    }

    #[test]
    fn an_empty_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(IdentityError::WrongSize { len: 0, .. })
        ));
    }
}
