//! The HTTP transports and sources, end to end against real peers: the
//! `webhook` transport against a receiver started by the test (Python's
//! http.server, tests/fixtures/http_receiver.py), and Alertmanager both
//! ways (Debian's prometheus-alertmanager and prometheus). Everything on
//! loopback, or in network namespaces the tests make.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use util::netns::{Proc, until};
use util::{Daemon, TempConfig, alerter, all_history, repo};

const LONG: Duration = Duration::from_secs(30);

/// A running webhook receiver.
struct Receiver {
    out: PathBuf,
    port: u16,
    _proc: Proc,
}

impl Receiver {
    /// Answers with `statuses` in turn (the last one repeats).
    fn start(dir: &Path, statuses: &str) -> Receiver {
        let out = dir.join(format!("requests-{}.jsonl", fastrand_suffix()));
        let mut c = Command::new("/usr/bin/python3");
        c.arg(repo().join("tests/fixtures/http_receiver.py")).arg("--out").arg(&out).args(["--status", statuses]);
        let proc = Proc::spawn(c);
        until(LONG, "the HTTP receiver", || proc.stdout().contains("READY") || !proc.stderr().is_empty());
        let port = proc
            .stdout()
            .lines()
            .find_map(|l| l.strip_prefix("READY ").map(|p| p.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("the receiver did not start: {}", proc.stderr()));
        Receiver { out, port, _proc: proc }
    }

    fn requests(&self) -> Vec<Value> {
        util::read_jsonl(&self.out)
    }
}

fn fastrand_suffix() -> String {
    format!("{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], "")
}

fn secret(dir: &Path, name: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Starts the daemon and waits until its API answers.
fn start(cfg: &Path) -> Daemon {
    let d = Daemon::start(cfg, &[]);
    until(LONG, "the daemon", || d.stderr_so_far().contains("alerter started"));
    d
}

fn emit(cfg: &Path, args: &[&str]) {
    let out = alerter().arg("emit").arg("-c").arg(cfg).args(args).output().unwrap();
    assert!(out.status.success(), "emit: {}", String::from_utf8_lossy(&out.stderr));
}

/// The deliveries through one transport in history, oldest first.
fn deliveries(cfg: &Path, transport: &str) -> Vec<Value> {
    all_history(cfg, &[]).into_iter().filter(|e| e["transport"] == transport).collect()
}

const WEBHOOK_RULES: &str = r#"
subscribers:
  ops: {}
rules:
  - name: app-down
    match: { source: app }
    notify: [{ subscribers: [ops], via: [hook] }]
"#;

#[test]
fn a_webhook_sends_its_templated_body_and_retries_5xx_until_taken() {
    let cfg = TempConfig::new("");
    let dir = cfg.dir.path();
    let rx = Receiver::start(dir, "503,500,200");
    let token = secret(dir, "hook.token", "tok-123456\n");
    cfg.write(&format!(
        r#"
alerter: {{ name: WEB1, state_dir: {{state}} }}
transports:
  hook:
    type: webhook
    url: http://127.0.0.1:{port}/notify/alerts
    method: PUT
    body: '{{"topic": "alerts", "title": {{{{ title }}}}, "message": {{{{ text }}}}, "rule": {{{{ rule }}}}, "n": {{{{ alerts|length }}}}, "host": {{{{ alerts[0].host }}}}, "details": {{{{ alerts[0].details }}}}}}'
    headers:
      Title: "{{{{ title }}}}"
      X-Priority: "{{% if severity == 'critical' %}}5{{% else %}}3{{% endif %}}"
    token_file: {token}
    retry: {{ initial: 100ms, max: 300ms }}
{WEBHOOK_RULES}"#,
        port = rx.port,
        token = token.display(),
    ));
    let _d = start(&cfg.path);
    // A summary with what JSON must escape, details with a control character.
    emit(
        &cfg.path,
        &[
            "-s",
            "critical",
            "--host",
            "db1",
            "--source",
            "app",
            "--details",
            "pg says:\n\x1b[2Jgone",
            "db \"primary\" is down",
        ],
    );
    until(LONG, "the third request", || rx.requests().len() >= 3);
    let reqs = rx.requests();
    assert_eq!(reqs.iter().map(|r| r["status"].as_u64().unwrap()).collect::<Vec<_>>(), [503, 500, 200]);
    let r = &reqs[2];
    assert_eq!(r["method"], "PUT");
    assert_eq!(r["path"], "/notify/alerts");
    assert_eq!(r["headers"]["authorization"], "Bearer tok-123456");
    assert_eq!(r["headers"]["content-type"], "application/json");
    assert_eq!(r["headers"]["x-priority"], "5");
    assert_eq!(r["headers"]["title"], "CRITICAL: db \"primary\" is down");
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).expect("the body is JSON");
    assert_eq!(body["title"], "CRITICAL: db \"primary\" is down");
    assert_eq!(body["details"], "pg says:\n^[[2Jgone", "controls made visible, JSON escaped");
    assert_eq!(body["rule"], "app-down");
    assert_eq!(body["n"], 1);
    assert_eq!(body["host"], "db1");
    assert_eq!(body["topic"], "alerts");
    // The same notification each time: the id travels in a header.
    let ids: Vec<&Value> = reqs.iter().map(|r| &r["headers"]["x-alerter-notification"]).collect();
    assert!(ids[0].is_string() && ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    // History: one notification, sent after three attempts, with the reply.
    let rows = until_rows(&cfg.path, "hook", |r| r["status"] == "sent");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["attempts"], 3, "{:?}", rows[0]);
    let reply = rows[0]["detail"].as_str().unwrap_or_default();
    assert!(reply.contains("HTTP 200 OK: request 3 answered 200"), "{:?}", rows[0]);
}

#[test]
fn a_webhook_refused_with_4xx_fails_at_once_and_says_why() {
    let cfg = TempConfig::new("");
    let dir = cfg.dir.path();
    let rx = Receiver::start(dir, "400");
    cfg.write(&format!(
        r#"
alerter: {{ name: WEB1, state_dir: {{state}} }}
transports:
  hook:
    type: webhook
    url: http://localhost:{port}/hook
    format: form
    body: "title={{{{ title }}}}&message={{{{ text }}}}&priority=high"
    retry: {{ initial: 100ms, max: 300ms }}
{WEBHOOK_RULES}"#,
        port = rx.port,
    ));
    let _d = start(&cfg.path);
    emit(&cfg.path, &["--source", "app", "a&b=c d"]);
    let rows = until_rows(&cfg.path, "hook", |r| r["status"] == "failed");
    assert_eq!(rows[0]["attempts"], 1, "a 4xx is not retried: {:?}", rows[0]);
    let error = rows[0]["detail"].as_str().unwrap_or_default();
    assert!(error.contains("HTTP 400 Bad Request: request 1 answered 400"), "{:?}", rows[0]);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0]["method"], "POST");
    assert_eq!(reqs[0]["headers"]["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(
        reqs[0]["body"],
        "title=WARNING%3A+a%26b%3Dc+d&message=WARNING+a%26b%3Dc+d+%28app+on+WEB1%29&priority=high"
    );
}

/// Waits until history holds a row of `transport` that `done` accepts,
/// and returns that transport's rows.
fn until_rows(cfg: &Path, transport: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut rows = Vec::new();
    until(LONG, "the delivery in history", || {
        rows = deliveries(cfg, transport);
        rows.iter().any(&done)
    });
    rows
}
