//! The daemon's side of the control API: the server built from the
//! config's `api:` section (token files read and checked, local users
//! resolved to uids), and the answers to calls, given in the engine loop.
//!
//! Reads are answered at once from the engine's memory and the store.
//! Changes (a silence set or expired) are applied to the engine, which
//! puts them in its turn with an audit record naming the caller; the loop
//! commits that turn and only then sends the answer, so a change is in
//! force and saved when the call returns.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use alerter_api::access::{Access, Token};
use alerter_api::server::{self, AccessHandle, Server, ServerConfig, SocketConfig, TcpConfig};
use alerter_api::{ApiError, Call, types};
use alerter_engine::{ChangeError, Engine};

use crate::config::{ApiSettings, Config};
use crate::event::Severity;
use crate::metrics::{Metrics, Snapshot};
use crate::notices::{Notice, SetNotice, When};
use crate::plugin::supervisor::Sources;
use crate::rules::router::{Alert, AlertStatus, Router};
use crate::rules::{Recipient, Silence, Target, matchers};
use crate::store::{HistoryCursor, HistoryFilter, HistoryItem, Store};

/// How many calls may wait for the engine loop.
const QUEUE: usize = 64;

/// The running API: the server, the access model it checks (replaced on
/// reload), and the calls it hands over.
#[derive(Debug)]
pub struct Api {
    pub server: Server,
    pub access: AccessHandle,
    pub calls: mpsc::Receiver<Call>,
    /// What the server was started with; a reload that changes it is
    /// applied at the next start.
    pub listening: (std::path::PathBuf, Option<std::net::SocketAddr>),
}

/// Starts the API of a configuration.
pub async fn start(cfg: &Config) -> Result<Api, String> {
    let access = access(&cfg.api)?;
    let mut server_cfg = server_config(&cfg.api, &cfg.state_dir)?;
    let (tx, calls) = mpsc::channel(QUEUE);
    let handle = AccessHandle::new(access);
    if let Some(tcp) = server_cfg.tcp.as_mut()
        && cfg.api.console
    {
        tcp.extra = Some(alerter_console::router(tx.clone(), handle.clone(), &cfg.name));
    }
    let server = server::start(&server_cfg, tx, handle.clone()).await.map_err(|e| e.to_string())?;
    let socket = cfg.api.socket_path(&cfg.state_dir);
    Ok(Api { server, access: handle, calls, listening: (socket, cfg.api.listen) })
}

/// The access model of the settings: every token file read and checked
/// as a secret, every user resolved. All problems are reported together.
pub fn access(api: &ApiSettings) -> Result<Access, String> {
    let mut problems = Vec::new();
    let mut tokens = Vec::new();
    for (name, file, scope) in &api.tokens {
        match crate::files::read_secret(file) {
            Ok(text) => match Token::new(name, *scope, text.as_bytes()) {
                Ok(t) => tokens.push(t),
                Err(e) => problems.push(format!("api token `{name}` ({}): {e}", file.display())),
            },
            Err(e) => problems.push(format!("api token `{name}`: {e}")),
        }
    }
    let mut users = Vec::new();
    for (user, scope) in &api.users {
        match resolve_user(user) {
            Ok((uid, name)) => users.push((uid, name, *scope)),
            Err(e) => problems.push(format!("api.users: {e}")),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(Access::new(tokens, users, api.others, nix::unistd::geteuid().as_raw()))
}

fn resolve_user(user: &str) -> Result<(u32, String), String> {
    if let Ok(uid) = user.parse::<u32>() {
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        return Ok((uid, name));
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.name)),
        Ok(None) => Err(format!("no user `{user}` on this machine (name a user or a uid)")),
        Err(e) => Err(format!("cannot look up user `{user}`: {e}")),
    }
}

fn server_config(api: &ApiSettings, state_dir: &Path) -> Result<ServerConfig, String> {
    let group = match &api.socket_group {
        None => None,
        Some(g) => match nix::unistd::Group::from_name(g) {
            Ok(Some(g)) => Some(g.gid.as_raw()),
            Ok(None) => return Err(format!("api.socket_group: no group `{g}` on this machine")),
            Err(e) => return Err(format!("api.socket_group: cannot look up `{g}`: {e}")),
        },
    };
    let socket = SocketConfig { path: api.socket_path(state_dir), mode: 0o660, group };
    let tcp = match api.listen {
        None => None,
        Some(addr) => {
            let tls = match &api.tls {
                None => None,
                Some((cert, key)) => {
                    let cert = std::fs::read(cert).map_err(|e| format!("api.tls.cert_file {}: {e}", cert.display()))?;
                    let key = crate::files::read_secret(key).map_err(|e| format!("api.tls.key_file: {e}"))?;
                    Some(std::sync::Arc::new(server::tls_config(&cert, key.as_bytes()).map_err(|e| e.to_string())?))
                }
            };
            Some(TcpConfig { addr, tls, extra: None })
        }
    };
    let metrics = api.metrics_listen.map(|addr| alerter_api::server::MetricsConfig { addr, token: api.metrics_token });
    Ok(ServerConfig { socket: Some(socket), tcp, metrics })
}

/// What answering needs of the daemon.
pub struct Cx<'a> {
    pub engine: &'a mut Engine,
    pub store: &'a Store,
    pub cfg: &'a Config,
    pub sources: &'a Sources,
    pub started_at: DateTime<Utc>,
    pub loaded_at: DateTime<Utc>,
    pub store_failing: bool,
    pub now: DateTime<Utc>,
    pub metrics: &'a Metrics,
    /// Per `alertmanager` source, the episodes that ended.
    pub ended: &'a mut HashMap<String, alerter_plugin_alertmanager::Ended>,
}

/// An answer to send once the engine's turn (holding the change the call
/// made) has been committed.
pub type Deferred = Box<dyn FnOnce() + Send>;

/// Answers a call; a change's answer is returned to be sent after the
/// commit.
pub fn answer(call: Call, cx: &mut Cx<'_>) -> Option<Deferred> {
    match call {
        Call::Status(reply) => {
            let _ = reply.send(Ok(status(cx)));
            None
        }
        Call::Silences { query, reply } => {
            let now = cx.now;
            let list = cx.engine.silences().filter(|s| query.expired || s.ends > now).map(|s| view(s, now)).collect();
            let _ = reply.send(Ok(list));
            None
        }
        Call::AddSilence { silence, by, reply } => {
            let result = add_silence(cx, silence, &by.name);
            Some(Box::new(move || {
                let _ = reply.send(result);
            }))
        }
        Call::Ingest { events, by, reply } => {
            let result = ingest(cx, events, &by.name);
            Some(Box::new(move || {
                let _ = reply.send(result);
            }))
        }
        Call::Alertmanager { source, body, by, reply } => {
            let result = alertmanager(cx, &source, &body, &by.name);
            Some(Box::new(move || {
                let _ = reply.send(result);
            }))
        }
        Call::Metrics(reply) => {
            let _ = reply.send(Ok(cx.metrics.render(&snapshot(cx))));
            None
        }
        Call::Ready(reply) => {
            let _ = reply.send(if cx.store_failing {
                Err(ApiError::Unavailable("the state store refuses writes; decisions are held".into()))
            } else {
                Ok(())
            });
            None
        }
        Call::Alerts { query, reply } => {
            let _ = reply.send(alerts(cx, &query));
            None
        }
        Call::Ack { ack, by, reply } => {
            let result = acknowledge(cx, ack, &by.name);
            Some(Box::new(move || {
                let _ = reply.send(result);
            }))
        }
        Call::History { query, reply } => {
            // Read on a connection of its own, off the engine loop: a page
            // with a rare filter may scan much of the database.
            match history_filter(&query) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok((filter, limit, cursor)) => {
                    let limit = limit.min(MAX_PAGE);
                    let dir = cx.cfg.state_dir.clone();
                    tokio::task::spawn_blocking(move || {
                        let page = crate::store::Store::open(&dir)
                            .and_then(|s| s.history_page(&filter, limit, cursor))
                            .map(|(items, next)| types::HistoryPage {
                                entries: items.into_iter().map(history_entry).collect(),
                                next: next.map(|c| c.to_string()),
                            })
                            .map_err(|e| ApiError::Unavailable(format!("cannot read history: {e}")));
                        let _ = reply.send(page);
                    });
                }
            }
            None
        }
        Call::Reload { reply, .. } => {
            // The daemon's loop takes reloads before they get here.
            let _ = reply.send(Err(ApiError::Unavailable("this daemon cannot reload through the API".into())));
            None
        }
        Call::Test { test, by, reply } => {
            let result = test_notification(cx, test, &by.name);
            Some(Box::new(move || {
                let _ = reply.send(result);
            }))
        }
        Call::Notices(reply) => {
            let _ = reply.send(Ok(notices(cx)));
            None
        }
        Call::AddNotice { notice, by, reply } => {
            let result = add_notice(cx, notice, &by.name);
            Some(Box::new(move || {
                let _ = reply.send(result);
            }))
        }
        Call::PreviewNotice { notice, reply } => {
            let _ = reply.send(preview_notice(cx, notice));
            None
        }
        Call::Directory(reply) => {
            let _ = reply.send(Ok(directory(cx.cfg)));
            None
        }
        Call::Network(reply) => {
            // The scan waits for answers: off the engine loop.
            let scan = NetworkScan::new(cx.cfg);
            tokio::spawn(async move {
                let _ = reply.send(Ok(scan.run().await));
            });
            None
        }
        Call::CancelNotice { id, by, reply } => {
            let result =
                cx.engine.cancel_notice(&id, &by.name, cx.now).map(|n| notice_view(&n, &[])).map_err(change_error);
            Some(Box::new(move || {
                let _ = reply.send(result);
            }))
        }
        Call::ExpireSilence { id, by, reply } => {
            let now = cx.now;
            let result = cx.engine.expire_silence(&id, &by.name, now).map(|s| view(&s, now)).map_err(change_error);
            Some(Box::new(move || {
                let _ = reply.send(result);
            }))
        }
    }
}

fn change_error(e: ChangeError) -> ApiError {
    match e {
        ChangeError::NotFound(m) => ApiError::NotFound(m),
        ChangeError::Invalid(m) => ApiError::Conflict(m),
    }
}

/// Longest comment and matcher accepted, and most matchers.
const MAX_TEXT: usize = 1024;
const MAX_MATCHERS: usize = 64;

/// Text from a client ends up in terminals (`alerter history`): controls
/// are refused rather than stored.
fn check_text(what: &str, s: &str) -> Result<(), ApiError> {
    if s.len() > MAX_TEXT {
        return Err(ApiError::BadRequest(format!("{what} is longer than {MAX_TEXT} bytes")));
    }
    if s.chars().any(crate::visible::is_control_or_bidi) {
        return Err(ApiError::BadRequest(format!("{what} holds control characters; send plain text")));
    }
    Ok(())
}

fn add_silence(cx: &mut Cx<'_>, req: types::SilenceRequest, by: &str) -> Result<types::Silence, ApiError> {
    let now = cx.now;
    if req.matchers.len() > MAX_MATCHERS {
        return Err(ApiError::BadRequest(format!("at most {MAX_MATCHERS} matchers")));
    }
    for m in &req.matchers {
        check_text("a matcher", m)?;
    }
    if let Some(c) = &req.comment {
        check_text("the comment", c)?;
    }
    let matcher = matchers::compile(&req.matchers).map_err(ApiError::BadRequest)?;
    let starts = req.starts.filter(|s| *s > now);
    let from = starts.unwrap_or(now);
    let ends = match (req.ends, &req.duration) {
        (Some(_), Some(_)) => return Err(ApiError::BadRequest("give `ends` or `duration`, not both".into())),
        (None, None) => return Err(ApiError::BadRequest("give `ends` or `duration` (e.g. \"2h\")".into())),
        (Some(e), None) => e,
        (None, Some(d)) => {
            let d = humantime::parse_duration(d)
                .map_err(|e| ApiError::BadRequest(format!("`{d}` is not a duration (e.g. 30m, 2h, 1d): {e}")))?;
            let d =
                chrono::Duration::from_std(d).map_err(|_| ApiError::BadRequest("the duration is too long".into()))?;
            from.checked_add_signed(d).ok_or_else(|| ApiError::BadRequest("the duration is too long".into()))?
        }
    };
    if ends <= from {
        return Err(ApiError::BadRequest("the silence would end before it starts".into()));
    }
    let silence = Silence {
        id: format!("s-{:016x}", fastrand::u64(..)),
        matcher,
        matchers: req.matchers,
        starts,
        ends,
        comment: req.comment.filter(|c| !c.trim().is_empty()),
        created_by: Some(by.to_string()),
        created_at: Some(now),
    };
    let out = view(&silence, now);
    cx.engine.add_silence(silence, now).map_err(change_error)?;
    Ok(out)
}

/// Queues a test notification through one transport.
fn test_notification(cx: &mut Cx<'_>, req: types::TestRequest, by: &str) -> Result<types::TestQueued, ApiError> {
    let now = cx.now;
    check_text("the transport", &req.transport)?;
    let Some(t) = cx.cfg.transports.get(&req.transport) else {
        let known: Vec<&str> = cx.cfg.transports.keys().map(String::as_str).collect();
        return Err(ApiError::NotFound(format!(
            "no transport `{}`; the config's transports: {}",
            req.transport,
            or_none(&known)
        )));
    };
    let to = if req.to.is_empty() {
        // A log records for nobody in particular; a popup or a mail is
        // for someone, and guessing whom would disturb the wrong people.
        if matches!(t.kind(), "messenger" | "email") {
            return Err(ApiError::BadRequest(format!(
                "say whom the test goes to (`*`, `@group` or a subscriber): `{}` tells people",
                req.transport
            )));
        }
        vec!["*".to_string()]
    } else {
        req.to
    };
    let text = match req.text {
        Some(t) => {
            check_text("the text", &t)?;
            t
        }
        None => format!("A test notification from alerter on {}, asked for by {by}.", cx.cfg.name),
    };
    let mut targets = notice_targets(cx.cfg, &to, std::slice::from_ref(&req.transport))?;
    let target = targets.pop().expect("one transport, everyone reached");
    let id = format!("{:08x}", fastrand::u32(..));
    let out = types::TestQueued {
        rule: format!("test:{id}"),
        transport: target.transport.clone(),
        recipients: target.recipients.iter().map(|r| r.id.clone()).collect(),
    };
    tracing::info!(by, transport = %out.transport, rule = %out.rule, "test notification queued");
    cx.engine.test_notification(&id, target, &format!("Test notification (asked for by {by})"), &text, now);
    Ok(out)
}

/// The statuses history can be filtered by.
const HISTORY_STATUSES: &[&str] =
    &["sent", "failed", "expired", "pending", "sending", "suppressed", "silence", "ack", "notice", "reload"];

/// The store's filter, page size and cursor of a query, checked.
pub fn history_filter(q: &types::HistoryQuery) -> Result<(HistoryFilter, usize, Option<HistoryCursor>), ApiError> {
    for (what, v) in [
        ("rule", &q.rule),
        ("transport", &q.transport),
        ("status", &q.status),
        ("recipient", &q.recipient),
        ("alert", &q.alert),
        ("cursor", &q.cursor),
    ] {
        if let Some(v) = v {
            check_text(what, v)?;
        }
    }
    if let Some(s) = &q.status
        && !HISTORY_STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::BadRequest(format!("`status={s}`: use one of {}", HISTORY_STATUSES.join(", "))));
    }
    if let Some(a) = &q.alert
        && (a.len() < 4 || a.len() > 16 || !a.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::BadRequest(format!(
            "`alert={a}`: an alert id is 16 hex digits (the first 4 or more will do)"
        )));
    }
    let cursor = q.cursor.as_deref().map(str::parse).transpose().map_err(ApiError::BadRequest)?;
    let filter = HistoryFilter {
        rule: q.rule.clone(),
        transport: q.transport.clone(),
        status: q.status.clone(),
        recipient: q.recipient.clone(),
        alert: q.alert.clone(),
        since: q.since,
        until: q.until,
    };
    Ok((filter, q.limit.unwrap_or(100).max(1), cursor))
}

/// An entry of history as the API shows it.
pub fn history_entry(i: HistoryItem) -> types::HistoryEntry {
    types::HistoryEntry {
        time: i.time,
        rule: i.rule,
        transport: i.transport,
        status: i.status,
        summary: i.summary,
        recipients: i.recipients,
        attempts: i.attempts,
        detail: i.detail,
        notification: i.notification,
        alerts: i.alerts,
    }
}

/// The longest notice text: about what one Messenger message carries.
const MAX_NOTICE_TEXT: usize = 1600;
/// The longest title, and how long a title taken from the text may be.
const MAX_TITLE: usize = 120;
const SHORT_TITLE: usize = 60;
/// How far ahead a notice may be set.
const MAX_AHEAD: chrono::Duration = chrono::Duration::days(400);

fn notices(cx: &Cx<'_>) -> Vec<types::Notice> {
    let scheduler = cx.engine.notices();
    let mut out: Vec<types::Notice> =
        scheduler.notices().map(|n| notice_view(n, &scheduler.pending(&n.name))).collect();
    out.sort_by(|a, b| (a.next.first().map(|f| f.at), &a.id).cmp(&(b.next.first().map(|f| f.at), &b.id)));
    // Those with nothing to come (a crontab line that never fires again) last.
    out.sort_by_key(|n| n.next.is_empty());
    out
}

fn notice_view(n: &Notice, pending: &[(DateTime<Utc>, DateTime<Utc>, std::time::Duration)]) -> types::Notice {
    let mut remind: Vec<u64> = n.offsets.iter().map(|o| o.as_secs()).collect();
    remind.sort_unstable_by(|a, b| b.cmp(a));
    remind.dedup();
    types::Notice {
        id: n.name.clone(),
        origin: if n.set.is_some() { "api" } else { "config" }.into(),
        title: n.label().to_string(),
        text: n.set.as_ref().map(|s| s.text.clone()),
        cron: match &n.when {
            When::Cron(c) => Some(c.as_str().to_string()),
            When::Once(_) => None,
        },
        at: match &n.when {
            When::Once(at) => Some(*at),
            When::Cron(_) => pending.iter().map(|(_, event, _)| *event).min(),
        },
        timezone: n.tz.name().to_string(),
        remind_seconds: remind,
        to: alerter_engine::engine::describe_targets(&n.targets),
        created_by: n.set.as_ref().map(|s| s.by.clone()),
        created_at: n.set.as_ref().map(|s| s.at),
        next: pending
            .iter()
            .map(|(at, event_at, ahead)| types::NoticeFiring {
                at: *at,
                event_at: *event_at,
                ahead_seconds: ahead.as_secs(),
            })
            .collect(),
    }
}

/// A notice request, checked: what it says, when, and to whom.
struct CheckedNotice {
    title: String,
    text: String,
    at: DateTime<Utc>,
    offsets: Vec<std::time::Duration>,
    targets: Vec<Target>,
}

fn check_notice(cx: &Cx<'_>, req: types::NoticeRequest) -> Result<CheckedNotice, ApiError> {
    let now = cx.now;
    let text = req.text.trim_end().to_string();
    if text.trim().is_empty() {
        return Err(ApiError::BadRequest("the notice says nothing; give its text".into()));
    }
    if text.len() > MAX_NOTICE_TEXT {
        return Err(ApiError::BadRequest(format!("the text is longer than {MAX_NOTICE_TEXT} bytes")));
    }
    // Lines are fine in a popup; every other control is refused.
    if text.chars().any(|c| c != '\n' && crate::visible::is_control_or_bidi(c)) {
        return Err(ApiError::BadRequest("the text holds control characters; send plain text".into()));
    }
    let title = match req.title.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => {
            if t.len() > MAX_TITLE {
                return Err(ApiError::BadRequest(format!("the title is longer than {MAX_TITLE} bytes")));
            }
            check_text("the title", t)?;
            t.to_string()
        }
        _ => short_title(&text),
    };
    let at = match req.at.as_deref() {
        None => now,
        Some(s) => {
            check_text("the time", s)?;
            parse_at(s, cx.cfg.timezone, now).map_err(ApiError::BadRequest)?
        }
    };
    if at < now - chrono::Duration::seconds(1) {
        let local = at.with_timezone(&cx.cfg.timezone).format("%Y-%m-%d %H:%M:%S %Z");
        return Err(ApiError::BadRequest(format!("{local} has passed")));
    }
    if at > now + MAX_AHEAD {
        return Err(ApiError::BadRequest(format!("a notice may be set at most {} days ahead", MAX_AHEAD.num_days())));
    }
    if req.remind.len() > MAX_MATCHERS {
        return Err(ApiError::BadRequest(format!("at most {MAX_MATCHERS} reminders")));
    }
    let mut offsets = vec![std::time::Duration::ZERO];
    for r in &req.remind {
        check_text("a reminder", r)?;
        let d = humantime::parse_duration(r.trim())
            .map_err(|e| ApiError::BadRequest(format!("reminder `{r}` is not a duration (e.g. 15m, 1h, 1d): {e}")))?;
        if d.as_secs() == 0 {
            return Err(ApiError::BadRequest(format!("reminder `{r}`: give a time ahead of the event, 1s or more")));
        }
        if d > MAX_AHEAD.to_std().expect("positive") {
            return Err(ApiError::BadRequest(format!("reminder `{r}` is too far ahead")));
        }
        offsets.push(d);
    }
    let targets = notice_targets(cx.cfg, &req.to, &req.via)?;
    Ok(CheckedNotice { title, text, at, offsets, targets })
}

fn add_notice(cx: &mut Cx<'_>, req: types::NoticeRequest, by: &str) -> Result<types::Notice, ApiError> {
    let now = cx.now;
    let CheckedNotice { title, text, at, offsets, targets } = check_notice(cx, req)?;
    let notice = Notice {
        name: format!("n-{:08x}", fastrand::u32(..)),
        when: When::Once(at),
        tz: cx.cfg.timezone,
        offsets,
        targets,
        set: Some(SetNotice { title, text, by: by.to_string(), at: now }),
    };
    let n = cx.engine.add_notice(notice, now).map_err(|e| match e {
        ChangeError::NotFound(m) | ChangeError::Invalid(m) => ApiError::BadRequest(m),
    })?;
    Ok(notice_view(&n, &cx.engine.notices().pending(&n.name)))
}

/// What a notice would send, through each transport, as people will see
/// it; nothing is set.
fn preview_notice(cx: &Cx<'_>, req: types::NoticeRequest) -> Result<types::NoticePreview, ApiError> {
    let now = cx.now;
    let CheckedNotice { text, at, mut offsets, targets, .. } = check_notice(cx, req)?;
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    offsets.dedup();
    let next = offsets
        .iter()
        .filter_map(|o| {
            let when = at - chrono::Duration::from_std(*o).ok()?;
            (when >= now - chrono::Duration::seconds(1)).then_some(types::NoticeFiring {
                at: when,
                event_at: at,
                ahead_seconds: o.as_secs(),
            })
        })
        .collect();
    let messages = targets
        .iter()
        .map(|t| {
            let cfg = &cx.cfg.transports[&t.transport];
            let recipients = t.recipients.iter().map(|r| r.id.clone()).collect();
            let plain = types::MessagePreview {
                transport: t.transport.clone(),
                kind: cfg.kind().to_string(),
                recipients,
                text: text.clone(),
                code_page: None,
                limit: None,
                bytes: None,
                cut: false,
                replaced: 0,
            };
            let crate::config::model::TransportConfig::Messenger(m) = cfg else { return plain };
            match crate::transport::messenger::MessengerOptions::from_config(m, &cx.cfg.name, &cx.cfg.workgroup) {
                Ok(opts) => {
                    let p = crate::transport::messenger::MessengerTransport::new(opts)
                        .preview(&text, t.recipients.iter().any(|r| r.is_workgroup()));
                    types::MessagePreview {
                        text: p.text,
                        code_page: Some(p.code_page),
                        limit: Some(p.limit),
                        bytes: Some(p.bytes),
                        cut: p.cut,
                        replaced: p.replaced,
                        ..plain
                    }
                }
                Err(_) => plain,
            }
        })
        .collect();
    Ok(types::NoticePreview { at, timezone: cx.cfg.timezone.name().to_string(), next, messages })
}

/// Subscribers, groups and transports, for the console's forms.
fn directory(cfg: &Config) -> types::Directory {
    types::Directory {
        workgroup: cfg.workgroup.clone(),
        subscribers: cfg
            .subscribers
            .iter()
            .map(|(id, s)| types::DirectoryEntry {
                id: id.clone(),
                name: s.name.clone(),
                machine: s.machine.clone(),
                email: s.email.is_some(),
            })
            .collect(),
        groups: cfg.groups.keys().cloned().collect(),
        transports: cfg.transports.iter().map(|(id, t)| (id.clone(), t.kind().to_string())).collect(),
    }
}

/// How long a network scan waits for node status answers.
const SCAN_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);
/// How long a scan's answer is given again instead of a new scan.
const SCAN_REUSE: std::time::Duration = std::time::Duration::from_secs(5);
/// The most subscribers whose machines a scan looks up.
const SCAN_SUBSCRIBERS: usize = 200;

/// A look at the LAN through the first Messenger transport's eyes: its
/// broadcast addresses and its name resolution.
struct NetworkScan {
    workgroup: String,
    messenger: Result<crate::transport::messenger::MessengerOptions, String>,
    machines: Vec<(String, String)>,
}

impl NetworkScan {
    fn new(cfg: &Config) -> NetworkScan {
        let messenger = cfg
            .transports
            .values()
            .find_map(|t| match t {
                crate::config::model::TransportConfig::Messenger(m) => Some(m),
                _ => None,
            })
            .ok_or_else(|| "no Messenger transport is configured, so there is no name service to ask".to_string())
            .and_then(|m| crate::transport::messenger::MessengerOptions::from_config(m, &cfg.name, &cfg.workgroup));
        let machines = cfg
            .subscribers
            .iter()
            .filter_map(|(id, s)| Some((id.clone(), s.machine.clone()?)))
            .take(SCAN_SUBSCRIBERS)
            .collect();
        NetworkScan { workgroup: cfg.workgroup.clone(), messenger, machines }
    }

    /// The scan's answer; a scan made in the last [`SCAN_REUSE`] is given
    /// again, and scans wait for each other, so that callers cannot make
    /// the daemon flood the LAN with broadcasts.
    async fn run(self) -> types::Network {
        static LAST: tokio::sync::Mutex<Option<(std::time::Instant, types::Network)>> =
            tokio::sync::Mutex::const_new(None);
        let mut last = LAST.lock().await;
        if let Some((at, n)) = last.as_ref()
            && at.elapsed() < SCAN_REUSE
            && n.workgroup == self.workgroup
        {
            return n.clone();
        }
        let n = self.scan().await;
        *last = Some((std::time::Instant::now(), n.clone()));
        n
    }

    async fn scan(self) -> types::Network {
        use messenger_transport::resolve::{Resolver, node_status};
        let mut out = types::Network {
            at: Utc::now(),
            workgroup: self.workgroup,
            asked: Vec::new(),
            hosts: Vec::new(),
            subscribers: Vec::new(),
            problems: Vec::new(),
        };
        let opts = match self.messenger {
            Ok(o) => o,
            Err(e) => {
                out.problems.push(e);
                return out;
            }
        };
        let resolver = Resolver::new(opts.resolver.clone());
        let lookups = futures_util::future::join_all(self.machines.iter().map(|(id, machine)| {
            let resolver = &resolver;
            async move {
                let found = match machine.parse::<messenger_transport::NetbiosName>() {
                    Ok(name) => resolver.resolve(&name).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let mapped = resolver.config().hosts.contains_key(&machine.to_ascii_uppercase());
                let (address, detail) = match found {
                    Ok(t) if mapped => (Some(t.ip.to_string()), "given in the transport's `hosts`".to_string()),
                    Ok(t) => (Some(t.ip.to_string()), "found by its NetBIOS name (WINS, broadcast or DNS)".to_string()),
                    Err(e) => (None, e),
                };
                types::Reach { subscriber: id.clone(), machine: machine.clone(), address, detail }
            }
        }));
        let mut to: Vec<std::net::SocketAddr> = Vec::new();
        match opts.broadcast.targets() {
            Ok(ifaces) => {
                for i in &ifaces {
                    out.asked.push(i.to_string());
                    to.push(std::net::SocketAddr::new(i.broadcast.into(), opts.resolver.nbns_port));
                }
            }
            Err(e) => out.problems.push(format!("no broadcast: {e}")),
        }
        let scan = async {
            if to.is_empty() {
                return Ok(Vec::new());
            }
            node_status(&to, SCAN_WAIT).await
        };
        let (reach, scanned) = tokio::join!(lookups, scan);
        out.subscribers = reach;
        match scanned {
            Ok(hosts) => {
                out.hosts = hosts
                    .into_iter()
                    .map(|h| types::NetworkHost {
                        address: h.ip.to_string(),
                        names: h
                            .names
                            .into_iter()
                            .map(|(n, flags)| {
                                let suffix = n.raw()[15];
                                types::NetworkName {
                                    name: crate::visible::visible_line(n.name().trim_end()).into_owned(),
                                    suffix: format!("{suffix:02X}"),
                                    kind: match suffix {
                                        0x03 => "messenger",
                                        0x00 => "workstation",
                                        0x20 => "server",
                                        _ => "other",
                                    }
                                    .into(),
                                    group: flags & messenger_transport::nbns::FLAG_GROUP != 0,
                                }
                            })
                            .collect(),
                    })
                    .collect();
            }
            Err(e) => out.problems.push(format!("the node status request could not be sent: {e}")),
        }
        out
    }
}

/// The first line of `text`, cut at a word to about [`SHORT_TITLE`] characters.
fn short_title(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    if line.chars().count() <= SHORT_TITLE {
        return line.to_string();
    }
    let cut: String = line.chars().take(SHORT_TITLE).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i > SHORT_TITLE / 2 => &cut[..i],
        _ => &cut,
    };
    format!("{}…", cut.trim_end())
}

/// A time as `alerter notice add --at` takes it: RFC 3339; a local
/// `YYYY-MM-DD HH:MM[:SS]` in `tz`; `HH:MM[:SS]`, the next such time (as
/// at(1) reads it); `+DURATION` from now; or `now`.
pub fn parse_at(s: &str, tz: chrono_tz::Tz, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    use chrono::{NaiveDateTime, NaiveTime, TimeZone};
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Some(d) = s.strip_prefix('+') {
        let d = humantime::parse_duration(d.trim()).map_err(|e| format!("`{s}`: {e}"))?;
        return chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .ok_or_else(|| format!("`{s}` is too far ahead"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let local = |naive: NaiveDateTime| {
        tz.from_local_datetime(&naive)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| format!("`{s}` does not exist in {tz} (a daylight-saving gap)"))
    };
    for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, f) {
            return local(naive);
        }
    }
    for f in ["%H:%M:%S", "%H:%M"] {
        if let Ok(time) = NaiveTime::parse_from_str(s, f) {
            let today = now.with_timezone(&tz).date_naive();
            let at = local(today.and_time(time))?;
            return if at > now { Ok(at) } else { local((today + chrono::Days::new(1)).and_time(time)) };
        }
    }
    Err(format!(
        "`{s}` is not a time: write `2026-12-05 18:00` (in {tz}), `18:00` (the next one), `+30m`, or `2026-12-05T18:00:00+01:00`"
    ))
}

/// Whom `to` names, by transport: `*` the workgroup, `@group` a group's
/// members, anything else a subscriber. Without `via`, each is reached by
/// popup (every Messenger transport that can), else by mail. Someone no
/// transport reaches is an error, not a silent gap.
fn notice_targets(cfg: &Config, to: &[String], via: &[String]) -> Result<Vec<Target>, ApiError> {
    if to.is_empty() {
        return Err(ApiError::BadRequest("say whom: `*` (the workgroup), `@group`, or a subscriber id".into()));
    }
    if to.len() + via.len() > MAX_MATCHERS {
        return Err(ApiError::BadRequest(format!("at most {MAX_MATCHERS} recipients and transports")));
    }
    let subscriber = |id: &str| {
        cfg.subscribers.get(id).map(|s| Recipient {
            id: id.to_string(),
            name: s.name.clone(),
            machine: s.machine.clone(),
            user: s.user.clone(),
            email: s.email.clone(),
            group: None,
        })
    };
    let mut people: Vec<Recipient> = Vec::new();
    for t in to {
        check_text("a recipient", t)?;
        let t = t.trim();
        if t == "*" {
            people.push(Recipient::workgroup());
        } else if let Some(g) = t.strip_prefix('@') {
            let Some(group) = cfg.groups.get(g) else {
                let known: Vec<&str> = cfg.groups.keys().map(String::as_str).collect();
                return Err(ApiError::BadRequest(format!("no group `{g}`; the config's groups: {}", or_none(&known))));
            };
            if group.members.is_empty() {
                return Err(ApiError::BadRequest(format!("group `{g}` has no members")));
            }
            people.extend(group.members.iter().filter_map(|m| subscriber(m)));
        } else {
            people.push(subscriber(t).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "no subscriber `{t}`; write `*` for the workgroup, `@group` for a group's members"
                ))
            })?);
        }
    }
    let mut seen = std::collections::HashSet::new();
    people.retain(|p| seen.insert(p.id.clone()));
    for v in via {
        if !cfg.transports.contains_key(v) {
            let known: Vec<&str> = cfg.transports.keys().map(String::as_str).collect();
            return Err(ApiError::BadRequest(format!(
                "no transport `{v}`; the config's transports: {}",
                or_none(&known)
            )));
        }
    }
    let kind = |id: &str| cfg.transports[id].kind();
    let of_kind = |k: &str| cfg.transports.keys().filter(|id| kind(id) == k).cloned().collect::<Vec<_>>();
    let mut targets: Vec<Target> = Vec::new();
    let mut unreached = Vec::new();
    for p in people {
        let reach: Vec<String> = if via.is_empty() {
            let popups: Vec<String> = of_kind("messenger").into_iter().filter(|t| p.reachable_by(kind(t))).collect();
            if popups.is_empty() {
                of_kind("email").into_iter().filter(|t| p.reachable_by(kind(t))).collect()
            } else {
                popups
            }
        } else {
            via.iter().filter(|t| p.reachable_by(kind(t))).cloned().collect()
        };
        if reach.is_empty() {
            unreached.push(p.id.clone());
        }
        for t in reach {
            match targets.iter_mut().find(|x| x.transport == t) {
                Some(x) => x.recipients.push(p.clone()),
                None => targets.push(Target { transport: t, recipients: vec![p.clone()] }),
            }
        }
    }
    if !unreached.is_empty() {
        let how = if via.is_empty() {
            "by popup or mail (no Messenger transport reaches them, or they have no machine; no email transport, or no address)".to_string()
        } else {
            format!("through {}", via.join(", "))
        };
        return Err(ApiError::BadRequest(format!("{} cannot be reached {how}", unreached.join(", "))));
    }
    Ok(targets)
}

fn or_none(list: &[&str]) -> String {
    if list.is_empty() { "none".into() } else { list.join(", ") }
}

/// Checks posted events, all before any is taken (a request is taken
/// whole or not at all), and hands them to the engine.
fn ingest(cx: &mut Cx<'_>, events: Vec<types::EventIn>, by: &str) -> Result<types::Ingested, ApiError> {
    let now = cx.now;
    let mut out = Vec::with_capacity(events.len());
    for (i, e) in events.into_iter().enumerate() {
        let at = |m: String| ApiError::BadRequest(format!("event {}: {m}", i + 1));
        let severity: Severity = e
            .severity
            .parse()
            .map_err(|_| at(format!("`{}` is not a severity (info, warning, critical, resolved)", e.severity)))?;
        let source = e.source.unwrap_or_else(|| "api".into());
        if source == crate::event::ALERTER_SOURCE {
            return Err(at("the source `alerter` is the daemon's own".into()));
        }
        for (what, text) in [("the source", &source), ("the summary", &e.summary)] {
            check_text(what, text).map_err(|e| at(e.to_string()))?;
        }
        if e.details.len() > 16 * MAX_TEXT {
            return Err(at(format!("the details are longer than {} bytes", 16 * MAX_TEXT)));
        }
        if e.labels.len() > MAX_MATCHERS {
            return Err(at(format!("at most {MAX_MATCHERS} labels")));
        }
        for (k, v) in &e.labels {
            check_text("a label", k).and_then(|_| check_text("a label", v)).map_err(|e| at(e.to_string()))?;
        }
        let host = e.host.unwrap_or_else(|| cx.cfg.name.clone());
        check_text("the host", &host).map_err(|e| at(e.to_string()))?;
        let mut event = crate::event::Event::new(&source, &host, severity, e.summary, now);
        event.details = e.details;
        for (k, v) in e.labels {
            event = event.with_label(k, v);
        }
        if let Some(k) = e.key {
            event = event.with_key(k);
        }
        if e.oneshot {
            event = event.oneshot();
        }
        out.push(event);
    }
    let n = out.len();
    tracing::debug!(by, events = n, "events posted");
    for e in out {
        cx.metrics.event(&e.source, e.severity);
        cx.engine.handle(e.into(), now);
    }
    Ok(types::Ingested { accepted: n })
}

/// An Alertmanager webhook notification for the `alertmanager` source
/// `source`: each alert becomes an event of that source (see the
/// alertmanager plugin). What Alertmanager cannot help sending (a summary
/// too long, a control character in a label) is cut or made visible rather
/// than refused: a refusal would be retried by Alertmanager forever and
/// the alert never shown. Only what is not Alertmanager's payload at all
/// is refused.
fn alertmanager(cx: &mut Cx<'_>, source: &str, body: &[u8], by: &str) -> Result<types::Ingested, ApiError> {
    use alerter_plugin_alertmanager as am;
    let shown = crate::visible::visible_line(source);
    let spec = cx.cfg.sources.get(source).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no source `{shown}`; the webhook's URL ends with the id of an `alertmanager` source"
        ))
    })?;
    let builtin = matches!(spec.plugin.kind, crate::plugin::PluginKind::Builtin(_));
    if spec.plugin.meta.name != "alertmanager" || !builtin {
        return Err(ApiError::NotFound(format!(
            "the source `{shown}` is of type `{}`, not `alertmanager`",
            spec.plugin.meta.name
        )));
    }
    if !spec.enabled {
        return Err(ApiError::NotFound(format!("the source `{shown}` is disabled (`enabled: false`)")));
    }
    let settings: am::Config = serde_json::from_value(spec.settings.clone())
        .map_err(|e| ApiError::Unavailable(format!("the source's settings: {e}")))?;
    let n = am::parse(body).map_err(ApiError::BadRequest)?;
    let line = |s: &str| cut(&crate::visible::visible_line(s), MAX_TEXT);
    let ended = cx.ended.entry(source.to_string()).or_default();
    let all = am::events(&settings, &n);
    let total = all.len();
    let events: Vec<types::EventIn> = all
        .into_iter()
        .filter(|e| ended.admit(e))
        .map(|e| types::EventIn {
            source: Some(source.to_string()),
            host: e.host.map(|h| line(&h)).filter(|h| !h.is_empty()),
            severity: e.severity,
            summary: line(&e.summary),
            details: cut(&crate::visible::visible(&e.details), 16 * MAX_TEXT),
            labels: e
                .labels
                .into_iter()
                .filter(|(k, _)| !k.is_empty())
                .take(MAX_MATCHERS)
                .map(|(k, v)| (line(&k), line(&v)))
                .collect(),
            key: Some(e.key),
            oneshot: false,
        })
        .collect();
    if events.len() < total {
        tracing::debug!(source, stale = total - events.len(), "firing reports of episodes already resolved left out");
    }
    ingest(cx, events, by)
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> String {
    s[..s.floor_char_boundary(max)].to_string()
}

/// The largest page of alerts.
const MAX_PAGE: usize = 1000;

fn alerts(cx: &Cx<'_>, q: &types::AlertsQuery) -> Result<types::AlertsPage, ApiError> {
    let now = cx.now;
    let filter = match q.filter.as_deref() {
        None => None,
        Some(f) => {
            check_text("the filter", f)?;
            let list = matchers::split(f).map_err(ApiError::BadRequest)?;
            if list.is_empty() { None } else { Some(matchers::compile(&list).map_err(ApiError::BadRequest)?) }
        }
    };
    let want: &[AlertStatus] = match q.state.as_deref().unwrap_or("active") {
        "active" => &[AlertStatus::Firing, AlertStatus::Pending],
        "firing" => &[AlertStatus::Firing],
        "pending" => &[AlertStatus::Pending],
        "all" => &[AlertStatus::Firing, AlertStatus::Pending, AlertStatus::Resolved],
        other => {
            return Err(ApiError::BadRequest(format!("`state={other}`: use active, firing, pending or all")));
        }
    };
    let by_rule = match q.sort.as_deref().unwrap_or("severity") {
        "severity" => false,
        "rule" => true,
        other => return Err(ApiError::BadRequest(format!("`sort={other}`: use severity or rule"))),
    };
    let id = match q.id.as_deref() {
        None => None,
        Some(id) if (4..=16).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(id.to_ascii_lowercase())
        }
        Some(id) => {
            return Err(ApiError::BadRequest(format!(
                "`id={}`: an alert id is 16 hex digits (the first 4 or more will do)",
                crate::visible::visible_line(id)
            )));
        }
    };
    let limit = q.limit.unwrap_or(100).min(MAX_PAGE);
    let offset = q.offset.unwrap_or(0);
    let router = cx.engine.router();
    let mut found: Vec<(&str, &Alert)> = router
        .all_alerts()
        .filter(|(r, a)| {
            want.contains(&a.status)
                && id.as_deref().is_none_or(|id| a.fingerprint.to_string().starts_with(id))
                && filter.as_ref().is_none_or(|m| m.matches_in(&a.event, Some(&r.name)))
        })
        .map(|(r, a)| (r.name.as_str(), a))
        .collect();
    let total = found.len();
    let rules = rule_counts(&found);
    // Most severe first, then the oldest; ties broken for stable pages.
    // By rule: the rules in name order, each so within.
    let key = |(r, a): &(&str, &Alert)| {
        (
            if by_rule { r.to_string() } else { String::new() },
            std::cmp::Reverse(a.event.severity),
            a.fired_at.unwrap_or(a.since),
            r.to_string(),
            a.fingerprint,
        )
    };
    let end = offset.saturating_add(limit);
    if end < total {
        // Only the page is sorted in full.
        found.select_nth_unstable_by_key(end, key);
        found.truncate(end);
    }
    found.sort_unstable_by_key(key);
    let alerts = found.into_iter().skip(offset).map(|(r, a)| alert_info(router, r, a, now)).collect();
    Ok(types::AlertsPage { total, offset, alerts, rules })
}

/// The alerts found, counted by rule: the rule with the most severe
/// alert first, then by name.
fn rule_counts(found: &[(&str, &Alert)]) -> Vec<types::RuleAlerts> {
    let mut by: std::collections::BTreeMap<&str, (u64, u64, u64, Severity)> = std::collections::BTreeMap::new();
    for (r, a) in found {
        let e = by.entry(r).or_insert((0, 0, 0, a.event.severity));
        match a.status {
            AlertStatus::Pending => e.1 += 1,
            _ => {
                e.0 += 1;
                e.2 += u64::from(a.ack.is_some());
            }
        }
        e.3 = e.3.max(a.event.severity);
    }
    let mut out: Vec<(Severity, types::RuleAlerts)> = by
        .into_iter()
        .map(|(rule, (firing, pending, acknowledged, sev))| {
            (
                sev,
                types::RuleAlerts {
                    rule: rule.to_string(),
                    firing,
                    pending,
                    acknowledged,
                    severity: sev.as_str().into(),
                },
            )
        })
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.rule.cmp(&b.1.rule)));
    out.into_iter().map(|(_, r)| r).collect()
}

fn alert_info(router: &Router, rule: &str, a: &Alert, now: DateTime<Utc>) -> types::AlertInfo {
    types::AlertInfo {
        id: a.fingerprint.to_string(),
        rule: rule.to_string(),
        state: match a.status {
            AlertStatus::Firing => "firing",
            AlertStatus::Pending => "pending",
            AlertStatus::Resolved => "resolved",
            AlertStatus::Sent => "sent",
        }
        .into(),
        severity: a.event.severity.as_str().into(),
        summary: a.event.summary.clone(),
        source: a.event.source.clone(),
        host: a.event.host.clone(),
        labels: a.event.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        since: a.since,
        fired_at: a.fired_at,
        last_notified: a.last_notified,
        count: a.count,
        ack: a.ack.as_ref().map(|k| types::AckInfo {
            by: k.by.clone(),
            at: k.at,
            comment: k.comment.clone(),
            severity: k.severity.as_str().into(),
        }),
        silenced_by: router.silence_of(rule, &a.event, now).map(|s| s.id.clone()),
    }
}

fn acknowledge(cx: &mut Cx<'_>, req: types::AckRequest, by: &str) -> Result<types::AckResult, ApiError> {
    let now = cx.now;
    if req.ids.is_empty() && req.matchers.is_empty() {
        return Err(ApiError::BadRequest("name alerts by id, or give matchers for a group".into()));
    }
    if req.ids.len() + req.matchers.len() > MAX_MATCHERS {
        return Err(ApiError::BadRequest(format!("at most {MAX_MATCHERS} ids and matchers")));
    }
    for t in req.ids.iter().chain(&req.matchers) {
        check_text("an id or matcher", t)?;
    }
    if let Some(c) = &req.comment {
        check_text("the comment", c)?;
    }
    let matcher = if req.matchers.is_empty() {
        None
    } else {
        Some(matchers::compile(&req.matchers).map_err(ApiError::BadRequest)?)
    };
    let comment = req.comment.as_deref().filter(|c| !c.trim().is_empty());
    let acked = cx.engine.acknowledge(&req.ids, matcher.as_ref(), by, comment, now).map_err(|e| match e {
        ChangeError::NotFound(m) => ApiError::NotFound(m),
        ChangeError::Invalid(m) => ApiError::BadRequest(m),
    })?;
    let router = cx.engine.router();
    Ok(types::AckResult { acknowledged: acked.iter().map(|(r, a)| alert_info(router, r, a, now)).collect() })
}

fn view(s: &Silence, now: DateTime<Utc>) -> types::Silence {
    let state = if s.ends <= now {
        "expired"
    } else if s.starts.is_some_and(|t| t > now) {
        "pending"
    } else {
        "active"
    };
    types::Silence {
        id: s.id.clone(),
        matchers: s.matchers.clone(),
        starts: s.starts,
        ends: s.ends,
        comment: s.comment.clone(),
        created_by: s.created_by.clone(),
        created_at: s.created_at,
        origin: if s.is_runtime() { "api" } else { "config" }.into(),
        state: state.into(),
    }
}

/// What the metrics' gauges show now.
fn snapshot(cx: &Cx<'_>) -> Snapshot {
    let now = cx.now;
    let outbox = cx
        .cfg
        .transports
        .keys()
        .map(|id| {
            let (n, first) = cx.store.outbox_pending(id).unwrap_or((0, None));
            (id.clone(), n, first.map(|t| (now - t).num_milliseconds().max(0) as f64 / 1e3))
        })
        .collect();
    let mut per_rule: std::collections::BTreeMap<&str, (u64, u64, u64)> =
        cx.engine.router().rules().iter().map(|r| (r.name.as_str(), (0, 0, 0))).collect();
    for (r, a) in cx.engine.router().all_alerts() {
        let e = per_rule.entry(r.name.as_str()).or_default();
        match a.status {
            AlertStatus::Firing => {
                e.0 += 1;
                e.2 += u64::from(a.ack.is_some());
            }
            AlertStatus::Pending => e.1 += 1,
            AlertStatus::Resolved | AlertStatus::Sent => {}
        }
    }
    let health: std::collections::HashMap<&str, &crate::plugin::supervisor::Health> =
        cx.sources.health().into_iter().collect();
    Snapshot {
        outbox,
        alerts: per_rule.into_iter().map(|(r, (f, p, a))| (r.to_string(), f, p, a)).collect(),
        sources: cx
            .cfg
            .sources
            .keys()
            .map(|id| match health.get(id.as_str()) {
                Some(h) => (id.clone(), !h.restarting(), h.restarts(), h.dropped()),
                None => (id.clone(), false, 0, 0),
            })
            .collect(),
        silences: cx.engine.silences().filter(|s| s.is_active(now)).count() as u64,
        store_failing: cx.store_failing,
        started: cx.started_at.timestamp_millis() as f64 / 1e3,
    }
}

fn status(cx: &Cx<'_>) -> types::Status {
    let now = cx.now;
    let health: std::collections::HashMap<&str, &crate::plugin::supervisor::Health> =
        cx.sources.health().into_iter().collect();
    let sources = cx
        .cfg
        .sources
        .values()
        .map(|spec| {
            let h = health.get(spec.id.as_str());
            types::SourceHealth {
                id: spec.id.clone(),
                kind: spec.plugin.meta.name.clone(),
                state: match h {
                    None => "stopped",
                    Some(h) if h.restarting() => "restarting",
                    Some(_) => "running",
                }
                .into(),
                restarts: h.map_or(0, |h| h.restarts()),
                dropped_events: h.map_or(0, |h| h.dropped()),
            }
        })
        .collect();
    let mut pending_all = 0;
    let mut oldest: Option<DateTime<Utc>> = None;
    let transports = cx
        .cfg
        .transports
        .iter()
        .map(|(id, t)| {
            let (pending, first) = cx.store.outbox_pending(id).unwrap_or((0, None));
            pending_all += pending;
            oldest = match (oldest, first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let failures = cx.engine.failing().get(id).copied().unwrap_or(0) as u64;
            types::TransportHealth {
                id: id.clone(),
                kind: t.kind().to_string(),
                state: if failures > 0 { "failing" } else { "ok" }.into(),
                failures_since_success: failures,
                pending,
            }
        })
        .collect();
    let (firing, pending, acknowledged) = cx.engine.router().alert_counts();
    types::Status {
        name: cx.cfg.name.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: cx.started_at,
        uptime_seconds: (now - cx.started_at).num_seconds().max(0) as u64,
        config_hash: cx.cfg.hash.clone(),
        config_loaded_at: cx.loaded_at,
        sources,
        transports,
        outbox: types::OutboxStatus {
            pending: pending_all,
            oldest_pending_seconds: oldest.map(|t| ((now - t).num_milliseconds().max(0) as f64) / 1e3),
        },
        alerts: types::AlertCounts {
            firing: firing as u64,
            pending: pending as u64,
            acknowledged: acknowledged as u64,
        },
        active_silences: cx.engine.silences().filter(|s| s.is_active(now)).count(),
        next_notices: cx
            .engine
            .notices()
            .upcoming()
            .into_iter()
            .take(10)
            .map(|(name, at, event_at)| types::NextNotice { name: name.into(), at, event_at })
            .collect(),
        pending_digests: pending_digests(cx.engine),
        store_failing: cx.store_failing,
    }
}

/// The budget windows that folded something, earliest digest first.
fn pending_digests(engine: &Engine) -> Vec<types::PendingDigest> {
    let mut out: Vec<types::PendingDigest> = engine
        .budget_windows()
        .filter_map(|w| {
            let f = w.folded.as_ref()?;
            Some(types::PendingDigest {
                number: f.number,
                holder: w.holder.clone(),
                transport: w.transport.clone(),
                budget: format!("{} {}", w.class.as_str(), w.limit),
                shown: w.shown,
                folded: f.count,
                at: w.ends,
            })
        })
        .collect();
    out.sort_by_key(|d| (d.at, d.number));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::PluginRegistry;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn times_are_read_in_the_configs_zone_unless_they_carry_one() {
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let now = utc("2026-12-02T21:00:00Z");
        let at = |s: &str| parse_at(s, berlin, now);
        assert_eq!(at("2026-12-05 18:00"), Ok(utc("2026-12-05T17:00:00Z")));
        assert_eq!(at("2026-12-05 18:00:30"), Ok(utc("2026-12-05T17:00:30Z")), "seconds allowed");
        assert_eq!(at("2026-12-05T18:00"), Ok(utc("2026-12-05T17:00:00Z")));
        assert_eq!(at("2026-12-05T18:00:00+00:00"), Ok(utc("2026-12-05T18:00:00Z")), "a zone of its own wins");
        assert_eq!(at("now"), Ok(now));
        assert_eq!(at("+90m"), Ok(utc("2026-12-02T22:30:00Z")));
        // As at(1): 23:30 is still to come today; 18:00 has passed, so tomorrow.
        assert_eq!(at("23:30"), Ok(utc("2026-12-02T22:30:00Z")));
        assert_eq!(at("18:00"), Ok(utc("2026-12-03T17:00:00Z")));
        // Summer time: 2027-03-28 02:30 does not exist in Berlin.
        let gap = at("2027-03-28 02:30").unwrap_err();
        assert!(gap.contains("daylight-saving gap"), "{gap}");
        for bad in ["tomorrow", "2026-13-01 10:00", "25:00", "+soon", ""] {
            let e = at(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
    }

    #[test]
    fn short_titles_cut_at_a_word() {
        assert_eq!(short_title("Down at six\nmore"), "Down at six");
        let long = "The file server goes down for maintenance tonight and comes back tomorrow morning";
        let t = short_title(long);
        assert!(t.ends_with('…') && t.chars().count() <= SHORT_TITLE + 1, "{t}");
        assert!(long.starts_with(t.trim_end_matches('…')), "{t}");
    }

    #[test]
    fn status_lists_the_digests_a_storm_has_started() {
        let text = r#"
transports:
  popup: { type: messenger, budget: 2 per 1m }
subscribers:
  alice: { machine: ALICE-PC }
rules:
  - name: app
    notify: [{ subscribers: [alice], via: [popup] }]
"#;
        let registry = PluginRegistry::empty();
        let loaded = crate::config::load_str("a.yaml", text, None, &crate::transport::load_options(&registry)).unwrap();
        let now = utc("2026-12-03T10:00:00Z");
        let mut engine = Engine::new(loaded.config.engine_config(), Vec::new(), Default::default(), now);
        assert!(pending_digests(&engine).is_empty());
        for i in 0..5 {
            let e =
                crate::event::Event::new("app", "web01", crate::event::Severity::Warning, format!("error {i}"), now)
                    .with_key(format!("e{i}"));
            engine.handle(crate::event::Inbound::Event(e), now);
        }
        assert_eq!(engine.take_turn().notifications.len(), 2);
        assert_eq!(
            pending_digests(&engine),
            [types::PendingDigest {
                number: 1,
                holder: "alice".into(),
                transport: "popup".into(),
                budget: "popups 2 per 1m".into(),
                shown: 2,
                folded: 3,
                at: utc("2026-12-03T10:01:00Z"),
            }]
        );
    }

    const CONFIG: &str = r#"
transports:
  popup: { type: messenger }
  mail: { type: email, relay: localhost, tls: none, from: "Alerter <alerter@example.org>" }
  file: { type: log, path: "-" }
subscribers:
  alice: { machine: ALICE-PC }
  bob: { email: bob@example.org }
  carol: { name: Carol }
groups:
  admins: { members: [alice, bob] }
  empty: { members: [] }
"#;

    fn targets(text: &str, to: &[&str], via: &[&str]) -> Result<Vec<(String, Vec<String>)>, String> {
        let registry = PluginRegistry::empty();
        let opts = crate::transport::load_options(&registry);
        let loaded = crate::config::load_str("a.yaml", text, None, &opts).unwrap();
        let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
        let via: Vec<String> = via.iter().map(|s| s.to_string()).collect();
        notice_targets(&loaded.config, &to, &via)
            .map(|ts| ts.into_iter().map(|t| (t.transport, t.recipients.into_iter().map(|r| r.id).collect())).collect())
            .map_err(|e| e.to_string())
    }

    fn pair(t: &str, ids: &[&str]) -> (String, Vec<String>) {
        (t.to_string(), ids.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn recipients_are_reached_by_popup_else_by_mail() {
        assert_eq!(targets(CONFIG, &["*"], &[]), Ok(vec![pair("popup", &["*"])]));
        assert_eq!(
            targets(CONFIG, &["@admins", "alice"], &[]),
            Ok(vec![pair("popup", &["alice"]), pair("mail", &["bob"])]),
            "alice has a machine, bob only an address; alice named twice is told once"
        );
        assert_eq!(targets(CONFIG, &["*", "bob"], &["file"]), Ok(vec![pair("file", &["*", "bob"])]));
    }

    #[test]
    fn whom_no_transport_reaches_is_an_error_not_a_gap() {
        let err = |to: &[&str], via: &[&str]| targets(CONFIG, to, via).unwrap_err();
        assert!(err(&["carol"], &[]).contains("carol cannot be reached by popup or mail"));
        assert!(err(&["*"], &["mail"]).contains("* cannot be reached through mail"));
        assert!(err(&["dave"], &[]).contains("no subscriber `dave`"));
        assert!(err(&["@ops"], &[]).contains("no group `ops`; the config's groups: admins, empty"));
        assert!(err(&["@empty"], &[]).contains("group `empty` has no members"));
        assert!(err(&["*"], &["pager"]).contains("no transport `pager`; the config's transports: popup, mail, file"));
        assert!(err(&[], &[]).contains("say whom"));
        assert!(err(&["ali\u{1b}[2Jce"], &[]).contains("control characters"));
        let no_popups = CONFIG.replace("  popup: { type: messenger }\n", "");
        assert!(targets(&no_popups, &["*"], &[]).unwrap_err().contains("* cannot be reached by popup or mail"));
    }
}
