//! The disk source on a fake system: thresholds, hysteresis, state.

use std::sync::{Arc, Mutex};

use super::*;

/// A filesystem whose numbers the test sets.
#[derive(Clone, Default)]
struct Fake(Arc<Mutex<BTreeMap<String, Usage>>>);

impl Fake {
    fn set(&self, path: &str, used_pct: f64) {
        let size = 100 * 1024 * 1024 * 1024u64;
        let free = (size as f64 * (100.0 - used_pct) / 100.0) as u64;
        self.0.lock().unwrap().insert(path.into(), Usage { used_pct, free, size, inodes_pct: Some(10.0) });
    }

    fn set_usage(&self, path: &str, u: Usage) {
        self.0.lock().unwrap().insert(path.into(), u);
    }

    fn unmount(&self, path: &str) {
        self.0.lock().unwrap().remove(path);
    }
}

impl Probe for Fake {
    fn mount_table(&self) -> std::io::Result<String> {
        let mut t = String::from("proc /proc proc rw 0 0\ntmpfs /run tmpfs rw 0 0\n");
        for p in self.0.lock().unwrap().keys() {
            t.push_str(&format!("/dev/x {p} ext4 rw 0 0\n"));
        }
        Ok(t)
    }

    fn usage(&self, path: &str) -> std::io::Result<Option<Usage>> {
        match self.0.lock().unwrap().get(path) {
            Some(u) => Ok(Some(*u)),
            None => Err(std::io::Error::other("not mounted")),
        }
    }
}

fn cfg(json: serde_json::Value) -> Config {
    serde_json::from_value(json).unwrap()
}

/// (severity, summary) of each event.
fn run(d: &mut Disk<Fake>) -> Vec<(String, String)> {
    d.check_once(None)
        .0
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
            (v["severity"].as_str().unwrap().to_string(), v["summary"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn warning_critical_resolved_and_nothing_while_hovering() {
    let fake = Fake::default();
    let mut d = Disk::with_probe(cfg(serde_json::json!({})), fake.clone(), None).unwrap();
    fake.set("/srv", 50.0);
    assert_eq!(run(&mut d), vec![], "fine: nothing to say");
    fake.set("/srv", 81.0);
    assert_eq!(run(&mut d), vec![("warning".into(), "/srv is 81% full (19.0 GiB free)".into())]);
    fake.set("/srv", 85.0);
    assert_eq!(run(&mut d), vec![], "still warning");
    fake.set("/srv", 90.0);
    assert_eq!(run(&mut d)[0].0, "critical");
    // Hovering around 90: within the 2-point hysteresis, no news.
    for pct in [89.5, 90.4, 88.1, 90.0, 89.0, 91.0] {
        fake.set("/srv", pct);
        assert_eq!(run(&mut d), vec![], "hovering at {pct}");
    }
    fake.set("/srv", 87.9);
    assert_eq!(run(&mut d)[0].0, "warning", "below 90 - 2");
    fake.set("/srv", 79.0);
    assert_eq!(run(&mut d), vec![], "78 < x < 80 keeps the warning");
    fake.set("/srv", 77.0);
    assert_eq!(run(&mut d)[0].0, "resolved");
    fake.set("/srv", 79.5);
    assert_eq!(run(&mut d), vec![], "rising again, but not to 80");
}

#[test]
fn free_space_and_inode_thresholds() {
    let fake = Fake::default();
    let c = cfg(serde_json::json!({
        "warning": {"used": null, "free": "10 GiB"},
        "critical": {"used": "99%", "free": "1 GiB", "inodes": 95},
    }));
    let mut d = Disk::with_probe(c, fake.clone(), None).unwrap();
    let gib = 1024 * 1024 * 1024u64;
    let usage = |free: u64, inodes: f64| Usage { used_pct: 10.0, free, size: 100 * gib, inodes_pct: Some(inodes) };
    fake.set_usage("/data", usage(20 * gib, 10.0));
    assert_eq!(run(&mut d), vec![]);
    fake.set_usage("/data", usage(9 * gib, 10.0));
    assert_eq!(run(&mut d)[0].0, "warning", "less than 10 GiB free");
    // Hysteresis for free space is 2% of the size: clears above 12 GiB.
    fake.set_usage("/data", usage(11 * gib, 10.0));
    assert_eq!(run(&mut d), vec![]);
    fake.set_usage("/data", usage(13 * gib, 10.0));
    assert_eq!(run(&mut d)[0].0, "resolved");
    fake.set_usage("/data", usage(50 * gib, 96.0));
    let e = run(&mut d);
    assert_eq!(e, vec![("critical".into(), "/data has used 96% of its inodes".into())]);
}

#[test]
fn levels_survive_a_restart_and_unmounted_trouble_resolves() {
    let fake = Fake::default();
    let mut d = Disk::with_probe(cfg(serde_json::json!({})), fake.clone(), None).unwrap();
    fake.set("/var", 95.0);
    fake.set("/home", 10.0);
    assert_eq!(run(&mut d)[0].0, "critical");
    let (_, state) = d.check_once(None);
    // Restarted with the saved state: no second critical.
    let mut again = Disk::with_probe(cfg(serde_json::json!({})), fake.clone(), Some(&state)).unwrap();
    assert_eq!(run(&mut again), vec![]);
    // Recovered while we were down: the restart notices it.
    fake.set("/var", 50.0);
    let mut third = Disk::with_probe(cfg(serde_json::json!({})), fake.clone(), Some(&state)).unwrap();
    assert_eq!(run(&mut third)[0].0, "resolved");
    // Trouble that goes away with its filesystem resolves too.
    fake.set("/var", 95.0);
    assert_eq!(run(&mut third)[0].0, "critical");
    fake.unmount("/var");
    assert_eq!(run(&mut third), vec![("resolved".into(), "/var is no longer mounted".into())]);
    // A garbled saved state is as if there were none.
    assert!(Disk::with_probe(cfg(serde_json::json!({})), fake, Some("{not json")).is_ok());
}

#[test]
fn pseudo_filesystems_are_skipped_unless_listed() {
    let fake = Fake::default();
    fake.set("/", 50.0);
    let d = Disk::with_probe(cfg(serde_json::json!({})), fake.clone(), None).unwrap();
    let watched: Vec<String> = d.watched(None).into_iter().map(|m| m.path).collect();
    assert_eq!(watched, vec!["/"]);
    let d = Disk::with_probe(cfg(serde_json::json!({"mounts": ["/run/"]})), fake.clone(), None).unwrap();
    assert_eq!(d.watched(None)[0].path, "/run", "listed: watched, trailing slash or not");
    let d =
        Disk::with_probe(cfg(serde_json::json!({"include_pseudo": true, "exclude": ["/proc"]})), fake, None).unwrap();
    let watched: Vec<String> = d.watched(None).into_iter().map(|m| m.path).collect();
    assert_eq!(watched, vec!["/", "/run"]);
}

#[test]
fn bad_settings_name_the_key() {
    use alerter_plugin_sdk::testing;
    let d = super::descriptor();
    let err = |v: serde_json::Value| testing::validate(d, v).unwrap_err();
    assert!(err(serde_json::json!({"warning": {"used": 95}})).contains("warning.used"));
    assert!(err(serde_json::json!({"warning": {"used": "lots"}})).contains("not a percentage"));
    assert!(err(serde_json::json!({"critical": {"used": 120}})).contains("between 0 and 100"));
    assert!(err(serde_json::json!({"warning": {"free": "plenty"}})).contains("not a size"));
    assert!(err(serde_json::json!({"mounts": ["var"]})).contains("mounts[0]"));
    assert!(err(serde_json::json!({"schedule": "often"})).contains("schedule"));
    assert!(err(serde_json::json!({"intervall": "1m"})).contains("unknown field"));
    assert!(testing::validate(d, serde_json::json!({"schedule": "*/5 * * * *", "timezone": "Europe/Berlin"})).is_ok());
}

#[test]
fn the_real_root_filesystem_can_be_measured() {
    let u = System.usage("/").unwrap().expect("/ has blocks");
    assert!(u.size > 0 && (0.0..=100.0).contains(&u.used_pct), "{u:?}");
}
