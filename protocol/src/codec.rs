//! The canonical CBOR codec. Every byte that crosses the wire or is hashed
//! goes through [`encode`] and [`decode`], so the encoding can be swapped
//! in one place.
//!
//! Canonical here means: the same value always encodes to the same bytes.
//! serde_cbor writes struct fields in declaration order and maps in their
//! iteration order, so wire types use only structs, `Vec`s and `BTreeMap`s
//! (never `HashMap`) and no floats. Decoding is strict: a size limit up
//! front, no trailing bytes, and the message's own bounds checked before the
//! value is handed out.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::limits::{Bounded, LimitError};

/// Why bytes could not be decoded into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is larger than the caller allows.
    #[error("message of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The caller's limit.
        limit: usize,
    },
    /// The bytes are not valid CBOR for the expected type.
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    /// Valid CBOR followed by extra bytes.
    #[error("trailing bytes after the message")]
    TrailingBytes,
    /// The message names a protocol version this node does not speak.
    #[error("unsupported protocol version {found} (this node speaks {supported})")]
    UnknownVersion {
        /// Version found in the message.
        found: u16,
        /// Version this build speaks.
        supported: u16,
    },
    /// A field is larger than the protocol allows.
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// Encodes `value` canonically.
///
/// # Panics
/// Only if `value`'s `Serialize` impl itself fails. The protocol's types
/// are derived and never do; a panic here is a bug in a new type, and
/// failing loudly beats hashing or signing a silently empty encoding.
#[allow(clippy::expect_used)]
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // serde_cbor only errors on I/O (none: we write into a Vec) or when a
    // Serialize impl returns an error, which derived impls never do.
    serde_cbor::to_vec(value).expect("derived wire types always encode")
}

/// Decodes exactly one value from `bytes`, refusing inputs over `limit`
/// bytes, trailing bytes, and values whose fields break their bounds.
pub fn decode<T: DeserializeOwned + Bounded>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    let value: T = decode_unbounded(bytes, limit)?;
    value.check_bounds()?;
    Ok(value)
}

/// Like [`decode`] for values that have no bounds of their own beyond the
/// size limit (e.g. a plain tuple hashed locally).
pub fn decode_unbounded<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let mut de = serde_cbor::Deserializer::from_slice(bytes);
    let value = T::deserialize(&mut de).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    de.end().map_err(|_| DecodeError::TrailingBytes)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn maps_encode_in_key_order_whatever_the_insertion_order() {
        let mut a = BTreeMap::new();
        a.insert("b".to_owned(), 2u32);
        a.insert("a".to_owned(), 1u32);
        let mut b = BTreeMap::new();
        b.insert("a".to_owned(), 1u32);
        b.insert("b".to_owned(), 2u32);
        assert_eq!(encode(&a), encode(&b));
    }

    #[test]
    fn rejects_oversize_and_trailing() {
        let bytes = encode(&(1u32, "x".to_owned()));
        assert!(matches!(
            decode_unbounded::<(u32, String)>(&bytes, bytes.len() - 1),
            Err(DecodeError::TooLarge { .. })
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_unbounded::<(u32, String)>(&longer, 1024),
            Err(DecodeError::TrailingBytes)
        ));
        let back: (u32, String) = decode_unbounded(&bytes, 1024).unwrap();
        assert_eq!(back, (1, "x".to_owned()));
    }

    #[test]
    fn huge_declared_length_does_not_allocate_or_panic() {
        // A byte string header claiming 2^63 bytes, followed by nothing.
        let bytes = [0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_unbounded::<serde_bytes::ByteBuf>(&bytes, 1024),
            Err(DecodeError::Malformed(_))
        ));
        // An array header claiming 2^32 elements.
        let bytes = [0x9a, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_unbounded::<Vec<u64>>(&bytes, 1024),
            Err(DecodeError::Malformed(_))
        ));
    }
}
