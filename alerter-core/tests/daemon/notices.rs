//! Scheduled notices in the daemon, with its real SQLite store and log
//! transport, on tokio's paused clock: a first start announces nothing from
//! before it, a reminder never announces an occurrence that has begun, and
//! a restart of a daemon that already knew a notice keeps sending what it
//! missed by less than a minute.

use std::path::Path;
use std::time::Duration;

use crate::paused::{Running, until};
use alerter_core::notify::Notification;
use chrono::{DateTime, Utc};

const CONFIG: &str = r#"
alerter:
  name: TESTHOST
  state_dir: {state}
transports:
  file: { type: log, path: {out} }
notices:
  - name: drill
    cron: "{cron}"
    message: "Fire drill at {{ at }}"
    remind: [{remind}]
    notify: [{ workgroup: true, via: [file] }]
"#;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// (created_at, title, text) of every notification so far.
fn sent(dir: &Path) -> Vec<(DateTime<Utc>, String, String)> {
    std::fs::read_to_string(dir.join("out.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Notification>(l).unwrap())
        .map(|n| (n.created_at, n.title, n.text))
        .collect()
}

fn line(at: &str, title: &str, text: &str) -> (DateTime<Utc>, String, String) {
    (utc(at), title.to_string(), text.to_string())
}

fn start(dir: &Path, cron: &str, remind: &str, at: DateTime<Utc>) -> Running {
    crate::paused::start(dir, &CONFIG.replace("{cron}", cron).replace("{remind}", remind), at)
}

#[tokio::test(start_paused = true)]
async fn first_start_announces_nothing_from_before_it() {
    let dir = tempfile::tempdir().unwrap();
    // First started at 07:02:27 with a notice every 30 seconds and a 10 s
    // reminder: the 07:01:30 and 07:02:00 notices and the reminders for
    // 07:02:00 and 07:02:30 are all from before the daemon knew the notice.
    let d = start(dir.path(), "*/30 * * * * *", "10s", utc("2026-01-05T07:02:27Z"));
    until(|| sent(dir.path()).len() >= 3).await;
    d.stop().await;
    assert_eq!(
        sent(dir.path())[..3],
        [
            line("2026-01-05T07:02:30Z", "Notice: drill", "Fire drill at 07:02"),
            line("2026-01-05T07:02:50Z", "Reminder: drill in 10 seconds", "In 10 seconds: Fire drill at 07:03"),
            line("2026-01-05T07:03:00Z", "Notice: drill", "Fire drill at 07:03"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn restart_sends_what_it_missed_briefly_but_no_reminder_for_what_has_begun() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), "*/30 * * * * *", "10s", utc("2026-01-05T07:02:27Z"));
    until(|| sent(dir.path()).len() >= 3).await;
    first.stop().await;
    let before = sent(dir.path());
    assert_eq!(before.len(), 3, "stopped right after the 07:03:00 notice: {before:?}");
    assert_eq!(before[2].0, utc("2026-01-05T07:03:00Z"));

    // Down from just after 07:03:00 to 07:03:40, less than a minute. The
    // 07:03:30 notice goes out late, as before; its reminder (due 07:03:20)
    // would say "In 10 seconds" about a drill that began ten seconds ago.
    let second = start(dir.path(), "*/30 * * * * *", "10s", utc("2026-01-05T07:03:40Z"));
    until(|| sent(dir.path()).len() >= 6).await;
    second.stop().await;
    assert_eq!(
        sent(dir.path())[3..6],
        [
            line("2026-01-05T07:03:30Z", "Notice: drill", "Fire drill at 07:03"),
            line("2026-01-05T07:03:50Z", "Reminder: drill in 10 seconds", "In 10 seconds: Fire drill at 07:04"),
            line("2026-01-05T07:04:00Z", "Notice: drill", "Fire drill at 07:04"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_notice_known_before_a_stop_counts_as_known_even_if_it_never_fired() {
    let dir = tempfile::tempdir().unwrap();
    // Known from 06:59:00, stopped at 06:59:30 before anything fired.
    let first = start(dir.path(), "0 8 * * *", "1h", utc("2026-01-05T06:59:00Z"));
    tokio::time::sleep(Duration::from_secs(30)).await;
    first.stop().await;
    assert!(sent(dir.path()).is_empty());

    // Back at 07:00:30: the one-hour reminder (07:00) was missed by 30 s
    // while down, and the daemon knew the notice, so it goes out late.
    let second = start(dir.path(), "0 8 * * *", "1h", utc("2026-01-05T07:00:30Z"));
    until(|| !sent(dir.path()).is_empty()).await;
    second.stop().await;
    assert_eq!(
        sent(dir.path()),
        [line("2026-01-05T07:00:00Z", "Reminder: drill in 1 hour", "In 1 hour: Fire drill at 08:00")]
    );
}
