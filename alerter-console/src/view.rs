//! The templates, and what they are given: the API's answers turned into
//! what a page shows (ages, groups, times), with no I/O.
//!
//! Templates escape everything they insert (minijinja's HTML
//! auto-escaping for `.html` names); text from peers and log lines is
//! also made visible (controls shown, not acted on) by the daemon before
//! it gets here.

use alerter_api::types;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The compiled templates.
pub struct Views {
    env: minijinja::Environment<'static>,
}

impl Default for Views {
    fn default() -> Self {
        Views::new()
    }
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("overview.html", include_str!("../templates/overview.html")),
    ("live.html", include_str!("../templates/live.html")),
    ("alert.html", include_str!("../templates/alert.html")),
    ("silences.html", include_str!("../templates/silences.html")),
    ("silence_preview.html", include_str!("../templates/silence_preview.html")),
    ("notices.html", include_str!("../templates/notices.html")),
    ("notice_preview.html", include_str!("../templates/notice_preview.html")),
    ("history.html", include_str!("../templates/history.html")),
    ("network.html", include_str!("../templates/network.html")),
];

impl Views {
    pub fn new() -> Views {
        let mut env = minijinja::Environment::new();
        // A value missing from a page (an optional field) draws as nothing
        // rather than failing the page.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for (name, text) in TEMPLATES {
            env.add_template(name, text).expect("the console's templates compile (a unit test renders each)");
        }
        Views { env }
    }

    /// A template rendered with the frame's values and the page's
    /// (`data` wins where both name a value).
    pub fn render(&self, template: &str, base: Value, data: Value) -> String {
        let mut ctx = base;
        if let (Some(c), Value::Object(d)) = (ctx.as_object_mut(), data) {
            c.extend(d);
        }
        match self.env.get_template(template).and_then(|t| t.render(minijinja::value::Serde(&ctx))) {
            Ok(html) => html,
            Err(e) => {
                // The cause is in the chain (an include names only itself).
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why.push_str(&format!(": {s}"));
                    source = s.source();
                }
                tracing::error!("console: template {template} failed: {why}");
                format!("<!doctype html><title>Error</title><p>The page could not be drawn: {}</p>", escape(&why))
            }
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn html(body: String) -> Response {
    let mut res = body.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    res
}

pub fn url_encode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).map(|q| q[1..].to_string()).unwrap_or_default()
}

/// `?a=1&b=2` of a form's values, or nothing when it has none.
pub fn query_string<T: Serialize>(q: &T) -> String {
    match serde_urlencoded::to_string(q) {
        Ok(s) if !s.is_empty() => format!("?{s}"),
        _ => String::new(),
    }
}

pub fn etag(body: &str) -> String {
    Sha256::digest(body.as_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// A time as pages show it: UTC, to the second.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// How long ago, in its largest unit: `40s`, `5m`, `3h`, `2d`. Whole
/// minutes past the first one, so a page does not change every second.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - since).num_seconds().max(0);
    match s {
        0..60 => "<1m".into(),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The fixed message of a `?done=` after a change (fixed, so a link
/// cannot make the page say anything else).
pub fn done_message(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "acked" => "Acknowledged: its repeats stop until it resolves or gets worse.",
        "silenced" => "The silence is in force.",
        "expired" => "The silence has expired.",
        "noticed" => "The notice is set.",
        "cancelled" => "The notice is cancelled.",
        _ => return None,
    })
}

/// One alert as a row of a list.
#[derive(Debug, Clone, Serialize)]
pub struct AlertRow {
    pub id: String,
    pub rule: String,
    pub state: String,
    pub severity: String,
    pub summary: String,
    pub host: String,
    pub age: String,
    pub since: String,
    pub acked_by: Option<String>,
    pub silenced_by: Option<String>,
}

pub fn alert_row(a: &types::AlertInfo, now: DateTime<Utc>) -> AlertRow {
    AlertRow {
        id: a.id.clone(),
        rule: a.rule.clone(),
        state: a.state.clone(),
        severity: a.severity.clone(),
        summary: a.summary.clone(),
        host: a.host.clone(),
        age: age(a.fired_at.unwrap_or(a.since), now),
        since: time(a.fired_at.unwrap_or(a.since)),
        acked_by: a.ack.as_ref().map(|k| k.by.clone()),
        silenced_by: a.silenced_by.clone(),
    }
}

/// A rule and its alerts on this page.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub rule: String,
    pub alerts: Vec<AlertRow>,
}

/// Consecutive alerts of one rule, grouped (the page comes sorted by rule).
pub fn group_by_rule(alerts: &[types::AlertInfo], now: DateTime<Utc>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for a in alerts {
        let row = alert_row(a, now);
        match groups.last_mut() {
            Some(g) if g.rule == a.rule => g.alerts.push(row),
            _ => groups.push(Group { rule: a.rule.clone(), alerts: vec![row] }),
        }
    }
    groups
}

/// The overview's values.
pub fn overview(
    status: &types::Status,
    page: &types::AlertsPage,
    q: &crate::OverviewQuery,
    n: usize,
    now: DateTime<Utc>,
) -> Value {
    let pages = page.total.div_ceil(crate::PAGE).max(1);
    let link = |p: usize| {
        let q = crate::OverviewQuery { filter: q.filter.clone(), page: Some(p) };
        format!("/{}", query_string(&q))
    };
    let live = format!("/live{}", query_string(q));
    let first = if page.alerts.is_empty() { 0 } else { page.offset + 1 };
    json!({
        "status": status,
        "oldest_pending": status.outbox.oldest_pending_seconds.map(|s| age(now - chrono::Duration::seconds(s as i64), now)),
        "rules": page.rules.iter().map(|r| json!({
            "rule": r.rule, "firing": r.firing, "pending": r.pending, "acknowledged": r.acknowledged,
            "severity": r.severity, "link": format!("/{}", query_string(&crate::OverviewQuery {
                filter: Some(format!("rule=\"{}\"", r.rule.replace('\\', "\\\\").replace('"', "\\\""))), page: None })),
        })).collect::<Vec<_>>(),
        "groups": group_by_rule(&page.alerts, now),
        "total": page.total,
        "first": first,
        "last": page.offset + page.alerts.len(),
        "page_no": n,
        "pages": pages,
        "prev": (n > 1).then(|| link(n - 1)),
        "next": (n < pages).then(|| link(n + 1)),
        "filter": q.filter.clone().unwrap_or_default(),
        "live": live,
        "live_ms": crate::LIVE_MS,
    })
}

/// Matchers that pick out alerts like `a`: its rule, host and labels.
pub fn like_matchers(a: &types::AlertInfo) -> Vec<String> {
    let quote = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let mut m = vec![format!("rule={}", quote(&a.rule)), format!("host={}", quote(&a.host))];
    m.extend(a.labels.iter().map(|(k, v)| format!("{k}={}", quote(v))));
    m
}

pub fn alert(a: &types::AlertInfo, history: &types::HistoryPage, now: DateTime<Utc>) -> Value {
    json!({
        "alert": a,
        "row": alert_row(a, now),
        "first_seen": time(a.since),
        "fired": a.fired_at.map(time),
        "notified": a.last_notified.map(time),
        "ack_at": a.ack.as_ref().map(|k| time(k.at)),
        "silence_link": format!("/silences{}", query_string(&[("matchers", like_matchers(a).join("\n"))])),
        "timeline": self::history(&history.entries),
        "can_ack": a.state == "firing" && a.ack.is_none(),
    })
}

pub fn silences(list: &[types::Silence], now: DateTime<Utc>) -> Vec<Value> {
    list.iter()
        .map(|s| {
            json!({
                "id": s.id, "matchers": s.matchers, "state": s.state, "origin": s.origin,
                "ends": time(s.ends), "starts": s.starts.map(time), "comment": s.comment,
                "created_by": s.created_by,
                "left": (s.ends > now).then(|| age(now - (s.ends - now), now)),
            })
        })
        .collect()
}

pub fn notices(list: &[types::Notice]) -> Vec<Value> {
    list.iter()
        .map(|n| {
            json!({
                "id": n.id, "origin": n.origin, "title": n.title, "text": n.text, "cron": n.cron,
                "at": n.at.map(time), "to": n.to, "created_by": n.created_by,
                "next": n.next.iter().map(|f| json!({ "at": time(f.at), "ahead": f.ahead_seconds })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

pub fn notice_preview(p: &types::NoticePreview) -> Value {
    json!({
        "at": time(p.at),
        "timezone": p.timezone,
        "next": p.next.iter().map(|f| json!({ "at": time(f.at), "ahead": f.ahead_seconds })).collect::<Vec<_>>(),
        "messages": p.messages,
    })
}

pub fn history(entries: &[types::HistoryEntry]) -> Vec<Value> {
    entries
        .iter()
        .map(|e| {
            json!({
                "time": time(e.time), "rule": e.rule, "transport": e.transport, "status": e.status,
                "summary": e.summary, "recipients": e.recipients.join(", "), "attempts": e.attempts,
                "detail": e.detail, "alerts": e.alerts,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_in_their_largest_unit() {
        let now: DateTime<Utc> = "2026-12-03T12:00:00Z".parse().unwrap();
        let ago = |s: i64| age(now - chrono::Duration::seconds(s), now);
        assert_eq!([ago(5), ago(90), ago(7200), ago(3 * 86_400)], ["<1m", "1m", "2h", "3d"]);
        assert_eq!(ago(-5), "<1m", "a clock a little ahead is not a negative age");
    }

    #[test]
    fn matchers_like_an_alert_quote_their_values() {
        let a: types::AlertInfo = serde_json::from_value(json!({
            "id": "0123456789abcdef", "rule": "disk", "state": "firing", "severity": "critical",
            "summary": "s", "source": "disk", "host": "fs1", "labels": {"mount": "/srv \"x\""},
            "since": "2026-12-03T10:00:00Z", "count": 1,
        }))
        .unwrap();
        assert_eq!(like_matchers(&a), vec!["rule=\"disk\"", "host=\"fs1\"", "mount=\"/srv \\\"x\\\"\""]);
    }

    #[test]
    fn inserted_text_is_escaped() {
        let v = Views::new();
        let html = v.render(
            "error.html",
            json!({"daemon": "<b>x</b>", "title": "t"}),
            json!({"message": "<script>alert(1)</script>", "status": 400}),
        );
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<b>x</b>"), "{html}");
    }

    #[test]
    fn every_template_renders_for_a_read_and_an_operate_login() {
        let v = Views::new();
        for scope in ["read", "operate"] {
            let base = json!({"daemon": "FS", "title": "t", "page": "p", "csrf": "00",
                              "user": {"name": "token:x", "scope": scope}, "can_operate": scope == "operate"});
            for (name, _) in TEMPLATES {
                let html = v.render(name, base.clone(), json!({}));
                assert!(!html.contains("could not be drawn"), "{name}: {html}");
            }
        }
    }

    #[test]
    fn only_known_done_messages() {
        assert!(done_message(Some("acked")).is_some());
        assert_eq!(done_message(Some("Call 555-0100 now")), None);
    }
}
