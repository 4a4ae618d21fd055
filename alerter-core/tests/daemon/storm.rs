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

/// While a checkpoint round holds the store's writes (tens of milliseconds
/// under a storm, waiting for fsyncs), the storm's turns wait for it, but a
/// critical event's turn passes it and goes out; once the hold ends the
/// backlog drains, every notification once.
#[tokio::test(start_paused = true)]
async fn a_critical_event_passes_a_checkpoint_round_that_holds_the_storm() {
    const STORM: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let d = crate::paused::start(dir.path(), CONFIG, t0());
    // The daemon has opened its store (and said so) before the hold:
    // opening migrates, at the gate.
    until(|| notifications(&out).len() == 1).await;
    let store = alerter_core::store::Store::open(&dir.path().join("state")).unwrap();
    let hold = store.hold_writes();
    let storm = d.inbox.lane("storm", STORM);
    for i in 0..STORM {
        storm.try_send(line("storm", Severity::Warning, i)).unwrap();
    }
    // A virtual second: the engine routes a turn of the storm and keeps it
    // waiting; nothing of the storm is committed, so nothing goes out.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(notifications(&out).len(), 1, "the storm waits for the hold to end");
    d.events
        .try_send(Event::new("quiet", "db01", Severity::Critical, "CRITICAL db01 is down", t0()).oneshot().into())
        .unwrap();
    let pos = position_of_critical(&out).await;
    // It took the turn that was waiting along (one batch), no more.
    assert!(pos <= 1 + 128, "the critical notification came {pos}th");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let during = notifications(&out).len();
    assert!(during <= 2 + 128, "{during} notifications went out while the writes were held");
    drop(hold);
    until(|| notifications(&out).len() >= STORM + 2).await;
    let all = notifications(&out);
    let ids: std::collections::HashSet<_> = all.iter().map(|n| n.id.as_str()).collect();
    assert_eq!((all.len(), ids.len()), (STORM + 2, STORM + 2), "every notification exactly once");
    drop((storm, store));
    d.stop().await;
}
