//! Plugins end to end: the Rust, C and Python examples built by the test,
//! dropped into a plugin directory, listed by `alerter plugins`, and run by
//! the real daemon; crashes, hangs, floods and refusals.

mod util;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{Daemon, TempConfig, alerter, build_c, build_cdylib, install_plugin, pids_with, repo, rss_kib, wait_for};

const RULES: &str = r#"
transports:
  file: { type: log, path: {out} }
rules:
  - name: from-alerter
    match: { source: alerter }
    notify: [{ workgroup: true, via: [file] }]
  - name: everything
    notify: [{ workgroup: true, via: [file] }]
"#;

fn config(sources: &str) -> String {
    format!(
        "alerter:\n  name: PLUGTEST\n  state_dir: {{state}}\n  plugin_dirs: [{{plugins}}]\nsources:\n{sources}{RULES}"
    )
}

fn loadavg_so() -> &'static Path {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| build_cdylib("alerter-example-loadavg", "alerter_example_loadavg"))
}

fn uptime_so(dir: &Path) -> PathBuf {
    let out = dir.join("build-libuptime.so");
    build_c(&repo().join("examples/c-plugin/uptime.c"), &out, &[]);
    out
}

/// Notifications from rule `everything` about source `source`.
fn from_source(cfg: &TempConfig, source: &str) -> Vec<Value> {
    cfg.notifications()
        .into_iter()
        .filter(|n| n["rule"] == "everything" && n["alerts"][0]["source"] == source)
        .collect()
}

fn alerter_events(cfg: &TempConfig) -> Vec<String> {
    cfg.notifications()
        .into_iter()
        .filter(|n| n["rule"] == "from-alerter")
        .map(|n| n["title"].as_str().unwrap_or_default().to_string())
        .collect()
}

const LONG: Duration = Duration::from_secs(30);

#[test]
fn examples_are_listed_and_their_events_reach_a_rule() {
    let cfg = TempConfig::new("");
    install_plugin(&cfg.plugins, loadavg_so(), "libloadavg.so");
    let uptime = install_plugin(&cfg.plugins, &uptime_so(cfg.dir.path()), "libuptime.so");
    install_plugin(&cfg.plugins, &repo().join("examples/python-plugin/pyfile.py"), "pyfile.py");
    cfg.write(&config(
        "  load: { type: loadavg, interval_secs: 60, warning: 0.0, critical: 1000.0 }
  up: { type: uptime, interval_ms: 60000 }
  flag: { type: pyfile, path: \"{dir}/missing\", interval: 60 }
",
    ));

    let out = alerter().args(["plugins", "--json", "-c"]).arg(&cfg.path).output().unwrap();
    assert!(out.status.success());
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_name = |n: &str| listing["plugins"].as_array().unwrap().iter().find(|p| p["name"] == n).cloned();
    let heartbeat = by_name("heartbeat").expect("built-in listed");
    assert_eq!(heartbeat["kind"], "built-in");
    let load = by_name("loadavg").expect("the Rust example is listed");
    assert_eq!(load["kind"], "shared object");
    assert_eq!(load["abi"], "1.1");
    let up = by_name("uptime").expect("the C example is listed");
    assert_eq!(up["version"], "1.0.0");
    let sha = std::process::Command::new("sha256sum").arg(&uptime).output().unwrap();
    let sha = String::from_utf8(sha.stdout).unwrap();
    assert_eq!(up["sha256"], sha.split_whitespace().next().unwrap());
    assert_eq!(by_name("pyfile").expect("the Python example is listed")["kind"], "executable");
    assert_eq!(listing["refused"], Value::Array(vec![]), "{listing}");

    let text = String::from_utf8(alerter().args(["plugins", "-c"]).arg(&cfg.path).output().unwrap().stdout).unwrap();
    assert!(text.contains("loadavg") && text.contains("libuptime.so"), "{text}");

    let mut d = Daemon::start(&cfg.path, &[]);
    let load = wait_for(LONG, || from_source(&cfg, "load").into_iter().next());
    assert_eq!(load["severity"], "warning");
    assert!(load["title"].as_str().unwrap().contains("load is"));
    let up = wait_for(LONG, || from_source(&cfg, "up").into_iter().next());
    assert_eq!(up["alerts"][0]["host"], "PLUGTEST");
    let flag = wait_for(LONG, || from_source(&cfg, "flag").into_iter().next());
    assert!(flag["title"].as_str().unwrap().contains("missing"), "{flag}");
    d.signal("TERM");
    assert_eq!(d.wait(LONG).code(), Some(0), "{}", d.stderr_so_far());
}

/// The configs next to the examples, with the examples installed as
/// examples/README.md says, are valid: what the README tells people to run
/// works.
#[test]
fn the_example_configs_check_with_the_examples_installed() {
    let cfg = TempConfig::new("");
    install_plugin(&cfg.plugins, loadavg_so(), "libalerter_example_loadavg.so");
    install_plugin(&cfg.plugins, &uptime_so(cfg.dir.path()), "libuptime.so");
    install_plugin(&cfg.plugins, &repo().join("examples/python-plugin/pyfile.py"), "pyfile.py");
    for example in ["loadavg-plugin", "c-plugin", "python-plugin"] {
        let out = alerter()
            .args(["check", "-c"])
            .arg(repo().join("examples").join(example).join("alerter.yaml"))
            .env("ALERTER_PLUGIN_DIR", &cfg.plugins)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{example}:\n{report}");
        assert!(report.contains("1 sources"), "{example}: {report}");
    }
}

#[test]
fn check_validates_plugin_settings_through_the_plugins() {
    let cfg = TempConfig::new("");
    install_plugin(&cfg.plugins, loadavg_so(), "libloadavg.so");
    install_plugin(&cfg.plugins, &uptime_so(cfg.dir.path()), "libuptime.so");
    install_plugin(&cfg.plugins, &repo().join("examples/python-plugin/pyfile.py"), "pyfile.py");
    cfg.write(&config(
        "  load:
    type: loadavg
    warning: 2.0
    critical: 1.0
  up:
    type: uptime
    interval_ms: 1
  flag:
    type: pyfile
    pth: /tmp/x
",
    ));
    let out = alerter().args(["check", "-c"]).arg(&cfg.path).output().unwrap();
    let report = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(78), "{report}");
    let located = |line: usize, text: &str| report.contains(&format!("alerter.yaml:{line}:")) && report.contains(text);
    assert!(located(9, "must not be below warning"), "the Rust plugin's own check, at `critical`:\n{report}");
    assert!(located(12, "must be at least 10"), "the C plugin's own check, at `interval_ms`:\n{report}");
    assert!(located(15, "unknown key"), "the Python plugin's own check, at `pth`:\n{report}");
}

#[test]
fn an_in_process_panic_is_an_error_and_the_daemon_keeps_running() {
    let cfg = TempConfig::new("");
    install_plugin(&cfg.plugins, loadavg_so(), "libloadavg.so");
    install_plugin(&cfg.plugins, &uptime_so(cfg.dir.path()), "libuptime.so");
    cfg.write(&config(
        "  load: { type: loadavg, isolation: in_process, interval_secs: 1, warning: 0.0, critical: 1000.0, misbehave: panic }
  up: { type: uptime, interval_ms: 200 }
",
    ));
    let mut d = Daemon::start(&cfg.path, &[]);
    wait_for(LONG, || {
        d.stderr_so_far().contains("panicked: panic in run: misbehave: panic, as configured").then_some(())
    });
    // Still alive and delivering other sources' events afterwards.
    let before = from_source(&cfg, "up").len();
    wait_for(LONG, || (from_source(&cfg, "up").len() > before + 3).then_some(()));
    d.signal("TERM");
    assert_eq!(d.wait(LONG).code(), Some(0));
}

#[test]
fn an_isolated_panic_kills_only_the_child_which_is_restarted_with_backoff() {
    let cfg = TempConfig::new("");
    install_plugin(&cfg.plugins, loadavg_so(), "libloadavg.so");
    cfg.write(&config(
        "  load: { type: loadavg, interval_secs: 1, warning: 0.0, critical: 1000.0, misbehave: panic }\n",
    ));
    let start = Instant::now();
    let mut d = Daemon::start(&cfg.path, &[]);
    let restarts = |d: &Daemon| {
        d.stderr_so_far()
            .lines()
            .filter(|l| {
                l.contains("source stopped on its own: panicked: panic in run") && l.contains("exited with status 2")
            })
            .map(|l| {
                let after = l.rsplit("restarting in ").next().unwrap();
                after.split_whitespace().next().unwrap().trim_end_matches('s').parse::<f64>().unwrap()
            })
            .collect::<Vec<f64>>()
    };
    let delays = wait_for(LONG, || Some(restarts(&d)).filter(|r| r.len() >= 3));
    // Backoff with jitter: 1s, 2s, 4s each times 0.5 to 1.5. Never a hot loop.
    assert!(delays[0] >= 0.5 && delays[0] <= 1.5, "{delays:?}");
    assert!(delays[1] >= 1.0 && delays[1] <= 3.0, "{delays:?}");
    assert!(delays[2] >= 2.0 && delays[2] <= 6.0, "{delays:?}");
    assert!(start.elapsed() >= Duration::from_secs_f64(delays[0] + delays[1]));
    // Each run emitted its warning once; the alert stays one alert.
    assert_eq!(from_source(&cfg, "load").len(), 1);
    d.signal("TERM");
    assert_eq!(d.wait(LONG).code(), Some(0));
}

#[test]
fn segfaults_and_aborts_take_down_only_their_child_and_raise_an_alerter_event() {
    let cfg = TempConfig::new("");
    install_plugin(&cfg.plugins, &uptime_so(cfg.dir.path()), "libuptime.so");
    cfg.write(&config(
        "  crashy: { type: uptime, interval_ms: 100, misbehave: segfault }
  aborty: { type: uptime, interval_ms: 100, misbehave: abort }
  steady: { type: uptime, interval_ms: 200 }
",
    ));
    let mut d = Daemon::start(&cfg.path, &[]);
    let segv = wait_for(Duration::from_secs(40), || {
        alerter_events(&cfg).into_iter().find(|t| t.contains("`crashy`") && t.contains("keeps failing"))
    });
    assert!(segv.contains("SIGSEGV"), "{segv}");
    let abrt = wait_for(Duration::from_secs(40), || {
        alerter_events(&cfg).into_iter().find(|t| t.contains("`aborty`") && t.contains("keeps failing"))
    });
    assert!(abrt.contains("SIGABRT"), "{abrt}");
    // The daemon and the other source carry on.
    let before = from_source(&cfg, "steady").len();
    assert!(before > 5, "steady delivered while the others crashed");
    wait_for(LONG, || (from_source(&cfg, "steady").len() > before + 3).then_some(()));
    d.signal("TERM");
    assert_eq!(d.wait(LONG).code(), Some(0), "{}", d.stderr_so_far());
}

#[test]
fn a_plugin_that_ignores_shutdown_is_killed_after_the_grace_period() {
    let cfg = TempConfig::new("");
    let so = install_plugin(&cfg.plugins, &uptime_so(cfg.dir.path()), "libuptime.so");
    cfg.write(&config("  stuck: { type: uptime, misbehave: hang }\n"));
    let mut d = Daemon::start(&cfg.path, &["--shutdown-grace", "2"]);
    wait_for(LONG, || from_source(&cfg, "stuck").into_iter().next());
    let needle = so.display().to_string();
    assert_eq!(pids_with(&needle).len(), 1, "one plugin host runs the plugin");
    let t = Instant::now();
    d.signal("TERM");
    let status = d.wait(LONG);
    let took = t.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(took >= Duration::from_secs(2), "it waited the grace period: {took:?}");
    assert!(took < Duration::from_millis(3500), "and then killed it: {took:?}");
    assert!(d.stderr_so_far().contains("plugin did not stop within 2s; killing it"), "{}", d.stderr_so_far());
    assert!(pids_with(&needle).is_empty(), "no plugin host left behind");
}

#[test]
fn refused_plugins_are_listed_with_their_reasons_and_do_not_stop_the_daemon() {
    use std::os::unix::fs::PermissionsExt;
    let cfg = TempConfig::new("");
    let uptime = uptime_so(cfg.dir.path());
    install_plugin(&cfg.plugins, &uptime, "libuptime.so");
    let open = install_plugin(&cfg.plugins, &uptime, "open.so");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    let bad_abi = cfg.dir.path().join("bad_abi.so");
    build_c(&repo().join("tests/fixtures/bad_abi.c"), &bad_abi, &[]);
    install_plugin(&cfg.plugins, &bad_abi, "future.so");
    let no_entry = cfg.dir.path().join("no_entry.so");
    build_c(&repo().join("tests/fixtures/no_entry.c"), &no_entry, &[]);
    install_plugin(&cfg.plugins, &no_entry, "notaplugin.so");
    std::fs::write(cfg.plugins.join("fake.so"), "this is a text file\n").unwrap();
    cfg.write(&config("  up: { type: uptime, interval_ms: 100 }\n"));

    let out = alerter().args(["plugins", "--json", "-c"]).arg(&cfg.path).output().unwrap();
    assert!(out.status.success());
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reason = |file: &str| {
        listing["refused"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"].as_str().unwrap().ends_with(file))
            .map(|r| r["reason"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{file} not refused: {listing}"))
    };
    assert!(reason("open.so").contains("world-writable (mode 0666)"), "{}", reason("open.so"));
    assert!(reason("future.so").contains("wrong ABI version: built for ABI 2"), "{}", reason("future.so"));
    assert!(
        reason("notaplugin.so").contains("missing entry symbol `alerter_source_plugin_v1`"),
        "{}",
        reason("notaplugin.so")
    );
    assert!(reason("fake.so").contains("not a shared object"), "{}", reason("fake.so"));
    let loaded: Vec<&str> = listing["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] != "built-in")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(loaded, ["uptime"], "only uptime loads from the directory: {listing}");

    let mut d = Daemon::start(&cfg.path, &[]);
    wait_for(LONG, || (from_source(&cfg, "up").len() >= 3).then_some(()));
    let log = d.stderr_so_far();
    assert!(log.contains("plugin refused") && log.contains("fake.so"), "{log}");
    d.signal("TERM");
    assert_eq!(d.wait(LONG).code(), Some(0));
}

#[test]
fn a_flooding_plugin_leaves_memory_bounded_and_drops_are_reported() {
    let cfg = TempConfig::new("");
    install_plugin(&cfg.plugins, &uptime_so(cfg.dir.path()), "libuptime.so");
    cfg.write(&config("  flood: { type: uptime, misbehave: flood }\n"));
    let mut d = Daemon::start(&cfg.path, &[]);
    wait_for(LONG, || from_source(&cfg, "flood").into_iter().next());
    // The daemon takes a flood of refreshes of one alert about as fast as
    // the plugin makes them, so drops would come and go with the machine's
    // load. Stalled (as by a hung disk) for a second, it reads nothing
    // while the plugin's process goes on: every event past its queue is
    // dropped there, and counted.
    d.signal("STOP");
    std::thread::sleep(Duration::from_secs(1));
    d.signal("CONT");
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        samples.push(rss_kib(d.pid()));
        std::thread::sleep(Duration::from_millis(200));
    }
    let early = samples[..5].iter().copied().max().unwrap();
    let late = samples.iter().copied().max().unwrap();
    eprintln!("daemon RSS during a 10 s flood: first second max {early} KiB, overall max {late} KiB");
    assert!(late < 100 * 1024, "RSS stays under 100 MiB: {late} KiB");
    assert!(late < early + 20 * 1024, "RSS does not keep growing: {early} KiB then {late} KiB");
    let deadline = Instant::now() + LONG;
    let dropped = loop {
        if let Some(t) = alerter_events(&cfg).into_iter().find(|t| t.contains("`flood` dropped")) {
            break t;
        }
        assert!(Instant::now() < deadline, "no drops reported; the daemon said:\n{}", d.stderr_so_far());
        std::thread::sleep(Duration::from_millis(50));
    };
    let n: u64 = dropped.split("dropped ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(n > 1000, "{dropped}");
    d.signal("TERM");
    assert_eq!(d.wait(LONG).code(), Some(0), "{}", d.stderr_so_far());
}

#[test]
fn a_plugin_dropped_in_starts_on_sighup_without_disturbing_the_others() {
    let cfg = TempConfig::new("");
    install_plugin(&cfg.plugins, &uptime_so(cfg.dir.path()), "libuptime.so");
    cfg.write(&config("  steady: { type: uptime, interval_ms: 100 }\n"));
    let mut d = Daemon::start(&cfg.path, &[]);
    wait_for(LONG, || (from_source(&cfg, "steady").len() >= 5).then_some(()));

    install_plugin(&cfg.plugins, loadavg_so(), "libloadavg.so");
    cfg.write(&config(
        "  steady: { type: uptime, interval_ms: 100 }
  load: { type: loadavg, interval_secs: 60, warning: 0.0, critical: 1000.0 }
",
    ));
    d.signal("HUP");
    wait_for(LONG, || from_source(&cfg, "load").into_iter().next());
    let after = from_source(&cfg, "steady").len();
    wait_for(LONG, || (from_source(&cfg, "steady").len() >= after + 5).then_some(()));

    // The uptime plugin numbers its events from 1 in each run: a restart
    // would show as the numbers starting over.
    let seqs: Vec<u64> = from_source(&cfg, "steady")
        .iter()
        .map(|n| n["alerts"][0]["labels"]["seq"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "one uninterrupted stream: {seqs:?}");
    assert!(d.stderr_so_far().matches("source starting source=steady").count() == 1);
    d.signal("TERM");
    assert_eq!(d.wait(LONG).code(), Some(0));
}

/// The built-in sources are ordinary plugins: each also builds as a
/// drop-in `.so` (with the `dylib` feature), which alerter loads, checks,
/// and here refuses only because the built-in of the same name wins.
#[test]
fn builtin_sources_also_build_as_drop_in_shared_objects() {
    let target = repo().join("target/test-plugins");
    let cfg = TempConfig::new("transports: { out: { type: log, path: \"-\" } }\n");
    for (package, lib, name) in [
        ("alerter-plugin-disk", "alerter_plugin_disk", "disk"),
        ("alerter-plugin-script", "alerter_plugin_script", "script"),
        ("alerter-plugin-log", "alerter_plugin_log", "log"),
    ] {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["rustc", "--quiet", "-p", package, "--features", "dylib", "--crate-type", "cdylib", "--target-dir"])
            .arg(&target)
            .current_dir(repo())
            .status()
            .expect("run cargo");
        assert!(status.success(), "building {package} as a .so failed");
        let so = target.join("debug").join(format!("lib{lib}.so"));
        install_plugin(&cfg.plugins, &so, &format!("{name}.so"));
    }
    let out =
        alerter().args(["plugins", "--json", "--dir"]).arg(&cfg.plugins).arg("-c").arg(&cfg.path).output().unwrap();
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    for name in ["disk", "script", "log"] {
        let refused = listing["refused"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"].as_str().unwrap().ends_with(&format!("/{name}.so")));
        let reason = refused.unwrap_or_else(|| panic!("{name}.so not seen: {listing}"))["reason"].as_str().unwrap();
        assert!(reason.contains(&format!("plugin `{name}` is already provided by the built-in plugin")), "{reason}");
    }
}

/// `plugin_dirs: [plugins]` means the directory next to the config file,
/// as `include` does, whatever the working directory (`/` under systemd):
/// for `alerter check`, `alerter plugins` and the daemon alike.
#[test]
fn a_relative_plugin_dir_is_found_next_to_the_config_from_any_working_directory() {
    let cfg = TempConfig::new("");
    install_plugin(&cfg.plugins, &repo().join("examples/python-plugin/pyfile.py"), "pyfile.py");
    let relative = config("  flag: { type: pyfile, path: \"{dir}/missing\", interval: 60 }\n")
        .replace("plugin_dirs: [{plugins}]", "plugin_dirs: [plugins]");
    assert!(relative.contains("plugin_dirs: [plugins]\n"), "{relative}");
    cfg.write(&relative);

    let out = alerter().current_dir("/").args(["check", "-c"]).arg(&cfg.path).output().unwrap();
    let report = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.starts_with("configuration is valid\n"), "no warning either:\n{report}");

    let out = alerter().current_dir("/").args(["plugins", "--json", "-c"]).arg(&cfg.path).output().unwrap();
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pyfile = listing["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "pyfile").cloned();
    let path = pyfile.unwrap_or_else(|| panic!("pyfile not listed: {listing}"))["path"].as_str().unwrap().to_string();
    assert_eq!(Path::new(&path), cfg.plugins.join("pyfile.py"));

    // The daemon, started from `/` as systemd does, runs the plugin.
    let mut child = alerter()
        .current_dir("/")
        .args(["run", "-c"])
        .arg(&cfg.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    let flag = wait_for(LONG, || from_source(&cfg, "flag").into_iter().next());
    assert!(flag["title"].as_str().unwrap().contains("missing"), "{flag}");
    drop(guard);
}

/// The plugin processes the daemon `pid` runs (its direct children).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let ppid = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// A daemon running the `pyfile` example (a `#!` script, so it is also
/// executed through its checked descriptor) from `{dir}/parent/plugins`.
fn start_pyfile(cfg: &TempConfig) -> (Daemon, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let parent = cfg.dir.path().join("parent");
    let plugins = parent.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for d in [&parent, &plugins] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    install_plugin(&plugins, &repo().join("examples/python-plugin/pyfile.py"), "pyfile.py");
    cfg.write(&format!(
        "alerter:\n  name: PLUGTEST\n  state_dir: {{state}}\n  plugin_dirs: [{{dir}}/parent/plugins]\n\
         sources:\n  flag: {{ type: pyfile, path: \"{{dir}}/missing\", interval: 1 }}\n{RULES}"
    ));
    let d = Daemon::start(&cfg.path, &[]);
    wait_for(LONG, || from_source(cfg, "flag").into_iter().next());
    (d, plugins)
}

/// Kills the plugin's process, so the supervisor starts it again.
fn kill_plugin(d: &Daemon) {
    let kids = children_of(d.pid());
    assert_eq!(kids.len(), 1, "one plugin process: {kids:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(kids[0] as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
}

fn refusal(cfg: &TempConfig) -> String {
    wait_for(LONG, || alerter_events(cfg).into_iter().find(|t| t.contains("its plugin file was refused")))
}

#[test]
fn a_plugin_file_replaced_after_start_is_refused_at_the_next_spawn() {
    use std::os::unix::fs::PermissionsExt;
    let cfg = TempConfig::new("");
    let (d, plugins) = start_pyfile(&cfg);
    // Replaced (same owner, same mode, new content) while it runs.
    let marker = cfg.dir.path().join("replaced-ran");
    let original = std::fs::read_to_string(plugins.join("pyfile.py")).unwrap();
    let tmp = plugins.join(".new");
    std::fs::write(&tmp, original.replacen("import json", &format!("open({:?}, 'w')\nimport json", marker), 1))
        .unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, plugins.join("pyfile.py")).unwrap();
    kill_plugin(&d);
    let why = refusal(&cfg);
    assert!(why.contains("pyfile.py changed since it was scanned (sha256 "), "{why}");
    assert!(why.contains("reload (SIGHUP)"), "{why}");
    assert!(!marker.exists(), "the replaced file ran");
    assert!(children_of(d.pid()).is_empty(), "nothing runs in its place");
}

#[test]
fn a_plugin_directory_swapped_through_a_writable_parent_is_refused_at_the_next_spawn() {
    use std::os::unix::fs::PermissionsExt;
    let cfg = TempConfig::new("");
    let (d, plugins) = start_pyfile(&cfg);
    // The parent becomes writable by everyone (an admin's mistake), and a
    // local user moves the plugin directory aside and plants their own,
    // with a plugin of the same name.
    let parent = plugins.parent().unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::rename(&plugins, parent.join("plugins.old")).unwrap();
    std::fs::create_dir(&plugins).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
    let marker = cfg.dir.path().join("planted-ran");
    let planted = plugins.join("pyfile.py");
    std::fs::write(&planted, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::chown(&plugins, Some(65534), Some(65534)).unwrap();
    kill_plugin(&d);
    let why = refusal(&cfg);
    assert!(why.contains("/parent above it is world-writable (mode 0777)"), "{why}");
    assert!(why.contains("chmod go-w"), "{why}");
    assert!(!marker.exists(), "the planted plugin ran");
    assert!(children_of(d.pid()).is_empty(), "nothing runs in its place");
    // The scan refuses it the same way: `alerter plugins` lists why.
    let out = alerter().args(["plugins", "--json", "-c"]).arg(&cfg.path).output().unwrap();
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reasons = listing["refused"].to_string();
    assert!(reasons.contains("world-writable"), "{listing}");
}

/// Plugin processes get a clean environment: nothing of the daemon's own
/// (here a secret in its environment) reaches them, only PATH (and TZ).
#[test]
fn plugin_processes_get_a_clean_environment() {
    use std::os::unix::fs::PermissionsExt;
    let cfg = TempConfig::new("");
    let plugin = cfg.plugins.join("envtest");
    std::fs::write(
        &plugin,
        "#!/bin/sh\nread line\nprintf '{\"op\":\"hello\",\"protocol\":1,\"plugin\":{\"name\":\"envtest\",\"version\":\"1\",\"description\":\"%s\"}}\\n' \"$(env | sort | tr '\\n' ' ' | tr -d '\"\\\\')\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    cfg.write(&config(""));
    let out = alerter()
        .args(["plugins", "--json", "-c"])
        .arg(&cfg.path)
        .env("ALERTER_TEST_SECRET", "hunter2")
        .env("TZ", "Europe/Berlin")
        .output()
        .unwrap();
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    let env =
        listing["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "envtest").expect("listed")["description"]
            .as_str()
            .unwrap()
            .to_string();
    assert!(env.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), "{env}");
    assert!(env.contains("TZ=Europe/Berlin"), "{env}");
    assert!(!env.contains("hunter2") && !env.contains("HOME="), "{env}");
}

/// A SIGHUP or SIGTERM that arrives while the daemon is still loading its
/// config (here: scanning a plugin that takes its time to answer) does not
/// kill it, as their default action would: the reload and the shutdown are
/// handled once it runs.
#[test]
fn signals_during_startup_are_handled_not_fatal() {
    use std::os::unix::fs::PermissionsExt;
    let cfg = TempConfig::new("");
    let slow = cfg.plugins.join("slow");
    std::fs::write(
        &slow,
        "#!/bin/sh\nread line\nsleep 2\necho '{\"op\":\"hello\",\"protocol\":1,\"plugin\":{\"name\":\"slow\",\"version\":\"1\"}}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    cfg.write(&config("  beat: { type: heartbeat, interval: 1h }\n"));
    let mut d = Daemon::start(&cfg.path, &[]);
    // The scan is running the slow plugin: the config is still loading.
    wait_for(LONG, || (!children_of(d.pid()).is_empty()).then_some(()));
    d.signal("HUP");
    d.signal("TERM");
    let status = d.wait(LONG);
    assert_eq!(status.code(), Some(0), "{status:?}: {}", d.stderr_so_far());
}
