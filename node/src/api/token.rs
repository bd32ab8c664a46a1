//! The control API's bearer token: 32 random bytes as 64 hex characters in
//! `DATA_DIR/api.token` (mode 0600), created once and reused, so a CLI
//! that read it keeps working across daemon restarts. Anyone who can read
//! the file can drive the daemon; file permissions are the access control.

use std::path::{Path, PathBuf};

use rand::RngCore;

use crate::fsutil::{read_bounded, write_atomic, Bounded, Existing, FileError, Written};

/// Name of the token file inside the data directory.
pub const TOKEN_FILE: &str = "api.token";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// Why the token could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// File system failure.
    #[error(transparent)]
    File(#[from] FileError),
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

/// Reads the token at `path`; `None` if there is no such file.
pub fn read_token(path: &Path) -> Result<Option<String>, TokenError> {
    let malformed = || TokenError::Malformed {
        path: path.to_owned(),
    };
    // 64 hex characters plus a newline someone's editor may have added.
    let max = (TOKEN_BYTES * 2 + 2) as u64;
    let bytes = match read_bounded(path, max, "reading API token")? {
        Bounded::Missing => return Ok(None),
        Bounded::TooLarge(_) => return Err(malformed()),
        Bounded::Data(bytes) => bytes,
    };
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    let token = text.trim();
    if token.len() != TOKEN_BYTES * 2 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed());
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
    match write_atomic(path, token.as_bytes(), ".api-token-", 0o600, Existing::Keep)? {
        Written::Written => Ok(token),
        // Someone else made one first: use theirs.
        Written::Kept => read_token(path)?.ok_or_else(|| TokenError::Malformed {
            path: path.to_owned(),
        }),
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
