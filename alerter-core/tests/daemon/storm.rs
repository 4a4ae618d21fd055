//! The daemon under an event storm, with its real SQLite store and log
//! transport, on tokio's paused clock: a critical event is not queued
//! behind another source's backlog, nor behind its own source's.

use std::path::Path;

use crate::paused::{notifications, until};
use alerter_core::event::{Event, Inbound, Severity};
use chrono::{DateTime, Utc};

const CONFIG: &str = r#"
alerter:
  name: TESTHOST
  state_dir: {state}
transports:
  file: { type: log, path: {out} }
rules:
  - name: all
    match: { source: "*" }
    notify: [{ workgroup: true, via: [file] }]
"#;

const BACKLOG: usize = 50_000;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-05T12:00:00Z").unwrap().with_timezone(&Utc)
}

fn line(source: &str, severity: Severity, n: usize) -> Inbound {
    Event::new(source, "web01", severity, format!("{source} line {n}"), t0()).with_key(n.to_string()).oneshot().into()
}

/// Where the critical notification is in delivery order (the log
/// transport's file is written in delivery order). On the paused clock the
/// daemon may drain everything before the test looks again, so the order
/// in the file, not the moment of looking, is what shows that it overtook.
async fn position_of_critical(out: &Path) -> usize {
    let mut found = None;
    until(|| {
        found = notifications(out).iter().position(|n| n.title.contains("CRITICAL"));
        found.is_some()
    })
    .await;
    found.unwrap()
}

/// Issue 10, acceptance 2 (the ordering): with 50,000 events queued from a
/// storming source, a critical event from another source is delivered
/// before the backlog drains.
#[tokio::test(start_paused = true)]
async fn a_critical_event_from_a_quiet_source_overtakes_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let d = crate::paused::start(dir.path(), CONFIG, t0());
    let storm = d.inbox.lane("storm", BACKLOG);
    let quiet = d.inbox.lane("quiet", 10);
    // All queued before the engine runs again (this test's runtime has one
    // thread, and nothing here yields).
    for i in 0..BACKLOG {
        storm.try_send(line("storm", Severity::Warning, i)).unwrap();
    }
    quiet
        .try_send(Event::new("quiet", "db01", Severity::Critical, "CRITICAL db01 is down", t0()).oneshot().into())
        .unwrap();
    let pos = position_of_critical(&dir.path().join("out.jsonl")).await;
    assert!(pos < 1_000, "the critical notification came {pos}th of {BACKLOG}");
    drop((storm, quiet));
    d.stop().await;
}

/// The same when the critical line comes from the storming source itself,
/// behind its own backlog.
#[tokio::test(start_paused = true)]
async fn a_critical_event_overtakes_its_own_sources_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let d = crate::paused::start(dir.path(), CONFIG, t0());
    let storm = d.inbox.lane("storm", BACKLOG + 1);
    for i in 0..BACKLOG {
        storm.try_send(line("storm", Severity::Warning, i)).unwrap();
    }
    storm
        .try_send(Event::new("storm", "web01", Severity::Critical, "CRITICAL web01 is down", t0()).oneshot().into())
        .unwrap();
    let pos = position_of_critical(&dir.path().join("out.jsonl")).await;
    assert!(pos < 1_000, "the critical notification came {pos}th of {BACKLOG}");
    drop(storm);
    d.stop().await;
}
