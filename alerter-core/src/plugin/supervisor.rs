//! Running sources: one supervisor task per configured source.
//!
//! A source runs either in a child process (the default for third-party
//! plugins: `alerter plugin-host` for a `.so`, or the plugin executable
//! itself) or in-process on a thread of its own (built-in plugins, and
//! third-party ones that opt in with `isolation: in_process`).
//!
//! The supervisor relays the child's standard error into the daemon's log,
//! restarts a source that stops on its own with exponential backoff and
//! jitter, raises an `alerter` event after repeated crashes (and resolves
//! it once the source has run steadily again), and on shutdown asks the
//! source to stop, waits a grace period, then kills it.
//!
//! Each source has its own bounded lane in the engine's inbox (see
//! `inbox`): a source that floods fills only its own lane, its excess events are
//! dropped and counted (an in-process plugin's refused event only once it
//! moves on from it, see `drops`), and the count is raised as an `alerter` event. The
//! daemon's memory stays bounded whatever a plugin does.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::catalog::{Plugin, PluginKind, PluginSet, describe_exit};
use super::drops::Drops;
use super::ffi::{self, EmitResult, Host, RunEnd, Sink};
use super::protocol::{FromPlugin, MAX_LINE, PROTOCOL_VERSION, ToPlugin, event_from_wire};
use crate::clock::Clock;
use crate::event::{ALERTER_SOURCE, Event, Inbound, Severity};
use crate::inbox::{Inbox, LaneSender, SendError};

/// Where a source runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// In a child process of its own: a crash takes down only the child.
    Process,
    /// On a thread in the daemon: cheaper, but a crash takes the daemon down.
    InProcess,
}

/// A configured source, resolved to its plugin.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub id: String,
    pub plugin: Plugin,
    /// The plugin's settings (the source's keys other than alerter's own).
    pub settings: serde_json::Value,
    pub isolation: Isolation,
    /// Events that may wait in this source's queue.
    pub queue: usize,
    pub enabled: bool,
}

impl SourceSpec {
    /// Identity for reloads: a source whose fingerprint is unchanged keeps
    /// running undisturbed.
    pub fn fingerprint(&self) -> String {
        serde_json::json!({
            "plugin": self.plugin.meta.name,
            "version": self.plugin.meta.version,
            "path": self.plugin.path(),
            "sha256": self.plugin.sha256,
            "settings": self.settings,
            "isolation": self.isolation,
            "queue": self.queue,
        })
        .to_string()
    }
}

/// Restart policy.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Running this long counts as healthy: the backoff resets and a crash
    /// alert is resolved.
    pub healthy_after: Duration,
    /// Crashes within `window` that raise an `alerter` event.
    pub crashes_to_alert: usize,
    pub window: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            healthy_after: Duration::from_secs(60),
            crashes_to_alert: 3,
            window: Duration::from_secs(600),
        }
    }
}

/// The latest state each source saved, as handed to the engine (which
/// commits it after the events before it). A source restarted by its
/// supervisor or by a reload resumes from here: whatever was handed over
/// will be handled, so nothing is read twice. After a daemon restart it is
/// loaded from the store, which has exactly what was committed.
pub type SharedStates = Arc<std::sync::Mutex<HashMap<String, String>>>;

/// What every supervisor needs from the daemon.
#[derive(Clone)]
pub struct SupervisorEnv {
    /// The engine's inbox: each source gets a lane of its own.
    pub inbox: Inbox,
    pub states: SharedStates,
    pub alerter_name: String,
    pub clock: Arc<dyn Clock>,
    pub plugins: Arc<PluginSet>,
    pub grace: Duration,
    pub backoff: Backoff,
    /// How often dropped events are reported.
    pub drop_report_every: Duration,
}

impl std::fmt::Debug for SupervisorEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorEnv").field("alerter_name", &self.alerter_name).finish_non_exhaustive()
    }
}

/// A running source.
#[derive(Debug)]
pub struct RunningSource {
    pub fingerprint: String,
    pub health: Arc<Health>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// How a source is doing, for `alerter status` and the metrics: written by
/// its supervisor, read by anyone.
#[derive(Debug, Default)]
pub struct Health {
    /// Restarting after it stopped on its own (waiting out its backoff).
    restarting: std::sync::atomic::AtomicBool,
    /// Times it stopped on its own and was restarted.
    restarts: AtomicU64,
    /// Events dropped because its queue was full, in all.
    dropped: AtomicU64,
}

impl Health {
    pub fn restarting(&self) -> bool {
        self.restarting.load(Ordering::Relaxed)
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl RunningSource {
    /// Asks the source to stop and waits for its supervisor, which itself
    /// kills the source after the grace period.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Starts supervising a source.
pub fn spawn(spec: SourceSpec, env: SupervisorEnv) -> RunningSource {
    let stop = CancellationToken::new();
    let fingerprint = spec.fingerprint();
    let health = Arc::new(Health::default());
    let task = tokio::spawn(supervise(spec, env, stop.clone(), health.clone()));
    RunningSource { fingerprint, health, stop, task }
}

/// Turns a plugin's wire events into engine events, through the source's queue.
#[derive(Clone)]
struct Feed {
    id: Arc<str>,
    tx: LaneSender,
    /// A small lane of its own for the supervisor's `alerter` events about
    /// this source, so they never wait behind the source's own backlog.
    alerts: LaneSender,
    /// Events a plugin process reported dropped.
    dropped: Arc<AtomicU64>,
    /// Events an in-process plugin was refused and did not hand again.
    drops: Arc<std::sync::Mutex<Drops>>,
    bad: Arc<AtomicU64>,
    env: SupervisorEnv,
    health: Arc<Health>,
}

impl Feed {
    fn saved_state(&self) -> Option<String> {
        self.env.states.lock().unwrap_or_else(|p| p.into_inner()).get(&*self.id).cloned()
    }

    fn state_taken(&self, state: String) {
        self.env.states.lock().unwrap_or_else(|p| p.into_inner()).insert(self.id.to_string(), state);
    }

    /// A state from an in-process plugin; never blocks.
    fn push_state(&self, state: String) -> EmitResult {
        match self.tx.try_send(Inbound::State { source: self.id.to_string(), state: state.clone() }) {
            Ok(()) => {
                self.state_taken(state);
                EmitResult::Ok
            }
            Err(SendError::Full(_)) => EmitResult::Backpressure,
            Err(SendError::Closed(_)) => EmitResult::ShuttingDown,
        }
    }

    /// A state from a plugin process: waits for room, like its events.
    async fn push_state_wait(&self, state: String) {
        if self.tx.send(Inbound::State { source: self.id.to_string(), state: state.clone() }).await.is_ok() {
            self.state_taken(state);
        }
    }

    /// An event from a plugin process: waits for room in the queue, which
    /// holds back reading the process's output, which fills its own queue,
    /// where its plugin sees backpressure (and its drops are counted). So
    /// the engine gets a gap-free prefix of what the plugin sent, and a
    /// saved state never covers an event that was dropped here.
    async fn push_json_wait(&self, json: serde_json::Value) {
        match event_from_wire(&self.id, &self.env.alerter_name, self.env.clock.now(), json) {
            Ok(e) => {
                let _ = self.tx.send(e.into()).await;
            }
            Err(reason) => {
                if self.bad.fetch_add(1, Ordering::Relaxed) == 0 {
                    warn!(source = %self.id, "ignored an event from the plugin: {reason}");
                }
            }
        }
    }

    fn push_json(&self, json: serde_json::Value) -> EmitResult {
        match event_from_wire(&self.id, &self.env.alerter_name, self.env.clock.now(), json) {
            Ok(e) => match self.tx.try_send(e.into()) {
                Ok(()) => EmitResult::Ok,
                Err(SendError::Full(_)) => EmitResult::Backpressure,
                Err(SendError::Closed(_)) => EmitResult::ShuttingDown,
            },
            Err(reason) => {
                // Logged once per burst: a plugin sending garbage in a loop
                // must not flood the log.
                if self.bad.fetch_add(1, Ordering::Relaxed) == 0 {
                    warn!(source = %self.id, "ignored an event from the plugin: {reason}");
                }
                EmitResult::Ok
            }
        }
    }
}

/// The in-process sink: events straight into the source's queue.
struct FeedSink(Feed);

impl Sink for FeedSink {
    fn emit(&self, json: &str) -> EmitResult {
        match serde_json::from_str(json) {
            Ok(v) => {
                let r = self.0.push_json(v);
                let mut drops = self.0.drops.lock().unwrap_or_else(|p| p.into_inner());
                match r {
                    EmitResult::Backpressure => drops.refused(json),
                    _ => drops.taken(json),
                }
                r
            }
            Err(e) => {
                if self.0.bad.fetch_add(1, Ordering::Relaxed) == 0 {
                    warn!(source = %self.0.id, "ignored an event from the plugin: not JSON: {e}");
                }
                EmitResult::Ok
            }
        }
    }

    fn log(&self, level: u32, message: &str) {
        plugin_log(&self.0.id, level_name(level), message);
    }

    fn save_state(&self, json: &str) -> EmitResult {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(json) {
            warn!(source = %self.0.id, "ignored a saved state that is not JSON: {e}");
            return EmitResult::Ok;
        }
        self.0.push_state(json.to_string())
    }
}

fn level_name(level: u32) -> &'static str {
    match level {
        alerter_plugin_abi::LOG_ERROR => "error",
        alerter_plugin_abi::LOG_WARN => "warn",
        alerter_plugin_abi::LOG_DEBUG => "debug",
        _ => "info",
    }
}

fn plugin_log(source: &str, level: &str, message: &str) {
    match level {
        "error" => error!(source, "{message}"),
        "warn" | "warning" => warn!(source, "{message}"),
        "debug" => debug!(source, "{message}"),
        _ => info!(source, "{message}"),
    }
}

fn internal_event(
    env: &SupervisorEnv,
    severity: Severity,
    key: String,
    summary: String,
    labels: &[(&str, &str)],
) -> Event {
    let mut e = Event::new(ALERTER_SOURCE, &env.alerter_name, severity, summary, env.clock.now()).with_key(key);
    for (k, v) in labels {
        e = e.with_label(*k, *v);
    }
    e
}

async fn supervise(spec: SourceSpec, env: SupervisorEnv, stop: CancellationToken, health: Arc<Health>) {
    let feed = Feed {
        id: Arc::from(spec.id.as_str()),
        tx: env.inbox.lane(&spec.id, spec.queue),
        alerts: env.inbox.lane(&format!("{} (supervisor)", spec.id), 16),
        dropped: Arc::new(AtomicU64::new(0)),
        drops: Arc::default(),
        bad: Arc::new(AtomicU64::new(0)),
        env: env.clone(),
        health: health.clone(),
    };
    let reporter = tokio::spawn(report_drops(feed.clone(), stop.clone()));
    let b = env.backoff;
    let mut delay = b.initial;
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    let mut alerted = false;
    info!(source = %spec.id, plugin = %spec.plugin.meta.name, isolation = ?spec.isolation, "source starting");
    loop {
        let started = Instant::now();
        let end = match spec.isolation {
            Isolation::Process => run_child(&spec, &feed, &stop, &mut alerted).await,
            Isolation::InProcess => run_in_process(&spec, &feed, &stop, &mut alerted).await,
        };
        if stop.is_cancelled() {
            break;
        }
        let now = Instant::now();
        if now.duration_since(started) >= b.healthy_after {
            delay = b.initial;
        }
        crashes.push_back(now);
        while crashes.front().is_some_and(|t| now.duration_since(*t) > b.window) {
            crashes.pop_front();
        }
        let jittered = delay.mul_f64(0.5 + fastrand::f64());
        error!(source = %spec.id, "source stopped on its own: {end}; restarting in {:.1}s", jittered.as_secs_f64());
        if crashes.len() >= b.crashes_to_alert && !alerted {
            alerted = true;
            let e = internal_event(
                &env,
                Severity::Warning,
                format!("source:{}", spec.id),
                format!("source `{}` (plugin `{}`) keeps failing: {end}", spec.id, spec.plugin.meta.name),
                &[("event", "source_failing"), ("source_id", &spec.id), ("plugin", &spec.plugin.meta.name)],
            );
            let _ = feed.alerts.send(e.into()).await;
        }
        health.restarts.fetch_add(1, Ordering::Relaxed);
        health.restarting.store(true, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(jittered) => {}
            _ = stop.cancelled() => break,
        }
        health.restarting.store(false, Ordering::Relaxed);
        delay = (delay * 2).min(b.max);
    }
    reporter.abort();
    // Whatever the source queued before stopping stays in its lane until
    // the engine has taken it.
    drop(feed);
    info!(source = %spec.id, "source stopped");
}

/// Raises (and later resolves) an `alerter` event while a source's queue overflows.
async fn report_drops(feed: Feed, stop: CancellationToken) {
    let mut raised = false;
    let mut ticker = tokio::time::interval(feed.env.drop_report_every);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return,
        }
        let dropped =
            feed.dropped.swap(0, Ordering::Relaxed) + feed.drops.lock().unwrap_or_else(|p| p.into_inner()).take();
        feed.health.dropped.fetch_add(dropped, Ordering::Relaxed);
        let bad = feed.bad.swap(0, Ordering::Relaxed);
        if bad > 1 {
            warn!(source = %feed.id, "ignored {bad} more bad events from the plugin");
        }
        let key = format!("dropped:{}", feed.id);
        if dropped > 0 {
            warn!(source = %feed.id, dropped, "source queue full; events dropped");
            raised = true;
            let secs = feed.env.drop_report_every.as_secs();
            let e = internal_event(
                &feed.env,
                Severity::Warning,
                key,
                format!(
                    "source `{}` dropped {dropped} events in the last {secs} s: it sends more than the alerter can take",
                    feed.id
                ),
                &[("event", "events_dropped"), ("source_id", &feed.id), ("dropped", &dropped.to_string())],
            );
            let _ = feed.alerts.send(e.into()).await;
        } else if raised {
            raised = false;
            let e = internal_event(
                &feed.env,
                Severity::Resolved,
                key,
                format!("source `{}` no longer drops events", feed.id),
                &[("event", "events_dropped"), ("source_id", &feed.id)],
            );
            let _ = feed.alerts.send(e.into()).await;
        }
    }
}

/// Marks the source healthy: resolves a crash alert raised earlier.
async fn healthy(feed: &Feed, spec: &SourceSpec, alerted: &mut bool) {
    if *alerted {
        *alerted = false;
        let e = internal_event(
            &feed.env,
            Severity::Resolved,
            format!("source:{}", spec.id),
            format!("source `{}` runs steadily again", spec.id),
            &[("event", "source_failing"), ("source_id", &spec.id)],
        );
        let _ = feed.alerts.send(e.into()).await;
    }
}

async fn run_in_process(spec: &SourceSpec, feed: &Feed, stop: &CancellationToken, alerted: &mut bool) -> String {
    let d = match &spec.plugin.kind {
        PluginKind::Builtin(d) => *d,
        PluginKind::SharedObject(path) => {
            // Loaded through the descriptor it was checked on; the mapping
            // stays after the descriptor closes.
            let (path, sha256) = (path.clone(), spec.plugin.sha256.clone());
            let checked = tokio::task::spawn_blocking(move || super::discover::open_for_run(&path, sha256.as_deref()));
            let fd = match checked.await {
                Ok(Ok(fd)) => fd,
                Ok(Err(reason)) => return refused(spec, feed, reason).await,
                Err(e) => return format!("cannot check the plugin file: {e}"),
            };
            let loaded = ffi::load(Path::new(&alerter_spawn::fd_exec::fd_path(&fd)));
            // Kept open for good, as the library is never unloaded: glibc
            // knows a loaded library by the name it was opened with, and a
            // later load of another file under a reused descriptor number
            // would get this one back.
            std::mem::forget(fd);
            match loaded {
                Ok(d) => d,
                Err(e) => return e.to_string(),
            }
        }
        PluginKind::Executable(_) => return "an executable plugin cannot run in-process".into(),
    };
    let host = Arc::new(Host::with_state(Arc::new(FeedSink(feed.clone())), feed.saved_state()));
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<RunEnd>();
    let config = spec.settings.to_string();
    let thread_host = host.clone();
    let spawned = std::thread::Builder::new().name(format!("source {}", spec.id)).spawn(move || {
        let end = ffi::run(&d, &config, &thread_host);
        let _ = done_tx.send(end);
    });
    if let Err(e) = spawned {
        return format!("cannot start a thread: {e}");
    }
    let healthy_timer = tokio::time::sleep(feed.env.backoff.healthy_after);
    tokio::pin!(healthy_timer);
    let mut marked = false;
    loop {
        tokio::select! {
            end = &mut done_rx => return describe_end(end.ok()),
            _ = &mut healthy_timer, if !marked => {
                marked = true;
                healthy(feed, spec, alerted).await;
            }
            _ = stop.cancelled() => {
                host.request_stop(&d);
                return match tokio::time::timeout(feed.env.grace, &mut done_rx).await {
                    Ok(end) => describe_end(end.ok()),
                    Err(_) => {
                        // A thread cannot be killed; this is why third-party
                        // plugins run in a process by default.
                        warn!(source = %spec.id, "the in-process plugin ignored shutdown for {:?}; abandoning its thread", feed.env.grace);
                        "abandoned after ignoring shutdown".into()
                    }
                };
            }
        }
    }
}

fn describe_end(end: Option<RunEnd>) -> String {
    match end {
        Some(RunEnd::Stopped) => "stopped".into(),
        Some(RunEnd::CreateFailed(e)) => format!("could not start: {e}"),
        Some(RunEnd::Failed(e)) => format!("failed: {e}"),
        Some(RunEnd::Panicked(e)) => format!("panicked: {e}"),
        None => "its thread died".into(),
    }
}

/// A plugin file refused at spawn: an `alerter` event says so at once
/// (someone may be tampering with it), and the reason ends the run.
async fn refused(spec: &SourceSpec, feed: &Feed, reason: String) -> String {
    let e = internal_event(
        &feed.env,
        Severity::Critical,
        format!("plugin_refused:{}", spec.id),
        format!("source `{}`: its plugin file was refused and not run: {reason}", spec.id),
        &[("event", "plugin_refused"), ("source_id", &spec.id), ("plugin", &spec.plugin.meta.name)],
    );
    let _ = feed.alerts.send(e.into()).await;
    format!("the plugin file was refused: {reason}")
}

async fn run_child(spec: &SourceSpec, feed: &Feed, stop: &CancellationToken, alerted: &mut bool) -> String {
    // Checked afresh at every spawn: the file may have changed since the scan.
    // Off the async workers: it walks directories and hashes the file.
    let (plugins, kind, sha256) = (feed.env.plugins.clone(), spec.plugin.kind.clone(), spec.plugin.sha256.clone());
    let checked = tokio::task::spawn_blocking(move || plugins.command_for(&kind, sha256.as_deref())).await;
    let prepared = match checked {
        Ok(Ok(p)) => p,
        Ok(Err(reason)) => return refused(spec, feed, reason).await,
        Err(e) => return format!("cannot check the plugin file: {e}"),
    };
    // The checked descriptor stays open until the spawn below.
    let (std_cmd, _checked) = prepared.into_parts();
    let mut cmd = tokio::process::Command::from(std_cmd);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C in the daemon's terminal is the
        // daemon's to handle, not the plugin's.
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return format!("cannot start the plugin process: {e}"),
    };
    let pid = child.id().unwrap_or_default();
    debug!(source = %spec.id, pid, "plugin process started");
    let mut stdin = child.stdin.take().expect("piped");
    let mut lines = FramedRead::new(child.stdout.take().expect("piped"), LinesCodec::new_with_max_length(MAX_LINE));
    let stderr = child.stderr.take().expect("piped");
    let id = spec.id.clone();
    let relay = tokio::spawn(async move {
        let mut err_lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(8 * 1024));
        while let Some(line) = err_lines.next().await {
            match line {
                Ok(l) if !l.trim().is_empty() => warn!(source = %id, "plugin: {l}"),
                Ok(_) => {}
                Err(LinesCodecError::MaxLineLengthExceeded) => warn!(source = %id, "plugin: (overlong line cut)"),
                Err(_) => break,
            }
        }
    });

    let hello = ToPlugin::Hello { protocol: PROTOCOL_VERSION }.line();
    let state = feed.saved_state().and_then(|s| serde_json::from_str(&s).ok());
    let start = ToPlugin::Start { source: spec.id.clone(), config: spec.settings.clone(), state }.line();
    if let Err(e) = stdin.write_all(format!("{hello}{start}").as_bytes()).await {
        let status = child.wait().await.map(describe_exit).unwrap_or_default();
        relay.abort();
        return format!("the plugin process {status} before it started ({e})");
    }
    let mut stopped_status: Option<String> = None;
    let healthy_timer = tokio::time::sleep(feed.env.backoff.healthy_after);
    tokio::pin!(healthy_timer);
    let mut marked = false;
    let end = loop {
        tokio::select! {
            line = lines.next() => match line {
                Some(Ok(l)) => handle_line(spec, feed, &l, &mut stopped_status).await,
                Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                    feed.bad.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(_)) | None => {
                    let status = child.wait().await.map(describe_exit).unwrap_or_default();
                    break match stopped_status {
                        Some(s) => format!("{s} (the process {status})"),
                        None => format!("the plugin process {status}"),
                    };
                }
            },
            _ = &mut healthy_timer, if !marked => {
                marked = true;
                healthy(feed, spec, alerted).await;
            }
            _ = stop.cancelled() => {
                // Ask, wait for the grace period, then kill.
                let _ = stdin.write_all(ToPlugin::Shutdown.line().as_bytes()).await;
                let _ = stdin.shutdown().await;
                let drain = async {
                    while let Some(line) = lines.next().await {
                        if let Ok(l) = line {
                            handle_line(spec, feed, &l, &mut stopped_status).await;
                        }
                    }
                    child.wait().await
                };
                match tokio::time::timeout(feed.env.grace, drain).await {
                    Ok(_) => debug!(source = %spec.id, "plugin process stopped"),
                    Err(_) => {
                        warn!(source = %spec.id, "plugin did not stop within {:?}; killing it", feed.env.grace);
                        let _ = child.kill().await;
                    }
                }
                break "stopped".to_string();
            }
        }
    };
    relay.abort();
    end
}

async fn handle_line(spec: &SourceSpec, feed: &Feed, line: &str, stopped: &mut Option<String>) {
    match serde_json::from_str::<FromPlugin>(line) {
        Ok(FromPlugin::Event { event }) => feed.push_json_wait(event).await,
        Ok(FromPlugin::State { state }) => feed.push_state_wait(state.to_string()).await,
        Ok(FromPlugin::Log { level, message }) => plugin_log(&spec.id, &level, &message),
        Ok(FromPlugin::Dropped { count }) => {
            feed.dropped.fetch_add(count, Ordering::Relaxed);
        }
        Ok(FromPlugin::Stopped { status, error }) => {
            *stopped = Some(match error {
                Some(e) => format!("{status}: {e}"),
                None => status,
            });
        }
        Ok(FromPlugin::Failed { error }) => *stopped = Some(format!("could not start: {error}")),
        Ok(FromPlugin::Refused { error }) => *stopped = Some(format!("could not load: {error}")),
        Ok(FromPlugin::Hello { plugin, .. }) => {
            if plugin.name != spec.plugin.meta.name {
                warn!(source = %spec.id, "the plugin now calls itself `{}`, not `{}`", plugin.name, spec.plugin.meta.name);
            }
        }
        Ok(FromPlugin::Started | FromPlugin::Validated { .. }) => {}
        Err(_) => {
            feed.bad.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The running sources of a configuration.
#[derive(Debug, Default)]
pub struct Sources {
    running: HashMap<String, RunningSource>,
}

impl Sources {
    /// Makes the running sources match `specs`: sources whose fingerprint
    /// is unchanged keep running undisturbed; changed ones restart; removed
    /// ones stop; new ones start.
    pub async fn reconcile(&mut self, specs: &[SourceSpec], env: &SupervisorEnv) {
        let wanted: HashMap<&str, &SourceSpec> =
            specs.iter().filter(|s| s.enabled).map(|s| (s.id.as_str(), s)).collect();
        let mut stopping = Vec::new();
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for id in ids {
            let keep = wanted.get(id.as_str()).is_some_and(|s| s.fingerprint() == self.running[&id].fingerprint);
            if !keep {
                info!(source = %id, "stopping source (removed or changed)");
                stopping.push(self.running.remove(&id).expect("present"));
            }
        }
        futures_util::future::join_all(stopping.into_iter().map(RunningSource::stop)).await;
        for spec in specs.iter().filter(|s| s.enabled) {
            if !self.running.contains_key(&spec.id) {
                self.running.insert(spec.id.clone(), spawn(spec.clone(), env.clone()));
            }
        }
    }

    /// Each running source's health, by id.
    pub fn health(&self) -> Vec<(&str, &Health)> {
        let mut v: Vec<(&str, &Health)> = self.running.iter().map(|(k, r)| (k.as_str(), &*r.health)).collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    pub fn ids(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.running.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Stops every source, in parallel.
    pub async fn stop_all(&mut self) {
        let all: Vec<RunningSource> = self.running.drain().map(|(_, r)| r).collect();
        futures_util::future::join_all(all.into_iter().map(RunningSource::stop)).await;
    }
}
