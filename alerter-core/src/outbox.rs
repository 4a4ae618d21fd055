//! Delivering the outbox: one worker per transport.
//!
//! The engine writes every notification into the outbox (in the same
//! transaction as the alert state that caused it) before anything is sent.
//! Each transport's worker takes its due notifications from the store,
//! delivers them with bounded concurrency, and records each outcome as
//! soon as it is known: sent (with the server's reply), retried later
//! (exponential backoff with jitter), failed for good, or expired after
//! the transport's maximum age. A slow or dead mail server only ever
//! delays its own worker. After a crash, whatever is still pending is
//! picked up again, so nothing accepted is lost.
//!
//! Delivery is at least once: a crash after a server accepted a message
//! but before its outcome was committed sends it again. Outcomes are
//! committed one by one, right after each reply, to keep that window small.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::clock::Clock;
use crate::store::{Attempt, OutboxEntry, OutboxStatus, Store, StoreError};
use crate::transport::Transport;

pub use crate::transport::RetryPolicy;
pub use alerter_engine::engine::{Delivery as Report, Outcome};

struct Worker {
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

/// The running workers.
pub struct Dispatcher {
    workers: HashMap<String, Worker>,
    /// Stop taking new work.
    stop: CancellationToken,
    /// Abandon work in flight.
    abandon: CancellationToken,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("transports", &self.workers.keys().collect::<Vec<_>>()).finish()
    }
}

impl Dispatcher {
    /// Starts a worker per transport, each with its own store connection.
    pub fn start(
        transports: HashMap<String, (Arc<dyn Transport>, RetryPolicy)>,
        state_dir: &Path,
        reports: mpsc::UnboundedSender<Report>,
        clock: Arc<dyn Clock>,
    ) -> Result<Dispatcher, StoreError> {
        let stop = CancellationToken::new();
        let abandon = CancellationToken::new();
        let mut workers = HashMap::new();
        for (name, (transport, policy)) in transports {
            let store = Store::open(state_dir)?;
            let wake = Arc::new(Notify::new());
            let w = WorkerState {
                name: name.clone(),
                transport,
                policy,
                store,
                wake: wake.clone(),
                reports: reports.clone(),
                clock: clock.clone(),
                stop: stop.clone(),
                abandon: abandon.clone(),
            };
            workers.insert(name, Worker { wake, task: tokio::spawn(w.run()) });
        }
        Ok(Dispatcher { workers, stop, abandon })
    }

    /// No workers at all (after shutdown).
    pub fn none() -> Dispatcher {
        Dispatcher { workers: HashMap::new(), stop: CancellationToken::new(), abandon: CancellationToken::new() }
    }

    /// Tells a transport's worker that new notifications are waiting.
    pub fn wake(&self, transport: &str) {
        if let Some(w) = self.workers.get(transport) {
            w.wake.notify_one();
        }
    }

    /// Stops taking new work, lets deliveries in flight finish for up to
    /// `grace`, then abandons them (they stay pending in the outbox).
    pub async fn stop(self, grace: Duration) {
        self.stop.cancel();
        let mut tasks: Vec<JoinHandle<()>> = self.workers.into_values().map(|w| w.task).collect();
        let all = async {
            for t in &mut tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            warn!("deliveries still in flight after {grace:?}; they stay in the outbox for the next start");
            self.abandon.cancel();
            for t in tasks {
                t.abort();
            }
        }
    }
}

struct WorkerState {
    name: String,
    transport: Arc<dyn Transport>,
    policy: RetryPolicy,
    store: Store,
    wake: Arc<Notify>,
    reports: mpsc::UnboundedSender<Report>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
    abandon: CancellationToken,
}

impl WorkerState {
    async fn run(mut self) {
        // The daemon does not say "stopped" on every wake-up; a missed
        // wake-up costs at most this long.
        const IDLE_CHECK: Duration = Duration::from_secs(60);
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let now = self.clock.now();
            let due = match self.store.due(&self.name, now, self.policy.concurrency * 4) {
                Ok(d) => d,
                Err(e) => {
                    error!(transport = %self.name, "cannot read the outbox: {e}");
                    Vec::new()
                }
            };
            if due.is_empty() {
                let next = self.store.next_due(&self.name).ok().flatten();
                let wait = next.map_or(IDLE_CHECK, |t| (t - now).to_std().unwrap_or_default().min(IDLE_CHECK));
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.stop.cancelled() => return,
                }
                continue;
            }
            let transport = self.transport.clone();
            let abandon = self.abandon.clone();
            let mut in_flight = futures_util::stream::iter(due)
                .map(|entry| {
                    let transport = transport.clone();
                    let abandon = abandon.clone();
                    async move {
                        let result = tokio::select! {
                            r = transport.send(&entry.notification) => Some(r),
                            _ = abandon.cancelled() => None,
                        };
                        (entry, result)
                    }
                })
                .buffer_unordered(self.policy.concurrency.max(1));
            while let Some((entry, result)) = in_flight.next().await {
                let Some(result) = result else { continue };
                self.record(entry, result);
            }
        }
    }

    /// Commits one attempt's outcome at once and reports it.
    fn record(
        &mut self,
        e: OutboxEntry,
        result: Result<crate::transport::Delivered, crate::transport::TransportError>,
    ) {
        let now = self.clock.now();
        let attempts = e.attempts + 1;
        let n = &e.notification;
        let (status, next, error, reply, outcome) = match result {
            Ok(d) => {
                debug!(transport = %self.name, id = %n.id, "delivered");
                (OutboxStatus::Sent, now, None, d.reply.clone(), Outcome::Sent(d.reply))
            }
            Err(err) if err.is_transient() => {
                let age = (now - n.created_at).to_std().unwrap_or_default();
                let msg = err.to_string();
                if age >= self.policy.max_age {
                    let why =
                        format!("not delivered within {}: {msg}", humantime::format_duration(self.policy.max_age));
                    (OutboxStatus::Expired, now, Some(why.clone()), None, Outcome::Expired(why))
                } else {
                    let wait = self.policy.backoff(attempts);
                    let next = now + chrono::Duration::from_std(wait).unwrap_or_default();
                    warn!(transport = %self.name, id = %n.id, attempts, "delivery failed, retrying in {:.1}s: {msg}", wait.as_secs_f64());
                    (OutboxStatus::Pending, next, Some(msg.clone()), None, Outcome::Retrying { error: msg, attempts })
                }
            }
            Err(err) => {
                let msg = err.to_string();
                (OutboxStatus::Failed, now, Some(msg.clone()), None, Outcome::Failed(msg))
            }
        };
        let attempt =
            Attempt { status, attempts, next_attempt: next, error: error.as_deref(), reply: reply.as_deref() };
        if let Err(err) = self.store.record_attempt(&n.id, &attempt, now) {
            error!(transport = %self.name, id = %n.id, "cannot record a delivery attempt: {err}");
        }
        let _ = self.reports.send(Report { notification: e.notification, outcome, at: now });
    }
}
