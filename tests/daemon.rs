//! End-to-end: the real `alerter` binary as a daemon on a temporary config
//! and state directory, driven by real signals.

mod util;

use std::time::Duration;

use util::{Daemon, TempConfig, wait_for};

const RULES_V1: &str = r#"
alerter:
  name: E2EHOST
  state_dir: {state}
transports:
  file:
    type: log
    path: {out}
rules:
  - name: self-v1
    match: { source: alerter }
    notify:
      - workgroup: true
        via: [file]
"#;

const RULES_V2: &str = r#"
alerter:
  name: E2EHOST
  state_dir: {state}
transports:
  file:
    type: log
    path: {out}
rules:
  - name: self-v2
    match: { source: alerter }
    template:
      title: "v2: {{ summary }}"
    notify:
      - workgroup: true
        via: [file]
"#;

#[test]
fn start_reload_bad_then_good_then_terminate() {
    let cfg = TempConfig::new(RULES_V1);
    let mut daemon = Daemon::start(&cfg.path, &[]);

    // The daemon's own "started" event goes through a rule to the log transport.
    let started = wait_for(Duration::from_secs(20), || {
        cfg.notifications().into_iter().find(|n| n["title"].as_str().is_some_and(|t| t.contains("started on E2EHOST")))
    });
    assert_eq!(started["rule"], "self-v1");
    assert_eq!(started["recipients"][0]["id"], "*");

    // A broken config: rejected, errors logged, the old rules keep working
    // (the rejection itself is delivered through rule self-v1).
    cfg.write("rules:\n  - name: [unclosed\n");
    daemon.signal("HUP");
    let failed = wait_for(Duration::from_secs(20), || {
        cfg.notifications()
            .into_iter()
            .find(|n| n["title"].as_str().is_some_and(|t| t.contains("rejected a new configuration")))
    });
    assert_eq!(failed["rule"], "self-v1", "the old configuration is still in charge");
    let log = daemon.stderr_so_far();
    assert!(log.contains("YAML syntax error"), "the error is logged with its cause:\n{log}");
    let at_line = format!("{}:", cfg.path.display());
    let located = log.lines().any(|l| {
        l.split_once(&at_line).is_some_and(|(_, rest)| rest.split(':').take(2).all(|n| n.parse::<u32>().is_ok()))
    });
    assert!(located, "with file:line:column:\n{log}");

    // A good config with a new rule: accepted, and the new rule is active.
    cfg.write(RULES_V2);
    daemon.signal("HUP");
    let reloaded = wait_for(Duration::from_secs(20), || {
        cfg.notifications()
            .into_iter()
            .find(|n| n["title"].as_str().is_some_and(|t| t.contains("reloaded its configuration")))
    });
    assert_eq!(reloaded["rule"], "self-v2");
    assert!(reloaded["title"].as_str().unwrap().starts_with("v2: "), "the new template is used");

    // SIGTERM: a clean exit with status 0.
    daemon.signal("TERM");
    let status = daemon.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", daemon.stderr_so_far());
    assert!(daemon.stderr_so_far().contains("stopped"));
}

#[test]
fn sigint_also_stops_cleanly_and_bad_config_exits_78() {
    let cfg = TempConfig::new(RULES_V1);
    let mut daemon = Daemon::start(&cfg.path, &[]);
    wait_for(Duration::from_secs(20), || cfg.notifications().into_iter().next());
    daemon.signal("INT");
    assert_eq!(daemon.wait(Duration::from_secs(20)).code(), Some(0));

    cfg.write("rules: 5\n");
    let mut bad = Daemon::start(&cfg.path, &[]);
    assert_eq!(bad.wait(Duration::from_secs(20)).code(), Some(78));
    assert!(bad.stderr_so_far().contains("expected a list"), "{}", bad.stderr_so_far());
}

#[test]
fn unwritable_state_dir_is_a_clear_error() {
    let cfg = TempConfig::new(RULES_V1);
    let blocker = cfg.dir.path().join("blocker");
    std::fs::write(&blocker, "").unwrap();
    let text = RULES_V1
        .replace("{state}", &blocker.join("state").display().to_string())
        .replace("{out}", &cfg.out.display().to_string());
    std::fs::write(&cfg.path, text).unwrap();
    let mut d = Daemon::start(&cfg.path, &[]);
    assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(1));
    assert!(d.stderr_so_far().contains("cannot create state directory"), "{}", d.stderr_so_far());
    assert!(d.stderr_so_far().contains("alerter.state_dir"));
}

/// A plugin directory that does not exist is skipped by the scan; the
/// daemon says so at start and at each reload, with the place in the config.
#[test]
fn a_missing_plugin_directory_is_warned_about_at_start_and_reload() {
    let with_dir = |dir: &str| {
        RULES_V1.replace("  state_dir: {state}\n", &format!("  state_dir: {{state}}\n  plugin_dirs: [{dir}]\n"))
    };
    let cfg = TempConfig::new(&with_dir("no-such-plugins"));
    let mut daemon = Daemon::start(&cfg.path, &[]);
    let expect = |dir: &str| {
        format!(
            "{}:5:17: warning: plugin directory {} does not exist",
            cfg.path.display(),
            cfg.dir.path().join(dir).display()
        )
    };
    let at_start = expect("no-such-plugins");
    wait_for(Duration::from_secs(20), || daemon.stderr_so_far().contains(&at_start).then_some(()));

    cfg.write(&with_dir("still-missing"));
    daemon.signal("HUP");
    let at_reload = expect("still-missing");
    wait_for(Duration::from_secs(20), || daemon.stderr_so_far().contains(&at_reload).then_some(()));
    daemon.signal("TERM");
    assert_eq!(daemon.wait(Duration::from_secs(20)).code(), Some(0), "{}", daemon.stderr_so_far());
}

/// `alerter run` with no `-c`, as the README's first command runs it: the
/// embedded default watches the disks and the auth log, waits for an auth
/// log that does not exist yet, and reports failed logins on standard
/// output. `ALERTER_AUTH_LOG` points it at a file of the test's own (an
/// admin uses it for a log elsewhere), and `STATE_DIRECTORY` keeps the state
/// out of /var/lib/alerter (the default as root).
#[test]
fn the_embedded_default_watches_disks_and_the_auth_log() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let auth_log = dir.path().join("auth.log");
    let state = dir.path().join("state");
    let mut cmd = util::alerter();
    cmd.arg("run")
        .env_remove("ALERTER_CONFIG")
        .env("ALERTER_AUTH_LOG", &auth_log)
        .env("STATE_DIRECTORY", &state)
        .env("HOME", dir.path())
        .env("XDG_STATE_HOME", dir.path().join("xdg"));
    let mut daemon = Daemon::spawn(cmd);

    // Both sources start; the missing auth log is waited for, not an error.
    let waiting = format!("{} does not exist yet", auth_log.display());
    wait_for(Duration::from_secs(20), || {
        let log = daemon.stderr_so_far();
        (log.contains("source starting source=disks")
            && log.contains("source starting source=auth")
            && log.contains(&waiting))
        .then_some(())
    });
    assert!(state.join("alerter.db").exists(), "the state is where STATE_DIRECTORY says");

    // The file appears (rsyslog installed, say): read from its start.
    let lines = [
        "Nov 26 10:00:01 fs sshd[812]: Failed password for invalid user admin from 203.0.113.9 port 50022 ssh2",
        "Nov 26 10:00:02 fs CRON[2000]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
        "Nov 26 10:00:03 fs sudo:    alice : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id",
        "Nov 26 10:00:04 fs sshd[815]: Accepted publickey for alice from 10.0.0.2 port 5000 ssh2: ED25519 SHA256:x",
        "Nov 26 10:00:05 fs su[1201]: FAILED SU (to root) bob on pts/1",
    ];
    let mut f = std::fs::File::create(&auth_log).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    drop(f);

    // Batched per host: one notification on standard output with the three
    // failures (group_wait 10s), and nothing for the normal lines.
    let notifications = |d: &Daemon| -> Vec<serde_json::Value> {
        d.stdout_so_far().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    let logins =
        wait_for(Duration::from_secs(40), || notifications(&daemon).into_iter().find(|n| n["rule"] == "failed-logins"));
    let mut summaries: Vec<&str> =
        logins["alerts"].as_array().unwrap().iter().map(|a| a["summary"].as_str().unwrap()).collect();
    summaries.sort();
    assert_eq!(
        summaries,
        [
            "failed ssh login as admin from 203.0.113.9",
            "failed su to root by bob",
            "failed sudo by alice (3 wrong passwords)"
        ],
        "{logins}"
    );
    assert_eq!(logins["alerts"][0]["labels"]["file"], auth_log.display().to_string());
    let started = notifications(&daemon).into_iter().find(|n| n["rule"] == "alerter-itself");
    assert!(started.is_some_and(|n| n["title"].as_str().unwrap().contains("started")), "{}", daemon.stdout_so_far());

    daemon.signal("TERM");
    assert_eq!(daemon.wait(Duration::from_secs(20)).code(), Some(0), "{}", daemon.stderr_so_far());
    let failures = notifications(&daemon).into_iter().filter(|n| n["rule"] == "failed-logins").count();
    assert_eq!(failures, 1, "the two normal lines are not reported:\n{}", daemon.stdout_so_far());
}

/// The listener a popup test talks to, on loopback ports of its own.
fn popup_listener(name: &str) -> (util::netns::Proc, u16) {
    let port = free_port();
    (listener_on(name, port), port)
}

/// A loopback TCP port free at the time of asking.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A popup listener on a given loopback port.
fn listener_on(name: &str, port: u16) -> util::netns::Proc {
    let listen = util::netns::Proc::spawn({
        let mut c = util::alerter();
        c.args(["listen", "--name", name, "--bind", "127.0.0.1", "-p", &port.to_string()])
            .args(["--datagram-port", "0", "--name-port", "0", "--json", "--no-desktop", "--history", "/dev/null"])
            .env("ALERTER_LOG", "info");
        c
    });
    util::netns::until(Duration::from_secs(30), "the listener", || listen.stderr().contains("listening"));
    listen
}

/// Summaries of the notifications in the log transport's file, one per alert.
fn summaries(cfg: &TempConfig) -> Vec<String> {
    cfg.notifications()
        .iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["summary"].as_str().map(str::to_string))
        .collect()
}

/// Issue 10, acceptance 3: the state directory fills up while 20 log lines
/// arrive. `store_failing` reaches a popup and the log file at once (outside
/// the outbox), the failure is logged once with a count rather than per
/// attempt, and once space is freed all 20 go out, each exactly once; with
/// `kill_while_full`, the daemon is killed (SIGKILL) while the disk is full
/// and restarted after space is freed, and the sources' saved positions
/// (never ahead of what was committed) make the 20 go out then.
fn full_disk(kill_while_full: bool) {
    let cfg = TempConfig::new("");
    let app_log = cfg.dir.path().join("app.log");
    std::fs::write(&app_log, "").unwrap();
    let fs = util::Tmpfs::mount(&cfg.state, "2m");
    let (listen, port) = popup_listener("ADMIN-PC");
    cfg.write(&format!(
        r#"
alerter: {{ name: E2EHOST, state_dir: {{state}} }}
sources:
  app:
    type: log
    paths: [{log}]
    start_at: beginning
    patterns:
      - {{ name: error, regex: 'ERROR (?P<n>[0-9]+)', severity: warning }}
transports:
  out: {{ type: log, path: {{out}} }}
  popup: {{ type: messenger, hosts: {{ ADMIN-PC: "127.0.0.1:{port}" }}, dns: false }}
subscribers:
  admin: {{ machine: ADMIN-PC }}
rules:
  - {{ name: app, match: {{ source: app }}, notify: [{{ subscribers: [admin], via: [out] }}] }}
  - name: store
    match: {{ source: alerter, labels: {{ event: store_failing }} }}
    notify: [{{ subscribers: [admin], via: [popup, out] }}]
"#,
        log = app_log.display()
    ));
    let append = |from: usize, to: usize| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&app_log).unwrap();
        for i in from..to {
            writeln!(f, "ERROR {i} something broke").unwrap();
        }
    };
    let mut d = Daemon::start(&cfg.path, &[]);
    // One line through the whole path first: the store works, the source
    // has a saved position.
    wait_for(Duration::from_secs(30), || d.stderr_so_far().contains("alerter started").then_some(()));
    append(0, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !summaries(&cfg).iter().any(|s| s.contains("ERROR 0")) {
        assert!(
            std::time::Instant::now() < deadline,
            "ERROR 0 not delivered: {:?}\n{}",
            cfg.notifications(),
            d.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    fs.fill();
    append(1, 21);
    let failing = |s: &String| s.contains("cannot save its state");
    wait_for(Duration::from_secs(30), || {
        let popup =
            listen.json_lines().iter().any(|p| p["text"].as_str().is_some_and(|t| t.contains("cannot save its state")));
        (popup && summaries(&cfg).iter().any(failing)).then_some(())
    });
    assert!(
        !summaries(&cfg).iter().any(|s| s.contains("ERROR 1 ")),
        "nothing of the 20 can have been committed while the disk is full"
    );
    // A few retries later, still one line about it: logged with a count,
    // not per attempt.
    wait_for(Duration::from_secs(30), || d.stderr_so_far().contains("holding what was decided").then_some(()));
    let before = d.stderr_so_far().matches("cannot save state").count();
    std::thread::sleep(Duration::from_secs(3));
    let logged = d.stderr_so_far().matches("cannot save state").count();
    assert_eq!(before, 1, "{}", d.stderr_so_far());
    assert_eq!(logged, 1, "retries within the log interval are counted, not logged:\n{}", d.stderr_so_far());

    if kill_while_full {
        d.signal("KILL");
        d.wait(Duration::from_secs(10));
        fs.free();
        d = Daemon::start(&cfg.path, &[]);
    } else {
        fs.free();
    }
    let want: Vec<String> = (0..21).map(|i| format!("ERROR {i} ")).collect();
    wait_for(Duration::from_secs(60), || {
        let got = summaries(&cfg);
        want.iter().all(|w| got.iter().any(|s| s.contains(w.as_str()))).then_some(())
    });
    if !kill_while_full {
        // Announced once the store has worked for 10 s.
        wait_for(Duration::from_secs(60), || {
            summaries(&cfg).iter().any(|s| s.contains("saves its state again")).then_some(())
        });
    }
    d.signal("TERM");
    d.wait(Duration::from_secs(30));
    let got = summaries(&cfg);
    for w in &want {
        let n = got.iter().filter(|s| s.contains(w.as_str())).count();
        assert_eq!(n, 1, "`{w}` delivered {n} times, not once: {got:#?}");
    }
    assert_eq!(got.iter().filter(|s| failing(s)).count(), 1, "store_failing written once: {got:#?}");
    let popups = listen
        .json_lines()
        .iter()
        .filter(|p| p["text"].as_str().is_some_and(|t| t.contains("cannot save its state")))
        .count();
    assert_eq!(popups, 1, "one store_failing popup");
}

#[test]
fn a_full_disk_holds_alerts_raises_store_failing_and_loses_nothing() {
    full_disk(false);
}

#[test]
fn a_kill_while_the_disk_is_full_loses_nothing() {
    full_disk(true);
}

/// What `alerter history --json` says of the notifications of `rule`
/// (nothing before the daemon has made its database).
fn history(cfg: &TempConfig, rule: &str) -> Vec<serde_json::Value> {
    let out = util::alerter().args(["history", "--json", "-n", "100000", "-c"]).arg(&cfg.path).output().unwrap();
    if !out.status.success() {
        assert!(String::from_utf8_lossy(&out.stderr).contains("no state"), "{}", String::from_utf8_lossy(&out.stderr));
        return Vec::new();
    }
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["rule"] == rule)
        .collect()
}

/// Issue 10, acceptance 4: 300 popups wait in the outbox (their receiver is
/// down) when a page of the outbox's rows is overwritten with garbage. The
/// daemon starts anyway: it salvages what it can read into a fresh
/// database, moves the damaged one aside, says so in a popup and in the log
/// file, and the notifications that survived go out, each once.
#[test]
fn a_garbage_page_in_the_outbox_is_salvaged_and_the_rest_still_goes_out() {
    let cfg = TempConfig::new("");
    let app_log = cfg.dir.path().join("app.log");
    std::fs::write(&app_log, "").unwrap();
    // A port nobody listens on yet: the popups stay pending.
    let port = free_port();
    cfg.write(&format!(
        r#"
alerter: {{ name: E2EHOST, state_dir: {{state}} }}
sources:
  app:
    type: log
    paths: [{log}]
    start_at: beginning
    patterns:
      - {{ name: error, regex: 'ERROR (?P<n>[0-9]+)', severity: warning }}
transports:
  out: {{ type: log, path: {{out}} }}
  popup:
    type: messenger
    hosts: {{ ADMIN-PC: "127.0.0.1:{port}" }}
    dns: false
    retry: {{ initial: 1s, max: 1s }}
    # Every one of the 300 is to wait in the outbox, none folded.
    budget: unlimited
subscribers:
  admin: {{ machine: ADMIN-PC }}
rules:
  - {{ name: app, match: {{ source: app }}, notify: [{{ subscribers: [admin], via: [popup] }}] }}
  - name: damage
    match: {{ source: alerter, labels: {{ event: store_salvaged }} }}
    notify: [{{ subscribers: [admin], via: [popup, out] }}]
"#,
        log = app_log.display()
    ));
    let lines: String =
        (0..300).map(|i| format!("ERROR {i:03} the upstream at 10.0.0.{} timed out after 30 s\n", i % 250)).collect();
    std::fs::write(&app_log, lines).unwrap();
    let mut d = Daemon::start(&cfg.path, &[]);
    wait_for(Duration::from_secs(60), || {
        let h = history(&cfg, "app");
        (h.len() == 300 && h.iter().all(|n| n["status"] == "pending" && n["attempts"].as_u64() >= Some(1)))
            .then_some(())
    });
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).success());

    // The clean stop checkpointed the WAL: the file holds every row.
    let db = cfg.state.join("alerter.db");
    assert!(!cfg.state.join("alerter.db-wal").exists());
    let mut bytes = std::fs::read(&db).unwrap();
    let page = |p: usize| 4096 * p..4096 * (p + 1);
    let victim = (1..bytes.len() / 4096)
        .find(|&p| {
            let b = &bytes[page(p)];
            let has = |s: &[u8]| b.windows(s.len()).any(|w| w == s);
            b[0] == 0x0d && has(b"ERROR 150 ") && has(br#""transport":"popup""#)
        })
        .expect("the outbox page holding ERROR 150");
    bytes[page(victim)].fill(0x5a);
    std::fs::write(&db, &bytes).unwrap();

    let listen = listener_on("ADMIN-PC", port);
    let mut d = Daemon::start(&cfg.path, &[]);
    let damaged = "found its state database damaged";
    wait_for(Duration::from_secs(60), || summaries(&cfg).iter().any(|s| s.contains(damaged)).then_some(()));
    let said = summaries(&cfg).into_iter().find(|s| s.contains(damaged)).unwrap();
    assert!(said.contains("moved aside to") && said.contains("undelivered notifications"), "{said}");

    let texts = || -> Vec<String> {
        listen.json_lines().iter().filter_map(|p| p["text"].as_str().map(str::to_string)).collect()
    };
    // Everything kept goes out: every line but those on the garbage page.
    let kept = wait_for(Duration::from_secs(60), || {
        let got: Vec<usize> =
            (0..300).filter(|i| texts().iter().any(|t| t.contains(&format!("ERROR {i:03} ")))).collect();
        let pending = history(&cfg, "app").iter().filter(|n| n["status"] != "sent").count();
        (pending == 0 && got.len() >= 250).then_some(got)
    });
    assert!(!kept.contains(&150), "ERROR 150 was on the garbage page");
    assert!(kept.len() < 300, "a page of rows is lost: {}", kept.len());
    assert!(texts().iter().any(|t| t.contains(damaged)), "the popup says so too");
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).success());
    for i in &kept {
        let n = texts().iter().filter(|t| t.contains(&format!("ERROR {i:03} "))).count();
        assert_eq!(n, 1, "ERROR {i:03} popped up {n} times");
    }
    let aside: Vec<_> = std::fs::read_dir(&cfg.state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("alerter.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(cfg.state.join(&aside[0])).unwrap(), bytes, "moved aside as it was found");
    assert!(d.stderr_so_far().contains("state database damaged"), "{}", d.stderr_so_far());
}

/// Issue 10, acceptance 4, the other kind of damage: the database is no
/// SQLite file at all. The daemon starts on a fresh one and says so.
#[test]
fn a_state_file_that_is_no_database_is_moved_aside_and_announced() {
    let cfg = TempConfig::new(RULES_V1);
    std::fs::create_dir_all(&cfg.state).unwrap();
    let junk = "<html>not a database</html>\n".repeat(300);
    std::fs::write(cfg.state.join("alerter.db"), &junk).unwrap();
    let mut d = Daemon::start(&cfg.path, &[]);
    let said = wait_for(Duration::from_secs(30), || {
        summaries(&cfg).into_iter().find(|s| s.contains("found its state database damaged"))
    });
    assert!(said.contains("not a database") && said.contains("an unknown number lost"), "{said}");
    wait_for(Duration::from_secs(30), || {
        summaries(&cfg).iter().any(|s| s.contains("started on E2EHOST")).then_some(())
    });
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).success());
    let aside: Vec<_> = std::fs::read_dir(&cfg.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("alerter.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), junk);
    assert!(history(&cfg, "self-v1").len() >= 2, "the fresh database records what went out");
}
