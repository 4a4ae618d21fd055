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
use tracing::{error, info, warn};

use alerter_engine::Engine;

use crate::clock::Clock;
use crate::config::{self, Config};
use crate::event::{Inbound, internal};
use crate::outbox::{Dispatcher, Report, RetryPolicy};
use crate::plugin::PluginRegistry;
use crate::plugin::supervisor::{Backoff, SharedStates, Sources, SupervisorEnv};
use crate::store::{Store, StoreError};
use crate::transport::{self, Transport, TransportError};

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

/// Commits what the engine decided (alert state, new notifications,
/// audit records, sources' states, notice positions) in one transaction,
/// then wakes the transports that have new work.
fn commit(store: &mut Store, engine: &mut Engine, dispatcher: &Dispatcher, now: DateTime<Utc>) {
    let turn = engine.take_turn();
    if turn.is_empty() {
        return;
    }
    if let Err(e) = store.commit(&turn, now) {
        error!("cannot save state: {e}");
    }
    for t in turn.transports() {
        dispatcher.wake(t);
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
    let stored = store.load_alerts()?;
    if !stored.is_empty() {
        info!(alerts = stored.len(), "restored alert state");
    }
    let mut engine = Engine::new(cfg.engine_config(), stored, store.notice_history()?, now);
    // Stored at once, not only when something fires: a notice first known
    // now must count as known at the next restart (see `notices`).
    store.commit(&engine.take_turn(), now)?;

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

    let mut batch: Vec<Inbound> = Vec::with_capacity(256);
    engine.raise(internal::started(&cfg.name, env!("CARGO_PKG_VERSION"), now), now);
    info!(name = %cfg.name, rules = cfg.rules.len(), transports = cfg.transports.len(), "alerter started");

    loop {
        let now = clock.now();
        commit(&mut store, &mut engine, &dispatcher, now);
        let wake = engine.next_wakeup();
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
                    match reload(&opts, &mut cfg, &mut engine, &mut store, &mut dispatcher, &report_tx, now) {
                        Ok(()) => {
                            let specs: Vec<_> = cfg.sources.values().cloned().collect();
                            sources.reconcile(&specs, &supervisor_env(&cfg)).await;
                            engine.raise(internal::reloaded(&cfg.name, cfg.rules.len(), now), now);
                        }
                        Err(problems) => engine.raise(internal::reload_failed(&cfg.name, problems, now), now),
                    }
                }
                Some(Control::Shutdown) | None => break,
            },
            Some(report) = report_rx.recv() => {
                let now = clock.now();
                engine.delivered(&report, now);
            }
            _ = event_rx.recv_many(&mut batch, 256) => {
                let now = clock.now();
                for m in batch.drain(..) {
                    engine.handle(m, now);
                }
            }
            _ = sleep => engine.tick(clock.now()),
        }
    }

    info!("shutting down");
    // Sources first, so what they send while stopping is still handled.
    sources.stop_all().await;
    let now = clock.now();
    while let Ok(m) = event_rx.try_recv() {
        engine.handle(m, now);
    }
    commit(&mut store, &mut engine, &dispatcher, now);
    dispatcher.stop(opts.shutdown_grace).await;
    drop(report_tx);
    while let Ok(report) = report_rx.try_recv() {
        engine.delivered(&report, now);
    }
    commit(&mut store, &mut engine, &Dispatcher::none(), now);
    info!("stopped");
    Ok(())
}

fn reload(
    opts: &RunOptions,
    cfg: &mut Config,
    engine: &mut Engine,
    store: &mut Store,
    dispatcher: &mut Dispatcher,
    reports: &mpsc::UnboundedSender<Report>,
    now: DateTime<Utc>,
) -> Result<(), usize> {
    info!(config = ?opts.config_path, "reloading configuration");
    let load_opts = transport::load_options(opts.plugins.as_ref());
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
    let fresh = match start_dispatcher(cfg, built, reports, &opts.clock) {
        Ok(d) => d,
        Err(e) => {
            error!("configuration not reloaded: {e}; the previous configuration keeps running");
            return Err(1);
        }
    };
    // Nothing can fail from here on: the swap is all or nothing.
    engine.reconfigure(new.engine_config(), now);
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
