//! The daemon's Prometheus metrics.
//!
//! Counters (events by source and severity, notifications by transport and
//! outcome, store errors) and the delivery latency histogram live here
//! and are updated by the engine loop as things happen. Gauges (outbox
//! depth and oldest age, alerts by rule and state, sources' restarts and
//! drops, silences, whether the store fails) are read at each scrape from
//! a [`Snapshot`] the engine loop takes, so they are never stale.
//!
//! The exposition is Prometheus' text format 0.0.4 (the `prometheus`
//! crate): `promtool check metrics` of Debian's Prometheus 2.42 reads that
//! format only, and rejects the OpenMetrics names of counters
//! (`# TYPE x counter` above `x_total` samples) that `prometheus-client`
//! writes. Prometheus scrapes either.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use crate::event::Severity;
use crate::outbox::{Outcome, Report};

/// Buckets of the delivery latency, in seconds: a popup on a LAN takes
/// milliseconds, a mail through a slow relay seconds, a retry minutes.
const LATENCY_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];

/// See the module docs.
pub struct Metrics {
    registry: Registry,
    events: IntCounterVec,
    notifications: IntCounterVec,
    latency: HistogramVec,
    store_errors: IntCounter,
    folded: IntCounterVec,
    resends: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// What the gauges show, taken by the engine loop for one scrape.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Per transport: pending notifications and the oldest one's age in seconds.
    pub outbox: Vec<(String, u64, Option<f64>)>,
    /// Per rule: firing, pending, acknowledged alerts.
    pub alerts: Vec<(String, u64, u64, u64)>,
    /// Per source: running (1) or not, restarts, dropped events.
    pub sources: Vec<(String, bool, u64, u64)>,
    pub silences: u64,
    pub store_failing: bool,
    /// When the daemon started (Unix seconds).
    pub started: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let events = IntCounterVec::new(
            Opts::new("alerter_events_total", "Events taken from sources, by source and severity."),
            &["source", "severity"],
        )
        .expect("valid metric");
        let notifications = IntCounterVec::new(
            Opts::new(
                "alerter_notifications_total",
                "Delivery attempts by transport and outcome (sent, retrying, failed, expired, waiting, forwarded).",
            ),
            &["transport", "outcome"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "alerter_delivery_latency_seconds",
                "From a notification's making to its delivery, by transport.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["transport"],
        )
        .expect("valid metric");
        let store_errors =
            IntCounter::new("alerter_store_errors_total", "Commits the state store refused (a full disk, say).")
                .expect("valid metric");
        for c in [Box::new(events.clone()) as Box<dyn prometheus::core::Collector>, Box::new(notifications.clone())] {
            registry.register(c).expect("registered once");
        }
        registry.register(Box::new(latency.clone())).expect("registered once");
        registry.register(Box::new(store_errors.clone())).expect("registered once");
        let folded = IntCounterVec::new(
            Opts::new(
                "alerter_notifications_folded_total",
                "Notifications (shares of one per holder) folded into a digest by a budget, by transport.",
            ),
            &["transport"],
        )
        .expect("valid metric");
        registry.register(Box::new(folded.clone())).expect("registered once");
        let resends = IntCounterVec::new(
            Opts::new(
                "alerter_alertmanager_resends_total",
                "Re-sends of firing alerts to an Alertmanager cluster, by transport and outcome (sent, failed).",
            ),
            &["transport", "outcome"],
        )
        .expect("valid metric");
        registry.register(Box::new(resends.clone())).expect("registered once");
        Metrics { registry, events, notifications, latency, store_errors, folded, resends }
    }

    /// An event taken from a source.
    pub fn event(&self, source: &str, severity: Severity) {
        self.events.with_label_values(&[source, severity.as_str()]).inc();
    }

    /// A delivery attempt's outcome.
    pub fn delivery(&self, r: &Report) {
        let outcome = match &r.outcome {
            Outcome::Sent(_) => "sent",
            Outcome::Retrying { .. } => "retrying",
            Outcome::Failed(_) => "failed",
            Outcome::Expired(_) | Outcome::Unclaimed(_) => "expired",
            Outcome::Waiting { .. } => "waiting",
            Outcome::Forwarded { .. } => "forwarded",
        };
        self.notifications.with_label_values(&[r.transport.as_str(), outcome]).inc();
        if let Outcome::Sent(_) = r.outcome {
            let secs = (r.at - r.created_at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
            self.latency.with_label_values(&[r.transport.as_str()]).observe(secs);
        }
    }

    /// The counter of folded notifications, for the committer.
    pub fn folded(&self) -> IntCounterVec {
        self.folded.clone()
    }

    /// The counter of re-sends to Alertmanager, for the resender.
    pub fn resends(&self) -> IntCounterVec {
        self.resends.clone()
    }

    /// The counter of store errors, for the committer.
    pub fn store_errors(&self) -> IntCounter {
        self.store_errors.clone()
    }

    /// The exposition: the counters and the snapshot's gauges.
    pub fn render(&self, s: &Snapshot) -> String {
        let gauges = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = prometheus::GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            gauges.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = prometheus::IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            gauges.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let pending =
            gauge("alerter_outbox_pending", "Notifications waiting for delivery, by transport.", &["transport"]);
        let oldest = gauge(
            "alerter_outbox_oldest_pending_seconds",
            "Age of the oldest notification waiting for delivery, by transport (0 when none waits).",
            &["transport"],
        );
        for (t, n, age) in &s.outbox {
            pending.with_label_values(&[t.as_str()]).set(*n as f64);
            oldest.with_label_values(&[t.as_str()]).set(age.unwrap_or(0.0));
        }
        let alerts =
            gauge("alerter_alerts", "Alerts by rule and state (firing, pending, acknowledged).", &["rule", "state"]);
        for (rule, firing, pend, acked) in &s.alerts {
            for (state, n) in [("firing", firing), ("pending", pend), ("acknowledged", acked)] {
                alerts.with_label_values(&[rule.as_str(), state]).set(*n as f64);
            }
        }
        let up = gauge("alerter_source_up", "Whether a source runs (0 while it restarts).", &["source"]);
        let restarts = counter(
            "alerter_source_restarts_total",
            "Times a source stopped on its own and was restarted.",
            &["source"],
        );
        let dropped = counter(
            "alerter_source_dropped_events_total",
            "Events a source dropped because its queue was full.",
            &["source"],
        );
        for (id, running, r, d) in &s.sources {
            up.with_label_values(&[id.as_str()]).set(if *running { 1.0 } else { 0.0 });
            restarts.with_label_values(&[id.as_str()]).inc_by(*r);
            dropped.with_label_values(&[id.as_str()]).inc_by(*d);
        }
        let single = |name: &str, help: &str, value: f64| {
            let g = prometheus::Gauge::new(name, help).expect("valid metric");
            g.set(value);
            gauges.register(Box::new(g)).expect("registered once");
        };
        single("alerter_silences_active", "Silences in force.", s.silences as f64);
        single(
            "alerter_store_failing",
            "1 while the state store refuses writes.",
            if s.store_failing { 1.0 } else { 0.0 },
        );
        single("alerter_start_time_seconds", "When the daemon started, in Unix seconds.", s.started);
        gauge("alerter_build_info", "The running version (always 1).", &["version"])
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        let mut families = self.registry.gather();
        families.extend(gauges.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        TextEncoder::new().encode(&families, &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_in_the_text_format() {
        let m = Metrics::new();
        m.event("app", Severity::Warning);
        m.event("app", Severity::Warning);
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let r = Report {
            id: "x".into(),
            transport: "mail".into(),
            rule: "r".into(),
            about_delivery: false,
            outcome: Outcome::Sent(None),
            at: t + chrono::Duration::milliseconds(30),
            created_at: t,
        };
        m.delivery(&r);
        m.folded().with_label_values(&["popup"]).inc_by(9_995);
        let text = m.render(&Snapshot {
            outbox: vec![("mail".into(), 3, Some(12.5))],
            alerts: vec![("disk".into(), 2, 0, 1)],
            sources: vec![("app".into(), true, 1, 0)],
            silences: 1,
            store_failing: false,
            started: 1.8e9,
        });
        assert!(text.contains("alerter_events_total{severity=\"warning\",source=\"app\"} 2"), "{text}");
        assert!(text.contains("alerter_notifications_total{outcome=\"sent\",transport=\"mail\"} 1"), "{text}");
        assert!(text.contains("alerter_delivery_latency_seconds_bucket{transport=\"mail\",le=\"0.05\"} 1"), "{text}");
        assert!(text.contains("alerter_delivery_latency_seconds_bucket{transport=\"mail\",le=\"0.025\"} 0"), "{text}");
        assert!(text.contains("alerter_outbox_pending{transport=\"mail\"} 3"), "{text}");
        assert!(text.contains("alerter_alerts{rule=\"disk\",state=\"acknowledged\"} 1"), "{text}");
        assert!(text.contains("# TYPE alerter_source_restarts_total counter"), "{text}");
        assert!(text.contains("alerter_notifications_folded_total{transport=\"popup\"} 9995"), "{text}");
    }
}
