//! Sends a request to a peer: over the network, or in-process when the
//! peer is this node (`--allow-local`). In-process requests go to the
//! handler [`super::Ctx::local`] names (the dispatcher), so neither side of
//! the lifecycle imports the dispatcher that imports them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use agora_protocol::rpc::{Request, Response, RpcError};
use agora_protocol::PeerId;

use super::Ctx;
use crate::network::NetworkError;

/// A boxed future answering one request; `None` when another part of the
/// node (the network task) answers that kind.
pub(crate) type Answer = Pin<Box<dyn Future<Output = Option<Response>> + Send + 'static>>;

/// What answers requests this node sends itself.
pub(crate) type LocalHandler = fn(Arc<Ctx>, PeerId, Request) -> Answer;

/// Why a request to a peer got no useful answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliverError {
    /// The peer answered with a refusal: retrying will not help.
    #[error("refused: {0}")]
    Refused(RpcError),
    /// The peer could not be reached or did not answer in time.
    #[error("{0}")]
    Network(String),
}

/// Sends `request` to `peer`, in-process when `peer` is this node.
pub(crate) async fn deliver(
    ctx: &Arc<Ctx>,
    peer: PeerId,
    request: Request,
) -> Result<Response, DeliverError> {
    let response = if peer == ctx.me {
        match (ctx.local)(ctx.clone(), peer, request).await {
            Some(r) => r,
            None => Response::Error(RpcError::Unsupported),
        }
    } else {
        match ctx.net.request(peer, request).await {
            Ok(r) => r,
            Err(NetworkError::Refused { error, .. }) => return Err(DeliverError::Refused(error)),
            Err(e) => return Err(DeliverError::Network(e.to_string())),
        }
    };
    match response {
        Response::Error(e) => Err(DeliverError::Refused(e)),
        r => Ok(r),
    }
}
