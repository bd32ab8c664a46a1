//! Content ids: sha256 digests that name blobs, jobs and results.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Number of hex digits in the short form shown to humans.
pub const SHORT_HEX_LEN: usize = 12;

/// A sha256 digest naming a piece of content. Printed as 64 lowercase hex
/// digits; humans may use any unique prefix (the short form is 12 digits).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentId([u8; 32]);

/// Errors from parsing a content id or resolving a prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidError {
    /// The text is not lowercase/uppercase hex of the right length.
    #[error("'{0}' is not a content id: expected 1 to 64 hex digits")]
    NotHex(String),
    /// A full id was required but a prefix was given.
    #[error("'{0}' is a prefix: a full content id has 64 hex digits")]
    Partial(String),
    /// No known id starts with the prefix.
    #[error("no id starts with '{0}'")]
    NotFound(String),
    /// More than one known id starts with the prefix.
    #[error("'{prefix}' is ambiguous: {matches} ids start with it; give more digits")]
    Ambiguous {
        /// The prefix as given.
        prefix: String,
        /// How many ids matched.
        matches: usize,
    },
}

impl ContentId {
    /// The id of `bytes`: their sha256.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Wraps a digest computed elsewhere (e.g. by a streaming hasher).
    pub fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The raw 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Full lowercase hex (64 digits).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The short form: the first 12 hex digits.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(SHORT_HEX_LEN);
        s
    }

    /// Whether this id's hex starts with `prefix` (case-insensitive).
    pub fn has_prefix(&self, prefix: &IdPrefix) -> bool {
        self.to_hex().starts_with(&prefix.0)
    }
}

/// A validated, lowercase hex prefix of a content id (1 to 64 digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPrefix(String);

impl IdPrefix {
    /// The prefix digits, lowercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Picks the single id among `candidates` that starts with this prefix.
    pub fn resolve<I>(&self, candidates: I) -> Result<ContentId, CidError>
    where
        I: IntoIterator<Item = ContentId>,
    {
        let mut found = None;
        let mut matches = 0usize;
        for id in candidates {
            if id.has_prefix(self) && found != Some(id) {
                matches += 1;
                found = Some(id);
            }
        }
        match (matches, found) {
            (1, Some(id)) => Ok(id),
            (0, _) | (_, None) => Err(CidError::NotFound(self.0.clone())),
            (n, _) => Err(CidError::Ambiguous {
                prefix: self.0.clone(),
                matches: n,
            }),
        }
    }
}

impl FromStr for IdPrefix {
    type Err = CidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() || t.len() > 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CidError::NotHex(s.to_owned()));
        }
        Ok(Self(t.to_ascii_lowercase()))
    }
}

impl FromStr for ContentId {
    type Err = CidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let prefix: IdPrefix = s.parse()?;
        if prefix.0.len() != 64 {
            return Err(CidError::Partial(s.to_owned()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(&prefix.0, &mut out).map_err(|_| CidError::NotHex(s.to_owned()))?;
        Ok(Self(out))
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", self.short())
    }
}

// On the wire a content id is a 32-byte CBOR byte string; in JSON (the
// control API) it is the hex string users see everywhere else.
impl Serialize for ContentId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ContentId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let b: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
            let arr: [u8; 32] = b
                .as_slice()
                .try_into()
                .map_err(|_| serde::de::Error::invalid_length(b.len(), &"32 bytes"))?;
            Ok(Self(arr))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            ContentId::of(b"").to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(ContentId::of(b"").short(), "e3b0c44298fc");
    }

    #[test]
    fn parse_round_trip_and_errors() {
        let id = ContentId::of(b"agora");
        assert_eq!(id.to_hex().parse::<ContentId>(), Ok(id));
        assert_eq!(
            id.to_hex().to_uppercase().parse::<ContentId>(),
            Ok(id),
            "upper case accepted"
        );
        assert!(matches!(
            id.short().parse::<ContentId>(),
            Err(CidError::Partial(_))
        ));
        assert!(matches!(
            "xyz".parse::<ContentId>(),
            Err(CidError::NotHex(_))
        ));
        assert!(matches!("".parse::<IdPrefix>(), Err(CidError::NotHex(_))));
    }

    #[test]
    fn prefix_resolution() {
        let ids: Vec<ContentId> = (0u8..50).map(|i| ContentId::of(&[i])).collect();
        let target = ids[17];
        let p: IdPrefix = target.short().parse().unwrap();
        assert_eq!(p.resolve(ids.iter().copied()), Ok(target));
        let everything: IdPrefix =
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                .parse()
                .unwrap();
        assert!(matches!(
            everything.resolve(ids.iter().copied()),
            Err(CidError::NotFound(_))
        ));
        // 50 ids over 16 leading digits: by pigeonhole some digit leads >= 4.
        let (digit, expected) = "0123456789abcdef"
            .chars()
            .map(|c| (c, ids.iter().filter(|i| i.to_hex().starts_with(c)).count()))
            .max_by_key(|&(_, n)| n)
            .unwrap();
        assert!(expected >= 4);
        let one: IdPrefix = digit.to_string().parse().unwrap();
        assert_eq!(
            one.resolve(ids.iter().copied()),
            Err(CidError::Ambiguous {
                prefix: one.as_str().to_owned(),
                matches: expected
            })
        );
        // The same id listed twice is still one match.
        assert_eq!(p.resolve([target, target]), Ok(target));
    }
}
