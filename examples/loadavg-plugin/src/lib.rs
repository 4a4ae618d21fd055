//! An example third-party plugin: the `loadavg` source.
//!
//! It reads /proc/loadavg every `interval` and compares the 1-minute load,
//! per CPU, with `warning` and `critical` thresholds. It reports changes
//! only (ok to warning, warning to critical, back to ok as `resolved`),
//! which is what the rules engine expects of a condition.
//!
//! Build it with `cargo build --release -p alerter-example-loadavg` and copy
//! `target/release/libalerter_example_loadavg.so` into a plugin directory
//! (owned by root, not group- or world-writable). See `alerter.yaml` next to
//! this crate for a config snippet.
//!
//! `misbehave: panic` makes it panic after its first check, to try out how
//! alerter contains a crashing plugin.

use std::ffi::CStr;
use std::time::Duration;

use alerter_plugin_sdk::{Check, Context, Error, Event, Periodic, Severity, declare_source};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seconds between checks.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// 1-minute load per CPU at which to warn.
    #[serde(default = "default_warning")]
    pub warning: f64,
    /// 1-minute load per CPU that is critical.
    #[serde(default = "default_critical")]
    pub critical: f64,
    /// `panic`: panic after the first check (for trying out isolation).
    #[serde(default)]
    pub misbehave: Option<String>,
}

fn default_interval() -> u64 {
    30
}
fn default_warning() -> f64 {
    1.5
}
fn default_critical() -> f64 {
    3.0
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Level {
    Ok,
    Warning,
    Critical,
}

pub struct LoadAvg {
    cfg: Config,
    cpus: f64,
    level: Level,
    checks: u64,
}

fn read_load() -> Result<f64, Error> {
    let text = std::fs::read_to_string("/proc/loadavg")?;
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::msg(format!("cannot read the load from /proc/loadavg: {text:?}")))
}

impl Check for LoadAvg {
    const NAME: &'static CStr = c"loadavg";
    const DESCRIPTION: &'static CStr = c"1-minute load average per CPU against thresholds (example plugin)";
    type Config = Config;

    fn validate(cfg: &Config) -> Result<(), Error> {
        if cfg.interval_secs == 0 {
            return Err(Error::at("interval_secs", "must be at least 1"));
        }
        if cfg.critical < cfg.warning {
            return Err(Error::at("critical", format!("must not be below warning ({})", cfg.warning)));
        }
        match cfg.misbehave.as_deref() {
            None | Some("panic") => Ok(()),
            Some(other) => Err(Error::at("misbehave", format!("unknown value `{other}`; the only one is `panic`"))),
        }
    }

    fn new(cfg: Config, _cx: &Context) -> Result<Self, Error> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Ok(LoadAvg { cfg, cpus, level: Level::Ok, checks: 0 })
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(self.cfg.interval_secs)
    }

    fn check(&mut self, _cx: &Context) -> Result<Vec<Event>, Error> {
        self.checks += 1;
        if self.checks > 1 && self.cfg.misbehave.as_deref() == Some("panic") {
            panic!("misbehave: panic, as configured");
        }
        let load = read_load()?;
        let per_cpu = load / self.cpus;
        let level = if per_cpu >= self.cfg.critical {
            Level::Critical
        } else if per_cpu >= self.cfg.warning {
            Level::Warning
        } else {
            Level::Ok
        };
        if level == self.level {
            return Ok(Vec::new());
        }
        self.level = level;
        let (severity, summary) = match level {
            Level::Ok => (Severity::Resolved, format!("load is back to {load:.2} ({per_cpu:.2} per CPU)")),
            Level::Warning => (Severity::Warning, format!("load is {load:.2} ({per_cpu:.2} per CPU)")),
            Level::Critical => (Severity::Critical, format!("load is {load:.2} ({per_cpu:.2} per CPU)")),
        };
        Ok(vec![Event::new(severity, summary).key("loadavg").label("load1", format!("{load:.2}"))])
    }
}

declare_source!(Periodic<LoadAvg>);

#[cfg(test)]
mod tests {
    use alerter_plugin_sdk::testing::{self, Stop};
    use serde_json::json;

    #[test]
    fn warns_when_over_the_threshold() {
        let out = testing::run(super::descriptor(), json!({"warning": 0.0, "critical": 1000.0}), Stop::AfterEvents(1));
        assert_eq!(out.events[0]["severity"], "warning");
        assert_eq!(out.events[0]["key"], "loadavg");
    }

    #[test]
    fn rejects_inverted_thresholds() {
        let err = testing::validate(super::descriptor(), json!({"warning": 2.0, "critical": 1.0})).unwrap_err();
        assert!(err.contains(r#""path":"critical""#), "{err}");
    }
}
