//! The daemon across a restart, with its real SQLite store and log
//! transport, on tokio's paused clock: a firing alert is neither re-notified
//! within its repeat interval nor forgotten; a resolved notice still due at
//! the stop is not sent for a condition that fails again after the restart.

use std::path::Path;
use std::time::Duration;

use crate::paused::{Running, notifications, until, until_every};
use alerter_core::event::{Event, Severity};
use alerter_core::notify::Notification;
use chrono::{DateTime, Utc};

const CONFIG: &str = r#"
alerter:
  name: TESTHOST
  state_dir: {state}
transports:
  file: { type: log, path: {out} }
rules:
  - name: marker
    match: { source: marker }
    notify: [{ workgroup: true, via: [file] }]
  - name: disk
    match: { source: disk }
    repeat_interval: 4h
    notify: [{ workgroup: true, via: [file] }]
  - name: nas
    match: { source: nas }
    group_by: [host]
    group_interval: 5m
    notify: [{ workgroup: true, via: [file] }]
"#;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-05T12:00:00Z").unwrap().with_timezone(&Utc)
}

fn by_rule<'a>(ns: &'a [Notification], rule: &str) -> Vec<&'a Notification> {
    ns.iter().filter(|n| n.rule == rule).collect()
}

fn start(dir: &Path, at: DateTime<Utc>) -> Running {
    crate::paused::start(dir, CONFIG, at)
}

fn disk_full() -> Event {
    Event::new("disk", "fileserver", Severity::Critical, "/srv is 99% full", t0()).with_label("mount", "/srv")
}

fn marker(n: u32) -> Event {
    Event::new("marker", "x", Severity::Info, format!("marker {n}"), t0()).with_key(n.to_string()).oneshot()
}

#[tokio::test(start_paused = true)]
async fn restart_neither_resends_nor_forgets_a_firing_alert() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");

    let first = start(dir.path(), t0());
    first.events.send(disk_full().into()).await.unwrap();
    until(|| by_rule(&notifications(&out), "disk").len() == 1).await;
    first.stop().await;
    let notified_at = by_rule(&notifications(&out), "disk")[0].created_at;

    // One hour later the daemon comes back and the source reports the same
    // condition, as sources do after a restart.
    let second = start(dir.path(), notified_at + chrono::Duration::hours(1));
    second.events.send(disk_full().into()).await.unwrap();
    second.events.send(marker(1).into()).await.unwrap();
    // Events are handled in order: once the marker is out, so is any
    // notification the disk event caused.
    until(|| by_rule(&notifications(&out), "marker").len() == 1).await;
    assert_eq!(by_rule(&notifications(&out), "disk").len(), 1, "not re-sent within the repeat interval");

    // Not forgotten either: the reminder comes four hours after the first
    // notification, across the restart.
    until_every(Duration::from_secs(60), || by_rule(&notifications(&out), "disk").len() == 2).await;
    let all = notifications(&out);
    let reminder = by_rule(&all, "disk")[1];
    assert!(reminder.repeat);
    assert_eq!(reminder.created_at, notified_at + chrono::Duration::hours(4));

    // And it can still be resolved.
    second
        .events
        .send(
            Event::new("disk", "fileserver", Severity::Resolved, "/srv is 60% full", t0())
                .with_label("mount", "/srv")
                .into(),
        )
        .await
        .unwrap();
    until(|| by_rule(&notifications(&out), "disk").len() == 3).await;
    assert_eq!(by_rule(&notifications(&out), "disk")[2].status, "resolved");
    second.stop().await;
}

fn nas(severity: Severity) -> Event {
    Event::new("nas", "nas1", severity, format!("volume1 is {severity}"), t0()).with_label("volume", "1")
}

/// Fires the `nas` alert, resolves it a minute later (its resolved notice
/// due at group_interval, 5 minutes after the first notification) and stops
/// the daemon before that. Returns when the firing notification went out.
async fn stop_with_a_resolved_notice_due(dir: &Path) -> DateTime<Utc> {
    let out = dir.join("out.jsonl");
    let first = start(dir, t0());
    first.events.send(nas(Severity::Critical).into()).await.unwrap();
    until(|| by_rule(&notifications(&out), "nas").len() == 1).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    first.events.send(nas(Severity::Resolved).into()).await.unwrap();
    first.events.send(marker(1).into()).await.unwrap();
    until(|| by_rule(&notifications(&out), "marker").len() == 1).await;
    first.stop().await;
    let all = notifications(&out);
    let nas = by_rule(&all, "nas");
    assert_eq!(nas.len(), 1, "the resolved notice was still due at the stop");
    nas[0].created_at
}

#[tokio::test(start_paused = true)]
async fn restart_sends_no_stale_resolved_for_a_condition_failing_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let told = stop_with_a_resolved_notice_due(dir.path()).await;

    // Back ten minutes later, after the resolved notice fell due; the source's
    // first check finds the volume failing again.
    let restart = told + chrono::Duration::minutes(10);
    let second = start(dir.path(), restart);
    second.events.send(nas(Severity::Critical).into()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    second.events.send(marker(2).into()).await.unwrap();
    until(|| by_rule(&notifications(&out), "marker").len() == 2).await;
    // Back before its resolved notice went out: as far as anyone was told,
    // it never stopped. Neither "resolved" nor a second "firing".
    let all = notifications(&out);
    let nas: Vec<(&str, DateTime<Utc>)> =
        by_rule(&all, "nas").iter().map(|n| (n.status.as_str(), n.created_at)).collect();
    assert_eq!(nas, vec![("firing", told)]);
    second.stop().await;

    // The store agrees: the alert fires on.
    let store = alerter_core::store::Store::open(&dir.path().join("state")).unwrap();
    let alerts = store.load_alerts().unwrap();
    use alerter_core::rules::router::{AlertStatus, Kept};
    let stored = alerts.iter().find(|(rule, _, _)| rule == "nas").map(|(_, _, kept)| match kept {
        Kept::Alert(a) => Some(a.status),
        Kept::Sent(_) => None,
    });
    assert_eq!(stored, Some(Some(AlertStatus::Firing)));
}

#[tokio::test(start_paused = true)]
async fn restart_sends_a_resolved_notice_still_true_once_sources_had_their_say() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let told = stop_with_a_resolved_notice_due(dir.path()).await;

    let restart = told + chrono::Duration::minutes(10);
    let second = start(dir.path(), restart);
    until(|| by_rule(&notifications(&out), "nas").len() == 2).await;
    let all = notifications(&out);
    let resolved = by_rule(&all, "nas")[1];
    assert_eq!(resolved.status, "resolved");
    assert_eq!(resolved.created_at, restart + chrono::Duration::seconds(60));
    second.stop().await;
}

#[tokio::test(start_paused = true)]
async fn suppressions_are_recorded_in_the_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let d = start(dir.path(), t0());
    let line = || Event::new("marker", "x", Severity::Warning, "same line", t0()).with_key("k").oneshot();
    d.events.send(line().into()).await.unwrap();
    d.events.send(line().into()).await.unwrap();
    until(|| by_rule(&notifications(&out), "marker").len() == 1).await;
    d.stop().await;
    let store = alerter_core::store::Store::open(&dir.path().join("state")).unwrap();
    let history = store.history(10).unwrap();
    let suppressed: Vec<_> = history.iter().filter(|r| r.status == "suppressed").collect();
    assert_eq!(suppressed.len(), 1, "{history:?}");
    assert!(suppressed[0].detail.as_deref().unwrap().starts_with("repeat interval"));
    assert!(history.iter().any(|r| r.status == "sent" && r.rule == "marker" && r.attempts == 1));
}

#[tokio::test(start_paused = true)]
async fn failing_deliveries_raise_an_alerter_event() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    // /dev/full fails every write with ENOSPC: a transient error, retried;
    // by the third attempt the transport counts as failing.
    let config = r#"
alerter:
  name: TESTHOST
  state_dir: {state}
transports:
  broken: { type: log, path: /dev/full }
  file: { type: log, path: {out} }
rules:
  - name: about-alerter
    match: { source: alerter, labels: { event: delivery_failing } }
    notify: [{ workgroup: true, via: [file] }]
  - name: to-broken
    match: { source: marker }
    notify: [{ workgroup: true, via: [broken] }]
"#;
    let d = crate::paused::start(dir.path(), config, t0());
    d.events.send(marker(1).into()).await.unwrap();
    until_every(Duration::from_secs(1), || !notifications(&out).is_empty()).await;
    let n = &notifications(&out)[0];
    assert_eq!(n.rule, "about-alerter");
    assert!(n.title.contains("deliveries via `broken` are failing"), "{}", n.title);
    assert!(n.title.contains("No space left on device"), "{}", n.title);
    assert!(n.title.contains("attempt 3, retrying"), "{}", n.title);
    d.stop().await;
    let store = alerter_core::store::Store::open(&dir.path().join("state")).unwrap();
    let broken: Vec<_> =
        store.history(20).unwrap().into_iter().filter(|r| r.transport.as_deref() == Some("broken")).collect();
    assert_eq!(broken.len(), 1, "one notification, retried in place");
    assert_eq!(broken[0].status, "pending", "still to be retried after a restart");
    assert!(broken[0].attempts >= 3);
    assert!(broken[0].detail.as_deref().unwrap().contains("No space left on device"));
}
