//! What the daemon tells its service manager: systemd's `sd_notify`
//! protocol (READY, RELOADING, STOPPING, STATUS) and the watchdog.
//!
//! Everything here is a no-op when the daemon was not started by a service
//! manager that asked for notifications (no `NOTIFY_SOCKET`), so the same
//! code runs under systemd, in a terminal and in tests. A message that
//! cannot be sent is logged once and otherwise ignored: the service manager
//! going away must never stop alerts.
//!
//! The watchdog is pinged from the engine loop itself (see
//! [`crate::daemon`]), never from a task of its own: a ping then proves
//! that the loop which routes events still turns, so an engine stuck in a
//! blocking call is noticed and restarted by systemd (`WatchdogSec=`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::warn;

/// The daemon's line to its service manager.
#[derive(Debug, Default)]
pub struct ServiceManager {
    /// Whether `NOTIFY_SOCKET` was set at start.
    enabled: bool,
    /// The watchdog timeout systemd set (`WATCHDOG_USEC`, for this process).
    watchdog: Option<Duration>,
    /// Whether a failed send was already logged.
    warned: AtomicBool,
}

impl ServiceManager {
    /// Reads what the service manager set in the environment.
    pub fn from_env() -> ServiceManager {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        let watchdog = if enabled { sd_notify::watchdog_enabled().filter(|d| !d.is_zero()) } else { None };
        ServiceManager { enabled, watchdog, warned: AtomicBool::new(false) }
    }

    /// One that tells nobody (tests, and runs outside a service manager).
    pub fn none() -> ServiceManager {
        ServiceManager::default()
    }

    /// How often to ping the watchdog: half its timeout, as sd_watchdog_enabled(3)
    /// advises, so one late ping is not yet a restart.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|t| (t / 2).max(Duration::from_millis(1)))
    }

    /// A timer for the pings, to be awaited in the loop they vouch for.
    pub fn watchdog_timer(&self) -> WatchdogTimer {
        WatchdogTimer(self.watchdog_every().map(|every| {
            let mut t = tokio::time::interval(every);
            // A late ping is sent once, not in a burst that would hide the delay.
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        }))
    }

    /// Startup (or a reload) is finished; `status` says what runs.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload began. systemd 253 and later want the monotonic time with
    /// it, to tell this reload from an older one.
    pub fn reloading(&self) {
        if !self.enabled {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now, NotifyState::Status("reloading the configuration")]),
            Err(_) => self.send(&[NotifyState::Reloading, NotifyState::Status("reloading the configuration")]),
        }
    }

    /// Shutdown began.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping: delivering what is queued")]);
    }

    /// A free-form status line, shown by `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// The engine loop still turns.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}; further failures are not logged");
        }
    }
}

/// When the next watchdog ping is due; never, without a watchdog.
#[derive(Debug)]
pub struct WatchdogTimer(Option<tokio::time::Interval>);

impl WatchdogTimer {
    pub async fn due(&mut self) {
        match &mut self.0 {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_pings_at_half_the_timeout() {
        let s = ServiceManager { enabled: true, watchdog: Some(Duration::from_secs(30)), ..Default::default() };
        assert_eq!(s.watchdog_every(), Some(Duration::from_secs(15)));
        assert_eq!(ServiceManager::none().watchdog_every(), None);
    }
}
