//! The `script` source: runs a command on an interval or a crontab
//! schedule and turns its result into events.
//!
//! Two output formats:
//! - `nagios` (the default): the Monitoring Plugins convention (see
//!   [`nagios`]), so every existing `check_*` plugin works unchanged. The
//!   exit code is the state; a change of state is an event (`ok` after a
//!   problem is `resolved`), with the first line as summary, the long
//!   output as details and performance data as `perf_*` labels.
//! - `json`: each line of output is one event in the plugin wire format
//!   (`{"severity":"warning","summary":"..."}`), for scripts that report
//!   several things.
//!
//! The command runs with an argv list (a shell only with `shell:`), in a
//! process group of its own that is killed whole at the timeout, with a
//! clean environment, output capped at `max_output`, optionally as
//! another user. Its last state is saved, so a restart repeats nothing.

pub mod nagios;
pub mod run;

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::time::Duration;

use alerter_plugin_sdk::{Check, Context, EmitError, Error, Event, Level as LogLevel, Severity, Trigger};
use nagios::State;
use serde::Deserialize;

/// How the output is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Nagios,
    Json,
}

/// The settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The program and its arguments, e.g. `[/usr/lib/nagios/plugins/check_disk, -w, 20%, -p, /]`.
    #[serde(default)]
    pub command: Vec<String>,
    /// A shell command line instead (run with `/bin/sh -c`).
    #[serde(default)]
    pub shell: Option<String>,
    #[serde(default)]
    pub format: Format,
    /// Time between runs; default 1m.
    #[serde(default)]
    pub interval: Option<String>,
    /// A crontab line instead of `interval`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Time zone of `schedule`; default UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Kill the command (and everything it started) after this; default 30s.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Output kept per run; default 64 KiB. The rest is read and dropped.
    #[serde(default)]
    pub max_output: Option<String>,
    /// Extra environment variables (the environment is otherwise clean:
    /// PATH, LC_ALL=C, LANG=C, HOME).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Run as this user (needs the daemon to run as root).
    #[serde(default)]
    pub user: Option<String>,
    /// The severity of UNKNOWN (exit 3, a timeout, a command that cannot
    /// run): `warning` (default) or `critical`.
    #[serde(default)]
    pub unknown: Option<String>,
}

/// The source.
#[derive(Debug)]
pub struct Script {
    spec: run::Spec,
    format: Format,
    trigger: Trigger,
    unknown: Severity,
    /// The state of the last run (nagios format), saved across restarts.
    last: State,
    name: String,
}

fn parse_duration(key: &'static str, text: Option<&str>, default: Duration) -> Result<Duration, Error> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| Error::at(key, format!("`{t}` is not a duration ({e}); write e.g. 10s or 2m"))),
    }
}

struct Checked {
    argv: Vec<String>,
    trigger: Trigger,
    timeout: Duration,
    max_output: usize,
    unknown: Severity,
}

fn check_config(cfg: &Config) -> Result<Checked, Error> {
    // Every problem is collected, so `alerter check` shows them all.
    let mut problems = Vec::new();
    let argv = match (&cfg.shell, cfg.command.is_empty()) {
        (Some(_), false) => {
            problems.push(Error::at("shell", "give either `command` or `shell`, not both"));
            cfg.command.clone()
        }
        (Some(line), true) => vec!["/bin/sh".to_string(), "-c".to_string(), line.clone()],
        (None, false) => cfg.command.clone(),
        (None, true) => {
            problems.push(Error::msg("missing `command` (a list: program and arguments) or `shell` (a command line)"));
            vec![String::new()]
        }
    };
    if argv[0].is_empty() && !cfg.command.is_empty() {
        problems.push(Error::at("command[0]", "the program is empty"));
    }
    let trigger = Trigger::from_settings(
        cfg.interval.as_deref(),
        cfg.schedule.as_deref(),
        cfg.timezone.as_deref(),
        Duration::from_secs(60),
    )
    .map_err(|(key, msg)| problems.push(Error::at(key, msg)))
    .ok();
    let timeout = match parse_duration("timeout", cfg.timeout.as_deref(), Duration::from_secs(30)) {
        Ok(t) if t.is_zero() => {
            problems.push(Error::at("timeout", "must be more than 0s"));
            t
        }
        Ok(t) => t,
        Err(e) => {
            problems.push(e);
            Duration::ZERO
        }
    };
    let max_output = match &cfg.max_output {
        None => 64 * 1024,
        Some(t) => match t.parse::<bytesize::ByteSize>() {
            Ok(b) => b.as_u64().min(16 * 1024 * 1024) as usize,
            Err(_) => {
                problems.push(Error::at("max_output", format!("`{t}` is not a size; write e.g. \"64 KiB\"")));
                0
            }
        },
    };
    let unknown = match cfg.unknown.as_deref() {
        None | Some("warning") => Severity::Warning,
        Some("critical") => Severity::Critical,
        Some(other) => {
            problems.push(Error::at("unknown", format!("`{other}`: write warning or critical")));
            Severity::Warning
        }
    };
    for k in cfg.env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            problems.push(Error::at(format!("env.{k}"), "not a valid variable name"));
        }
    }
    Error::all(problems)?;
    Ok(Checked { argv, trigger: trigger.expect("no problems"), timeout, max_output, unknown })
}

fn lookup_user(name: &str) -> Result<(u32, u32, String), Error> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw(), u.dir.display().to_string())),
        Ok(None) => Err(Error::at("user", format!("no user `{name}` on this machine"))),
        Err(e) => Err(Error::at("user", format!("cannot look up `{name}`: {e}"))),
    }
}

impl Script {
    /// The events of one run (pure apart from `self.last`).
    pub fn events_of(&mut self, ran: &run::Ran) -> Vec<Event> {
        match self.format {
            Format::Nagios => self.nagios_events(ran),
            Format::Json => Vec::new(),
        }
    }

    fn problem(&self, ran: &run::Ran) -> Option<String> {
        if let Some(e) = &ran.spawn_error {
            return Some(e.clone());
        }
        if ran.timed_out {
            return Some(format!(
                "{} did not finish within {:?}; killed it and its children",
                self.name, self.spec.timeout
            ));
        }
        None
    }

    fn nagios_events(&mut self, ran: &run::Ran) -> Vec<Event> {
        let (state, summary, details, perf) = match self.problem(ran) {
            Some(p) => (State::Unknown, format!("UNKNOWN: {p}"), String::new(), Vec::new()),
            None => {
                let out = nagios::parse(&ran.stdout);
                let state = State::from_exit(ran.code);
                let mut summary = out.summary.clone();
                if summary.is_empty() {
                    summary = match ran.code {
                        Some(c) => format!("{} exited with status {c} and said nothing", self.name),
                        None => format!("{} was killed by a signal", self.name),
                    };
                    if let Some(line) = ran.stderr.lines().find(|l| !l.trim().is_empty()) {
                        summary.push_str(&format!(": {}", line.trim()));
                    }
                }
                let mut details = out.long.join("\n");
                if state == State::Unknown && !ran.stderr.trim().is_empty() {
                    if !details.is_empty() {
                        details.push('\n');
                    }
                    details.push_str(ran.stderr.trim_end());
                }
                if ran.truncated {
                    details.push_str("\n[output cut at max_output]");
                }
                (state, summary, details, out.perf)
            }
        };
        let previous = self.last;
        self.last = state;
        if state == previous {
            return Vec::new();
        }
        let severity = match state {
            State::Ok => Severity::Resolved,
            State::Warning => Severity::Warning,
            State::Critical => Severity::Critical,
            State::Unknown => self.unknown,
        };
        let mut e = Event::new(severity, summary)
            .key("check")
            .details(details)
            .label("status", state.name())
            .label("command", self.name.clone());
        if let Some(c) = ran.code {
            e = e.label("exit_code", c.to_string());
        }
        for p in perf.iter().take(32) {
            e = e.label(nagios::label_name(&p.label), p.value.clone());
        }
        vec![e]
    }
}

/// Emits with a few retries on backpressure; false when it could not.
fn emit_all(cx: &Context, events: impl IntoIterator<Item = String>) -> bool {
    for json in events {
        let mut tries = 0;
        loop {
            match cx.emit_json(&json) {
                Ok(()) => break,
                Err(EmitError::Backpressure) if tries < 100 => {
                    tries += 1;
                    if cx.wait_for_shutdown(Duration::from_millis(50)) {
                        return false;
                    }
                }
                Err(EmitError::Rejected) => {
                    cx.log(LogLevel::Warn, &format!("the script printed a line that is not an event: {json}"));
                    break;
                }
                Err(_) => return false,
            }
        }
    }
    true
}

impl Check for Script {
    const NAME: &'static CStr = c"script";
    const DESCRIPTION: &'static CStr =
        c"runs a command on a schedule: Nagios/Monitoring Plugins exit codes and perfdata, or JSON-lines events";
    type Config = Config;

    fn validate(cfg: &Config) -> Result<(), Error> {
        check_config(cfg).map(drop)
    }

    fn new(cfg: Config, cx: &Context) -> Result<Self, Error> {
        let c = check_config(&cfg)?;
        let user = cfg.user.as_deref().map(lookup_user).transpose()?;
        let name = std::path::Path::new(if cfg.shell.is_some() { "sh" } else { &c.argv[0] })
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let last = cx.saved_state().and_then(|s| serde_json::from_str::<State>(&s).ok()).unwrap_or(State::Ok);
        Ok(Script {
            spec: run::Spec {
                argv: c.argv,
                env: cfg.env.into_iter().collect(),
                timeout: c.timeout,
                max_output: c.max_output,
                user,
            },
            format: cfg.format,
            trigger: c.trigger,
            unknown: c.unknown,
            last,
            name,
        })
    }

    fn trigger(&self) -> Trigger {
        self.trigger.clone()
    }

    fn check(&mut self, cx: &Context) -> Result<Vec<Event>, Error> {
        let ran = run::run(&self.spec, |d| cx.wait_for_shutdown(d));
        if cx.should_stop() {
            return Ok(Vec::new());
        }
        cx.log(
            LogLevel::Debug,
            &format!(
                "{} ran in {:?}: exit {:?}{}",
                self.name,
                ran.took,
                ran.code,
                if ran.timed_out { ", timed out" } else { "" }
            ),
        );
        match self.format {
            Format::Nagios => {
                let before = self.last;
                let events: Vec<String> = self.events_of(&ran).iter().map(Event::to_json).collect();
                if !emit_all(cx, events) {
                    // Not told: forget the change so the next run reports it.
                    self.last = before;
                    return Ok(Vec::new());
                }
                let _ = cx.save_state(&serde_json::to_string(&self.last).expect("a state is JSON"));
            }
            Format::Json => {
                if let Some(p) = self.problem(&ran) {
                    cx.log(LogLevel::Error, &p);
                }
                let lines: Vec<String> =
                    ran.stdout.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
                emit_all(cx, lines);
            }
        }
        Ok(Vec::new())
    }
}

#[cfg(not(feature = "dylib"))]
alerter_plugin_sdk::declare_builtin_source!(alerter_plugin_sdk::Periodic<Script>);
#[cfg(feature = "dylib")]
alerter_plugin_sdk::declare_source!(alerter_plugin_sdk::Periodic<Script>);

#[cfg(test)]
mod tests {
    use alerter_plugin_sdk::testing;
    use serde_json::json;

    #[test]
    fn bad_settings_name_the_key() {
        let d = super::descriptor();
        let err = |v| testing::validate(d, v).unwrap_err();
        assert!(err(json!({})).contains("missing `command`"));
        assert!(err(json!({"command": ["x"], "shell": "y"})).contains("shell"));
        assert!(err(json!({"command": ["x"], "timeout": "soon"})).contains("timeout"));
        assert!(err(json!({"command": ["x"], "max_output": "lots"})).contains("max_output"));
        assert!(err(json!({"command": ["x"], "unknown": "panic"})).contains("unknown"));
        assert!(err(json!({"command": ["x"], "format": "xml"})).contains("format"));
        assert!(err(json!({"command": ["x"], "env": {"A=B": "c"}})).contains("env.A=B"));
        assert!(testing::validate(d, json!({"command": ["/bin/true"], "schedule": "0 * * * *"})).is_ok());
    }

    #[test]
    fn json_lines_become_events() {
        let out = testing::run(
            super::descriptor(),
            json!({"shell": "echo '{\"severity\":\"warning\",\"summary\":\"one\"}'; echo '{\"severity\":\"info\",\"summary\":\"two\",\"oneshot\":true}'", "format": "json"}),
            testing::Stop::AfterEvents(2),
        );
        assert_eq!(out.events[0]["summary"], "one");
        assert_eq!(out.events[1]["summary"], "two");
    }

    #[test]
    fn a_state_change_is_an_event_and_the_state_is_saved() {
        let out = testing::run(
            super::descriptor(),
            json!({"shell": "echo 'PROBLEM - it broke | errors=3;1;2'; echo 'first detail'; exit 2"}),
            testing::Stop::AfterEvents(1),
        );
        let e = &out.events[0];
        assert_eq!(e["severity"], "critical");
        assert_eq!(e["summary"], "PROBLEM - it broke");
        assert_eq!(e["details"], "first detail");
        assert_eq!(e["labels"]["perf_errors"], "3");
        assert_eq!(e["labels"]["status"], "critical");
        // Started again with the saved state: the same problem is not news.
        let again = testing::run_with_state(
            super::descriptor(),
            json!({"shell": "echo 'PROBLEM - it broke'; exit 2", "interval": "1s"}),
            Some("\"critical\""),
            testing::Stop::After(std::time::Duration::from_millis(300)),
        );
        assert!(again.events.is_empty(), "{:?}", again.events);
        assert_eq!(again.states, vec!["\"critical\""]);
    }
}
