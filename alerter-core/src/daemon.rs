//! The daemon: wires sources, the router, the store and transports together.
//!
//! One task (the engine loop in [`run`]) owns the router, the notice
//! scheduler and the store; everything reaches it through channels: events
//! from sources (bounded, so a flood slows sources down instead of growing
//! memory), delivery reports from transport workers, and control messages
//! (reload, shutdown) from the binary's signal handlers. Each transport has
//! its own queue and worker, so a slow transport never delays another.
//!
//! Reload builds the complete new configuration (including opening its
//! transports) before touching anything; if any part fails the old one keeps
//! running and the failure is logged and raised as an `alerter` event.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::config::{self, Config, LoadOptions};
use crate::event::{ALERTER_SOURCE, Event, Inbound, Severity, internal};
use crate::notices::NoticeScheduler;
use crate::notify::{Notification, notice_notifications, render_dispatch};
use crate::outbox::{Dispatcher, Outcome, Report, RetryPolicy};
use crate::plugin::PluginRegistry;
use crate::plugin::supervisor::{Backoff, SharedStates, Sources, SupervisorEnv};
use crate::rules::router::{Output, Router};
use crate::store::{AuditRecord, Store, StoreError};
use crate::transport::{self, Transport, TransportError};

/// Where `now` comes from. Production uses the system clock; tests use a
/// clock driven by tokio's (pausable) time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that starts at a given time and advances with tokio's clock, so
/// `tokio::time::pause` and `advance` move it.
#[derive(Debug)]
pub struct TokioClock {
    start: DateTime<Utc>,
    origin: tokio::time::Instant,
}

impl TokioClock {
    pub fn new(start: DateTime<Utc>) -> TokioClock {
        TokioClock { start, origin: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.origin;
        self.start + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

/// What the binary can ask of a running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Reload,
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("transport `{name}`: {source}")]
    Transport { name: String, source: TransportError },
}

/// How to run.
pub struct RunOptions {
    /// The file to re-read on reload (`None`: the embedded default).
    pub config_path: Option<PathBuf>,
    /// Built-in plugins and how to run the others.
    pub plugins: Arc<PluginRegistry>,
    /// How sources that stop on their own are restarted.
    pub backoff: Backoff,
    /// How often a source's dropped events are reported.
    pub drop_report_every: Duration,
    pub clock: Arc<dyn Clock>,
    /// How long shutdown waits for queued deliveries.
    pub shutdown_grace: Duration,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions").field("config_path", &self.config_path).finish_non_exhaustive()
    }
}

type Built = HashMap<String, (Arc<dyn Transport>, RetryPolicy)>;

fn build_transports(cfg: &Config) -> Result<Built, DaemonError> {
    let mut out = HashMap::new();
    for (name, t) in &cfg.transports {
        let cx = transport::BuildCx { alerter_name: &cfg.name, workgroup: &cfg.workgroup };
        let built = transport::build(t, &cx).map_err(|source| DaemonError::Transport { name: name.clone(), source })?;
        out.insert(name.clone(), (built, t.retry_policy()));
    }
    Ok(out)
}

fn start_dispatcher(
    cfg: &Config,
    built: Built,
    reports: &mpsc::UnboundedSender<Report>,
    clock: &Arc<dyn Clock>,
) -> Result<Dispatcher, DaemonError> {
    Ok(Dispatcher::start(built, &cfg.state_dir, reports.clone(), clock.clone())?)
}

/// What one turn of the engine decided, committed together.
#[derive(Default)]
struct Turn {
    notifications: Vec<Notification>,
    audit: Vec<AuditRecord>,
    /// Sources' latest saved states, behind the events handled this turn.
    states: HashMap<String, String>,
}

impl Turn {
    /// Writes alert state, new notifications and audit records in one
    /// transaction, then wakes the transports that have new work.
    fn commit(&mut self, store: &mut Store, router: &mut Router, dispatcher: &Dispatcher, now: DateTime<Utc>) {
        let changes = router.take_changes();
        if let Err(e) = store.commit(&changes, &self.notifications, &self.audit, &self.states, now) {
            error!("cannot save state: {e}");
        }
        let mut woken: Vec<&str> = Vec::new();
        for n in &self.notifications {
            if !woken.contains(&n.transport.as_str()) {
                woken.push(&n.transport);
                dispatcher.wake(&n.transport);
            }
        }
        self.notifications.clear();
        self.audit.clear();
        self.states.clear();
    }
}

/// A handle for feeding events (and sources' states) into a running daemon.
pub type EventSender = mpsc::Sender<Inbound>;

/// Runs the daemon until `Control::Shutdown` (or the control channel closes).
/// `events` lets the caller (sources, tests) inject events.
pub async fn run(
    config: Config,
    opts: RunOptions,
    mut control: mpsc::Receiver<Control>,
    events: Option<(EventSender, mpsc::Receiver<Inbound>)>,
) -> Result<(), DaemonError> {
    let mut cfg = config;
    let clock = opts.clock.clone();
    let mut store = Store::open(&cfg.state_dir)?;
    info!(state = %store.path().display(), "state store open");
    let now = clock.now();
    let mut router = Router::new(cfg.rules.clone(), cfg.silences.clone());
    let stored = store.load_alerts()?;
    if !stored.is_empty() {
        info!(alerts = stored.len(), "restored alert state");
    }
    router.restore(stored, now);
    let mut notices = NoticeScheduler::new(cfg.notices.clone(), &store.notice_history()?, now);
    // Stored at once, not only when something fires: a notice first known
    // now must count as known at the next restart (see `notices`).
    store.save_notice_history(notices.history())?;

    let (report_tx, mut report_rx) = mpsc::unbounded_channel::<Report>();
    let orphans = store.fail_orphans(&cfg.transports.keys().map(String::as_str).collect::<Vec<_>>(), now)?;
    if orphans > 0 {
        warn!(orphans, "notifications for transports no longer configured were marked failed");
    }
    let mut dispatcher = start_dispatcher(&cfg, build_transports(&cfg)?, &report_tx, &clock)?;
    // The engine keeps a sender of its own, so the channel never closes
    // while it runs, whatever sources come and go.
    let (event_tx, mut event_rx) = match events {
        Some((tx, rx)) => (tx, rx),
        None => {
            let (tx, rx) = mpsc::channel(cfg.event_queue);
            (tx, rx)
        }
    };

    let states: SharedStates = Arc::new(std::sync::Mutex::new(store.source_states()?));
    let supervisor_env = |cfg: &Config| SupervisorEnv {
        engine: event_tx.clone(),
        states: states.clone(),
        alerter_name: cfg.name.clone(),
        clock: clock.clone(),
        plugins: cfg.plugins.clone(),
        grace: opts.shutdown_grace,
        backoff: opts.backoff,
        drop_report_every: opts.drop_report_every,
    };
    let specs: Vec<_> = cfg.sources.values().cloned().collect();
    let mut sources = Sources::default();
    sources.reconcile(&specs, &supervisor_env(&cfg)).await;

    let mut out: Vec<Output> = Vec::new();
    let mut turn = Turn::default();
    let mut batch: Vec<Inbound> = Vec::with_capacity(256);
    let mut failing: HashMap<String, usize> = HashMap::new();
    router.handle_into(internal::started(&cfg.name, env!("CARGO_PKG_VERSION"), now), now, &mut out);
    info!(name = %cfg.name, rules = cfg.rules.len(), transports = cfg.transports.len(), "alerter started");

    loop {
        let now = clock.now();
        process(&mut out, &cfg, &mut turn);
        turn.commit(&mut store, &mut router, &dispatcher, now);
        let wake = [router.next_wakeup(), notices.next_wakeup()].into_iter().flatten().min();
        let sleep = async {
            match wake {
                Some(w) => tokio::time::sleep((w - clock.now()).to_std().unwrap_or_default()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            ctl = control.recv() => match ctl {
                Some(Control::Reload) => {
                    let now = clock.now();
                    match reload(&opts, &mut cfg, &mut router, &mut notices, &mut store, &mut dispatcher, &report_tx, now) {
                        Ok(()) => {
                            let specs: Vec<_> = cfg.sources.values().cloned().collect();
                            sources.reconcile(&specs, &supervisor_env(&cfg)).await;
                            router.handle_into(internal::reloaded(&cfg.name, cfg.rules.len(), now), now, &mut out);
                        }
                        Err(problems) => router.handle_into(internal::reload_failed(&cfg.name, problems, now), now, &mut out),
                    }
                }
                Some(Control::Shutdown) | None => break,
            },
            Some(report) = report_rx.recv() => {
                let now = clock.now();
                on_report(report, &mut failing, &mut router, &cfg, now, &mut out);
            }
            _ = event_rx.recv_many(&mut batch, 256) => {
                let now = clock.now();
                for m in batch.drain(..) {
                    inbound(m, &mut router, &mut turn, now, &mut out);
                }
            }
            _ = sleep => {
                let now = clock.now();
                router.tick_into(now, &mut out);
                let due = notices.due(now);
                if !due.is_empty() {
                    for f in due {
                        let (message, err) = cfg.templates.render(&[&f.notice.template_name()], crate::template::NOTICE_FALLBACK, &f.context());
                        if let Some(err) = err {
                            warn!("notice `{}`: {err}", f.notice.name);
                        }
                        let (title, text) = f.title_and_text(&message);
                        turn.notifications.extend(notice_notifications(&f.notice.name, &title, &text, &f.notice.targets, f.fire_at));
                    }
                    if let Err(e) = store.save_notice_history(notices.history()) {
                        error!("cannot save notice history: {e}");
                    }
                }
            }
        }
    }

    info!("shutting down");
    // Sources first, so what they send while stopping is still handled.
    sources.stop_all().await;
    let now = clock.now();
    while let Ok(m) = event_rx.try_recv() {
        inbound(m, &mut router, &mut turn, now, &mut out);
    }
    process(&mut out, &cfg, &mut turn);
    turn.commit(&mut store, &mut router, &dispatcher, now);
    dispatcher.stop(opts.shutdown_grace).await;
    drop(report_tx);
    while let Ok(report) = report_rx.try_recv() {
        on_report(report, &mut failing, &mut router, &cfg, now, &mut Vec::new());
    }
    turn.commit(&mut store, &mut router, &Dispatcher::none(), now);
    info!("stopped");
    Ok(())
}

/// Hands an event to the router, or notes a source's state for this turn's commit.
fn inbound(m: Inbound, router: &mut Router, turn: &mut Turn, now: DateTime<Utc>, out: &mut Vec<Output>) {
    match m {
        Inbound::Event(e) => router.handle_into(e, now, out),
        Inbound::State { source, state } => {
            turn.states.insert(source, state);
        }
    }
}

/// Turns router outputs into notifications and audit records for this turn.
fn process(out: &mut Vec<Output>, cfg: &Config, turn: &mut Turn) {
    let cx = cfg.render_cx();
    for o in out.drain(..) {
        match o {
            Output::Notify(d) => {
                let (notifications, errors) = render_dispatch(&d, &cx);
                for e in errors {
                    warn!(rule = %d.rule.name, "{e}; used the built-in template");
                }
                for n in &notifications {
                    debug!(id = %n.id, transport = %n.transport, rule = %n.rule, "queued");
                }
                turn.notifications.extend(notifications);
            }
            Output::Suppressed(s) => {
                info!(rule = %s.rule, alert = %s.fingerprint, "not notified: {}", s.reason);
                turn.audit.push(AuditRecord {
                    time: s.at,
                    rule: s.rule,
                    fingerprint: Some(s.fingerprint),
                    transport: None,
                    notification: None,
                    status: "suppressed".into(),
                    reason: Some(s.reason.to_string()),
                    summary: Some(s.summary),
                });
            }
        }
    }
}

/// Raises (and resolves) the `alerter` event about failing deliveries.
///
/// A transport is "failing" when a notification failed for good, expired,
/// or needed a third attempt; the first success clears it. A notification
/// that is itself about failing deliveries does not raise another, which
/// would only loop.
fn on_report(
    r: Report,
    failing: &mut HashMap<String, usize>,
    router: &mut Router,
    cfg: &Config,
    now: DateTime<Utc>,
    out: &mut Vec<Output>,
) {
    let n = &r.notification;
    let key = format!("delivery:{}", n.transport);
    let event = |severity: Severity, summary: String| {
        Event::new(ALERTER_SOURCE, &cfg.name, severity, summary, now)
            .with_label("event", "delivery_failing")
            .with_label("transport", &n.transport)
            .with_key(key.clone())
    };
    let why = match &r.outcome {
        Outcome::Sent(_) => {
            if failing.remove(&n.transport).is_some() {
                router.handle_into(
                    event(Severity::Resolved, format!("deliveries via `{}` work again", n.transport)),
                    now,
                    out,
                );
            }
            return;
        }
        Outcome::Retrying { attempts, .. } if *attempts < 3 => return,
        Outcome::Retrying { error, attempts } => format!("{error} (attempt {attempts}, retrying)"),
        Outcome::Failed(e) => {
            error!(id = %n.id, transport = %n.transport, rule = %n.rule, "delivery failed for good: {e}");
            e.clone()
        }
        Outcome::Expired(e) => {
            error!(id = %n.id, transport = %n.transport, rule = %n.rule, "delivery given up: {e}");
            e.clone()
        }
    };
    *failing.entry(n.transport.clone()).or_default() += 1;
    let about_delivery = n.alerts.iter().any(|a| a.labels.get("event").map(String::as_str) == Some("delivery_failing"));
    if !about_delivery {
        router.handle_into(
            event(Severity::Warning, format!("deliveries via `{}` are failing: {why}", n.transport)),
            now,
            out,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn reload(
    opts: &RunOptions,
    cfg: &mut Config,
    router: &mut Router,
    notices: &mut NoticeScheduler,
    store: &mut Store,
    dispatcher: &mut Dispatcher,
    reports: &mpsc::UnboundedSender<Report>,
    now: DateTime<Utc>,
) -> Result<(), usize> {
    info!(config = ?opts.config_path, "reloading configuration");
    let load_opts = LoadOptions { plugins: opts.plugins.as_ref(), env: None };
    let loaded = match config::load(opts.config_path.as_deref(), &load_opts) {
        Ok(l) => l,
        Err(errs) => {
            for line in config::diag::render_short(&errs.diagnostics, &errs.sources) {
                error!("{line}");
            }
            let n = errs.error_count();
            let errors = if n == 1 { "1 error".to_string() } else { format!("{n} errors") };
            error!("configuration not reloaded ({errors}); the previous configuration keeps running");
            return Err(errs.error_count());
        }
    };
    for line in config::diag::render_short(&loaded.warnings, &loaded.sources) {
        warn!("{line}");
    }
    let new = loaded.config;
    if new.state_dir != cfg.state_dir {
        warn!("`alerter.state_dir` changed to {}; it takes effect at the next restart", new.state_dir.display());
    }
    let built = match build_transports(&new) {
        Ok(b) => b,
        Err(e) => {
            error!("configuration not reloaded: {e}; the previous configuration keeps running");
            return Err(1);
        }
    };
    let history = {
        let mut h = store.notice_history().unwrap_or_default();
        h.extend(notices.history().iter().map(|(k, v)| (k.clone(), *v)));
        h
    };
    router.reconfigure(new.rules.clone(), new.silences.clone(), now);
    *notices = NoticeScheduler::new(new.notices.clone(), &history, now);
    if let Err(e) = store.save_notice_history(notices.history()) {
        error!("cannot save notice history: {e}");
    }
    let fresh = match start_dispatcher(cfg, built, reports, &opts.clock) {
        Ok(d) => d,
        Err(e) => {
            error!("configuration not reloaded: {e}; the previous configuration keeps running");
            return Err(1);
        }
    };
    if let Ok(n) = store.fail_orphans(&new.transports.keys().map(String::as_str).collect::<Vec<_>>(), now)
        && n > 0
    {
        warn!(orphans = n, "notifications for transports removed by the reload were marked failed");
    }
    let old = std::mem::replace(dispatcher, fresh);
    tokio::spawn(old.stop(opts.shutdown_grace));
    let state_dir = cfg.state_dir.clone();
    *cfg = new;
    cfg.state_dir = state_dir;
    info!(rules = cfg.rules.len(), "configuration reloaded");
    Ok(())
}
