//! The control API (axum): how the CLI and operators talk to a running
//! daemon.
//!
//! `/health` and `/metrics` (Prometheus text) are open; everything under
//! `/api/v1` needs `Authorization: Bearer <DATA_DIR/api.token>`. Answers
//! are JSON, errors too (`{"error": "..."}`). The daemon binds it to
//! loopback by default.
//!
//! In: the network handle, the peer book, the metrics registry. Out: HTTP.
//! **Invariant:** handlers never touch the Swarm; they ask the network
//! task through its handle, whose every call is timed out.

pub mod arrays;
pub mod client;
pub mod images;
pub mod jobs;
pub mod service;
pub mod token;
pub mod types;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, Registry, TextEncoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use self::token::token_matches;
use self::types::{
    ErrorBody, ExecutorInfo, Health, IdInfo, NodeInfo, NodesInfo, PeerInfo, PeersInfo,
};
use crate::clock::unix_now_ms;
use crate::network::adverts::{lock_book, SharedPeerBook};
use crate::network::peeraddrs::PeerAddrs;
use crate::network::{NetworkError, NetworkHandle};

/// What the sandboxes look like now (Docker images change).
pub type ExecutorsSource = Arc<dyn Fn() -> Vec<ExecutorInfo> + Send + Sync>;

/// Why the API server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API metrics could not be registered.
    #[error("registering API metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Serving failed.
    #[error("serving the control API on {addr}: {source}")]
    Serve {
        /// The bound address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Everything the handlers read.
pub struct ApiState {
    /// To ask the network task about peers and addresses.
    pub network: NetworkHandle,
    /// Nodes heard from.
    pub book: SharedPeerBook,
    /// Remote addresses of connected peers.
    pub peer_addrs: PeerAddrs,
    /// Where every metric of the node is registered.
    pub registry: Registry,
    /// The sandboxes available.
    pub executors: ExecutorsSource,
    /// Identify's agent version.
    pub agent_version: String,
    /// The bearer token guarding `/api/v1`.
    pub token: String,
    /// The job lifecycle (the job and blob routes answer 503 without it).
    pub jobs: Option<crate::jobs::Jobs>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("ApiState")
            .field("peer_id", &self.network.peer_id())
            .finish_non_exhaustive()
    }
}

/// Shared state plus the API's own metrics.
struct Shared {
    /// See [`ApiState`].
    state: ApiState,
    /// `agora_api_request_duration_seconds{route,method,status}`.
    durations: HistogramVec,
    /// `agora_signature_checks_total`, brought up to date on scrape.
    signature_checks: IntCounter,
}

/// A handler failure as an HTTP answer.
#[derive(Debug)]
struct HttpError(StatusCode, String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<NetworkError> for HttpError {
    fn from(e: NetworkError) -> Self {
        HttpError(StatusCode::SERVICE_UNAVAILABLE, format!("network: {e}"))
    }
}

/// Builds the router. Registers the request-duration histogram in
/// `state.registry`, so one registry serves one API.
pub fn router(state: ApiState) -> Result<Router, ApiError> {
    let durations = HistogramVec::new(
        HistogramOpts::new(
            "agora_api_request_duration_seconds",
            "Control API requests, from arrival to response",
        )
        .buckets(vec![
            0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0,
        ]),
        &["route", "method", "status"],
    )?;
    state.registry.register(Box::new(durations.clone()))?;
    let signature_checks = IntCounter::new(
        "agora_signature_checks_total",
        "Ed25519 signature checks made by this node (gossip, requests, records)",
    )?;
    state
        .registry
        .register(Box::new(signature_checks.clone()))?;
    let shared = Arc::new(Shared {
        state,
        durations,
        signature_checks,
    });
    let v1 = Router::new()
        .route("/id", get(id))
        .route("/peers", get(peers))
        .route("/nodes", get(nodes))
        .merge(jobs::routes())
        .merge(arrays::routes())
        .merge(images::routes())
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ));
    Ok(Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .nest("/api/v1", v1)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .with_state(shared))
}

/// Most control-API connections open at once; more wait to be accepted.
pub const MAX_API_CONNECTIONS: usize = 64;
/// Longest a control-API connection may go without the node writing to
/// it. A client that sends nothing, or trickles bytes, cannot hold a
/// connection slot forever; one that reads an event stream (which sends a
/// keep-alive every 15 s) or asks request after request keeps it.
pub const API_CONNECTION_IDLE: Duration = Duration::from_secs(60);

/// A TCP listener that accepts at most [`MAX_API_CONNECTIONS`] at once
/// and ends each after [`API_CONNECTION_IDLE`] without output.
struct BoundedListener {
    /// The socket.
    inner: TcpListener,
    /// One permit per open connection.
    permits: Arc<Semaphore>,
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                // The semaphore is never closed; if it were, accept nothing.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => return (BoundedStream::new(stream, permit), addr),
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning, as axum's own listener does.
                    debug!(error = %e, "accepting an API connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that fails with `TimedOut` after [`API_CONNECTION_IDLE`]
/// without a byte written to it, and frees its slot when dropped.
struct BoundedStream {
    /// The connection.
    inner: TcpStream,
    /// When the connection must end unless the node writes before.
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Held while open.
    _permit: OwnedSemaphorePermit,
}

impl BoundedStream {
    fn new(inner: TcpStream, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(API_CONNECTION_IDLE)),
            _permit: permit,
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn idle_over() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "control API connection idle for too long",
    )
}

impl AsyncRead for BoundedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(idle_over()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(idle_over()));
        }
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            // Output reached the client: the connection is in use.
            let next = tokio::time::Instant::now() + API_CONNECTION_IDLE;
            self.deadline.as_mut().reset(next);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` until `cancel` fires, then finishes the
/// requests in flight. Connections are bounded in number and lifetime.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> Result<(), ApiError> {
    let addr = listener.local_addr().map_err(|source| ApiError::Serve {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    info!(%addr, "control API listening");
    let listener = BoundedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(MAX_API_CONNECTIONS)),
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
        .map_err(|source| ApiError::Serve { addr, source })
}

/// Times every request into the histogram. The route label is the route
/// pattern (never the raw path, which a client chooses), so its values are
/// bounded by the router.
async fn observe(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "other",
    };
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    shared
        .durations
        .with_label_values(&[route.as_str(), method, status.as_str()])
        .observe(start.elapsed().as_secs_f64());
    debug!(%route, method, status = status.as_u16(), "api request");
    resp
}

async fn require_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(t) if token_matches(t, shared.state.token.as_bytes()) => next.run(req).await,
        Some(_) => HttpError(StatusCode::UNAUTHORIZED, "wrong API token".into()).into_response(),
        None => HttpError(
            StatusCode::UNAUTHORIZED,
            "missing API token: send `Authorization: Bearer <token>` with the token from DATA_DIR/api.token".into(),
        )
        .into_response(),
    }
}

async fn not_found() -> HttpError {
    HttpError(StatusCode::NOT_FOUND, "no such endpoint".into())
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let s = &shared.state;
    // Gauges are refreshed on scrape; a network that does not answer
    // leaves the last values rather than failing the whole scrape.
    if let Ok(peers) = s.network.connected_peers().await {
        s.network.metrics().set_connected_peers(peers.len());
    }
    if let Ok(n) = s.network.routing_table_size().await {
        s.network.metrics().set_routing_table_peers(n);
    }
    {
        let now = unix_now_ms();
        let book = lock_book(&s.book);
        s.network
            .metrics()
            .set_nodes(book.len(), book.online(now).len());
    }
    let checked = agora_protocol::sign::verifications();
    shared
        .signature_checks
        .inc_by(checked.saturating_sub(shared.signature_checks.get()));
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&s.registry.gather(), &mut buf) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], buf).into_response(),
        Err(e) => HttpError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
        .into_response(),
    }
}

async fn id(State(shared): State<Arc<Shared>>) -> Result<Json<IdInfo>, HttpError> {
    let s = &shared.state;
    let listen = s.network.listen_addrs().await?;
    let external = s.network.external_addrs().await?;
    Ok(Json(IdInfo {
        peer_id: s.network.peer_id().to_string(),
        agent_version: s.agent_version.clone(),
        listen_addrs: listen.iter().map(|a| a.to_string()).collect(),
        external_addrs: external.iter().map(|a| a.to_string()).collect(),
        executors: (s.executors)(),
    }))
}

async fn peers(State(shared): State<Arc<Shared>>) -> Result<Json<PeersInfo>, HttpError> {
    let s = &shared.state;
    let mut connected = s.network.connected_peers().await?;
    connected.sort_by_key(|p| p.to_bytes());
    let addrs = crate::lock(&s.peer_addrs);
    let peers = connected
        .into_iter()
        .map(|p| PeerInfo {
            peer_id: p.to_string(),
            addr: addrs.get(&p).map(|a| a.to_string()),
        })
        .collect();
    Ok(Json(PeersInfo { peers }))
}

async fn nodes(State(shared): State<Arc<Shared>>) -> Json<NodesInfo> {
    let s = &shared.state;
    let me = s.network.peer_id();
    let now = unix_now_ms();
    let rows = lock_book(&s.book).list(now);
    let nodes = rows
        .into_iter()
        .map(|row| {
            let a = &row.record.advert;
            let executors: Vec<String> = a.executor_kinds().into_keys().collect();
            NodeInfo {
                peer_id: row.peer.to_string(),
                state: row.state.as_str().to_owned(),
                is_self: row.peer == me,
                agent_version: a.agent_version.clone(),
                executors,
                wasm: a.wasm.clone(),
                docker_images: a.docker_images.as_ref().map(Vec::len),
                cpu_cores: a.cpu_cores,
                memory_bytes: a.memory_bytes,
                max_jobs: a.max_jobs,
                running_jobs: a.running_jobs,
                load: if a.max_jobs == 0 {
                    0.0
                } else {
                    f64::from(a.running_jobs) / f64::from(a.max_jobs)
                },
                labels: a.labels.clone(),
                listen_addrs: a.listen_addrs.clone(),
                last_seen_ms: row.record.last_seen_ms,
                last_seen_secs_ago: now.saturating_sub(row.record.last_seen_ms) / 1000,
            }
        })
        .collect();
    Json(NodesInfo { nodes })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A connection that keeps getting output outlives the idle limit
    /// many times over; once output stops, it ends after the limit.
    #[tokio::test(start_paused = true)]
    async fn connections_live_while_written_to_and_end_when_idle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (mut client, (server, _)) = (client.unwrap(), accepted.unwrap());
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        let mut server = BoundedStream::new(server, permit);
        let mut buf = [0u8; 1];
        for _ in 0..10 {
            tokio::time::sleep(API_CONNECTION_IDLE / 2).await;
            server.write_all(b"k").await.unwrap();
            client.read_exact(&mut buf).await.unwrap();
        }
        tokio::time::sleep(API_CONNECTION_IDLE + Duration::from_secs(1)).await;
        let e = server.write_all(b"k").await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        let e = server.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    }
}
