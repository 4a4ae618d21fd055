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
use util::{Daemon, TempConfig, alerter, all_history, api_addr, repo};

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
        let out = dir.join(format!("requests-{}.jsonl", unique_suffix()));
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

/// Tells apart the request logs of receivers sharing a directory.
fn unique_suffix() -> String {
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

const HOOK_TOKEN: &str = "hook-0123456789abcdef0123456789";
const VIEW_TOKEN: &str = "view-0123456789abcdef0123456789";

/// A gateway: an `alertmanager` source `am` on the API (TCP, tokens), a
/// rule sending what it receives to the log transport.
fn gateway(extra_source: &str) -> TempConfig {
    let cfg = TempConfig::new("");
    let dir = cfg.dir.path();
    secret(dir, "hook.token", &format!("{HOOK_TOKEN}\n"));
    secret(dir, "view.token", &format!("{VIEW_TOKEN}\n"));
    cfg.write(&format!(
        r#"
alerter: {{ name: GATEWAY, state_dir: {{state}} }}
api:
  socket: {{dir}}/api.sock
  listen: 127.0.0.1:0
  tokens:
    alertmanager: {{ file: {{dir}}/hook.token, scope: ingest }}
    viewer: {{ file: {{dir}}/view.token, scope: read }}
sources:
  am:
    type: alertmanager
    severities: {{ P1: critical }}
  beat: {{ type: heartbeat, interval: 1h }}
{extra_source}
transports:
  out: {{ type: log, path: {{out}} }}
subscribers:
  ops: {{}}
rules:
  - name: from-alertmanager
    match: {{ source: am }}
    notify: [{{ subscribers: [ops], via: [out] }}]
"#
    ));
    cfg
}

/// A webhook notification as Alertmanager 0.25 sends it.
fn am_notification(status: &str, alerts: &[(&str, &str, &str)]) -> String {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(name, severity, fingerprint)| {
            serde_json::json!({
                "status": status,
                "labels": {"alertname": name, "instance": "web1:9100", "severity": severity},
                "annotations": {"summary": format!("{name} on web1"), "description": "more\nlines"},
                "startsAt": "2026-12-03T10:00:00.000Z",
                "endsAt": if status == "firing" { "0001-01-01T00:00:00Z" } else { "2026-12-03T10:05:00Z" },
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": fingerprint,
            })
        })
        .collect();
    serde_json::json!({
        "receiver": "alerter", "status": status, "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am1:9093",
        "alerts": alerts,
    })
    .to_string()
}

#[test]
fn the_alertmanager_webhook_refuses_bad_requests_with_4xx_and_keeps_serving() {
    let cfg = gateway("");
    let d = start(&cfg.path);
    let addr = api_addr(&d);
    let post = |path: &str, token: Option<&str>, headers: &[(&str, &str)], body: &[u8]| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        h.extend_from_slice(headers);
        util::http_request(&addr, "POST", path, &h, body)
    };
    let good = am_notification(
        "firing",
        &[("DiskFull", "P1", "a1b2c3d4e5f60718"), ("HighLoad", "warning", "0000000000000002")],
    );
    let path = "/api/v1/alertmanager/am";

    let (status, body) = post(path, None, &[], good.as_bytes());
    assert_eq!(status, 401, "no token: {body}");
    let (status, body) = post(path, Some("hook-not-the-right-one-at-all-0000"), &[], good.as_bytes());
    assert_eq!(status, 401, "a wrong token: {body}");
    let (status, body) = post(path, Some(VIEW_TOKEN), &[], good.as_bytes());
    assert_eq!(status, 403, "a read token cannot ingest: {body}");
    assert!(body.contains("ingest"), "{body}");
    let (status, body) = post(path, Some(HOOK_TOKEN), &[("Content-Length", "5242880")], b"{\"version\":");
    assert_eq!(status, 413, "5 MiB: {body}");
    let big =
        format!("{{\"version\": \"4\", \"status\": \"firing\", \"alerts\": [], \"pad\": \"{}\"}}", "x".repeat(5 << 20));
    let (status, _) = post(path, Some(HOOK_TOKEN), &[], big.as_bytes());
    assert_eq!(status, 413, "5 MiB sent in full");
    let (status, body) = post(path, Some(HOOK_TOKEN), &[], b"{\"version\": \"4\", \"alerts\": [");
    assert_eq!(status, 400, "malformed JSON: {body}");
    assert!(body.contains("not an Alertmanager webhook notification"), "{body}");
    let (status, body) =
        post(path, Some(HOOK_TOKEN), &[], good.replace("\"version\":\"4\"", "\"version\":\"3\"").as_bytes());
    assert_eq!(status, 400, "another payload version: {body}");
    assert!(body.contains("version 4"), "{body}");
    let (status, body) = post("/api/v1/alertmanager/nosuch", Some(HOOK_TOKEN), &[], good.as_bytes());
    assert_eq!(status, 404, "{body}");
    let (status, body) = post("/api/v1/alertmanager/beat", Some(HOOK_TOKEN), &[], good.as_bytes());
    assert_eq!(status, 404, "a source of another type: {body}");
    assert!(body.contains("`heartbeat`, not `alertmanager`"), "{body}");
    assert!(cfg.notifications().is_empty(), "nothing refused was taken");

    // Still serving, and a good notification is taken whole.
    let (status, body) = post(path, Some(HOOK_TOKEN), &[], good.as_bytes());
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["accepted"], 2);
    // The critical one overtakes, so they may come in two notifications.
    let alerts = || -> Vec<Value> {
        cfg.notifications().iter().flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default()).collect()
    };
    until(LONG, "both alerts notified", || alerts().len() >= 2);
    let alerts = alerts();
    let disk = alerts.iter().find(|a| a["labels"]["alertname"] == "DiskFull").expect("DiskFull");
    assert_eq!(disk["severity"], "critical", "P1 maps to critical: {disk:#}");
    assert_eq!(disk["host"], "web1", "the instance without its port");
    assert_eq!(disk["summary"], "DiskFull on web1");
    assert_eq!(disk["source"], "am");
    let load = alerts.iter().find(|a| a["labels"]["alertname"] == "HighLoad").expect("HighLoad");
    assert_eq!(load["severity"], "warning");
    // The refusals were logged.
    let log = d.stderr_so_far();
    assert!(log.contains("refused an Alertmanager notification"), "{log}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One node of a Prometheus Alertmanager cluster (Debian's 0.25).
struct Alertmanager {
    web: u16,
    proc: Proc,
}

/// Starts a cluster of `n` nodes on loopback sending every group to the
/// gateway's `alertmanager` source `am` with `token`, and waits until its
/// gossip has settled. `group_wait` 0 (a new alert goes out at once),
/// `group_interval` 1s, `repeat_interval` as given.
fn am_cluster(dir: &Path, n: usize, gateway_port: u16, token: &Path, repeat: &str) -> Vec<Alertmanager> {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            r#"
route:
  receiver: gateway
  group_by: [alertname, instance]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: {repeat}
receivers:
  - name: gateway
    webhook_configs:
      - url: http://127.0.0.1:{gateway_port}/api/v1/alertmanager/am
        send_resolved: true
        max_alerts: 100
        http_config:
          authorization:
            credentials_file: {token}
"#,
            token = token.display()
        ),
    )
    .unwrap();
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let nodes: Vec<Alertmanager> = ports
        .iter()
        .enumerate()
        .map(|(i, &(web, gossip))| {
            let storage = dir.join(format!("am{i}"));
            std::fs::create_dir_all(&storage).unwrap();
            let mut c = Command::new("prometheus-alertmanager");
            c.arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.path={}", storage.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{web}"))
                .arg(format!("--cluster.listen-address=127.0.0.1:{gossip}"))
                .arg(format!("--cluster.advertise-address=127.0.0.1:{gossip}"))
                // A node waits this long per place before it for the others'
                // notification (the default is 15 s).
                .arg("--cluster.peer-timeout=2s")
                .arg("--log.level=debug");
            for (j, &(_, other)) in ports.iter().enumerate() {
                if j != i {
                    c.arg(format!("--cluster.peer=127.0.0.1:{other}"));
                }
            }
            Alertmanager { web, proc: Proc::spawn(c) }
        })
        .collect();
    for node in &nodes {
        until(Duration::from_secs(60), "the Alertmanager cluster to settle", || {
            if std::net::TcpStream::connect(("127.0.0.1", node.web)).is_err() {
                return false;
            }
            let (status, body) =
                util::http_request(&format!("127.0.0.1:{}", node.web), "GET", "/api/v2/status", &[], b"");
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            status == 200
                && v["cluster"]["status"] == "ready"
                && v["cluster"]["peers"].as_array().map_or(0, Vec::len) == n
        });
    }
    nodes
}

/// An agent: rule `disk-full` sends what `alerter emit` posts to the
/// cluster, re-sending firing alerts every `resend`.
fn agent(name: &str, nodes: &[&Alertmanager], resend: &str) -> TempConfig {
    let urls: Vec<String> = nodes.iter().map(|n| format!("http://127.0.0.1:{}", n.web)).collect();
    TempConfig::new(&format!(
        r#"
alerter: {{ name: {name}, state_dir: {{state}} }}
api: {{ socket: {{dir}}/api.sock, metrics_listen: "off" }}
transports:
  am: {{ type: alertmanager, urls: [{urls}], resend: {resend} }}
subscribers:
  ops: {{}}
rules:
  - name: disk-full
    match: {{ source: api }}
    group_interval: 1s
    notify: [{{ subscribers: [ops], via: [am] }}]
"#,
        urls = urls.join(", ")
    ))
}

/// A gateway: the `alertmanager` source `am` on the API at `port`, popups
/// to BOB (an `alerter listen` at `popup_port`), repeated every `repeat`.
fn popup_gateway(port: u16, metrics: u16, popup_port: u16, repeat: &str) -> TempConfig {
    let cfg = TempConfig::new("");
    secret(cfg.dir.path(), "hook.token", &format!("{HOOK_TOKEN}\n"));
    cfg.write(&format!(
        r#"
alerter: {{ name: GATEWAY, state_dir: {{state}} }}
api:
  socket: {{dir}}/api.sock
  listen: 127.0.0.1:{port}
  metrics_listen: 127.0.0.1:{metrics}
  tokens:
    alertmanager: {{ file: {{dir}}/hook.token, scope: ingest }}
sources:
  am: {{ type: alertmanager }}
transports:
  popup: {{ type: messenger, hosts: {{ BOB: "127.0.0.1:{popup_port}" }}, dns: false }}
subscribers:
  bob: {{ machine: BOB }}
rules:
  - name: from-alertmanager
    match: {{ source: am }}
    group_by: [alertname]
    group_interval: 1s
    repeat_interval: {repeat}
    notify: [{{ subscribers: [bob], via: [popup] }}]
"#
    ));
    cfg
}

/// `alerter listen` as BOB on loopback, printing JSON.
fn receiver(port: u16) -> Proc {
    let state = tempfile::tempdir().unwrap();
    let mut c = alerter();
    c.env("XDG_STATE_HOME", state.path()).args(["listen", "--json", "--no-desktop", "--history", "/dev/null"]).args([
        "--name",
        "BOB",
        "--bind",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--datagram-port",
        "0",
        "--name-port",
        "0",
    ]);
    let p = Proc::spawn(c).keep(state);
    until(LONG, "the receiver", || p.stderr().contains("listening") || p.stdout().contains("listening"));
    p
}

/// The popups shown so far whose text contains `needle`.
fn popups(rx: &Proc, needle: &str) -> Vec<String> {
    rx.json_lines()
        .into_iter()
        .filter_map(|v| v.get("text").and_then(Value::as_str).map(str::to_string))
        .filter(|t| t.contains(needle))
        .collect()
}

/// Events the gateway took from Alertmanager so far (its metrics).
fn gateway_events(metrics_port: u16) -> u64 {
    let (_, body) = util::http_request(&format!("127.0.0.1:{metrics_port}"), "GET", "/metrics", &[], b"");
    body.lines()
        .filter(|l| l.starts_with("alerter_events_total{") && l.contains("source=\"am\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A site: a gateway (popups repeated every `repeat`) with its receiver
/// BOB, and an Alertmanager cluster of `nodes` (repeating every
/// `am_repeat`) routing to it.
struct Site {
    gw: TempConfig,
    gw_metrics: u16,
    rx: Proc,
    nodes: Vec<Alertmanager>,
    _gw: Daemon,
    _dir: tempfile::TempDir,
}

fn site(repeat: &str, nodes: usize, am_repeat: &str) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let (gw_port, gw_metrics, popup_port) = (free_port(), free_port(), free_port());
    let gw = popup_gateway(gw_port, gw_metrics, popup_port, repeat);
    let rx = receiver(popup_port);
    let daemon = start(&gw.path);
    let nodes = am_cluster(dir.path(), nodes, gw_port, &gw.dir.path().join("hook.token"), am_repeat);
    Site { gw, gw_metrics, rx, nodes, _gw: daemon, _dir: dir }
}

/// Stays true for `window`, checked every 100 ms (what must not happen).
fn stays(window: Duration, what: &str, f: impl Fn() -> bool) {
    let end = std::time::Instant::now() + window;
    while std::time::Instant::now() < end {
        assert!(f(), "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_agents_through_a_two_node_alertmanager_cluster_pop_up_once_on_the_gateway() {
    let s = site("1h", 2, "1h");
    let (rx, nodes) = (&s.rx, &s.nodes);
    // Re-sends are what Alertmanager's merge rule lets win over a
    // resolution (the youngest report wins): agents resolving the same
    // alert a moment apart must not re-send in that moment, so not often.
    let agents: Vec<TempConfig> =
        ["AGENT1", "AGENT2"].iter().map(|n| agent(n, &[&nodes[0], &nodes[1]], "5m")).collect();
    let _running: Vec<Daemon> = agents.iter().map(|a| start(&a.path)).collect();

    // The same alert (same rule, host and labels) from both agents, to both nodes.
    for a in &agents {
        emit(&a.path, &["-s", "critical", "--host", "web1", "disk /var is full"]);
    }
    until(LONG, "the popup", || !popups(rx, "disk /var is full").is_empty());
    // Both nodes had it, each would notify after its place in the cluster
    // (2 s apart): one popup stays one.
    stays(Duration::from_secs(6), "one popup for the alert", || {
        let shown = popups(rx, "disk /var is full");
        assert!(shown.len() == 1, "{shown:?}");
        true
    });
    let shown = popups(rx, "disk /var is full");
    assert!(shown[0].starts_with("CRITICAL"), "{shown:?}");

    // Resolved on both agents: one RESOLVED.
    for a in &agents {
        emit(&a.path, &["-s", "resolved", "--host", "web1", "disk /var is full"]);
    }
    until(LONG, "the RESOLVED popup", || popups(rx, "RESOLVED").len() == 1);
    // A node that flushed before the resolve reached it sends the firing
    // state late; the gateway knows that episode ended.
    stays(Duration::from_secs(6), "one RESOLVED and no late firing", || {
        let shown = popups(rx, "disk /var is full");
        assert!(shown.len() == 2 && shown[1].starts_with("RESOLVED"), "{shown:#?}");
        true
    });

    // One node dies: a new alert still comes through the other.
    nodes[0].proc.signal("KILL");
    emit(&agents[0].path, &["-s", "critical", "--host", "web2", "disk /home is full"]);
    until(Duration::from_secs(60), "the popup through the surviving node", || {
        !popups(rx, "disk /home is full").is_empty()
    });
    let history = all_history(&agents[0].path, &[]);
    let sent = history.iter().rev().find(|e| e["transport"] == "am" && e["status"] == "sent").expect("a sent row");
    assert!(sent["detail"].as_str().unwrap_or_default().contains("not by"), "the dead node is named: {sent}");
}

#[test]
fn an_alert_acknowledged_on_the_gateway_stays_quiet_through_alertmanager_repeats_until_it_fires_again() {
    // Unacknowledged, the gateway would pop it up again every 5 s;
    // Alertmanager repeats its notification every 2 s.
    let s = site("5s", 2, "2s");
    let (gw, gw_metrics, rx, nodes) = (&s.gw, s.gw_metrics, &s.rx, &s.nodes);
    let a = agent("AGENT1", &[&nodes[0], &nodes[1]], "5m");
    let _agent = start(&a.path);
    let firing = |rx: &Proc| popups(rx, "CRITICAL: raid degraded");

    emit(&a.path, &["-s", "critical", "--host", "web3", "raid degraded"]);
    until(LONG, "the popup", || firing(rx).len() == 1);
    let out = alerter().args(["alerts", "--json", "-c"]).arg(&gw.path).output().unwrap();
    let list: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    let id = list["alerts"][0]["id"].as_str().expect("the alert's id").to_string();
    let out = alerter().args(["ack", "--comment", "replacing the disk", &id, "-c"]).arg(&gw.path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Alertmanager's repeats arrive (three of them: 6 s, past the
    // gateway's own repeat interval) and change nothing.
    let before = gateway_events(gw_metrics);
    until(LONG, "three repeat notifications from Alertmanager", || gateway_events(gw_metrics) >= before + 3);
    assert_eq!(firing(rx).len(), 1, "quiet while acknowledged: {:?}", popups(rx, ""));
    let acked = all_history(&gw.path, &["--status", "ack"]);
    assert!(acked.iter().any(|e| e.to_string().contains("replacing the disk")), "the ack is in history: {acked:#?}");

    // Resolved, then firing again: a new episode, shown again.
    emit(&a.path, &["-s", "resolved", "--host", "web3", "raid degraded"]);
    until(LONG, "the RESOLVED popup", || !popups(rx, "RESOLVED: raid degraded").is_empty());
    emit(&a.path, &["-s", "critical", "--host", "web3", "raid degraded"]);
    until(LONG, "the popup of the new episode", || firing(rx).len() == 2);
}

/// The alerts of each request a fake Alertmanager got, with the time it
/// got them.
fn posted(rx: &Receiver) -> Vec<(chrono::DateTime<chrono::Utc>, Vec<Value>)> {
    rx.requests()
        .iter()
        .map(|r| {
            let at = chrono::DateTime::from_timestamp_micros((r["at"].as_f64().unwrap() * 1e6) as i64).unwrap();
            (at, serde_json::from_str::<Vec<Value>>(r["body"].as_str().unwrap()).unwrap())
        })
        .collect()
}

fn ends_at(a: &Value) -> chrono::DateTime<chrono::Utc> {
    a["endsAt"].as_str().unwrap().parse().unwrap()
}

/// Whether a post resolves its first alert: it ended before it was sent.
fn resolves(post: &(chrono::DateTime<chrono::Utc>, Vec<Value>)) -> bool {
    ends_at(&post.1[0]) <= post.0
}

#[test]
fn firing_alerts_are_re_sent_until_resolved_without_a_history_row_each_and_across_a_restart() {
    let cfg = TempConfig::new("");
    let rx = Receiver::start(cfg.dir.path(), "200");
    cfg.write(&format!(
        r#"
alerter: {{ name: WEB1, state_dir: {{state}} }}
api: {{ socket: {{dir}}/api.sock, metrics_listen: "off" }}
transports:
  am:
    type: alertmanager
    urls: http://127.0.0.1:{port}/am/
    resend: 1s
    labels: {{ env: prod }}
    external_url: http://web1.example.org:9310
subscribers:
  ops: {{}}
rules:
  - name: disk-full
    match: {{ source: api }}
    group_by: [mount]
    group_interval: 1s
    notify: [{{ subscribers: [ops], via: [am] }}]
"#,
        port = rx.port
    ));
    let mut d = start(&cfg.path);
    let var = ["--host", "db1", "-l", "mount=/var", "-l", "http.status=503", "/var is full"];
    emit(&cfg.path, &[&["-s", "critical", "--details", "2 GB left"], &var[..]].concat());
    until(LONG, "the alert and two re-sends", || rx.requests().len() >= 3);
    let all = posted(&rx);
    let first = &all[0].1[0];
    assert_eq!(rx.requests()[0]["path"], "/am/api/v2/alerts", "under the URL's path");
    assert_eq!(first["labels"]["alertname"], "disk-full");
    assert_eq!(first["labels"]["instance"], "db1");
    assert_eq!(first["labels"]["severity"], "critical");
    assert_eq!(first["labels"]["mount"], "/var");
    assert_eq!(first["labels"]["http_status"], "503", "made a valid label name");
    assert_eq!(first["labels"]["env"], "prod");
    assert_eq!(first["annotations"]["summary"], "/var is full");
    assert_eq!(first["annotations"]["description"], "2 GB left");
    assert!(
        first["generatorURL"].as_str().unwrap().starts_with("http://web1.example.org:9310/api/v1/alerts?filter=id%3D")
    );
    // Each firing post ends a few intervals ahead of its sending.
    for (at, alerts) in &all {
        let ahead = ends_at(&alerts[0]) - *at;
        assert!(ahead >= chrono::Duration::seconds(3), "endsAt four re-sends ahead: {ahead}");
        assert_eq!(alerts[0]["startsAt"], first["startsAt"]);
        assert_eq!(alerts[0]["labels"], first["labels"]);
    }
    // History: the change only.
    let rows = deliveries(&cfg.path, "am");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert!(rows[0]["detail"].as_str().unwrap().contains("1 alert(s) taken by 127.0.0.1"), "{rows:#?}");

    // Resolved: posted once, ended before it was sent; no more re-sends.
    emit(&cfg.path, &[&["-s", "resolved"], &var[..]].concat());
    until(LONG, "the resolution", || posted(&rx).last().is_some_and(resolves));
    let mut rows = Vec::new();
    until(LONG, "the resolution in history (a change)", || {
        rows = deliveries(&cfg.path, "am");
        rows.len() >= 2
    });
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let count = rx.requests().len();
    stays(Duration::from_secs(3), "no re-sends of a resolved alert", || rx.requests().len() == count);

    // Restarted, it goes on re-sending what still fires.
    emit(&cfg.path, &["-s", "warning", "--host", "db1", "-l", "mount=/home", "/home is filling up"]);
    until(LONG, "the second alert", || posted(&rx).iter().any(|(_, a)| a[0]["labels"]["mount"] == "/home"));
    d.signal("TERM");
    d.wait(LONG);
    let before = rx.requests().len();
    let _d = start(&cfg.path);
    until(LONG, "re-sends after the restart", || rx.requests().len() >= before + 2);
    let after = posted(&rx);
    assert!(
        after[before..].iter().all(|p| p.1.len() == 1 && p.1[0]["labels"]["mount"] == "/home" && !resolves(p)),
        "only the firing alert: {:#?}",
        &after[before..]
    );
}

#[test]
fn prometheus_scraping_an_agent_fires_through_alertmanager_to_a_popup_on_the_gateway() {
    let s = site("1h", 1, "1h");
    let (rx, nodes) = (&s.rx, &s.nodes);

    // An agent whose webhook refuses everything: its outbox grows.
    let dir = tempfile::tempdir().unwrap();
    let down = Receiver::start(dir.path(), "503");
    let agent_metrics = free_port();
    let a = TempConfig::new(&format!(
        r#"
alerter: {{ name: AGENT1, state_dir: {{state}} }}
api: {{ socket: {{dir}}/api.sock, metrics_listen: "127.0.0.1:{agent_metrics}" }}
transports:
  hook: {{ type: webhook, url: "http://127.0.0.1:{port}/", retry: {{ initial: 1h }} }}
subscribers:
  ops: {{}}
rules:
  - name: app
    match: {{ source: api }}
    notify: [{{ subscribers: [ops], via: [hook] }}]
"#,
        port = down.port
    ));
    let _agent = start(&a.path);

    // Prometheus scrapes the agent every second and tells the cluster.
    let prom_port = free_port();
    std::fs::write(
        dir.path().join("rules.yml"),
        r#"
groups:
  - name: alerter
    rules:
      - alert: AlerterOutboxBackingUp
        expr: alerter_outbox_pending > 2
        labels: { severity: critical }
        annotations:
          summary: "outbox of {{ $labels.instance }} ({{ $labels.transport }}) holds {{ $value }} notifications"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            r#"
global: {{ scrape_interval: 1s, evaluation_interval: 1s }}
rule_files: [{rules}]
alerting:
  alertmanagers: [{{ static_configs: [{{ targets: ['127.0.0.1:{am}'] }}] }}]
scrape_configs:
  - job_name: alerter
    static_configs: [{{ targets: ['127.0.0.1:{agent_metrics}'] }}]
"#,
            rules = dir.path().join("rules.yml").display(),
            am = nodes[0].web
        ),
    )
    .unwrap();
    let mut c = Command::new("prometheus");
    c.arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let _prometheus = Proc::spawn(c);

    for i in 0..3 {
        emit(&a.path, &["--source", "api", "-l", &format!("n={i}"), &format!("event {i}")]);
    }
    until(Duration::from_secs(60), "the popup about the outbox", || !popups(rx, "outbox of").is_empty());
    let shown = popups(rx, "outbox of");
    assert!(shown[0].starts_with("CRITICAL: outbox of 127.0.0.1"), "{shown:?}");
    assert!(shown[0].contains("(hook) holds 3 notifications"), "{shown:?}");
}
