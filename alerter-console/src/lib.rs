//! alerter-console: the web console, served beside the control API on its
//! TCP listener (`api.listen`).
//!
//! Every page is made of the answers to the API's calls and rendered on
//! the server (minijinja, the project's one template engine), so it reads
//! without JavaScript; a small script adds live updates of the overview
//! and live previews. All assets are in the binary.
//!
//! Access is the API's: a browser logs in with a named token, whose scope
//! decides what the pages offer and whose name history records; the
//! session remembers the token (by its hash), so a reload that removes it
//! or changes its scope applies at once. Every form carries the session's
//! CSRF token, and a post from another origin, or without the token, is
//! refused before any call is made (its body, at most 256 KiB, has been
//! read by then). Logins are refused over plain HTTP except from this
//! machine.

#![forbid(unsafe_code)]

pub mod session;
pub mod view;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use alerter_api::access::Peer;
use alerter_api::server::AccessHandle;
use alerter_api::{ApiError, Call, Caller, Need, Scope, types};
use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::session::{Session, Sessions, same};
use crate::view::Views;

/// The session cookie, and the cookie of the login form's CSRF token.
/// `__Host-`: the browser keeps it only if set over a secure connection,
/// for this host alone and the whole path, so no one tampering with plain
/// HTTP on the LAN can plant a session of theirs (`__Secure-` for the login
/// form's, which lives on `/login` only).
const COOKIE: &str = "__Host-alerter_session";
const LOGIN_COOKIE: &str = "__Secure-alerter_login";
/// Alerts on one page of the overview.
pub const PAGE: usize = 50;
/// The highest page number taken (beyond it, the offset would overflow).
const MAX_PAGE_NO: usize = 1 << 20;
/// How often the overview asks for news (the script's interval, in ms).
pub const LIVE_MS: u64 = 1000;

/// The console of one daemon.
pub struct Console {
    calls: mpsc::Sender<Call>,
    access: AccessHandle,
    sessions: Sessions,
    views: Views,
    /// The daemon's name, shown in every title.
    name: String,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The console's routes, to be served beside the API.
pub fn router(calls: mpsc::Sender<Call>, access: AccessHandle, name: &str) -> Router {
    let console =
        Arc::new(Console { calls, access, sessions: Sessions::default(), views: Views::new(), name: name.to_string() });
    Router::new()
        .route("/", get(overview))
        .route("/live", get(live))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/alerts/{id}", get(alert))
        .route("/alerts/{id}/ack", post(ack))
        .route("/silences", get(silences).post(add_silence))
        .route("/silences/preview", get(silence_preview))
        .route("/silences/{id}/expire", post(expire_silence))
        .route("/notices", get(notices).post(add_notice))
        .route("/notices/preview", post(notice_preview))
        .route("/notices/{id}/cancel", post(cancel_notice))
        .route("/history", get(history))
        .route("/network", get(network))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .layer(middleware::from_fn(page_headers))
        .with_state(console)
}

type St = State<Arc<Console>>;
type PeerExt = axum::Extension<Peer>;

/// What every page may not do: be framed, run scripts or styles from
/// anywhere but itself, be cached, or leak its address.
async fn page_headers(req: Request, next: Next) -> Response {
    let tls = matches!(req.extensions().get::<Peer>(), Some(Peer::Tcp { tls: true, .. }));
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if tls {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    res
}

/// Who is logged in on a request.
struct Who {
    caller: Caller,
    session: Session,
}

impl Who {
    fn can(&self, need: Need) -> bool {
        self.caller.scope.allows(need)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A refusal of a page: to the login page for a browser that is not
/// logged in (with where to come back to), else a page saying why.
enum Refusal {
    Login(String),
    Error(StatusCode, String),
}

impl Console {
    /// The logged-in caller of a request, their token still configured
    /// and allowed `need`.
    fn who(&self, headers: &HeaderMap, need: Need, back: &str) -> Result<Who, Refusal> {
        let login = || Refusal::Login(back.to_string());
        let id = cookie(headers, COOKIE).ok_or_else(login)?;
        let session = self.sessions.get(id, Instant::now()).ok_or_else(login)?;
        let Some(caller) = self.access.get().by_token_id(&session.token) else {
            self.sessions.end(id);
            return Err(login());
        };
        if !caller.scope.allows(need) {
            return Err(Refusal::Error(
                StatusCode::FORBIDDEN,
                format!(
                    "{} has the scope `{}`, which does not allow this (it needs `{}`)",
                    caller.name,
                    caller.scope.as_str(),
                    need.as_str()
                ),
            ));
        }
        Ok(Who { caller, session })
    }

    /// The caller of a form post: logged in, the form's CSRF token the
    /// session's, sent from this console's own pages, allowed `need`.
    /// A post that fails any of these is refused, never redirected (a
    /// forged post must not even learn where the login page is).
    fn poster(&self, headers: &HeaderMap, csrf: &str, need: Need) -> Result<Who, Box<Response>> {
        let refuse = |who: Option<&Who>, status: StatusCode, m: &str| Box::new(self.error(who, status, m));
        if !same_origin(headers) {
            return Err(refuse(None, StatusCode::FORBIDDEN, "the form was sent from another site; refused"));
        }
        let who = match self.who(headers, need, "/") {
            Ok(w) => w,
            Err(Refusal::Login(_)) => {
                return Err(refuse(None, StatusCode::FORBIDDEN, "not logged in, or the session ended; log in again"));
            }
            Err(Refusal::Error(status, m)) => return Err(refuse(None, status, &m)),
        };
        if csrf.is_empty() || !same(csrf, &who.session.csrf) {
            return Err(refuse(
                Some(&who),
                StatusCode::FORBIDDEN,
                "the form's security token is missing or stale; reload the page and try again",
            ));
        }
        Ok(who)
    }

    fn refuse(&self, r: Refusal) -> Response {
        match r {
            Refusal::Login(back) => Redirect::to(&format!("/login?next={}", view::url_encode(&back))).into_response(),
            Refusal::Error(status, m) => self.error(None, status, &m),
        }
    }

    fn error(&self, who: Option<&Who>, status: StatusCode, message: &str) -> Response {
        let ctx = self.base(who, "Error", "");
        let html =
            self.views.render("error.html", ctx, serde_json::json!({ "message": message, "status": status.as_u16() }));
        (status, html).into_response()
    }

    fn api_error(&self, who: &Who, e: &ApiError) -> Response {
        self.error(Some(who), e.status(), &e.to_string())
    }

    /// What every page's frame needs.
    fn base(&self, who: Option<&Who>, title: &str, page: &str) -> serde_json::Value {
        serde_json::json!({
            "daemon": self.name,
            "title": title,
            "page": page,
            "user": who.map(|w| serde_json::json!({ "name": w.caller.name, "scope": w.caller.scope.as_str() })),
            "csrf": who.map(|w| w.session.csrf.clone()),
            "can_operate": who.is_some_and(|w| w.can(Need::Operate)),
        })
    }

    fn page(&self, who: &Who, template: &str, title: &str, page: &str, data: serde_json::Value) -> Response {
        view::html(self.views.render(template, self.base(Some(who), title, page), data))
    }

    async fn ask<T>(&self, call: impl FnOnce(alerter_api::Reply<T>) -> Call) -> Result<T, ApiError> {
        alerter_api::server::ask(&self.calls, call).await
    }
}

/// Whether a post comes from this console's own pages, by what browsers
/// say of where a request comes from: `Sec-Fetch-Site`, else `Origin`
/// against `Host`. A client that sends neither (curl) is let through to
/// the CSRF check, which it cannot pass without a session's page.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    match (headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()), headers.get(header::HOST)) {
        (Some(origin), Some(host)) => {
            let host = host.to_str().unwrap_or("");
            origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) == Some(host)
        }
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// Whether a login may happen over this connection: TLS, or plain HTTP
/// from this machine (where no one else sees the token go by).
pub fn login_allowed_over(peer: &Peer) -> bool {
    match peer {
        Peer::Tcp { tls: true, .. } => true,
        Peer::Tcp { addr, tls: false } => addr.ip().is_loopback(),
        Peer::Unix { .. } => false,
    }
}

/// The session cookie's attributes: never readable by scripts, never sent
/// with another site's requests, and only over a secure connection
/// (browsers count loopback as one).
fn session_cookie(value: &str, max_age: Option<u64>) -> String {
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Secure{age}")
}

// ---- login and logout ----

#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Where to go after a login: a path of this console, nothing else (no
/// `//other.site`, no scheme), so the login page cannot be made to send
/// anyone elsewhere.
fn local_path(next: Option<&str>) -> String {
    match next {
        // Printable ASCII only: browsers drop tabs and line breaks from a
        // URL, so `/\t/evil.example` would become `//evil.example`.
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && !p.contains("://")
                && p.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            p.to_string()
        }
        _ => "/".into(),
    }
}

async fn login_page(State(c): St, axum::Extension(peer): PeerExt, Query(q): Query<LoginQuery>) -> Response {
    login_form(&c, &peer, q.next.as_deref(), None)
}

/// The login page with a new login token in its form and cookie. Over a
/// connection a login would be refused on, it says so and has no form
/// (nobody types a token that would then cross the LAN in the clear).
fn login_form(c: &Console, peer: &Peer, next: Option<&str>, error: Option<&str>) -> Response {
    let token = session::random_hex(16);
    let mut ctx = c.base(None, "Log in", "login");
    ctx["next"] = local_path(next).into();
    let data = serde_json::json!({
        "login_csrf": token,
        "error": error,
        "refused": (!login_allowed_over(peer)).then_some(
            "Logging in over plain HTTP is allowed from this machine only: set `api.tls` and use https://"),
    });
    let mut res = view::html(c.views.render("login.html", ctx, data));
    let cookie = format!("{LOGIN_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict; Secure; Max-Age=3600");
    res.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("hex"));
    res
}

#[derive(Debug, Default, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(State(c): St, axum::Extension(peer): PeerExt, headers: HeaderMap, form: Form<LoginForm>) -> Response {
    let Form(form) = form;
    let now = Instant::now();
    // A refusal draws the form again with a fresh token, so the next try
    // can succeed without a reload.
    let refuse = |status: StatusCode, m: &str| {
        let mut res = login_form(&c, &peer, form.next.as_deref(), Some(m));
        *res.status_mut() = status;
        res
    };
    if !login_allowed_over(&peer) {
        return refuse(
            StatusCode::FORBIDDEN,
            "Logging in over plain HTTP is allowed from this machine only: set `api.tls` and use https://",
        );
    }
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if !same_origin(&headers) || expected.is_empty() || !same(expected, &form.csrf) {
        return refuse(StatusCode::FORBIDDEN, "The login form was stale or sent from elsewhere; try again.");
    }
    let ip: IpAddr = match &peer {
        Peer::Tcp { addr, .. } => addr.ip(),
        Peer::Unix { .. } => IpAddr::from([127, 0, 0, 1]),
    };
    if !c.sessions.login_allowed(ip, now) {
        return refuse(StatusCode::TOO_MANY_REQUESTS, "Too many failed logins from this address; wait a few minutes.");
    }
    let (caller, token) = match c.access.get().login(&form.token) {
        Ok(found) => found,
        Err(_) => {
            c.sessions.login_failed(ip, now);
            tracing::warn!(%peer, "console: a login with a token that is not configured");
            return refuse(StatusCode::UNAUTHORIZED, "That token is not one of this daemon's `api.tokens`.");
        }
    };
    if caller.scope == Scope::Ingest {
        return refuse(
            StatusCode::FORBIDDEN,
            "An `ingest` token can post events only; log in with a `read` token or more.",
        );
    }
    c.sessions.login_succeeded(ip);
    if let Some(old) = cookie(&headers, COOKIE) {
        c.sessions.end(old);
    }
    let (id, _) = c.sessions.create(token, now);
    tracing::info!(%peer, who = %caller.name, "console: logged in");
    let mut res = Redirect::to(&local_path(form.next.as_deref())).into_response();
    let h = res.headers_mut();
    h.append(header::SET_COOKIE, HeaderValue::from_str(&session_cookie(&id, None)).expect("hex"));
    let gone = format!("{LOGIN_COOKIE}=; Path=/login; Secure; Max-Age=0");
    h.append(header::SET_COOKIE, HeaderValue::from_str(&gone).expect("ascii"));
    res
}

#[derive(Debug, Default, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(c): St, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    // A live session logs out with its form's token; one that already
    // ended (idle, its token removed) just has its cookie cleared.
    if !same_origin(&headers) {
        return c.error(None, StatusCode::FORBIDDEN, "the form was sent from another site; refused");
    }
    if let Some(id) = cookie(&headers, COOKIE) {
        if let Some(s) = c.sessions.get(id, Instant::now())
            && (form.csrf.is_empty() || !same(&form.csrf, &s.csrf))
        {
            return c.error(
                None,
                StatusCode::FORBIDDEN,
                "the form's security token is missing or stale; reload the page and try again",
            );
        }
        c.sessions.end(id);
    }
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&session_cookie("", Some(0))).expect("ascii"));
    res
}

// ---- the overview ----

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct OverviewQuery {
    /// Matchers, as `alerter alerts --filter` takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The page, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<usize>,
}

async fn overview(State(c): St, headers: HeaderMap, Query(q): Query<OverviewQuery>) -> Response {
    let who = match c.who(&headers, Need::Read, &format!("/{}", view::query_string(&q))) {
        Ok(w) => w,
        Err(r) => return c.refuse(r),
    };
    let started = Instant::now();
    match overview_data(&c, &q).await {
        Ok(data) => {
            let mut res = c.page(&who, "overview.html", "Overview", "overview", data);
            server_timing(&mut res, started);
            res
        }
        Err(e) => c.api_error(&who, &e),
    }
}

/// The overview's changing part, for the live updates: answered with
/// 304 when nothing changed since the version the page has.
async fn live(State(c): St, headers: HeaderMap, Query(q): Query<OverviewQuery>) -> Response {
    let who = match c.who(&headers, Need::Read, "/") {
        Ok(w) => w,
        Err(Refusal::Login(_)) => return StatusCode::UNAUTHORIZED.into_response(),
        Err(r) => return c.refuse(r),
    };
    let started = Instant::now();
    let data = match overview_data(&c, &q).await {
        Ok(d) => d,
        Err(e) => return c.api_error(&who, &e),
    };
    let html = c.views.render("live.html", c.base(Some(&who), "Overview", "overview"), data);
    let etag = format!("\"{}\"", view::etag(&html));
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mut res = view::html(html);
    res.headers_mut().insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    server_timing(&mut res, started);
    res
}

/// Says how long the server took, for the benchmark and browsers' tools.
fn server_timing(res: &mut Response, started: Instant) {
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if let Ok(v) = HeaderValue::from_str(&format!("render;dur={ms:.1}")) {
        res.headers_mut().insert("server-timing", v);
    }
}

async fn overview_data(c: &Console, q: &OverviewQuery) -> Result<serde_json::Value, ApiError> {
    let page = q.page.unwrap_or(1).clamp(1, MAX_PAGE_NO);
    let query = types::AlertsQuery {
        filter: q.filter.clone().filter(|f| !f.trim().is_empty()),
        state: Some("active".into()),
        limit: Some(PAGE),
        offset: Some((page - 1) * PAGE),
        sort: Some("rule".into()),
        id: None,
    };
    let (status, alerts) = tokio::join!(c.ask(Call::Status), c.ask(|reply| Call::Alerts { query, reply }));
    let (status, alerts) = (status?, alerts?);
    Ok(view::overview(&status, &alerts, q, page, chrono::Utc::now()))
}

// ---- one alert ----

/// A `?done=` after a change, naming one of the fixed messages.
#[derive(Debug, Default, Deserialize)]
struct Done {
    #[serde(default)]
    done: Option<String>,
}

async fn alert(State(c): St, headers: HeaderMap, Path(id): Path<String>, Query(done): Query<Done>) -> Response {
    let who = match c.who(&headers, Need::Read, &format!("/alerts/{}", view::url_encode(&id))) {
        Ok(w) => w,
        Err(r) => return c.refuse(r),
    };
    let query =
        types::AlertsQuery { id: Some(id.clone()), state: Some("all".into()), limit: Some(2), ..Default::default() };
    let page = match c.ask(|reply| Call::Alerts { query, reply }).await {
        Ok(p) => p,
        Err(e) => return c.api_error(&who, &e),
    };
    let found = match page.alerts.as_slice() {
        [a] => a.clone(),
        [] => {
            return c.error(
                Some(&who),
                StatusCode::NOT_FOUND,
                "No such alert now: it may have resolved and been notified. Its history is on the History page.",
            );
        }
        _ => {
            return c.error(
                Some(&who),
                StatusCode::BAD_REQUEST,
                "More than one alert has an id like that; give more of it.",
            );
        }
    };
    let hq = types::HistoryQuery { alert: Some(found.id.clone()), limit: Some(200), ..Default::default() };
    let history = match c.ask(|reply| Call::History { query: hq, reply }).await {
        Ok(h) => h,
        Err(e) => return c.api_error(&who, &e),
    };
    let mut data = view::alert(&found, &history, chrono::Utc::now());
    data["done"] = view::done_message(done.done.as_deref()).into();
    c.page(&who, "alert.html", &found.summary, "alert", data)
}

#[derive(Debug, Default, Deserialize)]
struct AckForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    comment: String,
}

async fn ack(State(c): St, headers: HeaderMap, Path(id): Path<String>, Form(form): Form<AckForm>) -> Response {
    let ack = types::AckRequest {
        ids: vec![id.clone()],
        matchers: Vec::new(),
        comment: Some(form.comment.trim().to_string()).filter(|c| !c.is_empty()),
    };
    let done = format!("/alerts/{}?done=acked", view::url_encode(&id));
    change(&c, &headers, &form.csrf, |by, reply| Call::Ack { ack, by, reply }, &done).await
}

/// A form post that makes one change: checked as every post is (see
/// [`Console::poster`]), then the call made with the poster as who made
/// it; on to `done` once it is in force, else a page saying why not.
async fn change<T>(
    c: &Console,
    headers: &HeaderMap,
    csrf: &str,
    call: impl FnOnce(Caller, alerter_api::Reply<T>) -> Call,
    done: &str,
) -> Response {
    let who = match c.poster(headers, csrf, Need::Operate) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let by = who.caller.clone();
    match c.ask(|reply| call(by, reply)).await {
        Ok(_) => Redirect::to(done).into_response(),
        Err(e) => c.api_error(&who, &e),
    }
}

// ---- silences ----

#[derive(Debug, Default, Deserialize)]
struct SilenceForm {
    #[serde(default)]
    csrf: String,
    /// One matcher per line.
    #[serde(default)]
    matchers: String,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    done: Option<String>,
    /// `preview` (the page again with what the matchers hit) or empty.
    #[serde(default)]
    action: String,
}

/// The matchers of a form's text: one per line, blank lines left out.
fn matcher_lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

async fn silences(State(c): St, headers: HeaderMap, Query(form): Query<SilenceForm>) -> Response {
    let who = match c.who(&headers, Need::Read, "/silences") {
        Ok(w) => w,
        Err(r) => return c.refuse(r),
    };
    silences_page(&c, &who, form).await
}

async fn silences_page(c: &Console, who: &Who, form: SilenceForm) -> Response {
    let list = match c.ask(|reply| Call::Silences { query: types::SilenceQuery { expired: true }, reply }).await {
        Ok(l) => l,
        Err(e) => return c.api_error(who, &e),
    };
    let matchers = matcher_lines(&form.matchers);
    let preview = if matchers.is_empty() { None } else { Some(silence_hits(c, &matchers).await) };
    let data = serde_json::json!({
        "silences": view::silences(&list, chrono::Utc::now()),
        "form": {
            "matchers": form.matchers,
            "duration": form.duration.unwrap_or_else(|| "2h".into()),
            "comment": form.comment.unwrap_or_default(),
        },
        "preview": preview,
        "done": view::done_message(form.done.as_deref()),
    });
    c.page(who, "silences.html", "Silences", "silences", data)
}

/// Which active alerts the matchers would silence, or why they are wrong.
async fn silence_hits(c: &Console, matchers: &[String]) -> serde_json::Value {
    let filter = matchers.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",");
    let query = types::AlertsQuery { filter: Some(filter), limit: Some(20), ..Default::default() };
    match c.ask(|reply| Call::Alerts { query, reply }).await {
        Ok(page) => serde_json::json!({
            "total": page.total,
            "alerts": page.alerts.iter().map(|a| view::alert_row(a, chrono::Utc::now())).collect::<Vec<_>>(),
        }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

#[derive(Debug, Default, Deserialize)]
struct PreviewQuery {
    #[serde(default)]
    matchers: String,
}

async fn silence_preview(State(c): St, headers: HeaderMap, Query(q): Query<PreviewQuery>) -> Response {
    let who = match c.who(&headers, Need::Read, "/silences") {
        Ok(w) => w,
        Err(Refusal::Login(_)) => return StatusCode::UNAUTHORIZED.into_response(),
        Err(r) => return c.refuse(r),
    };
    let matchers = matcher_lines(&q.matchers);
    let preview = if matchers.is_empty() { None } else { Some(silence_hits(&c, &matchers).await) };
    view::html(c.views.render(
        "silence_preview.html",
        c.base(Some(&who), "", ""),
        serde_json::json!({ "preview": preview }),
    ))
}

async fn add_silence(State(c): St, headers: HeaderMap, Form(form): Form<SilenceForm>) -> Response {
    if form.action == "preview" {
        // The form's "Preview" without JavaScript: the page again, with
        // what the matchers hit, nothing set.
        let who = match c.poster(&headers, &form.csrf, Need::Read) {
            Ok(w) => w,
            Err(r) => return *r,
        };
        return silences_page(&c, &who, form).await;
    }
    let silence = types::SilenceRequest {
        matchers: matcher_lines(&form.matchers),
        duration: form.duration.clone().filter(|d| !d.trim().is_empty()),
        comment: form.comment.clone().filter(|c| !c.trim().is_empty()),
        ..Default::default()
    };
    let call = |by, reply| Call::AddSilence { silence, by, reply };
    change(&c, &headers, &form.csrf, call, "/silences?done=silenced").await
}

async fn expire_silence(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let call = |by, reply| Call::ExpireSilence { id, by, reply };
    change(&c, &headers, &form.csrf, call, "/silences?done=expired").await
}

// ---- notices ----

#[derive(Debug, Default, Deserialize, Serialize)]
struct NoticeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    text: String,
    /// `*`, `@group` or a subscriber id.
    #[serde(default)]
    to: String,
    #[serde(default)]
    at: String,
    /// Reminders, separated by commas or spaces: `1h, 15m`.
    #[serde(default)]
    remind: String,
    /// A transport id, or empty for the default.
    #[serde(default)]
    via: String,
    /// `preview` or `send`.
    #[serde(default)]
    action: String,
}

impl NoticeForm {
    fn request(&self) -> types::NoticeRequest {
        types::NoticeRequest {
            text: self.text.replace("\r\n", "\n"),
            at: Some(self.at.trim().to_string()).filter(|a| !a.is_empty()),
            remind: self.remind.split([',', ' ']).map(str::trim).filter(|r| !r.is_empty()).map(String::from).collect(),
            to: vec![if self.to.trim().is_empty() { "*".to_string() } else { self.to.trim().to_string() }],
            via: Some(self.via.trim().to_string()).filter(|v| !v.is_empty()).into_iter().collect(),
            title: None,
        }
    }
}

async fn notices(State(c): St, headers: HeaderMap, Query(q): Query<Done>) -> Response {
    let who = match c.who(&headers, Need::Read, "/notices") {
        Ok(w) => w,
        Err(r) => return c.refuse(r),
    };
    notices_page(&c, &who, &NoticeForm::default(), None, view::done_message(q.done.as_deref())).await
}

async fn notices_page(
    c: &Console,
    who: &Who,
    form: &NoticeForm,
    preview: Option<serde_json::Value>,
    done: Option<&str>,
) -> Response {
    let (list, dir) = tokio::join!(c.ask(Call::Notices), c.ask(Call::Directory));
    let (list, dir) = match (list, dir) {
        (Ok(l), Ok(d)) => (l, d),
        (Err(e), _) | (_, Err(e)) => return c.api_error(who, &e),
    };
    let data = serde_json::json!({
        "notices": view::notices(&list),
        "directory": dir,
        "form": form,
        "preview": preview,
        "done": done,
    });
    c.page(who, "notices.html", "Notices", "notices", data)
}

async fn preview_of(c: &Console, form: &NoticeForm) -> serde_json::Value {
    let notice = form.request();
    match c.ask(|reply| Call::PreviewNotice { notice, reply }).await {
        Ok(p) => view::notice_preview(&p),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

async fn add_notice(State(c): St, headers: HeaderMap, Form(form): Form<NoticeForm>) -> Response {
    let need = if form.action == "preview" { Need::Read } else { Need::Operate };
    let who = match c.poster(&headers, &form.csrf, need) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    if form.action == "preview" {
        let preview = preview_of(&c, &form).await;
        return notices_page(&c, &who, &form, Some(preview), None).await;
    }
    let notice = form.request();
    let by = who.caller.clone();
    match c.ask(|reply| Call::AddNotice { notice, by, reply }).await {
        Ok(_) => Redirect::to("/notices?done=noticed").into_response(),
        Err(e) => {
            let preview = serde_json::json!({ "error": e.to_string() });
            let mut res = notices_page(&c, &who, &form, Some(preview), None).await;
            *res.status_mut() = e.status();
            res
        }
    }
}

async fn notice_preview(State(c): St, headers: HeaderMap, Form(form): Form<NoticeForm>) -> Response {
    let who = match c.poster(&headers, &form.csrf, Need::Read) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let preview = preview_of(&c, &form).await;
    view::html(c.views.render(
        "notice_preview.html",
        c.base(Some(&who), "", ""),
        serde_json::json!({ "preview": preview }),
    ))
}

async fn cancel_notice(
    State(c): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let call = |by, reply| Call::CancelNotice { id, by, reply };
    change(&c, &headers, &form.csrf, call, "/notices?done=cancelled").await
}

// ---- history ----

#[derive(Debug, Default, Deserialize, Serialize)]
struct HistoryForm {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    rule: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    recipient: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    transport: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    alert: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cursor: String,
}

async fn history(State(c): St, headers: HeaderMap, Query(form): Query<HistoryForm>) -> Response {
    let who = match c.who(&headers, Need::Read, "/history") {
        Ok(w) => w,
        Err(r) => return c.refuse(r),
    };
    let some = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let query = types::HistoryQuery {
        rule: some(&form.rule),
        transport: some(&form.transport),
        status: some(&form.status),
        recipient: some(&form.recipient),
        alert: some(&form.alert),
        cursor: some(&form.cursor),
        limit: Some(100),
        ..Default::default()
    };
    let (page, dir) = tokio::join!(c.ask(|reply| Call::History { query, reply }), c.ask(Call::Directory));
    let (page, dir) = match (page, dir) {
        (Ok(p), Ok(d)) => (p, d),
        (Err(e), _) | (_, Err(e)) => return c.api_error(&who, &e),
    };
    let next = page.next.as_ref().map(|n| {
        let q = HistoryForm { cursor: n.clone(), ..form_without_cursor(&form) };
        format!("/history{}", view::query_string(&q))
    });
    let data = serde_json::json!({
        "entries": view::history(&page.entries),
        "form": form,
        "next": next,
        "directory": dir,
        "statuses": ["sent", "failed", "expired", "pending", "suppressed", "folded", "silence", "ack", "notice", "reload"],
    });
    c.page(&who, "history.html", "History", "history", data)
}

fn form_without_cursor(f: &HistoryForm) -> HistoryForm {
    HistoryForm {
        rule: f.rule.clone(),
        recipient: f.recipient.clone(),
        transport: f.transport.clone(),
        status: f.status.clone(),
        alert: f.alert.clone(),
        cursor: String::new(),
    }
}

// ---- network ----

async fn network(State(c): St, headers: HeaderMap) -> Response {
    let who = match c.who(&headers, Need::Read, "/network") {
        Ok(w) => w,
        Err(r) => return c.refuse(r),
    };
    match c.ask(Call::Network).await {
        Ok(n) => {
            let data = serde_json::json!({ "network": n, "at": view::time(n.at) });
            c.page(&who, "network.html", "Network", "network", data)
        }
        Err(e) => c.api_error(&who, &e),
    }
}

// ---- assets ----

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("../assets/console.css"))
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../assets/console.js"))
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=300"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_go_over_tls_or_stay_on_this_machine() {
        let tcp = |a: &str, tls| Peer::Tcp { addr: a.parse().unwrap(), tls };
        assert!(login_allowed_over(&tcp("127.0.0.1:5000", false)));
        assert!(login_allowed_over(&tcp("[::1]:5000", false)));
        assert!(!login_allowed_over(&tcp("10.0.0.7:5000", false)), "a token in the clear on the LAN");
        assert!(login_allowed_over(&tcp("10.0.0.7:5000", true)));
    }

    #[test]
    fn after_a_login_only_this_consoles_paths() {
        assert_eq!(local_path(Some("/alerts/abcd?x=1")), "/alerts/abcd?x=1");
        for bad in
            ["//evil.example/", "https://evil.example/", "/\\evil.example", "evil", "", "/\t/evil.example", "/ /x"]
        {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn posts_from_other_sites_are_told_apart() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(same_origin(&h(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "cross-site"), ("origin", "http://127.0.0.1:9310")])));
        assert!(same_origin(&h(&[("origin", "http://127.0.0.1:9310"), ("host", "127.0.0.1:9310")])));
        assert!(!same_origin(&h(&[("origin", "http://evil.example"), ("host", "127.0.0.1:9310")])));
        assert!(same_origin(&h(&[])), "curl sends neither; the CSRF token decides");
    }

    #[test]
    fn cookies_are_read_from_every_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; __Host-alerter_session=abc"));
        h.append(header::COOKIE, HeaderValue::from_static("__Secure-alerter_login=def"));
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), Some("def"));
        assert_eq!(cookie(&h, "missing"), None);
        let c = session_cookie("abc", None);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"), "{c}");
    }
}
