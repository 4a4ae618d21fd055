//! Runs every fuzz target (the parsers that read network input: the
//! Messenger protocol's, and Alertmanager's webhook body) for a bounded
//! time; any crash fails the test. Needs
//! cargo-fuzz (`cargo install cargo-fuzz`; .ci/run installs it). The
//! seconds per target come from ALERTER_FUZZ_SECONDS (default 15).

mod util;

use std::process::Command;

#[test]
fn fuzz_targets_run_without_a_crash() {
    let seconds: u64 = std::env::var("ALERTER_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    let have = Command::new(env!("CARGO")).args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    assert!(have, "cargo-fuzz is missing: install it with `cargo install cargo-fuzz`");
    let targets = [
        ("messenger-transport", "datagram"),
        ("messenger-transport", "name_service"),
        ("messenger-transport", "session"),
        ("messenger-transport", "sealed"),
        ("messenger-transport", "ack"),
        ("messenger-transport", "rpc"),
        ("plugins/alertmanager", "webhook"),
    ];
    for (crate_dir, target) in targets {
        let dir = util::repo().join(crate_dir);
        // Seeds in the repository (a real payload, say) start the corpus
        // off where a random walk would take long to reach.
        let seeds = dir.join("fuzz/seeds").join(target);
        let corpora: Vec<std::path::PathBuf> = if seeds.is_dir() {
            let corpus = dir.join("fuzz/corpus").join(target);
            std::fs::create_dir_all(&corpus).unwrap();
            vec![corpus, seeds]
        } else {
            Vec::new()
        };
        let out = Command::new(env!("CARGO"))
            .current_dir(&dir)
            // libFuzzer's instrumentation needs unstable rustc options; this
            // enables them on the stable toolchain for this build only.
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", target, "--sanitizer", "none"])
            .args(&corpora)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "fuzz target {target} failed:\n{log}");
        let runs = log.lines().rev().find_map(|l| l.strip_prefix("Done ")).unwrap_or("?");
        eprintln!("fuzz target {target}: {runs}");
    }
}
