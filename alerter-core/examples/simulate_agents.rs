//! Many agents at once, in one process: for bench/alertmanager-scale.sh.
//!
//! Each simulated agent is an `alertmanager` transport of its own (its own
//! HTTP client and connections, as a real agent's daemon has) for a host
//! `agent-N`; each sends ALERTS notifications of one new firing alert to
//! every Alertmanager URL, all agents at once. Prints one JSON line: how
//! many alerts were taken, how many failed, and the seconds it took.
//!
//!   simulate_agents AGENTS ALERTS URL...

use std::sync::Arc;
use std::time::Instant;

use alerter_core::config::model::AlertmanagerConfig;
use alerter_core::event::{Fingerprint, Severity};
use alerter_core::notify::{AlertSummary, Notification};
use alerter_core::transport::Transport;
use alerter_core::transport::alertmanager::AlertmanagerTransport;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: simulate_agents AGENTS ALERTS URL...");
        std::process::exit(2);
    }
    let agents: usize = args[0].parse().expect("AGENTS is a number");
    let alerts: usize = args[1].parse().expect("ALERTS is a number");
    let urls: Vec<String> = args[2..].to_vec();
    let cfg: AlertmanagerConfig =
        serde_json::from_value(serde_json::json!({ "urls": urls, "resend": "1m" })).expect("a valid transport config");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..agents {
        let host = format!("agent-{a}");
        let t = Arc::new(AlertmanagerTransport::new(&cfg, &host).expect("the transport"));
        tasks.push(tokio::spawn(async move {
            let (mut taken, mut failed) = (0usize, 0usize);
            for i in 0..alerts {
                let now = chrono::Utc::now();
                let n = notification(&host, i, now);
                match t.send(&n).await {
                    Ok(_) => taken += 1,
                    Err(e) => {
                        failed += 1;
                        eprintln!("{host}: {e}");
                    }
                }
            }
            (taken, failed)
        }));
    }
    let (mut taken, mut failed) = (0, 0);
    for t in tasks {
        let (a, b) = t.await.expect("an agent task");
        taken += a;
        failed += b;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{}", serde_json::json!({ "agents": agents, "taken": taken, "failed": failed, "seconds": secs }));
}

/// Alert `i` of `host`, firing since `now`, as an agent's rule renders it.
fn notification(host: &str, i: usize, now: chrono::DateTime<chrono::Utc>) -> Notification {
    let alert = AlertSummary {
        fingerprint: Fingerprint(xxh(host, i)),
        status: "firing".into(),
        source: "disks".into(),
        host: host.to_string(),
        severity: Severity::Warning,
        summary: format!("/data{i} is 91% full"),
        details: String::new(),
        labels: [("mount".to_string(), format!("/data{i}"))].into(),
        since: now,
        count: 1,
    };
    serde_json::from_value(serde_json::json!({
        "id": format!("{host}-{i}"),
        "created_at": now,
        "rule": "disk-space",
        "transport": "am",
        "status": "firing",
        "severity": "warning",
        "title": alert.summary,
        "text": alert.summary,
        "recipients": [],
        "alerts": [alert],
    }))
    .expect("a notification")
}

fn xxh(host: &str, i: usize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (host, i).hash(&mut h);
    h.finish()
}
