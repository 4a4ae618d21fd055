//! The HTTP server: listeners on a Unix socket and on TCP (plain or TLS),
//! the routes, and the limits every connection lives under.
//!
//! Every connection gets a deadline for its request headers, a lifetime,
//! and a place among a bounded number of connections (and, over TCP, a
//! bounded number per address); every request a body limit and a deadline
//! for its answer. Errors are JSON bodies with a message (see
//! [`ApiError`]).
//!
//! The socket is bound inside a private directory, given its mode and
//! group there, and only then renamed into place, so there is no moment
//! when it is reachable with the wrong permissions.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path as UrlPath, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::access::{Access, Peer, authorize};
use crate::types::{
    AckRequest, AlertsQuery, Caller, EventsIn, HistoryQuery, Need, NoticeRequest, SilenceQuery, SilenceRequest,
    TestRequest,
};
use crate::{ApiError, Call, paths};

/// The largest request body: a silence or a batch of events, not a file.
pub const MAX_BODY: usize = 256 * 1024;
/// The largest Alertmanager notification: up to 1,000 alerts with their
/// labels and annotations (`max_alerts` on the receiver keeps it below).
pub const MAX_WEBHOOK_BODY: usize = 4 * 1024 * 1024;
/// How long a client may take to send its request headers.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// How long the daemon may take to answer a request.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(15);
/// How long one connection may live (keep-alive included).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Connections open at once, in all and per TCP address.
pub const MAX_CONNECTIONS: usize = 256;
pub const MAX_PER_ADDRESS: usize = 32;

/// Where to listen.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub socket: Option<SocketConfig>,
    pub tcp: Option<TcpConfig>,
    pub metrics: Option<MetricsConfig>,
}

/// The listener Prometheus scrapes: `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub addr: SocketAddr,
    /// Scrapes need a token with the `read` scope.
    pub token: bool,
}

#[derive(Debug, Clone)]
pub struct SocketConfig {
    pub path: PathBuf,
    /// The socket's mode (0660 unless configured).
    pub mode: u32,
    /// The group that owns it (and so may connect), if not the daemon's.
    pub group: Option<u32>,
}

#[derive(Clone)]
pub struct TcpConfig {
    pub addr: SocketAddr,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// More routes served beside the API on this listener only (the web
    /// console); they do their own access checks.
    pub extra: Option<Router>,
}

impl std::fmt::Debug for TcpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConfig")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .field("extra", &self.extra.is_some())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the API socket {path}: {source}")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("another alerter answers on the API socket {0}; stop it, or give this one another `api.socket`")]
    SocketInUse(PathBuf),
    #[error("cannot listen on {addr} for the API: {source}")]
    Tcp { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
}

/// The access model in force, replaced on reload.
#[derive(Debug, Clone)]
pub struct AccessHandle(Arc<RwLock<Arc<Access>>>);

impl AccessHandle {
    pub fn new(access: Access) -> AccessHandle {
        AccessHandle(Arc::new(RwLock::new(Arc::new(access))))
    }

    pub fn set(&self, access: Access) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(access);
    }

    pub fn get(&self) -> Arc<Access> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

struct Shared {
    calls: mpsc::Sender<Call>,
    access: AccessHandle,
    /// On the metrics listener: whether scrapes need a `read` token.
    metrics_token: bool,
}

impl Shared {
    /// Who calls, and whether they may do what `need` says.
    fn caller(&self, peer: &Peer, headers: &HeaderMap, need: Need) -> Result<Caller, ApiError> {
        let bearer = match headers.get(axum::http::header::AUTHORIZATION) {
            None => None,
            Some(v) => {
                let v = v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(|| {
                    ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
                })?;
                Some(v)
            }
        };
        let caller = self.access.get().caller(peer, bearer);
        let caller = match caller {
            Ok(c) => c,
            Err(e) => {
                debug!(%peer, "refused: {e}");
                return Err(e);
            }
        };
        authorize(&caller, need).inspect_err(|e| debug!(%peer, "refused: {e}"))?;
        Ok(caller)
    }

    /// Hands a call to the daemon and waits for its answer.
    async fn ask<T>(&self, call: impl FnOnce(crate::Reply<T>) -> Call) -> Result<T, ApiError> {
        ask(&self.calls, call).await
    }
}

/// Hands a call to the daemon over `calls` and waits for its answer.
pub async fn ask<T>(calls: &mpsc::Sender<Call>, call: impl FnOnce(crate::Reply<T>) -> Call) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    let gone = || ApiError::Unavailable("the daemon is shutting down".into());
    calls.send(call(tx)).await.map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?
}

/// A JSON body whose rejection is an [`ApiError`] with the status axum
/// chose (400 malformed, 413 too large, 415 not JSON, 422 wrong shape).
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(r) => Err(ApiError::Http { status: r.status().as_u16(), message: r.body_text() }),
        }
    }
}

/// A query string whose rejection is an [`ApiError`].
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    axum::extract::Query<T>: FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(r) => Err(ApiError::BadRequest(r.body_text())),
        }
    }
}

type St = State<Arc<Shared>>;
type PeerExt = axum::Extension<Peer>;

async fn status(State(s): St, axum::Extension(peer): PeerExt, h: HeaderMap) -> Result<Response, ApiError> {
    s.caller(&peer, &h, Need::Read)?;
    Ok(axum::Json(s.ask(Call::Status).await?).into_response())
}

async fn list_silences(
    State(s): St,
    axum::Extension(peer): PeerExt,
    h: HeaderMap,
    Query(query): Query<SilenceQuery>,
) -> Result<Response, ApiError> {
    s.caller(&peer, &h, Need::Read)?;
    Ok(axum::Json(s.ask(|reply| Call::Silences { query, reply }).await?).into_response())
}

async fn add_silence(
    State(s): St,
    axum::Extension(peer): PeerExt,
    h: HeaderMap,
    Body(silence): Body<SilenceRequest>,
) -> Result<Response, ApiError> {
    let by = s.caller(&peer, &h, Need::Operate)?;
    let out = s.ask(|reply| Call::AddSilence { silence, by, reply }).await?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(out)).into_response())
}

async fn expire_silence(
    State(s): St,
    axum::Extension(peer): PeerExt,
    h: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let by = s.caller(&peer, &h, Need::Operate)?;
    Ok(axum::Json(s.ask(|reply| Call::ExpireSilence { id, by, reply }).await?).into_response())
}

async fn history(
    State(s): St,
    axum::Extension(peer): PeerExt,
    h: HeaderMap,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    s.caller(&peer, &h, Need::Read)?;
    Ok(axum::Json(s.ask(|reply| Call::History { query, reply }).await?).into_response())
}

async fn reload(State(s): St, axum::Extension(peer): PeerExt, h: HeaderMap) -> Result<Response, ApiError> {
    let by = s.caller(&peer, &h, Need::Admin)?;
    Ok(axum::Json(s.ask(|reply| Call::Reload { by, reply }).await?).into_response())
}

async fn test_notification(
    State(s): St,
    axum::Extension(peer): PeerExt,
    h: HeaderMap,
    Body(test): Body<TestRequest>,
) -> Result<Response, ApiError> {
    let by = s.caller(&peer, &h, Need::Operate)?;
    let out = s.ask(|reply| Call::Test { test, by, reply }).await?;
    Ok((axum::http::StatusCode::ACCEPTED, axum::Json(out)).into_response())
}

async fn list_notices(State(s): St, axum::Extension(peer): PeerExt, h: HeaderMap) -> Result<Response, ApiError> {
    s.caller(&peer, &h, Need::Read)?;
    Ok(axum::Json(s.ask(Call::Notices).await?).into_response())
}

async fn add_notice(
    State(s): St,
    axum::Extension(peer): PeerExt,
    h: HeaderMap,
    Body(notice): Body<NoticeRequest>,
) -> Result<Response, ApiError> {
    let by = s.caller(&peer, &h, Need::Operate)?;
    let out = s.ask(|reply| Call::AddNotice { notice, by, reply }).await?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(out)).into_response())
}

async fn preview_notice(
    State(s): St,
    axum::Extension(peer): PeerExt,
    h: HeaderMap,
    Body(notice): Body<NoticeRequest>,
) -> Result<Response, ApiError> {
    s.caller(&peer, &h, Need::Read)?;
    Ok(axum::Json(s.ask(|reply| Call::PreviewNotice { notice, reply }).await?).into_response())
}

async fn network(State(s): St, axum::Extension(peer): PeerExt, h: HeaderMap) -> Result<Response, ApiError> {
    s.caller(&peer, &h, Need::Read)?;
    Ok(axum::Json(s.ask(Call::Network).await?).into_response())
}

async fn directory(State(s): St, axum::Extension(peer): PeerExt, h: HeaderMap) -> Result<Response, ApiError> {
    s.caller(&peer, &h, Need::Read)?;
    Ok(axum::Json(s.ask(Call::Directory).await?).into_response())
}

async fn cancel_notice(
    State(s): St,
    axum::Extension(peer): PeerExt,
    h: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let by = s.caller(&peer, &h, Need::Operate)?;
    Ok(axum::Json(s.ask(|reply| Call::CancelNotice { id, by, reply }).await?).into_response())
}

async fn alerts(
    State(s): St,
    axum::Extension(peer): PeerExt,
    h: HeaderMap,
    Query(query): Query<AlertsQuery>,
) -> Result<Response, ApiError> {
    s.caller(&peer, &h, Need::Read)?;
    Ok(axum::Json(s.ask(|reply| Call::Alerts { query, reply }).await?).into_response())
}

async fn ack(
    State(s): St,
    axum::Extension(peer): PeerExt,
    h: HeaderMap,
    Body(ack): Body<AckRequest>,
) -> Result<Response, ApiError> {
    let by = s.caller(&peer, &h, Need::Operate)?;
    Ok(axum::Json(s.ask(|reply| Call::Ack { ack, by, reply }).await?).into_response())
}

/// The most events one request may carry.
pub const MAX_EVENTS: usize = 1000;

async fn ingest(
    State(s): St,
    axum::Extension(peer): PeerExt,
    h: HeaderMap,
    Body(events): Body<EventsIn>,
) -> Result<Response, ApiError> {
    let by = s.caller(&peer, &h, Need::Ingest)?;
    let events = match events {
        EventsIn::One(e) => vec![e],
        EventsIn::Many(v) => v,
    };
    if events.len() > MAX_EVENTS {
        return Err(ApiError::Http {
            status: 413,
            message: format!("{} events in one request; send at most {MAX_EVENTS}", events.len()),
        });
    }
    Ok(axum::Json(s.ask(|reply| Call::Ingest { events, by, reply }).await?).into_response())
}

/// An Alertmanager webhook notification for an `alertmanager` source.
/// Refusals are logged (at most one line a second, so a hostile peer cannot
/// flood the journal), since the sender is a machine nobody watches.
async fn alertmanager(
    State(s): St,
    axum::extract::Path(source): axum::extract::Path<String>,
    axum::Extension(peer): PeerExt,
    req: Request,
) -> Result<Response, ApiError> {
    let result = async {
        // Who asks first: a stranger's body is never read.
        let by = s.caller(&peer, req.headers(), Need::Ingest)?;
        let too_big = || ApiError::Http {
            status: 413,
            message: format!(
                "the body is larger than {} MiB; set `max_alerts` on the webhook receiver",
                MAX_WEBHOOK_BODY >> 20
            ),
        };
        let declared =
            req.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_WEBHOOK_BODY as u64) {
            return Err(too_big());
        }
        let body = axum::body::to_bytes(req.into_body(), MAX_WEBHOOK_BODY).await.map_err(|e| {
            if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
                too_big()
            } else {
                ApiError::BadRequest(format!("the body could not be read: {e}"))
            }
        })?;
        let body = body.to_vec();
        s.ask(|reply| Call::Alertmanager { source: source.clone(), body, by, reply }).await
    }
    .await;
    match result {
        Ok(done) => Ok(axum::Json(done).into_response()),
        Err(e) => {
            if REFUSALS.admit() {
                warn!(%peer, source = ?source, "refused an Alertmanager notification: {e}");
            }
            Err(e)
        }
    }
}

/// At most one refusal line per second, counted in between.
static REFUSALS: RateLimit = RateLimit::new();

struct RateLimit {
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl RateLimit {
    const fn new() -> RateLimit {
        RateLimit { last: std::sync::Mutex::new(None) }
    }

    fn admit(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(now);
        true
    }
}

async fn metrics(State(s): St, axum::Extension(peer): PeerExt, h: HeaderMap) -> Result<Response, ApiError> {
    if s.metrics_token {
        s.caller(&peer, &h, Need::Read)?;
    }
    let text = s.ask(Call::Metrics).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// Alive: the engine loop answers (a stuck one does not, and the
/// deadline makes that a 503).
async fn healthz(State(s): St) -> Result<Response, ApiError> {
    let _ = s.ask(Call::Ready).await;
    Ok("ok\n".into_response())
}

/// Ready: started, and the state store takes writes.
async fn readyz(State(s): St) -> Result<Response, ApiError> {
    s.ask(Call::Ready).await?;
    Ok("ready\n".into_response())
}

/// The OpenAPI document: no secret, served to anyone who reaches the API.
async fn openapi() -> Response {
    axum::Json(crate::openapi::document()).into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no endpoint {} {}; the API's paths begin with /api/v1/",
        req.method(),
        req.uri().path()
    ))
}

/// Every request has [`ANSWER_DEADLINE`] to be answered.
async fn deadline(req: Request, next: Next) -> Response {
    match tokio::time::timeout(ANSWER_DEADLINE, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::Unavailable(format!(
            "the daemon did not answer within {} s; it may be overloaded, try again",
            ANSWER_DEADLINE.as_secs()
        ))
        .into_response(),
    }
}

/// The API's routes, and `extra` (the web console, on TCP) beside them.
fn router(shared: Arc<Shared>, extra: Option<Router>) -> Router {
    let api = Router::new()
        .route(paths::STATUS, get(status))
        .route(paths::SILENCES, get(list_silences).post(add_silence))
        .route("/api/v1/silences/{id}", delete(expire_silence))
        .route(paths::ALERTS, get(alerts))
        .route(paths::ACKS, post(ack))
        .route(paths::EVENTS, post(ingest))
        .route("/api/v1/alertmanager/{source}", post(alertmanager))
        .route(paths::NOTICES, get(list_notices).post(add_notice))
        .route(paths::NOTICE_PREVIEW, post(preview_notice))
        .route(paths::NETWORK, get(network))
        .route(paths::DIRECTORY, get(directory))
        .route(paths::HISTORY, get(history))
        .route(paths::RELOAD, post(reload))
        .route(paths::TEST, post(test_notification))
        .route("/api/v1/notices/{id}", delete(cancel_notice))
        .route(paths::OPENAPI, get(openapi))
        .with_state(shared);
    let app = match extra {
        Some(extra) => api.merge(extra),
        None => api,
    };
    app.fallback(not_found).layer(DefaultBodyLimit::max(MAX_BODY)).layer(middleware::from_fn(deadline))
}

fn metrics_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(paths::METRICS, get(metrics))
        .route(paths::HEALTHZ, get(healthz))
        .route(paths::READYZ, get(readyz))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(1024))
        .layer(middleware::from_fn(deadline))
        .with_state(shared)
}

/// The running server.
#[derive(Debug)]
pub struct Server {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    socket: Option<PathBuf>,
    tcp_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
}

impl Server {
    /// The metrics listener's address, if it listens.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The TCP address bound (with the port the system chose for `:0`).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Stops accepting, lets requests under way finish (for a moment), and
    /// removes the socket.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        if let Some(p) = self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Starts listening. Calls go to `calls`; `access` decides who may make
/// them (and can be replaced while the server runs).
pub async fn start(cfg: &ServerConfig, calls: mpsc::Sender<Call>, access: AccessHandle) -> Result<Server, ServeError> {
    let shared = Arc::new(Shared { calls: calls.clone(), access: access.clone(), metrics_token: false });
    let app = router(shared.clone(), None);
    let (stop, stopped) = watch::channel(false);
    let limits = Arc::new(Limits { all: Arc::new(Semaphore::new(MAX_CONNECTIONS)), per_ip: Mutex::default() });
    let mut tasks = Vec::new();
    let mut socket = None;
    if let Some(sc) = &cfg.socket {
        let listener = bind_socket(sc)?;
        info!(socket = %sc.path.display(), "control API listening");
        socket = Some(sc.path.clone());
        tasks.push(tokio::spawn(accept_unix(listener, app.clone(), stopped.clone(), limits.clone())));
    }
    let mut tcp_addr = None;
    if let Some(tc) = &cfg.tcp {
        let listener = TcpListener::bind(tc.addr).await.map_err(|source| ServeError::Tcp { addr: tc.addr, source })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Tcp { addr: tc.addr, source })?;
        info!(%addr, tls = tc.tls.is_some(), "control API listening");
        tcp_addr = Some(addr);
        let tls = tc.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let app = router(shared.clone(), tc.extra.clone());
        tasks.push(tokio::spawn(accept_tcp(listener, tls, app, stopped.clone(), limits.clone())));
    }
    let mut metrics_addr = None;
    if let Some(mc) = &cfg.metrics {
        // Metrics are not worth failing a start for: a port taken by
        // another program (or another alerter) is a warning.
        match TcpListener::bind(mc.addr).await.and_then(|l| Ok((l.local_addr()?, l))) {
            Ok((addr, listener)) => {
                info!(%addr, "metrics listening");
                metrics_addr = Some(addr);
                let shared = Arc::new(Shared { calls, access, metrics_token: mc.token });
                let app = metrics_router(shared);
                tasks.push(tokio::spawn(accept_tcp(listener, None, app, stopped.clone(), limits.clone())));
            }
            Err(e) => warn!(addr = %mc.addr, "cannot listen for metrics: {e}; running without them"),
        }
    }
    Ok(Server { stop, tasks, socket, tcp_addr, metrics_addr })
}

/// Binds the socket in a private directory beside its final place, sets
/// its mode and group, and renames it into place.
fn bind_socket(sc: &SocketConfig) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Socket { path: sc.path.clone(), source };
    let dir = sc.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(err)?;
    }
    if sc.path.exists() {
        // A socket nobody answers on is what a daemon that was killed
        // leaves behind; one that answers belongs to another daemon.
        match std::os::unix::net::UnixStream::connect(&sc.path) {
            Ok(_) => return Err(ServeError::SocketInUse(sc.path.clone())),
            Err(_) => std::fs::remove_file(&sc.path).map_err(err)?,
        }
    }
    let private = dir.join(format!(".alerter-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private).map_err(err)?;
    let result = (|| {
        let tmp = private.join("api.sock");
        let std_listener = std::os::unix::net::UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(sc.mode))?;
        if let Some(gid) = sc.group {
            nix::unistd::chown(&tmp, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(std::io::Error::from)?;
        }
        std::fs::rename(&tmp, &sc.path)?;
        std_listener.set_nonblocking(true)?;
        UnixListener::from_std(std_listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    result.map_err(err)
}

struct Limits {
    all: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// A place among the open connections of one address, given back on drop.
struct IpSlot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.limits.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl Limits {
    fn take_ip(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= MAX_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(IpSlot { limits: self.clone(), ip })
    }
}

async fn accept_unix(listener: UnixListener, app: Router, mut stopped: watch::Receiver<bool>, limits: Arc<Limits>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("control API socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limits.all.clone().try_acquire_owned() else {
            debug!("control API: too many connections; one refused");
            continue;
        };
        let peer = match stream.peer_cred() {
            Ok(c) => Peer::Unix { uid: c.uid(), gid: c.gid(), pid: c.pid() },
            Err(e) => {
                warn!("control API socket: cannot learn the peer's user: {e}; connection closed");
                continue;
            }
        };
        let app = app.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, app, stopped).await;
            drop(permit);
        });
    }
}

async fn accept_tcp(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    mut stopped: watch::Receiver<bool>,
    limits: Arc<Limits>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => return,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!("control API: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limits.all.clone().try_acquire_owned() else {
            debug!(%addr, "control API: too many connections; one refused");
            continue;
        };
        let Some(slot) = limits.take_ip(addr.ip()) else {
            debug!(%addr, "control API: too many connections from this address; one refused");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stopped = stopped.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let peer = Peer::Tcp { addr, tls: tls.is_some() };
            match tls {
                None => serve_connection(stream, peer, app, stopped).await,
                Some(acceptor) => match tokio::time::timeout(HEADER_DEADLINE, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => serve_connection(s, peer, app, stopped).await,
                    Ok(Err(e)) => debug!(%addr, "control API: TLS handshake failed: {e}"),
                    Err(_) => debug!(%addr, "control API: TLS handshake timed out"),
                },
            }
            drop((permit, slot));
        });
    }
}

async fn serve_connection<S>(stream: S, peer: Peer, app: Router, mut stopped: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(peer.clone());
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_DEADLINE)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let lifetime = tokio::time::sleep(CONNECTION_LIFETIME);
    tokio::pin!(lifetime);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!("control API connection: {e}");
                }
                return;
            }
            _ = stopped.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut lifetime, if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A TLS server configuration from PEM text: the certificate chain and
/// its private key (read by the caller, who checks the key file's owner
/// and mode first).
pub fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ServerConfig, ServeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::Tls(format!("the certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(ServeError::Tls("the certificate file holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| ServeError::Tls(format!("the key file: {e}")))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| ServeError::Tls(e.to_string()))
}
