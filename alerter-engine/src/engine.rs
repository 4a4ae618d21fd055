//! The engine: one state machine around the router and the notice
//! scheduler.
//!
//! Inputs are events (and sources' saved states), ticks, delivery reports
//! and reconfiguration, each with `now`. The engine routes, renders and
//! collects what it decided into a [`Turn`]: alert changes, notifications,
//! audit records, sources' states and notice positions, which the caller
//! commits in one transaction before anything is delivered. The caller
//! asks [`Engine::next_wakeup`] when to tick next. Nothing here does I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{debug, error, info, warn};

use crate::budget::{Budgets, Ledger, LedgerChanges, Window};
use crate::event::{ALERTER_SOURCE, Event, Fingerprint, Inbound, Severity};
use crate::notices::{Notice, NoticeKey, NoticeScheduler, When};
use crate::notify::{
    Notification, RenderCx, TransportInfo, notice_notifications, plain_notifications, render_dispatch,
};
use crate::rules::router::{Alert, AlertChange, Kept, Output, Router};
use crate::rules::{Matcher, Rule, Silence, Target};
use crate::template::{NOTICE_FALLBACK, Templates};

/// What the engine needs of a configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This machine's name in notifications and the alerter's own events.
    pub name: String,
    pub workgroup: String,
    pub rules: Vec<Arc<Rule>>,
    pub silences: Vec<Silence>,
    pub notices: Vec<Arc<Notice>>,
    pub templates: Arc<Templates>,
    /// The configured transports, as rendering needs to know them.
    pub transports: BTreeMap<String, TransportInfo>,
    /// How long history is kept: the engine asks for older history to be
    /// pruned every [`PRUNE_EVERY`].
    pub retention: std::time::Duration,
    /// Per-person budgets (see [`crate::budget`]).
    pub budgets: Arc<Budgets>,
    /// The zone times in digests are shown in (`alerter.timezone`).
    pub timezone: chrono_tz::Tz,
}

/// How often the engine asks for old history to be pruned.
pub const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(10 * 60);

impl EngineConfig {
    pub fn render_cx(&self) -> RenderCx<'_> {
        RenderCx {
            templates: &self.templates,
            transports: &self.transports,
            alerter_name: &self.name,
            workgroup: &self.workgroup,
        }
    }
}

/// One audit trail entry (what was decided and not sent, and why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub time: DateTime<Utc>,
    pub rule: String,
    pub fingerprint: Option<Fingerprint>,
    pub transport: Option<String>,
    pub notification: Option<String>,
    /// `sent`, `failed`, `suppressed`.
    pub status: String,
    pub reason: Option<String>,
    pub summary: Option<String>,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent(Option<String>),
    Retrying {
        error: String,
        attempts: u32,
    },
    Failed(String),
    Expired(String),
    /// Recipients are nowhere to be found (not logged on, machine off):
    /// kept, and looked for again soon. Not a failure of the transport.
    Waiting {
        error: String,
        attempts: u32,
    },
    /// They stayed nowhere: given up, and sent through transport `to`
    /// instead.
    Forwarded {
        why: String,
        to: String,
    },
    /// They stayed nowhere, and there was nothing else to send it through.
    Unclaimed(String),
}

/// A delivery outcome reported back to the engine: what it needs of the
/// notification, not the notification (a storm's reports must not hold a
/// copy of every message until the engine gets to them).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub transport: String,
    pub rule: String,
    /// The notification is itself about failing deliveries.
    pub about_delivery: bool,
    pub outcome: Outcome,
    pub at: DateTime<Utc>,
    /// When the notification was made (for the delivery latency).
    pub created_at: DateTime<Utc>,
}

impl Delivery {
    pub fn new(n: &Notification, outcome: Outcome, at: DateTime<Utc>) -> Delivery {
        Delivery {
            id: n.id.clone(),
            transport: n.transport.clone(),
            rule: n.rule.clone(),
            about_delivery: n
                .alerts
                .iter()
                .any(|a| a.labels.get("event").map(String::as_str) == Some("delivery_failing")),
            outcome,
            at,
            created_at: n.created_at,
        }
    }
}

/// What the engine decided since the last turn was taken, to be committed
/// in one transaction. A turn that could not be committed is kept and
/// merged with the next ([`Turn::absorb`]), so nothing it holds is lost and
/// sources' states never run ahead of what was committed.
#[derive(Debug, Default)]
pub struct Turn {
    pub changes: Vec<AlertChange>,
    pub notifications: Vec<Notification>,
    pub audit: Vec<AuditRecord>,
    /// Sources' latest saved states, behind the events handled this turn.
    pub states: HashMap<String, String>,
    /// Notice positions that moved (see [`NoticeScheduler::history`]).
    pub notice_positions: HashMap<NoticeKey, DateTime<Utc>>,
    /// Forget finished history from before this time (retention).
    pub prune_before: Option<DateTime<Utc>>,
    /// Silences set or changed at run time, to keep in the store.
    pub silences: Vec<Silence>,
    /// Notices set at run time that were added or are gone.
    pub notices: Vec<NoticeChange>,
    /// Budget windows that changed, and the digest counter.
    pub budget: LedgerChanges,
}

/// A notice set at run time, added (to keep in the store) or gone
/// (cancelled, or sent in full): the store forgets it and its positions.
#[derive(Debug, Clone)]
pub enum NoticeChange {
    Set(Arc<Notice>),
    Gone(String),
}

impl Turn {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.notifications.is_empty()
            && self.audit.is_empty()
            && self.states.is_empty()
            && self.notice_positions.is_empty()
            && self.prune_before.is_none()
            && self.silences.is_empty()
            && self.notices.is_empty()
            && self.budget.is_empty()
    }

    /// Appends a later turn to this one. Alert changes are applied in
    /// order, so a later change of the same alert wins; states and
    /// positions are replaced by the later ones.
    pub fn absorb(&mut self, later: Turn) {
        self.changes.extend(later.changes);
        self.notifications.extend(later.notifications);
        self.audit.extend(later.audit);
        self.states.extend(later.states);
        self.notice_positions.extend(later.notice_positions);
        self.prune_before = self.prune_before.max(later.prune_before);
        self.silences.extend(later.silences);
        self.notices.extend(later.notices);
        self.budget.absorb(later.budget);
    }

    /// The transports that have new notifications in this turn.
    pub fn transports(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for n in &self.notifications {
            if !out.contains(&n.transport.as_str()) {
                out.push(&n.transport);
            }
        }
        out
    }
}

/// " (reminders 1 hour, 15 minutes ahead)", or nothing.
fn reminders(offsets: &[std::time::Duration]) -> String {
    let list: Vec<String> =
        offsets.iter().filter(|o| !o.is_zero()).map(|o| crate::notices::human_duration(*o)).collect();
    if list.is_empty() { String::new() } else { format!(" (reminders {} ahead)", list.join(", ")) }
}

/// "* via popup; alice, bob via mail".
pub fn describe_targets(targets: &[Target]) -> String {
    let parts: Vec<String> = targets
        .iter()
        .map(|t| {
            let ids: Vec<&str> = t.recipients.iter().map(|r| r.id.as_str()).collect();
            format!("{} via {}", ids.join(", "), t.transport)
        })
        .collect();
    parts.join("; ")
}

/// See the module docs.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    router: Router,
    notices: NoticeScheduler,
    /// Every notice position known, including those of notices a reload
    /// removed, so a notice that comes back is still known.
    positions: HashMap<NoticeKey, DateTime<Utc>>,
    /// Per transport, failures since its last success.
    failing: HashMap<String, usize>,
    out: Vec<Output>,
    turn: Turn,
    /// When old history is next pruned.
    next_prune: DateTime<Utc>,
    /// Silences set at run time (the config's are in `cfg`), including
    /// those ended less than [`KEEP_ENDED`] ago, for listing.
    runtime_silences: Vec<Silence>,
    /// Budget windows and what they folded.
    ledger: Ledger,
}

/// How long a silence set at run time is still listed after it ended.
pub const KEEP_ENDED: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// How many silences set at run time may be in force at once: a client
/// with the `operate` scope must not be able to slow every event down.
pub const MAX_SILENCES: usize = 10_000;

/// How many notices set at run time may wait to go out at once.
pub const MAX_NOTICES: usize = 1000;

/// Why a change asked of the engine was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeError {
    /// Nothing has this id.
    NotFound(String),
    /// The change makes no sense (the message says why).
    Invalid(String),
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeError::NotFound(m) | ChangeError::Invalid(m) => f.write_str(m),
        }
    }
}

impl Engine {
    /// An engine restored from what was committed: alert state and notice
    /// positions. The positions of notices first known now are part of the
    /// first turn, so they are stored even before anything fires.
    pub fn new(
        cfg: EngineConfig,
        alerts: Vec<(String, Fingerprint, Kept)>,
        positions: HashMap<NoticeKey, DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Engine {
        let mut router = Router::new(cfg.rules.clone(), cfg.silences.clone());
        router.restore(alerts, now);
        let notices = NoticeScheduler::new(cfg.notices.clone(), &positions, now);
        let mut engine = Engine {
            cfg,
            router,
            notices,
            positions,
            failing: HashMap::new(),
            out: Vec::new(),
            turn: Turn::default(),
            next_prune: now,
            runtime_silences: Vec::new(),
            ledger: Ledger::default(),
        };
        engine.note_positions();
        engine
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn notices(&self) -> &NoticeScheduler {
        &self.notices
    }

    /// Failures of each transport since its last success (failing ones only).
    pub fn failing(&self) -> &HashMap<String, usize> {
        &self.failing
    }

    /// Swaps in a new configuration: rules keep their alerts where they
    /// still exist, notices keep their positions, silences set at run time
    /// stay beside the config's.
    pub fn reconfigure(&mut self, cfg: EngineConfig, now: DateTime<Utc>) {
        self.flush();
        let silences = cfg.silences.iter().chain(&self.runtime_silences).cloned().collect();
        self.router.reconfigure(cfg.rules.clone(), silences, now);
        let set_at_run_time = self.notices.notices().filter(|n| n.set.is_some()).cloned();
        let notices = cfg.notices.iter().cloned().chain(set_at_run_time).collect();
        self.notices = NoticeScheduler::new(notices, &self.positions, now);
        self.cfg = cfg;
        self.ledger.retain_transports(&self.cfg.budgets);
        self.note_positions();
    }

    /// Budget windows kept in the store (after a restart), with the next
    /// digest number: their digests still go out when they end.
    pub fn restore_budgets(&mut self, windows: Vec<Window>, next_digest: u64) {
        self.ledger = Ledger::restore(windows, next_digest);
        self.ledger.retain_transports(&self.cfg.budgets);
    }

    /// The open budget windows.
    pub fn budget_windows(&self) -> impl Iterator<Item = &Window> {
        self.ledger.windows()
    }

    /// Silences set at run time that were kept in the store (after a
    /// restart); those ended more than [`KEEP_ENDED`] ago are left out.
    pub fn restore_silences(&mut self, silences: Vec<Silence>, now: DateTime<Utc>) {
        self.runtime_silences = silences;
        self.forget_ended(now);
        self.apply_silences(now);
    }

    /// Every silence: the config's first, then those set at run time
    /// (ended ones included, for [`KEEP_ENDED`]).
    pub fn silences(&self) -> impl Iterator<Item = &Silence> {
        self.cfg.silences.iter().chain(&self.runtime_silences)
    }

    /// Sets a silence at run time. It is in force from this call on, and
    /// in the turn (with an audit record naming who set it) to be stored.
    pub fn add_silence(&mut self, silence: Silence, now: DateTime<Utc>) -> Result<(), ChangeError> {
        let Some(by) = silence.created_by.clone() else {
            return Err(ChangeError::Invalid("a silence set at run time needs its creator".into()));
        };
        if silence.ends <= now {
            return Err(ChangeError::Invalid("the silence would end before it starts".into()));
        }
        if self.silences().any(|s| s.id == silence.id) {
            return Err(ChangeError::Invalid(format!("a silence `{}` exists already", silence.id)));
        }
        self.forget_ended(now);
        if self.runtime_silences.iter().filter(|s| s.ends > now).count() >= MAX_SILENCES {
            return Err(ChangeError::Invalid(format!(
                "{MAX_SILENCES} silences are in force already; expire some first"
            )));
        }
        let until = match silence.starts {
            Some(s) if s > now => format!("from {} until {}", s.to_rfc3339(), silence.ends.to_rfc3339()),
            _ => format!("until {}", silence.ends.to_rfc3339()),
        };
        self.record_change(
            "silence",
            &by,
            silence.comment.as_deref(),
            format!("silence {} set: {} {until}", silence.id, silence.matchers.join(" ")),
            now,
        );
        self.turn.silences.push(silence.clone());
        self.runtime_silences.push(silence);
        self.apply_silences(now);
        Ok(())
    }

    /// Ends a silence set at run time now; what it held back is notified as
    /// its rule's timing allows.
    pub fn expire_silence(&mut self, id: &str, by: &str, now: DateTime<Utc>) -> Result<Silence, ChangeError> {
        if self.cfg.silences.iter().any(|s| s.id == id) {
            return Err(ChangeError::Invalid(format!(
                "silence `{id}` is in the config file; remove it there and reload"
            )));
        }
        let Some(s) = self.runtime_silences.iter_mut().find(|s| s.id == id) else {
            return Err(ChangeError::NotFound(format!("no silence `{id}`")));
        };
        if s.ends <= now {
            return Err(ChangeError::Invalid(format!("silence `{id}` has ended already")));
        }
        s.ends = now;
        let s = s.clone();
        self.record_change("silence", by, None, format!("silence {id} expired"), now);
        self.turn.silences.push(s.clone());
        self.apply_silences(now);
        Ok(s)
    }

    /// Acknowledges firing alerts: those whose id (fingerprint) begins
    /// with one of `ids`, and those `matcher` matches. Their repeats stop
    /// for every recipient until their severity rises or they resolve.
    /// Each is recorded with who and why.
    pub fn acknowledge(
        &mut self,
        ids: &[String],
        matcher: Option<&Matcher>,
        by: &str,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Alert)>, ChangeError> {
        if ids.iter().any(|id| id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(ChangeError::Invalid(
                "an alert id is its fingerprint, 16 hex digits (the first 4 or more will do), as `alerter alerts` shows".into(),
            ));
        }
        let ids: Vec<String> = ids.iter().map(|i| i.to_ascii_lowercase()).collect();
        self.acknowledge_where(
            |rule, a| {
                let id = a.fingerprint.to_string();
                ids.iter().any(|p| id.starts_with(p.as_str()))
                    || matcher.is_some_and(|m| m.matches_in(&a.event, Some(rule)))
            },
            by,
            comment,
            now,
        )
    }

    /// Acknowledges the alerts a notification made at `notified_at` was
    /// about, in the episode it told of: an alert that resolved and fired
    /// again since is a new one, which the old popup does not acknowledge.
    pub fn acknowledge_notified(
        &mut self,
        alerts: &[Fingerprint],
        notified_at: DateTime<Utc>,
        by: &str,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Alert)>, ChangeError> {
        self.acknowledge_where(
            |_, a| alerts.contains(&a.fingerprint) && a.fired_at.unwrap_or(a.since) <= notified_at,
            by,
            comment,
            now,
        )
    }

    fn acknowledge_where(
        &mut self,
        pred: impl Fn(&str, &Alert) -> bool,
        by: &str,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Alert)>, ChangeError> {
        let acked = self.router.acknowledge(pred, by, comment, now);
        if acked.is_empty() {
            return Err(ChangeError::NotFound("no firing alert matches; `alerter alerts` lists them".into()));
        }
        for (rule, a) in &acked {
            let why = match comment {
                Some(c) if !c.is_empty() => format!("by {by}: {c}"),
                _ => format!("by {by}"),
            };
            info!(rule = %rule, alert = %a.fingerprint, "acknowledged {why}");
            self.turn.audit.push(AuditRecord {
                time: now,
                rule: rule.clone(),
                fingerprint: Some(a.fingerprint),
                transport: None,
                notification: None,
                status: "ack".into(),
                reason: Some(why),
                summary: Some(format!("acknowledged: {}", a.event.summary)),
            });
        }
        Ok(acked)
    }

    /// Notices set at run time that were kept in the store (after a
    /// restart), with their positions as the engine was made with: what
    /// a restart missed by more than the grace minute is skipped, and a
    /// notice with nothing left to send is forgotten.
    pub fn restore_notices(&mut self, notices: Vec<Notice>, now: DateTime<Utc>) {
        for n in notices {
            self.notices.add(Arc::new(n), &self.positions, now);
        }
        self.note_positions();
        self.forget_finished();
    }

    /// Sets a one-off notice at run time (its `set` names the creator). It
    /// is in the turn, with an audit record, to be stored; reminders whose
    /// time has passed are left out.
    pub fn add_notice(&mut self, notice: Notice, now: DateTime<Utc>) -> Result<Arc<Notice>, ChangeError> {
        let (When::Once(at), Some(set)) = (&notice.when, &notice.set) else {
            return Err(ChangeError::Invalid("a notice set at run time happens once and needs its creator".into()));
        };
        if self.notices.get(&notice.name).is_some() {
            return Err(ChangeError::Invalid(format!("a notice `{}` exists already", notice.name)));
        }
        if self.notices.notices().filter(|n| n.set.is_some()).count() >= MAX_NOTICES {
            return Err(ChangeError::Invalid(format!("{MAX_NOTICES} notices are waiting already; cancel some first")));
        }
        let local = at.with_timezone(&notice.tz).format("%Y-%m-%d %H:%M:%S %Z");
        let summary = format!(
            "notice {} set: at {local}{}, to {}: {}",
            notice.name,
            reminders(&notice.offsets),
            describe_targets(&notice.targets),
            set.text
        );
        let by = set.by.clone();
        let n = Arc::new(notice);
        // A fresh id has no positions: it starts from now.
        self.notices.add(n.clone(), &HashMap::new(), now);
        if self.notices.pending(&n.name).is_empty() {
            self.notices.remove(&n.name);
            return Err(ChangeError::Invalid("the notice's time has passed".into()));
        }
        self.record_change("notice", &by, None, summary, now);
        self.turn.notices.push(NoticeChange::Set(n.clone()));
        self.note_positions();
        Ok(n)
    }

    /// Cancels a notice set at run time: nothing more of it goes out.
    pub fn cancel_notice(&mut self, id: &str, by: &str, now: DateTime<Utc>) -> Result<Arc<Notice>, ChangeError> {
        match self.notices.get(id) {
            None => {
                return Err(ChangeError::NotFound(format!("no notice `{id}`; `alerter notice list` lists them")));
            }
            Some(n) if n.set.is_none() => {
                return Err(ChangeError::Invalid(format!(
                    "notice `{id}` is in the config file; remove it there and reload"
                )));
            }
            Some(_) => {}
        }
        let n = self.notices.remove(id).expect("just found");
        self.forget_notice(id);
        let text = n.set.as_ref().map_or("", |s| s.text.as_str());
        self.record_change("notice", by, None, format!("notice {id} cancelled: {text}"), now);
        Ok(n)
    }

    /// Notices set at run time that will not fire again are forgotten.
    fn forget_finished(&mut self) {
        for name in self.notices.finished() {
            if self.notices.get(&name).is_some_and(|n| n.set.is_some()) {
                debug!(notice = %name, "sent in full");
                self.notices.remove(&name);
                self.forget_notice(&name);
            }
        }
    }

    fn forget_notice(&mut self, id: &str) {
        self.positions.retain(|(k, _), _| k != id);
        self.turn.notice_positions.retain(|(k, _), _| k != id);
        self.turn.notices.push(NoticeChange::Gone(id.to_string()));
    }

    fn forget_ended(&mut self, now: DateTime<Utc>) {
        let keep = chrono::Duration::from_std(KEEP_ENDED).expect("small");
        self.runtime_silences.retain(|s| s.ends + keep > now);
    }

    fn apply_silences(&mut self, now: DateTime<Utc>) {
        let all = self.cfg.silences.iter().chain(&self.runtime_silences).cloned().collect();
        self.router.set_silences(all, now);
    }

    /// Queues a test notification through one transport: rule `test:ID`,
    /// status `test`, in the turn like any notification.
    pub fn test_notification(&mut self, id: &str, target: Target, title: &str, text: &str, now: DateTime<Utc>) {
        self.turn.notifications.extend(plain_notifications(
            &format!("test:{id}"),
            "test",
            title,
            text,
            std::slice::from_ref(&target),
            now,
        ));
    }

    /// An audit record of a change (made through the control API, or a
    /// reload): what, by whom, why.
    pub fn record_change(&mut self, kind: &str, by: &str, why: Option<&str>, summary: String, now: DateTime<Utc>) {
        info!(by, "{summary}");
        let reason = match why {
            Some(w) if !w.is_empty() => format!("by {by}: {w}"),
            _ => format!("by {by}"),
        };
        self.turn.audit.push(AuditRecord {
            time: now,
            rule: String::new(),
            fingerprint: None,
            transport: None,
            notification: None,
            status: kind.into(),
            reason: Some(reason),
            summary: Some(summary),
        });
    }

    /// An event from a source, or a source's saved state.
    pub fn handle(&mut self, m: Inbound, now: DateTime<Utc>) {
        match m {
            Inbound::Event(e) => self.router.handle_into(e, now, &mut self.out),
            Inbound::State { source, state } => {
                self.turn.states.insert(source, state);
            }
        }
    }

    /// Routes one event (the alerter's own, say).
    pub fn raise(&mut self, e: Event, now: DateTime<Utc>) {
        self.router.handle_into(e, now, &mut self.out);
    }

    /// When [`Engine::tick`] should next be called.
    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        [self.router.next_wakeup(), self.notices.next_wakeup(), self.ledger.next_wakeup(), Some(self.next_prune)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the router's timers, the notices due at `now`, and asks for
    /// history older than the retention to be pruned when that is due.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        // Decisions made before now meet the windows they were made in.
        self.flush();
        self.ledger.due(now, self.cfg.timezone, &mut self.turn.notifications);
        self.router.tick_into(now, &mut self.out);
        if now >= self.next_prune {
            let keep = chrono::Duration::from_std(self.cfg.retention).unwrap_or(chrono::Duration::MAX);
            self.turn.prune_before = now.checked_sub_signed(keep);
            self.next_prune = now + chrono::Duration::from_std(PRUNE_EVERY).expect("small");
        }
        let due = self.notices.due(now);
        if due.is_empty() {
            return;
        }
        for f in due {
            let message = match &f.notice.set {
                Some(set) => set.text.clone(),
                None => {
                    let (message, err) =
                        self.cfg.templates.render(&[&f.notice.template_name()], NOTICE_FALLBACK, &f.context());
                    if let Some(err) = err {
                        warn!("notice `{}`: {err}", f.notice.name);
                    }
                    message
                }
            };
            let (title, text) = f.title_and_text(&message);
            self.turn.notifications.extend(notice_notifications(
                &f.notice.name,
                &title,
                &text,
                &f.notice.targets,
                f.fire_at,
                &self.cfg.render_cx(),
            ));
        }
        self.note_positions();
        self.forget_finished();
    }

    /// Raises (and resolves) the `alerter` event about failing deliveries.
    ///
    /// A transport is "failing" when a notification failed for good,
    /// expired, or needed a third attempt; the first success clears it. A
    /// notification that is itself about failing deliveries does not raise
    /// another, which would only loop.
    pub fn delivered(&mut self, r: &Delivery, now: DateTime<Utc>) {
        let n = r;
        let key = format!("delivery:{}", n.transport);
        let name = self.cfg.name.clone();
        let event = |severity: Severity, summary: String| {
            Event::new(ALERTER_SOURCE, &name, severity, summary, now)
                .with_label("event", "delivery_failing")
                .with_label("transport", &n.transport)
                .with_key(key.clone())
        };
        let why = match &r.outcome {
            Outcome::Sent(_) => {
                if self.failing.remove(&n.transport).is_some() {
                    let e = event(Severity::Resolved, format!("deliveries via `{}` work again", n.transport));
                    self.router.handle_into(e, now, &mut self.out);
                }
                return;
            }
            Outcome::Retrying { attempts, .. } if *attempts < 3 => return,
            // Someone not being there says nothing about the transport.
            Outcome::Waiting { .. } | Outcome::Forwarded { .. } | Outcome::Unclaimed(_) => return,
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
        *self.failing.entry(n.transport.clone()).or_default() += 1;
        if !n.about_delivery {
            let e = event(Severity::Warning, format!("deliveries via `{}` are failing: {why}", n.transport));
            self.router.handle_into(e, now, &mut self.out);
        }
    }

    /// Everything decided since the last call, to commit as one.
    pub fn take_turn(&mut self) -> Turn {
        self.flush();
        self.turn.changes = self.router.take_changes();
        self.turn.budget.absorb(self.ledger.take_changes());
        std::mem::take(&mut self.turn)
    }

    /// Whether anything is waiting to be taken.
    pub fn has_turn(&self) -> bool {
        !self.out.is_empty() || !self.turn.is_empty() || self.router.has_changes() || self.ledger.has_changes()
    }

    fn note_positions(&mut self) {
        for (k, v) in self.notices.history() {
            self.positions.insert(k.clone(), *v);
            self.turn.notice_positions.insert(k.clone(), *v);
        }
    }

    /// Turns router outputs into notifications and audit records.
    fn flush(&mut self) {
        let cx = self.cfg.render_cx();
        for o in self.out.drain(..) {
            match o {
                Output::Notify(d) => {
                    let (notifications, errors) = render_dispatch(&d, &cx);
                    for e in errors {
                        warn!(rule = %d.rule.name, "{e}; used the built-in template");
                    }
                    for n in notifications {
                        debug!(id = %n.id, transport = %n.transport, rule = %n.rule, "queued");
                        self.ledger.admit(
                            n,
                            d.rule.budget,
                            &self.cfg.budgets,
                            self.cfg.timezone,
                            &mut self.turn.notifications,
                            &mut self.turn.audit,
                        );
                    }
                }
                Output::Suppressed(s) => {
                    info!(rule = %s.rule, alert = %s.fingerprint, "not notified: {}", s.reason);
                    self.turn.audit.push(AuditRecord {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notices::SetNotice;
    use crate::rules::{Recipient, Target};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn engine(now: DateTime<Utc>, positions: HashMap<NoticeKey, DateTime<Utc>>) -> Engine {
        let cfg = EngineConfig {
            name: "FILESERVER".into(),
            workgroup: "WG".into(),
            rules: Vec::new(),
            silences: Vec::new(),
            notices: Vec::new(),
            templates: Arc::new(Templates::default()),
            transports: BTreeMap::new(),
            retention: std::time::Duration::from_secs(86_400),
            budgets: Arc::new(Budgets::default()),
            timezone: chrono_tz::UTC,
        };
        Engine::new(cfg, Vec::new(), positions, now)
    }

    /// Down at 18:00, reminded 1 h and 15 min ahead, to the workgroup.
    fn maintenance(id: &str, at: &str, set_at: DateTime<Utc>) -> Notice {
        Notice {
            name: id.into(),
            when: When::Once(utc(at)),
            tz: "Europe/Berlin".parse().unwrap(),
            offsets: vec![
                std::time::Duration::from_secs(3600),
                std::time::Duration::from_secs(900),
                std::time::Duration::ZERO,
            ],
            targets: vec![Target { transport: "popup".into(), recipients: vec![Recipient::workgroup()] }],
            set: Some(SetNotice {
                title: "File server".into(),
                text: "The file server goes down for maintenance".into(),
                by: "user:root".into(),
                at: set_at,
            }),
        }
    }

    /// Ticks at every wake-up up to `until`: (when, text) of each popup.
    fn run(e: &mut Engine, until: DateTime<Utc>) -> Vec<(DateTime<Utc>, String)> {
        let mut out = Vec::new();
        while let Some(w) = e.next_wakeup().filter(|w| *w <= until) {
            e.tick(w);
            out.extend(e.take_turn().notifications.into_iter().map(|n| (n.created_at, n.text)));
        }
        out
    }

    #[test]
    fn notices_and_test_notifications_are_never_folded_by_a_budget() {
        use crate::budget::{Allowance, Class, Limit, TransportBudget};
        let now = utc("2026-12-05T15:00:00Z");
        let mut e = engine(now, HashMap::new());
        let mut budgets = Budgets::default();
        let one_a_day = Limit { count: 1, per: std::time::Duration::from_secs(86_400) };
        budgets.transports.insert(
            "popup".into(),
            TransportBudget { class: Class::Popups, allowance: Some(Allowance::Limited(one_a_day)) },
        );
        e.cfg.budgets = Arc::new(budgets);
        e.add_notice(maintenance("n-1", "2026-12-05T17:00:00Z", now), now).unwrap();
        e.take_turn();
        let alice = Recipient {
            id: "alice".into(),
            name: None,
            machine: Some("ALICE".into()),
            user: None,
            email: None,
            group: None,
        };
        for i in 0..3 {
            e.test_notification(
                &format!("t{i}"),
                Target { transport: "popup".into(), recipients: vec![alice.clone()] },
                "test",
                "test",
                now,
            );
        }
        let turn = e.take_turn();
        assert_eq!(turn.notifications.len(), 3, "every test notification");
        assert!(turn.audit.is_empty());
        assert_eq!(run(&mut e, utc("2026-12-06T00:00:00Z")).len(), 3, "the notice, both reminders");
        assert_eq!(e.budget_windows().count(), 0, "nothing was counted");
    }

    #[test]
    fn a_notice_set_at_run_time_sends_each_reminder_and_itself_once_then_is_forgotten() {
        let now = utc("2026-12-05T15:00:00Z");
        let mut e = engine(now, HashMap::new());
        e.add_notice(maintenance("n-1", "2026-12-05T17:00:00Z", now), now).unwrap();
        let turn = e.take_turn();
        assert!(matches!(turn.notices.as_slice(), [NoticeChange::Set(n)] if n.name == "n-1"));
        let audit = &turn.audit[0];
        assert_eq!(audit.status, "notice");
        assert_eq!(audit.reason.as_deref(), Some("by user:root"));
        assert_eq!(
            audit.summary.as_deref(),
            Some(
                "notice n-1 set: at 2026-12-05 18:00:00 CET (reminders 1 hour, 15 minutes ahead), to * via popup: The file server goes down for maintenance"
            )
        );
        assert_eq!(turn.notice_positions.len(), 3, "its positions are stored from the start");
        let sent = run(&mut e, utc("2026-12-06T00:00:00Z"));
        let text = "The file server goes down for maintenance";
        assert_eq!(
            sent,
            vec![
                (utc("2026-12-05T16:00:00Z"), format!("In 1 hour: {text}")),
                (utc("2026-12-05T16:45:00Z"), format!("In 15 minutes: {text}")),
                (utc("2026-12-05T17:00:00Z"), text.to_string()),
            ]
        );
        assert!(e.notices().get("n-1").is_none(), "sent in full, so forgotten");
        assert!(!e.positions.keys().any(|(k, _)| k == "n-1"));
    }

    #[test]
    fn reminders_already_past_are_left_out_and_a_past_time_is_refused() {
        let now = utc("2026-12-05T16:30:00Z");
        let mut e = engine(now, HashMap::new());
        e.add_notice(maintenance("n-1", "2026-12-05T17:00:00Z", now), now).unwrap();
        let aheads: Vec<u64> = e.notices().pending("n-1").iter().map(|(_, _, a)| a.as_secs()).collect();
        assert_eq!(aheads, vec![900, 0], "the 1-hour reminder was due at 16:00");
        let past = e.add_notice(maintenance("n-2", "2026-12-05T16:00:00Z", now), now);
        assert_eq!(past.unwrap_err(), ChangeError::Invalid("the notice's time has passed".into()));
        assert!(e.notices().get("n-2").is_none());
        let again = e.add_notice(maintenance("n-1", "2026-12-05T17:00:00Z", now), now);
        assert!(matches!(again, Err(ChangeError::Invalid(m)) if m.contains("exists already")));
    }

    #[test]
    fn a_cancelled_notice_sends_nothing_more() {
        let now = utc("2026-12-05T15:00:00Z");
        let mut e = engine(now, HashMap::new());
        e.add_notice(maintenance("n-1", "2026-12-05T17:00:00Z", now), now).unwrap();
        let first = run(&mut e, utc("2026-12-05T16:00:00Z"));
        assert_eq!(first.len(), 1, "the 1-hour reminder");
        let at = utc("2026-12-05T16:10:00Z");
        e.cancel_notice("n-1", "user:alice", at).unwrap();
        let turn = e.take_turn();
        assert!(matches!(turn.notices.as_slice(), [NoticeChange::Gone(id)] if id == "n-1"));
        assert_eq!(turn.audit[0].reason.as_deref(), Some("by user:alice"));
        assert!(run(&mut e, utc("2026-12-06T00:00:00Z")).is_empty());
        assert!(matches!(e.cancel_notice("n-1", "user:alice", at), Err(ChangeError::NotFound(_))));
    }

    #[test]
    fn a_restart_neither_repeats_a_reminder_nor_sends_what_it_missed_long_ago() {
        let now = utc("2026-12-05T15:00:00Z");
        let mut e = engine(now, HashMap::new());
        e.add_notice(maintenance("n-1", "2026-12-05T17:00:00Z", now), now).unwrap();
        let mut positions = HashMap::new();
        positions.extend(e.take_turn().notice_positions);
        assert_eq!(run(&mut e, utc("2026-12-05T16:00:00Z")).len(), 1);
        positions.extend(e.take_turn().notice_positions);
        for (k, v) in e.notices().history() {
            positions.insert(k.clone(), *v);
        }
        let stored = || maintenance("n-1", "2026-12-05T17:00:00Z", now);

        // Back ten seconds later: the 1-hour reminder is not sent again.
        let back = utc("2026-12-05T16:00:10Z");
        let mut e2 = engine(back, positions.clone());
        e2.restore_notices(vec![stored()], back);
        let sent = run(&mut e2, utc("2026-12-06T00:00:00Z"));
        let aheads: Vec<&str> = sent.iter().map(|(_, t)| t.split(':').next().unwrap()).collect();
        assert_eq!(aheads, vec!["In 15 minutes", "The file server goes down for maintenance"]);

        // Back after the event: nothing stale goes out, and it is forgotten.
        let late = utc("2026-12-05T17:30:00Z");
        let mut e3 = engine(late, positions);
        e3.restore_notices(vec![stored()], late);
        assert!(e3.notices().get("n-1").is_none());
        assert!(matches!(e3.take_turn().notices.as_slice(), [NoticeChange::Gone(id)] if id == "n-1"));
    }

    #[test]
    fn a_notice_of_the_config_cannot_be_cancelled_through_the_api() {
        let now = utc("2026-12-05T15:00:00Z");
        let mut cfg_notice = maintenance("backup", "2026-12-05T17:00:00Z", now);
        cfg_notice.when = When::Cron(Box::new(alerter_schedule::Cron::parse("0 18 * * fri").unwrap()));
        cfg_notice.set = None;
        let mut e = engine(now, HashMap::new());
        let mut cfg = e.config().clone();
        cfg.notices = vec![Arc::new(cfg_notice)];
        e.reconfigure(cfg, now);
        let err = e.cancel_notice("backup", "user:root", now).unwrap_err();
        assert!(matches!(err, ChangeError::Invalid(m) if m.contains("in the config file")));
        // And one set at run time stays across a reload.
        e.add_notice(maintenance("n-1", "2026-12-05T17:00:00Z", now), now).unwrap();
        let cfg = e.config().clone();
        e.reconfigure(cfg, now);
        assert!(e.notices().get("n-1").is_some() && e.notices().get("backup").is_some());
    }
}
