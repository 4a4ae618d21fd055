//! The `alertmanager` source: alerts a Prometheus Alertmanager sends to its
//! webhook receivers, so an Alertmanager route can end in LAN popups.
//!
//! Alertmanager pushes; nothing here polls. The daemon's HTTP API receives
//! the notifications at `POST /api/v1/alertmanager/SOURCE` (scope `ingest`)
//! and turns them into events with [`parse`] and [`events`], using this
//! source's settings; the source itself only holds its place among the
//! sources (its settings checked by `alerter check`, shown by `alerter
//! status`) and waits to be stopped.
//!
//! Each alert of a notification becomes one event: its labels, `summary`
//! (else the first line of `description`, else the alert's name), the
//! `description` and other annotations as details, firing or resolved, and
//! Alertmanager's fingerprint with `startsAt` as the key, so a real re-fire
//! after a resolve is a new alert while repeated notifications of the same
//! one merge into it. How bad it is comes from a label (`severity` by
//! default) through a table admins can extend.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::time::Duration;

use alerter_plugin_sdk::{Context, Error, Source, declare_builtin_source};
use serde::Deserialize;

/// The settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The label that says how bad an alert is. Default: `severity`.
    #[serde(default = "default_severity_label")]
    pub severity_label: String,
    /// Values of that label and the severity each means (`info`, `warning`,
    /// `critical`), in addition to (and overriding) the usual ones:
    /// critical, error, page, fatal, emergency, alert → critical;
    /// warning, warn → warning; info, informational, notice, none, low → info.
    #[serde(default)]
    pub severities: BTreeMap<String, String>,
    /// The severity of an alert whose label is missing or unknown.
    /// Default: `warning`.
    #[serde(default)]
    pub default_severity: Option<String>,
    /// The label naming the host an alert is about (its `:port` dropped).
    /// Default: `instance`, then `host`; without either, the daemon's name.
    #[serde(default = "default_host_label")]
    pub host_label: String,
}

fn default_severity_label() -> String {
    "severity".into()
}

fn default_host_label() -> String {
    "instance".into()
}

const LEVELS: [&str; 3] = ["info", "warning", "critical"];

fn level(s: &str) -> Option<&'static str> {
    LEVELS.iter().copied().find(|l| l.eq_ignore_ascii_case(s.trim()))
}

/// The usual values of a severity label.
fn usual(value: &str) -> Option<&'static str> {
    Some(match value.to_ascii_lowercase().as_str() {
        "critical" | "error" | "page" | "fatal" | "emergency" | "alert" | "high" => "critical",
        "warning" | "warn" | "medium" => "warning",
        "info" | "informational" | "notice" | "none" | "low" => "info",
        _ => return None,
    })
}

impl Config {
    /// Checks the settings; every problem at once.
    pub fn check(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        for (value, sev) in &self.severities {
            if level(sev).is_none() {
                problems.push(Error::at(
                    format!("severities.{value}"),
                    format!("`{sev}` is not a severity; write info, warning or critical"),
                ));
            }
        }
        if let Some(d) = &self.default_severity
            && level(d).is_none()
        {
            problems.push(Error::at(
                "default_severity",
                format!("`{d}` is not a severity; write info, warning or critical"),
            ));
        }
        for (key, value) in [("severity_label", &self.severity_label), ("host_label", &self.host_label)] {
            if value.is_empty() {
                problems.push(Error::at(key, "name a label"));
            }
        }
        Error::all(problems)
    }

    fn severity(&self, labels: &BTreeMap<String, String>) -> &str {
        let fallback = self.default_severity.as_deref().and_then(level).unwrap_or("warning");
        let Some(value) = labels.get(&self.severity_label) else { return fallback };
        let own = self.severities.iter().find(|(k, _)| k.eq_ignore_ascii_case(value)).and_then(|(_, v)| level(v));
        own.or_else(|| usual(value)).unwrap_or(fallback)
    }

    fn host(&self, labels: &BTreeMap<String, String>) -> Option<String> {
        let value = labels.get(&self.host_label).or_else(|| labels.get("host"))?;
        Some(strip_port(value).to_string())
    }
}

/// `web1:9100` → `web1`, `[::1]:9100` → `::1`; anything else as it is.
fn strip_port(v: &str) -> &str {
    if let Some(rest) = v.strip_prefix('[')
        && let Some((ip, _)) = rest.split_once(']')
    {
        return ip;
    }
    match v.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => v,
    }
}

/// The most alerts one notification may carry (Alertmanager's
/// `max_alerts` on the webhook bounds it on that side).
pub const MAX_ALERTS: usize = 1000;

/// One webhook notification (`version: "4"`); fields alerter does not use
/// are ignored, as Alertmanager may add more.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    pub status: String,
    #[serde(default)]
    pub receiver: String,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

/// Reads a notification, refusing what Alertmanager would not send.
pub fn parse(body: &[u8]) -> Result<Notification, String> {
    let n: Notification =
        serde_json::from_slice(body).map_err(|e| format!("not an Alertmanager webhook notification: {e}"))?;
    if n.version != "4" {
        return Err(format!(
            "webhook payload version `{}`; this alerter reads version 4 (Alertmanager 0.x)",
            n.version
        ));
    }
    if n.alerts.len() > MAX_ALERTS {
        return Err(format!(
            "{} alerts in one notification; at most {MAX_ALERTS} (set `max_alerts` on the webhook receiver)",
            n.alerts.len()
        ));
    }
    for (i, a) in n.alerts.iter().enumerate() {
        let at = |m: String| format!("alert {}: {m}", i + 1);
        if a.status != "firing" && a.status != "resolved" {
            return Err(at(format!("status `{}` is neither firing nor resolved", a.status)));
        }
        if a.fingerprint.is_empty() || a.fingerprint.len() > 64 {
            return Err(at("no fingerprint".into()));
        }
        if a.starts_at.is_empty() || a.starts_at.len() > 64 {
            return Err(at("no startsAt".into()));
        }
    }
    Ok(n)
}

/// What one alert becomes: an event for the daemon to check and route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The host it is about, if a label says.
    pub host: Option<String>,
    /// `info`, `warning`, `critical`, or `resolved`.
    pub severity: String,
    pub summary: String,
    pub details: String,
    pub labels: BTreeMap<String, String>,
    /// Fingerprint and `startsAt`: one episode of one alert.
    pub key: String,
}

/// The events of a notification.
pub fn events(cfg: &Config, n: &Notification) -> Vec<Incoming> {
    n.alerts
        .iter()
        .map(|a| {
            let name = a.labels.get("alertname").map(String::as_str).unwrap_or("alert");
            let description = a.annotations.get("description").map(|d| d.trim()).filter(|d| !d.is_empty());
            let summary = a
                .annotations
                .get("summary")
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .or_else(|| description.and_then(|d| d.lines().next()))
                .unwrap_or(name);
            let summary = summary.lines().next().unwrap_or(name).trim().to_string();
            let mut details = description.unwrap_or_default().to_string();
            for (k, v) in &a.annotations {
                if k != "summary" && k != "description" && !v.trim().is_empty() {
                    if !details.is_empty() {
                        details.push('\n');
                    }
                    details.push_str(&format!("{k}: {}", v.trim()));
                }
            }
            if !a.generator_url.is_empty() {
                if !details.is_empty() {
                    details.push('\n');
                }
                details.push_str(&format!("source: {}", a.generator_url));
            }
            let severity = if a.status == "resolved" { "resolved" } else { cfg.severity(&a.labels) };
            Incoming {
                host: cfg.host(&a.labels),
                severity: severity.to_string(),
                summary,
                details,
                labels: a.labels.clone(),
                key: format!("{}@{}", a.fingerprint, a.starts_at),
            }
        })
        .collect()
}

/// Episodes that ended, so that a late report of one firing is not taken
/// for news.
///
/// An alert's episode is its key (fingerprint and `startsAt`); a real
/// re-fire after a resolve has a new `startsAt`, so a *firing* report for
/// an episode already resolved is stale: in a cluster a node may send what
/// it saw a moment before the resolve reached it (its flush waits its place
/// in the cluster first), and Alertmanager lets a late firing report of the
/// same episode re-open it. Either way the popup said RESOLVED already; it
/// stays so. Bounded: the oldest are forgotten first.
#[derive(Debug, Default)]
pub struct Ended {
    keys: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
}

/// Ended episodes remembered, per source.
pub const ENDED_KEPT: usize = 100_000;

impl Ended {
    /// Whether to take `e`: every resolution (remembered), and firing
    /// reports of episodes not known to have ended.
    pub fn admit(&mut self, e: &Incoming) -> bool {
        if e.severity != "resolved" {
            return !self.keys.contains(&e.key);
        }
        if self.keys.insert(e.key.clone()) {
            self.order.push_back(e.key.clone());
            if self.order.len() > ENDED_KEPT
                && let Some(old) = self.order.pop_front()
            {
                self.keys.remove(&old);
            }
        }
        true
    }
}

/// The source: its events arrive through the daemon's API, so it only
/// waits to be stopped.
#[derive(Debug)]
pub struct Webhook;

impl Source for Webhook {
    const NAME: &'static CStr = c"alertmanager";
    const DESCRIPTION: &'static CStr =
        c"alerts from a Prometheus Alertmanager webhook, at POST /api/v1/alertmanager/SOURCE of the daemon's API";
    type Config = Config;

    fn validate(cfg: &Config) -> Result<(), Error> {
        cfg.check()
    }

    fn new(cfg: Config, _cx: &Context) -> Result<Self, Error> {
        cfg.check()?;
        Ok(Webhook)
    }

    fn run(&mut self, cx: &Context) -> Result<(), Error> {
        while !cx.wait_for_shutdown(Duration::from_secs(3600)) {}
        Ok(())
    }
}

declare_builtin_source!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;
    use alerter_plugin_sdk::testing;
    use serde_json::json;

    /// A notification as Alertmanager 0.25 sends it (captured from one).
    fn sample() -> serde_json::Value {
        json!({
            "receiver": "alerter", "status": "firing", "version": "4",
            "groupKey": "{}:{alertname=\"DiskFull\"}", "truncatedAlerts": 0,
            "groupLabels": {"alertname": "DiskFull"}, "commonLabels": {"alertname": "DiskFull"},
            "commonAnnotations": {}, "externalURL": "http://am1:9093",
            "alerts": [
                {"status": "firing", "labels": {"alertname": "DiskFull", "instance": "web1:9100", "severity": "page"},
                 "annotations": {"summary": "/var is 95% full", "description": "Only 2 GB left.\nClean up.",
                                 "runbook_url": "https://wiki/disk"},
                 "startsAt": "2026-12-03T10:00:00.000Z", "endsAt": "0001-01-01T00:00:00Z",
                 "generatorURL": "http://prom:9090/graph", "fingerprint": "a1b2c3d4e5f60718"},
                {"status": "resolved", "labels": {"alertname": "DiskFull", "host": "db1"},
                 "annotations": {}, "startsAt": "2026-12-03T09:00:00Z", "endsAt": "2026-12-03T10:00:00Z",
                 "generatorURL": "", "fingerprint": "0000000000000001"}
            ]
        })
    }

    fn cfg(v: serde_json::Value) -> Config {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn alerts_become_events_keyed_by_fingerprint_and_start() {
        let n = parse(sample().to_string().as_bytes()).unwrap();
        let ev = events(&cfg(json!({})), &n);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].severity, "critical", "page is critical");
        assert_eq!(ev[0].host.as_deref(), Some("web1"));
        assert_eq!(ev[0].summary, "/var is 95% full");
        assert_eq!(
            ev[0].details,
            "Only 2 GB left.\nClean up.\nrunbook_url: https://wiki/disk\nsource: http://prom:9090/graph"
        );
        assert_eq!(ev[0].key, "a1b2c3d4e5f60718@2026-12-03T10:00:00.000Z");
        assert_eq!(ev[0].labels["alertname"], "DiskFull");
        assert_eq!(ev[1].severity, "resolved");
        assert_eq!(ev[1].host.as_deref(), Some("db1"), "the host label when instance is missing");
        assert_eq!(ev[1].summary, "DiskFull", "no annotations: the alert's name");
    }

    #[test]
    fn severities_map_through_the_table_then_the_usual_names_then_the_default() {
        let c =
            cfg(json!({"severity_label": "priority", "severities": {"P1": "critical", "P3": "info", "page": "info"},
                           "default_severity": "info"}));
        let labels = |v: &str| BTreeMap::from([("priority".to_string(), v.to_string())]);
        assert_eq!(c.severity(&labels("p1")), "critical", "case does not matter");
        assert_eq!(c.severity(&labels("P3")), "info");
        assert_eq!(c.severity(&labels("page")), "info", "the table overrides the usual names");
        assert_eq!(c.severity(&labels("warning")), "warning");
        assert_eq!(c.severity(&labels("P9")), "info", "unknown: the default");
        assert_eq!(c.severity(&BTreeMap::new()), "info");
        assert_eq!(cfg(json!({})).severity(&BTreeMap::new()), "warning");
    }

    #[test]
    fn ports_are_dropped_from_hosts() {
        assert_eq!(strip_port("web1:9100"), "web1");
        assert_eq!(strip_port("10.0.0.5:9100"), "10.0.0.5");
        assert_eq!(strip_port("[::1]:9100"), "::1");
        assert_eq!(strip_port("fe80::1"), "fe80::1");
        assert_eq!(strip_port("web1"), "web1");
        assert_eq!(strip_port("web1:"), "web1:");
    }

    #[test]
    fn malformed_notifications_are_refused_with_a_reason() {
        let bad = |v: serde_json::Value| parse(v.to_string().as_bytes()).unwrap_err();
        assert!(parse(b"{").unwrap_err().contains("not an Alertmanager webhook"));
        assert!(parse(b"[]").unwrap_err().contains("not an Alertmanager webhook"));
        let mut v = sample();
        v["version"] = json!("5");
        assert!(bad(v).contains("version 4"));
        let mut v = sample();
        v["alerts"][1]["status"] = json!("pending");
        assert!(bad(v).contains("alert 2: status `pending`"));
        let mut v = sample();
        v["alerts"][0]["fingerprint"] = json!("");
        assert!(bad(v).contains("alert 1: no fingerprint"));
        let mut v = sample();
        v["alerts"][0].as_object_mut().unwrap().remove("startsAt");
        assert!(bad(v).contains("startsAt"));
        let mut v = sample();
        v["alerts"] = json!(vec![sample()["alerts"][0].clone(); MAX_ALERTS + 1]);
        assert!(bad(v).contains("max_alerts"));
        let mut v = sample();
        v["alerts"][0]["labels"] = json!({"a": 1});
        assert!(bad(v).contains("not an Alertmanager webhook"), "label values are strings");
    }

    #[test]
    fn a_firing_report_of_an_ended_episode_is_stale_and_a_new_start_is_not() {
        let n = parse(sample().to_string().as_bytes()).unwrap();
        let ev = events(&cfg(json!({})), &n);
        let mut ended = Ended::default();
        let firing = ev[0].clone();
        assert!(ended.admit(&firing));
        let resolved = Incoming { severity: "resolved".into(), ..firing.clone() };
        assert!(ended.admit(&resolved));
        assert!(!ended.admit(&firing), "the same episode, firing again after its resolve");
        assert!(ended.admit(&resolved), "resolutions are always taken");
        let refire = Incoming { key: "a1b2c3d4e5f60718@2026-12-03T11:00:00Z".into(), ..firing };
        assert!(ended.admit(&refire), "a new startsAt is a new episode");
        for i in 0..=ENDED_KEPT {
            ended.admit(&Incoming { key: format!("k{i}"), ..resolved.clone() });
        }
        assert!(ended.keys.len() <= ENDED_KEPT && ended.order.len() <= ENDED_KEPT);
        assert!(ended.admit(&Incoming { severity: "warning".into(), ..resolved.clone() }), "the oldest forgotten");
    }

    #[test]
    fn settings_are_checked() {
        let err = testing::validate(descriptor(), json!({"severities": {"P1": "dire"}, "default_severity": "meh"}))
            .unwrap_err();
        assert!(err.contains("severities.P1") && err.contains("default_severity"), "{err}");
        let err = testing::validate(descriptor(), json!({"severity": "x"})).unwrap_err();
        assert!(err.contains("unknown field `severity`"), "{err}");
        testing::validate(descriptor(), json!({"host_label": "node"})).unwrap();
    }
}
