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

use crate::event::{ALERTER_SOURCE, Event, Fingerprint, Inbound, Severity};
use crate::notices::{Notice, NoticeKey, NoticeScheduler};
use crate::notify::{Notification, RenderCx, TransportInfo, notice_notifications, render_dispatch};
use crate::rules::router::{Alert, AlertChange, Kept, Output, Router};
use crate::rules::{Matcher, Rule, Silence};
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
    Retrying { error: String, attempts: u32 },
    Failed(String),
    Expired(String),
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
}

/// How long a silence set at run time is still listed after it ended.
pub const KEEP_ENDED: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// How many silences set at run time may be in force at once: a client
/// with the `operate` scope must not be able to slow every event down.
pub const MAX_SILENCES: usize = 10_000;

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
        self.notices = NoticeScheduler::new(cfg.notices.clone(), &self.positions, now);
        self.cfg = cfg;
        self.note_positions();
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
        self.change_record(
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
        self.change_record("silence", by, None, format!("silence {id} expired"), now);
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
        let acked = self.router.acknowledge(
            |rule, a| {
                let id = a.fingerprint.to_string();
                ids.iter().any(|p| id.starts_with(p.as_str()))
                    || matcher.is_some_and(|m| m.matches_in(&a.event, Some(rule)))
            },
            by,
            comment,
            now,
        );
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

    fn forget_ended(&mut self, now: DateTime<Utc>) {
        let keep = chrono::Duration::from_std(KEEP_ENDED).expect("small");
        self.runtime_silences.retain(|s| s.ends + keep > now);
    }

    fn apply_silences(&mut self, now: DateTime<Utc>) {
        let all = self.cfg.silences.iter().chain(&self.runtime_silences).cloned().collect();
        self.router.set_silences(all, now);
    }

    /// An audit record of a change made through the control API: what,
    /// by whom, why.
    fn change_record(&mut self, kind: &str, by: &str, why: Option<&str>, summary: String, now: DateTime<Utc>) {
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
        [self.router.next_wakeup(), self.notices.next_wakeup(), Some(self.next_prune)].into_iter().flatten().min()
    }

    /// Runs the router's timers, the notices due at `now`, and asks for
    /// history older than the retention to be pruned when that is due.
    pub fn tick(&mut self, now: DateTime<Utc>) {
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
            let (message, err) = self.cfg.templates.render(&[&f.notice.template_name()], NOTICE_FALLBACK, &f.context());
            if let Some(err) = err {
                warn!("notice `{}`: {err}", f.notice.name);
            }
            let (title, text) = f.title_and_text(&message);
            self.turn.notifications.extend(notice_notifications(
                &f.notice.name,
                &title,
                &text,
                &f.notice.targets,
                f.fire_at,
            ));
        }
        self.note_positions();
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
        std::mem::take(&mut self.turn)
    }

    /// Whether anything is waiting to be taken.
    pub fn has_turn(&self) -> bool {
        !self.out.is_empty() || !self.turn.is_empty() || self.router.has_changes()
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
                    for n in &notifications {
                        debug!(id = %n.id, transport = %n.transport, rule = %n.rule, "queued");
                    }
                    self.turn.notifications.extend(notifications);
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
