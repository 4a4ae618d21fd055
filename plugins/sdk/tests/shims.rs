//! The SDK's generated entry points, driven by the test harness: config
//! errors with paths, panics caught in every phase, events and shutdown.

use std::time::Duration;

use alerter_plugin_sdk::testing::{self, Stop};
use alerter_plugin_sdk::{Check, Context, Error, Event, Periodic, Severity, Source, abi, declare_builtin_source};
use serde_json::json;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    count: u32,
    #[serde(default)]
    panic_in: Option<String>,
}

struct Counter {
    cfg: Config,
}

impl Source for Counter {
    const NAME: &'static std::ffi::CStr = c"counter";
    type Config = Config;

    fn validate(cfg: &Config) -> Result<(), Error> {
        if cfg.count == 0 {
            return Err(Error::at("count", "must be at least 1"));
        }
        if cfg.panic_in.as_deref() == Some("validate") {
            panic!("validate blew up");
        }
        Ok(())
    }

    fn new(cfg: Config, _cx: &Context) -> Result<Self, Error> {
        if cfg.panic_in.as_deref() == Some("new") {
            panic!("new blew up");
        }
        Ok(Counter { cfg })
    }

    fn run(&mut self, cx: &Context) -> Result<(), Error> {
        for n in 0..self.cfg.count {
            if self.cfg.panic_in.as_deref() == Some("run") && n == 1 {
                panic!("run blew up at {n}");
            }
            cx.emit(&Event::new(Severity::Info, format!("tick {n}")).key(n.to_string())).ok();
        }
        while !cx.wait_for_shutdown(Duration::from_millis(10)) {}
        Ok(())
    }
}

mod counter {
    alerter_plugin_sdk::declare_builtin_source!(super::Counter);
}

#[test]
fn events_flow_and_the_source_stops_when_told() {
    let out = testing::run(counter::descriptor(), json!({"count": 3}), Stop::AfterEvents(3));
    assert_eq!(out.status, abi::STATUS_OK, "{:?}", out.error);
    let summaries: Vec<&str> = out.events.iter().map(|e| e["summary"].as_str().unwrap()).collect();
    assert_eq!(summaries, vec!["tick 0", "tick 1", "tick 2"]);
    assert_eq!(out.events[0]["v"], 1);
    assert_eq!(testing::name(counter::descriptor()), "counter");
}

#[test]
fn config_errors_name_the_key() {
    let err = testing::validate(counter::descriptor(), json!({"count": 0})).unwrap_err();
    let v: serde_json::Value = serde_json::from_str(&err).unwrap();
    assert_eq!(v["errors"][0]["path"], "count");
    assert_eq!(v["errors"][0]["message"], "must be at least 1");
    let err = testing::validate(counter::descriptor(), json!({"count": 1, "cuont": 2})).unwrap_err();
    assert!(err.contains("unknown field `cuont`"), "{err}");
    let err = testing::validate(counter::descriptor(), json!({"count": "three"})).unwrap_err();
    assert!(err.contains(r#""path":"count""#), "{err}");
}

#[test]
fn panics_are_caught_in_every_phase() {
    let err = testing::validate(counter::descriptor(), json!({"count": 1, "panic_in": "validate"})).unwrap_err();
    assert!(err.contains("panic in validate: validate blew up"), "{err}");

    let out = testing::run(counter::descriptor(), json!({"count": 1, "panic_in": "new"}), Stop::AfterEvents(1));
    assert_eq!(out.status, abi::STATUS_ERROR);
    assert!(out.error.unwrap().contains("panic in new: new blew up"));

    let out = testing::run(counter::descriptor(), json!({"count": 5, "panic_in": "run"}), Stop::AfterEvents(5));
    assert_eq!(out.status, abi::STATUS_PANICKED);
    assert_eq!(out.events.len(), 1, "what was emitted before the panic stays");
    assert!(out.error.unwrap().contains("panic in run: run blew up at 1"));
}

struct Every {
    n: u32,
}

impl Check for Every {
    const NAME: &'static std::ffi::CStr = c"every";
    type Config = serde_json::Value;

    fn new(_: serde_json::Value, _: &Context) -> Result<Self, Error> {
        Ok(Every { n: 0 })
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(5)
    }

    fn check(&mut self, _: &Context) -> Result<Vec<Event>, Error> {
        self.n += 1;
        if self.n == 2 {
            return Err(Error::msg("flaky"));
        }
        Ok(vec![Event::new(Severity::Warning, format!("check {}", self.n))])
    }
}

declare_builtin_source!(Periodic<Every>);

#[test]
fn periodic_checks_run_on_their_interval_and_survive_failures() {
    let out = testing::run(descriptor(), json!({}), Stop::AfterEvents(2));
    assert_eq!(out.status, abi::STATUS_OK);
    let summaries: Vec<&str> = out.events.iter().map(|e| e["summary"].as_str().unwrap()).collect();
    assert_eq!(summaries, vec!["check 1", "check 3"]);
    assert!(out.logs.iter().any(|(level, m)| *level == abi::LOG_ERROR && m == "check failed: flaky"));
}
