//! Per-person budgets: how many notifications one holder receives through
//! one transport per window, and the digest that names the rest.
//!
//! A *holder* is what a rule's notify entry named: a subscriber (`alice`),
//! a group (`@ops`, one budget for the group, not one per member) or the
//! workgroup (`*`). Each (holder, transport) pair has at most one open
//! [`Window`]: it opens with the first notification, lasts the budget's
//! `per`, shows the first `count` notifications and folds the rest. When
//! it ends, everything it folded becomes one digest notification (counts by
//! rule and host, the worst severity, the first and last time), shaped for
//! a popup's length or for a mail. Nothing folded is lost: each folded
//! notification leaves an audit record naming its digest.
//!
//! Only person-facing transports (messenger: popups, email: mails) have a
//! budget; a transport the config gives no [`TransportBudget`] (log, and any
//! machine consumer) is never touched, whatever a holder's budget says.
//!
//! Pure, like the rest of the engine: every call takes the time it is about.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::engine::AuditRecord;
use crate::event::{Fingerprint, Severity};
use crate::notify::{Notification, notification_id};
use crate::rules::Recipient;

/// What a budget counts: the two kinds of person-facing transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Popups,
    Mails,
}

impl Class {
    /// The class of a transport kind (`TransportConfig::kind`), `None` for
    /// transports read by machines, which never have a budget.
    pub fn of_kind(kind: &str) -> Option<Class> {
        match kind {
            "messenger" => Some(Class::Popups),
            "email" => Some(Class::Mails),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Popups => "popups",
            Class::Mails => "mails",
        }
    }
}

/// At most `count` notifications per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub count: u32,
    #[serde(with = "secs")]
    pub per: Duration,
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

impl fmt::Display for Limit {
    /// `5 per 10m`, as an admin writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.per.as_secs();
        let per = match s {
            0 => format!("{}ms", self.per.as_millis()),
            _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
            _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
            _ if s.is_multiple_of(60) => format!("{}m", s / 60),
            _ => format!("{s}s"),
        };
        write!(f, "{} per {per}", self.count)
    }
}

/// A budget as configured: a limit, or explicitly none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    Limited(Limit),
    Unlimited,
}

/// The popups default when neither the holder nor the transport sets one:
/// ten popups in ten minutes is already more than anyone reads.
pub const DEFAULT_POPUPS: Limit = Limit { count: 10, per: Duration::from_secs(600) };

/// A holder's own budgets, per class; `None` defers to the transport's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allowances {
    pub popups: Option<Allowance>,
    pub mails: Option<Allowance>,
}

impl Allowances {
    fn get(&self, class: Class) -> Option<Allowance> {
        match class {
            Class::Popups => self.popups,
            Class::Mails => self.mails,
        }
    }
}

/// A person-facing transport's class and budget (its own, or the class
/// default), for holders that set none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportBudget {
    pub class: Class,
    pub allowance: Option<Allowance>,
}

/// Every budget of a configuration.
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    /// By holder: `alice`, `@ops`.
    pub holders: HashMap<String, Allowances>,
    /// Person-facing transports only; a transport not here has no budget.
    pub transports: HashMap<String, TransportBudget>,
}

impl Budgets {
    /// The limit for a holder through a transport: the holder's own for the
    /// transport's class, else the transport's; `None` when there is none
    /// (or the transport is read by machines).
    pub fn limit(&self, holder: &str, transport: &str) -> Option<(Class, Limit)> {
        let t = self.transports.get(transport)?;
        let own = self.holders.get(holder).and_then(|h| h.get(t.class));
        match own.or(t.allowance)? {
            Allowance::Limited(l) => Some((t.class, l)),
            Allowance::Unlimited => None,
        }
    }
}

/// How a rule's notifications meet budgets (`budget:` on a rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Neither counted nor folded.
    Exempt,
    /// Shown at once and counted, up to a hard cap of twice the budget.
    Counted,
    /// Counted, and folded into the digest once the budget is spent.
    Folded,
}

impl Mode {
    /// A rule's mode for a notification: its own, else critical
    /// notifications are counted (a storm of warnings cannot hide the one
    /// critical alert) and the rest folded.
    pub fn effective(rule: Option<Mode>, severity: Severity) -> Mode {
        rule.unwrap_or(if severity >= Severity::Critical { Mode::Counted } else { Mode::Folded })
    }
}

/// The holder of a recipient's budget: `*`, `@group`, or the subscriber.
pub fn holder(r: &Recipient) -> String {
    if r.is_workgroup() {
        return "*".into();
    }
    match &r.group {
        Some(g) => format!("@{g}"),
        None => r.id.clone(),
    }
}

/// How many distinct (rule, host) pairs a digest counts one by one; the
/// rest are counted together, so a storm of distinct hosts cannot grow a
/// window without bound.
pub const MAX_KINDS: usize = 100;

/// How many folded firings are remembered so their resolutions can pass
/// quietly. Beyond it the oldest are forgotten: their resolutions then
/// meet the budget like any notification.
pub const MAX_QUIET: usize = 100_000;

/// Notifications of one (rule, host) in a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kind {
    pub rule: String,
    pub host: String,
    pub count: u64,
}

/// What one window folded so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Folded {
    /// The digest's number (`#N`), shown in history and in the digest.
    pub number: u64,
    pub count: u64,
    pub worst: Severity,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    /// Most common first once the digest is made; at most [`MAX_KINDS`].
    pub kinds: Vec<Kind>,
    /// Notifications beyond the kinds counted one by one.
    pub other: u64,
    /// Who the digest goes to (for a group, the members the folded
    /// notifications were for).
    pub recipients: Vec<Recipient>,
}

/// One holder's window on one transport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub holder: String,
    pub transport: String,
    pub class: Class,
    /// The limit in force when it opened (a reload changes the next window).
    pub limit: Limit,
    pub opened: DateTime<Utc>,
    pub ends: DateTime<Utc>,
    /// Notifications shown (counted) in it.
    pub shown: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded: Option<Folded>,
}

type WindowKey = (String, String);

/// Windows changed since the last turn was taken, to store: `None` when
/// the window is gone. With the digest counter, when it moved.
#[derive(Debug, Default)]
pub struct LedgerChanges {
    pub windows: BTreeMap<WindowKey, Option<Window>>,
    pub next_digest: Option<u64>,
}

impl LedgerChanges {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.next_digest.is_none()
    }

    pub fn absorb(&mut self, later: LedgerChanges) {
        self.windows.extend(later.windows);
        self.next_digest = later.next_digest.or(self.next_digest);
    }
}

/// Every open window, and the folded firings whose resolutions pass
/// quietly. See the module docs.
#[derive(Debug, Default)]
pub struct Ledger {
    windows: HashMap<WindowKey, Window>,
    /// (hash of holder and transport, alert) → the digest its firing went
    /// into. Insertion order in `quiet_order`, for forgetting the oldest.
    quiet: HashMap<(u64, Fingerprint), u64>,
    quiet_order: VecDeque<(u64, Fingerprint)>,
    next_digest: u64,
    /// Windows changed (or gone) since the changes were last taken; their
    /// copies are made once, when taken, not at every notification.
    dirty: std::collections::BTreeSet<WindowKey>,
    digest_moved: bool,
}

fn pair_hash(holder: &str, transport: &str) -> u64 {
    use xxhash_rust::xxh3::Xxh3;
    let mut h = Xxh3::new();
    h.update(holder.as_bytes());
    h.update(&[0xff]);
    h.update(transport.as_bytes());
    h.digest()
}

/// What to do with one holder's share of a notification.
enum Verdict {
    Show,
    Fold(String),
    Quiet(u64),
}

impl Ledger {
    /// The windows kept in the store, and the next digest number.
    pub fn restore(windows: Vec<Window>, next_digest: u64) -> Ledger {
        let next = windows.iter().filter_map(|w| w.folded.as_ref()).map(|f| f.number + 1).max().unwrap_or(1);
        Ledger {
            windows: windows.into_iter().map(|w| ((w.holder.clone(), w.transport.clone()), w)).collect(),
            next_digest: next_digest.max(next),
            ..Ledger::default()
        }
    }

    pub fn windows(&self) -> impl Iterator<Item = &Window> {
        self.windows.values()
    }

    pub fn take_changes(&mut self) -> LedgerChanges {
        let windows = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|k| {
                let w = self.windows.get(&k).cloned();
                (k, w)
            })
            .collect();
        let next_digest = std::mem::take(&mut self.digest_moved).then_some(self.next_digest);
        LedgerChanges { windows, next_digest }
    }

    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty() || self.digest_moved
    }

    /// When the next digest is due.
    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        self.windows.values().filter(|w| w.folded.is_some()).map(|w| w.ends).min()
    }

    /// Closes every window that ended by `now`, returning their digests.
    pub fn due(&mut self, now: DateTime<Utc>, tz: Tz, out: &mut Vec<Notification>) {
        let ended: Vec<WindowKey> =
            self.windows.iter().filter(|(_, w)| w.ends <= now).map(|(k, _)| k.clone()).collect();
        for key in ended {
            self.close(&key, tz, out);
        }
    }

    fn close(&mut self, key: &WindowKey, tz: Tz, out: &mut Vec<Notification>) {
        if let Some(w) = self.windows.remove(key) {
            self.dirty.insert(key.clone());
            if w.folded.is_some() {
                out.push(digest(w, tz));
            }
        }
    }

    /// Forgets the windows of transports no longer configured (a reload
    /// removed them): there is nothing to send their digests through.
    pub fn retain_transports(&mut self, budgets: &Budgets) {
        let gone: Vec<WindowKey> =
            self.windows.keys().filter(|(_, t)| !budgets.transports.contains_key(t)).cloned().collect();
        for key in gone {
            self.windows.remove(&key);
            self.dirty.insert(key);
        }
    }

    /// Passes a notification through the budgets of its recipients'
    /// holders: pushes it to `out` (without the recipients whose share was
    /// folded; not at all when nobody is left), preceded by the digests of
    /// windows that ended before it, and an audit record per folded share.
    pub fn admit(
        &mut self,
        mut n: Notification,
        rule_mode: Option<Mode>,
        budgets: &Budgets,
        tz: Tz,
        out: &mut Vec<Notification>,
        audit: &mut Vec<AuditRecord>,
    ) {
        if !budgets.transports.contains_key(&n.transport) {
            out.push(n);
            return;
        }
        let mode = Mode::effective(rule_mode, n.severity);
        if mode == Mode::Exempt {
            out.push(n);
            return;
        }
        let now = n.created_at;
        // The holders in the order their recipients come.
        let mut holders: Vec<String> = Vec::new();
        for r in &n.recipients {
            let h = holder(r);
            if !holders.contains(&h) {
                holders.push(h);
            }
        }
        let mut dropped: Vec<String> = Vec::new();
        for h in holders {
            let Some((class, limit)) = budgets.limit(&h, &n.transport) else { continue };
            let key = (h, n.transport.clone());
            if self.windows.get(&key).is_some_and(|w| w.ends <= now) {
                self.close(&key, tz, out);
            }
            let pair = pair_hash(&key.0, &key.1);
            let verdict = self.verdict(&key, pair, class, limit, mode, &n);
            // Shown, or resolved quietly: nothing of it is folded any more.
            if !matches!(verdict, Verdict::Fold(_)) {
                for a in &n.alerts {
                    self.quiet.remove(&(pair, a.fingerprint));
                }
            }
            match verdict {
                Verdict::Show => {
                    if let Some(w) = self.windows.get_mut(&key) {
                        w.shown += 1;
                    }
                }
                Verdict::Quiet(number) => {
                    audit.push(folded_record(
                        &n,
                        &key,
                        format!(
                            "resolved quietly: its firing was folded into digest #{number} ({} via {})",
                            key.0, key.1
                        ),
                    ));
                    dropped.push(key.0.clone());
                    continue;
                }
                Verdict::Fold(why) => {
                    let window = self.windows.get_mut(&key).expect("opened by verdict");
                    let number = match &window.folded {
                        Some(f) => f.number,
                        None => {
                            let number = self.next_digest.max(1);
                            self.next_digest = number + 1;
                            self.digest_moved = true;
                            number
                        }
                    };
                    // The window's limit decided (a reload changes only later windows).
                    let (class, limit) = (window.class, window.limit);
                    let recipients: Vec<Recipient> =
                        n.recipients.iter().filter(|r| holder(r) == key.0).cloned().collect();
                    fold_into(window, number, &n, recipients);
                    if n.status == "firing" {
                        for a in n.alerts.iter().filter(|a| a.status == "firing") {
                            self.remember_quiet(pair, a.fingerprint, number);
                        }
                    }
                    audit.push(folded_record(
                        &n,
                        &key,
                        format!(
                            "folded into digest #{number} by budget {} {limit}{why} ({} via {})",
                            class.as_str(),
                            key.0,
                            key.1
                        ),
                    ));
                    dropped.push(key.0.clone());
                }
            }
            self.dirty.insert(key);
        }
        if !dropped.is_empty() {
            n.recipients.retain(|r| !dropped.contains(&holder(r)));
        }
        if !n.recipients.is_empty() {
            out.push(n);
        }
    }

    /// Decides one holder's share, opening the window when there is none.
    fn verdict(
        &mut self,
        key: &WindowKey,
        pair: u64,
        class: Class,
        limit: Limit,
        mode: Mode,
        n: &Notification,
    ) -> Verdict {
        if n.status == "resolved" && !n.alerts.is_empty() {
            let numbers: Vec<Option<u64>> =
                n.alerts.iter().map(|a| self.quiet.get(&(pair, a.fingerprint)).copied()).collect();
            if let Some(Some(number)) = numbers.first()
                && numbers.iter().all(Option::is_some)
            {
                return Verdict::Quiet(*number);
            }
        }
        let now = n.created_at;
        let window = self.windows.entry(key.clone()).or_insert_with(|| Window {
            holder: key.0.clone(),
            transport: key.1.clone(),
            class,
            limit,
            opened: now,
            ends: now + chrono::Duration::from_std(limit.per).unwrap_or(chrono::Duration::MAX),
            shown: 0,
            folded: None,
        });
        let cap = window.limit.count;
        match mode {
            Mode::Counted if window.shown < cap.saturating_mul(2) => Verdict::Show,
            Mode::Counted => {
                Verdict::Fold(format!(", beyond its hard cap of {} for critical alerts", cap.saturating_mul(2)))
            }
            _ if window.shown < cap => Verdict::Show,
            _ => Verdict::Fold(String::new()),
        }
    }

    fn remember_quiet(&mut self, pair: u64, fp: Fingerprint, number: u64) {
        if self.quiet.insert((pair, fp), number).is_none() {
            self.quiet_order.push_back((pair, fp));
        }
        while self.quiet.len() > MAX_QUIET {
            let Some(old) = self.quiet_order.pop_front() else { break };
            self.quiet.remove(&old);
        }
        // Entries forgotten on a show or a resolution stay in the order
        // until here: drop them before the order outgrows the map.
        if self.quiet_order.len() > 2 * MAX_QUIET {
            let mut seen = std::collections::HashSet::new();
            let quiet = &self.quiet;
            self.quiet_order.retain(|k| quiet.contains_key(k) && seen.insert(*k));
        }
    }
}

fn folded_record(n: &Notification, key: &WindowKey, reason: String) -> AuditRecord {
    AuditRecord {
        time: n.created_at,
        rule: n.rule.clone(),
        fingerprint: n.alerts.first().map(|a| a.fingerprint),
        transport: Some(key.1.clone()),
        notification: Some(n.id.clone()),
        status: "folded".into(),
        reason: Some(reason),
        summary: Some(summary_of(n)),
    }
}

/// One line about a notification: its only alert's summary, else its title.
fn summary_of(n: &Notification) -> String {
    match n.alerts.as_slice() {
        [a] => a.summary.clone(),
        _ => n.title.clone(),
    }
}

/// The host a notification is about, for the digest's counts.
fn host_of(n: &Notification) -> String {
    let mut hosts = n.alerts.iter().map(|a| a.host.as_str());
    match hosts.next() {
        None => String::new(),
        Some(first) if hosts.all(|h| h == first) => first.to_string(),
        Some(_) => "several hosts".into(),
    }
}

fn fold_into(w: &mut Window, number: u64, n: &Notification, recipients: Vec<Recipient>) {
    let at = n.created_at;
    let f = w.folded.get_or_insert_with(|| Folded {
        number,
        count: 0,
        worst: n.severity,
        first: at,
        last: at,
        kinds: Vec::new(),
        other: 0,
        recipients: Vec::new(),
    });
    f.count += 1;
    f.worst = f.worst.max(n.severity);
    f.first = f.first.min(at);
    f.last = f.last.max(at);
    let host = host_of(n);
    match f.kinds.iter().position(|k| k.rule == n.rule && k.host == host) {
        Some(i) => f.kinds[i].count += 1,
        None if f.kinds.len() < MAX_KINDS => f.kinds.push(Kind { rule: n.rule.clone(), host, count: 1 }),
        None => f.other += 1,
    }
    for r in recipients {
        if !f.recipients.contains(&r) {
            f.recipients.push(r);
        }
    }
}

/// `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How long a popup digest may grow: well inside the Messenger limit of
/// 652 bytes, so the transport never has to cut it.
const POPUP_DIGEST_MAX: usize = 480;

/// The digest of a closed window.
fn digest(w: Window, tz: Tz) -> Notification {
    let mut f = w.folded.expect("a window with folds");
    // Most common first; equal counts in the order they came.
    f.kinds.sort_by_key(|k| std::cmp::Reverse(k.count));
    let time = |t: DateTime<Utc>| t.with_timezone(&tz).format("%H:%M:%S").to_string();
    let zone = tz.name();
    let worst = f.worst.as_str().to_uppercase();
    let more = thousands(f.count);
    let title = format!("Digest #{}: {more} more notifications (worst: {})", f.number, f.worst.as_str());
    let text = match w.class {
        Class::Popups => {
            let head = format!("{worst}: and {more} more, {} to {} {zone}: ", time(f.first), time(f.last));
            let tail = format!(
                ". Held back by the budget of {} {}; `alerter history --status folded` lists each.",
                w.class.as_str(),
                w.limit
            );
            let mut items: Vec<String> = f
                .kinds
                .iter()
                .map(|k| {
                    let on = if k.host.is_empty() { String::new() } else { format!(" on {}", k.host) };
                    format!("{} x {}{on}", thousands(k.count), k.rule)
                })
                .collect();
            if f.other > 0 {
                items.push(format!("{} others", thousands(f.other)));
            }
            // The most common kinds, as many as fit beside the rest.
            let room = POPUP_DIGEST_MAX.saturating_sub(head.len() + tail.len() + 24);
            let mut list = String::new();
            let mut listed = 0;
            for item in &items {
                if listed > 0 && list.len() + item.len() + 2 > room {
                    break;
                }
                if listed > 0 {
                    list.push_str(", ");
                }
                list.push_str(item);
                listed += 1;
            }
            if listed < items.len() {
                list.push_str(&format!(" and {} other kinds", items.len() - listed));
            }
            format!("{head}{list}{tail}")
        }
        Class::Mails => {
            let date = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string();
            let mut text = format!(
                "{more} notifications to {} through `{}` were held back by the budget of {} {}\n\
                 between {} and {} {zone}; the first {} of the window were sent.\n\n\
                 Worst severity: {}\n\n",
                w.holder,
                w.transport,
                w.class.as_str(),
                w.limit,
                date(f.first),
                date(f.last),
                w.shown,
                f.worst.as_str(),
            );
            let width = f.kinds.iter().map(|k| k.rule.chars().count()).max().unwrap_or(4).max(4);
            text.push_str(&format!("  {:>9}  {:<width$}  host\n", "count", "rule"));
            for k in &f.kinds {
                text.push_str(&format!("  {:>9}  {:<width$}  {}\n", thousands(k.count), k.rule, k.host));
            }
            if f.other > 0 {
                text.push_str(&format!("  {:>9}  (other rules and hosts)\n", thousands(f.other)));
            }
            text.push_str(&format!(
                "\nEach one is in the history, with its text:\n  alerter history --status folded --since {}\n",
                f.first.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
            text
        }
    };
    Notification {
        id: notification_id(&format!("digest:{}", w.holder), &f.number.to_string(), &w.transport, w.ends),
        created_at: w.ends,
        rule: format!("digest:{}", w.holder),
        transport: w.transport,
        status: "digest".into(),
        severity: f.worst,
        title,
        text,
        html: None,
        recipients: f.recipients,
        alerts: Vec::new(),
        group: BTreeMap::new(),
        repeat: false,
        offline: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::AlertSummary;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn person(id: &str, group: Option<&str>) -> Recipient {
        Recipient {
            id: id.into(),
            name: None,
            machine: Some(id.to_uppercase()),
            user: None,
            email: None,
            group: group.map(str::to_string),
        }
    }

    fn limit(count: u32, secs: u64) -> Limit {
        Limit { count, per: Duration::from_secs(secs) }
    }

    /// `popup` (popups, 5 per 10s by default here) and `mail` (mails,
    /// unlimited unless a holder says otherwise); `log` has no budget.
    fn budgets() -> Budgets {
        let mut b = Budgets::default();
        b.transports.insert(
            "popup".into(),
            TransportBudget { class: Class::Popups, allowance: Some(Allowance::Limited(limit(5, 10))) },
        );
        b.transports.insert("mail".into(), TransportBudget { class: Class::Mails, allowance: None });
        b
    }

    fn note(
        i: u64,
        transport: &str,
        severity: Severity,
        status: &str,
        to: Vec<Recipient>,
        at: DateTime<Utc>,
    ) -> Notification {
        Notification {
            id: format!("n{i}"),
            created_at: at,
            rule: "app-errors".into(),
            transport: transport.into(),
            status: status.into(),
            severity,
            title: format!("error {i}"),
            text: format!("error {i}"),
            html: None,
            recipients: to,
            alerts: vec![AlertSummary {
                fingerprint: Fingerprint(i),
                status: status.into(),
                source: "log".into(),
                host: "web01".into(),
                severity,
                summary: format!("error {i}"),
                details: String::new(),
                labels: BTreeMap::new(),
                since: at,
                count: 1,
            }],
            group: BTreeMap::new(),
            repeat: false,
            offline: None,
        }
    }

    struct Run {
        ledger: Ledger,
        budgets: Budgets,
        out: Vec<Notification>,
        audit: Vec<AuditRecord>,
    }

    impl Run {
        fn new(budgets: Budgets) -> Run {
            Run { ledger: Ledger::default(), budgets, out: Vec::new(), audit: Vec::new() }
        }

        fn admit(&mut self, n: Notification, mode: Option<Mode>) {
            self.ledger.admit(n, mode, &self.budgets, chrono_tz::UTC, &mut self.out, &mut self.audit);
        }

        fn due(&mut self, now: DateTime<Utc>) {
            self.ledger.due(now, chrono_tz::UTC, &mut self.out);
        }

        fn ids(&self) -> Vec<&str> {
            self.out.iter().map(|n| n.id.as_str()).collect()
        }
    }

    #[test]
    fn a_storm_shows_the_budget_then_one_digest_naming_the_rest() {
        let mut r = Run::new(budgets());
        let alice = || vec![person("alice", None)];
        for i in 0..10_000 {
            r.admit(note(i, "popup", Severity::Warning, "firing", alice(), t(0)), None);
        }
        assert_eq!(r.ids(), ["n0", "n1", "n2", "n3", "n4"]);
        assert_eq!(r.audit.len(), 9_995, "every folded one is recorded");
        assert!(r.audit.iter().all(|a| a.status == "folded"));
        assert_eq!(
            r.audit[0].reason.as_deref(),
            Some("folded into digest #1 by budget popups 5 per 10s (alice via popup)")
        );
        assert_eq!(r.audit[0].notification.as_deref(), Some("n5"));
        assert_eq!(r.ledger.next_wakeup(), Some(t(10)));

        r.due(t(9));
        assert_eq!(r.out.len(), 5, "not before the window ends");
        r.due(t(10));
        let d = &r.out[5];
        assert_eq!((d.rule.as_str(), d.status.as_str(), d.severity), ("digest:alice", "digest", Severity::Warning));
        assert_eq!(d.recipients, alice());
        assert_eq!(d.created_at, t(10));
        assert_eq!(
            d.text,
            "WARNING: and 9,995 more, 00:00:00 to 00:00:00 UTC: 9,995 x app-errors on web01. Held back by the \
             budget of popups 5 per 10s; `alerter history --status folded` lists each."
                .replace("00:00:00", &t(0).format("%H:%M:%S").to_string())
        );
        assert_eq!(d.title, "Digest #1: 9,995 more notifications (worst: warning)");
        assert_eq!(r.ledger.next_wakeup(), None, "the window is closed");
        let changes = r.ledger.take_changes();
        assert_eq!(changes.windows.get(&("alice".to_string(), "popup".to_string())), Some(&None), "and forgotten");
        assert_eq!(changes.next_digest, Some(2));
    }

    #[test]
    fn a_critical_alert_in_a_storm_is_shown_at_once_and_criticals_stop_at_twice_the_budget() {
        let mut r = Run::new(budgets());
        let alice = || vec![person("alice", None)];
        for i in 0..50 {
            r.admit(note(i, "popup", Severity::Warning, "firing", alice(), t(1)), None);
        }
        r.admit(note(1000, "popup", Severity::Critical, "firing", alice(), t(2)), None);
        assert_eq!(r.ids(), ["n0", "n1", "n2", "n3", "n4", "n1000"]);
        // Criticals count: with six shown, four more fit under the cap of 10.
        for i in 1001..1010 {
            r.admit(note(i, "popup", Severity::Critical, "firing", alice(), t(3)), None);
        }
        assert_eq!(r.out.len(), 10);
        let last = r.audit.last().unwrap();
        assert_eq!(last.notification.as_deref(), Some("n1009"));
        assert_eq!(
            last.reason.as_deref(),
            Some(
                "folded into digest #1 by budget popups 5 per 10s, beyond its hard cap of 10 for critical alerts \
                 (alice via popup)"
            )
        );
        r.due(t(11));
        assert_eq!(r.out[10].severity, Severity::Critical, "the digest carries the worst severity");
    }

    #[test]
    fn a_rule_may_fold_its_criticals_or_exempt_everything() {
        let mut r = Run::new(budgets());
        let alice = || vec![person("alice", None)];
        for i in 0..5 {
            r.admit(note(i, "popup", Severity::Warning, "firing", alice(), t(0)), None);
        }
        r.admit(note(5, "popup", Severity::Critical, "firing", alice(), t(0)), Some(Mode::Folded));
        assert_eq!(r.out.len(), 5, "folded like a warning");
        for i in 6..30 {
            r.admit(note(i, "popup", Severity::Warning, "firing", alice(), t(0)), Some(Mode::Exempt));
        }
        assert_eq!(r.out.len(), 29, "exempt: neither counted nor folded");
        r.admit(note(30, "popup", Severity::Warning, "firing", alice(), t(0)), Some(Mode::Counted));
        assert_eq!(r.out.len(), 30, "counted: shown while under the cap");
    }

    #[test]
    fn a_group_has_one_budget_and_its_digest_reaches_each_member() {
        let mut r = Run::new(budgets());
        let ops = || vec![person("alice", Some("ops")), person("bob", Some("ops"))];
        for i in 0..8 {
            r.admit(note(i, "popup", Severity::Warning, "firing", ops(), t(0)), None);
        }
        assert_eq!(r.out.len(), 5, "five notifications, not five per member");
        assert_eq!(r.out[4].recipients, ops());
        assert_eq!(r.audit.len(), 3, "one record per folded notification for the group");
        assert!(r.audit[0].reason.as_deref().unwrap().ends_with("(@ops via popup)"));
        r.due(t(10));
        assert_eq!(r.out[5].rule, "digest:@ops");
        assert_eq!(r.out[5].recipients, ops());
    }

    #[test]
    fn each_holder_is_counted_apart_and_only_the_spent_ones_are_trimmed() {
        let mut b = budgets();
        b.holders.insert("bob".into(), Allowances { popups: Some(Allowance::Unlimited), mails: None });
        b.holders.insert("carol".into(), Allowances { popups: Some(Allowance::Limited(limit(1, 60))), mails: None });
        let mut r = Run::new(b);
        let all = || vec![person("alice", None), person("bob", None), person("carol", None)];
        for i in 0..7 {
            r.admit(note(i, "popup", Severity::Warning, "firing", all(), t(0)), None);
        }
        let to = |n: &Notification| n.recipients.iter().map(|r| r.id.clone()).collect::<Vec<_>>().join(",");
        let shown: Vec<String> = r.out.iter().map(to).collect();
        assert_eq!(shown, ["alice,bob,carol", "alice,bob", "alice,bob", "alice,bob", "alice,bob", "bob", "bob"]);
        // Carol's window is a minute, alice's ten seconds.
        assert_eq!(r.ledger.next_wakeup(), Some(t(10)));
        r.due(t(10));
        assert_eq!(r.out.last().unwrap().rule, "digest:alice");
        r.due(t(60));
        assert_eq!(r.out.last().unwrap().rule, "digest:carol");
    }

    #[test]
    fn transports_read_by_machines_never_meet_a_budget() {
        let mut b = budgets();
        b.holders.insert("alice".into(), Allowances { popups: None, mails: Some(Allowance::Limited(limit(1, 60))) });
        let mut r = Run::new(b);
        for i in 0..100 {
            r.admit(note(i, "log", Severity::Warning, "firing", vec![person("alice", None)], t(0)), None);
        }
        assert_eq!(r.out.len(), 100);
        assert!(r.audit.is_empty() && r.ledger.windows().next().is_none());
        // Mails: the holder's own budget, though the transport has none.
        for i in 0..3 {
            r.admit(note(100 + i, "mail", Severity::Warning, "firing", vec![person("alice", None)], t(0)), None);
        }
        assert_eq!(r.out.len(), 101);
    }

    #[test]
    fn a_folded_firing_resolves_quietly_and_a_shown_one_does_not() {
        let mut r = Run::new(budgets());
        let alice = || vec![person("alice", None)];
        for i in 0..7 {
            r.admit(note(i, "popup", Severity::Warning, "firing", alice(), t(0)), None);
        }
        assert_eq!(r.out.len(), 5);
        r.due(t(10));
        assert_eq!(r.out.len(), 6, "the digest");
        // Resolutions of n6 (folded) and n0 (shown), in a new window.
        r.admit(note(6, "popup", Severity::Resolved, "resolved", alice(), t(20)), None);
        r.admit(note(0, "popup", Severity::Resolved, "resolved", alice(), t(20)), None);
        assert_eq!(r.out.len(), 7);
        assert_eq!(r.out[6].alerts[0].fingerprint, Fingerprint(0));
        let quiet = r.audit.last().unwrap();
        assert_eq!(
            quiet.reason.as_deref(),
            Some("resolved quietly: its firing was folded into digest #1 (alice via popup)")
        );
        // And it used none of the new window's budget.
        assert_eq!(r.ledger.windows().next().unwrap().shown, 1);
    }

    #[test]
    fn a_window_that_ended_sends_its_digest_before_the_next_notification() {
        let mut r = Run::new(budgets());
        let alice = || vec![person("alice", None)];
        for i in 0..6 {
            r.admit(note(i, "popup", Severity::Warning, "firing", alice(), t(0)), None);
        }
        // No tick at t(10): the next notification closes the window itself.
        r.admit(note(6, "popup", Severity::Warning, "firing", alice(), t(15)), None);
        assert_eq!(r.out.len(), 7);
        assert_eq!(r.out[5].status, "digest");
        assert_eq!(r.out[5].created_at, t(10));
        assert_eq!(r.out[6].id, "n6", "shown: a new window");
        assert_eq!(r.ledger.windows().next().unwrap().opened, t(15));
    }

    #[test]
    fn a_popup_digest_of_many_kinds_stays_short_and_a_mail_lists_them_all() {
        let mut b = budgets();
        b.transports.insert(
            "mail".into(),
            TransportBudget { class: Class::Mails, allowance: Some(Allowance::Limited(limit(1, 3600))) },
        );
        let mut r = Run::new(b);
        for transport in ["popup", "mail"] {
            for i in 0..1000u64 {
                let mut n =
                    note(i, transport, Severity::Warning, "firing", vec![person("alice", None)], t(i as i64 / 100));
                n.rule = format!("rule-{:03}", i % 150);
                r.admit(n, None);
            }
        }
        r.due(t(3600));
        let popup = r.out.iter().find(|n| n.status == "digest" && n.transport == "popup").unwrap();
        assert!(popup.text.len() <= POPUP_DIGEST_MAX, "{} bytes: {}", popup.text.len(), popup.text);
        assert!(popup.text.starts_with("WARNING: and 995 more, "), "{}", popup.text);
        assert!(popup.text.contains(" other kinds. Held back"), "{}", popup.text);
        let mail = r.out.iter().find(|n| n.status == "digest" && n.transport == "mail").unwrap();
        assert!(
            mail.text.starts_with(
                "999 notifications to alice through `mail` were held back by the budget of mails 1 per 1h\n"
            )
        );
        // 100 kinds one by one, the rest together.
        assert_eq!(mail.text.lines().filter(|l| l.contains(" rule-")).count(), MAX_KINDS);
        assert!(mail.text.contains("(other rules and hosts)"), "{}", mail.text);
        assert!(mail.text.contains("alerter history --status folded --since "), "{}", mail.text);
    }

    #[test]
    fn windows_survive_a_restart_and_digest_numbers_go_on() {
        let mut r = Run::new(budgets());
        for i in 0..7 {
            r.admit(note(i, "popup", Severity::Warning, "firing", vec![person("alice", None)], t(0)), None);
        }
        let changes = r.ledger.take_changes();
        // What the store keeps: the windows as JSON.
        let kept: Vec<Window> = changes
            .windows
            .values()
            .flatten()
            .map(|w| serde_json::from_str(&serde_json::to_string(w).unwrap()).unwrap())
            .collect();
        let mut again = Run::new(budgets());
        again.ledger = Ledger::restore(kept, changes.next_digest.unwrap());
        again.admit(note(7, "popup", Severity::Warning, "firing", vec![person("alice", None)], t(1)), None);
        assert!(again.out.is_empty(), "the budget spent before the restart stays spent");
        again.due(t(10));
        assert!(again.out[0].title.starts_with("Digest #1: 3 more"), "{}", again.out[0].title);
        again.admit(note(8, "mail", Severity::Warning, "firing", vec![person("bob", None)], t(11)), None);
        for i in 9..20 {
            again.admit(note(i, "popup", Severity::Warning, "firing", vec![person("bob", None)], t(11)), None);
        }
        again.due(t(30));
        assert!(again.out.last().unwrap().title.starts_with("Digest #2:"), "{}", again.out.last().unwrap().title);
    }

    #[test]
    fn a_budget_reads_as_written() {
        assert_eq!(limit(5, 600).to_string(), "5 per 10m");
        assert_eq!(limit(20, 3600).to_string(), "20 per 1h");
        assert_eq!(limit(3, 90).to_string(), "3 per 90s");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
