//! 1,000 mails to a local SMTP server (Debian's aiosmtpd, the tests'
//! fixture), through alerter's email transport with its connection pool
//! versus one connection per mail. The caller keeps 4 mails in flight; the
//! transport uses at most `pool` connections at once (one when `pool: 0`),
//! so "pool of 1" against "one connection per mail" is reuse alone, at the
//! same concurrency.
//!
//!     cargo bench -p alerter-core --bench email
//!
//! Needs /usr/bin/python3 with python3-aiosmtpd.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alerter_core::config::model::{EmailConfig, EmailTls};
use alerter_core::event::Severity;
use alerter_core::notify::Notification;
use alerter_core::rules::Recipient;
use alerter_core::transport::Transport;
use alerter_core::transport::email::EmailTransport;
use futures_util::StreamExt;

const MAILS: usize = 1000;
const IN_FLIGHT: usize = 4;

fn notification(i: usize) -> Notification {
    Notification {
        id: format!("bench-{i}"),
        created_at: chrono::Utc::now(),
        rule: "bench".into(),
        transport: "mail".into(),
        status: "firing".into(),
        severity: Severity::Warning,
        title: format!("WARNING: disk {i} is filling up"),
        text: "WARNING /var is 91% full (disk on fileserver)\n".repeat(5),
        html: None,
        recipients: vec![Recipient {
            id: "ops".into(),
            name: None,
            machine: None,
            user: None,
            email: Some("ops@example.org".into()),
            group: None,
        }],
        alerts: Vec::new(),
        group: BTreeMap::new(),
        repeat: false,
        offline: None,
    }
}

/// Which client sends the mails.
#[derive(Clone, Copy)]
enum Client {
    /// alerter's transport with this `pool` setting.
    Alerter(u32),
    /// lettre's own pooled `AsyncSmtpTransport` (4 connections), for the
    /// TCP_NODELAY comparison in docs/benchmarks.md.
    LettrePool,
}

fn run(client: Client) -> (Duration, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smtp_server.py");
    let stats = dir.path().join("stats.json");
    let mut server = Command::new("/usr/bin/python3")
        .arg(&fixture)
        .args(["--port", &port.to_string(), "--out"])
        .arg(dir.path().join("mails.jsonl"))
        .arg("--stats")
        .arg(&stats)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start aiosmtpd (python3-aiosmtpd)");
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY");

    let cfg = EmailConfig {
        relay: "127.0.0.1".into(),
        port: Some(port),
        tls: Some(EmailTls::None),
        username: None,
        password_file: None,
        from: "Alerter <alerter@example.org>".into(),
        ca_file: None,
        timeout: None,
        pool: Some(match client {
            Client::Alerter(pool) => pool,
            Client::LettrePool => 4,
        }),
        html: None,
        retry: None,
        template: None,
        budget: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let took = rt.block_on(async {
        let t = EmailTransport::new(&cfg).unwrap();
        let lettre = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(port)
            .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(4))
            .build();
        let start = Instant::now();
        let results: Vec<bool> = futures_util::stream::iter(0..MAILS)
            .map(|i| {
                let (t, lettre) = (&t, &lettre);
                async move {
                    match client {
                        Client::Alerter(_) => t.send(&notification(i)).await.is_ok(),
                        Client::LettrePool => {
                            use lettre::AsyncTransport;
                            let mail = t.message(&notification(i)).unwrap();
                            lettre.send(mail).await.is_ok()
                        }
                    }
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        let took = start.elapsed();
        assert!(results.iter().all(|ok| *ok), "every mail accepted");
        took
    });
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(stats["accepted"], MAILS, "the server has every mail");
    (took, stats)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test` runs benches with no
    // arguments and expects them quick: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    for (label, client) in [
        ("pool of 4 connections", Client::Alerter(4)),
        ("pool of 1 connection", Client::Alerter(1)),
        ("one connection per mail", Client::Alerter(0)),
        ("lettre's own pool of 4", Client::LettrePool),
    ] {
        let (took, stats) = run(client);
        println!(
            "{label:<24} {MAILS} mails in {:.2} s = {:.0} mails/s ({} SMTP connections)",
            took.as_secs_f64(),
            MAILS as f64 / took.as_secs_f64(),
            stats["connections"]
        );
    }
}
