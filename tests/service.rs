//! alerter as a system service: the sd_notify protocol and watchdog as
//! systemd sees them (through a socket the test reads, as systemd's own),
//! logs in the journal's format, and the Debian package built, installed,
//! checked where Debian expects each file, verified by systemd-analyze and
//! removed.
//!
//! The package test installs into this machine (as CI's root does) and
//! removes the package again, purging it; on a machine where systemd is
//! running it also starts and stops the service, as any package would.

mod util;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use util::{Daemon, TempConfig, alerter, wait_for};

const CONFIG: &str = r#"
alerter:
  name: SVCHOST
  state_dir: {state}
transports:
  file:
    type: log
    path: {out}
rules:
  - name: self
    match: { source: alerter }
    notify:
      - workgroup: true
        via: [file]
"#;

/// What the daemon sent to the notify socket, each datagram with when it came.
#[derive(Clone, Default)]
struct Notes(Arc<Mutex<Vec<(Instant, String)>>>);

impl Notes {
    /// Reads datagrams from `sock` into the list until the test ends.
    fn collect(sock: UnixDatagram) -> Notes {
        let notes = Notes::default();
        let sink = notes.0.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                sink.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
        });
        notes
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.0.lock().unwrap().clone()
    }

    /// The index of the first datagram from `from` on that has `line` as one
    /// of its lines, waiting for it.
    fn wait_line(&self, from: usize, line: &str) -> usize {
        wait_for(Duration::from_secs(30), || {
            self.all().iter().enumerate().skip(from).find(|(_, (_, d))| d.lines().any(|l| l == line)).map(|(i, _)| i)
        })
    }

    /// The times of the watchdog pings among datagrams `from..to`.
    fn pings(&self, from: usize, to: usize) -> Vec<Instant> {
        self.all()[from..to].iter().filter(|(_, d)| d.lines().any(|l| l == "WATCHDOG=1")).map(|(t, _)| *t).collect()
    }
}

#[test]
fn the_daemon_tells_systemd_ready_reloading_stopping_and_pings_the_watchdog_from_its_loop() {
    let cfg = TempConfig::new(CONFIG);
    let socket = cfg.dir.path().join("notify.sock");
    let notes = Notes::collect(UnixDatagram::bind(&socket).unwrap());
    let mut cmd = alerter();
    cmd.arg("run")
        .arg("-c")
        .arg(&cfg.path)
        .env("NOTIFY_SOCKET", &socket)
        // A 2 s watchdog: pings are due every second.
        .env("WATCHDOG_USEC", "2000000")
        .env("ALERTER_TEST_STALL_ON_SIGUSR2", "5s");
    let mut daemon = Daemon::spawn(cmd);

    // Ready once it runs: the `started` event has gone through the rules.
    let ready = notes.wait_line(0, "READY=1");
    let first = &notes.all()[ready].1;
    assert!(first.contains("STATUS=running: 1 rules, 0 sources, 1 transports"), "{first:?}");

    // Pings at the configured rate: one a second, never a gap the
    // watchdog (2 s) would act on, never faster than asked.
    let fourth = wait_for(Duration::from_secs(30), || {
        let n = notes.all().len();
        let pings = notes.pings(ready, n);
        (pings.len() >= 4).then_some(n)
    });
    let pings = notes.pings(ready, fourth);
    for w in pings.windows(2).skip(1) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(800) && gap < Duration::from_secs(2), "ping gap {gap:?}");
    }

    // A reload: RELOADING=1 (with the monotonic time systemd 253 wants),
    // then READY=1 again.
    daemon.signal("HUP");
    let reloading = notes.wait_line(fourth, "RELOADING=1");
    assert!(notes.all()[reloading].1.contains("MONOTONIC_USEC="), "{:?}", notes.all()[reloading].1);
    let ready_again = notes.wait_line(reloading, "READY=1");
    assert!(notes.all()[ready_again].1.contains("STATUS=running"), "{:?}", notes.all()[ready_again].1);

    // The engine loop blocked (the test hook): no pings while it is, so
    // systemd would restart it; pings again once it turns.
    daemon.signal("USR2");
    let blocked = notes.wait_line(ready_again, "STATUS=engine loop blocked by a test hook");
    let since = notes.all()[blocked].0;
    // 4 s of the 5 s block: four pings were due in it.
    let quiet_until = since + Duration::from_secs(4);
    while Instant::now() < quiet_until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let during: Vec<_> = notes.all()[blocked..].iter().filter(|(t, _)| *t < quiet_until).cloned().collect();
    assert!(
        during.iter().all(|(_, d)| !d.lines().any(|l| l == "WATCHDOG=1")),
        "pings while the engine loop was blocked: {during:?}"
    );
    let resumed = notes.wait_line(blocked + 1, "WATCHDOG=1");
    assert!(notes.all()[resumed].0 >= since + Duration::from_secs(4));

    // Shutdown: STOPPING=1, then a clean exit.
    daemon.signal("TERM");
    notes.wait_line(resumed, "STOPPING=1");
    assert!(daemon.wait(Duration::from_secs(30)).success(), "{}", daemon.stderr_so_far());
    // Nothing after the daemon said it was stopping said it was ready.
    let stopping = notes.wait_line(resumed, "STOPPING=1");
    assert!(notes.all()[stopping..].iter().all(|(_, d)| !d.contains("READY=1")));
}

#[test]
fn the_receiver_tells_systemd_when_it_listens_and_when_it_stops() {
    // `alerter listen` as alerter-listen.service runs it (Type=notify), on
    // a free loopback port instead of 139.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let notes = Notes::collect(UnixDatagram::bind(&socket).unwrap());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = alerter();
    cmd.args(["listen", "--name", "WKSTN", "--bind", "127.0.0.1", "-p", &port.to_string()])
        .args(["--datagram-port", "0", "--name-port", "0", "--no-desktop"])
        .arg("--history")
        .arg(dir.path().join("messages.jsonl"))
        .env("NOTIFY_SOCKET", &socket)
        .env("WATCHDOG_USEC", "1000000");
    let mut listener = Daemon::spawn(cmd);
    let ready = notes.wait_line(0, "READY=1");
    assert!(notes.all()[ready].1.contains("STATUS=receiving messages for WKSTN"), "{:?}", notes.all()[ready]);
    // Bound before it says so: the port takes a connection now.
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("ready, but not listening");
    notes.wait_line(ready, "WATCHDOG=1");
    listener.signal("TERM");
    notes.wait_line(ready, "STOPPING=1");
    assert!(listener.wait(Duration::from_secs(30)).success(), "{}", listener.stderr_so_far());
}

#[test]
fn without_the_test_hook_sigusr2_keeps_its_default_action() {
    // No NOTIFY_SOCKET and no hook: SIGUSR2 keeps its default action (the
    // hook is for tests only), and the daemon runs as before.
    let cfg = TempConfig::new(CONFIG);
    let mut daemon = Daemon::start(&cfg.path, &[]);
    wait_for(Duration::from_secs(30), || daemon.stderr_so_far().contains("alerter started").then_some(()));
    daemon.signal("USR2");
    let status = daemon.wait(Duration::from_secs(30));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(nix::sys::signal::Signal::SIGUSR2 as i32));
}

/// Runs the daemon with standard error on a pipe, `JOURNAL_STREAM` naming
/// that pipe (as systemd names the journal's stream) or not, until it has
/// logged its start; returns what it logged.
fn logs_with_journal_stream(matching: bool) -> String {
    // A plugin directory that does not exist: a warning at start, so
    // lines of two priorities.
    let cfg = TempConfig::new(&CONFIG.replace("  state_dir:", "  plugin_dirs: [{dir}/no-such-plugins]\n  state_dir:"));
    let (reader, writer) = std::io::pipe().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&writer);
    let meta = std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap();
    let stream =
        if matching { format!("{}:{}", meta.dev(), meta.ino()) } else { format!("{}:{}", meta.dev(), meta.ino() + 1) };
    let mut child = alerter()
        .arg("run")
        .arg("-c")
        .arg(&cfg.path)
        .env("ALERTER_LOG", "info")
        .env("JOURNAL_STREAM", stream)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(writer)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(reader).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("alerter started") {
            break;
        }
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    assert!(child.wait().unwrap().success());
    seen
}

#[test]
fn logs_on_the_journal_stream_carry_priorities_and_no_time_of_their_own() {
    let journal = logs_with_journal_stream(true);
    let started = journal.lines().find(|l| l.contains("alerter started")).expect(&journal);
    assert!(started.starts_with("<6>"), "{started:?}");
    let warning = journal.lines().find(|l| l.contains("no-such-plugins")).expect(&journal);
    assert!(warning.starts_with("<4>"), "{warning:?}");
    // No timestamp, level or colour: journald records those itself.
    for line in journal.lines() {
        assert!(line.starts_with('<') && !line[3..].starts_with("20"), "{line:?}");
        assert!(!line.contains("INFO") && !line.contains("WARN") && !line.contains('\x1b'), "{line:?}");
    }

    // A JOURNAL_STREAM that names another stream (inherited by a child
    // whose stderr is elsewhere) is not believed: the usual lines.
    let plain = logs_with_journal_stream(false);
    let started = plain.lines().find(|l| l.contains("alerter started")).expect(&plain);
    assert!(started.starts_with("20") && started.contains("INFO"), "{started:?}");
}

#[test]
fn man_and_completions_come_from_the_command_line_definitions() {
    // `alerter man` prints alerter(1) with the sections the definitions lack.
    let out = alerter().arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    for section in [
        ".TH alerter 1",
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH FILES",
        ".SH ENVIRONMENT",
        ".SH SIGNALS",
        ".SH \"EXIT STATUS\"",
    ] {
        assert!(page.contains(section), "no {section} in alerter(1)");
    }
    // --dir writes one page per command, nested ones too.
    let dir = tempfile::tempdir().unwrap();
    let out = alerter().arg("man").arg("--dir").arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    for page in ["alerter.1", "alerter-run.1", "alerter-silence-add.1", "alerter-notice-cancel.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie"), "{page} is not roff");
    }
    // The hidden plugin host is nobody's business.
    assert!(!dir.path().join("alerter-plugin-host.1").exists());

    // Completions for each shell name the commands.
    for (shell, marker) in
        [("bash", "complete -F _alerter"), ("zsh", "#compdef alerter"), ("fish", "complete -c alerter")]
    {
        let out = alerter().args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker) && script.contains("silence"), "{shell} completions: {}", &script[..200]);
    }
    let bad = alerter().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// Runs a command, returning its standard output; panics with both
/// streams if it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Purges the package when the test ends, however it ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "alerter"]).output();
    }
}

#[test]
fn the_deb_installs_where_debian_expects_verifies_and_removes_keeping_the_conffile() {
    // Built as a release would be: the release binary, stripped.
    let built = run(Command::new("bash").arg(util::repo().join("contrib/deb/build.sh")).current_dir(util::repo()));
    let deb = PathBuf::from(built.lines().last().unwrap().trim());
    assert!(deb.extension().is_some_and(|e| e == "deb") && deb.exists(), "{built}");

    let _purge = Purge;
    let _ = Command::new("dpkg").args(["--purge", "alerter"]).output();
    run(Command::new("dpkg").arg("-i").arg(&deb));

    // The binary, on PATH, the version of this tree, stripped.
    let version = run(Command::new("/usr/bin/alerter").arg("--version"));
    assert_eq!(version.trim(), format!("alerter {}", env!("CARGO_PKG_VERSION")));
    let sections = run(Command::new("readelf").args(["-S", "--wide", "/usr/bin/alerter"]));
    // (`.debug_gdb_scripts` is loaded, not debug information, and stays.)
    for section in [".symtab", ".debug_info", ".debug_line"] {
        assert!(!sections.contains(section), "the packaged binary is not stripped: it has {section}");
    }

    // Manual pages, found by man.
    assert_eq!(run(Command::new("man").args(["-w", "alerter"])).trim(), "/usr/share/man/man1/alerter.1.gz");
    assert_eq!(run(Command::new("man").args(["-w", "alerter-run"])).trim(), "/usr/share/man/man1/alerter-run.1.gz");

    // Completions where each shell's Debian package looks, units where
    // systemd does, the SDK header, the default config as a conffile.
    for path in [
        "/usr/share/bash-completion/completions/alerter",
        "/usr/share/zsh/vendor-completions/_alerter",
        "/usr/share/fish/vendor_completions.d/alerter.fish",
        "/usr/lib/systemd/system/alerter.service",
        "/usr/lib/systemd/system/alerter-listen.service",
        "/usr/lib/systemd/user/alerter-listen.service",
        "/usr/lib/systemd/user/alerter-agent.service",
        "/usr/include/alerter/alerter_plugin.h",
        "/usr/share/doc/alerter/install.md",
        "/usr/share/doc/alerter/examples/c-plugin/uptime.c",
        "/usr/share/doc/alerter/examples/systemd/credentials.conf",
        "/etc/alerter/alerter.yaml",
    ] {
        let len = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}")).len();
        assert!(len > 0, "{path} is empty");
    }
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "alerter"]));
    assert!(conffiles.contains("/etc/alerter/alerter.yaml"), "{conffiles}");

    // The service user, who can read the config (ExecStartPre= runs the
    // check as that user).
    let passwd = run(Command::new("getent").args(["passwd", "alerter"]));
    assert!(passwd.contains(":/var/lib/alerter:") && passwd.trim_end().ends_with("nologin"), "{passwd}");
    let checked = run(Command::new("runuser")
        .args(["-u", "alerter", "--", "/usr/bin/alerter", "check", "--config", "/etc/alerter/alerter.yaml"])
        .current_dir("/"));
    assert!(checked.contains("configuration is valid"), "{checked}");
    // Enabled at install (Debian's way), the workstation receiver not.
    assert!(Path::new("/etc/systemd/system/multi-user.target.wants/alerter.service").exists());
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/alerter-listen.service").exists());

    // systemd-analyze accepts the units as installed (it checks that the
    // commands exist and the man pages they cite are there too).
    let verify = Command::new("systemd-analyze")
        .args(["verify", "/usr/lib/systemd/system/alerter.service", "/usr/lib/systemd/system/alerter-listen.service"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    assert!(!said.contains("alerter"), "systemd-analyze verify complained:\n{said}");
    let runtime = tempfile::tempdir().unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["--user", "verify", "/usr/lib/systemd/user/alerter-listen.service"])
        .arg("/usr/lib/systemd/user/alerter-agent.service")
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && !said.contains("alerter"), "systemd-analyze --user verify: {said}");

    // The admin edits the config; removing the package keeps the edit.
    let mut conf = std::fs::read_to_string("/etc/alerter/alerter.yaml").unwrap();
    conf.push_str("# edited by the admin\n");
    std::fs::write("/etc/alerter/alerter.yaml", &conf).unwrap();
    run(Command::new("dpkg").args(["-r", "alerter"]));
    for gone in [
        "/usr/bin/alerter",
        "/usr/share/man/man1/alerter.1.gz",
        "/usr/share/bash-completion/completions/alerter",
        "/usr/lib/systemd/system/alerter.service",
        "/usr/include/alerter/alerter_plugin.h",
        "/usr/share/doc/alerter",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is still there after dpkg -r");
    }
    assert_eq!(std::fs::read_to_string("/etc/alerter/alerter.yaml").unwrap(), conf);
    let status = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "alerter"]));
    assert_eq!(status.trim(), "deinstall ok config-files");

    // Purging takes the conffile and the enablement too.
    run(Command::new("dpkg").args(["--purge", "alerter"]));
    assert!(!Path::new("/etc/alerter").exists());
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/alerter.service").exists());
}
