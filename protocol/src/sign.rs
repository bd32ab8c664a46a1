//! Signing: every message a node vouches for travels in a [`Signed`]
//! envelope. The key is the node's libp2p ed25519 identity, so a verified
//! signature names the signer's PeerId; a per-message-type domain tag keeps
//! a signature over one kind of message from being replayed as another.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use libp2p_identity::PeerId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::codec::{self, DecodeError};
use crate::limits::{Bounded, LimitError};
use crate::PROTOCOL_VERSION;

/// A message type that is signed; its domain tag is mixed into every
/// signature over it.
pub trait SignedMessage: Serialize + DeserializeOwned + Bounded {
    /// Unique tag, e.g. `agora/job-offer`. Never reuse a tag.
    const DOMAIN: &'static str;
}

/// Why a key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The libp2p identity is not ed25519.
    #[error("node identity must be an ed25519 key")]
    NotEd25519,
    /// The key bytes are malformed.
    #[error("invalid ed25519 key bytes: {0}")]
    Invalid(String),
}

/// Why a signed envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The signer field is not a valid ed25519 public key.
    #[error("signer is not a valid ed25519 public key")]
    BadSigner,
    /// The signature field is not 64 bytes.
    #[error("signature must be 64 bytes, got {0}")]
    BadSignatureLength(usize),
    /// The signature does not match the payload, key and domain.
    #[error("signature does not verify for {signer} under domain '{domain}'")]
    BadSignature {
        /// Claimed signer.
        signer: PeerId,
        /// Domain the verifier expected.
        domain: &'static str,
    },
    /// The signature is good but the payload does not decode.
    #[error("signed payload from {signer}: {source}")]
    Payload {
        /// Verified signer.
        signer: PeerId,
        /// Decoding failure.
        source: DecodeError,
    },
}

/// A node's signing key: the ed25519 secret behind its libp2p PeerId.
#[derive(Clone)]
pub struct NodeKey {
    /// The secret key; its public half is the PeerId.
    signing: SigningKey,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "NodeKey({})", self.peer_id())
    }
}

impl NodeKey {
    /// A fresh random key from the OS RNG.
    pub fn generate() -> Self {
        Self::from_libp2p(&libp2p_identity::Keypair::generate_ed25519())
            .unwrap_or_else(|_| unreachable!("generate_ed25519 yields an ed25519 key"))
    }

    /// A key from its 32 secret bytes (deterministic keys for tests).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// The signing half of a libp2p ed25519 identity.
    pub fn from_libp2p(kp: &libp2p_identity::Keypair) -> Result<Self, KeyError> {
        let ed = kp
            .clone()
            .try_into_ed25519()
            .map_err(|_| KeyError::NotEd25519)?;
        let signing = SigningKey::from_keypair_bytes(&ed.to_bytes())
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        Ok(Self { signing })
    }

    /// The same key as a libp2p identity, for the Swarm.
    pub fn to_libp2p(&self) -> libp2p_identity::Keypair {
        let mut secret = self.signing.to_bytes();
        let sk = libp2p_identity::ed25519::SecretKey::try_from_bytes(&mut secret)
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid ed25519 secret"));
        libp2p_identity::ed25519::Keypair::from(sk).into()
    }

    /// The 32 secret bytes, for writing the key file.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The 32-byte public key.
    pub fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The PeerId this key proves.
    pub fn peer_id(&self) -> PeerId {
        peer_id_of(&self.public()).unwrap_or_else(|| unreachable!("own key is valid"))
    }

    /// Signs `value` under its type's domain.
    pub fn sign<T: SignedMessage>(&self, value: &T) -> Signed<T> {
        let payload = codec::encode(value);
        let sig = self.signing.sign(&signing_input(T::DOMAIN, &payload));
        Signed {
            v: PROTOCOL_VERSION,
            signer: ByteBuf::from(self.public().to_vec()),
            payload: ByteBuf::from(payload),
            sig: ByteBuf::from(sig.to_bytes().to_vec()),
            _type: PhantomData,
        }
    }
}

/// The PeerId of a raw ed25519 public key, if the bytes are a valid key.
pub fn peer_id_of(public: &[u8]) -> Option<PeerId> {
    let pk = libp2p_identity::ed25519::PublicKey::try_from_bytes(public).ok()?;
    Some(libp2p_identity::PublicKey::from(pk).to_peer_id())
}

/// What is actually signed: a fixed prefix, the domain tag, a separator and
/// the payload. The separator keeps tags from being prefixes of each other.
fn signing_input(domain: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + domain.len() + payload.len());
    m.extend_from_slice(b"agora-sig/1\0");
    m.extend_from_slice(domain.as_bytes());
    m.push(0);
    m.extend_from_slice(payload);
    m
}

/// A signed message as it travels: version, signer's public key, the
/// canonical payload bytes and the signature. The payload is only handed
/// out by [`Signed::verify`].
// Unknown fields are refused: the envelope is versioned, so a new field
// means a new version, and tampering cannot hide in an ignored field.
#[derive(Serialize, Deserialize)]
#[serde(bound = "", deny_unknown_fields)]
pub struct Signed<T> {
    /// Protocol version of the envelope.
    v: u16,
    /// The signer's ed25519 public key (32 bytes).
    signer: ByteBuf,
    /// Canonical CBOR of the message.
    payload: ByteBuf,
    /// ed25519 signature over the domain-tagged payload.
    sig: ByteBuf,
    #[serde(skip)]
    _type: PhantomData<fn() -> T>,
}

// Manual impls: derive would demand T: Clone / PartialEq, which the
// envelope does not need since it only holds bytes.
impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Self {
            v: self.v,
            signer: self.signer.clone(),
            payload: self.payload.clone(),
            sig: self.sig.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, o: &Self) -> bool {
        self.v == o.v && self.signer == o.signer && self.payload == o.payload && self.sig == o.sig
    }
}

impl<T> Eq for Signed<T> {}

impl<T> Signed<T> {
    /// The PeerId the envelope claims, unverified. For logs and routing
    /// only; trust comes from [`Signed::verify`].
    pub fn claimed_signer(&self) -> Option<PeerId> {
        peer_id_of(&self.signer)
    }
}

impl<T> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("signer", &self.claimed_signer())
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

impl<T> Bounded for Signed<T> {
    fn check_bounds(&self) -> Result<(), LimitError> {
        // The payload's own bounds are checked when it is decoded in
        // verify(); here only the fixed-size fields.
        crate::limits::check("signed.signer", self.signer.len(), 32)?;
        crate::limits::check("signed.sig", self.sig.len(), 64)
    }
}

/// Signature checks ([`Signed::verify`]) made by this process so far: the
/// node exports it as `agora_signature_checks_total`, and benchmarks count
/// the checks a job costs with it. A counter, not a clock or I/O: the
/// crate stays pure.
static VERIFICATIONS: AtomicU64 = AtomicU64::new(0);

/// How many signatures this process has checked so far.
pub fn verifications() -> u64 {
    VERIFICATIONS.load(Ordering::Relaxed)
}

/// A payload whose signature has been checked, with the PeerId that signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T> {
    /// Who signed it.
    pub signer: PeerId,
    /// The decoded, bounds-checked message.
    pub value: T,
}

/// A signed envelope whose signature was checked, with the value it
/// decoded to. Only [`Signed::check`] makes one, so a stage that receives
/// it (dispatch, the job core, the quorum) knows the check was done and
/// does not pay for it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked<T> {
    signed: Signed<T>,
    verified: Verified<T>,
}

impl<T> Checked<T> {
    /// The envelope as it arrived (what verdicts and records carry).
    pub fn signed(&self) -> &Signed<T> {
        &self.signed
    }

    /// Who signed it.
    pub fn signer(&self) -> PeerId {
        self.verified.signer
    }

    /// The decoded message.
    pub fn value(&self) -> &T {
        &self.verified.value
    }

    /// The envelope, dropping the decoded value.
    pub fn into_signed(self) -> Signed<T> {
        self.signed
    }
}

impl<T: SignedMessage> Signed<T> {
    /// Checks the signature (as [`Signed::verify`]) and keeps the envelope
    /// with its decoded value.
    pub fn check(self) -> Result<Checked<T>, SignError> {
        let verified = self.verify()?;
        Ok(Checked {
            signed: self,
            verified,
        })
    }

    /// Decodes an envelope from the wire, refusing unknown versions.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Self, DecodeError> {
        let s: Self = codec::decode(bytes, limit)?;
        if s.v != PROTOCOL_VERSION {
            return Err(DecodeError::UnknownVersion {
                found: s.v,
                supported: PROTOCOL_VERSION,
            });
        }
        Ok(s)
    }

    /// Canonical bytes of the whole envelope.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// The content id of the whole envelope (e.g. the job id of a signed
    /// spec). Signatures are deterministic, so it is stable.
    pub fn id(&self) -> crate::ContentId {
        crate::ContentId::of(&self.encode())
    }

    /// Checks the signature under `T`'s domain, then decodes the payload.
    pub fn verify(&self) -> Result<Verified<T>, SignError> {
        VERIFICATIONS.fetch_add(1, Ordering::Relaxed);
        let key_bytes: [u8; 32] = self
            .signer
            .as_slice()
            .try_into()
            .map_err(|_| SignError::BadSigner)?;
        let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| SignError::BadSigner)?;
        let signer = peer_id_of(&key_bytes).ok_or(SignError::BadSigner)?;
        let sig_bytes: [u8; 64] = self
            .sig
            .as_slice()
            .try_into()
            .map_err(|_| SignError::BadSignatureLength(self.sig.len()))?;
        let sig = Signature::from_bytes(&sig_bytes);
        key.verify_strict(&signing_input(T::DOMAIN, &self.payload), &sig)
            .map_err(|_| SignError::BadSignature {
                signer,
                domain: T::DOMAIN,
            })?;
        let value = codec::decode(&self.payload, self.payload.len())
            .map_err(|source| SignError::Payload { signer, source })?;
        Ok(Verified { signer, value })
    }

    /// Reinterprets the envelope as another message type. Only useful to
    /// show, in tests and docs, that domains keep signatures apart.
    pub fn retag<U>(self) -> Signed<U> {
        Signed {
            v: self.v,
            signer: self.signer,
            payload: self.payload,
            sig: self.sig,
            _type: PhantomData,
        }
    }
}
