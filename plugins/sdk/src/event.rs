//! The event a plugin emits: wire format version 1, built with methods.

use std::collections::BTreeMap;

use serde::Serialize;

/// How bad it is. `Resolved` clears a condition raised earlier with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
    Resolved,
}

/// One event, as JSON on the wire:
/// `{"v":1,"severity":"warning","summary":"...","labels":{...},"key":"..."}`.
///
/// The host adds the source id (a plugin cannot choose it), and the host
/// name and time when the plugin leaves them out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    v: u32,
    pub severity: Severity,
    pub summary: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Identifies "the same alert" across events (a disk's mount point).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A happening (a log line) rather than a condition (a full disk).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub oneshot: bool,
    /// The host the event is about, when not the local one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// RFC 3339; default: when the host receives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

impl Event {
    pub fn new(severity: Severity, summary: impl Into<String>) -> Event {
        Event {
            v: 1,
            severity,
            summary: summary.into(),
            details: String::new(),
            labels: BTreeMap::new(),
            key: None,
            oneshot: false,
            host: None,
            time: None,
        }
    }

    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Event {
        self.labels.insert(name.into(), value.into());
        self
    }

    pub fn details(mut self, details: impl Into<String>) -> Event {
        self.details = details.into();
        self
    }

    pub fn key(mut self, key: impl Into<String>) -> Event {
        self.key = Some(key.into());
        self
    }

    pub fn oneshot(mut self) -> Event {
        self.oneshot = true;
        self
    }

    pub fn host(mut self, host: impl Into<String>) -> Event {
        self.host = Some(host.into());
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event is always valid JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let e = Event::new(Severity::Warning, "load is high").label("load1", "7.5").key("load");
        assert_eq!(
            e.to_json(),
            r#"{"v":1,"severity":"warning","summary":"load is high","labels":{"load1":"7.5"},"key":"load"}"#
        );
    }
}
