//! A small client of the control API for the CLI and tests: plain HTTP/1.1
//! over TCP (the API is on loopback; there is no TLS), one connection per
//! request, every request timed out and every body size-capped.
//!
//! Transfers of big bodies (blob uploads, output downloads) get a bound
//! that grows with their size. Event streams have no overall bound, as a
//! job may run for hours, but fail when nothing arrives for an idle
//! timeout (the daemon sends a keep-alive comment every 15 s).
//!
//! Length: about 520 lines of code; its tests (bounded reads, timeouts,
//! errors, event streams against a real server) take it past 700.

mod sse;

use std::net::SocketAddr;
use std::time::Duration;

use agora_protocol::units::human_bytes;
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
    #[error("{} is more than the {} the agora daemon accepts in one upload", human_bytes(*.size), human_bytes(*.limit))]
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
            return Err(ClientError::TooLarge {
                size: body.len() as u64,
                limit: MAX_UPLOAD_BYTES as u64,
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
    /// false. Connecting and the answer's head are bounded by the request
    /// timeout; after that there is no overall bound (a job may run for
    /// hours), only silence is: [`ClientError::StreamIdle`] after
    /// `idle_timeout` without a byte. A connection that breaks mid-stream
    /// is [`ClientError::StreamEnded`]; one the daemon closes cleanly is
    /// `Ok` (it does so after a job's final event).
    pub async fn follow_events(
        &self,
        path: &str,
        mut on_event: impl FnMut(JobEvent) -> bool,
    ) -> Result<(), ClientError> {
        let addr = self.addr;
        let timeout = self.timeout;
        let http = |reason: String| ClientError::Http { addr, reason };
        let timed_out = |_| ClientError::Timeout { addr, timeout };
        let open = tokio::time::timeout(timeout, self.open(Method::GET, path, Payload::Empty))
            .await
            .map_err(timed_out)??;
        if !(200..300).contains(&open.status()) {
            let r = tokio::time::timeout(timeout, open.read_all(addr, MAX_RESPONSE_BYTES))
                .await
                .map_err(timed_out)??;
            return Err(status_error(&r));
        }
        let content_type = open.content_type().unwrap_or_default();
        if !content_type.starts_with("text/event-stream") {
            return Err(http(format!(
                "expected an event stream, got content type {content_type:?}"
            )));
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
                    return Err(ClientError::StreamIdle {
                        addr,
                        idle: self.idle_timeout,
                    })
                }
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => {
                    return Err(ClientError::StreamEnded {
                        addr,
                        reason: e.to_string(),
                    })
                }
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers carry no events
            };
            for ev in parser.push(&data).map_err(|e| http(e.to_string()))? {
                // Other event names may come with later daemons; they are
                // not job progress.
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

    /// [`Self::follow_events`] until the job's final event, which it
    /// returns, calling `on_event` for every event including that one. A
    /// stream that ends before it is [`ClientError::StreamEnded`]; like
    /// [`ClientError::StreamIdle`] it is worth following again, as a new
    /// stream replays the job's past events, then live ones.
    pub async fn follow_job(
        &self,
        path: &str,
        mut on_event: impl FnMut(&JobEvent),
    ) -> Result<JobEvent, ClientError> {
        let mut last = None;
        self.follow_events(path, |e| {
            on_event(&e);
            let done = e.state.is_final();
            if done {
                last = Some(e);
            }
            !done
        })
        .await?;
        last.ok_or_else(|| ClientError::StreamEnded {
            addr: self.addr,
            reason: "the daemon closed the stream".into(),
        })
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;

    use axum::body::Body;
    use axum::extract::DefaultBodyLimit;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use futures::stream::{self, StreamExt};
    use serde_json::{json, Value};
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::api::types::{BlobInfo, JobState};

    const TOKEN: &str = "secret";

    fn event(kind: &str, state: JobState) -> JobEvent {
        JobEvent {
            at_ms: 1,
            kind: kind.into(),
            peer_id: None,
            state,
            detail: String::new(),
        }
    }

    fn sse_frame(ev: &JobEvent) -> String {
        format!(
            "event: job\ndata: {}\n\n",
            serde_json::to_string(ev).unwrap()
        )
    }

    /// An event-stream answer sending `chunks` one by one, a little apart
    /// so they arrive as separate frames, then staying open (or closing,
    /// if `close`).
    fn sse_body(chunks: Vec<String>, close: bool) -> impl IntoResponse {
        let sent = stream::iter(chunks).then(|c| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, Infallible>(Bytes::from(c))
        });
        let body = if close {
            Body::from_stream(sent)
        } else {
            Body::from_stream(sent.chain(stream::pending()))
        };
        ([(header::CONTENT_TYPE, "text/event-stream")], body)
    }

    fn error(status: StatusCode, msg: &str) -> axum::response::Response {
        (status, Json(ErrorBody { error: msg.into() })).into_response()
    }

    fn router() -> Router {
        Router::new()
            .route(
                "/private",
                get(|headers: HeaderMap| async move {
                    let auth = headers.get(header::AUTHORIZATION).cloned();
                    if auth.as_ref().and_then(|v| v.to_str().ok()) == Some("Bearer secret") {
                        Json(json!({"ok": true})).into_response()
                    } else {
                        error(StatusCode::UNAUTHORIZED, "wrong API token")
                    }
                }),
            )
            .route(
                "/echo",
                post(|Json(v): Json<Value>| async move { (StatusCode::CREATED, Json(v)) }),
            )
            .route(
                "/blobs",
                post(|headers: HeaderMap, body: Bytes| async move {
                    let ct = headers.get(header::CONTENT_TYPE).cloned();
                    if ct.as_ref().and_then(|v| v.to_str().ok()) != Some("application/octet-stream")
                    {
                        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "raw bytes only");
                    }
                    let info = BlobInfo {
                        id: hex::encode(Sha256::digest(&body)),
                        size: body.len() as u64,
                    };
                    (StatusCode::CREATED, Json(info)).into_response()
                })
                .layer(DefaultBodyLimit::disable()),
            )
            .route(
                "/jobs/x",
                get(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "GET") })
                    .delete(|| async { Json(json!({"state": "cancelled"})) }),
            )
            .route(
                "/conflict",
                get(|| async { error(StatusCode::CONFLICT, "job is running, not verified") }),
            )
            .route(
                "/bytes/{n}",
                get(
                    |axum::extract::Path(n): axum::extract::Path<usize>| async move {
                        (
                            [(header::CONTENT_TYPE, "application/octet-stream")],
                            vec![7u8; n],
                        )
                    },
                ),
            )
            .route(
                "/never",
                get(|| async {
                    std::future::pending::<()>().await;
                }),
            )
            .route(
                "/events/split",
                get(|| async {
                    let one = sse_frame(&event("submitted", JobState::Pending));
                    let two = sse_frame(&event("assigned", JobState::Running));
                    let fin = sse_frame(&event("verified", JobState::Verified));
                    let (a, b) = one.split_at(17);
                    let (c, d) = two.split_at(two.len() - 1);
                    sse_body(
                        vec![
                            ": keepalive\n\n".into(),
                            a.into(),
                            b.into(),
                            c.into(),
                            d.into(),
                            "event: other\ndata: not json\n\n".into(),
                            fin,
                        ],
                        false,
                    )
                }),
            )
            .route(
                "/events/cut",
                get(|| async {
                    sse_body(
                        vec![
                            sse_frame(&event("submitted", JobState::Pending)),
                            sse_frame(&event("offered", JobState::Scheduled)),
                        ],
                        true,
                    )
                }),
            )
            .route(
                "/events/silent",
                get(|| async {
                    sse_body(
                        vec![sse_frame(&event("submitted", JobState::Pending))],
                        false,
                    )
                }),
            )
            .route(
                "/events/json",
                get(|| async { Json(json!({"not": "a stream"})) }),
            )
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such job") })
    }

    async fn serve() -> ApiClient {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router()).await.unwrap() });
        ApiClient::new(addr, Some(TOKEN.into()))
    }

    #[tokio::test]
    async fn get_json_sends_the_token_and_reports_the_daemons_message() {
        let c = serve().await;
        let v: Value = c.get_json("/private").await.unwrap();
        assert_eq!(v, json!({"ok": true}));
        let anon = ApiClient::new(c.addr(), None);
        match anon.get_json::<Value>("/private").await {
            Err(ClientError::Status { status, message }) => {
                assert_eq!(status, 401);
                assert_eq!(message, "wrong API token");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn post_json_sends_json_and_decodes_the_answer() {
        let c = serve().await;
        let mut body = BTreeMap::new();
        body.insert("n", 3);
        body.insert("k", 2);
        let back: BTreeMap<String, u32> = c.post_json("/echo", &body).await.unwrap();
        assert_eq!(back.get("n"), Some(&3));
        assert_eq!(back.get("k"), Some(&2));
        // A body of the wrong shape is a decode error, not a panic.
        let wrong = c.post_json::<_, Vec<u8>>("/echo", &body).await;
        assert!(matches!(wrong, Err(ClientError::Decode(_))), "{wrong:?}");
    }

    #[tokio::test]
    async fn post_bytes_uploads_raw_bytes() {
        let c = serve().await;
        // Bigger than the JSON cap of answers, to show requests are not
        // bound by it.
        let data = Bytes::from(vec![42u8; MAX_RESPONSE_BYTES + 1]);
        let info: BlobInfo = c.post_bytes("/blobs", data.clone()).await.unwrap();
        assert_eq!(info.size, data.len() as u64);
        assert_eq!(info.id, hex::encode(Sha256::digest(&data)));
    }

    #[tokio::test]
    async fn post_bytes_refuses_more_than_the_daemon_takes_without_sending() {
        // No server: had it tried to send, this would be a connect error.
        let c = ApiClient::new("127.0.0.1:9".parse().unwrap(), None);
        let big = Bytes::from(vec![0u8; MAX_UPLOAD_BYTES + 1]);
        match c.post_bytes::<BlobInfo>("/blobs", big).await {
            Err(ClientError::TooLarge { size, limit }) => {
                assert_eq!(size, MAX_UPLOAD_BYTES as u64 + 1);
                assert_eq!(limit, MAX_UPLOAD_BYTES as u64);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn delete_json_uses_delete() {
        let c = serve().await;
        let v: Value = c.delete_json("/jobs/x").await.unwrap();
        assert_eq!(v, json!({"state": "cancelled"}));
        let conflict = c.get_bytes("/conflict").await;
        match conflict {
            Err(ClientError::Status { status, message }) => {
                assert_eq!(status, 409);
                assert_eq!(message, "job is running, not verified");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn get_bytes_reads_past_the_json_cap_up_to_the_output_cap() {
        let c = serve().await;
        let n = MAX_RESPONSE_BYTES + 10;
        let bytes = c.get_bytes(&format!("/bytes/{n}")).await.unwrap();
        assert_eq!(bytes.len(), n);
        assert!(bytes.iter().all(|&b| b == 7));
        let too_big = c
            .get_bytes(&format!("/bytes/{}", MAX_DOWNLOAD_BYTES + 1))
            .await;
        assert!(
            matches!(too_big, Err(ClientError::Http { .. })),
            "{too_big:?}"
        );
        // The JSON path keeps its smaller cap.
        let json_too_big = c.get(&format!("/bytes/{n}")).await;
        assert!(
            matches!(json_too_big, Err(ClientError::Http { .. })),
            "{json_too_big:?}"
        );
    }

    #[tokio::test]
    async fn requests_are_timed_out() {
        let c = serve().await.with_timeout(Duration::from_millis(200));
        let r = c.get("/never").await;
        assert!(matches!(r, Err(ClientError::Timeout { .. })), "{r:?}");
        let r = c.follow_job("/never", |_| {}).await;
        assert!(matches!(r, Err(ClientError::Timeout { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn events_are_parsed_across_frames_until_the_final_one() {
        let c = serve().await;
        let mut seen = Vec::new();
        // The server keeps the stream open after the final event: this
        // returns only because the final state ends the wait.
        let last = c
            .follow_job("/events/split", |e| seen.push(e.kind.clone()))
            .await
            .unwrap();
        assert_eq!(seen, ["submitted", "assigned", "verified"]);
        assert_eq!(last.state, JobState::Verified);
    }

    #[tokio::test]
    async fn a_stream_ending_early_is_an_error_after_its_events() {
        let c = serve().await;
        let mut seen = Vec::new();
        let r = c
            .follow_job("/events/cut", |e| seen.push(e.kind.clone()))
            .await;
        assert!(matches!(r, Err(ClientError::StreamEnded { .. })), "{r:?}");
        assert_eq!(seen, ["submitted", "offered"]);
    }

    #[tokio::test]
    async fn a_silent_stream_fails_after_the_idle_timeout() {
        let c = serve().await.with_idle_timeout(Duration::from_millis(300));
        let mut seen = 0;
        let r = c.follow_job("/events/silent", |_| seen += 1).await;
        assert!(matches!(r, Err(ClientError::StreamIdle { .. })), "{r:?}");
        assert_eq!(seen, 1);
    }

    #[tokio::test]
    async fn event_stream_errors_carry_the_status_or_content_type() {
        let c = serve().await;
        match c.follow_job("/events/unknown", |_| {}).await {
            Err(ClientError::Status { status, message }) => {
                assert_eq!(status, 404);
                assert_eq!(message, "no such job");
            }
            other => panic!("{other:?}"),
        }
        let r = c.follow_job("/events/json", |_| {}).await;
        assert!(matches!(r, Err(ClientError::Http { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn follow_events_stops_when_the_callback_says_so() {
        let c = serve().await;
        let mut seen = Vec::new();
        // The stream stays open: only the callback's false ends the call.
        c.follow_events("/events/split", |e| {
            seen.push(e.kind.clone());
            seen.len() < 2
        })
        .await
        .unwrap();
        assert_eq!(seen, ["submitted", "assigned"]);
        // A clean end of the stream is not an error at this level.
        let mut n = 0;
        c.follow_events("/events/cut", |_| {
            n += 1;
            true
        })
        .await
        .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn sizes_in_errors_are_human() {
        let e = ClientError::TooLarge {
            size: 3 << 30,
            limit: 64 << 20,
        };
        assert_eq!(
            e.to_string(),
            "3.0 GiB is more than the 64.0 MiB the agora daemon accepts in one upload"
        );
    }
}
