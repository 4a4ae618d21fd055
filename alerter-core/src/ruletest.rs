//! Rule unit tests (`alerter test FILE...`): events at given times in,
//! expected notifications (when, which rule, which transport, to whom, and
//! the rendered text) out.
//!
//! A test file names the config it tests and holds a list of tests. Each test
//! runs the real router, renderer and notice scheduler on a simulated clock
//! that jumps from one event or timer to the next, so an hour of
//! `repeat_interval` takes microseconds and the result never depends on the
//! machine's speed. Mismatches are shown as a unified diff of the expected
//! and actual notification lists.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::diag::{Diagnostic, Place, YamlPath};
use crate::config::source::{SourceFile, SourceMap};
use crate::config::types::{Duration as DurationStr, Timestamp};
use crate::config::{self, ConfigErrors, LoadOptions, json_schema_for, validate};
use alerter_engine::Engine;

use crate::event::{Event, Inbound, Severity};
use crate::notify::Notification;
use crate::plugin::PluginRegistry;

/// A test file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The config under test, relative to this file. Default: the embedded default config.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Values for `${VAR}` in the config; the process environment is not used.
    #[serde(default)]
    pub env: HashMap<String, String>,
    /// Start of the simulated clock for every test (default 2026-01-05T00:00:00Z, a Monday).
    #[serde(default)]
    pub start: Option<Timestamp>,
    pub tests: Vec<TestCase>,
}

/// One test.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// Overrides the file's start time.
    #[serde(default)]
    pub start: Option<Timestamp>,
    /// Events, each at an offset from the start.
    #[serde(default)]
    pub events: Vec<TestEvent>,
    /// How long to run the clock after the start. Default: the latest
    /// offset among events and expectations.
    #[serde(default)]
    pub until: Option<DurationStr>,
    /// Every notification expected, in time order. Nothing else may be sent.
    #[serde(default)]
    pub expect: Vec<Expected>,
}

/// An event injected at an offset.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestEvent {
    pub at: DurationStr,
    pub source: String,
    pub severity: Severity,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub details: String,
    /// Default: the config's alerter name.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub oneshot: bool,
    /// Send this event this many times (a storm), `{n}` in its summary,
    /// details, host, key and label values numbering each from 1. Default: 1.
    #[serde(default)]
    pub repeat: Option<u32>,
    /// The time between repeats. Default: 0s (all at `at`).
    #[serde(default)]
    pub every: Option<DurationStr>,
}

/// The most events one test may inject, storms included: a test runs in
/// memory and a typo (`repeat: 10000000`) should fail, not exhaust it.
pub const MAX_TEST_EVENTS: u64 = 1_000_000;

/// An expected notification; fields left out are not compared.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    pub at: DurationStr,
    pub rule: String,
    pub transport: String,
    /// Recipient ids (`*` for the workgroup).
    pub to: Vec<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
}

/// The outcome of one test.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    /// `None` when it passed; otherwise a unified diff, expected versus actual.
    pub failure: Option<String>,
}

/// The outcome of one file.
#[derive(Debug)]
pub struct FileResult {
    pub path: PathBuf,
    pub cases: Vec<CaseResult>,
}

/// A test file or its config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TestFileError {
    #[error("{0}")]
    Invalid(ConfigErrors),
}

const NOT_RUN: &str = "tests not run";

fn default_start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z").expect("valid").with_timezone(&Utc)
}

/// Loads and runs one test file.
pub fn run_file(path: &Path, plugins: &PluginRegistry) -> Result<FileResult, TestFileError> {
    let mut sources = SourceMap::default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(TestFileError::Invalid(ConfigErrors {
                diagnostics: vec![Diagnostic::error(
                    Place::None,
                    format!("cannot read test file {}: {e}", path.display()),
                )],
                sources,
                verdict: NOT_RUN,
            }));
        }
    };
    let file = sources.add(SourceFile::new(path.display().to_string(), Some(path.to_path_buf()), text));
    let mut diags = Vec::new();
    let Some(tf) = parse_typed::<TestFile>(&sources, file, &mut diags) else {
        return Err(TestFileError::Invalid(ConfigErrors { diagnostics: diags, sources, verdict: NOT_RUN }));
    };
    let opts = LoadOptions { env: Some(tf.env.clone()), ..crate::transport::load_options(plugins) };
    let loaded = match &tf.config {
        Some(rel) => {
            let cfg_path = path.parent().unwrap_or(Path::new(".")).join(rel);
            config::load(Some(&cfg_path), &opts)
        }
        None => config::load(None, &opts),
    }
    .map_err(TestFileError::Invalid)?;
    let cfg = loaded.config;
    let mut cases = Vec::new();
    for case in &tf.tests {
        let start = case.start.as_ref().or(tf.start.as_ref()).map_or_else(default_start, |t| t.value);
        let failure = run_case(&cfg, case, start);
        cases.push(CaseResult { name: case.name.clone(), failure });
    }
    Ok(FileResult { path: path.to_path_buf(), cases })
}

/// Parses a YAML document into `T` with the config's validator, so test
/// files get the same precise errors as config files.
fn parse_typed<T: serde::de::DeserializeOwned + JsonSchema>(
    sources: &SourceMap,
    file: usize,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let src = &sources.files()[file];
    let value = match src.parse() {
        Ok(v) => v,
        Err((message, pos)) => {
            diags.push(config::syntax_error(src, file, &message, pos));
            return None;
        }
    };
    let schema = json_schema_for::<T>();
    let before = diags.len();
    diags.extend(validate::validate(&schema, &schema, &value, file, &YamlPath::root()));
    if diags.len() > before {
        return None;
    }
    match serde_norway::from_value(value) {
        Ok(v) => Some(v),
        Err(e) => {
            diags.push(Diagnostic::error(Place::File(file), format!("invalid test file: {e}")));
            None
        }
    }
}

fn offset(start: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    start + chrono::Duration::from_std(d).unwrap_or_default()
}

/// Runs one test; `None` means it passed.
fn run_case(cfg: &config::Config, case: &TestCase, start: DateTime<Utc>) -> Option<String> {
    let total: u64 = case.events.iter().map(|e| u64::from(e.repeat.unwrap_or(1))).sum();
    if total > MAX_TEST_EVENTS {
        return Some(format!("{total} events in one test; at most {MAX_TEST_EVENTS}\n"));
    }
    let mut events: Vec<(Duration, Event)> = Vec::new();
    for e in &case.events {
        let repeat = e.repeat.unwrap_or(1);
        let every = e.every.as_ref().map_or(Duration::ZERO, |d| d.value);
        for i in 0..repeat {
            let d = e.at.value + every * i;
            let at = offset(start, d);
            // `{n}` only where a storm asked for it, so a lone event's text
            // stays exactly as written.
            let n = (i + 1).to_string();
            let fill = |s: &str| if e.repeat.is_some() { s.replace("{n}", &n) } else { s.to_string() };
            let host = e.host.as_deref().map_or_else(|| cfg.name.clone(), fill);
            let mut ev = Event::new(&e.source, host, e.severity, fill(&e.summary), at);
            ev.details = fill(&e.details);
            ev.labels = e.labels.iter().map(|(k, v)| (k.clone(), fill(v))).collect();
            ev.key = e.key.as_deref().map(fill);
            ev.oneshot = e.oneshot;
            events.push((d, ev));
        }
    }
    // Stable: events at the same offset keep their file order.
    events.sort_by_key(|(d, _)| *d);
    let horizon = case.until.as_ref().map(|u| u.value).unwrap_or_else(|| {
        events.iter().map(|(d, _)| *d).chain(case.expect.iter().map(|e| e.at.value)).max().unwrap_or_default()
    });
    let end = offset(start, horizon);

    // The daemon's own engine, on a simulated clock that jumps from one
    // event or timer to the next.
    let mut engine = Engine::new(cfg.engine_config(), Vec::new(), HashMap::new(), start);
    let mut sent: Vec<Notification> = Vec::new();
    let advance_to = |t: DateTime<Utc>, engine: &mut Engine, sent: &mut Vec<Notification>| {
        while let Some(w) = engine.next_wakeup().filter(|w| *w <= t) {
            engine.tick(w);
            sent.extend(engine.take_turn().notifications);
        }
    };
    for (d, ev) in events {
        let t = offset(start, d);
        advance_to(t, &mut engine, &mut sent);
        engine.handle(Inbound::Event(ev), t);
        sent.extend(engine.take_turn().notifications);
    }
    advance_to(end, &mut engine, &mut sent);
    sent.extend(engine.take_turn().notifications);
    sent.retain(|n| n.created_at <= end);
    sent.sort_by(|a, b| (a.created_at, &a.rule, &a.transport).cmp(&(b.created_at, &b.rule, &b.transport)));

    let expected: Vec<String> = case.expect.iter().map(render_expected).collect();
    let actual: Vec<String> =
        sent.iter().enumerate().map(|(i, n)| render_actual(n, start, case.expect.get(i))).collect();
    if expected == actual {
        return None;
    }
    let expected = if expected.is_empty() { "(no notifications)\n".to_string() } else { expected.concat() };
    let actual = if actual.is_empty() { "(no notifications)\n".to_string() } else { actual.concat() };
    let diff = similar::TextDiff::from_lines(&expected, &actual);
    Some(diff.unified_diff().context_radius(3).header("expected", "actual").to_string())
}

fn fmt_offset(d: Duration) -> String {
    if d.is_zero() { "0s".to_string() } else { humantime::format_duration(d).to_string() }
}

fn block(out: &mut String, key: &str, value: &str) {
    if value.contains('\n') {
        out.push_str(&format!("  {key}: |\n"));
        for line in value.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    } else {
        out.push_str(&format!("  {key}: {value:?}\n"));
    }
}

fn render_expected(e: &Expected) -> String {
    let mut s = format!(
        "- at: {}\n  rule: {}\n  transport: {}\n  to: [{}]\n",
        fmt_offset(e.at.value),
        e.rule,
        e.transport,
        e.to.join(", ")
    );
    if let Some(st) = &e.status {
        s.push_str(&format!("  status: {st}\n"));
    }
    if let Some(t) = &e.title {
        block(&mut s, "title", t.trim_end());
    }
    if let Some(t) = &e.text {
        block(&mut s, "text", t.trim_end());
    }
    s
}

/// Renders an actual notification, showing the optional fields only where
/// the expectation at the same position compares them (so a test that
/// checks only recipients is not failed by text it did not mention).
fn render_actual(n: &Notification, start: DateTime<Utc>, aligned: Option<&Expected>) -> String {
    let at = (n.created_at - start).to_std().unwrap_or_default();
    let to: Vec<&str> = n.recipients.iter().map(|r| r.id.as_str()).collect();
    let mut s = format!(
        "- at: {}\n  rule: {}\n  transport: {}\n  to: [{}]\n",
        fmt_offset(at),
        n.rule,
        n.transport,
        to.join(", ")
    );
    let show_all = aligned.is_none();
    if show_all || aligned.is_some_and(|e| e.status.is_some()) {
        s.push_str(&format!("  status: {}\n", n.status));
    }
    if show_all || aligned.is_some_and(|e| e.title.is_some()) {
        block(&mut s, "title", &n.title);
    }
    if show_all || aligned.is_some_and(|e| e.text.is_some()) {
        block(&mut s, "text", &n.text);
    }
    s
}
