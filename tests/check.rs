//! `alerter check` on broken and valid configs. Every broken config in
//! config/testdata/bad must exit 78 and report each problem with
//! file:line:column; every config in config/testdata/warn must exit 0 and
//! report each warning the same way; the whole report is snapshot-tested,
//! so a change in wording or position shows up in review.

mod util;

use std::path::{Path, PathBuf};

use util::alerter;

fn testdata(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/testdata").join(kind)
}

/// The config files of a testdata directory: `*.yaml`, and `*/main.yaml`
/// for cases spread over several files.
fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = testdata(kind);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            if p.is_dir() {
                Some(p.join("main.yaml")).filter(|m| m.exists())
            } else {
                Some(p).filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            }
        })
        .collect();
    out.sort();
    out
}

/// Runs `alerter check` from the config's directory, so reported paths are
/// relative and the snapshots do not depend on where the repository is.
fn check(path: &Path) -> (Option<i32>, String) {
    let dir = path.parent().unwrap();
    let out = alerter()
        .current_dir(dir)
        .arg("check")
        .arg("-c")
        .arg(path.file_name().unwrap())
        .env_remove("ALERTER_CONFIG")
        .env_remove("ALERTER_TEST_UNSET_LOG_PATH")
        .env_remove("ALERTER_TEST_UNSET_OTHER")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn broken_configs_report_every_problem_and_exit_78() {
    let cases = cases("bad");
    assert!(cases.len() >= 15, "at least 15 broken configs, found {}", cases.len());
    for path in cases {
        let name = path.strip_prefix(testdata("bad")).unwrap().display().to_string();
        let (code, report) = check(&path);
        assert_eq!(code, Some(78), "{name} should fail with 78:\n{report}");
        let errors = report.lines().filter(|l| l.starts_with("error")).count();
        assert!(errors > 0, "{name}: no error reported:\n{report}");
        assert_every_problem_located(&name, &report);
        insta::assert_snapshot!(name.replace('/', "__"), report);
    }
}

/// Every error and warning of a report points at file:line:column.
fn assert_every_problem_located(name: &str, report: &str) {
    let problems = report.lines().filter(|l| l.starts_with("error") || l.starts_with("warning")).count();
    let located = report.lines().filter(|l| l.trim_start().starts_with("┌─ ")).count();
    assert_eq!(problems, located, "{name}: every problem needs file:line:column:\n{report}");
    for loc in report.lines().filter_map(|l| l.trim_start().strip_prefix("┌─ ")) {
        let mut parts = loc.rsplitn(3, ':');
        let col = parts.next().unwrap();
        let line = parts.next().unwrap();
        assert!(col.parse::<u32>().is_ok() && line.parse::<u32>().is_ok(), "{name}: bad location {loc}");
    }
}

/// Warnings are reported like errors but do not change the exit status:
/// the configuration is applied as it is.
#[test]
fn configs_with_warnings_are_valid_and_report_each_warning() {
    let cases = cases("warn");
    assert!(!cases.is_empty(), "no configs in config/testdata/warn");
    for path in cases {
        let name = path.strip_prefix(testdata("warn")).unwrap().display().to_string();
        let (code, report) = check(&path);
        assert_eq!(code, Some(0), "{name} has only warnings, so it is valid:\n{report}");
        assert!(!report.lines().any(|l| l.starts_with("error")), "{name}:\n{report}");
        assert!(report.lines().any(|l| l.starts_with("warning")), "{name}: no warning reported:\n{report}");
        assert_every_problem_located(&name, &report);
        insta::assert_snapshot!(format!("warn__{}", name.replace('/', "__")), report);
    }
}

#[test]
fn valid_configs_pass() {
    let mut cases = cases("good");
    cases.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/alerter.yaml"));
    for path in cases {
        let (code, report) = check(&path);
        assert_eq!(code, Some(0), "{} should be valid:\n{report}", path.display());
        assert!(report.starts_with("configuration is valid\n"), "and without warnings:\n{report}");
    }
}

#[test]
fn embedded_default_is_valid() {
    let out = alerter().arg("check").env_remove("ALERTER_CONFIG").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn shipped_schema_is_current() {
    let out = alerter().arg("schema").output().unwrap();
    assert!(out.status.success());
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/alerter.schema.json")).unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap() == shipped,
        "config/alerter.schema.json is stale; regenerate it with `cargo run -- schema > config/alerter.schema.json`"
    );
}
