//! Point-to-point request-response messages, carried as CBOR over
//! [`RPC_PROTOCOL`] with size limits on both directions.
//!
//! Minimal for now: liveness ([`Request::Ping`]) and fetching a node's
//! current advert ([`Request::GetAdvert`]). The job lifecycle adds bids,
//! assignments, attestations and blob chunks as new variants.

use agora_protocol::{CapabilityAdvert, Signed};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

/// The request-response protocol name.
pub const RPC_PROTOCOL: StreamProtocol = StreamProtocol::new("/agora/rpc/1.0.0");
/// Largest request accepted, in bytes. Requests are small; the large
/// payloads (results, blobs) travel in responses.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// Largest response accepted, in bytes.
pub const MAX_RESPONSE_BYTES: u64 = agora_protocol::limits::MAX_RPC_BYTES as u64;

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
}
