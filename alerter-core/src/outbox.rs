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
//! group-committed: written as soon as the worker would otherwise wait for
//! a send, in one transaction for all that completed meanwhile (at most
//! `RECORD_BATCH`), which keeps that window to one write.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::Clock;
use crate::store::{Attempt, OutboxEntry, OutboxStatus, Priority, Store, StoreError};
use crate::throttle::LogThrottle;
use crate::transport::{Transport, TransportError};

pub use crate::transport::RetryPolicy;
pub use alerter_engine::engine::{Delivery as Report, Outcome};

/// A transport and its retry policy: replaced in place when a reload
/// keeps the transport's worker.
type Settings = Arc<std::sync::Mutex<(Arc<dyn Transport>, RetryPolicy)>>;

fn current(settings: &Settings) -> (Arc<dyn Transport>, RetryPolicy) {
    let s = settings.lock().unwrap_or_else(|e| e.into_inner());
    (s.0.clone(), s.1)
}

struct Worker {
    wake: Arc<Notify>,
    task: JoinHandle<()>,
    settings: Settings,
    /// Stop taking new work.
    stop: CancellationToken,
    /// Abandon work in flight.
    abandon: CancellationToken,
}

/// Every worker's wake-up, by transport: a worker that queued something
/// for another transport (a popup's fallback) wakes that one's worker.
#[derive(Clone, Default)]
struct Wakers(Arc<std::sync::RwLock<HashMap<String, Arc<Notify>>>>);

impl Wakers {
    fn wake(&self, transport: &str) {
        if let Some(w) = self.0.read().unwrap_or_else(|e| e.into_inner()).get(transport) {
            w.notify_one();
        }
    }

    fn has(&self, transport: &str) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).contains_key(transport)
    }

    fn set(&self, workers: &HashMap<String, Worker>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) =
            workers.iter().map(|(name, w)| (name.clone(), w.wake.clone())).collect();
    }
}

/// The running workers, one per transport.
///
/// A reload keeps the worker of every transport still configured and hands
/// it the new transport and policy, used from its next send on: nothing in
/// flight is interrupted or handed back, and the worker's leases stay
/// where they are. Workers of removed transports stop (see [`Retired`]),
/// and new transports get new workers.
pub struct Dispatcher {
    workers: HashMap<String, Worker>,
    wakers: Wakers,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("transports", &self.workers.keys().collect::<Vec<_>>()).finish()
    }
}

/// The transports of a configuration, ready to be handed to the workers:
/// what [`Dispatcher::prepare`] could fail at is done.
pub struct Prepared {
    kept: Vec<(String, Arc<dyn Transport>, RetryPolicy)>,
    fresh: Vec<(String, Arc<dyn Transport>, RetryPolicy, Store)>,
}

/// Workers of transports a reload removed, to be stopped.
pub struct Retired {
    workers: Vec<Worker>,
}

impl Retired {
    /// Stops taking new work, lets deliveries in flight finish for up to
    /// `grace`, then abandons them (they stay pending in the outbox).
    pub async fn stop(self, grace: Duration) {
        for w in &self.workers {
            w.stop.cancel();
        }
        let (mut tasks, abandon): (Vec<JoinHandle<()>>, Vec<CancellationToken>) =
            self.workers.into_iter().map(|w| (w.task, w.abandon)).unzip();
        let all = async {
            for t in &mut tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            warn!("deliveries still in flight after {grace:?}; they stay in the outbox for the next start");
            for a in abandon {
                a.cancel();
            }
            for t in tasks {
                t.abort();
            }
        }
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
        let mut d = Dispatcher::none();
        let prepared = d.prepare(transports, state_dir)?;
        let retired = d.apply(prepared, &reports, &clock);
        debug_assert!(retired.workers.is_empty());
        Ok(d)
    }

    /// No workers at all (after shutdown).
    pub fn none() -> Dispatcher {
        Dispatcher { workers: HashMap::new(), wakers: Wakers::default() }
    }

    /// The half of a reload that can fail, changing nothing: opens a store
    /// connection for each transport that has no worker yet.
    pub fn prepare(
        &self,
        transports: HashMap<String, (Arc<dyn Transport>, RetryPolicy)>,
        state_dir: &Path,
    ) -> Result<Prepared, StoreError> {
        let mut p = Prepared { kept: Vec::new(), fresh: Vec::new() };
        for (name, (transport, policy)) in transports {
            if self.workers.contains_key(&name) {
                p.kept.push((name, transport, policy));
            } else {
                let store = Store::open(state_dir)?;
                p.fresh.push((name, transport, policy, store));
            }
        }
        Ok(p)
    }

    /// The half that cannot fail: kept workers get their new transport and
    /// policy, new ones start; the workers of transports no longer
    /// configured are returned, to be stopped.
    pub fn apply(&mut self, p: Prepared, reports: &mpsc::UnboundedSender<Report>, clock: &Arc<dyn Clock>) -> Retired {
        let mut workers = HashMap::new();
        for (name, transport, policy) in p.kept {
            let w = self.workers.remove(&name).expect("prepared against these workers");
            *w.settings.lock().unwrap_or_else(|e| e.into_inner()) = (transport, policy);
            // It may be waiting: a policy with more concurrency, say.
            w.wake.notify_one();
            workers.insert(name, w);
        }
        for (name, transport, policy, store) in p.fresh {
            let wake = Arc::new(Notify::new());
            let settings: Settings = Arc::new(std::sync::Mutex::new((transport, policy)));
            let (stop, abandon) = (CancellationToken::new(), CancellationToken::new());
            let w = WorkerState {
                name: name.clone(),
                settings: settings.clone(),
                policy,
                store,
                wake: wake.clone(),
                reports: reports.clone(),
                clock: clock.clone(),
                stop: stop.clone(),
                abandon: abandon.clone(),
                unrecorded: Vec::new(),
                wakers: self.wakers.clone(),
                store_failures: 0,
                errors: LogThrottle::new(Duration::from_secs(30)),
            };
            workers.insert(name, Worker { wake, task: tokio::spawn(w.run()), settings, stop, abandon });
        }
        self.wakers.set(&workers);
        let retired = std::mem::replace(&mut self.workers, workers);
        Retired { workers: retired.into_values().collect() }
    }

    /// Tells a transport's worker that new notifications are waiting.
    pub fn wake(&self, transport: &str) {
        if let Some(w) = self.workers.get(transport) {
            w.wake.notify_one();
        }
    }

    /// Stops every worker: see [`Retired::stop`].
    pub async fn stop(self, grace: Duration) {
        Retired { workers: self.workers.into_values().collect() }.stop(grace).await;
    }
}

struct WorkerState {
    name: String,
    settings: Settings,
    /// The policy of the batch under way (from `settings`).
    policy: RetryPolicy,
    store: Store,
    wake: Arc<Notify>,
    reports: mpsc::UnboundedSender<Report>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
    abandon: CancellationToken,
    /// Outcomes not yet written (the store refused them): written before
    /// anything new is taken, and never sent again meanwhile (their rows
    /// stay leased).
    unrecorded: Vec<Recorded>,
    wakers: Wakers,
    /// Consecutive failures to use the store, for the backoff.
    store_failures: u32,
    errors: LogThrottle,
}

/// What became of one row of a batch.
enum Sending {
    Done(Result<crate::transport::Delivered, crate::transport::TransportError>),
    /// Cut off by `abandon`.
    Abandoned,
    /// Never started: the worker was stopping. Handed back as it was.
    NotStarted,
}

/// One attempt's outcome, waiting to be written.
struct Recorded {
    rowid: i64,
    status: OutboxStatus,
    attempts: u32,
    next_attempt: DateTime<Utc>,
    error: Option<String>,
    reply: Option<String>,
    /// Queued in the same transaction (see [`Attempt::then`]).
    then: Option<Box<crate::notify::Notification>>,
}

/// How long a worker holds the rows it took. Longer than any batch takes
/// to deliver; it only matters for a worker abandoned at a reload or
/// shutdown (leases live in memory: a new process starts with none).
const LEASE: Duration = Duration::from_secs(15 * 60);

/// Outcomes written per transaction, at most.
const RECORD_BATCH: usize = 64;

/// Outcomes a worker keeps unwritten, at most, while the store's writes are
/// held (a checkpoint round): it goes on sending meanwhile instead of
/// waiting at the gate. A crash re-sends what was not written.
const HELD_OUTCOMES: usize = 1024;

impl WorkerState {
    /// Notifications taken per batch: enough for the per-transaction cost to
    /// vanish under a storm, few enough to keep the leases short.
    fn batch(&self) -> usize {
        (self.policy.concurrency * 16).clamp(64, 256)
    }

    /// After a store error: waits (100 ms doubling to 30 s) unless stopped.
    async fn back_off(&mut self, what: &str, e: &crate::store::StoreError) -> bool {
        self.store_failures += 1;
        if let Some(repeats) = self.errors.hit(self.clock.now()) {
            error!(transport = %self.name, "cannot {what}: {e}{repeats}; retrying");
        }
        let wait =
            Duration::from_millis(100).saturating_mul(1 << self.store_failures.min(9)).min(Duration::from_secs(30));
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = self.stop.cancelled() => false,
        }
    }

    /// Writes the outcomes waiting, in one transaction; while the store's
    /// writes are held, only once [`HELD_OUTCOMES`] wait.
    fn flush(&mut self) -> Result<(), crate::store::StoreError> {
        if self.unrecorded.is_empty() {
            return Ok(());
        }
        let can_wait = self.unrecorded.len() < HELD_OUTCOMES && !self.stop.is_cancelled();
        let now = self.clock.now();
        let attempts: Vec<(i64, Attempt<'_>)> = self
            .unrecorded
            .iter()
            .map(|r| {
                (
                    r.rowid,
                    Attempt {
                        status: r.status,
                        attempts: r.attempts,
                        next_attempt: r.next_attempt,
                        error: r.error.as_deref(),
                        reply: r.reply.as_deref(),
                        then: r.then.as_deref(),
                    },
                )
            })
            .collect();
        let priority = if can_wait { Priority::Yield } else { Priority::Normal };
        if !self.store.record_attempts_with(&attempts, priority, now)? {
            // A checkpoint round: written when it is over.
            return Ok(());
        }
        // What was queued for other transports is theirs to send now.
        for then in self.unrecorded.iter().filter_map(|r| r.then.as_ref()) {
            self.wakers.wake(&then.transport);
        }
        self.unrecorded.clear();
        if self.store_failures > 0 {
            self.store_failures = 0;
            if let Some(n) = self.errors.clear() {
                info!(transport = %self.name, "the outbox can be written again (after {n} more failures)");
            }
        }
        Ok(())
    }

    async fn run(mut self) {
        // The daemon does not say "stopped" on every wake-up; a missed
        // wake-up costs at most this long.
        const IDLE_CHECK: Duration = Duration::from_secs(60);
        loop {
            if self.stop.is_cancelled() {
                // Outcomes known are worth one more try.
                let _ = self.flush();
                return;
            }
            if let Err(e) = self.flush() {
                if !self.back_off("record delivery outcomes", &e).await {
                    return;
                }
                continue;
            }
            self.policy = current(&self.settings).1;
            let now = self.clock.now();
            let lease_until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
            let due = match self.store.claim(&self.name, now, lease_until, self.batch()) {
                Ok(d) => d,
                Err(e) => {
                    if !self.back_off("take notifications from the outbox", &e).await {
                        return;
                    }
                    continue;
                }
            };
            if due.is_empty() {
                let next = self.store.next_due(&self.name).ok().flatten();
                let wait = next.map_or(IDLE_CHECK, |t| (t - now).to_std().unwrap_or_default().min(IDLE_CHECK));
                let writes = self.store.hold_watch();
                tokio::select! {
                    _ = self.wake.notified() => {}
                    // Outcomes left for later by a hold are written when it ends.
                    _ = writes.released(), if !self.unrecorded.is_empty() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.stop.cancelled() => {}
                }
                continue;
            }
            let abandon = self.abandon.clone();
            let stop = self.stop.clone();
            let settings = self.settings.clone();
            let mut in_flight = futures_util::stream::iter(due)
                .map(|entry| {
                    let settings = settings.clone();
                    let abandon = abandon.clone();
                    let stop = stop.clone();
                    async move {
                        // Runs when a slot frees up: once stopping, the rest
                        // of the batch is handed back rather than sent, so a
                        // reload or shutdown waits only for what is in flight.
                        if stop.is_cancelled() {
                            return (entry, Sending::NotStarted);
                        }
                        // The transport of now: a reload may have replaced it.
                        let (transport, _) = current(&settings);
                        let result = tokio::select! {
                            r = transport.send(&entry.notification) => Sending::Done(r),
                            _ = abandon.cancelled() => Sending::Abandoned,
                        };
                        (entry, result)
                    }
                })
                .buffer_unordered(self.policy.concurrency.max(1));
            loop {
                // Group commit: outcomes that arrive together are written
                // together, but the worker never waits on a send while
                // holding outcomes it could have written. A crash therefore
                // re-sends at most what completed during one write.
                let next = match in_flight.next().now_or_never() {
                    Some(next) => next,
                    None => {
                        // A failure is retried at the top of the loop.
                        let _ = self.flush();
                        in_flight.next().await
                    }
                };
                let Some((entry, result)) = next else { break };
                match result {
                    Sending::Done(result) => self.outcome(entry, result),
                    // Abandoned mid-send: the row stays leased (the server may
                    // have taken it); its lease running out, or the next
                    // start, makes it due again.
                    Sending::Abandoned => continue,
                    // Nothing was written about it: ending the lease is all.
                    Sending::NotStarted => self.store.release(&[entry.rowid]),
                }
                if self.unrecorded.len() >= RECORD_BATCH {
                    // A failure is retried at the top of the loop.
                    let _ = self.flush();
                }
            }
        }
    }

    /// Notes one attempt's outcome (written by the next flush) and reports it.
    fn outcome(
        &mut self,
        e: OutboxEntry,
        result: Result<crate::transport::Delivered, crate::transport::TransportError>,
    ) {
        let now = self.clock.now();
        let attempts = e.attempts + 1;
        let n = &e.notification;
        let mut then = None;
        let (status, next, error, reply, outcome) = match result {
            Err(TransportError::Absent { message, recipients }) => {
                let until = n.offline.as_ref().map_or_else(
                    || n.created_at + chrono::Duration::from_std(self.policy.max_age).unwrap_or_default(),
                    |o| o.until,
                );
                if now < until {
                    // They may appear any moment: looked for at least every
                    // `poll`, and once more at the deadline.
                    let wait = self.policy.backoff(attempts).min(self.policy.poll);
                    let next = (now + chrono::Duration::from_std(wait).unwrap_or_default()).min(until);
                    debug!(transport = %self.name, id = %n.id, attempts, "{message}; waiting for them");
                    let error = Some(format!("{message}; waiting for them until {}", until.to_rfc3339()));
                    (OutboxStatus::Pending, next, error, None, Outcome::Waiting { error: message, attempts })
                } else {
                    let waited = (until - n.created_at).to_std().unwrap_or_default();
                    let waited = humantime::format_duration(std::time::Duration::from_secs(waited.as_secs()));
                    match self.instead(n, &recipients) {
                        Ok(f) => {
                            let why = format!("{message}; waited {waited}, sent by `{}` instead", f.transport);
                            info!(transport = %self.name, id = %n.id, to = %f.transport, "{why}");
                            let outcome = Outcome::Forwarded { why: why.clone(), to: f.transport.clone() };
                            then = Some(f);
                            (OutboxStatus::Expired, now, Some(why), None, outcome)
                        }
                        Err(none) => {
                            let why = format!("not delivered within {waited}: {message}{none}");
                            (OutboxStatus::Expired, now, Some(why.clone()), None, Outcome::Unclaimed(why))
                        }
                    }
                }
            }
            Ok(d) => {
                debug!(transport = %self.name, id = %n.id, "delivered");
                // A late delivery says how late (a popup that waited for
                // its recipient to appear, a mail after retries).
                let reply = match d.reply {
                    Some(r) if attempts > 1 => {
                        let age = (now - n.created_at).to_std().unwrap_or_default();
                        let age = humantime::format_duration(Duration::from_secs(age.as_secs()));
                        Some(format!("{r} (attempt {attempts}, {age} after it was decided)"))
                    }
                    r => r,
                };
                (OutboxStatus::Sent, now, None, reply.clone(), Outcome::Sent(reply))
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
        self.unrecorded.push(Recorded { rowid: e.rowid, status, attempts, next_attempt: next, error, reply, then });
        let _ = self.reports.send(Report::new(&e.notification, outcome, now));
    }

    /// What goes out instead of popup `n` to `absent` (recipient ids), who
    /// never appeared: its fallback, narrowed to them. Else why nothing
    /// does (to end the expiry message).
    fn instead(
        &self,
        n: &crate::notify::Notification,
        absent: &[String],
    ) -> Result<Box<crate::notify::Notification>, String> {
        let Some(mut f) = n.offline.as_ref().and_then(|o| o.then.clone()) else {
            return Err(String::new());
        };
        if !self.wakers.has(&f.transport) {
            return Err(format!("; its fallback `{}` is no longer configured", f.transport));
        }
        f.recipients.retain(|r| absent.contains(&r.id));
        if f.recipients.is_empty() {
            return Err(format!("; `{}` reaches none of them", f.transport));
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::clock::TokioClock;
    use crate::transport::{BoxFuture, Delivered, TransportError};
    use alerter_engine::Turn;

    /// Counts send calls (a sink that does not deduplicate).
    struct Counting {
        sends: AtomicUsize,
        gate: tokio::sync::Semaphore,
    }

    impl Transport for Counting {
        fn kind(&self) -> &'static str {
            "log"
        }
        fn send<'a>(&'a self, _n: &'a crate::notify::Notification) -> BoxFuture<'a, Result<Delivered, TransportError>> {
            Box::pin(async move {
                self.gate.acquire().await.unwrap().forget();
                self.sends.fetch_add(1, Ordering::SeqCst);
                Ok(Delivered::default())
            })
        }
    }

    /// The database in `dir`, holding ten pending notifications `n0`..`n9`
    /// for transport `log`.
    fn ten_pending(dir: &Path, t: DateTime<Utc>) -> Store {
        let mut store = Store::open(dir).unwrap();
        let notes: Vec<_> = (0..10).map(|i| crate::store::tests::note(&format!("n{i}"), "log", t)).collect();
        store.commit(&Turn { notifications: notes, ..Turn::default() }, t).unwrap();
        store
    }

    /// A worker for transport `log` on the database in `dir`, sending
    /// through a [`Counting`] transport whose sends wait for permits.
    fn worker(
        dir: &Path,
        t: DateTime<Utc>,
        policy: RetryPolicy,
    ) -> (WorkerState, Arc<Counting>, mpsc::UnboundedReceiver<Report>, CancellationToken) {
        let transport = Arc::new(Counting { sends: AtomicUsize::new(0), gate: tokio::sync::Semaphore::new(0) });
        let (tx, reports) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let w = WorkerState {
            name: "log".into(),
            settings: Arc::new(std::sync::Mutex::new((transport.clone() as Arc<dyn Transport>, policy))),
            policy,
            store: Store::open(dir).unwrap(),
            wake: Arc::new(Notify::new()),
            reports: tx,
            clock: Arc::new(TokioClock::new(t)),
            stop: stop.clone(),
            abandon: CancellationToken::new(),
            unrecorded: Vec::new(),
            wakers: Wakers::default(),
            store_failures: 0,
            errors: LogThrottle::new(Duration::from_secs(30)),
        };
        (w, transport, reports, stop)
    }

    fn counting() -> Arc<Counting> {
        Arc::new(Counting { sends: AtomicUsize::new(0), gate: tokio::sync::Semaphore::new(0) })
    }

    /// A reload keeps the worker of a transport still configured: the send
    /// in flight finishes on the old transport, the rest of its batch goes
    /// through the new one without being handed back, and it is the same
    /// worker. A removed transport's worker finishes its send in flight and
    /// hands back the rest.
    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_the_workers_of_transports_still_configured() {
        let dir = tempfile::tempdir().unwrap();
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut store = ten_pending(dir.path(), t);
        let notes: Vec<_> = (0..3).map(|i| crate::store::tests::note(&format!("g{i}"), "gone", t)).collect();
        store.commit(&Turn { notifications: notes, ..Turn::default() }, t).unwrap();
        let (old, new, gone) = (counting(), counting(), counting());
        let (tx, _reports) = mpsc::unbounded_channel();
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new(t));
        let policy = RetryPolicy { concurrency: 1, ..RetryPolicy::default() };
        let transports = |pairs: Vec<(&str, Arc<Counting>)>| -> HashMap<String, (Arc<dyn Transport>, RetryPolicy)> {
            pairs.into_iter().map(|(n, c)| (n.to_string(), (c as Arc<dyn Transport>, policy))).collect()
        };
        let mut d = Dispatcher::start(
            transports(vec![("log", old.clone()), ("gone", gone.clone())]),
            dir.path(),
            tx.clone(),
            clock.clone(),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(store.leased(), 13, "both workers took their batches");
        let worker = d.workers["log"].wake.clone();

        let prepared = d.prepare(transports(vec![("log", new.clone())]), dir.path()).unwrap();
        let retired = d.apply(prepared, &tx, &clock);
        assert!(Arc::ptr_eq(&worker, &d.workers["log"].wake), "the same worker");
        assert_eq!(d.workers.len(), 1);
        old.gate.add_permits(100);
        new.gate.add_permits(100);
        gone.gate.add_permits(100);
        retired.stop(Duration::from_secs(5)).await;
        let status = |id: &str| store.outbox_entry(id).unwrap().unwrap().status;
        for _ in 0..1000 {
            if (0..10).all(|i| status(&format!("n{i}")) == OutboxStatus::Sent) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!((0..10).all(|i| status(&format!("n{i}")) == OutboxStatus::Sent));
        assert_eq!(old.sends.load(Ordering::SeqCst), 1, "the send in flight, on the old transport");
        assert_eq!(new.sends.load(Ordering::SeqCst), 9, "the rest of the batch, on the new one");
        assert_eq!(gone.sends.load(Ordering::SeqCst), 1, "the removed transport's send in flight");
        assert_eq!(
            [status("g0"), status("g1"), status("g2")],
            [OutboxStatus::Sent, OutboxStatus::Pending, OutboxStatus::Pending]
        );
        assert_eq!(store.leased(), 0, "nothing left leased");
        d.stop(Duration::from_secs(5)).await;
    }

    /// A worker told to stop (a reload replacing it) finishes the send in
    /// flight and hands back the rest of its batch at once, pending and
    /// unleased, rather than holding them until their lease runs out.
    #[tokio::test(start_paused = true)]
    async fn a_stopping_worker_hands_back_what_it_has_not_started() {
        let dir = tempfile::tempdir().unwrap();
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let store = ten_pending(dir.path(), t);
        let policy = RetryPolicy { concurrency: 1, ..RetryPolicy::default() };
        let (w, transport, _reports, stop) = worker(dir.path(), t, policy);
        let task = tokio::spawn(w.run());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(store.leased(), 10, "the batch is taken");
        stop.cancel();
        transport.gate.add_permits(1000);
        task.await.unwrap();
        assert_eq!(transport.sends.load(Ordering::SeqCst), 1, "only the send in flight went out");
        for i in 0..10 {
            let e = store.outbox_entry(&format!("n{i}")).unwrap().unwrap();
            match e.status {
                OutboxStatus::Sent => assert_eq!(i, 0, "the first was in flight"),
                OutboxStatus::Pending => assert_eq!(e.attempts, 0, "n{i} handed back untried"),
                other => panic!("n{i} is {other:?}"),
            }
        }
        assert_eq!(store.leased(), 0, "nothing is still leased");
        let mut again = Store::open(dir.path()).unwrap();
        let lease = t + chrono::Duration::minutes(1);
        assert_eq!(again.claim("log", t, lease, 100).unwrap().len(), 9, "due again at once");
    }

    /// The store refuses to record outcomes (another connection holds the
    /// write lock): the worker neither spins (on the paused clock a loop
    /// without waiting would never let the test go on) nor sends anything
    /// again, and once the store works every notification is recorded sent
    /// after exactly one attempt.
    #[tokio::test(start_paused = true)]
    async fn a_store_that_cannot_record_makes_the_worker_wait_not_resend() {
        let dir = tempfile::tempdir().unwrap();
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let store = ten_pending(dir.path(), t);
        let (w, transport, mut reports, stop) = worker(dir.path(), t, RetryPolicy::default());
        w.store.set_busy_timeout(Duration::ZERO).unwrap();
        let task = tokio::spawn(w.run());
        // Let the worker take the batch; then lock the database before any
        // send completes, so no outcome can be written.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let blocker = rusqlite::Connection::open(dir.path().join(crate::store::DB_FILE)).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        transport.gate.add_permits(1000);
        for _ in 0..10 {
            reports.recv().await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(transport.sends.load(Ordering::SeqCst), 10, "each sent once while the store refuses");
        assert_eq!(store.outbox_entry("n0").unwrap().unwrap().status, OutboxStatus::Pending, "not recorded yet");
        assert_eq!(store.leased(), 10, "and still leased: not handed out again");
        blocker.execute_batch("ROLLBACK").unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        for i in 0..10 {
            let e = store.outbox_entry(&format!("n{i}")).unwrap().unwrap();
            assert_eq!((e.status, e.attempts), (OutboxStatus::Sent, 1), "n{i}");
        }
        assert_eq!(transport.sends.load(Ordering::SeqCst), 10, "nothing sent again");
        stop.cancel();
        task.await.unwrap();
    }

    /// A popup transport whose recipient `alice` is nowhere to be found
    /// until `appears` sends have been made.
    struct Absentee {
        sends: std::sync::Mutex<Vec<tokio::time::Instant>>,
        appears: usize,
    }

    impl Transport for Absentee {
        fn kind(&self) -> &'static str {
            "messenger"
        }
        fn send<'a>(&'a self, _n: &'a crate::notify::Notification) -> BoxFuture<'a, Result<Delivered, TransportError>> {
            Box::pin(async move {
                let mut sends = self.sends.lock().unwrap();
                sends.push(tokio::time::Instant::now());
                if sends.len() < self.appears {
                    let message = "1 of 2 recipients nowhere to be found: alice: cannot find `ALICE`".to_string();
                    return Err(TransportError::Absent { message, recipients: vec!["alice".into()] });
                }
                Ok(Delivered { reply: Some("1 delivered: alice: delivered to alice at 10.0.0.1:139".into()) })
            })
        }
    }

    fn person(id: &str) -> crate::rules::Recipient {
        crate::rules::Recipient {
            id: id.into(),
            name: None,
            machine: None,
            user: Some(id.into()),
            email: Some(format!("{id}@example.org")),
            group: None,
        }
    }

    /// Popup `p1` to alice and bob, kept until `wait` after `t`, with a
    /// fallback through `mail` to both.
    fn kept_popup(t: DateTime<Utc>, wait: Duration) -> crate::notify::Notification {
        let mut p = crate::store::tests::note("p1", "popup", t);
        p.recipients = vec![person("alice"), person("bob")];
        let mut mail = crate::store::tests::note("p1-mail", "mail", t);
        mail.recipients = p.recipients.clone();
        p.offline = Some(crate::notify::Offline {
            until: t + chrono::Duration::from_std(wait).unwrap(),
            then: Some(Box::new(mail)),
        });
        p
    }

    /// Workers for `popup` (an [`Absentee`]) and `mail` (a [`Counting`]
    /// with no gate), after `p` was committed.
    fn popup_and_mail(
        dir: &Path,
        t: DateTime<Utc>,
        p: crate::notify::Notification,
        appears: usize,
    ) -> (Dispatcher, Arc<Absentee>, Arc<Counting>, mpsc::UnboundedReceiver<Report>) {
        let mut store = Store::open(dir).unwrap();
        store.commit(&Turn { notifications: vec![p], ..Turn::default() }, t).unwrap();
        let popup = Arc::new(Absentee { sends: std::sync::Mutex::new(Vec::new()), appears });
        let mail = counting();
        mail.gate.add_permits(1000);
        let policy = RetryPolicy {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(300),
            max_age: Duration::from_secs(3600),
            concurrency: 1,
            poll: Duration::from_secs(20),
        };
        let transports: HashMap<String, (Arc<dyn Transport>, RetryPolicy)> = [
            ("popup".to_string(), (popup.clone() as Arc<dyn Transport>, policy)),
            ("mail".to_string(), (mail.clone() as Arc<dyn Transport>, policy)),
        ]
        .into();
        let (tx, reports) = mpsc::unbounded_channel();
        let d = Dispatcher::start(transports, dir, tx, Arc::new(TokioClock::new(t))).unwrap();
        (d, popup, mail, reports)
    }

    /// While alice is nowhere, her popup is looked for again at the
    /// backoff's pace but never more than `poll` apart (not the 5 minutes
    /// the backoff reaches); once she appears it is delivered, once, and
    /// the fallback never goes out. Each wait is reported as waiting, not
    /// as a failing transport.
    #[tokio::test(start_paused = true)]
    async fn a_popup_for_someone_nowhere_is_looked_for_every_poll_until_she_appears() {
        let dir = tempfile::tempdir().unwrap();
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let (d, popup, mail, mut reports) = popup_and_mail(dir.path(), t, kept_popup(t, Duration::from_secs(1800)), 12);
        let start = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(600)).await;
        let store = Store::open(dir.path()).unwrap();
        let e = store.outbox_entry("p1").unwrap().unwrap();
        assert_eq!((e.status, e.attempts), (OutboxStatus::Sent, 12));
        let sends = popup.sends.lock().unwrap().clone();
        let age = humantime::format_duration(Duration::from_secs((sends[11] - start).as_secs()));
        let reply = e.reply.unwrap();
        assert!(reply.ends_with(&format!("at 10.0.0.1:139 (attempt 12, {age} after it was decided)")), "{reply}");
        assert_eq!(sends.len(), 12, "delivered once, then never sent again");
        let gaps: Vec<Duration> = sends.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g <= Duration::from_secs(20)), "{gaps:?}");
        assert!(sends[11] - start < Duration::from_secs(11 * 20), "{gaps:?}");
        assert!(store.outbox_entry("p1-mail").unwrap().is_none(), "no fallback queued");
        assert_eq!(mail.sends.load(Ordering::SeqCst), 0);
        let mut outcomes = Vec::new();
        while let Ok(r) = reports.try_recv() {
            outcomes.push(r.outcome);
        }
        assert_eq!(outcomes.len(), 12);
        assert!(outcomes[..11].iter().all(|o| matches!(o, Outcome::Waiting { .. })), "{outcomes:?}");
        assert!(matches!(outcomes[11], Outcome::Sent(_)), "{outcomes:?}");
        d.stop(Duration::from_secs(5)).await;
    }

    /// Alice never appears: at the deadline the popup is given up, and in
    /// the same write its fallback is queued for her alone (bob was
    /// reached), and the mail worker woken at once (idle, it would look
    /// again only after a minute). History says what happened.
    #[tokio::test(start_paused = true)]
    async fn a_popup_for_someone_who_never_appears_goes_by_mail_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let wait = Duration::from_secs(150);
        let (d, popup, mail, mut reports) = popup_and_mail(dir.path(), t, kept_popup(t, wait), usize::MAX);
        let start = tokio::time::Instant::now();
        tokio::time::sleep(wait - Duration::from_secs(1)).await;
        let store = Store::open(dir.path()).unwrap();
        let e = store.outbox_entry("p1").unwrap().unwrap();
        assert_eq!(e.status, OutboxStatus::Pending);
        assert!(e.last_error.as_deref().unwrap().contains("waiting for them until"), "{e:?}");
        assert!(store.outbox_entry("p1-mail").unwrap().is_none(), "not before the deadline");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let last = *popup.sends.lock().unwrap().last().unwrap();
        assert_eq!(last - start, wait, "a last look at the deadline");
        let e = store.outbox_entry("p1").unwrap().unwrap();
        assert_eq!(e.status, OutboxStatus::Expired);
        let why = e.last_error.unwrap();
        assert!(why.contains("alice: cannot find `ALICE`; waited 2m 30s, sent by `mail` instead"), "{why}");
        let f = store.outbox_entry("p1-mail").unwrap().expect("the fallback is queued");
        let ids: Vec<&str> = f.notification.recipients.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["alice"], "only those still nowhere");
        assert_eq!(f.status, OutboxStatus::Sent);
        assert_eq!(mail.sends.load(Ordering::SeqCst), 1, "sent at once, not at the mail worker's next look");
        let mut outcomes = Vec::new();
        while let Ok(r) = reports.try_recv() {
            outcomes.push((r.transport, r.outcome));
        }
        assert!(
            outcomes.iter().any(|(t, o)| t == "popup" && matches!(o, Outcome::Forwarded { to, .. } if to == "mail")),
            "{outcomes:?}"
        );
        assert!(outcomes.iter().any(|(t, o)| t == "mail" && matches!(o, Outcome::Sent(_))), "{outcomes:?}");
        d.stop(Duration::from_secs(5)).await;
    }

    /// Without a fallback, a popup nobody claimed expires at its deadline,
    /// reported as unclaimed (not as a failing transport).
    #[tokio::test(start_paused = true)]
    async fn a_popup_nobody_claims_without_a_fallback_expires_unclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut p = kept_popup(t, Duration::from_secs(90));
        p.offline.as_mut().unwrap().then = None;
        let (d, _popup, mail, mut reports) = popup_and_mail(dir.path(), t, p, usize::MAX);
        tokio::time::sleep(Duration::from_secs(91)).await;
        let store = Store::open(dir.path()).unwrap();
        let e = store.outbox_entry("p1").unwrap().unwrap();
        assert_eq!(e.status, OutboxStatus::Expired);
        assert!(e.last_error.as_deref().unwrap().starts_with("not delivered within 1m 30s: "), "{e:?}");
        assert_eq!(mail.sends.load(Ordering::SeqCst), 0);
        let mut last = None;
        while let Ok(r) = reports.try_recv() {
            last = Some(r.outcome);
        }
        assert!(matches!(last, Some(Outcome::Unclaimed(_))), "{last:?}");
        d.stop(Duration::from_secs(5)).await;
    }
}
