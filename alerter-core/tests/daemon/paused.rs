//! The daemon on tokio's paused clock, with its real SQLite store and a
//! config given as text: shared by the daemon tests of this crate.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alerter_core::clock::TokioClock;
use alerter_core::config;
use alerter_core::daemon::{self, Control, RunOptions};
use alerter_core::inbox::{Inbox, LaneSender};
use alerter_core::notify::Notification;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

/// The notifications the `log` transport wrote to `path` (JSON lines).
pub fn notifications(path: &Path) -> Vec<Notification> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A daemon started by [`start`].
pub struct Running {
    pub events: LaneSender,
    pub inbox: Inbox,
    pub control: mpsc::Sender<Control>,
    pub task: tokio::task::JoinHandle<Result<(), daemon::DaemonError>>,
}

/// Starts the daemon on `config` (with `{state}` and `{out}` replaced by a
/// state directory and a log file in `dir`), its clock reading `start`.
pub fn start(dir: &Path, config: &str, start: DateTime<Utc>) -> Running {
    let text = config
        .replace("{state}", &dir.join("state").display().to_string())
        .replace("{out}", &dir.join("out.jsonl").display().to_string());
    let loaded = config::load_str(
        "alerter.yaml",
        &text,
        Some(dir),
        &alerter_core::transport::load_options(&alerter_core::plugin::PluginRegistry::empty()),
    )
    .unwrap();
    let (ctl_tx, ctl_rx) = mpsc::channel(4);
    let inbox = Inbox::new();
    let events = inbox.lane("test", 100);
    let opts = RunOptions {
        config_path: None,
        plugins: Arc::new(alerter_core::plugin::PluginRegistry::empty()),
        backoff: Default::default(),
        drop_report_every: Duration::from_secs(10),
        clock: Arc::new(TokioClock::new(start)),
        shutdown_grace: Duration::from_secs(5),
        service: alerter_core::service::ServiceManager::none(),
    };
    let task = tokio::spawn(daemon::run(loaded.config, opts, ctl_rx, Some(inbox.clone())));
    Running { events, inbox, control: ctl_tx, task }
}

impl Running {
    pub async fn stop(self) {
        self.control.send(Control::Shutdown).await.unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// Waits (in paused time, so instantly) until `f` holds, looking every
/// `step` of virtual time for up to a virtual day.
pub async fn until_every(step: Duration, mut f: impl FnMut() -> bool) {
    let mut waited = Duration::ZERO;
    while waited < Duration::from_secs(86_400) {
        if f() {
            return;
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
    panic!("condition not reached within a virtual day");
}

/// [`until_every`] 10 ms of virtual time.
pub async fn until(f: impl FnMut() -> bool) {
    until_every(Duration::from_millis(10), f).await;
}
