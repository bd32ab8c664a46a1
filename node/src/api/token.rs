//! The control API's bearer token: 32 random bytes as 64 hex characters in
//! `DATA_DIR/api.token` (mode 0600), created once and reused, so a CLI
//! that read it keeps working across daemon restarts. Anyone who can read
//! the file can drive the daemon; file permissions are the access control.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;

/// Name of the token file inside the data directory.
pub const TOKEN_FILE: &str = "api.token";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// Why the token could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// File system failure.
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
    /// The file does not hold a token.
    #[error(
        "{} does not hold an API token (64 hex characters); delete it to have the daemon make a new one",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

fn io(context: &'static str, path: &Path, source: std::io::Error) -> TokenError {
    TokenError::Io {
        context,
        path: path.to_owned(),
        source,
    }
}

/// Reads the token at `path`; `None` if there is no such file.
pub fn read_token(path: &Path) -> Result<Option<String>, TokenError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading API token", path, e)),
    };
    // 64 hex characters plus a newline someone's editor may have added.
    if meta.len() > (TOKEN_BYTES * 2 + 2) as u64 {
        return Err(TokenError::Malformed {
            path: path.to_owned(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| io("reading API token", path, e))?;
    let token = text.trim();
    if token.len() != TOKEN_BYTES * 2 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Malformed {
            path: path.to_owned(),
        });
    }
    Ok(Some(token.to_owned()))
}

/// Reads the token at `path`, creating a random one (atomically, 0600) if
/// there is none.
pub fn load_or_create_token(path: &Path) -> Result<String, TokenError> {
    if let Some(t) = read_token(path)? {
        return Ok(t);
    }
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| io("creating directory", &dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".api-token-")
        .tempfile_in(&dir)
        .map_err(|e| io("creating a temp file in", &dir, e))?;
    tmp.write_all(token.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io("writing API token to", path, e))?;
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(token),
        // Someone else made one first: use theirs.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => read_token(path)?
            .ok_or_else(|| TokenError::Malformed {
                path: path.to_owned(),
            }),
        Err(e) => Err(io("creating API token", path, e.error)),
    }
}

/// Compares a presented token with the real one in time independent of
/// where they differ, so response timing does not leak the token.
pub fn token_matches(presented: &[u8], real: &[u8]) -> bool {
    if presented.len() != real.len() {
        return false;
    }
    presented
        .iter()
        .zip(real)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_token_is_made_once_private_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(TOKEN_FILE);
        let a = load_or_create_token(&p).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(load_or_create_token(&p).unwrap(), a);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_garbled_token_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(TOKEN_FILE);
        std::fs::write(&p, "zz").unwrap();
        assert!(matches!(
            load_or_create_token(&p),
            Err(TokenError::Malformed { .. })
        ));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches(b"abcd", b"abcd"));
        assert!(!token_matches(b"abce", b"abcd"));
        assert!(!token_matches(b"abc", b"abcd"));
        assert!(!token_matches(b"", b"abcd"));
    }
}
