//! The built-in sources end to end, in the real daemon, against the real
//! things they watch: a tmpfs the test mounts and fills (`disk`), files
//! rotated by the real `logrotate` (`log`), and Debian's Monitoring Plugins
//! (`script`). Needs root (to mount).

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use util::{Daemon, TempConfig};

const LONG: Duration = Duration::from_secs(30);

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "alerter-test"])
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root");
        Tmpfs(path.to_path_buf())
    }

    /// Makes the filesystem `pct` percent full (as df counts), with one file.
    fn fill_to(&self, pct: f64) {
        let file = self.0.join("filler");
        let _ = std::fs::remove_file(&file);
        let s = nix::sys::statvfs::statvfs(&self.0).unwrap();
        let total = s.blocks() as f64 * s.fragment_size() as f64;
        let bytes = (total * pct / 100.0) as usize;
        std::fs::write(&file, vec![0u8; bytes]).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// (status, severity, title) of each notification so far.
fn notes(cfg: &TempConfig) -> Vec<(String, String, String)> {
    cfg.notifications()
        .iter()
        .map(|n| {
            (
                n["status"].as_str().unwrap_or_default().to_string(),
                n["severity"].as_str().unwrap_or_default().to_string(),
                n["title"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Polls `f` until it returns something; at the deadline, fails with what
/// the daemon logged.
fn wait<T>(d: &Daemon, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {LONG:?}; daemon log:\n{}",
            d.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the daemon has logged `needle` `n` more times than `before`.
fn wait_logged(d: &Daemon, needle: &str, before: usize, n: usize) -> usize {
    wait(d, needle, || {
        let count = d.stderr_so_far().matches(needle).count();
        (count >= before + n).then_some(count)
    })
}

#[test]
fn disk_warns_escalates_and_resolves_without_flapping() {
    let cfg = TempConfig::new("");
    let mnt = cfg.dir.path().join("mnt");
    let fs = Tmpfs::mount(&mnt, "10m");
    cfg.write(&format!(
        r#"
alerter: {{ name: FILESERVER, state_dir: {{state}} }}
sources:
  disk: {{ type: disk, mounts: [{mnt}], interval: 1s }}
transports:
  out: {{ type: log, path: {{out}} }}
subscribers:
  ops: {{ name: Operations }}
rules:
  - name: disk
    match: {{ source: disk }}
    group_interval: 1s
    notify: [{{ subscribers: [ops], via: [out] }}]
"#,
        mnt = mnt.display()
    ));
    let d = Daemon::start(&cfg.path, &["--log", "info,alerter_core::plugin::supervisor=debug"]);
    let checked = format!("checked {}:", mnt.display());
    let mut seen = wait_logged(&d, &checked, 0, 1);
    assert!(notes(&cfg).is_empty(), "an empty filesystem is fine");

    fs.fill_to(85.0);
    wait(&d, "a warning", || (notes(&cfg).len() == 1).then_some(()));
    fs.fill_to(95.0);
    wait(&d, "a critical", || (notes(&cfg).len() == 2).then_some(()));

    // Hover around the critical threshold (90%, hysteresis 2 points): each
    // value is checked at least twice, and nothing is said.
    for pct in [89.0, 91.0, 88.5, 92.0, 89.5] {
        fs.fill_to(pct);
        seen = wait_logged(&d, &checked, seen, 2);
    }
    assert_eq!(notes(&cfg).len(), 2, "no news while hovering: {:?}", notes(&cfg));

    fs.fill_to(0.0);
    wait(&d, "resolved", || (notes(&cfg).len() == 3).then_some(()));
    let n = notes(&cfg);
    assert_eq!(n[0].1, "warning", "{n:?}");
    assert!(n[0].2.contains("is 85% full"), "{n:?}");
    assert_eq!(n[1].1, "critical", "{n:?}");
    assert_eq!(n[2].0, "resolved", "{n:?}");
    // And quiet afterwards.
    wait_logged(&d, &checked, seen, 3);
    assert_eq!(notes(&cfg).len(), 3);
}
