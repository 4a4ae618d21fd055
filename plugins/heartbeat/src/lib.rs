//! The `heartbeat` source: an `info` event every `interval`.
//!
//! It proves the whole path (source, rules, transport) works, the way
//! Alertmanager's Watchdog alert does: route it to a dead man's switch, or
//! to a log, and notice when it stops. Built in, and written with the
//! plugin SDK like any third-party plugin.

use std::ffi::CStr;
use std::time::Duration;

use alerter_plugin_sdk::{Check, Context, Error, Event, Periodic, Severity, declare_builtin_source};

/// The settings.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Time between beats, e.g. `1h` (the default) or `30s`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// The event's summary.
    #[serde(default = "default_summary")]
    pub summary: String,
}

fn default_interval() -> String {
    "1h".into()
}

fn default_summary() -> String {
    "heartbeat".into()
}

fn interval(cfg: &Config) -> Result<Duration, Error> {
    let d = humantime::parse_duration(&cfg.interval).map_err(|e| {
        Error::at("interval", format!("`{}` is not a duration ({e}); write e.g. 30s or 1h", cfg.interval))
    })?;
    if d < Duration::from_secs(1) {
        return Err(Error::at("interval", "must be at least 1s"));
    }
    Ok(d)
}

/// The source.
#[derive(Debug)]
pub struct Heartbeat {
    interval: Duration,
    summary: String,
    beats: u64,
}

impl Check for Heartbeat {
    const NAME: &'static CStr = c"heartbeat";
    const DESCRIPTION: &'static CStr = c"an info event at a fixed interval, to prove alerting works end to end";
    type Config = Config;

    fn validate(cfg: &Config) -> Result<(), Error> {
        interval(cfg).map(drop)
    }

    fn new(cfg: Config, _cx: &Context) -> Result<Self, Error> {
        Ok(Heartbeat { interval: interval(&cfg)?, summary: cfg.summary, beats: 0 })
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn check(&mut self, _cx: &Context) -> Result<Vec<Event>, Error> {
        self.beats += 1;
        // A key per beat: each is news, none is throttled as a repeat.
        Ok(vec![
            Event::new(Severity::Info, &self.summary)
                .label("beat", self.beats.to_string())
                .key(format!("beat-{}", self.beats))
                .oneshot(),
        ])
    }
}

declare_builtin_source!(Periodic<Heartbeat>);

#[cfg(test)]
mod tests {
    use alerter_plugin_sdk::testing::{self, Stop};
    use serde_json::json;

    #[test]
    fn beats_and_validates() {
        let out = testing::run(super::descriptor(), json!({"interval": "1s"}), Stop::AfterEvents(1));
        assert_eq!(out.events[0]["summary"], "heartbeat");
        assert_eq!(out.events[0]["oneshot"], true);
        let err = testing::validate(super::descriptor(), json!({"interval": "soon"})).unwrap_err();
        assert!(err.contains(r#""path":"interval""#), "{err}");
        let err = testing::validate(super::descriptor(), json!({"intervall": "1s"})).unwrap_err();
        assert!(err.contains("unknown field `intervall`"), "{err}");
    }
}
