//! Email and the durable outbox, end to end, against a real SMTP server
//! (Debian's aiosmtpd, tests/fixtures/smtp_server.py) on loopback: what the
//! server received is what the tests check.

mod util;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::netns::{Netns, Proc, until};
use util::{Daemon, TempConfig, alerter, install_plugin, repo};

const LONG: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running aiosmtpd.
struct Smtp {
    out: PathBuf,
    proc: Proc,
}

impl Smtp {
    fn start(dir: &Path, port: u16, args: &[&str]) -> Smtp {
        let out = dir.join(format!("mail-{port}.jsonl"));
        let mut c = Command::new("/usr/bin/python3");
        c.arg(repo().join("tests/fixtures/smtp_server.py"))
            .args(["--port", &port.to_string(), "--out"])
            .arg(&out)
            .args(args);
        let proc = Proc::spawn(c);
        until(LONG, "the SMTP server", || proc.stdout().contains("READY") || proc.stderr().contains("Error"));
        assert!(proc.stdout().contains("READY"), "SMTP server did not start: {}", proc.stderr());
        Smtp { out, proc }
    }

    /// Every mail received so far.
    fn mails(&self) -> Vec<Value> {
        util::read_jsonl(&self.out)
    }
}

/// A header of a received mail.
fn header(mail: &Value, name: &str) -> Option<String> {
    let data = mail["data"].as_str()?;
    let head = data.split("\n\n").next()?.replace("\r\n", "\n");
    let prefix = format!("{}: ", name.to_ascii_lowercase());
    head.lines().find(|l| l.to_ascii_lowercase().starts_with(&prefix)).map(|l| l[prefix.len()..].trim().to_string())
}

fn secret(dir: &Path, name: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn history(cfg: &Path) -> Vec<Value> {
    let out = alerter().args(["history", "--json", "-n", "5000", "-c"]).arg(cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_firing_rule_mails_over_starttls_with_auth() {
    let cfg = TempConfig::new("");
    let dir = cfg.dir.path();
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, key.cert.pem()).unwrap();
    let keyfile = secret(dir, "key.pem", &key.signing_key.serialize_pem());
    let password = secret(dir, "smtp.password", "s3cret\n");
    let port = free_port();
    let smtp = Smtp::start(
        dir,
        port,
        &["--cert", cert.to_str().unwrap(), "--key", keyfile.to_str().unwrap(), "--auth", "alerter:s3cret"],
    );
    cfg.write(&format!(
        r#"
alerter: {{ name: FILESERVER, state_dir: {{state}} }}
sources:
  beat: {{ type: heartbeat, interval: 1h, summary: "/var is 91% full" }}
transports:
  mail:
    type: email
    relay: 127.0.0.1
    port: {port}
    tls: starttls
    username: alerter
    password_file: {password}
    ca_file: {cert}
    from: "Alerter <alerter@example.org>"
    template:
      title: "[{{{{ severity|upper }}}}] {{{{ summary }}}} on {{{{ host }}}}"
subscribers:
  alice: {{ name: Alice Doe, email: alice@example.org }}
  bob: {{ email: bob@example.org }}
groups:
  admins: {{ members: [alice, bob] }}
rules:
  - name: disk-mail
    match: {{ source: beat }}
    notify: [{{ groups: [admins], via: [mail] }}]
"#,
        password = password.display(),
        cert = cert.display()
    ));
    let mut d = Daemon::start(&cfg.path, &[]);
    until(LONG, "a mail", || !smtp.mails().is_empty());
    let mail = &smtp.mails()[0];
    assert_eq!(mail["tls"], true, "STARTTLS was used");
    assert_eq!(mail["auth"], true, "AUTH was used");
    assert_eq!(mail["from"], "alerter@example.org");
    assert_eq!(mail["to"], serde_json::json!(["alice@example.org", "bob@example.org"]));
    assert_eq!(header(mail, "From").unwrap(), "Alerter <alerter@example.org>");
    assert_eq!(header(mail, "To").unwrap(), "\"Alice Doe\" <alice@example.org>, bob@example.org");
    assert_eq!(header(mail, "Subject").unwrap(), "[INFO] /var is 91% full on FILESERVER");
    let id = header(mail, "Message-ID").unwrap();
    assert!(id.starts_with('<') && id.ends_with("@example.org>"), "{id}");
    assert!(header(mail, "X-Alerter").unwrap().contains("rule=disk-mail"));
    let text = mail["text"].as_str().unwrap();
    assert!(text.starts_with("INFO: /var is 91% full\n"), "{text}");
    assert!(text.contains("  host:      FILESERVER\n  source:    beat\n"), "{text}");
    d.signal("TERM");
    assert_eq!(d.wait(LONG).code(), Some(0));
    // The history records the server's answer.
    let h = history(&cfg.path);
    let sent = h.iter().find(|e| e["transport"] == "mail").unwrap();
    assert_eq!(sent["status"], "sent");
    assert!(sent["detail"].as_str().unwrap().starts_with("250 2.0.0 Ok: queued"), "{sent}");
}

/// Implicit TLS (port 465 style) with AUTH, from `alerter send --via email`.
/// The default mail body says what an admin needs to act: the log line
/// itself, the host, the labels, when, and which rule sent it.
#[test]
fn a_log_line_arrives_in_the_mail_body_with_host_labels_and_time() {
    use std::io::Write;
    let cfg = TempConfig::new("");
    let dir = cfg.dir.path();
    let port = free_port();
    let smtp = Smtp::start(dir, port, &[]);
    let log = dir.join("auth.log");
    std::fs::write(&log, "").unwrap();
    cfg.write(&format!(
        r#"
alerter: {{ name: FILESERVER, state_dir: {{state}} }}
sources:
  auth:
    type: log
    paths: [{log}]
    patterns:
      - name: ssh
        regex: 'sshd\[[0-9]+\]: Failed password for (?P<user>\S+) from (?P<ip>[0-9.]+)'
        summary: "failed ssh login as {{user}} from {{ip}}"
        key: "{{ip}}"
transports:
  mail: {{ type: email, relay: 127.0.0.1, port: {port}, tls: none, html: true, from: "Alerter <alerter@example.org>" }}
subscribers:
  ops: {{ email: ops@example.org }}
rules:
  - name: failed-logins
    match: {{ source: auth }}
    notify: [{{ subscribers: [ops], via: [mail] }}]
"#,
        log = log.display()
    ));
    let mut d = Daemon::start(&cfg.path, &[]);
    // Lines written before the source follows the file are not news.
    until(LONG, "the source following the file", || d.stderr_so_far().contains("following 1 files"));
    let line = "Nov 26 10:00:01 fileserver sshd[812]: Failed password for root from 203.0.113.9 port 22 ssh2";
    let before = chrono::Utc::now();
    writeln!(std::fs::OpenOptions::new().append(true).open(&log).unwrap(), "{line}").unwrap();
    until(LONG, "a mail", || !smtp.mails().is_empty());
    let after = chrono::Utc::now();
    let mail = &smtp.mails()[0];
    assert_eq!(header(mail, "Subject").unwrap(), "WARNING: failed ssh login as root from 203.0.113.9");
    let text = mail["text"].as_str().unwrap();
    assert!(text.starts_with("WARNING: failed ssh login as root from 203.0.113.9\n"), "{text}");
    assert!(text.contains(&format!("\n    {line}\n")), "the log line, indented:\n{text}");
    assert!(text.contains("  host:      FILESERVER\n  source:    auth\n  severity:  warning\n"), "{text}");
    let labels = format!("  labels:    file={}, ip=203.0.113.9, pattern=ssh, user=root\n", log.display());
    assert!(text.contains(&labels), "{text}");
    assert!(text.contains("Rule `failed-logins` of alerter on FILESERVER"), "{text}");
    // When it started, in UTC, to the second.
    let started = text.lines().find_map(|l| l.strip_prefix("  started:   ")).expect("a started line");
    let started = chrono::NaiveDateTime::parse_from_str(started, "%Y-%m-%d %H:%M:%S UTC")
        .unwrap_or_else(|e| panic!("`{started}`: {e}"))
        .and_utc();
    assert!(
        before.timestamp() <= started.timestamp() && started <= after,
        "started {started} is not between {before} and {after}"
    );
    // The HTML alternative says the same.
    let html = mail["html"].as_str().unwrap();
    assert!(html.contains(&format!("<pre>{line}</pre>")), "{html}");
    assert!(html.contains("<td>FILESERVER</td>") && html.contains("ip=203.0.113.9"), "{html}");
    d.signal("TERM");
    assert_eq!(d.wait(LONG).code(), Some(0));
}

#[test]
fn alerter_send_mails_over_implicit_tls_with_auth() {
    let cfg = TempConfig::new("");
    let dir = cfg.dir.path();
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, key.cert.pem()).unwrap();
    let keyfile = secret(dir, "key.pem", &key.signing_key.serialize_pem());
    let password = secret(dir, "smtp.password", "hunter2");
    let port = free_port();
    let smtp = Smtp::start(
        dir,
        port,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            keyfile.to_str().unwrap(),
            "--implicit-tls",
            "--auth",
            "ops:hunter2",
        ],
    );
    cfg.write(&format!(
        r#"
alerter: {{ name: FILESERVER, state_dir: {{state}} }}
transports:
  mail:
    type: email
    relay: 127.0.0.1
    port: {port}
    tls: tls
    username: ops
    password_file: {password}
    ca_file: {cert}
    from: "Alerter <alerter@example.org>"
subscribers:
  alice: {{ email: alice@example.org }}
groups:
  admins: {{ members: [alice] }}
"#,
        password = password.display(),
        cert = cert.display()
    ));
    let out = alerter()
        .args(["send", "--via", "email", "-c"])
        .arg(&cfg.path)
        .args(["@admins", "Maintenance at 18:00\nThe file server restarts."])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["tls"], true, "TLS from the first byte");
    assert_eq!(mails[0]["auth"], true);
    assert_eq!(mails[0]["to"], serde_json::json!(["alice@example.org"]));
    assert_eq!(header(&mails[0], "Subject").unwrap(), "Maintenance at 18:00");

    // A certificate alerter was not told to trust is refused, and said so.
    let untrusted = cfg.path.with_file_name("untrusted.yaml");
    let text = std::fs::read_to_string(&cfg.path).unwrap();
    let without_ca: String = text.lines().filter(|l| !l.contains("ca_file")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&untrusted, without_ca).unwrap();
    let out = alerter().args(["send", "--via", "email", "-c"]).arg(&untrusted).args(["@admins", "x"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert_eq!(smtp.mails().len(), 1, "nothing sent without a trusted certificate");
}

#[test]
fn clear_text_smtp_is_refused_to_a_remote_relay() {
    let cfg = TempConfig::new(
        r#"
transports:
  mail: { type: email, relay: mail.example.org, tls: none, from: "Alerter <alerter@example.org>" }
"#,
    );
    let out = alerter().args(["check", "-c"]).arg(&cfg.path).output().unwrap();
    let report = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(78), "{report}");
    assert!(
        report.contains("`tls: none` would send alerts and passwords in clear text to mail.example.org"),
        "{report}"
    );
    assert!(report.contains("alerter.yaml:3:"), "with its position: {report}");
}

/// A config with the burst test plugin (tests/fixtures/burst_plugin.py),
/// each event for `ops` through `via` (`mail`, and `out`: a log file).
fn burst_config(cfg: &TempConfig, count: usize, port: u16, mail_extra: &str, via: &str) {
    install_plugin(&cfg.plugins, &repo().join("tests/fixtures/burst_plugin.py"), "burst_plugin.py");
    cfg.write(&format!(
        r#"
alerter: {{ name: FILESERVER, state_dir: {{state}}, plugin_dirs: [{{plugins}}] }}
sources:
  burst: {{ type: burst, count: {count} }}
transports:
  mail:
    type: email
    relay: 127.0.0.1
    port: {port}
    tls: none
    from: "Alerter <alerter@example.org>"
    {mail_extra}
  out: {{ type: log, path: {{out}} }}
subscribers:
  ops: {{ email: ops@example.org }}
rules:
  - name: each-event
    match: {{ source: burst }}
    notify: [{{ subscribers: [ops], via: [{via}] }}]
"#
    ));
}

fn ids(mails: &[Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for mail in mails {
        *m.entry(header(mail, "Message-ID").unwrap()).or_default() += 1;
    }
    m
}

#[test]
fn mail_server_down_when_alerts_fire_then_up_30s_later_every_mail_arrives_once() {
    let cfg = TempConfig::new("");
    let port = free_port();
    burst_config(&cfg, 5, port, "retry: { initial: 1s, max: 4s }", "mail");
    let mut d = Daemon::start(&cfg.path, &[]);
    // The alerts fire with nobody listening on the port.
    until(LONG, "five attempts failing", || d.stderr_so_far().matches("delivery failed, retrying").count() >= 5);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let smtp = Smtp::start(cfg.dir.path(), port, &[]);
    until(LONG, "five mails", || smtp.mails().len() >= 5);
    // A little longer: a duplicate would arrive now if there were one.
    std::thread::sleep(Duration::from_secs(6));
    let counts = ids(&smtp.mails());
    assert_eq!(counts.len(), 5, "five distinct mails");
    assert!(counts.values().all(|n| *n == 1), "each once: {counts:?}");
    d.signal("TERM");
    assert_eq!(d.wait(LONG).code(), Some(0));
    let h = history(&cfg.path);
    assert!(
        h.iter()
            .filter(|e| e["transport"] == "mail")
            .all(|e| e["status"] == "sent" && e["attempts"].as_u64().unwrap() > 1),
        "{h:?}"
    );
}

#[test]
fn a_thousand_mails_survive_sigkill_mid_delivery_none_twice() {
    let cfg = TempConfig::new("");
    let port = free_port();
    // One connection, so that when the daemon is killed exactly one mail is
    // in flight: the one the server is holding at RCPT, not yet accepted.
    let smtp = Smtp::start(cfg.dir.path(), port, &["--stall-at", "300", "--stall-seconds", "4"]);
    burst_config(&cfg, 1000, port, "pool: 1", "mail");
    let mut d = Daemon::start(&cfg.path, &[]);
    until(LONG, "the server to stall mid-delivery", || smtp.proc.stdout().contains("STALL"));
    assert!(smtp.mails().len() >= 299, "delivering when killed");
    d.signal("KILL");
    d.wait(LONG);
    let before = smtp.mails().len();
    assert!(before < 1000, "killed mid-delivery: {before} delivered");

    let mut again = Daemon::start(&cfg.path, &[]);
    until(Duration::from_secs(90), "a thousand mails", || smtp.mails().len() >= 1000);
    std::thread::sleep(Duration::from_secs(5));
    let counts = ids(&smtp.mails());
    assert_eq!(counts.len(), 1000, "every notification arrived");
    assert_eq!(
        smtp.mails().len(),
        1000,
        "none twice: {:?}",
        counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    again.signal("TERM");
    assert_eq!(again.wait(LONG).code(), Some(0));
}

#[test]
fn smtp_4xx_is_retried_and_5xx_is_final_and_the_history_says_so() {
    let cfg = TempConfig::new("");
    let port = free_port();
    let smtp = Smtp::start(cfg.dir.path(), port, &["--fail-first", "2", "--reject", "nobody@"]);
    install_plugin(&cfg.plugins, &repo().join("tests/fixtures/burst_plugin.py"), "burst_plugin.py");
    cfg.write(&format!(
        r#"
alerter: {{ name: FILESERVER, state_dir: {{state}}, plugin_dirs: [{{plugins}}] }}
sources:
  one: {{ type: burst, count: 1 }}
transports:
  mail:
    type: email
    relay: 127.0.0.1
    port: {port}
    tls: none
    from: "Alerter <alerter@example.org>"
    retry: {{ initial: 1s, max: 2s }}
subscribers:
  ops: {{ email: ops@example.org }}
  ghost: {{ email: nobody@example.org }}
rules:
  - name: to-ops
    match: {{ source: one }}
    continue: true
    notify: [{{ subscribers: [ops], via: [mail] }}]
  - name: to-ghost
    match: {{ source: one }}
    notify: [{{ subscribers: [ghost], via: [mail] }}]
"#
    ));
    let mut d = Daemon::start(&cfg.path, &[]);
    until(LONG, "the mail to ops", || !smtp.mails().is_empty());
    until(LONG, "the history to record both outcomes", || {
        let h = history(&cfg.path);
        h.iter().any(|e| e["rule"] == "to-ops" && e["status"] == "sent")
            && h.iter().any(|e| e["rule"] == "to-ghost" && e["status"] == "failed")
    });
    d.signal("TERM");
    assert_eq!(d.wait(LONG).code(), Some(0));
    let h = history(&cfg.path);
    let ops = h.iter().find(|e| e["rule"] == "to-ops").unwrap();
    assert_eq!(ops["attempts"], 3, "two 451s, then accepted: {ops}");
    assert!(ops["detail"].as_str().unwrap().starts_with("250"), "{ops}");
    let ghost = h.iter().find(|e| e["rule"] == "to-ghost").unwrap();
    assert_eq!(ghost["attempts"], 1, "5xx is not retried: {ghost}");
    assert!(ghost["detail"].as_str().unwrap().contains("550"), "{ghost}");
    assert_eq!(smtp.mails().len(), 1);
}

#[test]
fn history_shows_sent_failed_and_suppressed_with_reasons() {
    let cfg = TempConfig::new("");
    let port = free_port();
    let smtp = Smtp::start(cfg.dir.path(), port, &["--reject", "nobody@"]);
    cfg.write(&format!(
        r#"
alerter: {{ name: FILESERVER, state_dir: {{state}} }}
transports:
  mail: {{ type: email, relay: 127.0.0.1, port: {port}, tls: none, from: "Alerter <alerter@example.org>" }}
  file: {{ type: log, path: {{out}} }}
subscribers:
  ops: {{ email: ops@example.org }}
  ghost: {{ email: nobody@example.org }}
silences:
  - match: {{ labels: {{ event: reloaded }} }}
    ends: 2099-01-01T00:00:00Z
    comment: reloads are boring
rules:
  - name: started
    match: {{ source: alerter, labels: {{ event: started }} }}
    continue: true
    notify: [{{ subscribers: [ops], via: [mail] }}]
  - name: ghost
    match: {{ source: alerter, labels: {{ event: started }} }}
    notify: [{{ subscribers: [ghost], via: [mail] }}]
  - name: reloads
    match: {{ source: alerter, labels: {{ event: reloaded }} }}
    notify: [{{ workgroup: true, via: [file] }}]
"#
    ));
    let mut d = Daemon::start(&cfg.path, &[]);
    until(LONG, "the mail", || !smtp.mails().is_empty());
    d.signal("HUP");
    until(LONG, "the reload", || d.stderr_so_far().contains("configuration reloaded"));
    until(LONG, "three entries", || history(&cfg.path).len() >= 3);
    d.signal("TERM");
    assert_eq!(d.wait(LONG).code(), Some(0));
    let out = alerter().args(["history", "-c"]).arg(&cfg.path).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    let line_with = |status: &str| {
        text.lines()
            .position(|l| l.contains(&format!("  {status} ")))
            .unwrap_or_else(|| panic!("no {status} line:\n{text}"))
    };
    let sent = line_with("sent");
    assert!(text.lines().nth(sent + 1).unwrap().contains("250 2.0.0 Ok"), "{text}");
    let failed = line_with("failed");
    assert!(text.lines().nth(failed + 1).unwrap().contains("550"), "{text}");
    let suppressed = line_with("suppressed");
    assert!(text.lines().nth(suppressed + 1).unwrap().contains("silenced by silence#1 (reloads are boring)"), "{text}");
}

#[test]
fn a_mail_server_that_never_answers_does_not_delay_popups() {
    let ns = Netns::new("blackhole");
    // A "mail server" that accepts connections and says nothing, ever.
    let _hole = Proc::spawn({
        let mut c = ns.cmd("python3");
        c.args([
            "-c",
            "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',2525))\ns.listen(100)\nkeep=[]\nwhile True:\n  c,_=s.accept()\n  keep.append(c)",
        ]);
        c
    });
    let listen = Proc::spawn({
        let mut c = ns.cmd(env!("CARGO_BIN_EXE_alerter"));
        c.args(["listen", "--name", "BOB", "--json", "--no-desktop", "--history", "/dev/null", "--name-port", "0"]);
        c
    });
    until(LONG, "the listener and the black hole", || ns.tcp_listening(139) && ns.tcp_listening(2525));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("alerter.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
alerter: {{ name: FILESERVER, state_dir: {} }}
sources:
  beat: {{ type: heartbeat, interval: 1s }}
transports:
  mail: {{ type: email, relay: 127.0.0.1, port: 2525, tls: none, timeout: 60s, from: "Alerter <alerter@example.org>" }}
  popup: {{ type: messenger, hosts: {{ BOB: 127.0.0.1 }}, dns: false }}
subscribers:
  bob: {{ machine: BOB, email: bob@example.org }}
rules:
  - name: both
    match: {{ source: beat }}
    template:
      text: "{{{{ alerts[0].since }}}}"
    notify: [{{ subscribers: [bob], via: [mail, popup] }}]
"#,
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let daemon = Proc::spawn({
        let mut c = ns.cmd(env!("CARGO_BIN_EXE_alerter"));
        c.arg("run").arg("-c").arg(&cfg);
        c
    });
    let popups = |l: &Proc| l.json_lines().into_iter().filter(|v| v.get("text").is_some()).collect::<Vec<_>>();
    until(LONG, "five popups", || popups(&listen).len() >= 5);
    for p in popups(&listen) {
        let fired = chrono::DateTime::parse_from_rfc3339(p["text"].as_str().unwrap()).unwrap();
        let shown = chrono::DateTime::parse_from_rfc3339(p["time"].as_str().unwrap()).unwrap();
        let delay = (shown - fired).to_std().unwrap();
        assert!(delay < Duration::from_secs(1), "a popup took {delay:?} while mail hangs");
    }
    drop(daemon);
}

/// Splits a documented command line into arguments: words, and "double
/// quoted" words (all the docs use).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut started) = (false, false);
    for c in line.chars() {
        match c {
            '"' => (quoted, started) = (!quoted, true),
            ' ' if !quoted => {
                if started {
                    out.push(std::mem::take(&mut word));
                }
                started = false;
            }
            c => (word, started) = (word + &c.to_string(), true),
        }
    }
    if started {
        out.push(word);
    }
    out
}

/// A plugin directory holding an executable that leaves a trace when it is
/// run (and is no plugin): it shows whether a command scanned the directory.
fn tattle_plugin(cfg: &TempConfig) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let trace = cfg.dir.path().join("plugin-ran");
    let script = cfg.dir.path().join("tattle");
    std::fs::write(&script, format!("#!/bin/sh\necho ran >> {}\n", trace.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    install_plugin(&cfg.plugins, &script, "tattle");
    trace
}

/// `alerter send -c` takes the config the daemon runs: with the built-in
/// sources (checked as `alerter check` does) and third-party ones, whose
/// plugins it neither scans for nor starts.
#[test]
fn alerter_send_c_mails_a_group_with_the_daemons_own_config() {
    let cfg = TempConfig::new("");
    let trace = tattle_plugin(&cfg);
    let port = free_port();
    let smtp = Smtp::start(cfg.dir.path(), port, &[]);
    let text = |extra_source: &str| {
        format!(
            r#"
alerter: {{ name: FILESERVER, state_dir: {{state}}, plugin_dirs: [{{plugins}}] }}
sources:
  disks: {{ type: disk, warning: {{ used: 85% }}, critical: {{ used: 95% }} }}
  auth:
    type: log
    paths: ["{{dir}}/auth.log"]
    patterns: [{{ regex: 'Failed password for (?P<user>\S+)' }}]
  backup: {{ type: script, command: [/bin/true], schedule: "0 3 * * *" }}
{extra_source}
transports:
  mail: {{ type: email, relay: 127.0.0.1, port: {port}, tls: none, from: "Alerter <alerter@example.org>" }}
subscribers:
  alice: {{ name: Alice Doe, machine: ALICE-PC, email: alice@example.org }}
  bob: {{ machine: BOB-PC }}
  carol: {{ email: carol@example.org }}
groups:
  admins: {{ members: [alice, bob, carol] }}
"#
        )
    };
    let send = |via: &str, message: &str| {
        alerter().args(["send", "--via", via, "-c"]).arg(&cfg.path).args(["@admins", message]).output().unwrap()
    };

    // Built-in sources: a valid config, and `send` accepts it.
    cfg.write(&text(""));
    let out = send("email", "Maintenance at 18:00\nThe file server restarts.");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`bob` of @admins has no `email`"), "the member left out is named: {err}");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["to"], serde_json::json!(["alice@example.org", "carol@example.org"]));
    assert_eq!(header(&mails[0], "Subject").unwrap(), "Maintenance at 18:00");

    // A third-party source, and `--via mail` for `--via email`.
    cfg.write(&text("  ups: { type: ups, battery: 20% }"));
    let out = send("mail", "Power cut at 19:00");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    until(LONG, "the second mail", || smtp.mails().len() == 2);
    assert_eq!(header(&smtp.mails()[1], "Subject").unwrap(), "Power cut at 19:00");
    assert!(!trace.exists(), "`send` ran a program from the plugin directory");

    // The trace is real: `check` scans the directory (running what is in
    // it) and reports the source no plugin provides.
    let out = alerter().args(["check", "-c"]).arg(&cfg.path).output().unwrap();
    let report = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(78), "{report}");
    assert!(report.contains("no plugin provides source type `ups`"), "{report}");
    assert!(trace.exists(), "`check` runs the plugins it finds");
}

/// The relay example of docs/email.md, run as written (with the config
/// path in it replaced).
#[test]
fn the_relay_example_in_docs_email_md_works_as_written() {
    let docs = std::fs::read_to_string(repo().join("docs/email.md")).unwrap();
    let line = docs.lines().find(|l| l.starts_with("alerter send -c ")).expect("docs/email.md has the example");
    let cfg = TempConfig::new("");
    let port = free_port();
    let smtp = Smtp::start(cfg.dir.path(), port, &[]);
    cfg.write(&format!(
        r#"
alerter: {{ name: FILESERVER, state_dir: {{state}} }}
sources:
  disks: {{ type: disk }}
transports:
  mail: {{ type: email, relay: 127.0.0.1, port: {port}, tls: none, from: "Alerter <alerter@example.org>" }}
subscribers:
  alice: {{ email: alice@example.org }}
groups:
  admins: {{ members: [alice] }}
"#
    ));
    let args = words(line);
    assert_eq!(args[0], "alerter");
    let args: Vec<String> = args[1..]
        .iter()
        .map(|a| if a == "/etc/alerter/alerter.yaml" { cfg.path.display().to_string() } else { a.clone() })
        .collect();
    assert!(args.contains(&cfg.path.display().to_string()), "the example names /etc/alerter/alerter.yaml: {line}");
    let out = alerter().args(&args).output().unwrap();
    assert!(out.status.success(), "`{line}` failed: {}", String::from_utf8_lossy(&out.stderr));
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["to"], serde_json::json!(["alice@example.org"]));
    let message = args.last().unwrap();
    assert_eq!(header(&mails[0], "Subject").unwrap(), *message);
}

/// A group of one popup-only and one mail-only member, notified `via:
/// [popup, mail]`: each gets what they can receive, from the daemon and
/// from `alerter send`, and `alerter check` says who misses what.
#[test]
fn a_group_with_popup_only_and_mail_only_members_gets_both_each_their_own() {
    let cfg = TempConfig::new("");
    let (sport, lport) = (free_port(), free_port());
    let smtp = Smtp::start(cfg.dir.path(), sport, &[]);
    let listen = Proc::spawn({
        let mut c = Command::new(env!("CARGO_BIN_EXE_alerter"));
        c.args(["listen", "--name", "ALICE-PC", "--bind", "127.0.0.1", "-p", &lport.to_string()])
            .args(["--datagram-port", "0", "--name-port", "0", "--json", "--no-desktop", "--history", "/dev/null"])
            .env("ALERTER_LOG", "info");
        c
    });
    until(LONG, "the listener", || listen.stderr().contains("listening"));
    cfg.write(&format!(
        r#"
alerter: {{ name: FILESERVER, state_dir: {{state}} }}
sources:
  beat: {{ type: heartbeat, interval: 1h, summary: "/var is 91% full" }}
transports:
  popup: {{ type: messenger, hosts: {{ ALICE-PC: "127.0.0.1:{lport}" }}, dns: false }}
  mail: {{ type: email, relay: 127.0.0.1, port: {sport}, tls: none, from: "Alerter <alerter@example.org>" }}
subscribers:
  alice: {{ machine: ALICE-PC }}
  bob: {{ email: bob@example.org }}
groups:
  admins: {{ members: [alice, bob] }}
rules:
  - name: disk-full
    match: {{ source: beat }}
    notify: [{{ groups: [admins], via: [popup, mail] }}]
"#
    ));
    let out = alerter().args(["check", "-c"]).arg(&cfg.path).output().unwrap();
    let report = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "warnings only:\n{report}");
    assert!(
        report.contains(
            "warning: rule `disk-full`: member `bob` of group `admins` has no `user` or `machine`, so transport `popup` cannot reach them"
        ),
        "{report}"
    );
    assert!(
        report.contains(
            "warning: rule `disk-full`: member `alice` of group `admins` has no `email`, so transport `mail` cannot reach them"
        ),
        "{report}"
    );

    let popups = |l: &Proc| l.json_lines().into_iter().filter(|v| v.get("text").is_some()).collect::<Vec<_>>();
    let mut d = Daemon::start(&cfg.path, &[]);
    until(LONG, "the popup and the mail", || !popups(&listen).is_empty() && !smtp.mails().is_empty());
    let popup = &popups(&listen)[0];
    assert_eq!(popup["to"], "ALICE-PC");
    assert!(popup["text"].as_str().unwrap().contains("/var is 91% full"), "{popup}");
    let mail = &smtp.mails()[0];
    assert_eq!(mail["to"], serde_json::json!(["bob@example.org"]), "only bob is mailed");
    until(LONG, "both deliveries in the history", || {
        history(&cfg.path).iter().filter(|e| e["rule"] == "disk-full" && e["status"] == "sent").count() == 2
    });
    d.signal("TERM");
    assert_eq!(d.wait(LONG).code(), Some(0), "{}", d.stderr_so_far());
    let h = history(&cfg.path);
    let sent = |transport: &str| h.iter().find(|e| e["transport"] == transport).unwrap_or_else(|| panic!("{h:?}"));
    assert_eq!(sent("popup")["recipients"], serde_json::json!(["alice"]));
    assert_eq!(sent("mail")["recipients"], serde_json::json!(["bob"]));

    // `alerter send @admins` (docs/messenger.md) does the same by hand.
    let out = alerter().args(["send", "-c"]).arg(&cfg.path).args(["@admins", "Lunch is served"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`bob` of @admins has no `user` or `machine`"));
    until(LONG, "the second popup", || popups(&listen).len() == 2);
    assert_eq!(popups(&listen)[1]["text"], "Lunch is served");
    let out = alerter()
        .args(["send", "--via", "email", "-c"])
        .arg(&cfg.path)
        .args(["@admins", "Lunch is served"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(smtp.mails().len(), 2);
    assert_eq!(smtp.mails()[1]["to"], serde_json::json!(["bob@example.org"]));
    assert_eq!(popups(&listen).len(), 2, "mail to the group pops nothing up");
}

/// Issue 10, acceptance 5: 20 SIGHUPs (some changing the transport, one
/// with a broken config) while 10,000 notifications drain through a slow
/// mail transport (one connection). aiosmtpd records every mail it accepts
/// and deduplicates nothing: each notification arrives exactly once (no
/// row handed to two workers across reloads), and the broken config changes
/// nothing (no mail ever carries its subject).
#[test]
fn reloads_under_load_send_each_notification_exactly_once() {
    const N: usize = 10_000;
    let cfg = TempConfig::new("");
    let port = free_port();
    let smtp = Smtp::start(cfg.dir.path(), port, &[]);
    let app_log = cfg.dir.path().join("app.log");
    std::fs::write(&app_log, "").unwrap();
    let config = |pool: u32, broken: bool| {
        format!(
            r#"
alerter: {{ name: FILESERVER, state_dir: {{state}} }}
sources:
  app:
    type: log
    paths: [{log}]
    start_at: beginning
    patterns: [{{ name: error, regex: 'ERROR (?P<n>[0-9]+)', severity: warning }}]
transports:
  mail: {{ type: email, relay: 127.0.0.1, port: {port}, tls: none, pool: {pool}, from: "Alerter <alerter@example.org>" }}
subscribers:
  ops: {{ email: ops@example.org }}
rules:
  - name: app
    match: {{ source: app }}
    notify: [{{ subscribers: [ops], via: [mail] }}]
    template: {{ title: "{title}" }}
{junk}"#,
            log = app_log.display(),
            title = if broken { "BROKEN {{ summary }}" } else { "{{ summary }}" },
            junk = if broken { "nonsense: true\n" } else { "" },
        )
    };
    cfg.write(&config(1, false));
    let mut d = Daemon::start(&cfg.path, &[]);
    until(LONG, "the daemon", || d.stderr_so_far().contains("alerter started"));
    {
        use std::io::Write;
        let mut text = String::new();
        for i in 0..N {
            text.push_str(&format!("ERROR {i} request failed\n"));
        }
        std::fs::OpenOptions::new().append(true).open(&app_log).unwrap().write_all(text.as_bytes()).unwrap();
    }
    until(LONG, "the first mails", || smtp.mails().len() >= 100);
    // Loads started and their outcomes, as the daemon logs them: a signal
    // that comes while a load is under way is folded into one more load,
    // so each config is written only when the daemon is idle, and its
    // outcome is the one load the signal started.
    let (started, done, failed) = (
        "alerter_core::daemon: reloading configuration",
        "alerter_core::daemon: configuration reloaded",
        "alerter_core::daemon: configuration not reloaded",
    );
    let counts = |s: &str| (s.matches(started).count(), s.matches(done).count() + s.matches(failed).count());
    for i in 0..20 {
        let broken = i == 10;
        until(LONG, "the daemon idle", || {
            let (s, o) = counts(&d.stderr_so_far());
            s == o
        });
        let (before, failed_before) = (counts(&d.stderr_so_far()).0, d.stderr_so_far().matches(failed).count());
        // Every third reload changes the transport (its pool), which
        // replaces its worker while deliveries are in flight.
        cfg.write(&config(if i % 3 == 0 { 2 } else { 1 }, broken));
        d.signal("HUP");
        until(LONG, "the reload", || {
            let (s, o) = counts(&d.stderr_so_far());
            s > before && s == o
        });
        if broken {
            assert_eq!(d.stderr_so_far().matches(failed).count(), failed_before + 1, "{}", d.stderr_so_far());
        }
    }
    let during = smtp.mails().len();
    assert!(during < N, "the reloads happened while mail was still draining ({during} of {N} delivered)");
    until(Duration::from_secs(300), "all mails", || smtp.mails().len() >= N);
    d.signal("TERM");
    d.wait(Duration::from_secs(30));
    let mails = smtp.mails();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in &mails {
        let subject = header(m, "Subject").unwrap_or_default();
        assert!(!subject.contains("BROKEN"), "the broken config was applied: {subject}");
        *seen.entry(header(m, "Message-ID").expect("Message-ID")).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{} sent more than once, e.g. {:?}", twice.len(), &twice[..twice.len().min(5)]);
    assert_eq!(seen.len(), N, "every notification exactly once");
}

/// Issue 13, acceptance 3: one storm of 10,000 distinct warnings to a log
/// transport and to an email transport with a budget of 5 mails per 20 s:
/// the log gets all 10,000, the mail server receives the 5 and one digest
/// mail that counts the rest by rule and host; history keeps every one.
#[test]
fn a_mail_budget_sends_five_mails_and_one_digest_while_the_log_gets_all_ten_thousand() {
    let cfg = TempConfig::new("");
    let port = free_port();
    let smtp = Smtp::start(cfg.dir.path(), port, &[]);
    burst_config(&cfg, 10_000, port, "budget: 5 per 20s", "mail, out");
    let mut d = Daemon::start(&cfg.path, &[]);
    let subject = |m: &Value| header(m, "Subject").unwrap_or_default();
    until(Duration::from_secs(120), "the digest mail", || {
        smtp.mails().iter().any(|m| subject(m).starts_with("Digest"))
    });
    until(LONG, "all 10,000 in the log", || cfg.notifications().len() >= 10_000);
    until(LONG, "the digest recorded as sent", || {
        util::all_history(&cfg.path, &["--rule", "digest:ops"]).iter().any(|h| h["status"] == "sent")
    });
    assert_eq!(cfg.notifications().len(), 10_000, "the log gets every one");
    let mails = smtp.mails();
    let subjects: Vec<String> = mails.iter().map(subject).collect();
    assert_eq!(mails.len(), 6, "{subjects:#?}");
    assert_eq!(subjects.iter().filter(|s| s.starts_with("WARNING: event 000")).count(), 5, "{subjects:#?}");
    let digest = mails.iter().find(|m| subject(m).starts_with("Digest")).unwrap();
    assert_eq!(subject(digest), "Digest #1: 9,995 more notifications (worst: warning)");
    let text = digest["text"].as_str().unwrap();
    assert!(
        text.starts_with("9,995 notifications to ops through `mail` were held back by the budget of mails 5 per 20s\n"),
        "{text}"
    );
    assert!(text.contains("\n      9,995  each-event  FILESERVER\n"), "counted by rule and host: {text}");
    assert!(text.contains("alerter history --status folded --since "), "{text}");

    d.signal("TERM");
    assert_eq!(d.wait(LONG).code(), Some(0));
    let h = util::all_history(&cfg.path, &[]);
    let count = |transport: &str, status: &str| {
        h.iter().filter(|e| e["transport"] == transport && e["status"] == status).count()
    };
    assert_eq!((count("mail", "sent"), count("mail", "folded"), count("out", "sent")), (6, 9_995, 10_000));
}
