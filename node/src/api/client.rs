//! A small client of the control API for the CLI and tests: plain HTTP/1.1
//! over TCP (the API is on loopback; there is no TLS), one connection per
//! request, every request timed out and every body size-capped.
//!
//! Transfers of big bodies (blob uploads, output downloads) get a bound
//! that grows with their size. Event streams have no overall bound, as a
//! job may run for hours, but fail when nothing arrives for an idle
//! timeout (the daemon sends a keep-alive comment every 15 s).

mod sse;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{header, Method};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use self::sse::SseParser;
use super::jobs::MAX_UPLOAD_BYTES;
use super::types::{ErrorBody, JobEvent};

/// Name of the file where a daemon writes its actual API address.
pub const ADDR_FILE: &str = "api.addr";
/// Largest response body read by the JSON methods and [`ApiClient::get`].
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Largest body [`ApiClient::get_bytes`] reads: one blob of a result
/// (stdout, stderr or an output file) is at most this big.
pub const MAX_DOWNLOAD_BYTES: usize = agora_protocol::limits::MAX_OUTPUT_BYTES as usize;
/// Default bound on one request, connect to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on silence in an event stream: four missed keep-alives.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Slowest transfer rate (bytes per second) a big upload or download is
/// given time for, on top of the per-request bound: a 1 GiB upload may
/// take 30 s + 256 s. Loopback is far faster; the margin covers a busy disk.
pub const MIN_TRANSFER_RATE: u64 = 4 * 1024 * 1024;
/// The `event:` name the daemon gives job events.
const JOB_EVENT: &str = "job";

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
    /// An upload bigger than the daemon accepts; nothing was sent.
    #[error("{size} bytes is more than the {limit} bytes the agora daemon accepts in one upload")]
    TooLarge {
        /// The body's size.
        size: u64,
        /// The largest accepted.
        limit: u64,
    },
    /// An event stream sent nothing, not even a keep-alive, for too long.
    #[error("the event stream from the agora daemon at {addr} was silent for {idle:?}")]
    StreamIdle {
        /// The address.
        addr: SocketAddr,
        /// The idle bound.
        idle: Duration,
    },
    /// An event stream ended before the job's final event (the daemon
    /// stopped, or closed a connection that lived too long).
    #[error(
        "the event stream from the agora daemon at {addr} ended before the job finished: {reason}"
    )]
    StreamEnded {
        /// The address.
        addr: SocketAddr,
        /// How it ended.
        reason: String,
    },
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
    /// Bound on silence in an event stream.
    idle_timeout: Duration,
}

/// A request body.
enum Payload {
    /// None (GET, DELETE).
    Empty,
    /// Serialized JSON.
    Json(Vec<u8>),
    /// Raw bytes (`application/octet-stream`).
    Octets(Bytes),
}

/// Aborts the task driving a connection when the exchange is over, so no
/// connection outlives its request.
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A response whose body is still on the wire, with what keeps its
/// connection alive until the body is read or dropped.
struct Open {
    /// Status, headers and the unread body.
    resp: hyper::Response<Incoming>,
    /// Kept so the connection is not closed as idle under the body.
    _sender: SendRequest<Full<Bytes>>,
    /// Drives the connection.
    _driver: Driver,
}

impl Open {
    fn status(&self) -> u16 {
        self.resp.status().as_u16()
    }

    fn content_type(&self) -> Option<String> {
        self.resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Reads the whole body, failing beyond `limit` bytes.
    async fn read_all(self, addr: SocketAddr, limit: usize) -> Result<RawResponse, ClientError> {
        let status = self.status();
        let content_type = self.content_type();
        let body = Limited::new(self.resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| ClientError::Http {
                addr,
                reason: format!("reading the body: {e}"),
            })?
            .to_bytes();
        Ok(RawResponse {
            status,
            content_type,
            body,
        })
    }
}

/// The error a non-2xx answer stands for, with the daemon's message.
fn status_error(resp: &RawResponse) -> ClientError {
    let message = match serde_json::from_slice::<ErrorBody>(&resp.body) {
        Ok(e) => e.error,
        Err(_) => String::from_utf8_lossy(&resp.body).into_owned(),
    };
    ClientError::Status {
        status: resp.status,
        message,
    }
}

/// `resp` if it is a 2xx, else its [`ClientError::Status`].
fn success(resp: RawResponse) -> Result<RawResponse, ClientError> {
    if (200..300).contains(&resp.status) {
        Ok(resp)
    } else {
        Err(status_error(&resp))
    }
}

/// Decodes a 2xx JSON body as `T`.
fn decode<T: DeserializeOwned>(resp: RawResponse) -> Result<T, ClientError> {
    Ok(serde_json::from_slice(&success(resp)?.body)?)
}

impl ApiClient {
    /// A client of the API at `addr`, sending `token` if given.
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        Self {
            addr,
            token,
            timeout: DEFAULT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// Changes the per-request bound.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Changes the bound on silence in an event stream.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// The daemon's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET path`, whatever the status.
    pub async fn get(&self, path: &str) -> Result<RawResponse, ClientError> {
        self.exchange(
            Method::GET,
            path,
            Payload::Empty,
            MAX_RESPONSE_BYTES,
            self.timeout,
        )
        .await
    }

    /// `GET path`, decoding a 2xx JSON body as `T`; any other status is
    /// [`ClientError::Status`] with the daemon's error message.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        decode(self.get(path).await?)
    }

    /// `POST path` with a JSON body, decoding a 2xx JSON answer.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let json = serde_json::to_vec(body)?;
        decode(
            self.exchange(
                Method::POST,
                path,
                Payload::Json(json),
                MAX_RESPONSE_BYTES,
                self.timeout,
            )
            .await?,
        )
    }

    /// `POST path` with raw bytes (a blob upload, at most
    /// [`MAX_UPLOAD_BYTES`]), decoding a 2xx JSON answer. The bound grows
    /// with the body (see [`MIN_TRANSFER_RATE`]).
    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Bytes,
    ) -> Result<T, ClientError> {
        if body.len() > MAX_UPLOAD_BYTES {
            return Err(ClientError::Http {
                addr: self.addr,
                reason: format!(
                    "{} bytes is more than the {MAX_UPLOAD_BYTES} a blob upload may carry",
                    body.len()
                ),
            });
        }
        let bound = self.transfer_bound(body.len());
        decode(
            self.exchange(
                Method::POST,
                path,
                Payload::Octets(body),
                MAX_RESPONSE_BYTES,
                bound,
            )
            .await?,
        )
    }

    /// `DELETE path`, decoding a 2xx JSON answer.
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        decode(
            self.exchange(
                Method::DELETE,
                path,
                Payload::Empty,
                MAX_RESPONSE_BYTES,
                self.timeout,
            )
            .await?,
        )
    }

    /// `GET path` of raw bytes (a blob), at most [`MAX_DOWNLOAD_BYTES`].
    pub async fn get_bytes(&self, path: &str) -> Result<Bytes, ClientError> {
        let bound = self.transfer_bound(MAX_DOWNLOAD_BYTES);
        let r = self
            .exchange(Method::GET, path, Payload::Empty, MAX_DOWNLOAD_BYTES, bound)
            .await?;
        Ok(success(r)?.body)
    }

    /// Follows the job events of `path` (server-sent events), calling
    /// `on_event` with each until the stream ends or `on_event` returns
    /// false. No overall bound; fails after `idle_timeout` of silence.
    pub async fn follow_events(
        &self,
        path: &str,
        mut on_event: impl FnMut(JobEvent) -> bool,
    ) -> Result<(), ClientError> {
        let addr = self.addr;
        let http = |reason: String| ClientError::Http { addr, reason };
        let open = tokio::time::timeout(self.timeout, self.open(Method::GET, path, Payload::Empty))
            .await
            .map_err(|_| ClientError::Timeout {
                addr,
                timeout: self.timeout,
            })??;
        if !(200..300).contains(&open.status()) {
            let r = open.read_all(addr, MAX_RESPONSE_BYTES).await?;
            return Err(status_error(&r));
        }
        let Open {
            resp,
            _sender,
            _driver,
        } = open;
        let mut body = resp.into_body();
        let mut parser = SseParser::new();
        loop {
            let frame = match tokio::time::timeout(self.idle_timeout, body.frame()).await {
                Err(_) => {
                    return Err(ClientError::Timeout {
                        addr,
                        timeout: self.idle_timeout,
                    })
                }
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => return Err(http(e.to_string())),
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for ev in parser.push(&data).map_err(|e| http(e.to_string()))? {
                if ev.event != JOB_EVENT {
                    continue;
                }
                let job: JobEvent = serde_json::from_str(&ev.data)?;
                if !on_event(job) {
                    return Ok(());
                }
            }
        }
    }

    /// Time allowed for a transfer of `bytes`.
    fn transfer_bound(&self, bytes: usize) -> Duration {
        self.timeout + Duration::from_secs(bytes as u64 / MIN_TRANSFER_RATE)
    }

    /// Sends a request; returns the response with its body unread.
    async fn open(
        &self,
        method: Method,
        path: &str,
        payload: Payload,
    ) -> Result<Open, ClientError> {
        let addr = self.addr;
        let http = |reason: String| ClientError::Http { addr, reason };
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.to_string()))?;
        let driver = Driver(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string());
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match payload {
            Payload::Empty => Bytes::new(),
            Payload::Json(j) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(j)
            }
            Payload::Octets(b) => {
                req = req.header(header::CONTENT_TYPE, "application/octet-stream");
                b
            }
        };
        let req = req.body(Full::new(body)).map_err(|e| http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| http(e.to_string()))?;
        Ok(Open {
            resp,
            _sender: sender,
            _driver: driver,
        })
    }

    /// A whole exchange, bounded by `bound`, body capped at `limit`.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        payload: Payload,
        limit: usize,
        bound: Duration,
    ) -> Result<RawResponse, ClientError> {
        let addr = self.addr;
        tokio::time::timeout(bound, async {
            self.open(method, path, payload)
                .await?
                .read_all(addr, limit)
                .await
        })
        .await
        .map_err(|_| ClientError::Timeout {
            addr,
            timeout: bound,
        })?
    }
}
