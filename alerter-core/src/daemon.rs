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
//! running and the failure is logged and raised as an `alerter` event. The
//! workers of transports still configured keep running, with the new
//! settings from their next send.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use alerter_engine::{Engine, Turn};

use crate::acks::{self, AckSecret};
use crate::clock::Clock;
use crate::config::{self, Config};
use crate::control;
use crate::event::{Inbound, Severity, internal};
use crate::inbox::{Inbox, LaneSender};
use crate::metrics::Metrics;
use crate::notify::Notification;
use crate::outbox::{Dispatcher, Report, RetryPolicy};
use crate::plugin::PluginRegistry;
use crate::plugin::supervisor::{Backoff, SharedStates, Sources, SupervisorEnv};
use crate::resend::Resender;
use crate::service::ServiceManager;
use crate::store::{Priority, Store, StoreError};
use crate::throttle::LogThrottle;
use crate::transport::{self, Transport, TransportError};

/// What the binary can ask of a running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Reload,
    Shutdown,
    /// A test hook: block the engine loop for this long, as a stuck
    /// engine would be (the binary sends it only when
    /// `ALERTER_TEST_STALL_ON_SIGUSR2` is set), so a test can see the
    /// watchdog pings stop.
    Stall(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("transport `{name}`: {source}")]
    Transport { name: String, source: TransportError },
    #[error("control API: {0}")]
    Api(String),
    #[error("acknowledgements: {0}")]
    Acks(String),
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
    /// Who to tell that the daemon is ready, reloading or stopping, and
    /// the watchdog to ping.
    pub service: ServiceManager,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions").field("config_path", &self.config_path).finish_non_exhaustive()
    }
}

type Built = HashMap<String, (Arc<dyn Transport>, RetryPolicy)>;

fn build_transports(cfg: &Config, ack_secret: &Arc<AckSecret>) -> Result<Built, DaemonError> {
    let mut out = HashMap::new();
    for (name, t) in &cfg.transports {
        let cx =
            transport::BuildCx { alerter_name: &cfg.name, workgroup: &cfg.workgroup, ack_secret: Some(ack_secret) };
        let built = transport::build(t, &cx).map_err(|source| DaemonError::Transport { name: name.clone(), source })?;
        out.insert(name.clone(), (built, transport::retry_policy(t)));
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

/// A turn the store has not taken yet, retried with backoff.
///
/// A failed commit keeps the whole turn (and absorbs later ones), so
/// nothing decided is lost and sources' saved states never run ahead of
/// what was committed. While a turn is held, the engine takes no new
/// events: sources wait (the `log` source keeps its place in the file)
/// instead of the held turn growing without bound.
struct Held {
    turn: Turn,
    /// Notifications already delivered outside the outbox while the store
    /// could not write, by id, with the transport's reply: recorded as sent
    /// when the turn is finally committed, never sent again.
    direct: HashMap<String, Option<String>>,
    failures: u32,
    retry_at: tokio::time::Instant,
    /// When the store first failed (for `store_recovered`'s downtime).
    since: DateTime<Utc>,
    /// Notifications held earlier in the same outage (before a moment
    /// when the store worked).
    earlier: usize,
}

/// The daemon's side of the store: commits turns, holds them while the
/// store fails, raises `store_failing` / `store_recovered`.
struct Committer {
    held: Option<Held>,
    /// An ordinary turn waiting while the store's writes are held (a
    /// checkpoint round): the engine takes only critical events meanwhile,
    /// and the first one makes the turn urgent (see `Priority`).
    waiting: Option<Turn>,
    /// Repeated failures are logged once per interval, with a count.
    log: LogThrottle,
    /// The store works again after failing; `store_recovered` is raised
    /// once it has worked for [`RECOVERY_SETTLE`]. A failure before then
    /// continues the same outage: no second `store_failing`.
    recovering: Option<Recovering>,
    /// Counts refused commits (for the metrics).
    errors: Option<prometheus::IntCounter>,
    /// Counts what budgets folded, per transport, as turns are taken.
    folded: Option<prometheus::IntCounterVec>,
}

struct Recovering {
    announce_at: tokio::time::Instant,
    /// When the store first failed.
    since: DateTime<Utc>,
    /// Notifications held while it failed.
    held: usize,
}

/// How long the store must work after failing before its recovery is
/// announced. A full disk often has room again for a moment (SQLite's log
/// reused, a file deleted and recreated) and then none: without the wait
/// that was `store_failing` twice, with a recovery between (bench/full-disk.sh).
const RECOVERY_SETTLE: Duration = Duration::from_secs(10);

/// Commits slower than this are logged (at debug level).
const SLOW_COMMIT: Duration = Duration::from_millis(10);

/// The first commit retry waits this long, doubling up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(15);

impl Committer {
    fn new() -> Committer {
        Committer {
            held: None,
            waiting: None,
            log: LogThrottle::new(Duration::from_secs(30)),
            recovering: None,
            errors: None,
            folded: None,
        }
    }

    /// When something is due: the held turn's retry or the announcement of
    /// a recovery.
    fn due_at(&self) -> Option<tokio::time::Instant> {
        let recovery = self.recovering.as_ref().map(|r| r.announce_at);
        [self.held.as_ref().map(|h| h.retry_at), recovery].into_iter().flatten().min()
    }

    /// Raises `store_recovered` once the store has worked for
    /// [`RECOVERY_SETTLE`] since it failed last.
    fn announce_recovery(&mut self, engine: &mut Engine, now: DateTime<Utc>) {
        let due = self.recovering.as_ref().is_some_and(|r| tokio::time::Instant::now() >= r.announce_at);
        if !due || self.held.is_some() {
            return;
        }
        let r = self.recovering.take().expect("checked above");
        let down = (now - r.since).to_std().unwrap_or_default();
        engine.raise(internal::store_recovered(&engine.config().name, down, r.held, now), now);
        self.log = LogThrottle::new(Duration::from_secs(30));
    }

    /// Whether an ordinary turn waits for a hold of the store to end.
    fn waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Whether a turn is waiting for the store.
    fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Takes the engine's turn and commits it together with anything held
    /// (once the held turn's retry time has come). On failure the turn is
    /// held and `store_failing` raised; [`Committer::take_direct`] then
    /// hands out what must go out directly. While the store's writes are
    /// held, a turn without a critical notification waits (unless `wait`
    /// says to wait at the gate instead, as at shutdown).
    fn commit(
        &mut self,
        store: &mut Store,
        engine: &mut Engine,
        dispatcher: &Dispatcher,
        wait: bool,
        now: DateTime<Utc>,
    ) {
        let mut turn = engine.take_turn();
        self.count_folded(&turn);
        if let Some(mut waiting) = self.waiting.take() {
            waiting.absorb(turn);
            turn = waiting;
        }
        let mut held = match self.held.take() {
            Some(mut h) => {
                h.turn.absorb(turn);
                if tokio::time::Instant::now() < h.retry_at {
                    self.held = Some(h);
                    return;
                }
                h
            }
            None if turn.is_empty() => return,
            None => Held {
                turn,
                direct: HashMap::new(),
                failures: 0,
                retry_at: tokio::time::Instant::now(),
                since: now,
                earlier: 0,
            },
        };
        let urgent = held.turn.notifications.iter().any(|n| n.severity == Severity::Critical);
        let priority = if urgent {
            Priority::Urgent
        } else if wait || held.failures > 0 {
            Priority::Normal
        } else {
            // Not behind a checkpoint round: critical events come in meanwhile.
            Priority::Yield
        };
        let began = std::time::Instant::now();
        let result = store.commit_with_sent(&held.turn, &held.direct, priority, now);
        let took = began.elapsed();
        if took > SLOW_COMMIT {
            debug!(
                ?priority,
                notifications = held.turn.notifications.len(),
                ms = took.as_secs_f64() * 1e3,
                "slow commit"
            );
        }
        match result {
            Ok(false) => self.waiting = Some(held.turn),
            Ok(true) => {
                for t in held.turn.transports() {
                    dispatcher.wake(t);
                }
                if held.failures > 0 {
                    let n = held.turn.notifications.len();
                    info!(notifications = n, "the state store works again; the held decisions are saved");
                    self.recovering = Some(Recovering {
                        announce_at: tokio::time::Instant::now() + RECOVERY_SETTLE,
                        since: held.since,
                        held: held.earlier + n,
                    });
                }
            }
            Err(e) => {
                if let Some(c) = &self.errors {
                    c.inc();
                }
                held.failures += 1;
                let wait = RETRY_MIN.saturating_mul(1 << held.failures.min(10)).min(RETRY_MAX);
                held.retry_at = tokio::time::Instant::now() + wait;
                if let Some(repeats) = self.log.hit(now) {
                    let n = held.turn.notifications.len();
                    error!(held = n, "cannot save state: {e}{repeats}; holding what was decided and retrying");
                }
                if held.failures == 1 {
                    match self.recovering.take() {
                        // Failing again before the recovery was announced:
                        // the same outage goes on.
                        Some(r) => {
                            held.since = r.since;
                            held.earlier = r.held;
                        }
                        None => engine.raise(internal::store_failing(&engine.config().name, &e.to_string(), now), now),
                    }
                }
                self.held = Some(held);
            }
        }
    }

    /// Adds the engine's newest decisions about the store itself to the held
    /// turn and returns them for direct delivery.
    fn take_direct(&mut self, engine: &mut Engine) -> Vec<Notification> {
        if self.held.is_none() {
            return Vec::new();
        }
        let turn = engine.take_turn();
        self.count_folded(&turn);
        let h = self.held.as_mut().expect("checked above");
        let direct: Vec<Notification> = turn.notifications.iter().filter(|n| about_store(n)).cloned().collect();
        h.turn.absorb(turn);
        direct
    }

    fn count_folded(&self, turn: &Turn) {
        if let Some(c) = &self.folded {
            for a in turn.audit.iter().filter(|a| a.status == "folded") {
                c.with_label_values(&[a.transport.as_deref().unwrap_or("")]).inc();
            }
        }
    }

    /// A notification delivered outside the outbox.
    fn delivered_directly(&mut self, id: String, reply: Option<String>) {
        if let Some(h) = self.held.as_mut() {
            h.direct.insert(id, reply);
        }
    }
}

/// Whether a notification is about the store (delivered directly while the
/// store cannot write, as nothing else would get it out).
fn about_store(n: &Notification) -> bool {
    n.alerts.iter().any(|a| a.labels.get("event").map(String::as_str) == Some(internal::STORE_FAILING))
}

/// A handle for feeding events (and sources' states) into a running daemon.
pub type EventSender = LaneSender;

/// How long a direct delivery (while the store fails) may take.
const DIRECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the daemon until `Control::Shutdown` (or the control channel closes).
/// `inbox` lets the caller (tests) inject events through lanes of their own.
pub async fn run(
    config: Config,
    opts: RunOptions,
    mut control: mpsc::Receiver<Control>,
    inbox: Option<Inbox>,
) -> Result<(), DaemonError> {
    let mut cfg = config;
    let clock = opts.clock.clone();
    let now = clock.now();
    // A damaged database is salvaged rather than fatal: the alerter must
    // keep alerting, and say what the damage cost.
    let (mut store, salvage) = Store::open_checked(&cfg.state_dir, now)?;
    if let Some(s) = &salvage {
        error!("state database damaged: {s}");
    }
    info!(state = %store.path().display(), "state store open");
    // Checkpoints on a thread of their own, not in the middle of a turn.
    let checkpoints = match store.start_checkpointer(CHECKPOINT_EVERY) {
        Ok(c) => Some(c),
        Err(e) => {
            warn!("{e}; the store checkpoints as it writes instead");
            None
        }
    };
    let stored = store.load_alerts()?;
    if !stored.is_empty() {
        info!(alerts = stored.len(), "restored alert state");
    }
    // The first turn holds the notice positions, so a notice first known
    // now counts as known at the next restart (see `notices`), even before
    // it fires.
    let mut engine = Engine::new(cfg.engine_config(), stored, store.notice_history()?, now);
    // Silences set through the API stay beside the config's.
    let keep = chrono::Duration::from_std(alerter_engine::engine::KEEP_ENDED).expect("small");
    let (silences, unreadable) = store.load_silences(now - keep)?;
    for problem in unreadable {
        warn!("{problem}; left out");
    }
    if !silences.is_empty() {
        info!(silences = silences.len(), "restored silences set through the API");
    }
    engine.restore_silences(silences, now);
    // And notices set through the API, where they were.
    let (notices, unreadable) = store.load_notices()?;
    for problem in unreadable {
        warn!("{problem}; left out");
    }
    if !notices.is_empty() {
        info!(notices = notices.len(), "restored notices set through the API");
    }
    engine.restore_notices(notices, now);
    // And budget windows, so a restart neither resets what someone was
    // shown nor loses a digest that was building.
    let (windows, next_digest, unreadable) = store.load_budgets()?;
    for problem in unreadable {
        warn!("{problem}; left out");
    }
    engine.restore_budgets(windows, next_digest);

    let (report_tx, mut report_rx) = mpsc::unbounded_channel::<Report>();
    // No worker runs yet: whatever was being delivered when the last run
    // ended is due again (delivery is at least once).
    if let Err(e) = store.release_all() {
        warn!("cannot release the outbox's leases: {e}");
    }
    match store.fail_orphans(&cfg.transports.keys().map(String::as_str).collect::<Vec<_>>(), now) {
        Ok(0) => {}
        Ok(orphans) => warn!(orphans, "notifications for transports no longer configured were marked failed"),
        // A full disk must not keep the alerter from starting; they are
        // marked at the next start or reload.
        Err(e) => warn!("cannot mark notifications for removed transports: {e}"),
    }
    // Made at the first start, kept: tokens in popups shown before a
    // restart still acknowledge them after it.
    let ack_secret = Arc::new(AckSecret::load_or_create(&cfg.state_dir).map_err(DaemonError::Acks)?);
    let built = build_transports(&cfg, &ack_secret)?;
    let mut transports: HashMap<String, Arc<dyn Transport>> =
        built.iter().map(|(k, (t, _))| (k.clone(), t.clone())).collect();
    let mut dispatcher = start_dispatcher(&cfg, built, &report_tx, &clock)?;
    let inbox = inbox.unwrap_or_default();

    let states: SharedStates = Arc::new(std::sync::Mutex::new(store.source_states()?));
    let supervisor_env = |cfg: &Config| SupervisorEnv {
        inbox: inbox.clone(),
        states: states.clone(),
        alerter_name: cfg.name.clone(),
        clock: clock.clone(),
        plugins: cfg.plugins.clone(),
        grace: opts.shutdown_grace,
        backoff: opts.backoff,
        drop_report_every: opts.drop_report_every,
    };
    let mut api = control::start(&cfg).await.map_err(DaemonError::Api)?;
    // Where acknowledgements arrive; a reload that changes it starts it
    // again, so the port in the popups and the one listened on agree.
    let (mut ack_listener, mut acks) = match acks::listen_for(&cfg, &ack_secret).await.map_err(DaemonError::Acks)? {
        Some((l, rx)) => (Some(l), Some(rx)),
        None => (None, None),
    };
    let started_at = now;
    let mut loaded_at = now;
    let specs: Vec<_> = cfg.sources.values().cloned().collect();
    let mut sources = Sources::default();
    sources.reconcile(&specs, &supervisor_env(&cfg)).await;

    let (direct_tx, mut direct_rx) = mpsc::unbounded_channel::<(String, Option<String>)>();
    let (loaded_tx, mut loaded_rx) = mpsc::channel::<Loaded>(1);
    let (mut loading, mut reload_again) = (false, false);
    // Who asked for the reload under way, and for the one after it (asked
    // while loading: the file may have changed since the load began).
    let (mut asked, mut asked_next): (Vec<ReloadAsk>, Vec<ReloadAsk>) = (Vec::new(), Vec::new());
    let metrics = Metrics::new();
    let mut ended = HashMap::new();
    let mut resender = Resender::new(metrics.resends());
    resender.sync(&transports, tokio::time::Instant::now());
    let mut committer = Committer::new();
    committer.errors = Some(metrics.store_errors());
    committer.folded = Some(metrics.folded());
    let writes = store.hold_watch();
    let mut batch: Vec<Inbound> = Vec::with_capacity(BATCH);
    let mut calls_in_a_row = 0;
    let mut urgent: Vec<Inbound> = Vec::new();
    engine.raise(internal::started(&cfg.name, env!("CARGO_PKG_VERSION"), now), now);
    if let Some(s) = salvage {
        engine.raise(internal::store_salvaged(&cfg.name, &s.to_string(), now), now);
    }
    info!(name = %cfg.name, rules = cfg.rules.len(), transports = cfg.transports.len(), "alerter started");
    // Sources run, the API answers and the store is open: ready. The
    // watchdog is pinged by this loop (an arm of the select below), so the
    // pings stop when the loop does.
    opts.service.ready(&running_status(&cfg, false));
    let mut watchdog = opts.service.watchdog_timer();

    loop {
        let now = clock.now();
        let was_holding = committer.holding();
        committer.announce_recovery(&mut engine, now);
        committer.commit(&mut store, &mut engine, &dispatcher, false, now);
        if committer.holding() {
            // What the engine raised about the store goes out now, outside
            // the outbox; everything else waits for the store.
            for n in committer.take_direct(&mut engine) {
                let Some(t) = transports.get(&n.transport).cloned() else { continue };
                let done = direct_tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(DIRECT_TIMEOUT, t.send(&n)).await {
                        Ok(Ok(d)) => {
                            info!(id = %n.id, transport = %n.transport, "delivered directly while the store cannot write");
                            let _ = done.send((n.id, d.reply));
                        }
                        Ok(Err(e)) => {
                            warn!(id = %n.id, transport = %n.transport, "direct delivery failed: {e}; it stays held")
                        }
                        Err(_) => {
                            warn!(id = %n.id, transport = %n.transport, "direct delivery timed out; it stays held")
                        }
                    }
                });
            }
        } else if was_holding {
            // Recovered: what the engine raised about it is committed next turn.
            continue;
        }
        let holding = committer.holding();
        let waiting = committer.waiting();
        let wake = engine.next_wakeup();
        let retry_at = committer.due_at();
        let sleep = async {
            let timer = wake.map(|w| tokio::time::Instant::now() + (w - clock.now()).to_std().unwrap_or_default());
            match [timer, retry_at].into_iter().flatten().min() {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let resend_at = resender.next_due();
        let resend = async {
            match resend_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            ctl = control.recv() => match ctl {
                Some(Control::Reload) => {
                    let ask = ReloadAsk { by: "SIGHUP".into(), reply: None };
                    ask_reload(ask, &opts, &loaded_tx, &mut loading, &mut reload_again, &mut asked, &mut asked_next);
                }
                Some(Control::Stall(how_long)) => {
                    opts.service.status("engine loop blocked by a test hook");
                    warn!(?how_long, "test hook: blocking the engine loop");
                    // Deliberately blocking: this is what a stuck engine looks like.
                    std::thread::sleep(how_long);
                }
                Some(Control::Shutdown) | None => break,
            },
            _ = watchdog.due() => opts.service.watchdog(),
            Some(loaded) = loaded_rx.recv() => {
                loading = false;
                let answering = std::mem::take(&mut asked);
                if std::mem::take(&mut reload_again) {
                    loading = true;
                    asked = std::mem::take(&mut asked_next);
                    start_loading(&opts, loaded_tx.clone());
                }
                let now = clock.now();
                // A listener that failed to start is tried again at every reload.
                let ack_setting = if acks.is_some() { acks::setting(&cfg) } else { None };
                let outcome = match reload(loaded, &opts, &mut cfg, &mut engine, &mut store, &mut dispatcher, &mut transports, &report_tx, &api, &ack_secret, now) {
                    Ok(warnings) => {
                        loaded_at = now;
                        if acks::setting(&cfg) != ack_setting {
                            // The old port is let go before the new one is bound: it may be the same.
                            if let Some(l) = ack_listener.take() {
                                l.close().await;
                            }
                            acks = None;
                            match acks::listen_for(&cfg, &ack_secret).await {
                                Ok(Some((l, rx))) => (ack_listener, acks) = (Some(l), Some(rx)),
                                Ok(None) => info!("acknowledgements from popups are no longer taken"),
                                Err(e) => error!("acknowledgements from popups are not taken: {e}"),
                            }
                        }
                        resender.sync(&transports, tokio::time::Instant::now());
                        let specs: Vec<_> = cfg.sources.values().cloned().collect();
                        sources.reconcile(&specs, &supervisor_env(&cfg)).await;
                        engine.raise(internal::reloaded(&cfg.name, cfg.rules.len(), now), now);
                        Ok(alerter_api::types::Reloaded {
                            config_hash: cfg.hash.clone(),
                            rules: cfg.rules.len(),
                            sources: cfg.sources.len(),
                            transports: cfg.transports.len(),
                            loaded_at,
                            warnings,
                        })
                    }
                    Err(problems) => {
                        engine.raise(internal::reload_failed(&cfg.name, problems.len(), now), now);
                        Err(problems)
                    }
                };
                // Ready again once no other load is under way, whatever
                // the outcome: a failed reload keeps the old config running.
                if !loading {
                    opts.service.ready(&running_status(&cfg, outcome.is_err()));
                }
                // Every reload is in history with who asked for it.
                let summary = match &outcome {
                    Ok(r) => format!("configuration reloaded: {} rules, config {}", r.rules, &r.config_hash[..12.min(r.config_hash.len())]),
                    Err(p) => format!("configuration not reloaded: {}", p.join("; ")),
                };
                for ask in &answering {
                    engine.record_change("reload", &ask.by, None, summary.clone(), now);
                }
                committer.commit(&mut store, &mut engine, &dispatcher, true, now);
                for ask in answering {
                    if let Some(reply) = ask.reply {
                        let _ = reply.send(outcome.clone().map_err(|p| alerter_api::ApiError::Http {
                            status: 422,
                            message: format!(
                                "configuration not reloaded; the previous configuration keeps running:\n{}",
                                p.join("\n")
                            ),
                        }));
                    }
                }
            }
            // Calls come before events, so `alerter status` answers in a
            // storm; but a flood of calls (a scraper gone wild) lets the
            // sources' events through after every CALLS_PER_TURN of them.
            Some(call) = api.calls.recv(), if calls_in_a_row < CALLS_PER_TURN || holding || waiting || inbox.is_empty() => {
                calls_in_a_row += 1;
                let now = clock.now();
                let mut cx = control::Cx {
                    engine: &mut engine,
                    store: &store,
                    cfg: &cfg,
                    sources: &sources,
                    started_at,
                    loaded_at,
                    store_failing: holding,
                    now,
                    metrics: &metrics,
                    ended: &mut ended,
                };
                // A change is answered once it is committed (or held, if
                // the store fails: in force, and saved when it works). It
                // waits out a checkpoint round rather than being left for
                // later: the caller waits for it.
                if let alerter_api::Call::Reload { by, reply } = call {
                    let ask = ReloadAsk { by: by.name, reply: Some(reply) };
                    ask_reload(ask, &opts, &loaded_tx, &mut loading, &mut reload_again, &mut asked, &mut asked_next);
                } else if let Some(done) = control::answer(call, &mut cx) {
                    committer.commit(&mut store, &mut engine, &dispatcher, true, now);
                    done();
                }
            }
            Some(ack) = async { acks.as_mut()?.recv().await }, if acks.is_some() => {
                let now = clock.now();
                acks::apply(&mut engine, &store, &ack, now);
                committer.commit(&mut store, &mut engine, &dispatcher, true, now);
            }
            Some((id, reply)) = direct_rx.recv() => committer.delivered_directly(id, reply),
            Some(report) = report_rx.recv() => {
                let now = clock.now();
                metrics.delivery(&report);
                engine.delivered(&report, now);
                // Reports come in bursts; take what is there in one turn.
                while let Ok(report) = report_rx.try_recv() {
                    metrics.delivery(&report);
                    engine.delivered(&report, now);
                }
            }
            _ = inbox.recv_many(&mut batch, BATCH), if !holding && !waiting => {
                calls_in_a_row = 0;
                let now = clock.now();
                for m in batch.drain(..) {
                    count(&metrics, &m);
                    engine.handle(m, now);
                }
            }
            // While the turn waits for a hold of the store to end, critical
            // events still come in: their turn passes the hold.
            _ = inbox.recv_urgent(&mut urgent, BATCH), if waiting && !holding => {
                let now = clock.now();
                for m in urgent.drain(..) {
                    count(&metrics, &m);
                    engine.handle(m, now);
                }
            }
            _ = writes.released(), if waiting => {}
            _ = resend => resender.run_due(&transports, engine.router(), clock.now(), tokio::time::Instant::now()),
            _ = sleep => engine.tick(clock.now()),
        }
    }

    info!("shutting down");
    opts.service.stopping();
    // No more calls: clients are told the daemon is shutting down.
    api.server.stop().await;
    api.calls.close();
    // Sources first, so what they send while stopping is still handled.
    sources.stop_all().await;
    let now = clock.now();
    while inbox.take(&mut batch, BATCH) > 0 {
        for m in batch.drain(..) {
            engine.handle(m, now);
        }
    }
    inbox.close();
    final_commit(&mut committer, &mut store, &mut engine, &dispatcher, now);
    dispatcher.stop(opts.shutdown_grace).await;
    drop(report_tx);
    while let Ok(report) = report_rx.try_recv() {
        engine.delivered(&report, now);
    }
    final_commit(&mut committer, &mut store, &mut engine, &Dispatcher::none(), now);
    drop(checkpoints);
    info!("stopped");
    Ok(())
}

/// Counts an event taken from a source.
fn count(metrics: &Metrics, m: &Inbound) {
    if let Inbound::Event(e) = m {
        metrics.event(&e.source, e.severity);
    }
}

/// API calls answered in a row while sources' events wait.
const CALLS_PER_TURN: usize = 16;

/// Events the engine takes per turn: enough for a group commit to pay off,
/// few enough that a turn stays short. A critical event waits for the turn
/// under way: 128 storm events take about 10 ms to route, render and
/// commit on the 2-core benchmark machine; 512 took 40 (docs/benchmarks.md).
const BATCH: usize = 128;

/// How long writes gather before a checkpoint copies them back.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

type Loaded = Result<config::Loaded, config::ConfigErrors>;

/// Someone who asked for a reload: `SIGHUP`, or a caller of the API
/// waiting for the outcome.
struct ReloadAsk {
    by: String,
    reply: Option<alerter_api::Reply<alerter_api::types::Reloaded>>,
}

/// Starts loading, or, while a load is under way, asks for one more after
/// it: reloads asked for meanwhile are merged into that one.
fn ask_reload(
    ask: ReloadAsk,
    opts: &RunOptions,
    loaded_tx: &mpsc::Sender<Loaded>,
    loading: &mut bool,
    again: &mut bool,
    asked: &mut Vec<ReloadAsk>,
    asked_next: &mut Vec<ReloadAsk>,
) {
    // Loading reads files and probes plugins in child processes: beside
    // the engine, which keeps working.
    if *loading {
        *again = true;
        asked_next.push(ask);
    } else {
        *loading = true;
        asked.push(ask);
        opts.service.reloading();
        start_loading(opts, loaded_tx.clone());
    }
}

/// The line `systemctl status` shows while the daemon runs.
fn running_status(cfg: &Config, last_reload_failed: bool) -> String {
    let mut s = format!(
        "running: {} rules, {} sources, {} transports",
        cfg.rules.len(),
        cfg.sources.len(),
        cfg.transports.len()
    );
    if last_reload_failed {
        s.push_str("; the last reload failed, the previous configuration keeps running (see the log)");
    }
    s
}

/// Loads the config file on a blocking thread and sends the result back.
fn start_loading(opts: &RunOptions, done: mpsc::Sender<Loaded>) {
    info!(config = ?opts.config_path, "reloading configuration");
    let path = opts.config_path.clone();
    let plugins = opts.plugins.clone();
    tokio::task::spawn_blocking(move || {
        let loaded = config::load(path.as_deref(), &transport::load_options(&plugins));
        let _ = done.blocking_send(loaded);
    });
}

/// One last try at shutdown, whatever the backoff says.
fn final_commit(
    c: &mut Committer,
    store: &mut Store,
    engine: &mut Engine,
    dispatcher: &Dispatcher,
    now: DateTime<Utc>,
) {
    if let Some(h) = c.held.as_mut() {
        h.retry_at = tokio::time::Instant::now();
    }
    // The store works at the end: say so now, or the outage would be
    // restored as still going on at the next start.
    if let Some(r) = c.recovering.as_mut() {
        r.announce_at = tokio::time::Instant::now();
    }
    c.announce_recovery(engine, now);
    c.commit(store, engine, dispatcher, true, now);
    if let Some(h) = &c.held {
        error!(
            notifications = h.turn.notifications.len(),
            "stopping with decisions the store could not save; sources resume from their last saved position at the next start"
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn reload(
    loaded: Result<config::Loaded, config::ConfigErrors>,
    opts: &RunOptions,
    cfg: &mut Config,
    engine: &mut Engine,
    store: &mut Store,
    dispatcher: &mut Dispatcher,
    transports: &mut HashMap<String, Arc<dyn Transport>>,
    reports: &mpsc::UnboundedSender<Report>,
    api: &control::Api,
    ack_secret: &Arc<AckSecret>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, Vec<String>> {
    let loaded = match loaded {
        Ok(l) => l,
        Err(errs) => {
            let lines = config::diag::render_short(&errs.diagnostics, &errs.sources);
            for line in &lines {
                error!("{line}");
            }
            let n = errs.error_count();
            let errors = if n == 1 { "1 error".to_string() } else { format!("{n} errors") };
            error!("configuration not reloaded ({errors}); the previous configuration keeps running");
            return Err(lines);
        }
    };
    let warnings = config::diag::render_short(&loaded.warnings, &loaded.sources);
    for line in &warnings {
        warn!("{line}");
    }
    let new = loaded.config;
    if new.state_dir != cfg.state_dir {
        warn!("`alerter.state_dir` changed to {}; it takes effect at the next restart", new.state_dir.display());
    }
    let built = match build_transports(&new, ack_secret) {
        Ok(b) => b,
        Err(e) => {
            error!("configuration not reloaded: {e}; the previous configuration keeps running");
            return Err(vec![e.to_string()]);
        }
    };
    // Token files are read again: a reload is how a token is revoked.
    let access = match control::access(&new.api) {
        Ok(a) => a,
        Err(e) => {
            error!("configuration not reloaded: {e}; the previous configuration keeps running");
            return Err(vec![e]);
        }
    };
    if (new.api.socket_path(&cfg.state_dir), new.api.listen) != api.listening {
        warn!("the API's socket or `api.listen` changed; that takes effect at the next restart");
    }
    let fresh_transports: HashMap<String, Arc<dyn Transport>> =
        built.iter().map(|(k, (t, _))| (k.clone(), t.clone())).collect();
    let prepared = match dispatcher.prepare(built, &cfg.state_dir) {
        Ok(p) => p,
        Err(e) => {
            error!("configuration not reloaded: {e}; the previous configuration keeps running");
            return Err(vec![e.to_string()]);
        }
    };
    // Nothing can fail from here on: the swap is all or nothing.
    engine.reconfigure(new.engine_config(), now);
    api.access.set(access);
    *transports = fresh_transports;
    if let Ok(n) = store.fail_orphans(&new.transports.keys().map(String::as_str).collect::<Vec<_>>(), now)
        && n > 0
    {
        warn!(orphans = n, "notifications for transports removed by the reload were marked failed");
    }
    // Workers of transports still configured keep running with their new
    // settings; those of removed ones finish what is in flight and stop.
    let retired = dispatcher.apply(prepared, reports, &opts.clock);
    tokio::spawn(retired.stop(opts.shutdown_grace));
    let state_dir = cfg.state_dir.clone();
    *cfg = new;
    cfg.state_dir = state_dir;
    info!(rules = cfg.rules.len(), "configuration reloaded");
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    const CONFIG: &str = r#"
alerter:
  name: TESTHOST
  state_dir: STATE
transports:
  file: { type: log, path: OUT }
rules:
  - name: all
    match: { source: "*" }
    notify: [{ workgroup: true, via: [file] }]
"#;

    /// The store fails, works for a moment, fails again, then works for
    /// good: one outage, so one `store_failing` and one `store_recovered`,
    /// the latter only once the store has worked for `RECOVERY_SETTLE`.
    #[tokio::test(start_paused = true)]
    async fn a_store_that_works_for_a_moment_between_failures_is_one_outage() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let text = CONFIG
            .replace("STATE", &state.display().to_string())
            .replace("OUT", &dir.path().join("out.jsonl").display().to_string());
        let plugins = crate::plugin::PluginRegistry::empty();
        let cfg = config::load_str("alerter.yaml", &text, Some(dir.path()), &transport::load_options(&plugins))
            .unwrap()
            .config;
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut store = Store::open(&state).unwrap();
        store.set_busy_timeout(Duration::ZERO).unwrap();
        let mut engine = Engine::new(cfg.engine_config(), Vec::new(), HashMap::new(), t0);
        let mut c = Committer::new();
        let none = Dispatcher::none();
        // Another process's write lock makes every commit fail at once.
        let other = rusqlite::Connection::open(state.join(crate::store::DB_FILE)).unwrap();
        let mut n = 0;
        let mut step = |c: &mut Committer, engine: &mut Engine, store: &mut Store| {
            n += 1;
            let now = t0 + chrono::Duration::seconds(n);
            let line = Event::new("app", "web01", Severity::Warning, format!("line {n}"), now)
                .with_key(n.to_string())
                .oneshot();
            engine.handle(line.into(), now);
            c.announce_recovery(engine, now);
            c.commit(store, engine, &none, false, now);
            c.take_direct(engine).len()
        };
        let advance = |secs: u64| tokio::time::advance(Duration::from_secs(secs));

        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let direct = step(&mut c, &mut engine, &mut store);
        assert_eq!(direct, 1, "store_failing goes out directly");
        assert!(c.holding());
        other.execute_batch("COMMIT").unwrap();
        advance(16).await;
        step(&mut c, &mut engine, &mut store);
        assert!(!c.holding(), "the held turn is saved");
        assert!(c.recovering.is_some(), "not announced yet");
        // Fails again within the settle: the same outage, nothing new raised.
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        advance(1).await;
        let direct = step(&mut c, &mut engine, &mut store);
        assert_eq!(direct, 0, "no second store_failing");
        assert!(c.holding(), "failing again");
        assert!(c.recovering.is_none());
        other.execute_batch("COMMIT").unwrap();
        advance(16).await;
        step(&mut c, &mut engine, &mut store);
        assert!(!c.holding());
        advance(5).await;
        step(&mut c, &mut engine, &mut store);
        assert!(c.recovering.is_some(), "still settling");
        advance(6).await;
        step(&mut c, &mut engine, &mut store);
        assert!(c.recovering.is_none(), "announced");
        // Its turn is committed with the next.
        step(&mut c, &mut engine, &mut store);
        let history = store.history(100).unwrap();
        let count = |needle: &str| history.iter().filter(|h| h.summary.contains(needle)).count();
        assert_eq!(count("cannot save its state"), 1, "{history:#?}");
        assert_eq!(count("saves its state again"), 1, "{history:#?}");
        assert_eq!(count("line "), 7, "every line saved once");
    }
}
