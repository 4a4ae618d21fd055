//! Notifications: what a transport delivers, and how router decisions and
//! notices become them (template rendering, one notification per transport).
//!
//! Pure: rendering takes the decision and the compiled config, nothing else.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Fingerprint, Severity};
use crate::rules::Recipient;
use crate::rules::router::Dispatch;
use crate::template::{Part, Templates, default_template};

/// One message for one transport, to one or more recipients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable identity: the same decision always gets the same id, so a
    /// retried delivery can be recognised (e.g. as a mail Message-ID).
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// The rule that decided it, or `notice:<name>`.
    pub rule: String,
    pub transport: String,
    /// `firing`, `resolved` or `notice`.
    pub status: String,
    pub severity: Severity,
    pub title: String,
    pub text: String,
    /// An HTML alternative, for transports that want one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    pub recipients: Vec<Recipient>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertSummary>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
    /// For a popup: how long it is kept for recipients who are nowhere to
    /// be found, and what is sent to them instead after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<Offline>,
}

/// Store-and-forward of one popup (see [`OfflinePolicy`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offline {
    /// Until when the popup waits for recipients who are nowhere.
    pub until: DateTime<Utc>,
    /// What goes out instead, after that, to those still nowhere:
    /// rendered now (the outbox has no templates), addressed to every
    /// recipient the fallback transport reaches, narrowed to the absent
    /// ones when it is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<Box<Notification>>,
}

/// How a popup transport (or a rule, for its popups) keeps a popup for
/// someone who is nowhere: `wait` this long for their name to appear,
/// then send it through transport `then`, if any. What a rule leaves out
/// comes from the transport; a wait neither gives is the transport's
/// `max_age`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfflinePolicy {
    pub wait: Option<std::time::Duration>,
    pub then: Option<String>,
}

/// An alert inside a notification (and in templates as `alerts[i]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertSummary {
    pub fingerprint: Fingerprint,
    pub status: String,
    pub source: String,
    pub host: String,
    pub severity: Severity,
    pub summary: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub since: DateTime<Utc>,
    /// Events merged into it since the last notification.
    pub count: u64,
}

impl AlertSummary {
    /// A firing alert as it stands now, for re-sending it (the
    /// alertmanager transport keeps alerts alive with these).
    pub fn firing(a: &crate::rules::router::Alert) -> AlertSummary {
        AlertSummary::of(a.fingerprint, "firing".into(), &a.event, a.since, a.count)
    }

    fn of(fingerprint: Fingerprint, status: String, e: &crate::event::Event, since: DateTime<Utc>, count: u64) -> Self {
        AlertSummary {
            fingerprint,
            status,
            source: e.source.clone(),
            host: e.host.clone(),
            severity: e.severity,
            summary: e.summary.clone(),
            details: e.details.clone(),
            labels: e.labels.clone(),
            since,
            count,
        }
    }
}

/// What rendering needs to know about a transport.
#[derive(Debug, Clone)]
pub struct TransportInfo {
    pub kind: &'static str,
    /// Render an HTML alternative too.
    pub html: bool,
    /// Store-and-forward, for a popup transport that has it.
    pub offline: Option<OfflinePolicy>,
    /// How long its notifications are retried.
    pub max_age: std::time::Duration,
}

/// What rendering needs from the configuration.
#[derive(Debug)]
pub struct RenderCx<'a> {
    pub templates: &'a Templates,
    pub transports: &'a BTreeMap<String, TransportInfo>,
    pub alerter_name: &'a str,
    pub workgroup: &'a str,
}

#[derive(Serialize)]
struct Context<'a> {
    rule: &'a str,
    status: &'a str,
    severity: Severity,
    summary: String,
    source: &'a str,
    host: &'a str,
    count: usize,
    alerts: &'a [AlertSummary],
    firing: Vec<&'a AlertSummary>,
    resolved: Vec<&'a AlertSummary>,
    group: &'a BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    alerter: &'a str,
    workgroup: &'a str,
    repeat: bool,
    now: String,
}

/// Template names for a part, most specific first.
pub fn template_names(rule: &str, has_rule_template: bool, transport: &str, part: Part) -> Vec<String> {
    let part = match part {
        Part::Title => "title",
        Part::Text => "text",
        Part::Html => "html",
    };
    let mut names = Vec::with_capacity(2);
    if has_rule_template {
        names.push(format!("rule/{rule}/{part}"));
    }
    names.push(format!("transport/{transport}/{part}"));
    names
}

/// The time of the decision in milliseconds (11 hex digits, good until the
/// year 2527), then a hash of what was decided. Led by the time, ids sort
/// in the order they are made, so the outbox's index on them grows at its
/// end instead of taking every new id somewhere in the middle (under a
/// storm that rewrote a page of the index per notification).
pub(crate) fn notification_id(rule: &str, group: &str, transport: &str, at: DateTime<Utc>) -> String {
    use xxhash_rust::xxh3::Xxh3;
    let mut h = Xxh3::new();
    for part in [rule, group, transport] {
        h.update(part.as_bytes());
        h.update(&[0xff]);
    }
    h.update(&at.timestamp_nanos_opt().unwrap_or_default().to_le_bytes());
    format!("{:011x}{:016x}", at.timestamp_millis().max(0), h.digest())
}

/// Renders a router decision into one notification per target transport.
/// Template errors fall back to the built-in template and are returned for
/// logging; a notification is never dropped because of one.
pub fn render_dispatch(d: &Dispatch, cx: &RenderCx<'_>) -> (Vec<Notification>, Vec<String>) {
    let alerts: Vec<AlertSummary> = d
        .alerts
        .iter()
        .map(|a| AlertSummary::of(a.fingerprint, a.status.to_string(), &a.event, a.since, a.count))
        .collect();
    let firing: Vec<&AlertSummary> = alerts.iter().filter(|a| a.status == "firing").collect();
    let resolved: Vec<&AlertSummary> = alerts.iter().filter(|a| a.status == "resolved").collect();
    let status = if firing.is_empty() { "resolved" } else { "firing" };
    let severity = firing.iter().map(|a| a.severity).max().unwrap_or(Severity::Resolved);
    let first = alerts.first();
    let summary = match alerts.len() {
        1 => alerts[0].summary.clone(),
        n => {
            let group: Vec<String> = d.group_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut s = format!("{n} alerts");
            if !group.is_empty() {
                s.push_str(&format!(" for {}", group.join(", ")));
            }
            s.push_str(&format!(" ({} firing, {} resolved)", firing.len(), resolved.len()));
            s
        }
    };
    // Labels common to every alert, for templates that want e.g. `labels.mount`.
    let mut labels = first.map(|a| a.labels.clone()).unwrap_or_default();
    for a in alerts.iter().skip(1) {
        labels.retain(|k, v| a.labels.get(k) == Some(v));
    }
    let all_same = |f: fn(&AlertSummary) -> &str| -> &str {
        match first {
            Some(a0) if alerts.iter().all(|a| f(a) == f(a0)) => f(a0),
            Some(_) => "(several)",
            None => "",
        }
    };
    let ctx = Context {
        rule: &d.rule.name,
        status,
        severity,
        summary,
        source: all_same(|a| &a.source),
        host: all_same(|a| &a.host),
        count: alerts.len(),
        alerts: &alerts,
        firing,
        resolved,
        group: &d.group_labels,
        labels,
        alerter: cx.alerter_name,
        workgroup: cx.workgroup,
        repeat: d.repeat,
        now: d.at.to_rfc3339(),
    };
    let ctx = Templates::context_value(&ctx);
    let mut out = Vec::with_capacity(d.rule.targets.len());
    let mut errors = Vec::new();
    // Title, text and HTML (when it wants one) for one transport.
    let mut render = |transport: &str| {
        let info = cx.transports.get(transport);
        let kind = info.map_or("log", |t| t.kind);
        let mut part = |part: Part, has_rule: bool| {
            let names = template_names(&d.rule.name, has_rule, transport, part);
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let (text, err) = cx.templates.render_value(&refs, default_template(kind, part), &ctx);
            errors.extend(err);
            text
        };
        let title = part(Part::Title, d.rule.has_title);
        let text = part(Part::Text, d.rule.has_text);
        let html = info.is_some_and(|t| t.html).then(|| part(Part::Html, d.rule.has_html));
        (title, text, html)
    };
    for target in &d.rule.targets {
        let (title, text, html) = render(&target.transport);
        let mut n = Notification {
            id: notification_id(&d.rule.name, &d.group_key, &target.transport, d.at),
            created_at: d.at,
            rule: d.rule.name.clone(),
            transport: target.transport.clone(),
            status: status.to_string(),
            severity,
            title,
            text,
            html,
            recipients: target.recipients.clone(),
            alerts: alerts.clone(),
            group: d.group_labels.clone(),
            repeat: d.repeat,
            offline: None,
        };
        if let Some(policy) = offline_policy(cx, &target.transport, d.rule.offline.as_ref()) {
            n.offline = Some(offline(&n, policy, cx, |then| render(then)));
        }
        out.push(n);
    }
    (out, errors)
}

/// A store-and-forward policy resolved: how long, and through what then.
struct Resolved<'a> {
    wait: std::time::Duration,
    then: Option<&'a String>,
}

/// The store-and-forward policy of a notification through `transport`:
/// the rule's, completed by the transport's; only popup transports have
/// one, and only when the rule or the transport asks for it.
fn offline_policy<'a>(cx: &'a RenderCx<'_>, transport: &str, rule: Option<&'a OfflinePolicy>) -> Option<Resolved<'a>> {
    let info = cx.transports.get(transport)?;
    if info.kind != "messenger" || (rule.is_none() && info.offline.is_none()) {
        return None;
    }
    let own = info.offline.as_ref();
    Some(Resolved {
        wait: rule.and_then(|r| r.wait).or(own.and_then(|t| t.wait)).unwrap_or(info.max_age),
        then: rule.and_then(|r| r.then.as_ref()).or(own.and_then(|t| t.then.as_ref())),
    })
}

/// `n`'s store-and-forward: its deadline, and the fallback notification
/// (rendered by `render` for the fallback transport) to every recipient
/// that transport reaches. A fallback to nobody is none.
fn offline(
    n: &Notification,
    policy: Resolved<'_>,
    cx: &RenderCx<'_>,
    render: impl FnOnce(&str) -> (String, String, Option<String>),
) -> Offline {
    let until = n.created_at + chrono::Duration::from_std(policy.wait).unwrap_or(chrono::Duration::MAX);
    let then = policy.then.and_then(|then| {
        let kind = cx.transports.get(then)?.kind;
        let recipients: Vec<Recipient> =
            n.recipients.iter().filter(|r| !r.is_workgroup() && r.reachable_by(kind)).cloned().collect();
        if recipients.is_empty() {
            return None;
        }
        let (title, text, html) = render(then);
        Some(Box::new(Notification {
            // Its own id (the same decision may also notify through `then`
            // directly), made from the popup's, so it is stable too.
            id: notification_id(&n.id, "offline", then, n.created_at),
            transport: then.clone(),
            title,
            text,
            html,
            recipients,
            offline: None,
            ..n.clone()
        }))
    });
    Offline { until, then }
}

/// Builds a notice's notifications (no templates beyond the notice's own
/// message, which the caller has rendered).
pub fn notice_notifications(
    name: &str,
    title: &str,
    text: &str,
    targets: &[crate::rules::Target],
    at: DateTime<Utc>,
    cx: &RenderCx<'_>,
) -> Vec<Notification> {
    let mut out = plain_notifications(&format!("notice:{name}"), "notice", title, text, targets, at);
    // A notice to someone who is nowhere waits for them like any popup.
    for n in &mut out {
        if let Some(policy) = offline_policy(cx, &n.transport, None) {
            n.offline = Some(offline(n, policy, cx, |_| (title.to_string(), text.to_string(), None)));
        }
    }
    out
}

/// Notifications of a fixed text about no alert (a notice, a test), one
/// per target.
pub fn plain_notifications(
    rule: &str,
    status: &str,
    title: &str,
    text: &str,
    targets: &[crate::rules::Target],
    at: DateTime<Utc>,
) -> Vec<Notification> {
    targets
        .iter()
        .map(|t| Notification {
            id: notification_id(rule, title, &t.transport, at),
            created_at: at,
            rule: rule.to_string(),
            transport: t.transport.clone(),
            status: status.into(),
            severity: Severity::Info,
            title: title.to_string(),
            text: text.to_string(),
            html: None,
            recipients: t.recipients.clone(),
            alerts: Vec::new(),
            group: BTreeMap::new(),
            repeat: false,
            offline: None,
        })
        .collect()
}
