//! Point-to-point request-response messages, carried as CBOR over
//! [`RPC_PROTOCOL`] with size limits on both directions.
//!
//! Liveness ([`Request::Ping`]), adverts ([`Request::GetAdvert`]), the job
//! lifecycle (bid, assign, attest, failure report) and blob chunks. Large
//! payloads travel in responses (blob chunks); a result bundle too large
//! to ride inline in [`Request::Attest`] is stored as a blob by the
//! executor and fetched by the submitter.

use agora_protocol::{
    Acceptance, Assignment, Attestation, Bid, CapabilityAdvert, ContentId, ResultBundle, Signed,
};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The request-response protocol name.
/// Version 2: an assignment is answered with the executor's signed
/// [`Acceptance`].
pub const RPC_PROTOCOL: StreamProtocol = StreamProtocol::new("/agora/rpc/2.0.0");
/// Largest request accepted, in bytes. Requests stay small; the large
/// payloads (blob chunks) travel in responses.
pub const MAX_REQUEST_BYTES: u64 = 256 * 1024;
/// Largest response accepted, in bytes.
pub const MAX_RESPONSE_BYTES: u64 = agora_protocol::limits::MAX_RPC_BYTES as u64;
/// A result bundle whose CBOR encoding is at most this big rides inline in
/// [`Request::Attest`]; larger ones are fetched as a blob.
pub const MAX_INLINE_BUNDLE_BYTES: usize = 192 * 1024;
/// Largest blob chunk asked for or served.
pub const MAX_CHUNK_BYTES: u32 = 4 * 1024 * 1024;

/// A request one node sends another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Are you there? Answered by the network task itself.
    Ping {
        /// Echoed back, so a reply matches its request.
        nonce: u64,
    },
    /// Send me your current capability advert.
    GetAdvert,
    /// A worker bids for a job it saw offered (sent to the submitter).
    Bid(Signed<Bid>),
    /// A submitter assigns a job to the receiving executor.
    Assign(Signed<Assignment>),
    /// An executor reports its signed result (sent to the submitter).
    Attest(AttestReport),
    /// An executor reports it could not run an assigned job.
    ExecFailed {
        /// The job.
        job: ContentId,
        /// The assignment attempt it answers.
        attempt: u32,
        /// Why, for the user (bounded by the request size).
        error: String,
    },
    /// Send me part of a blob.
    GetBlob {
        /// The blob.
        id: ContentId,
        /// First byte wanted.
        offset: u64,
        /// Bytes wanted (at most [`MAX_CHUNK_BYTES`]).
        len: u32,
    },
}

/// An executor's answer to an assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestReport {
    /// The executor's signed claim of the result hash.
    pub attestation: Signed<Attestation>,
    /// The assignment attempt it answers.
    pub attempt: u32,
    /// The bundle whose `result_hash()` is the attested hash.
    pub bundle: BundleRef,
}

/// Where the submitter finds a result bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BundleRef {
    /// Small bundles travel with the attestation.
    Inline(ResultBundle),
    /// Larger ones are a blob (the bundle's canonical CBOR) on the
    /// executor.
    Blob {
        /// The blob id.
        id: ContentId,
        /// Its size in bytes.
        size: u64,
    },
}

/// A node's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong {
        /// The request's nonce.
        nonce: u64,
    },
    /// Answer to [`Request::GetAdvert`]; `None` before the first advert.
    Advert(Option<Signed<CapabilityAdvert>>),
    /// The request was taken (a bid, a report).
    Ack,
    /// Answer to [`Request::Assign`]: the executor took the job on (the
    /// assignment is on its disk) and signs that it owes an answer by the
    /// deadline. Only with this can a verdict charge it with a miss.
    Accepted(Signed<Acceptance>),
    /// Answer to [`Request::GetBlob`].
    BlobChunk {
        /// The blob's full size.
        total: u64,
        /// The bytes from the asked offset (shorter at the end).
        data: ByteBuf,
    },
    /// The request was not served.
    Error(RpcError),
}

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RpcError {
    /// The sender exceeded its per-peer request rate.
    #[error("rate limited")]
    RateLimited,
    /// Too many requests are waiting for an answer on this node.
    #[error("busy: too many requests in flight")]
    Busy,
    /// Nothing on this node answers that request.
    #[error("unsupported request")]
    Unsupported,
    /// The node has no such thing (blob, job).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request was understood and declined (no room, not for us).
    #[error("declined: {0}")]
    Declined(String),
    /// The request is malformed or its signature does not check.
    #[error("invalid: {0}")]
    Invalid(String),
}
