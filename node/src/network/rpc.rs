//! The request-response protocol's name; its messages and limits are
//! wire types in [`agora_protocol::rpc`] and [`agora_protocol::limits`].

use libp2p::StreamProtocol;

/// The request-response protocol name.
/// Version 2: an assignment is answered with the executor's signed
/// [`agora_protocol::Acceptance`].
pub const RPC_PROTOCOL: StreamProtocol = StreamProtocol::new("/agora/rpc/2.0.0");
