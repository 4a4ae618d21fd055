//! `alerter test`: the shipped config's own rule tests pass; a wrong
//! expectation fails with a readable diff; an invalid test file is reported
//! like a config error.

mod util;

use std::path::Path;

use util::alerter;

fn run(file: &str) -> (Option<i32>, String) {
    let out = alerter()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("test")
        .arg(file)
        .env_remove("ALERTER_CONFIG")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn shipped_config_tests_pass() {
    let file = "config/tests/alerter.test.yaml";
    assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(file).exists());
    let (code, out) = run(file);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("5 tests: 5 passed, 0 failed"), "{out}");
}

#[test]
fn notices_and_mute_windows_are_testable() {
    let (code, out) = run("tests/testdata/ruletest/notices.test.yaml");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2 tests: 2 passed"), "{out}");
}

#[test]
fn resolutions_are_told_without_waiting_for_group_interval_when_alone() {
    let (code, out) = run("tests/testdata/ruletest/resolved.test.yaml");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("3 tests: 3 passed, 0 failed"), "{out}");
}

#[test]
fn wrong_expectation_fails_with_a_diff() {
    let (code, out) = run("tests/testdata/ruletest/wrong-expectation.test.yaml");
    assert_eq!(code, Some(1), "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn invalid_test_file_is_reported_with_positions() {
    let (code, out) = run("tests/testdata/ruletest/invalid.test.yaml");
    assert_eq!(code, Some(78), "{out}");
    insta::assert_snapshot!(out);
}

/// Issue 13, acceptance 4: what a person receives in a storm, on the
/// simulated clock: the budget, then one digest; a critical alert at once;
/// a group's one budget; quiet resolutions; storms written as `repeat`.
#[test]
fn budgets_are_testable_with_storms_on_the_simulated_clock() {
    let (code, out) = run("tests/testdata/ruletest/budget.test.yaml");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("6 tests: 6 passed, 0 failed"), "{out}");
}
