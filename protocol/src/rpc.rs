//! Point-to-point request-response messages, carried as canonical CBOR
//! with size limits on both directions ([`crate::limits::MAX_REQUEST_BYTES`],
//! [`crate::limits::MAX_RESPONSE_BYTES`]).
//!
//! Liveness ([`Request::Ping`]), adverts ([`Request::GetAdvert`]), the job
//! lifecycle (bid, assign, attest, failure report, cancel) and blob chunks.
//! Large payloads travel in responses (blob chunks); a result bundle too
//! large to ride inline in [`Request::Attest`] (more than
//! [`crate::limits::MAX_INLINE_BUNDLE_BYTES`]) is stored as a blob by the
//! executor and fetched by the submitter.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{
    Acceptance, Assignment, Attestation, Bid, CapabilityAdvert, ContentId, ResultBundle, Signed,
};

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
        /// Which limit the job broke, if it broke one (absent from older
        /// executors: then a crash).
        #[serde(default)]
        kind: FailKind,
    },
    /// The submitter no longer needs an assignment's answer (the job was
    /// cancelled or decided): the executor stops its sandbox and forgets
    /// the job. Only the job's submitter may send it.
    Cancel {
        /// The job.
        job: ContentId,
        /// The assignment attempt cancelled.
        attempt: u32,
    },
    /// An executor tells the submitter how fetching the job's image goes
    /// (it does not count against the job's timeout, so the submitter
    /// shows it rather than waiting in silence).
    ImageProgress {
        /// The job.
        job: ContentId,
        /// The assignment attempt it concerns.
        attempt: u32,
        /// Image bytes this executor holds so far.
        have: u64,
        /// Image bytes in all.
        total: u64,
        /// Peers it is fetching from.
        providers: u32,
        /// Whether the image is loaded into the engine (the run starts).
        loaded: bool,
    },
    /// Send me part of a blob.
    GetBlob {
        /// The blob.
        id: ContentId,
        /// First byte wanted.
        offset: u64,
        /// Bytes wanted (at most [`crate::limits::MAX_CHUNK_BYTES`]).
        len: u32,
    },
}

/// Why an executor produced no result, as its failure report says: a
/// limit the job broke is named, so the user knows which flag to raise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// The job ran past its wall-clock limit (`--timeout`).
    TimedOut,
    /// It exceeded its memory limit (`--memory`).
    OutOfMemory,
    /// It used up its Wasm fuel budget (`--fuel`).
    OutOfFuel,
    /// stdout, stderr or an output file exceeded the output cap
    /// (`--max-output`).
    OutputTooLarge,
    /// The executor could not start it (a blob or image it could not get,
    /// no free slot before the deadline).
    Unable,
    /// The program or its sandbox failed otherwise (a trap, an engine
    /// error).
    #[default]
    Crashed,
}

impl FailKind {
    /// The name events and records show (`timed_out`, `out_of_memory`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TimedOut => "timed_out",
            Self::OutOfMemory => "out_of_memory",
            Self::OutOfFuel => "out_of_fuel",
            Self::OutputTooLarge => "output_too_large",
            Self::Unable => "unable",
            Self::Crashed => "crashed",
        }
    }

    /// Whether the job itself broke one of its limits (the same job
    /// breaks it again elsewhere), as opposed to a crash or a refusal.
    pub fn is_limit(self) -> bool {
        matches!(
            self,
            Self::TimedOut | Self::OutOfMemory | Self::OutOfFuel | Self::OutputTooLarge
        )
    }
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
