//! Keeping firing alerts alive in Alertmanager, as Prometheus does.
//!
//! Alertmanager forgets an alert at its `endsAt`, so a sender re-sends
//! what still fires. Those re-sends are not news: they do not go through
//! the outbox and leave no history row (history records changes and
//! failures; a change, a new alert or a resolution, is an ordinary
//! notification). Every `resend` interval of each alertmanager transport,
//! the engine loop asks the [`Resender`] which transports are due, and it
//! sends, on a task of its own, every alert that fires and was notified
//! by a rule that names the transport, read from the engine's memory as
//! it is then, so a restart (alerts restored from the store) or a reload
//! (a rule gone: its alerts no longer re-sent, so Alertmanager resolves
//! them at their `endsAt`) needs nothing more. A failure is logged at most
//! every five minutes with a count and counted in
//! `alerter_alertmanager_resends_total`; the next interval tries again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::notify::AlertSummary;
use crate::rules::router::{AlertStatus, Router};
use crate::throttle::LogThrottle;
use crate::transport::Transport;

/// The most alerts in one request.
const CHUNK: usize = 500;

/// How long one round of re-sends may take.
const ROUND_DEADLINE: Duration = Duration::from_secs(60);

struct Due {
    next: Instant,
    every: Duration,
    /// A round is under way: the next waits for it rather than piling up.
    busy: Arc<AtomicBool>,
    failures: Arc<std::sync::Mutex<LogThrottle>>,
}

/// See the module docs.
#[derive(Default)]
pub struct Resender {
    due: HashMap<String, Due>,
    counter: Option<prometheus::IntCounterVec>,
}

impl std::fmt::Debug for Resender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resender").field("transports", &self.due.keys().collect::<Vec<_>>()).finish()
    }
}

impl Resender {
    pub fn new(counter: prometheus::IntCounterVec) -> Resender {
        Resender { due: HashMap::new(), counter: Some(counter) }
    }

    /// Follows the configured transports: a new alertmanager transport is
    /// first due one interval from now (what it sends first is a change,
    /// through the outbox), a removed one is forgotten, a changed interval
    /// applies from the next round.
    pub fn sync(&mut self, transports: &HashMap<String, Arc<dyn Transport>>, now: Instant) {
        self.due.retain(|name, _| transports.get(name).is_some_and(|t| t.as_alertmanager().is_some()));
        for (name, t) in transports {
            let Some(am) = t.as_alertmanager() else { continue };
            let every = am.resend_interval();
            let d = self.due.entry(name.clone()).or_insert_with(|| Due {
                next: now + every,
                every,
                busy: Arc::new(AtomicBool::new(false)),
                failures: Arc::new(std::sync::Mutex::new(LogThrottle::new(Duration::from_secs(300)))),
            });
            if d.every != every {
                d.next = d.next.min(now + every);
                d.every = every;
            }
        }
    }

    /// When the next transport is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.values().map(|d| d.next).min()
    }

    /// Starts a round for every transport due at `now`.
    pub fn run_due(
        &mut self,
        transports: &HashMap<String, Arc<dyn Transport>>,
        router: &Router,
        utc_now: DateTime<Utc>,
        now: Instant,
    ) {
        for (name, d) in &mut self.due {
            if d.next > now {
                continue;
            }
            d.next = now + d.every;
            let Some(t) = transports.get(name).cloned() else { continue };
            if d.busy.swap(true, Ordering::AcqRel) {
                continue;
            }
            let alerts = firing_for(router, name);
            if alerts.is_empty() {
                d.busy.store(false, Ordering::Release);
                continue;
            }
            let (busy, failures, counter, name) =
                (d.busy.clone(), d.failures.clone(), self.counter.clone(), name.clone());
            tokio::spawn(async move {
                let Some(am) = t.as_alertmanager() else { return };
                let round = async {
                    for chunk in alerts.chunks(CHUNK) {
                        am.resend(chunk, utc_now).await?;
                    }
                    Ok::<_, crate::transport::TransportError>(())
                };
                let outcome = match tokio::time::timeout(ROUND_DEADLINE, round).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {} s", ROUND_DEADLINE.as_secs())),
                };
                let label = if outcome.is_ok() { "sent" } else { "failed" };
                if let Some(c) = &counter {
                    c.with_label_values(&[name.as_str(), label]).inc();
                }
                let mut throttle = failures.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(()) => {
                        if let Some(n) = throttle.clear() {
                            info!(transport = %name, "re-sending firing alerts to Alertmanager works again (after {n} failed rounds)");
                        }
                    }
                    Err(e) => {
                        if let Some(repeats) = throttle.hit(Utc::now()) {
                            warn!(transport = %name, alerts = alerts.len(), "cannot re-send firing alerts to Alertmanager: {e}{repeats}; Alertmanager resolves them at their endsAt unless a later round gets through");
                        }
                    }
                }
                busy.store(false, Ordering::Release);
            });
        }
    }
}

/// The alerts to keep alive through `transport`: firing, notified, of a
/// rule that names it.
pub fn firing_for(router: &Router, transport: &str) -> Vec<(String, AlertSummary)> {
    router
        .all_alerts()
        .filter(|(r, a)| {
            a.status == AlertStatus::Firing
                && a.last_notified.is_some()
                && r.targets.iter().any(|t| t.transport == transport)
        })
        .map(|(r, a)| (r.name.clone(), AlertSummary::firing(a)))
        .collect()
}
