//! The event model: what a source reports and what the rules see.
//!
//! An [`Event`] is either a *condition* (the default: it holds until the same
//! source sends `resolved` with the same dedup key, like a full disk) or a
//! *one-shot* happening (a log line, "the alerter started"), which is notified
//! once and never resolved. The dedup key identifies "the same alert" across
//! events; when a source gives none, a stable fingerprint of source, host and
//! labels stands in.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The source id under which the daemon reports on itself.
pub const ALERTER_SOURCE: &str = "alerter";

/// How bad an event is. Ordered: `info < warning < critical`; `resolved`
/// clears an alert and sorts lowest so that "at least warning" never matches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Resolved,
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [Severity::Resolved, Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Resolved => "resolved",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|sev| sev.as_str() == s)
            .ok_or_else(|| format!("unknown severity `{s}`: expected info, warning, critical or resolved"))
    }
}

/// One report from a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The configured id of the source that raised it (`alerter` for the daemon itself).
    pub source: String,
    /// The host the event is about.
    pub host: String,
    pub severity: Severity,
    /// One line for a popup or a mail subject.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    /// Longer text; may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// When the source observed it.
    pub time: DateTime<Utc>,
    /// Identifies "the same alert" across events. `None` means: derive a
    /// fingerprint from source, host and labels (see [`Event::fingerprint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A happening rather than a condition: notified once, never resolved.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oneshot: bool,
}

/// A stable 64-bit identity of an alert, printed as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl From<Fingerprint> for String {
    fn from(fp: Fingerprint) -> String {
        fp.to_string()
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        u64::from_str_radix(&s, 16).map(Fingerprint).map_err(|e| format!("bad fingerprint `{s}`: {e}"))
    }
}

impl Event {
    /// A new event at `time` with no labels, details or key.
    pub fn new(
        source: impl Into<String>,
        host: impl Into<String>,
        severity: Severity,
        summary: impl Into<String>,
        time: DateTime<Utc>,
    ) -> Event {
        Event {
            source: source.into(),
            host: host.into(),
            severity,
            summary: summary.into(),
            details: String::new(),
            labels: BTreeMap::new(),
            time,
            key: None,
            oneshot: false,
        }
    }

    pub fn with_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Event {
        self.labels.insert(name.into(), value.into());
        self
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Event {
        self.key = Some(key.into());
        self
    }

    pub fn oneshot(mut self) -> Event {
        self.oneshot = true;
        self
    }

    /// The identity of the alert this event belongs to.
    ///
    /// Severity, summary, details and time are deliberately left out: a disk
    /// going from warning to critical is the same alert getting worse. The
    /// hash is xxh3 with a fixed seed, so it is stable across runs and
    /// versions, which the state store relies on.
    pub fn fingerprint(&self) -> Fingerprint {
        use xxhash_rust::xxh3::Xxh3;
        let mut h = Xxh3::new();
        // Field separators (0xff never occurs in UTF-8) keep ("ab","c") and
        // ("a","bc") apart.
        h.update(self.source.as_bytes());
        h.update(&[0xff]);
        match &self.key {
            Some(key) => {
                h.update(b"k");
                h.update(key.as_bytes());
            }
            None => {
                h.update(b"l");
                h.update(self.host.as_bytes());
                for (k, v) in &self.labels {
                    h.update(&[0xff]);
                    h.update(k.as_bytes());
                    h.update(&[0xfe]);
                    h.update(v.as_bytes());
                }
            }
        }
        Fingerprint(h.digest())
    }

    /// The value of a label, where `source`, `host` and `severity` are
    /// pseudo-labels that rules and `group_by` can use like any other.
    pub fn label(&self, name: &str) -> Option<&str> {
        match name {
            "source" => Some(&self.source),
            "host" => Some(&self.host),
            "severity" => Some(self.severity.as_str()),
            _ => self.labels.get(name).map(String::as_str),
        }
    }
}

/// What sources hand the engine: events, and the progress marks that must
/// be committed after them.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Event(Event),
    /// A source's saved state (JSON): committed in the same transaction as
    /// the effects of every event the source sent before it.
    State {
        source: String,
        state: String,
    },
}

impl From<Event> for Inbound {
    fn from(e: Event) -> Inbound {
        Inbound::Event(e)
    }
}

/// The daemon's own events, raised under source `alerter`.
pub mod internal {
    use super::*;

    /// The `event` label of the alert raised while the store cannot write.
    pub const STORE_FAILING: &str = "store_failing";

    fn base(host: &str, severity: Severity, summary: String, now: DateTime<Utc>) -> Event {
        Event::new(ALERTER_SOURCE, host, severity, summary, now)
    }

    pub fn started(host: &str, version: &str, now: DateTime<Utc>) -> Event {
        // A key per occurrence: every start is news, however soon after the last.
        base(host, Severity::Info, format!("alerter {version} started on {host}"), now)
            .with_label("event", "started")
            .with_key(format!("started:{}", now.timestamp_nanos_opt().unwrap_or_default()))
            .oneshot()
    }

    pub fn reloaded(host: &str, rules: usize, now: DateTime<Utc>) -> Event {
        base(host, Severity::Info, format!("alerter on {host} reloaded its configuration ({rules} rules)"), now)
            .with_label("event", "reloaded")
            .with_key(format!("reloaded:{}", now.timestamp_nanos_opt().unwrap_or_default()))
            .oneshot()
    }

    pub fn reload_failed(host: &str, errors: usize, now: DateTime<Utc>) -> Event {
        base(
            host,
            Severity::Warning,
            format!(
                "alerter on {host} rejected a new configuration ({errors} problems); the previous one keeps running"
            ),
            now,
        )
        .with_label("event", "reload_failed")
        .with_key(format!("reload_failed:{}", now.timestamp_nanos_opt().unwrap_or_default()))
        .oneshot()
    }

    /// The state database was damaged when the daemon started: what could
    /// be read went into a fresh one and the damaged file was moved aside
    /// (`what` says where and what was lost). It happened once: a one-shot.
    pub fn store_salvaged(host: &str, what: &str, now: DateTime<Utc>) -> Event {
        base(
            host,
            Severity::Critical,
            format!(
                "alerter on {host} found its state database damaged and carries on with what could be saved: {what}"
            ),
            now,
        )
        .with_label("event", "store_salvaged")
        .with_key(format!("store_salvaged:{}", now.timestamp_nanos_opt().unwrap_or_default()))
        .oneshot()
    }

    /// The state store cannot write (a full disk, say): a condition until
    /// [`store_recovered`]. Its notifications are delivered directly, since
    /// the outbox is what cannot be written.
    pub fn store_failing(host: &str, error: &str, now: DateTime<Utc>) -> Event {
        base(
            host,
            Severity::Critical,
            format!(
                "alerter on {host} cannot save its state: {error}; new alerts are held in memory and go out once it can save again"
            ),
            now,
        )
        .with_label("event", STORE_FAILING)
        .with_key("store")
    }

    /// The store writes again: resolves [`store_failing`].
    pub fn store_recovered(host: &str, down: std::time::Duration, held: usize, now: DateTime<Utc>) -> Event {
        base(
            host,
            Severity::Resolved,
            format!(
                "alerter on {host} saves its state again after {}s; {held} held notifications are on their way",
                down.as_secs()
            ),
            now,
        )
        .with_label("event", STORE_FAILING)
        .with_key("store")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn severity_orders_and_parses() {
        assert!(Severity::Info < Severity::Warning);
        assert!(Severity::Warning < Severity::Critical);
        assert!(Severity::Resolved < Severity::Info);
        assert_eq!("critical".parse::<Severity>(), Ok(Severity::Critical));
        assert!("fatal".parse::<Severity>().unwrap_err().contains("expected info"));
    }

    #[test]
    fn fingerprint_ignores_severity_and_text_but_not_labels() {
        let a = Event::new("disk", "h", Severity::Warning, "a", t0()).with_label("mount", "/var");
        let mut b = a.clone();
        b.severity = Severity::Critical;
        b.summary = "other".into();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = a.clone().with_label("mount", "/srv");
        assert_ne!(a.fingerprint(), c.fingerprint());
        let keyed = a.clone().with_key("x");
        let keyed2 = c.clone().with_key("x");
        assert_eq!(keyed.fingerprint(), keyed2.fingerprint());
    }

    #[test]
    fn fingerprint_is_stable_across_versions() {
        // The store keys alert state by this value; changing the hash would
        // make every firing alert look new after an upgrade.
        let e = Event::new("disk", "web1", Severity::Warning, "x", t0()).with_label("mount", "/");
        assert_eq!(e.fingerprint().to_string(), format!("{}", e.fingerprint()));
        assert_eq!(e.fingerprint(), e.clone().fingerprint());
        let s = serde_json::to_string(&e.fingerprint()).unwrap();
        let back: Fingerprint = serde_json::from_str(&s).unwrap();
        assert_eq!(back, e.fingerprint());
    }

    #[test]
    fn event_json_round_trip_and_pseudo_labels() {
        let e = Event::new("disk", "web1", Severity::Critical, "full", t0()).with_label("mount", "/");
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
        assert_eq!(e.label("source"), Some("disk"));
        assert_eq!(e.label("severity"), Some("critical"));
        assert_eq!(e.label("mount"), Some("/"));
        assert_eq!(e.label("nope"), None);
    }
}
