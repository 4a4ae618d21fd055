//! Retention (issue 10, acceptance 6): the real `Engine` and a real SQLite
//! `Store` on a simulated clock with steady traffic. The database after 90
//! days is at most 1.2 times its size after 30 days: it grows with the
//! retention, not with uptime.

use std::collections::HashMap;

use alerter_core::config;
use alerter_core::event::{Event, Inbound, Severity};
use alerter_core::store::{Attempt, OutboxStatus, Store};
use alerter_engine::Engine;
use chrono::{DateTime, Duration, Utc};

const CONFIG: &str = r#"
alerter:
  name: TESTHOST
  state_dir: {state}
  retention: 30d
transports:
  file: { type: log, path: {out} }
rules:
  - name: app
    match: { source: app }
    repeat_interval: 1h
    notify: [{ workgroup: true, via: [file] }]
"#;

/// Distinct one-shot events per simulated hour.
const PER_HOUR: usize = 20;

fn size(dir: &std::path::Path) -> u64 {
    let c = rusqlite::Connection::open(dir.join(alerter_core::store::DB_FILE)).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap();
    let page: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    ((pages - free) * page) as u64
}

#[test]
fn the_database_grows_with_the_retention_not_with_uptime() {
    let dir = tempfile::tempdir().unwrap();
    let text = CONFIG
        .replace("{state}", &dir.path().join("state").display().to_string())
        .replace("{out}", &dir.path().join("out.jsonl").display().to_string());
    let registry = alerter_core::plugin::PluginRegistry::empty();
    let cfg =
        config::load_str("alerter.yaml", &text, Some(dir.path()), &alerter_core::transport::load_options(&registry))
            .unwrap()
            .config;
    let state = cfg.state_dir.clone();
    let mut store = Store::open(&state).unwrap();
    let t0: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z").unwrap().with_timezone(&Utc);
    let mut engine = Engine::new(cfg.engine_config(), Vec::new(), HashMap::new(), t0);
    let mut at_30 = 0;
    let mut n = 0u64;
    for hour in 0..(90 * 24) {
        let now = t0 + Duration::hours(hour);
        // Timers (expiring one-shots, pruning) up to now, then the hour's events.
        while let Some(w) = engine.next_wakeup().filter(|w| *w <= now) {
            engine.tick(w);
        }
        for _ in 0..PER_HOUR {
            n += 1;
            let e = Event::new("app", "web01", Severity::Warning, format!("error {n} in request {n}"), now)
                .with_key(n.to_string())
                .oneshot();
            engine.handle(Inbound::Event(e), now);
        }
        let turn = engine.take_turn();
        store.commit(&turn, now).unwrap();
        // Delivered, as the outbox worker records it.
        let lease = now + Duration::minutes(15);
        let claimed = store.claim("file", now, lease, 10_000).unwrap();
        let sent = Attempt {
            status: OutboxStatus::Sent,
            attempts: 1,
            next_attempt: now,
            error: None,
            reply: None,
            then: None,
        };
        let done: Vec<_> = claimed.iter().map(|e| (e.rowid, sent.clone())).collect();
        store.record_attempts(&done, now).unwrap();
        if hour == 30 * 24 {
            at_30 = size(&state);
        }
    }
    let at_90 = size(&state);
    assert!(n >= 40_000, "steady traffic: {n} events");
    assert!(
        (at_90 as f64) <= 1.2 * at_30 as f64,
        "database after 90 days ({at_90} bytes) more than 1.2 x after 30 days ({at_30} bytes)"
    );
    let alerts = store.load_alerts().unwrap().len();
    assert!(alerts <= 2 * PER_HOUR, "one-shot alerts leave the alert table after their repeat interval: {alerts} left");
}
