//! The router: all rule state, and the decisions of what to notify when.
//!
//! The router owns, per rule, the alerts it has seen (pending, firing,
//! resolved-but-not-yet-told, one-shots kept for throttling) and the groups
//! they are notified in. It does no I/O and never reads a clock: every entry
//! point takes `now`, and [`Router::next_wakeup`] tells the caller when to
//! call [`Router::tick`] next. Its outputs are decisions ([`Output`]): notify
//! this group now, or this alert was suppressed and why.
//!
//! Timing follows Alertmanager: an alert fires after `for:`; a group is
//! notified `group_wait` after its first alert fires, then about changes at
//! most every `group_interval`, and re-notified every `repeat_interval`
//! while anything in it still fires. One-shot events are notified once and
//! then throttled per dedup key for `repeat_interval`. A rule without
//! `group_by` has nothing to batch, so an alert's resolution is notified
//! `group_wait` after it happens, without waiting for `group_interval`.
//!
//! After a restart, restored alerts are older than anything their sources
//! say next. Notifications about them are held for [`RESTORE_SETTLE`], so
//! the sources' first reports decide what is still true: a condition
//! reported failing again before its resolved notice went out never
//! stopped, and a firing alert reported resolved is not announced.
//!
//! Timers live in one ordered set and are checked lazily: a timer whose
//! alert or group has moved on is skipped when it comes due, which is cheaper
//! than finding and removing it on every change.
//!
//! A notified one-shot leaves the alerts: all that is kept of it is when it
//! was sent ([`Sent`], a few bytes, in memory and in the store), in a queue
//! per rule ordered by when its throttle ends (one timer per rule, not one
//! per one-shot). A storm of distinct log lines is then 100,000 of those,
//! not 100,000 alerts with their events.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Rule, RuleIndex, Silence};
use crate::event::{Event, Fingerprint, Severity};

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Seen, waiting for `for:` to pass.
    Pending,
    Firing,
    /// Cleared after having been notified; the resolved notice is due.
    Resolved,
    /// A one-shot that was notified. Written by older alerters; a
    /// restored one becomes a [`Sent`].
    Sent,
}

/// A one-shot that was notified, kept only to throttle repeats of its key
/// until its rule's `repeat_interval` has passed: what it said is in the
/// outbox already. Persisted as `{"sent_ms":...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sent {
    /// When it was notified.
    #[serde(rename = "sent_ms", with = "chrono::serde::ts_milliseconds")]
    pub at: DateTime<Utc>,
    /// Repeats throttled since (the first one is recorded as suppressed).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub repeats: u32,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// What the store keeps of an alert of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Kept {
    Sent(Sent),
    Alert(Box<Alert>),
}

/// One alert's state within one rule. Persisted as JSON in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub fingerprint: Fingerprint,
    /// The latest event (for a resolved alert: the last firing one, with the
    /// resolving event's summary).
    pub event: Event,
    pub status: AlertStatus,
    /// When the router first saw it.
    pub since: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notified: Option<DateTime<Utc>>,
    /// The severity last told to recipients; a change is news.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_severity: Option<Severity>,
    /// Events merged into this alert since it was last notified.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: u64,
    /// Acknowledged while it fires: its repeats stop, for every recipient,
    /// until its severity rises above the acknowledged one (which re-opens
    /// it) or it resolves (which ends it with the alert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<Ack>,
}

/// Who acknowledged an alert, when, why, and at which severity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub severity: Severity,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why something was not notified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SuppressReason {
    Silenced {
        silence: String,
        comment: Option<String>,
        /// Who set the silence (at run time); `None` for the config's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    Muted {
        detail: String,
    },
    RepeatInterval {
        until: DateTime<Utc>,
    },
    /// Acknowledged: its repeats are held back.
    Acknowledged {
        by: String,
        comment: Option<String>,
    },
}

impl std::fmt::Display for SuppressReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SuppressReason::Silenced { silence, comment, by } => {
                write!(f, "silenced by {silence}")?;
                match (by, comment) {
                    (Some(by), Some(c)) => write!(f, " (set by {by}: {c})"),
                    (Some(by), None) => write!(f, " (set by {by})"),
                    (None, Some(c)) => write!(f, " ({c})"),
                    (None, None) => Ok(()),
                }
            }
            SuppressReason::Muted { detail } => f.write_str(detail),
            SuppressReason::Acknowledged { by, comment: Some(c) } => write!(f, "acknowledged by {by}: {c}"),
            SuppressReason::Acknowledged { by, comment: None } => write!(f, "acknowledged by {by}"),
            SuppressReason::RepeatInterval { until } => {
                write!(f, "repeat interval: already notified, quiet until {}", until.to_rfc3339())
            }
        }
    }
}

/// A suppressed notification, for the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suppression {
    pub at: DateTime<Utc>,
    pub rule: String,
    pub fingerprint: Fingerprint,
    pub summary: String,
    #[serde(flatten)]
    pub reason: SuppressReason,
}

/// An alert as it appears in a notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    pub fingerprint: Fingerprint,
    /// `firing` or `resolved`.
    pub status: &'static str,
    pub event: Event,
    pub since: DateTime<Utc>,
    pub count: u64,
}

/// "Notify this group now."
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub at: DateTime<Utc>,
    pub rule: Arc<Rule>,
    pub group_key: Arc<str>,
    /// The `group_by` labels and their values.
    pub group_labels: BTreeMap<String, String>,
    /// Firing alerts first, then resolved ones, each oldest first.
    pub alerts: Vec<AlertView>,
    /// True when nothing changed and this is a `repeat_interval` reminder.
    pub repeat: bool,
}

#[derive(Debug, Clone)]
pub enum Output {
    Notify(Dispatch),
    Suppressed(Suppression),
}

/// A changed alert, for the store: `None` means it is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    pub rule: String,
    pub fingerprint: Fingerprint,
    pub alert: Option<Kept>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Promote {
        rule: usize,
        fp: Fingerprint,
    },
    Flush {
        rule: usize,
        group: Arc<str>,
    },
    /// The first throttle in the rule's queue of one-shots may be over.
    Expire {
        rule: usize,
    },
}

#[derive(Debug, Default)]
struct Group {
    labels: BTreeMap<String, String>,
    members: BTreeSet<Fingerprint>,
    next_flush: Option<DateTime<Utc>>,
    last_flush: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct RuleState {
    alerts: HashMap<Fingerprint, Alert>,
    groups: HashMap<Arc<str>, Group>,
    /// Notified one-shots, throttled.
    sent: HashMap<Fingerprint, Sent>,
    /// When each throttle ends, in that order (a one-shot notified again
    /// is queued again; its older entry is skipped).
    expiries: VecDeque<(DateTime<Utc>, Fingerprint)>,
}

/// The rules engine. See the module docs.
#[derive(Debug, Default)]
pub struct Router {
    rules: Vec<Arc<Rule>>,
    index: RuleIndex,
    silences: Vec<Silence>,
    states: Vec<RuleState>,
    timers: BTreeSet<(DateTime<Utc>, u64, Timer)>,
    seq: u64,
    dirty: HashSet<(usize, Fingerprint)>,
    /// Alerts of removed rules, to be deleted from the store.
    pending_deletes: Vec<AlertChange>,
    /// When [`Router::restore`] loaded stored alerts: alerts seen before
    /// this instant are restored ones, whose notifications wait for
    /// [`RESTORE_SETTLE`] after it.
    restored_at: Option<DateTime<Utc>>,
}

/// How long after a restart notifications about restored alerts are held.
/// Sources check at once when they start, so within this time a source
/// reports a condition that came back (or went away) while the daemon was
/// down, and that report, not the stored state, decides what is sent.
pub const RESTORE_SETTLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Makes `stored` the latest report of its alert. Without a `key` the
/// fingerprint is a hash of source, host and labels, so an event with the
/// same fingerprint carries the same ones: only what may change is copied,
/// and the new event (just made, hot in the cache) is dropped instead of the
/// stored one (made long ago). Freeing the stored event's dozen strings was
/// most of a refresh's cost.
fn refresh(stored: &mut Event, event: Event) {
    if stored.key.is_some() || event.key.is_some() {
        *stored = event;
        return;
    }
    let Event { source: _, host: _, severity, summary, details, labels: _, time, key: _, oneshot } = event;
    stored.severity = severity;
    stored.time = time;
    stored.oneshot = oneshot;
    if stored.summary != summary {
        stored.summary = summary;
    }
    if stored.details != details {
        stored.details = details;
    }
}

fn after(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Router {
    pub fn new(rules: Vec<Arc<Rule>>, silences: Vec<Silence>) -> Router {
        let states = rules.iter().map(|_| RuleState::default()).collect();
        let index = RuleIndex::new(&rules);
        Router { rules, index, silences, states, ..Router::default() }
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// Replaces rules and silences, keeping the state of rules whose name
    /// is unchanged (regrouped if their `group_by` changed). State of
    /// removed rules is dropped and reported as changes for the store.
    pub fn reconfigure(&mut self, rules: Vec<Arc<Rule>>, silences: Vec<Silence>, now: DateTime<Utc>) {
        let mut old: HashMap<String, RuleState> = HashMap::new();
        for (rule, state) in self.rules.iter().zip(std::mem::take(&mut self.states)) {
            old.insert(rule.name.clone(), state);
        }
        let mut states = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let mut state = old.remove(&rule.name).unwrap_or_default();
            state.groups.clear();
            for fp in state.alerts.keys() {
                self.dirty.insert((i, *fp));
            }
            states.push(state);
        }
        // Alerts of rules that are gone: tell the store to forget them.
        let gone: Vec<AlertChange> = old
            .into_iter()
            .flat_map(|(name, st)| {
                st.alerts.into_keys().chain(st.sent.into_keys()).map(move |fp| AlertChange {
                    rule: name.clone(),
                    fingerprint: fp,
                    alert: None,
                })
            })
            .collect();
        self.index = RuleIndex::new(&rules);
        self.rules = rules;
        self.silences = silences;
        self.states = states;
        self.pending_deletes.extend(gone);
        self.rebuild(now);
    }

    /// Loads persisted alerts (from the store, after a restart). Alerts of
    /// rules that no longer exist are ignored. Notifications about the
    /// restored alerts are held until [`RESTORE_SETTLE`] after `now`: the
    /// stored state is older than whatever the sources report first after
    /// the restart, and must not be announced before they had the chance.
    pub fn restore(&mut self, alerts: Vec<(String, Fingerprint, Kept)>, now: DateTime<Utc>) {
        self.restored_at = Some(now);
        let index: HashMap<&str, usize> = self.rules.iter().enumerate().map(|(i, r)| (r.name.as_str(), i)).collect();
        for (rule, fp, kept) in alerts {
            let Some(&i) = index.get(rule.as_str()) else {
                self.pending_deletes.push(AlertChange { rule, fingerprint: fp, alert: None });
                continue;
            };
            let state = &mut self.states[i];
            match kept {
                Kept::Sent(s) => {
                    state.sent.insert(fp, s);
                }
                // As older alerters kept a notified one-shot.
                Kept::Alert(a) if a.status == AlertStatus::Sent => {
                    let at = a.last_notified.unwrap_or(a.since);
                    state.sent.insert(fp, Sent { at, repeats: a.count.min(u32::MAX as u64) as u32 });
                    self.dirty.insert((i, fp));
                }
                Kept::Alert(a) => {
                    state.alerts.insert(fp, *a);
                }
            }
        }
        self.rebuild(now);
    }

    /// Recomputes groups and timers from the alerts alone. Group state is
    /// derived (last flush = latest notification of a member), which is
    /// what lets the store keep alerts only.
    fn rebuild(&mut self, now: DateTime<Utc>) {
        self.timers.clear();
        for i in 0..self.rules.len() {
            let rule = self.rules[i].clone();
            let mut groups: HashMap<Arc<str>, Group> = HashMap::new();
            let mut timers = Vec::new();
            for (fp, a) in &self.states[i].alerts {
                match a.status {
                    AlertStatus::Pending => {
                        timers.push((after(a.since, rule.hold_for), Timer::Promote { rule: i, fp: *fp }));
                    }
                    // Only restored ones are `Sent`, and those became `Sent` records.
                    AlertStatus::Sent => {}
                    AlertStatus::Firing | AlertStatus::Resolved => {
                        let (key, labels) = group_key(&rule, &a.event, *fp);
                        let g = groups.entry(key).or_insert_with(|| Group { labels, ..Group::default() });
                        g.members.insert(*fp);
                        g.last_flush = g.last_flush.max(a.last_notified);
                    }
                }
            }
            for (key, g) in groups.iter_mut() {
                let alerts = &self.states[i].alerts;
                let members = g.members.iter().filter_map(|fp| alerts.get(fp));
                let mut needs_news = false;
                let mut first_fired: Option<DateTime<Utc>> = None;
                let mut resolved_at: Option<DateTime<Utc>> = None;
                let mut any_firing = false;
                for a in members {
                    any_firing |= a.status == AlertStatus::Firing;
                    needs_news |= is_news(a);
                    first_fired = earliest(first_fired, a.fired_at);
                    if a.status == AlertStatus::Resolved {
                        resolved_at = earliest(resolved_at, Some(a.resolved_at.unwrap_or(now)));
                    }
                }
                let due = if needs_news {
                    Some(match (g.last_flush, resolved_at) {
                        // A group of one (no `group_by`) tells its resolution
                        // `group_wait` after it happened, as `resolve` does.
                        (_, Some(resolved)) if rule.group_by.is_empty() => after(resolved, rule.group_wait),
                        (None, _) => after(first_fired.unwrap_or(now), rule.group_wait),
                        (Some(last), _) => after(last, rule.group_interval),
                    })
                } else if any_firing {
                    g.last_flush.map(|last| after(last, rule.repeat_interval))
                } else {
                    None
                };
                if let Some(due) = due {
                    let held = held_until(self.restored_at, g, alerts, now);
                    let due = due.max(now).max(held.unwrap_or(now));
                    g.next_flush = Some(due);
                    timers.push((due, Timer::Flush { rule: i, group: key.clone() }));
                }
            }
            self.states[i].groups = groups;
            let state = &mut self.states[i];
            let mut expiries: Vec<(DateTime<Utc>, Fingerprint)> =
                state.sent.iter().map(|(fp, s)| (after(s.at, rule.repeat_interval), *fp)).collect();
            expiries.sort_unstable();
            state.expiries = expiries.into();
            if let Some((t, _)) = state.expiries.front() {
                timers.push((*t, Timer::Expire { rule: i }));
            }
            for (t, timer) in timers {
                self.add_timer(t, timer);
            }
        }
    }

    fn add_timer(&mut self, at: DateTime<Utc>, timer: Timer) {
        self.seq += 1;
        self.timers.insert((at, self.seq, timer));
    }

    /// When [`Router::tick`] must next be called, if ever.
    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        self.timers.first().map(|(t, _, _)| *t)
    }

    /// Takes one event. Returns what to notify or record now (a rule with
    /// no `group_wait` notifies right away).
    pub fn handle(&mut self, event: Event, now: DateTime<Utc>) -> Vec<Output> {
        let mut out = Vec::new();
        self.handle_into(event, now, &mut out);
        out
    }

    /// [`Router::handle`] appending to a caller's buffer, so a batch of events
    /// costs no allocation per event.
    pub fn handle_into(&mut self, event: Event, now: DateTime<Utc>, out: &mut Vec<Output>) {
        self.tick_into(now, out);
        let mut fp = None;
        if event.severity == Severity::Resolved {
            let fp = event.fingerprint();
            for i in 0..self.rules.len() {
                if self.states[i].alerts.contains_key(&fp) {
                    self.resolve(i, fp, &event, now);
                }
            }
        } else {
            // Find the matching rules first, so the event can be moved into
            // the last one instead of cloned for each.
            // Almost every event matches one rule: no allocation in the common case.
            let mut matched: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
            let mut candidates = smallvec::SmallVec::new();
            self.index.candidates(&event, &mut candidates);
            for &i in &candidates {
                let rule = &self.rules[i];
                if rule.matcher.matches(&event) {
                    matched.push(i);
                    if !rule.continue_matching {
                        break;
                    }
                }
            }
            if let Some((&last, rest)) = matched.as_slice().split_last() {
                let f = *fp.get_or_insert_with(|| event.fingerprint());
                for &i in rest {
                    self.accept(i, f, event.clone(), now, out);
                }
                self.accept(last, f, event, now, out);
            }
        }
        self.tick_into(now, out);
    }

    /// Runs everything due at or before `now`.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Output> {
        let mut out = Vec::new();
        self.tick_into(now, &mut out);
        out
    }

    pub fn tick_into(&mut self, now: DateTime<Utc>, out: &mut Vec<Output>) {
        while let Some(first) = self.timers.first() {
            if first.0 > now {
                break;
            }
            let (at, _, timer) = self.timers.pop_first().expect("checked non-empty");
            match timer {
                Timer::Promote { rule, fp } => {
                    let hold = self.rules[rule].hold_for;
                    let due = matches!(
                        self.states[rule].alerts.get(&fp),
                        Some(a) if a.status == AlertStatus::Pending && after(a.since, hold) <= at
                    );
                    if due {
                        self.fire(rule, fp, at);
                    }
                }
                Timer::Flush { rule, group } => {
                    let current = self.states[rule].groups.get(&group).and_then(|g| g.next_flush);
                    if current == Some(at) {
                        self.flush(rule, group, at, out);
                    }
                }
                Timer::Expire { rule } => {
                    let repeat = self.rules[rule].repeat_interval;
                    let state = &mut self.states[rule];
                    while let Some(&(t, fp)) = state.expiries.front() {
                        if t > at {
                            break;
                        }
                        state.expiries.pop_front();
                        // Not if it was notified again since (queued again).
                        if state.sent.get(&fp).is_some_and(|s| after(s.at, repeat) <= at) {
                            state.sent.remove(&fp);
                            self.dirty.insert((rule, fp));
                        }
                    }
                    if let Some(&(t, _)) = state.expiries.front() {
                        self.add_timer(t, Timer::Expire { rule });
                    }
                }
            }
        }
    }

    fn accept(&mut self, i: usize, fp: Fingerprint, event: Event, now: DateTime<Utc>, out: &mut Vec<Output>) {
        let rule = self.rules[i].clone();
        let state = &mut self.states[i];
        if let Some(s) = state.sent.get_mut(&fp) {
            let until = after(s.at, rule.repeat_interval);
            if event.oneshot && now < until {
                s.repeats = s.repeats.saturating_add(1);
                // Recorded once per quiet period, not once per event:
                // a log line repeating a thousand times a second must
                // not write a thousand audit records a second.
                if s.repeats == 1 {
                    self.dirty.insert((i, fp));
                    out.push(Output::Suppressed(Suppression {
                        at: now,
                        rule: rule.name.clone(),
                        fingerprint: fp,
                        summary: event.summary.clone(),
                        reason: SuppressReason::RepeatInterval { until },
                    }));
                }
                return;
            }
            // Its throttle is over (or a condition took its key): news.
            state.sent.remove(&fp);
        }
        if let Some(a) = state.alerts.get_mut(&fp) {
            match a.status {
                // A refresh of a known alert updates it in memory only: the
                // store need not hear of every repeat of the same condition,
                // just of changes that decide what is notified.
                AlertStatus::Pending => {
                    refresh(&mut a.event, event);
                    a.count += 1;
                    return;
                }
                AlertStatus::Firing => {
                    let changed = a.event.severity != event.severity;
                    refresh(&mut a.event, event);
                    a.count += 1;
                    if changed {
                        self.dirty.insert((i, fp));
                        match &a.ack {
                            // A rise above what was acknowledged re-opens it.
                            Some(ack) if a.event.severity > ack.severity => a.ack = None,
                            // Anything at or below it is covered by the ack:
                            // no news to tell.
                            Some(_) => {
                                a.notified_severity = Some(a.event.severity);
                                return;
                            }
                            None => {}
                        }
                        let (key, _) = group_key(&rule, &a.event, fp);
                        self.schedule_flush(i, key, now);
                    }
                    return;
                }
                AlertStatus::Resolved => {
                    // Back before the resolved notice went out: as far as the
                    // recipients know it never stopped, so it fires on quietly.
                    a.status = AlertStatus::Firing;
                    a.resolved_at = None;
                    let changed = a.notified_severity != Some(event.severity);
                    refresh(&mut a.event, event);
                    a.count += 1;
                    self.dirty.insert((i, fp));
                    if changed {
                        let (key, _) = group_key(&rule, &a.event, fp);
                        self.schedule_flush(i, key, now);
                    }
                    return;
                }
                AlertStatus::Sent => {}
            }
        }
        self.dirty.insert((i, fp));
        let oneshot = event.oneshot;
        let alert = Alert {
            fingerprint: fp,
            event,
            status: AlertStatus::Pending,
            since: now,
            fired_at: None,
            resolved_at: None,
            last_notified: None,
            notified_severity: None,
            count: 1,
            ack: None,
        };
        state.alerts.insert(fp, alert);
        if oneshot || rule.hold_for.is_zero() {
            self.fire(i, fp, now);
        } else {
            self.add_timer(after(now, rule.hold_for), Timer::Promote { rule: i, fp });
        }
    }

    fn fire(&mut self, i: usize, fp: Fingerprint, at: DateTime<Utc>) {
        let rule = self.rules[i].clone();
        let Some(a) = self.states[i].alerts.get_mut(&fp) else { return };
        a.status = AlertStatus::Firing;
        a.fired_at = Some(at);
        let (key, labels) = group_key(&rule, &a.event, fp);
        let g = self.states[i].groups.entry(key.clone()).or_insert_with(|| Group { labels, ..Group::default() });
        g.members.insert(fp);
        self.dirty.insert((i, fp));
        self.schedule_flush(i, key, at);
    }

    fn resolve(&mut self, i: usize, fp: Fingerprint, event: &Event, now: DateTime<Utc>) {
        let rule = self.rules[i].clone();
        let state = &mut self.states[i];
        let Some(a) = state.alerts.get_mut(&fp) else { return };
        self.dirty.insert((i, fp));
        match a.status {
            AlertStatus::Firing if a.last_notified.is_some() && rule.send_resolved => {
                a.status = AlertStatus::Resolved;
                a.resolved_at = Some(now);
                if !event.summary.is_empty() {
                    a.event.summary = event.summary.clone();
                }
                let (key, _) = group_key(&rule, &a.event, fp);
                if rule.group_by.is_empty() {
                    // A group of one has no other alerts to batch the
                    // resolution with, so `group_interval` has nothing to
                    // wait for: the resolved notice is due `group_wait`
                    // after the resolution (at once by default). This
                    // replaces any earlier flush still pending for the
                    // alert (a severity change, a repeat): both are moot
                    // now, and `group_wait` is the time a flapping
                    // condition gets to come back quietly.
                    let due = after(now, rule.group_wait);
                    if let Some(g) = state.groups.get_mut(&key) {
                        g.next_flush = Some(due);
                        self.add_timer(due, Timer::Flush { rule: i, group: key });
                    }
                } else {
                    self.schedule_flush(i, key, now);
                }
            }
            AlertStatus::Pending | AlertStatus::Firing => {
                // Never told, or not to be told: forget it quietly.
                let event = state.alerts.remove(&fp).map(|a| a.event);
                if let Some(event) = event {
                    let (key, _) = group_key(&rule, &event, fp);
                    if let Some(g) = state.groups.get_mut(&key) {
                        g.members.remove(&fp);
                        if g.members.is_empty() {
                            state.groups.remove(&key);
                        }
                    }
                }
            }
            AlertStatus::Resolved | AlertStatus::Sent => {}
        }
    }

    /// Makes sure the group is flushed soon: after `group_wait` for a group
    /// never notified, else `group_interval` after its last notification.
    fn schedule_flush(&mut self, i: usize, key: Arc<str>, at: DateTime<Utc>) {
        let rule = self.rules[i].clone();
        let Some(g) = self.states[i].groups.get_mut(&key) else { return };
        let due = match g.last_flush {
            None => after(at, rule.group_wait),
            Some(last) => after(last, rule.group_interval).max(at),
        };
        if g.next_flush.is_none_or(|t| due < t) {
            g.next_flush = Some(due);
            self.add_timer(due, Timer::Flush { rule: i, group: key });
        }
    }

    fn silenced_by(&self, rule: &str, e: &Event, now: DateTime<Utc>) -> Option<&Silence> {
        self.silences.iter().find(|s| s.silences_alert(rule, e, now))
    }

    /// The silences in force (the config's and those set at run time).
    pub fn silences(&self) -> &[Silence] {
        &self.silences
    }

    /// Replaces the silences (one was set or expired at run time). Groups
    /// holding news that was not told (silenced, say) are looked at again
    /// as their timing allows, so expiring a silence early brings what it
    /// held back without waiting for its original end.
    pub fn set_silences(&mut self, silences: Vec<Silence>, now: DateTime<Utc>) {
        self.silences = silences;
        let mut due = Vec::new();
        for (i, state) in self.states.iter().enumerate() {
            for (key, g) in &state.groups {
                let held = g.members.iter().any(|fp| {
                    state.alerts.get(fp).is_some_and(|a| {
                        is_news(a)
                            || (a.status == AlertStatus::Firing
                                && a.last_notified.is_some_and(|l| now >= after(l, self.rules[i].repeat_interval)))
                    })
                });
                if held {
                    due.push((i, key.clone()));
                }
            }
        }
        for (i, key) in due {
            self.schedule_flush(i, key, now);
        }
    }

    fn flush(&mut self, i: usize, key: Arc<str>, now: DateTime<Utc>, out: &mut Vec<Output>) {
        let rule = self.rules[i].clone();
        let state = &mut self.states[i];
        let Some(g) = state.groups.get_mut(&key) else { return };
        if let Some(until) = held_until(self.restored_at, g, &state.alerts, now) {
            // Restored alerts wait for their sources' first reports.
            g.next_flush = Some(until);
            self.add_timer(until, Timer::Flush { rule: i, group: key });
            return;
        }
        g.next_flush = None;
        let members: Vec<Fingerprint> = g.members.iter().copied().collect();
        let repeat_due = g.last_flush.is_some_and(|l| now >= after(l, rule.repeat_interval));
        let labels = g.labels.clone();

        let mut firing = Vec::new();
        let mut resolved = Vec::new();
        let mut acked = Vec::new();
        let mut silenced: Vec<(Fingerprint, &Silence)> = Vec::new();
        let mut news = false;
        for fp in &members {
            let Some(a) = self.states[i].alerts.get(fp) else { continue };
            match a.status {
                AlertStatus::Firing | AlertStatus::Resolved => {
                    if let Some(s) = self.silenced_by(&rule.name, &a.event, now) {
                        silenced.push((*fp, s));
                        continue;
                    }
                    news |= is_news(a);
                    if a.status == AlertStatus::Firing {
                        if a.ack.is_some() {
                            acked.push(*fp);
                        }
                        firing.push(*fp);
                    } else {
                        resolved.push(*fp);
                    }
                }
                AlertStatus::Pending | AlertStatus::Sent => {}
            }
        }
        let mut next: Option<DateTime<Utc>> = None;
        for (fp, s) in &silenced {
            let a = &self.states[i].alerts[fp];
            if is_news(a) || repeat_due {
                out.push(Output::Suppressed(Suppression {
                    at: now,
                    rule: rule.name.clone(),
                    fingerprint: *fp,
                    summary: a.event.summary.clone(),
                    reason: SuppressReason::Silenced {
                        silence: s.id.clone(),
                        comment: s.comment.clone(),
                        by: s.created_by.clone(),
                    },
                }));
            }
            // Look again when the silence ends: the alert may still fire.
            next = earliest(next, Some(s.ends));
        }
        // Oldest first reads naturally in a popup or a mail.
        let alerts = &self.states[i].alerts;
        firing.sort_by_key(|fp| (alerts[fp].fired_at.unwrap_or(alerts[fp].since), *fp));
        resolved.sort_by_key(|fp| (alerts[fp].fired_at.unwrap_or(alerts[fp].since), *fp));
        if repeat_due && !news && !acked.is_empty() {
            // Acknowledged: no reminders, for anyone; history says who.
            for fp in &acked {
                let a = &self.states[i].alerts[fp];
                let ack = a.ack.as_ref().expect("acked");
                out.push(Output::Suppressed(Suppression {
                    at: now,
                    rule: rule.name.clone(),
                    fingerprint: *fp,
                    summary: a.event.summary.clone(),
                    reason: SuppressReason::Acknowledged { by: ack.by.clone(), comment: ack.comment.clone() },
                }));
            }
            firing.retain(|fp| !acked.contains(fp));
        }
        let send = news || (repeat_due && !firing.is_empty());
        if send {
            if let Some(detail) = rule.muted_by(now) {
                for fp in firing.iter().chain(&resolved) {
                    let a = &self.states[i].alerts[fp];
                    out.push(Output::Suppressed(Suppression {
                        at: now,
                        rule: rule.name.clone(),
                        fingerprint: *fp,
                        summary: a.event.summary.clone(),
                        reason: SuppressReason::Muted { detail: detail.clone() },
                    }));
                }
                if let Some(t) = rule.mute_changes_at(now) {
                    next = earliest(next, Some(t));
                }
            } else {
                let mut views = Vec::with_capacity(firing.len() + resolved.len());
                let state = &mut self.states[i];
                for fp in firing.iter().chain(&resolved) {
                    let a = state.alerts.get_mut(fp).expect("member exists");
                    views.push(AlertView {
                        fingerprint: *fp,
                        status: if a.status == AlertStatus::Resolved { "resolved" } else { "firing" },
                        event: a.event.clone(),
                        since: a.fired_at.unwrap_or(a.since),
                        count: a.count,
                    });
                    a.last_notified = Some(now);
                    a.notified_severity = Some(a.event.severity);
                    a.count = 0;
                    self.dirty.insert((i, *fp));
                }
                out.push(Output::Notify(Dispatch {
                    at: now,
                    rule: rule.clone(),
                    group_key: key.clone(),
                    group_labels: labels,
                    alerts: views,
                    repeat: !news,
                }));
                let g = state.groups.get_mut(&key).expect("group exists");
                g.last_flush = Some(now);
                // Resolved alerts are done; one-shots move to throttling.
                for fp in &resolved {
                    state.alerts.remove(fp);
                    g.members.remove(fp);
                }
                let first_expiry = state.expiries.is_empty();
                let until = after(now, rule.repeat_interval);
                for fp in &firing {
                    if state.alerts.get(fp).is_some_and(|a| a.event.oneshot) {
                        state.alerts.remove(fp);
                        g.members.remove(fp);
                        state.sent.insert(*fp, Sent { at: now, repeats: 0 });
                        state.expiries.push_back((until, *fp));
                    }
                }
                // Queued in order, as `now` only moves on: one timer for the
                // queue's head (the one that runs sets the next).
                if first_expiry && !state.expiries.is_empty() {
                    self.add_timer(until, Timer::Expire { rule: i });
                }
            }
        }
        let state = &mut self.states[i];
        let Some(g) = state.groups.get_mut(&key) else { return };
        let still_firing = g.members.iter().any(|fp| {
            state.alerts.get(fp).is_some_and(|a| a.status == AlertStatus::Firing && a.last_notified.is_some())
        });
        if still_firing && let Some(last) = g.last_flush {
            // A repeat already due was held back (muted or silenced); the
            // end of the mute or silence brings it, not a busy retry now.
            let t = after(last, rule.repeat_interval);
            if t > now {
                next = earliest(next, Some(t));
            }
        }
        if g.members.is_empty() {
            state.groups.remove(&key);
            return;
        }
        if let Some(t) = next {
            let t = t.max(now);
            if g.next_flush.is_none_or(|cur| t < cur) {
                g.next_flush = Some(t);
                self.add_timer(t, Timer::Flush { rule: i, group: key });
            }
        }
    }

    /// Whether alerts changed since the last [`Router::take_changes`].
    pub fn has_changes(&self) -> bool {
        !self.pending_deletes.is_empty() || !self.dirty.is_empty()
    }

    /// Changed alerts since the last call, for the store.
    pub fn take_changes(&mut self) -> Vec<AlertChange> {
        let mut changes: Vec<AlertChange> = std::mem::take(&mut self.pending_deletes);
        for (i, fp) in self.dirty.drain() {
            let Some(rule) = self.rules.get(i) else { continue };
            let state = &self.states[i];
            let kept = match state.alerts.get(&fp) {
                Some(a) => Some(Kept::Alert(Box::new(a.clone()))),
                None => state.sent.get(&fp).map(|s| Kept::Sent(*s)),
            };
            changes.push(AlertChange { rule: rule.name.clone(), fingerprint: fp, alert: kept });
        }
        changes
    }

    /// Every alert of every rule (firing, pending, resolved but not yet
    /// told), with its rule; in no particular order.
    pub fn all_alerts(&self) -> impl Iterator<Item = (&Arc<Rule>, &Alert)> {
        self.rules.iter().zip(&self.states).flat_map(|(r, st)| st.alerts.values().map(move |a| (r, a)))
    }

    /// The silence in force that holds back notifications of this alert.
    pub fn silence_of(&self, rule: &str, e: &Event, now: DateTime<Utc>) -> Option<&Silence> {
        self.silenced_by(rule, e, now)
    }

    /// Acknowledges the firing alerts `select` picks (given the rule's name
    /// and the alert): their repeats stop. Returns (rule, alert) of each.
    pub fn acknowledge(
        &mut self,
        mut select: impl FnMut(&str, &Alert) -> bool,
        by: &str,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Vec<(String, Alert)> {
        let mut out = Vec::new();
        for (i, (rule, state)) in self.rules.iter().zip(self.states.iter_mut()).enumerate() {
            for (fp, a) in state.alerts.iter_mut() {
                if a.status != AlertStatus::Firing || !select(&rule.name, a) {
                    continue;
                }
                a.ack = Some(Ack {
                    by: by.to_string(),
                    at: now,
                    comment: comment.map(str::to_string),
                    severity: a.event.severity,
                });
                self.dirty.insert((i, *fp));
                out.push((rule.name.clone(), a.clone()));
            }
        }
        out
    }

    /// How many alerts fire and how many wait for their `for:`, in all rules.
    /// And how many of the firing ones are acknowledged.
    pub fn alert_counts(&self) -> (usize, usize, usize) {
        let (mut firing, mut pending, mut acked) = (0, 0, 0);
        for state in &self.states {
            for a in state.alerts.values() {
                match a.status {
                    AlertStatus::Firing => {
                        firing += 1;
                        acked += usize::from(a.ack.is_some());
                    }
                    AlertStatus::Pending => pending += 1,
                    AlertStatus::Resolved | AlertStatus::Sent => {}
                }
            }
        }
        (firing, pending, acked)
    }

    /// How many notified one-shots of a rule are throttled now.
    pub fn throttled(&self, rule: &str) -> usize {
        self.rules.iter().position(|r| r.name == rule).map_or(0, |i| self.states[i].sent.len())
    }

    /// All alerts of a rule (for status output and tests), by fingerprint.
    pub fn alerts(&self, rule: &str) -> Vec<&Alert> {
        let Some(i) = self.rules.iter().position(|r| r.name == rule) else { return Vec::new() };
        let mut v: Vec<&Alert> = self.states[i].alerts.values().collect();
        v.sort_by_key(|a| a.fingerprint);
        v
    }
}

/// The earlier of two optional times; `None` means "no time", not "earliest".
fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Until when a group must not be notified because it holds alerts
/// restored at `restored_at` and [`RESTORE_SETTLE`] has not passed yet.
/// An alert is a restored one when it was first seen before the restart;
/// deriving this from `since` keeps it true across a reload, which
/// rebuilds every group.
fn held_until(
    restored_at: Option<DateTime<Utc>>,
    g: &Group,
    alerts: &HashMap<Fingerprint, Alert>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let restored_at = restored_at?;
    let until = after(restored_at, RESTORE_SETTLE);
    let restored = g.members.iter().any(|fp| alerts.get(fp).is_some_and(|a| a.since < restored_at));
    (now < until && restored).then_some(until)
}

/// Whether recipients have not yet heard of this alert's current state.
fn is_news(a: &Alert) -> bool {
    match a.status {
        AlertStatus::Firing => a.last_notified.is_none() || a.notified_severity != Some(a.event.severity),
        AlertStatus::Resolved => true,
        AlertStatus::Pending | AlertStatus::Sent => false,
    }
}

/// The group an alert belongs to in a rule: by the `group_by` labels, or on
/// its own when there are none.
fn group_key(rule: &Rule, e: &Event, fp: Fingerprint) -> (Arc<str>, BTreeMap<String, String>) {
    if rule.group_by.is_empty() {
        return (Arc::from(fp.to_string()), BTreeMap::new());
    }
    let mut key = String::new();
    let mut labels = BTreeMap::new();
    for name in &rule.group_by {
        let value = e.label(name).unwrap_or("");
        key.push_str(name);
        key.push('=');
        key.push_str(value);
        key.push('\u{1f}');
        labels.insert(name.clone(), value.to_string());
    }
    (Arc::from(key), labels)
}
