//! The plugin protocol: JSON lines between the daemon and a plugin process.
//!
//! A plugin process is either `alerter plugin-host` (which loads a `.so`
//! and speaks for it) or any executable that speaks this protocol itself,
//! so a plugin can be a Python script. One JSON object per line:
//!
//! ```text
//! daemon → plugin  {"op":"hello","protocol":1}
//! plugin → daemon  {"op":"hello","protocol":1,"plugin":{"name":"ups","version":"1.0"}}
//! daemon → plugin  {"op":"validate","config":{...}}
//! plugin → daemon  {"op":"validated","errors":[{"path":"device","message":"..."}]}
//! daemon → plugin  {"op":"start","source":"ups","config":{...},"state":{...}}
//! plugin → daemon  {"op":"started"}            (or {"op":"failed","error":"..."})
//! plugin → daemon  {"op":"event","event":{"v":1,"severity":"warning","summary":"..."}}
//! plugin → daemon  {"op":"log","level":"info","message":"..."}
//! plugin → daemon  {"op":"state","state":{...}}  (progress, committed after the events before it)
//! plugin → daemon  {"op":"dropped","count":12}  (events the plugin itself had to drop)
//! daemon → plugin  {"op":"shutdown"}
//! plugin → daemon  {"op":"stopped","status":"ok"}   then it exits
//! ```
//!
//! Unknown fields are ignored in both directions, so either side can add
//! optional fields without a version bump. docs/plugins.md documents it
//! for plugin authors.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Event, Severity};

pub const PROTOCOL_VERSION: u32 = 1;

/// Longest protocol line the daemon accepts; longer ones are dropped.
pub const MAX_LINE: usize = 64 * 1024;

/// Messages to a plugin process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToPlugin {
    Hello {
        protocol: u32,
    },
    Validate {
        config: serde_json::Value,
    },
    Start {
        source: String,
        config: serde_json::Value,
        /// The state the source last saved, when it saved one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<serde_json::Value>,
    },
    Shutdown,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginMeta {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `major.minor` of the C ABI, for `.so` plugins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abi: Option<String>,
}

/// A problem with a plugin's configuration, at a key path if known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigProblem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub message: String,
}

/// Messages from a plugin process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FromPlugin {
    Hello {
        protocol: u32,
        plugin: PluginMeta,
    },
    /// The plugin host could not load the plugin.
    Refused {
        error: String,
    },
    Validated {
        #[serde(default)]
        errors: Vec<ConfigProblem>,
    },
    Started,
    Failed {
        error: String,
    },
    Event {
        event: serde_json::Value,
    },
    Log {
        level: String,
        message: String,
    },
    /// The source's progress: committed with the effects of the events
    /// sent before it, and given back in `start` next time.
    State {
        state: serde_json::Value,
    },
    Dropped {
        count: u64,
    },
    Stopped {
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl ToPlugin {
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("protocol messages are JSON");
        s.push('\n');
        s
    }
}

impl FromPlugin {
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("protocol messages are JSON");
        s.push('\n');
        s
    }
}

/// Reads what a plugin passed to `set_error`: structured errors as JSON,
/// or plain text.
pub fn parse_errors(text: &str) -> Vec<ConfigProblem> {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ConfigProblem>,
    }
    match serde_json::from_str::<Errors>(text) {
        Ok(e) if !e.errors.is_empty() => e.errors,
        _ => vec![ConfigProblem { path: None, message: text.to_string() }],
    }
}

/// An event as plugins send it (wire format version 1).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEvent {
    #[serde(default = "one")]
    v: u32,
    severity: Severity,
    summary: String,
    #[serde(default)]
    details: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    oneshot: bool,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    time: Option<DateTime<Utc>>,
}

fn one() -> u32 {
    1
}

/// Longest summary kept; longer ones are cut (with a marker).
const MAX_SUMMARY: usize = 1024;
const MAX_DETAILS: usize = 16 * 1024;

fn cap(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" [...]");
    }
    s
}

/// Turns a plugin's event into an [`Event`] of source `source`. The source
/// id is always the configured one: a plugin cannot speak for another.
pub fn event_from_wire(
    source: &str,
    default_host: &str,
    now: DateTime<Utc>,
    json: serde_json::Value,
) -> Result<Event, String> {
    let w: WireEvent = serde_json::from_value(json).map_err(|e| format!("bad event: {e}"))?;
    if w.v != 1 {
        return Err(format!("bad event: wire format version {} (this alerter reads version 1)", w.v));
    }
    let mut e = Event::new(
        source,
        w.host.filter(|h| !h.is_empty()).unwrap_or_else(|| default_host.to_string()),
        w.severity,
        cap(w.summary, MAX_SUMMARY),
        w.time.unwrap_or(now),
    );
    e.details = cap(w.details, MAX_DETAILS);
    e.labels = w.labels;
    e.key = w.key;
    e.oneshot = w.oneshot;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn messages_round_trip() {
        let m = FromPlugin::Hello {
            protocol: 1,
            plugin: PluginMeta { name: "ups".into(), version: "1.0".into(), description: None, abi: None },
        };
        let line = m.line();
        assert!(line.ends_with('\n'));
        assert_eq!(serde_json::from_str::<FromPlugin>(&line).unwrap(), m);
        assert_eq!(ToPlugin::Shutdown.line(), "{\"op\":\"shutdown\"}\n");
        // Unknown fields are ignored, so both sides can grow.
        let m: FromPlugin = serde_json::from_str(r#"{"op":"started","extra":1}"#).unwrap();
        assert_eq!(m, FromPlugin::Started);
    }

    #[test]
    fn wire_events_become_events_of_the_configured_source() {
        let e = event_from_wire(
            "ups",
            "fileserver",
            now(),
            json!({"v":1,"severity":"critical","summary":"on battery","labels":{"device":"ttyUSB0"},"key":"onbatt"}),
        )
        .unwrap();
        assert_eq!(e.source, "ups");
        assert_eq!(e.host, "fileserver");
        assert_eq!(e.time, now());
        assert_eq!(e.key.as_deref(), Some("onbatt"));
    }

    #[test]
    fn bad_wire_events_are_rejected_with_a_reason() {
        let err = event_from_wire("s", "h", now(), json!({"severity":"fatal","summary":"x"})).unwrap_err();
        assert!(err.contains("unknown variant `fatal`"), "{err}");
        let err = event_from_wire("s", "h", now(), json!({"v":2,"severity":"info","summary":"x"})).unwrap_err();
        assert!(err.contains("version 2"), "{err}");
        let err = event_from_wire("s", "h", now(), json!({"severity":"info"})).unwrap_err();
        assert!(err.contains("summary"), "{err}");
        let err =
            event_from_wire("s", "h", now(), json!({"severity":"info","summary":"x","labels":{"n":1}})).unwrap_err();
        assert!(err.contains("bad event"), "{err}");
    }

    #[test]
    fn oversized_text_is_cut_not_refused() {
        let e = event_from_wire("s", "h", now(), json!({"severity":"info","summary":"é".repeat(2000)})).unwrap();
        assert!(e.summary.len() <= MAX_SUMMARY + 6);
        assert!(e.summary.ends_with("[...]"));
    }

    #[test]
    fn set_error_text_is_structured_or_plain() {
        let p = parse_errors(r#"{"errors":[{"path":"device","message":"missing"}]}"#);
        assert_eq!(p, vec![ConfigProblem { path: Some("device".into()), message: "missing".into() }]);
        let p = parse_errors("it broke");
        assert_eq!(p, vec![ConfigProblem { path: None, message: "it broke".into() }]);
    }
}
