//! What a budget costs a storm: 10,000 rendered notifications, each for one
//! of 10 people, through `Ledger::admit`, against the same notifications on
//! a transport without a budget (the pass-through every `log` notification
//! takes). With 5 popups per 10 minutes per person, all but 50 are folded:
//! each fold is a window lookup, a count into the digest's summary (100
//! kinds of rule and host here, the most it keeps one by one) and an audit
//! record.
//!
//!     cargo bench -p alerter-engine --bench budget

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use alerter_engine::budget::{Allowance, Budgets, Class, Ledger, Limit, TransportBudget};
use alerter_engine::event::{Fingerprint, Severity};
use alerter_engine::notify::{AlertSummary, Notification};
use alerter_engine::rules::Recipient;
use chrono::{DateTime, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const STORM: u64 = 10_000;
const PEOPLE: u64 = 10;

fn storm(transport: &str, t: DateTime<Utc>) -> Vec<Notification> {
    (0..STORM)
        .map(|i| {
            let who = format!("user{}", i % PEOPLE);
            Notification {
                id: format!("{i:027x}"),
                created_at: t,
                rule: format!("rule-{}", i % 10),
                transport: transport.into(),
                status: "firing".into(),
                severity: Severity::Warning,
                title: format!("WARNING: error {i}"),
                text: format!("WARNING: error {i}\napp on web{:02}", i % 10),
                html: None,
                recipients: vec![Recipient {
                    id: who.clone(),
                    name: None,
                    machine: Some(who.to_uppercase()),
                    user: None,
                    email: None,
                    group: None,
                }],
                alerts: vec![AlertSummary {
                    fingerprint: Fingerprint(i),
                    status: "firing".into(),
                    source: "app".into(),
                    host: format!("web{:02}", i % 10),
                    severity: Severity::Warning,
                    summary: format!("error {i}"),
                    details: String::new(),
                    labels: BTreeMap::new(),
                    since: t,
                    count: 1,
                }],
                group: BTreeMap::new(),
                repeat: false,
                offline: None,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let t0 = DateTime::parse_from_rfc3339("2026-01-05T12:00:00Z").unwrap().with_timezone(&Utc);
    let mut budgets = Budgets::default();
    budgets.transports.insert(
        "popup".into(),
        TransportBudget {
            class: Class::Popups,
            allowance: Some(Allowance::Limited(Limit { count: 5, per: Duration::from_secs(600) })),
        },
    );
    let mut group = c.benchmark_group("budget");
    group.throughput(Throughput::Elements(STORM));
    for (name, transport) in [("10,000 notifications, 10 people, 5 popups each", "popup"), ("no budget (log)", "log")] {
        let pool = storm(transport, t0);
        group.bench_function(name, |b| {
            b.iter_batched(
                || (Ledger::default(), pool.clone()),
                |(mut ledger, notifications)| {
                    let (mut out, mut audit) = (Vec::new(), Vec::new());
                    for n in notifications {
                        ledger.admit(black_box(n), None, &budgets, chrono_tz::UTC, &mut out, &mut audit);
                    }
                    (out.len(), audit.len())
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
