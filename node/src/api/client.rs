//! A small client of the control API for the CLI and tests: plain HTTP/1.1
//! over TCP (the API is on loopback; there is no TLS), one connection per
//! request, every request timed out and every body size-capped.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use super::types::ErrorBody;

/// Name of the file where a daemon writes its actual API address.
pub const ADDR_FILE: &str = "api.addr";
/// Largest response body read.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Default bound on one request, connect to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing accepts connections at the address: no daemon runs there.
    #[error("cannot connect to the agora daemon at {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The request did not complete in time.
    #[error("the agora daemon at {addr} did not answer within {timeout:?}")]
    Timeout {
        /// The address.
        addr: SocketAddr,
        /// The bound.
        timeout: Duration,
    },
    /// HTTP-level failure (bad response, connection reset, body too big).
    #[error("talking to the agora daemon at {addr}: {reason}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The daemon answered with an error status.
    #[error("the agora daemon answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The `error` field of its JSON body, or the raw body.
        message: String,
    },
    /// The body is not the expected JSON.
    #[error("unexpected answer from the agora daemon: {0}")]
    Decode(#[from] serde_json::Error),
}

/// A response as received.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// Talks to one daemon.
#[derive(Debug, Clone)]
pub struct ApiClient {
    /// The daemon's API address.
    addr: SocketAddr,
    /// Bearer token for `/api/v1` (none: unauthenticated requests).
    token: Option<String>,
    /// Bound on each request.
    timeout: Duration,
}

impl ApiClient {
    /// A client of the API at `addr`, sending `token` if given.
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        Self {
            addr,
            token,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Changes the per-request bound.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The daemon's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET path`, whatever the status.
    pub async fn get(&self, path: &str) -> Result<RawResponse, ClientError> {
        tokio::time::timeout(self.timeout, self.get_inner(path))
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.addr,
                timeout: self.timeout,
            })?
    }

    /// `GET path`, decoding a 2xx JSON body as `T`; any other status is
    /// [`ClientError::Status`] with the daemon's error message.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.get(path).await?;
        if !(200..300).contains(&resp.status) {
            let message = match serde_json::from_slice::<ErrorBody>(&resp.body) {
                Ok(e) => e.error,
                Err(_) => String::from_utf8_lossy(&resp.body).into_owned(),
            };
            return Err(ClientError::Status {
                status: resp.status,
                message,
            });
        }
        Ok(serde_json::from_slice(&resp.body)?)
    }

    async fn get_inner(&self, path: &str) -> Result<RawResponse, ClientError> {
        let addr = self.addr;
        let http = |reason: String| ClientError::Http { addr, reason };
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.to_string()))?;
        // Drives the connection; ends when the response is read and the
        // sender dropped, or with the timeout that wraps this call.
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::builder()
            .method(hyper::Method::GET)
            .uri(path)
            .header(header::HOST, addr.to_string());
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| http(e.to_string()))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| http(e.to_string()))?;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| http(format!("reading the body: {e}")))?
                .to_bytes();
            Ok(RawResponse {
                status,
                content_type,
                body,
            })
        }
        .await;
        driver.abort();
        result
    }
}
