//! The console's share of drawing the overview: a page of 50 alerts out
//! of 10,000 firing under 20 rules, turned into the page's values and
//! rendered. The daemon's share (finding and sorting the page among
//! 10,000) and the whole request are measured by bench/console.sh.

use alerter_api::types;
use alerter_console::view::{Views, overview};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

fn status() -> types::Status {
    serde_json::from_value(json!({
        "name": "FILESERVER", "version": "0.1.0", "started_at": "2026-12-03T10:00:00Z", "uptime_seconds": 3600,
        "config_hash": "00", "config_loaded_at": "2026-12-03T10:00:00Z",
        "sources": (0..5).map(|i| json!({"id": format!("s{i}"), "kind": "log", "state": "running", "restarts": 0, "dropped_events": 0})).collect::<Vec<_>>(),
        "transports": [{"id": "popup", "kind": "messenger", "state": "ok", "failures_since_success": 0, "pending": 3}],
        "outbox": {"pending": 3, "oldest_pending_seconds": 12.5},
        "alerts": {"firing": 10000, "pending": 0, "acknowledged": 120},
        "active_silences": 2, "next_notices": [], "store_failing": false,
    }))
    .unwrap()
}

fn page() -> types::AlertsPage {
    let alerts = (0..50)
        .map(|i| {
            serde_json::from_value(json!({
                "id": format!("{i:016x}"), "rule": format!("rule-{:02}", i / 25), "state": "firing",
                "severity": if i % 3 == 0 { "critical" } else { "warning" },
                "summary": format!("Disk /srv/{i} on host-{i} is 97% full"), "source": "disk",
                "host": format!("host-{i}"), "labels": {"mount": format!("/srv/{i}"), "team": "storage"},
                "since": "2026-12-03T10:00:00Z", "fired_at": "2026-12-03T10:00:00Z", "count": 1,
            }))
            .unwrap()
        })
        .collect();
    let rules = (0..20)
        .map(|r| types::RuleAlerts {
            rule: format!("rule-{r:02}"),
            firing: 500,
            pending: 0,
            acknowledged: 6,
            severity: "critical".into(),
        })
        .collect();
    types::AlertsPage { total: 10_000, offset: 0, alerts, rules }
}

fn bench(c: &mut Criterion) {
    let views = Views::new();
    let (status, page) = (status(), page());
    let q = alerter_console::OverviewQuery::default();
    let now = "2026-12-03T12:00:00Z".parse().unwrap();
    let base = json!({"daemon": "FILESERVER", "title": "Overview", "page": "overview",
                      "user": {"name": "token:ops", "scope": "operate"}, "csrf": "00", "can_operate": true});
    c.bench_function("overview page of 50 of 10,000 alerts: values and render", |b| {
        b.iter(|| {
            let data = overview(&status, &page, &q, 1, now);
            let html = views.render("overview.html", base.clone(), data);
            assert!(html.len() > 10_000);
            html
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
