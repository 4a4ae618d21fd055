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
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{self, Config, LoadOptions};
use crate::event::{ALERTER_SOURCE, Event, Severity, internal};
use crate::notices::NoticeScheduler;
use crate::notify::{Notification, notice_notifications, render_dispatch};
use crate::plugin::PluginRegistry;
use crate::plugin::supervisor::{Backoff, Sources, SupervisorEnv};
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

/// A delivery outcome, reported by a transport worker to the engine.
#[derive(Debug)]
struct Report {
    notification: Notification,
    result: Result<Option<String>, String>,
    at: DateTime<Utc>,
}

/// Per-transport queues and their workers.
struct Dispatcher {
    queues: HashMap<String, mpsc::Sender<Notification>>,
    workers: Vec<JoinHandle<()>>,
    cancel: CancellationToken,
}

const QUEUE_CAPACITY: usize = 10_000;
const MAX_ATTEMPTS: u32 = 5;

impl Dispatcher {
    fn start(
        built: HashMap<String, Arc<dyn Transport>>,
        reports: mpsc::UnboundedSender<Report>,
        clock: Arc<dyn Clock>,
    ) -> Dispatcher {
        let cancel = CancellationToken::new();
        let mut queues = HashMap::new();
        let mut workers = Vec::new();
        for (name, t) in built {
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            queues.insert(name.clone(), tx);
            workers.push(tokio::spawn(worker(name, t, rx, reports.clone(), clock.clone(), cancel.clone())));
        }
        Dispatcher { queues, workers, cancel }
    }

    /// Queues a notification; gives it back with the reason if it cannot be queued.
    fn enqueue(&self, n: Notification) -> Result<(), Box<(Notification, String)>> {
        match self.queues.get(&n.transport) {
            Some(q) => q.try_send(n).map_err(|e| match e {
                mpsc::error::TrySendError::Full(n) => Box::new((n, "transport queue is full".to_string())),
                mpsc::error::TrySendError::Closed(n) => Box::new((n, "transport is shutting down".to_string())),
            }),
            None => {
                let why = format!("no transport `{}`", n.transport);
                Err(Box::new((n, why)))
            }
        }
    }

    /// Stops taking work, lets workers drain their queues for up to `grace`,
    /// then cancels what is left.
    async fn stop(self, grace: Duration) {
        drop(self.queues);
        let all = futures_join(self.workers);
        if tokio::time::timeout(grace, all).await.is_err() {
            warn!("transports did not finish within {grace:?}; abandoning queued deliveries");
            self.cancel.cancel();
        }
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

async fn worker(
    name: String,
    t: Arc<dyn Transport>,
    mut rx: mpsc::Receiver<Notification>,
    reports: mpsc::UnboundedSender<Report>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    while let Some(n) = rx.recv().await {
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let outcome = tokio::select! {
                r = t.send(&n) => r,
                _ = cancel.cancelled() => break Err("cancelled at shutdown".to_string()),
            };
            match outcome {
                Ok(d) => break Ok(d.reply),
                Err(e) if e.is_transient() && attempt < MAX_ATTEMPTS => {
                    let backoff = Duration::from_secs(1 << (attempt - 1));
                    debug!(transport = %name, attempt, "transient failure, retrying in {backoff:?}: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => break Err(format!("{e} (cancelled at shutdown)")),
                    }
                }
                Err(e) => break Err(e.to_string()),
            }
        };
        if reports.send(Report { notification: n, result, at: clock.now() }).is_err() {
            return;
        }
    }
}

fn build_transports(cfg: &Config) -> Result<HashMap<String, Arc<dyn Transport>>, DaemonError> {
    let mut out = HashMap::new();
    for (name, t) in &cfg.transports {
        let cx = transport::BuildCx { alerter_name: &cfg.name, workgroup: &cfg.workgroup };
        let built = transport::build(t, &cx).map_err(|source| DaemonError::Transport { name: name.clone(), source })?;
        out.insert(name.clone(), built);
    }
    Ok(out)
}

/// A handle for feeding events into a running daemon.
pub type EventSender = mpsc::Sender<Event>;

/// Runs the daemon until `Control::Shutdown` (or the control channel closes).
/// `events` lets the caller (sources, tests) inject events.
pub async fn run(
    config: Config,
    opts: RunOptions,
    mut control: mpsc::Receiver<Control>,
    events: Option<(EventSender, mpsc::Receiver<Event>)>,
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

    let (report_tx, mut report_rx) = mpsc::unbounded_channel::<Report>();
    let mut dispatcher = Dispatcher::start(build_transports(&cfg)?, report_tx.clone(), clock.clone());
    // The engine keeps a sender of its own, so the channel never closes
    // while it runs, whatever sources come and go.
    let (event_tx, mut event_rx) = match events {
        Some((tx, rx)) => (tx, rx),
        None => {
            let (tx, rx) = mpsc::channel(cfg.event_queue);
            (tx, rx)
        }
    };

    let supervisor_env = |cfg: &Config| SupervisorEnv {
        engine: event_tx.clone(),
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
    let mut batch: Vec<Event> = Vec::with_capacity(256);
    let mut failing: HashMap<String, usize> = HashMap::new();
    router.handle_into(internal::started(&cfg.name, env!("CARGO_PKG_VERSION"), now), now, &mut out);
    info!(name = %cfg.name, rules = cfg.rules.len(), transports = cfg.transports.len(), "alerter started");

    loop {
        let now = clock.now();
        process(&mut out, &cfg, &dispatcher, &mut store);
        if let Err(e) = store.apply_alert_changes(&router.take_changes(), now) {
            error!("cannot save alert state: {e}");
        }
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
                    match reload(&opts, &mut cfg, &mut router, &mut notices, &store, &mut dispatcher, report_tx.clone(), now) {
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
                on_report(report, &mut store, &mut failing, &mut router, &cfg, now, &mut out);
            }
            _ = event_rx.recv_many(&mut batch, 256) => {
                let now = clock.now();
                for e in batch.drain(..) {
                    router.handle_into(e, now, &mut out);
                }
            }
            _ = sleep => {
                let now = clock.now();
                router.tick_into(now, &mut out);
                let due = notices.due(now);
                if !due.is_empty() {
                    for f in due {
                        let (message, err) = cfg.templates.render(&[&f.notice.template_name()], "{{ name }}", &f.context());
                        if let Some(err) = err {
                            warn!("notice `{}`: {err}", f.notice.name);
                        }
                        let (title, text) = f.title_and_text(&message);
                        for n in notice_notifications(&f.notice.name, &title, &text, &f.notice.targets, f.fire_at) {
                            send(&dispatcher, &mut store, n);
                        }
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
    while let Ok(e) = event_rx.try_recv() {
        router.handle_into(e, now, &mut out);
    }
    process(&mut out, &cfg, &dispatcher, &mut store);
    if let Err(e) = store.apply_alert_changes(&router.take_changes(), now) {
        error!("cannot save alert state: {e}");
    }
    dispatcher.stop(opts.shutdown_grace).await;
    drop(report_tx);
    while let Ok(report) = report_rx.try_recv() {
        on_report(report, &mut store, &mut failing, &mut router, &cfg, now, &mut Vec::new());
    }
    if let Err(e) = store.apply_alert_changes(&router.take_changes(), now) {
        error!("cannot save alert state: {e}");
    }
    info!("stopped");
    Ok(())
}

/// Turns router outputs into queued notifications and audit records.
fn process(out: &mut Vec<Output>, cfg: &Config, dispatcher: &Dispatcher, store: &mut Store) {
    if out.is_empty() {
        return;
    }
    let mut audit = Vec::new();
    let cx = cfg.render_cx();
    for o in out.drain(..) {
        match o {
            Output::Notify(d) => {
                let (notifications, errors) = render_dispatch(&d, &cx);
                for e in errors {
                    warn!(rule = %d.rule.name, "{e}; used the built-in template");
                }
                for n in notifications {
                    send(dispatcher, store, n);
                }
            }
            Output::Suppressed(s) => {
                info!(rule = %s.rule, alert = %s.fingerprint, "not notified: {}", s.reason);
                audit.push(AuditRecord {
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
    if let Err(e) = store.audit(&audit) {
        error!("cannot write audit trail: {e}");
    }
}

fn send(dispatcher: &Dispatcher, store: &mut Store, n: Notification) {
    debug!(id = %n.id, transport = %n.transport, rule = %n.rule, "queued");
    if let Err(failed) = dispatcher.enqueue(n) {
        let (n, why) = *failed;
        error!(transport = %n.transport, rule = %n.rule, "cannot queue notification: {why}");
        let rec = AuditRecord {
            time: n.created_at,
            rule: n.rule.clone(),
            fingerprint: n.alerts.first().map(|a| a.fingerprint),
            transport: Some(n.transport.clone()),
            notification: Some(n.id.clone()),
            status: "failed".into(),
            reason: Some(why),
            summary: Some(n.title.clone()),
        };
        if let Err(e) = store.audit(&[rec]) {
            error!("cannot write audit trail: {e}");
        }
    }
}

fn on_report(
    r: Report,
    store: &mut Store,
    failing: &mut HashMap<String, usize>,
    router: &mut Router,
    cfg: &Config,
    now: DateTime<Utc>,
    out: &mut Vec<Output>,
) {
    let n = &r.notification;
    let (status, reason) = match &r.result {
        Ok(reply) => ("sent", reply.clone()),
        Err(e) => ("failed", Some(e.clone())),
    };
    let rec = AuditRecord {
        time: r.at,
        rule: n.rule.clone(),
        fingerprint: n.alerts.first().map(|a| a.fingerprint),
        transport: Some(n.transport.clone()),
        notification: Some(n.id.clone()),
        status: status.into(),
        reason,
        summary: Some(n.title.clone()),
    };
    if let Err(e) = store.audit(&[rec]) {
        error!("cannot write audit trail: {e}");
    }
    let key = format!("delivery:{}", n.transport);
    match &r.result {
        Ok(_) => {
            debug!(id = %n.id, transport = %n.transport, "delivered");
            if failing.remove(&n.transport).is_some() {
                let e = Event::new(
                    ALERTER_SOURCE,
                    &cfg.name,
                    Severity::Resolved,
                    format!("deliveries via `{}` work again", n.transport),
                    now,
                )
                .with_label("event", "delivery_failing")
                .with_label("transport", &n.transport)
                .with_key(key);
                router.handle_into(e, now, out);
            }
        }
        Err(why) => {
            error!(id = %n.id, transport = %n.transport, rule = %n.rule, "delivery failed: {why}");
            *failing.entry(n.transport.clone()).or_default() += 1;
            // Raised unless the failed notification was itself about failing
            // deliveries, which would only loop.
            let about_delivery =
                n.alerts.iter().any(|a| a.labels.get("event").map(String::as_str) == Some("delivery_failing"));
            if !about_delivery {
                let e = Event::new(
                    ALERTER_SOURCE,
                    &cfg.name,
                    Severity::Warning,
                    format!("deliveries via `{}` are failing: {why}", n.transport),
                    now,
                )
                .with_label("event", "delivery_failing")
                .with_label("transport", &n.transport)
                .with_key(key);
                router.handle_into(e, now, out);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn reload(
    opts: &RunOptions,
    cfg: &mut Config,
    router: &mut Router,
    notices: &mut NoticeScheduler,
    store: &Store,
    dispatcher: &mut Dispatcher,
    reports: mpsc::UnboundedSender<Report>,
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
    let old = std::mem::replace(dispatcher, Dispatcher::start(built, reports, opts.clock.clone()));
    tokio::spawn(old.stop(opts.shutdown_grace));
    let state_dir = cfg.state_dir.clone();
    *cfg = new;
    cfg.state_dir = state_dir;
    info!(rules = cfg.rules.len(), "configuration reloaded");
    Ok(())
}
