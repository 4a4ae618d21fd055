//! Router throughput: events with 5 labels through 100 rules that mix exact
//! and regex label matchers (issue target: 500,000 events/s on one core).
//!
//! Each event matches exactly one rule, chosen at random, so on average half
//! the rules are tried and fail before the match; 10,000 distinct alerts
//! cycle through, as when many hosts report the same few conditions.
//!
//!     cargo bench -p alerter-core --bench router

use std::hint::black_box;
use std::sync::Arc;

use alerter_engine::event::{Event, Severity};
use alerter_engine::rules::router::Router;
use alerter_engine::rules::{LabelCond, Matcher, Recipient, Rule, SourcePattern, Target};
use chrono::{DateTime, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const RULES: usize = 100;
const DISTINCT: usize = 10_000;

fn rules() -> Vec<Arc<Rule>> {
    (0..RULES)
        .map(|i| {
            let mut labels = vec![("service".to_string(), LabelCond::Equals(format!("svc-{i}")))];
            if i % 2 == 0 {
                labels.push((
                    "host".to_string(),
                    LabelCond::Regex(regex::Regex::new(&format!("^(?:web-{i}-[0-9]+)$")).unwrap()),
                ));
            } else {
                labels.push(("env".to_string(), LabelCond::Equals("prod".to_string())));
            }
            if i % 3 == 0 {
                labels.push((
                    "region".to_string(),
                    LabelCond::Regex(regex::Regex::new("^(?:eu|us)-[a-z]+-[0-9]$").unwrap()),
                ));
            }
            let sources = if i % 4 == 0 { vec![SourcePattern::new("disk*").unwrap()] } else { vec![] };
            let mut r = Rule::new(format!("rule-{i}"));
            r.matcher = Matcher::new(Some(Severity::Warning), sources, labels);
            r.group_by = vec!["host".into()];
            r.targets = vec![Target { transport: "log".into(), recipients: vec![Recipient::workgroup()] }];
            Arc::new(r)
        })
        .collect()
}

fn events(t: DateTime<Utc>) -> Vec<Event> {
    // A small xorshift keeps the benchmark free of a rand dependency and
    // its choices the same on every run.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..DISTINCT)
        .map(|n| {
            let i = (next() % RULES as u64) as usize;
            Event::new("disk-usage", format!("web-{i}-{}", n % 50), Severity::Warning, "disk is filling up", t)
                .with_label("service", format!("svc-{i}"))
                .with_label("host", format!("web-{i}-{}", n % 50))
                .with_label("env", "prod")
                .with_label("region", "eu-west-1")
                .with_label("mount", format!("/srv/{}", n % 7))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let t0 = DateTime::parse_from_rfc3339("2026-01-05T12:00:00Z").unwrap().with_timezone(&Utc);
    let pool = events(t0);
    let mut group = c.benchmark_group("router");
    group.throughput(Throughput::Elements(pool.len() as u64));

    // Steady state: every alert already firing, events refresh them.
    let mut router = Router::new(rules(), vec![]);
    for e in &pool {
        router.handle(e.clone(), t0);
    }
    router.take_changes();
    let mut out = Vec::new();
    // Events arrive owned from sources; making them is the sources' cost,
    // so the copies are made outside the measured part.
    group.bench_function("100 rules, 5 labels, firing alerts refreshed", |b| {
        b.iter_batched(
            || pool.clone(),
            |events| {
                for e in events {
                    router.handle_into(black_box(e), t0, &mut out);
                }
                out.clear();
                router.take_changes().len()
            },
            BatchSize::LargeInput,
        )
    });

    // First sight: every event opens an alert and notifies.
    group.bench_function("100 rules, 5 labels, new alerts", |b| {
        b.iter_batched(
            || (Router::new(rules(), vec![]), pool.clone()),
            |(mut router, events)| {
                let mut out = Vec::with_capacity(events.len());
                for e in events {
                    router.handle_into(black_box(e), t0, &mut out);
                }
                out.len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
