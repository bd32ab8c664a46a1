//! Result bundles and the result hash that executors sign and the quorum
//! compares.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::limits::{self, check, check_u64, Bounded, LimitError};
use crate::{codec, ContentId};

/// What one execution produced. Only `exit_code`, `stdout` and `outputs`
/// are hashed: they are what the program computed. `stderr` and the timing
/// vary between honest machines (paths, warnings, load) and are carried for
/// the user but kept out of the agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultBundle {
    /// The program's exit code.
    pub exit_code: i32,
    /// Everything written to stdout.
    pub stdout: ByteBuf,
    /// Everything written to stderr (not hashed).
    pub stderr: ByteBuf,
    /// Declared output files that exist, by path under `/out`, sorted.
    pub outputs: BTreeMap<String, ByteBuf>,
    /// Wall-clock run time in milliseconds (not hashed).
    pub duration_ms: u64,
}

/// The hashed part of a bundle, in a fixed layout: a CBOR array of exit
/// code, stdout and a map of outputs. The BTreeMap sorts paths.
#[derive(Serialize)]
struct Hashed<'a>(i32, &'a ByteBuf, &'a BTreeMap<String, ByteBuf>);

impl ResultBundle {
    /// sha256 of the canonical encoding of (exit code, stdout, outputs).
    pub fn result_hash(&self) -> ContentId {
        ContentId::of(&codec::encode(&Hashed(
            self.exit_code,
            &self.stdout,
            &self.outputs,
        )))
    }
}

impl Bounded for ResultBundle {
    fn check_bounds(&self) -> Result<(), LimitError> {
        let max = limits::MAX_OUTPUT_BYTES;
        check_u64("bundle.stdout", self.stdout.len() as u64, max)?;
        check_u64("bundle.stderr", self.stderr.len() as u64, max)?;
        check("bundle.outputs", self.outputs.len(), limits::MAX_FILES)?;
        for (path, data) in &self.outputs {
            check("bundle.outputs.path", path.len(), limits::MAX_STRING_BYTES)?;
            check_u64("bundle.outputs.file", data.len() as u64, max)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> ResultBundle {
        let mut outputs = BTreeMap::new();
        outputs.insert("b.txt".into(), ByteBuf::from(b"B".to_vec()));
        outputs.insert("a.txt".into(), ByteBuf::from(b"A".to_vec()));
        ResultBundle {
            exit_code: 0,
            stdout: ByteBuf::from(b"hello\n".to_vec()),
            stderr: ByteBuf::from(b"warn".to_vec()),
            outputs,
            duration_ms: 12,
        }
    }

    #[test]
    fn stderr_and_timing_do_not_change_the_hash() {
        let a = bundle();
        let mut b = bundle();
        b.stderr = ByteBuf::from(b"other noise".to_vec());
        b.duration_ms = 9999;
        assert_eq!(a.result_hash(), b.result_hash());
    }

    #[test]
    fn every_hashed_field_changes_the_hash() {
        let base = bundle().result_hash();
        let mut b = bundle();
        b.exit_code = 1;
        assert_ne!(b.result_hash(), base);
        let mut b = bundle();
        b.stdout.push(b'!');
        assert_ne!(b.result_hash(), base);
        let mut b = bundle();
        b.outputs.insert("c.txt".into(), ByteBuf::new());
        assert_ne!(b.result_hash(), base);
        let mut b = bundle();
        let renamed = b.outputs.remove("a.txt").unwrap();
        b.outputs.insert("a2.txt".into(), renamed);
        assert_ne!(b.result_hash(), base);
    }

    #[test]
    fn hash_is_pinned() {
        // Pins the hashed layout: changing it breaks agreement with every
        // deployed node, so it must be a deliberate protocol version bump.
        assert_eq!(
            bundle().result_hash().to_hex(),
            ContentId::of(&codec::encode(&(
                0i32,
                ByteBuf::from(b"hello\n".to_vec()),
                bundle().outputs
            )))
            .to_hex()
        );
    }
}
