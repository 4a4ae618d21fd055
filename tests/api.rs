//! End-to-end: the control API of a running `alerter run`, through the
//! command line (`alerter status`, `alerter silence`) and raw HTTP: what a
//! silence does and how long it lasts, and who may do what.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use chrono::{DateTime, Utc};
use util::{Daemon, TempConfig, alerter, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// A log source turns each appended line into a one-shot event with the
/// labels `app` and `n`; rule `app-errors` sends each to the log transport.
const CONFIG: &str = r#"
alerter: { name: APIHOST, state_dir: {state} }
api:
  socket: {dir}/run/api.sock
  socket_group: nogroup
  listen: 127.0.0.1:0
  tokens:
    ops: { file: {dir}/tokens/ops, scope: operate }
    hook: { file: {dir}/tokens/hook, scope: ingest }
    viewer: { file: {dir}/tokens/viewer, scope: read }
sources:
  app:
    type: log
    paths: [{dir}/app.log]
    start_at: beginning
    patterns:
      - { name: error, regex: 'ERROR app=(?P<app>\S+) n=(?P<n>[0-9]+)', severity: warning }
transports:
  out: { type: log, path: {out} }
subscribers:
  ops: { name: Operations }
rules:
  - name: app-errors
    match: { source: app }
    notify: [{ subscribers: [ops], via: [out] }]
"#;

const TOKENS: [(&str, &str); 3] = [
    ("ops", "ops-0123456789abcdef0123456789"),
    ("hook", "hook-0123456789abcdef0123456789"),
    ("viewer", "viewer-0123456789abcdef01234567"),
];

fn setup() -> TempConfig {
    let cfg = TempConfig::new(CONFIG);
    let tokens = cfg.dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    for (name, secret) in TOKENS {
        let f = tokens.join(name);
        std::fs::write(&f, format!("{secret}\n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(cfg.dir.path().join("app.log"), "").unwrap();
    cfg
}

fn token_file(cfg: &TempConfig, name: &str) -> PathBuf {
    cfg.dir.path().join("tokens").join(name)
}

fn socket(cfg: &TempConfig) -> PathBuf {
    cfg.dir.path().join("run/api.sock")
}

/// Appends error lines for (app, n).
fn log_errors(cfg: &TempConfig, lines: &[(&str, u32)]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(cfg.dir.path().join("app.log")).unwrap();
    for (app, n) in lines {
        writeln!(f, "ERROR app={app} n={n}").unwrap();
    }
}

/// The `n` of every notification so far.
fn notified(cfg: &TempConfig) -> Vec<u32> {
    cfg.notifications()
        .iter()
        .filter(|n| n["rule"] == "app-errors")
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["labels"]["n"].as_str().and_then(|n| n.parse().ok()))
        .collect()
}

fn wait_notified(cfg: &TempConfig, n: u32) -> Vec<u32> {
    wait_for(WAIT, || {
        let seen = notified(cfg);
        seen.contains(&n).then_some(seen)
    })
}

/// Runs `alerter ARGS` against the test's daemon (by its config).
fn cli(cfg: &TempConfig, args: &[&str]) -> Output {
    alerter().args(args).arg("-c").arg(&cfg.path).env_remove("ALERTER_SOCKET").output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn failed(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

fn history(cfg: &TempConfig) -> Vec<serde_json::Value> {
    let out = ok(alerter().args(["history", "--json", "-n", "1000", "-c"]).arg(&cfg.path).output().unwrap());
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn started(cfg: &TempConfig) -> Daemon {
    let d = Daemon::start(&cfg.path, &[]);
    wait_for(WAIT, || d.stderr_so_far().contains("alerter started").then_some(()));
    d
}

/// The TCP address the daemon's API listens on (it asked for port 0).
fn tcp_url(d: &Daemon) -> String {
    wait_for(WAIT, || {
        d.stderr_so_far().lines().find(|l| l.contains("control API listening") && l.contains("addr=")).map(|l| {
            let addr = l.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap();
            format!("http://{addr}")
        })
    })
}

#[test]
fn a_silence_suppresses_from_the_moment_it_is_set_and_survives_reload_and_restart() {
    let cfg = setup();
    let mut d = started(&cfg);
    log_errors(&cfg, &[("web", 1)]);
    wait_notified(&cfg, 1);

    let id = ok(cli(&cfg, &["silence", "add", "rule=app-errors", r#"app=~"we.*""#, "-m", "deploying web", "-d", "2h"]));
    let id = id.trim().to_string();
    assert!(id.starts_with("s-"), "{id}");
    // Effective when the call returned: the very next line is silenced,
    // and the one after it (another app) is not.
    log_errors(&cfg, &[("web", 2), ("db", 3)]);
    let seen = wait_notified(&cfg, 3);
    assert!(!seen.contains(&2), "silenced: {seen:?}");
    let h = history(&cfg);
    let suppressed = h
        .iter()
        .find(|i| i["status"] == "suppressed" && i["summary"].as_str().unwrap().contains("n=2"))
        .unwrap_or_else(|| panic!("n=2 is in history as suppressed: {h:#?}"));
    let detail = suppressed["detail"].as_str().unwrap();
    assert_eq!(detail, format!("silenced by {id} (set by user:root: deploying web)"));
    let set = h.iter().find(|i| i["status"] == "silence").expect("the change itself is in history");
    assert!(set["detail"].as_str().unwrap().contains("by user:root: deploying web"), "{set:#?}");

    let list = ok(cli(&cfg, &["silence", "list", "--json"]));
    let list: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["state"], "active");
    assert_eq!(list[0]["created_by"], "user:root");
    assert_eq!(list[0]["matchers"], serde_json::json!(["rule=app-errors", r#"app=~"we.*""#]));

    // A reload keeps it.
    d.signal("HUP");
    wait_for(WAIT, || d.stderr_so_far().contains("configuration reloaded").then_some(()));
    log_errors(&cfg, &[("web", 4), ("db", 5)]);
    let seen = wait_notified(&cfg, 5);
    assert!(!seen.contains(&4), "still silenced after SIGHUP: {seen:?}");

    // So does a restart.
    d.signal("TERM");
    assert!(d.wait(WAIT).success());
    let d = started(&cfg);
    assert!(d.stderr_so_far().contains("restored silences set through the API silences=1"), "{}", d.stderr_so_far());
    log_errors(&cfg, &[("web", 6), ("db", 7)]);
    let seen = wait_notified(&cfg, 7);
    assert!(!seen.contains(&6), "still silenced after a restart: {seen:?}");

    // Expired, delivery comes back at once.
    let out = ok(cli(&cfg, &["silence", "expire", &id]));
    assert_eq!(out.trim(), format!("expired {id}"));
    log_errors(&cfg, &[("web", 8)]);
    let seen = wait_notified(&cfg, 8);
    assert_eq!(seen.iter().filter(|n| **n == 8).count(), 1);
    let list = ok(cli(&cfg, &["silence", "list", "--json"]));
    assert_eq!(list.trim(), "[]", "an expired silence is not listed");
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&ok(cli(&cfg, &["silence", "list", "--expired", "--json"]))).unwrap();
    assert_eq!(list[0]["state"], "expired");
    let h = history(&cfg);
    assert!(h.iter().any(|i| i["status"] == "silence" && i["summary"] == format!("silence {id} expired")), "{h:#?}");

    // `status` sees the daemon and what it holds.
    let status: serde_json::Value = serde_json::from_str(&ok(cli(&cfg, &["status", "--json"]))).unwrap();
    assert_eq!(status["name"], "APIHOST");
    assert_eq!(status["active_silences"], 0);
    assert_eq!(status["sources"][0]["id"], "app");
    assert_eq!(status["sources"][0]["state"], "running");
    assert_eq!(status["transports"][0]["id"], "out");
    assert_eq!(status["config_hash"].as_str().unwrap().len(), 64);
    let text = ok(cli(&cfg, &["status"]));
    assert!(text.starts_with("alerter APIHOST "), "{text}");
}

#[test]
fn bad_silences_are_refused_with_a_reason() {
    let cfg = setup();
    let _d = started(&cfg);
    let err = failed(cli(&cfg, &["silence", "add", "host=~.*"]));
    assert!(err.contains("match every alert"), "{err}");
    let err = failed(cli(&cfg, &["silence", "add", "app=~(", "-d", "1h"]));
    assert!(err.contains("not a valid regex"), "{err}");
    let err = failed(cli(&cfg, &["silence", "add", "app=web", "-d", "soon"]));
    assert!(err.contains("not a duration"), "{err}");
    let err = failed(cli(&cfg, &["silence", "expire", "s-nope"]));
    assert!(err.contains("no silence `s-nope`"), "{err}");
    let err = failed(cli(&cfg, &["silence", "add", "app=web", "-m", "bell\u{7}"]));
    assert!(err.contains("control characters"), "{err}");
}

/// A notice set through the API goes out through the transport asked for,
/// is kept across a restart with what is still to come, and bad requests
/// are refused with a reason: whom nobody reaches, a time that has passed
/// or is not a time, a caller without the `operate` scope.
#[test]
fn notices_set_through_the_api_are_kept_across_a_restart_and_bad_ones_are_refused() {
    let cfg = setup();
    let mut d = started(&cfg);
    let err = failed(cli(&cfg, &["notice", "add", "--to", "ops", "Maintenance at six"]));
    assert!(err.contains("ops cannot be reached by popup or mail"), "{err}");
    let err = failed(cli(&cfg, &["notice", "add", "--to", "*", "--via", "out", "--at", "soon", "x"]));
    assert!(err.contains("`soon` is not a time"), "{err}");
    let err = failed(cli(&cfg, &["notice", "add", "--to", "*", "--via", "out", "--at", "2020-01-01 10:00", "x"]));
    assert!(err.contains("has passed"), "{err}");
    let err = failed(cli(&cfg, &["notice", "add", "--to", "@nobody", "x"]));
    assert!(err.contains("no group `nobody`"), "{err}");
    let err = failed(cli(&cfg, &["notice", "add", "--to", "*", "--via", "out", "--remind", "0s", "x"]));
    assert!(err.contains("1s or more"), "{err}");

    // Now, to the log: it goes out at once.
    let id = ok(cli(&cfg, &["notice", "add", "--to", "ops", "--via", "out", "Lunch", "is", "served"]));
    let id = id.trim();
    let sent =
        wait_for(WAIT, || cfg.notifications().into_iter().find(|n| n["rule"] == format!("notice:{id}").as_str()));
    assert_eq!((sent["text"].as_str(), sent["status"].as_str()), (Some("Lunch is served"), Some("notice")), "{sent}");
    // In an hour, reminded ten minutes ahead: kept across a restart.
    let later =
        ok(cli(&cfg, &["notice", "add", "--to", "ops", "--via", "out", "--at", "+1h", "--remind", "10m", "Later"]));
    let later = later.trim().to_string();
    let list =
        || -> Vec<serde_json::Value> { serde_json::from_str(&ok(cli(&cfg, &["notice", "list", "--json"]))).unwrap() };
    let before = list();
    assert_eq!(before.len(), 1, "the one sent is gone: {before:?}");
    assert_eq!(before[0]["id"], later.as_str());
    assert_eq!(before[0]["created_by"], "user:root");
    d.signal("TERM");
    assert!(d.wait(WAIT).success());
    let d = started(&cfg);
    assert!(d.stderr_so_far().contains("restored notices set through the API notices=1"), "{}", d.stderr_so_far());
    assert_eq!(list(), before, "the same notice, with the same times to come");

    // The `read` scope lists but cannot set or cancel.
    let url = tcp_url(&d);
    let viewer = token_file(&cfg, "viewer");
    let as_viewer =
        |args: &[&str]| alerter().args(args).arg("--url").arg(&url).arg("--token-file").arg(&viewer).output().unwrap();
    assert!(ok(as_viewer(&["notice", "list"])).contains(&later));
    let err = failed(as_viewer(&["notice", "cancel", &later]));
    assert!(err.contains("operate"), "{err}");
    let err = failed(as_viewer(&["notice", "add", "--to", "*", "x"]));
    assert!(err.contains("operate"), "{err}");
    assert_eq!(ok(cli(&cfg, &["notice", "cancel", &later])).trim(), format!("cancelled {later}"));
    assert!(list().is_empty());
}

/// History through the API, filtered and paged; a reload asked for through
/// the API answers with its outcome (every problem when it was refused)
/// and is in history with who asked, as is one by SIGHUP; a test
/// notification is followed until it was sent.
#[test]
fn history_reload_and_a_test_notification_through_the_api() {
    let cfg = setup();
    let d = started(&cfg);
    let sock = socket(&cfg);
    let via_api = |args: &[&str]| alerter().args(args).arg("--socket").arg(&sock).output().unwrap();
    log_errors(&cfg, &[("web", 1), ("db", 2), ("mail", 3)]);
    wait_notified(&cfg, 3);

    // Filtered, a page at a time, oldest of the page first; no entry twice.
    let sent = |extra: &[&str]| {
        let mut args = vec!["history", "--json", "--rule", "app-errors", "--status", "sent"];
        args.extend_from_slice(extra);
        via_api(&args)
    };
    let all: Vec<serde_json::Value> = ok(sent(&[])).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!all.is_empty() && all.iter().all(|e| e["rule"] == "app-errors" && e["status"] == "sent"), "{all:?}");
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut extra = vec!["-n", "1"];
        if let Some(c) = &cursor {
            extra.extend(["--cursor", c.as_str()]);
        }
        let out = sent(&extra);
        assert!(out.status.success());
        paged.extend(String::from_utf8_lossy(&out.stdout).lines().map(String::from));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        match err.split("--cursor ").nth(1) {
            Some(c) => cursor = Some(c.trim().to_string()),
            None => break,
        }
    }
    paged.reverse();
    let whole: Vec<String> = all.iter().map(|e| e.to_string()).collect();
    let paged: Vec<String> =
        paged.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap().to_string()).collect();
    assert_eq!(paged, whole, "pages of one make up the whole, in order");
    let err = failed(via_api(&["history", "--status", "lost"]));
    assert!(err.contains("`status=lost`: use one of sent, failed"), "{err}");
    let err = failed(via_api(&["history", "--alert", "xyz"]));
    assert!(err.contains("an alert id is 16 hex digits"), "{err}");

    // A test notification, followed until it was sent.
    let out = via_api(&["test-transport", "out", "checking", "the", "log"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sent");
    let test =
        cfg.notifications().into_iter().find(|n| n["rule"].as_str().is_some_and(|r| r.starts_with("test:"))).unwrap();
    assert_eq!((test["text"].as_str(), test["status"].as_str()), (Some("checking the log"), Some("test")), "{test}");
    let err = failed(via_api(&["test-transport", "pager"]));
    assert!(err.contains("no transport `pager`; the config's transports: out"), "{err}");

    // A reload through the API says what it applied.
    let two_rules = CONFIG.replace(
        "rules:\n",
        "rules:\n  - name: first\n    match: { source: nothing }\n    notify: [{ subscribers: [ops], via: [out] }]\n",
    );
    cfg.write(&two_rules);
    let out = ok(via_api(&["reload"]));
    assert!(out.starts_with("reloaded: 2 rules, 1 sources, 1 transports, config "), "{out}");
    // Refused with every problem, and the daemon keeps its config.
    cfg.write(
        &two_rules
            .replace("via: [out] }]\n  - name: app-errors", "via: [pager] }]\n  - name: app-errors")
            .replace("scope: read", "scope: reed"),
    );
    let err = failed(via_api(&["reload"]));
    assert!(err.contains("configuration not reloaded; the previous configuration keeps running"), "{err}");
    assert!(err.contains("pager") && err.contains("reed"), "both problems: {err}");
    let status: serde_json::Value = serde_json::from_str(&ok(via_api(&["status", "--json"]))).unwrap();
    assert_eq!(status["config_hash"].as_str().map(|h| &h[..12]), out.trim().rsplit(' ').next());
    // Reloading needs `admin`: the `operate` token may not.
    let url = tcp_url(&d);
    let ops = alerter().args(["reload", "--url", &url, "--token-file"]).arg(token_file(&cfg, "ops")).output().unwrap();
    assert!(failed(ops).contains("admin"));
    // SIGHUP's reloads are in history too.
    cfg.write(&two_rules);
    d.signal("HUP");
    wait_for(WAIT, || {
        let h = ok(via_api(&["history", "--status", "reload", "--json"]));
        h.lines().any(|l| l.contains("by SIGHUP") && l.contains("configuration reloaded")).then_some(())
    });
    let h = ok(via_api(&["history", "--status", "reload", "--json"]));
    let reloads: Vec<serde_json::Value> = h.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let said: Vec<(&str, bool)> = reloads
        .iter()
        .map(|r| (r["detail"].as_str().unwrap(), r["summary"].as_str().unwrap().starts_with("configuration reloaded")))
        .collect();
    assert_eq!(said, [("by user:root", true), ("by user:root", false), ("by SIGHUP", true)], "{h}");
    // Who may read history over TCP: a `read` token.
    let viewer = alerter()
        .args(["history", "--json", "--status", "reload", "--url", &url, "--token-file"])
        .arg(token_file(&cfg, "viewer"))
        .output()
        .unwrap();
    assert_eq!(ok(viewer).lines().count(), 3);
}

#[test]
fn no_daemon_is_a_clear_error() {
    let cfg = setup();
    let err = failed(cli(&cfg, &["status"]));
    assert!(err.contains("no alerter daemon answers at") && err.contains("api.sock"), "{err}");
}

#[test]
fn tcp_callers_need_a_token_within_its_scope() {
    let cfg = setup();
    let d = started(&cfg);
    let url = tcp_url(&d);
    let over_tcp = |token: Option<&str>, args: &[&str]| {
        let mut cmd = alerter();
        cmd.args(args).arg("--url").arg(&url);
        if let Some(t) = token {
            cmd.arg("--token-file").arg(token_file(&cfg, t));
        }
        cmd.output().unwrap()
    };
    let err = failed(over_tcp(None, &["status"]));
    assert!(err.contains("a token is needed over TCP"), "{err}");
    // Any token works for reading but `ingest`; only `operate` silences.
    ok(over_tcp(Some("viewer"), &["status"]));
    let err = failed(over_tcp(Some("hook"), &["status"]));
    assert!(err.contains("token:hook has the scope `ingest`"), "{err}");
    let err = failed(over_tcp(Some("hook"), &["silence", "add", "app=web"]));
    assert!(err.contains("token:hook has the scope `ingest`, which does not allow this (it needs `operate`)"), "{err}");
    let err = failed(over_tcp(Some("viewer"), &["silence", "add", "app=web"]));
    assert!(err.contains("needs `operate`"), "{err}");
    let id = ok(over_tcp(Some("ops"), &["silence", "add", "app=web", "-m", "from afar"]));
    let h = history(&cfg);
    assert!(
        h.iter().any(|i| i["status"] == "silence"
            && i["summary"].as_str().unwrap().contains(id.trim())
            && i["detail"] == "by token:ops: from afar"),
        "{h:#?}"
    );
    // The ingest token's one power: events, routed like a source's.
    let out =
        ok(over_tcp(Some("hook"), &["emit", "--source", "app", "-l", "app=hooked", "-l", "n=42", "from a webhook"]));
    assert_eq!(out.trim(), "accepted 1");
    wait_notified(&cfg, 42);
    let err = failed(over_tcp(Some("hook"), &["emit", "--severity", "dire", "x"]));
    assert!(err.contains("`dire` is not a severity"), "{err}");
    let err = failed(over_tcp(Some("viewer"), &["emit", "x"]));
    assert!(err.contains("needs `ingest`"), "{err}");
    let err = failed(over_tcp(Some("hook"), &["emit", "--source", "alerter", "x"]));
    assert!(err.contains("the daemon's own"), "{err}");
    // A wrong token is refused, whatever the scope it claims.
    let wrong = cfg.dir.path().join("wrong");
    std::fs::write(&wrong, "not-a-token-0123456789abcdef").unwrap();
    let out = alerter().args(["status", "--url", &url, "--token-file"]).arg(&wrong).output().unwrap();
    assert!(failed(out).contains("not one of the configured `api.tokens`"));
}

/// Runs `alerter status` and `alerter silence add` as another user: root
/// ignores file modes, so the test drops to uids that the socket's mode
/// and group do and do not admit.
#[test]
fn unix_socket_callers_are_who_the_kernel_says() {
    let cfg = setup();
    let _d = started(&cfg);
    // A copy of the binary every user can run, whatever the mode of the
    // directories above the build.
    let bin = cfg.dir.path().join("alerter-bin");
    std::fs::copy(env!("CARGO_BIN_EXE_alerter"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = socket(&cfg);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let as_user = |uid: u32, gid: u32, args: &[&str]| {
        std::process::Command::new(&bin)
            .args(args)
            .arg("--socket")
            .arg(&sock)
            .uid(uid)
            .gid(gid)
            .env("HOME", "/")
            .output()
            .unwrap()
    };
    // Not in the socket's group: the kernel refuses the connection.
    let err = failed(as_user(12345, 12345, &["status"]));
    assert!(err.contains("permission denied on") && err.contains("api.socket_group"), "{err}");
    // In the group (nogroup), not named in `api.users`: `others`, read.
    ok(as_user(65534, 65534, &["status"]));
    let err = failed(as_user(65534, 65534, &["silence", "add", "app=web"]));
    assert!(err.contains("user:nobody has the scope `read`") && err.contains("needs `operate`"), "{err}");
}

/// One raw HTTP/1.1 request on the socket. The body is written on a
/// thread of its own, so an answer the server gives before reading all of
/// it (413) is still read.
fn raw_http(sock: &std::path::Path, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&req);
    });
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    drop(s);
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status =
        text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {text}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn malformed_and_oversized_requests_get_a_4xx_with_a_message() {
    let cfg = setup();
    let _d = started(&cfg);
    let sock = socket(&cfg);
    let post = |body: &[u8]| {
        let (status, body) = raw_http(&sock, "POST", "/api/v1/silences", body);
        let error: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("a JSON error body ({e}): {body}"));
        (status, error["error"].as_str().expect("a message").to_string())
    };
    let (status, msg) = post(b"{\"matchers\": [");
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("parse the request body as JSON"), "{msg}");
    let (status, msg) = post(br#"{"matchers": 5}"#);
    assert_eq!(status, 422, "{msg}");
    let (status, msg) = post(br#"{"matchers": ["app=web"], "duration": "1h", "colour": "red"}"#);
    assert_eq!(status, 422);
    assert!(msg.contains("unknown field `colour`"), "{msg}");
    let mut huge = br#"{"matchers": ["app=web"], "duration": "1h", "comment": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 1 << 20));
    huge.extend(b"\"}");
    let (status, msg) = post(&huge);
    assert_eq!(status, 413, "{msg}");
    assert!(msg.contains("length limit"), "{msg}");
    let (status, body) = raw_http(&sock, "GET", "/api/v2/nothing", b"");
    assert_eq!(status, 404);
    assert!(body.contains("paths begin with /api/v1/"), "{body}");
    // The daemon is none the worse.
    let (status, body) = raw_http(&sock, "GET", "/api/v1/status", b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"name\":\"APIHOST\""), "{body}");
}

#[test]
fn tls_on_tcp_with_the_ca_the_client_trusts() {
    let cfg = setup();
    let dir = cfg.dir.path();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), key.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
    cfg.write(&CONFIG.replace(
        "  listen: 127.0.0.1:0\n",
        "  listen: 127.0.0.1:0\n  tls: { cert_file: {dir}/cert.pem, key_file: {dir}/key.pem }\n",
    ));
    let d = started(&cfg);
    let url = tcp_url(&d).replace("http://127.0.0.1", "https://localhost");
    let status = |ca: Option<&std::path::Path>| {
        let mut cmd = alerter();
        cmd.args(["status", "--json", "--url", &url, "--token-file"]).arg(token_file(&cfg, "viewer"));
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.output().unwrap()
    };
    let out = ok(status(Some(&dir.join("cert.pem"))));
    assert!(out.contains("\"name\": \"APIHOST\""), "{out}");
    // A certificate the client does not trust: refused before any token is sent.
    let err = failed(status(None));
    assert!(err.contains("TLS") && err.contains("certificate"), "{err}");
    // Plain HTTP to the TLS port gets nowhere either.
    let plain = url.replace("https://localhost", "http://127.0.0.1");
    let out =
        alerter().args(["status", "--url", &plain, "--token-file"]).arg(token_file(&cfg, "viewer")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// A condition from Monitoring Plugins' `check_dummy`, at the level in a
/// file, checked every second; its rule repeats every 2 s to two people
/// through two transports.
const ACK_CONFIG: &str = r#"
alerter: { name: APIHOST, state_dir: {state} }
sources:
  dummy: { type: script, shell: "exec check_dummy $(cat {dir}/level) 'disk array degraded'", interval: 1s }
transports:
  out: { type: log, path: {out} }
  second: { type: log, path: {dir}/second.jsonl }
subscribers:
  ops: { name: Operations }
  boss: { name: The boss }
rules:
  - name: array
    match: { source: dummy }
    group_interval: 1s
    repeat_interval: 2s
    notify:
      - { subscribers: [ops], via: [out] }
      - { subscribers: [boss], via: [second] }
"#;

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().with_timezone(&Utc)
}

#[test]
fn an_ack_stops_repeats_for_everyone_until_the_severity_rises() {
    let cfg = TempConfig::new(ACK_CONFIG);
    let dir = cfg.dir.path();
    std::fs::write(dir.join("level"), "1").unwrap();
    let _d = started(&cfg);
    let severities = |file: &std::path::Path| -> Vec<String> {
        util::read_jsonl(file)
            .iter()
            .filter(|n| n["rule"] == "array")
            .map(|n| n["severity"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    // It repeats, to both.
    for file in [cfg.out.clone(), dir.join("second.jsonl")] {
        wait_for(WAIT, || (severities(&file).len() >= 2).then_some(()));
    }
    let page: serde_json::Value = serde_json::from_str(&ok(cli(&cfg, &["alerts", "--json"]))).unwrap();
    assert_eq!(page["total"], 1);
    let alert = &page["alerts"][0];
    assert_eq!((alert["rule"].as_str(), alert["severity"].as_str()), (Some("array"), Some("warning")));
    let id = alert["id"].as_str().unwrap();

    let out = ok(cli(&cfg, &["ack", &id[..8], "-m", "replacing the disk"]));
    assert!(out.starts_with("acknowledged 1 alert\n"), "{out}");
    let page: serde_json::Value = serde_json::from_str(&ok(cli(&cfg, &["alerts", "--json"]))).unwrap();
    let ack = &page["alerts"][0]["ack"];
    assert_eq!(ack["by"], "user:root");
    assert_eq!(ack["comment"], "replacing the disk");
    let acked_at = time(&ack["at"]);
    let text = ok(cli(&cfg, &["alerts"]));
    assert!(text.contains("acked by user:root: replacing the disk"), "{text}");

    // The next repeat falls due and is held back, for both transports;
    // nothing about the alert was queued after the ack.
    let h = wait_for(WAIT, || {
        let h = history(&cfg);
        h.iter()
            .any(|i| i["status"] == "suppressed" && i["detail"] == "acknowledged by user:root: replacing the disk")
            .then_some(h)
    });
    let after: Vec<_> = h
        .iter()
        .filter(|i| i["rule"] == "array" && i["transport"].is_string() && time(&i["time"]) > acked_at)
        .collect();
    assert!(after.is_empty(), "no repeats after the ack: {after:#?}");
    let ack_record = h.iter().find(|i| i["status"] == "ack").expect("the ack is in history");
    assert_eq!(ack_record["detail"], "by user:root: replacing the disk");
    assert_eq!(ack_record["rule"], "array");

    // Critical is above what was acknowledged: both are told at once.
    std::fs::write(dir.join("level"), "2").unwrap();
    for file in [cfg.out.clone(), dir.join("second.jsonl")] {
        wait_for(WAIT, || severities(&file).contains(&"critical".to_string()).then_some(()));
    }
    let page: serde_json::Value = serde_json::from_str(&ok(cli(&cfg, &["alerts", "--json"]))).unwrap();
    assert!(page["alerts"][0]["ack"].is_null(), "re-opened: {page:#}");
    assert_eq!(page["alerts"][0]["severity"], "critical");
}

/// One HTTP/1.1 GET over TCP: the status and the body, or `None` when
/// nothing answers (yet).
fn try_http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    // Prometheus answers in chunks; the tests only search the text.
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|| panic!("nothing answers at {addr}"))
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    let cfg = setup();
    cfg.write(&CONFIG.replace("  listen: 127.0.0.1:0\n", "  listen: 127.0.0.1:0\n  metrics_listen: 127.0.0.1:0\n"));
    let d = started(&cfg);
    let addr = wait_for(WAIT, || {
        d.stderr_so_far()
            .lines()
            .find(|l| l.contains("metrics listening"))
            .map(|l| l.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().to_string())
    });
    log_errors(&cfg, &[("web", 1), ("web", 2), ("db", 3), ("db", 4), ("db", 5)]);
    wait_notified(&cfg, 5);
    // The counters say what the test caused: five events, five deliveries.
    let text = wait_for(WAIT, || {
        let (status, text) = http_get(&addr, "/metrics");
        assert_eq!(status, 200);
        text.contains(r#"alerter_notifications_total{outcome="sent",transport="out"} 5"#).then_some(text)
    });
    assert!(text.contains(r#"alerter_events_total{severity="warning",source="app"} 5"#), "{text}");
    assert!(text.contains(r#"alerter_delivery_latency_seconds_count{transport="out"} 5"#), "{text}");
    assert!(text.contains(r#"alerter_outbox_pending{transport="out"} 0"#), "{text}");
    assert!(text.contains(r#"alerter_source_up{source="app"} 1"#), "{text}");
    assert!(text.contains("alerter_store_errors_total 0"), "{text}");

    // promtool finds nothing to complain about.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(&addr, "/readyz"), (200, "ready\n".to_string()));

    // A real Prometheus scrapes it and sees the same numbers.
    let dir = cfg.dir.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("global: {{ scrape_interval: 1s }}\nscrape_configs:\n  - job_name: alerter\n    static_configs: [{{ targets: ['{addr}'] }}]\n"),
    )
    .unwrap();
    let _prometheus = Killed(
        std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package)"),
    );
    let prom = format!("127.0.0.1:{port}");
    let value = |query: &str| -> Option<String> {
        let (status, body) = try_http_get(&prom, &format!("/api/v1/query?query={query}"))?;
        if status != 200 {
            return None;
        }
        // The body may be chunked: the JSON starts at the first `{`.
        let json = &body[body.find('{')?..=body.rfind('}')?];
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        v["data"]["result"][0]["value"][1].as_str().map(str::to_string)
    };
    let events = wait_for(Duration::from_secs(90), || value("alerter_events_total%7Bsource%3D%22app%22%7D"));
    assert_eq!(events, "5");
    let sent = value("alerter_notifications_total%7Boutcome%3D%22sent%22%7D").unwrap();
    assert_eq!(sent, "5");
    assert_eq!(value("up%7Bjob%3D%22alerter%22%7D").unwrap(), "1");
}
