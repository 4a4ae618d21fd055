//! The `alertmanager` transport: alerts to a Prometheus Alertmanager
//! cluster through its API v2 (`POST /api/v2/alerts`), the way Prometheus
//! sends them.
//!
//! Every alert of a notification goes to **every** node of the cluster
//! (the nodes deduplicate among themselves by the alert's labels); a send
//! is delivered when at least one node took it, and says in its reply which
//! did not. Labels are the alert's own plus `alertname` (the rule),
//! `instance` (the host), `severity` and `source`, and the transport's
//! `labels` below those; annotations are `summary` and `description` (the
//! details). A firing alert's `endsAt` is four resend intervals ahead, so
//! Alertmanager resolves it by itself if this alerter goes silent; a
//! resolved one's is when it resolved.
//!
//! Changes (a new alert, a resolution) come through the outbox like every
//! notification, retried and in history. Keeping firing alerts alive is
//! not a change: the daemon calls [`AlertmanagerTransport::resend`] every
//! `resend` interval with the alerts still firing (see `daemon.rs`), which
//! goes to the nodes directly and leaves no history row.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::http;
use super::{BoxFuture, Delivered, Transport, TransportError};
use crate::config::diag::YamlPath;
use crate::config::model::AlertmanagerConfig;
use crate::config::types::OneOrMany;
use crate::notify::{AlertSummary, Notification};

/// How often firing alerts are sent again, by default (Prometheus's
/// `resend_delay` is 1m too).
pub const RESEND: Duration = Duration::from_secs(60);

/// How many resend intervals ahead a firing alert's `endsAt` is.
const ENDS_AFTER: u32 = 4;

/// Changes retry quickly, since firing alerts are re-sent anyway: from 1 s,
/// at most a minute apart, for an hour.
pub fn retry(_: &AlertmanagerConfig) -> super::RetryPolicy {
    super::RetryPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
        max_age: Duration::from_secs(3600),
        concurrency: 4,
        poll: super::POLL,
    }
}

/// Checks the settings beyond their shape, as (key, problem).
pub fn check(c: &AlertmanagerConfig) -> Vec<(YamlPath, String)> {
    let root = YamlPath::root();
    let mut problems = Vec::new();
    let urls = c.urls.as_slice();
    if urls.is_empty() {
        problems.push((root.key("urls"), "name at least one Alertmanager, e.g. http://127.0.0.1:9093".into()));
    }
    for (i, u) in urls.iter().enumerate() {
        if let Err(e) = http::check_url(u, c.insecure_http.unwrap_or(false)) {
            let at = match &c.urls {
                OneOrMany::One(_) => root.key("urls"),
                OneOrMany::Many(_) => root.key("urls").index(i),
            };
            problems.push((at, e));
        }
    }
    for k in c.labels.keys() {
        if !is_label_name(k) {
            problems.push((
                root.key("labels").key(k.as_str()),
                format!("`{k}` is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
            ));
        }
    }
    if let Some(r) = &c.resend
        && r.value < Duration::from_secs(1)
    {
        problems.push((root.key("resend"), "must be at least 1s".into()));
    }
    problems.extend(http::check_files(c.token_file.as_deref(), c.ca_file.as_deref()));
    problems
}

/// Whether `name` is a label name Alertmanager takes.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A label name made acceptable: other characters become `_`, and a
/// leading digit gets one before it (`http.status` → `http_status`).
pub fn label_name(name: &str) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

/// One alert as `POST /api/v2/alerts` takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// A configured Alertmanager cluster.
pub struct AlertmanagerTransport {
    client: reqwest::Client,
    /// `…/api/v2/alerts` of each node.
    endpoints: Vec<reqwest::Url>,
    labels: BTreeMap<String, String>,
    external_url: String,
    token: Option<String>,
    resend: Duration,
}

impl AlertmanagerTransport {
    pub fn new(c: &AlertmanagerConfig, alerter_name: &str) -> Result<AlertmanagerTransport, String> {
        let insecure = c.insecure_http.unwrap_or(false);
        let mut endpoints = Vec::new();
        for u in c.urls.as_slice() {
            let mut url = http::check_url(u, insecure)?;
            // Alertmanager may be served under a path (`--web.route-prefix`).
            let path = format!("{}/api/v2/alerts", url.path().trim_end_matches('/'));
            url.set_path(&path);
            endpoints.push(url);
        }
        let timeout = c.timeout.as_ref().map_or(Duration::from_secs(10), |d| d.value);
        Ok(AlertmanagerTransport {
            client: http::client(c.ca_file.as_deref(), timeout)?,
            endpoints,
            labels: c.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            external_url: c
                .external_url
                .clone()
                .unwrap_or_else(|| format!("alerter://{}/", alerter_name.to_ascii_lowercase())),
            token: c.token_file.as_deref().map(http::read_token).transpose()?,
            resend: c.resend.as_ref().map_or(RESEND, |d| d.value),
        })
    }

    /// How often firing alerts are sent again.
    pub fn resend_interval(&self) -> Duration {
        self.resend
    }

    /// One alert as Alertmanager takes it, `now` deciding a firing one's
    /// `endsAt`.
    pub fn postable(
        &self,
        rule: &str,
        a: &AlertSummary,
        resolved_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> PostableAlert {
        let mut labels = self.labels.clone();
        for (k, v) in &a.labels {
            if !v.is_empty() {
                labels.insert(label_name(k), v.clone());
            }
        }
        labels.insert("alertname".into(), rule.to_string());
        labels.insert("instance".into(), a.host.clone());
        labels.insert("severity".into(), a.severity.as_str().into());
        labels.insert("source".into(), a.source.clone());
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".into(), a.summary.clone());
        if !a.details.is_empty() {
            annotations.insert("description".into(), a.details.clone());
        }
        let ends_at = if a.status == "resolved" {
            resolved_at.max(a.since)
        } else {
            now + chrono::Duration::from_std(self.resend * ENDS_AFTER).unwrap_or(chrono::Duration::hours(1))
        };
        let base = self.external_url.trim_end_matches('/');
        PostableAlert {
            labels,
            annotations,
            starts_at: a.since,
            ends_at,
            generator_url: format!("{base}/api/v1/alerts?filter=id%3D{}", a.fingerprint),
        }
    }

    /// Sends firing alerts again (each with its rule), to every node;
    /// nothing is recorded. Fails only when no node took them.
    pub async fn resend(
        &self,
        alerts: &[(String, AlertSummary)],
        now: DateTime<Utc>,
    ) -> Result<Delivered, TransportError> {
        let list: Vec<PostableAlert> = alerts.iter().map(|(rule, a)| self.postable(rule, a, now, now)).collect();
        self.post(&list).await
    }

    async fn deliver(&self, n: &Notification) -> Result<Delivered, TransportError> {
        if n.alerts.is_empty() {
            return Err(TransportError::permanent(format!(
                "`{}` holds no alerts: Alertmanager takes alerts, not notices; send notices through another transport",
                n.rule
            )));
        }
        let now = Utc::now();
        let list: Vec<PostableAlert> = n.alerts.iter().map(|a| self.postable(&n.rule, a, n.created_at, now)).collect();
        self.post(&list).await
    }

    /// Posts to every node at once: delivered if one took it.
    async fn post(&self, list: &[PostableAlert]) -> Result<Delivered, TransportError> {
        let body = serde_json::to_vec(list).map_err(|e| TransportError::permanent(e.to_string()))?;
        let sends = self.endpoints.iter().map(|url| {
            let mut req = self
                .client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            async move { (url, http::send(req).await) }
        });
        let results = futures_util::future::join_all(sends).await;
        let mut took = Vec::new();
        let mut failed = Vec::new();
        let mut all_permanent = true;
        for (url, r) in results {
            let node = url.host_str().map(|h| format!("{h}:{}", url.port_or_known_default().unwrap_or(0)));
            let node = node.unwrap_or_else(|| url.to_string());
            match r {
                Ok(_) => took.push(node),
                Err(e) => {
                    all_permanent &= !e.is_transient();
                    failed.push(format!("{node}: {e}"));
                }
            }
        }
        let n = list.len();
        if !took.is_empty() {
            let mut reply = format!("{n} alert(s) taken by {}", took.join(", "));
            if !failed.is_empty() {
                reply.push_str(&format!("; not by {}", failed.join("; ")));
            }
            return Ok(Delivered { reply: Some(reply) });
        }
        let msg = format!("no Alertmanager took {n} alert(s): {}", failed.join("; "));
        Err(if all_permanent { TransportError::permanent(msg) } else { TransportError::transient(msg) })
    }
}

impl Transport for AlertmanagerTransport {
    fn kind(&self) -> &'static str {
        "alertmanager"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Delivered, TransportError>> {
        Box::pin(self.deliver(n))
    }

    fn as_alertmanager(&self) -> Option<&AlertmanagerTransport> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_made_acceptable() {
        assert!(is_label_name("alertname") && is_label_name("_x1"));
        assert!(!is_label_name("1x") && !is_label_name("a.b") && !is_label_name(""));
        assert_eq!(label_name("http.status"), "http_status");
        assert_eq!(label_name("1st"), "_1st");
        assert_eq!(label_name("ok_name"), "ok_name");
    }
}
