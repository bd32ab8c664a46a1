//! The node's long-lived ed25519 identity, kept in one file so the PeerId
//! survives restarts.
//!
//! The file holds the 32 raw secret bytes and nothing else, mode 0600. It
//! is created once, atomically (temp file in the same directory, then a
//! rename that refuses to overwrite), so a crash never leaves half a key
//! and two processes starting at once agree on one key. A file of the
//! wrong size or unreadable is an error: replacing it would silently
//! change the node's identity.

use std::path::{Path, PathBuf};

use agora_protocol::NodeKey;
use tracing::info;

use crate::fsutil::{read_bounded, write_atomic, Bounded, Existing, FileError, Written};

/// Name of the key file inside the data directory.
pub const IDENTITY_FILE: &str = "identity.key";
/// Size of the key file: an ed25519 secret key.
pub const KEY_BYTES: usize = 32;

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading, writing or creating the key file (or its directory) failed.
    #[error(transparent)]
    File(#[from] FileError),
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
    let wrong_size = |len| IdentityError::WrongSize {
        path: path.to_owned(),
        len,
    };
    let bytes = match read_bounded(path, KEY_BYTES as u64, "reading identity key file")? {
        Bounded::Missing => return Ok(None),
        Bounded::TooLarge(len) => return Err(wrong_size(len)),
        Bounded::Data(bytes) => bytes,
    };
    let secret: [u8; KEY_BYTES] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| wrong_size(bytes.len() as u64))?;
    Ok(Some(NodeKey::from_secret(secret)))
}

/// Creates a new key at `path`. If another process created one meanwhile,
/// that one is loaded instead, so both end up with the same identity.
fn create(path: &Path) -> Result<NodeKey, IdentityError> {
    let key = NodeKey::generate();
    match write_atomic(
        path,
        &key.secret_bytes(),
        ".identity-",
        0o600,
        Existing::Keep,
    )? {
        Written::Written => {
            info!(path = %path.display(), peer = %key.peer_id(), "created a new node identity");
            Ok(key)
        }
        Written::Kept => match load(path)? {
            Some(k) => Ok(k),
            None => Err(FileError {
                op: "creating identity key file",
                path: path.to_owned(),
                source: std::io::ErrorKind::NotFound.into(),
            }
            .into()),
        },
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
