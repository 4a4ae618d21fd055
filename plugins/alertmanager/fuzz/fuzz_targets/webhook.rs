//! An Alertmanager webhook body, as anyone who reaches the API with an
//! ingest token may send it: reading must refuse or give events, never
//! panic, and every event it gives is one of the notification's alerts.
#![no_main]
use alerter_plugin_alertmanager::{Config, events, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg: Config = serde_json::from_str(r#"{"severities": {"P1": "critical"}}"#).unwrap();
    if let Ok(n) = parse(data) {
        let ev = events(&cfg, &n);
        assert_eq!(ev.len(), n.alerts.len());
        for e in ev {
            assert!(["info", "warning", "critical", "resolved"].contains(&e.severity.as_str()));
            assert!(!e.summary.contains('\n'));
            assert!(!e.key.is_empty());
        }
    }
});
