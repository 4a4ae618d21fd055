//! The `disk` source: space and inode use of mounted filesystems.
//!
//! Every check reads the mount table and `statvfs` of each filesystem it
//! watches (all real ones, or the listed mount points), and compares used
//! space (percent, as `df` computes it: blocks reserved for root count as
//! unavailable), free bytes and inode use with the `warning` and `critical`
//! thresholds. It reports a filesystem only when its level changes:
//! `warning`, `critical`, back to `warning`, and `resolved` when it is fine
//! again. A level drops only once the value is `hysteresis` percentage
//! points below the threshold, so a disk hovering at 90% does not flap.
//!
//! The levels are saved as the source's state, so a restart neither
//! repeats a warning nor misses a recovery that happened while down.

pub mod mounts;

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::time::Duration;

use alerter_plugin_sdk::{Check, Context, Error, Event, Level as LogLevel, Severity, Trigger};
use serde::{Deserialize, Deserializer, Serialize};

/// A percentage, written `80` or `"80%"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percent(pub f64);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Percent, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        let v = match Raw::deserialize(d)? {
            Raw::Num(n) => n,
            Raw::Text(t) => t.trim().trim_end_matches('%').trim().parse::<f64>().map_err(|_| {
                serde::de::Error::custom(format!("`{t}` is not a percentage; write e.g. 80 or \"80%\""))
            })?,
        };
        if !(0.0..=100.0).contains(&v) {
            return Err(serde::de::Error::custom(format!("{v} is not a percentage between 0 and 100")));
        }
        Ok(Percent(v))
    }
}

/// A size in bytes, written `"5 GiB"`, `"500MB"` or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(Size(n)),
            Raw::Text(t) => t.trim().parse::<bytesize::ByteSize>().map(|b| Size(b.as_u64())).map_err(|_| {
                serde::de::Error::custom(format!("`{t}` is not a size; write e.g. \"5 GiB\" or \"500 MB\""))
            }),
        }
    }
}

/// Absent means the default; `null` turns a threshold off.
fn explicit<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Thresholds for one level. Each defaults (see [`Config`]); `null` turns one off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsConfig {
    /// Used space in percent.
    #[serde(default, deserialize_with = "explicit")]
    pub used: Option<Option<Percent>>,
    /// Free space below this size.
    #[serde(default, deserialize_with = "explicit")]
    pub free: Option<Option<Size>>,
    /// Used inodes in percent.
    #[serde(default, deserialize_with = "explicit")]
    pub inodes: Option<Option<Percent>>,
}

/// The settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Mount points to watch; default: every real filesystem.
    #[serde(default)]
    pub mounts: Vec<String>,
    /// Mount points to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Also watch pseudo filesystems (tmpfs, squashfs, ...) when no `mounts` are listed.
    #[serde(default)]
    pub include_pseudo: bool,
    /// Default: used 80%, inodes 80%.
    #[serde(default)]
    pub warning: ThresholdsConfig,
    /// Default: used 90%, inodes 90%.
    #[serde(default)]
    pub critical: ThresholdsConfig,
    /// Percentage points a value must fall below a threshold to clear it. Default 2.
    #[serde(default)]
    pub hysteresis: Option<Percent>,
    /// Time between checks; default 1m.
    #[serde(default)]
    pub interval: Option<String>,
    /// A crontab line instead of `interval`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Time zone of `schedule`; default UTC.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// Thresholds with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub used: Option<f64>,
    pub free: Option<u64>,
    pub inodes: Option<f64>,
}

impl Thresholds {
    fn from_config(c: &ThresholdsConfig, used: f64, inodes: f64) -> Thresholds {
        Thresholds {
            used: c.used.unwrap_or(Some(Percent(used))).map(|p| p.0),
            free: c.free.unwrap_or(None).map(|s| s.0),
            inodes: c.inodes.unwrap_or(Some(Percent(inodes))).map(|p| p.0),
        }
    }
}

/// How bad something is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Ok,
    Warning,
    Critical,
}

/// One filesystem's numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Percent of space used, as `df` shows it.
    pub used_pct: f64,
    /// Bytes available to unprivileged users.
    pub free: u64,
    /// Total size in bytes.
    pub size: u64,
    /// Percent of inodes used; `None` for filesystems without a fixed count.
    pub inodes_pct: Option<f64>,
}

/// The level of each measure, remembered between checks (and restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Levels {
    #[serde(default)]
    pub used: Level,
    #[serde(default)]
    pub free: Level,
    #[serde(default)]
    pub inodes: Level,
}

impl Levels {
    pub fn worst(&self) -> Level {
        self.used.max(self.free).max(self.inodes)
    }
}

/// The level of one measure where higher values are worse. A level is
/// entered when the value reaches its threshold, and kept until the value
/// falls `h` below it.
fn measure(prev: Level, value: f64, warning: Option<f64>, critical: Option<f64>, h: f64) -> Level {
    let reached =
        |t: Option<f64>, level: Level| t.is_some_and(|t| if prev >= level { value > t - h } else { value >= t });
    if reached(critical, Level::Critical) {
        Level::Critical
    } else if reached(warning, Level::Warning) {
        Level::Warning
    } else {
        Level::Ok
    }
}

/// The new levels of a filesystem. Pure: the whole hysteresis logic.
pub fn evaluate(prev: Levels, u: &Usage, warning: &Thresholds, critical: &Thresholds, hysteresis: f64) -> Levels {
    // Free space: lower is worse, so compare negated values; the hysteresis
    // is in percent of the filesystem's size.
    let h_bytes = u.size as f64 * hysteresis / 100.0;
    let neg = |t: Option<u64>| t.map(|t| -(t as f64));
    Levels {
        used: measure(prev.used, u.used_pct, warning.used, critical.used, hysteresis),
        free: measure(prev.free, -(u.free as f64), neg(warning.free), neg(critical.free), h_bytes),
        inodes: match u.inodes_pct {
            Some(p) => measure(prev.inodes, p, warning.inodes, critical.inodes, hysteresis),
            None => Level::Ok,
        },
    }
}

/// What a check needs from the system; a fake in tests.
pub trait Probe: Send {
    fn mount_table(&self) -> std::io::Result<String>;
    fn usage(&self, path: &str) -> std::io::Result<Option<Usage>>;
}

/// The real system: `/proc/self/mounts` and `statvfs`.
#[derive(Debug)]
pub struct System;

impl Probe for System {
    fn mount_table(&self) -> std::io::Result<String> {
        std::fs::read_to_string("/proc/self/mounts")
    }

    fn usage(&self, path: &str) -> std::io::Result<Option<Usage>> {
        let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
        let frsize = s.fragment_size() as u64;
        let blocks = s.blocks() as u64;
        if blocks == 0 {
            // Nothing to fill (a pseudo filesystem that slipped through).
            return Ok(None);
        }
        let used = blocks.saturating_sub(s.blocks_free() as u64);
        let avail = s.blocks_available() as u64;
        // df's formula: used / (used + available), rounded up.
        let used_pct = if used + avail == 0 { 0.0 } else { used as f64 * 100.0 / (used + avail) as f64 };
        let files = s.files() as u64;
        let inodes_pct =
            (files > 0).then(|| (files - (s.files_free() as u64).min(files)) as f64 * 100.0 / files as f64);
        Ok(Some(Usage { used_pct, free: avail * frsize, size: blocks * frsize, inodes_pct }))
    }
}

/// The saved state: each filesystem's levels by mount point.
type Saved = BTreeMap<String, Levels>;

/// The source.
pub struct Disk<P: Probe = System> {
    probe: P,
    mounts: Vec<String>,
    exclude: Vec<String>,
    include_pseudo: bool,
    warning: Thresholds,
    critical: Thresholds,
    hysteresis: f64,
    trigger: Trigger,
    levels: Saved,
    /// Mount points already reported as unreadable, so the log says it once.
    unreadable: std::collections::BTreeSet<String>,
}

impl<P: Probe> std::fmt::Debug for Disk<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk").field("mounts", &self.mounts).finish_non_exhaustive()
    }
}

fn trigger(cfg: &Config) -> Result<Trigger, Error> {
    Trigger::from_settings(
        cfg.interval.as_deref(),
        cfg.schedule.as_deref(),
        cfg.timezone.as_deref(),
        Duration::from_secs(60),
    )
    .map_err(|(key, msg)| Error::at(key, msg))
}

fn thresholds(cfg: &Config) -> Result<(Thresholds, Thresholds), Error> {
    let w = Thresholds::from_config(&cfg.warning, 80.0, 80.0);
    let c = Thresholds::from_config(&cfg.critical, 90.0, 90.0);
    if let (Some(w), Some(c)) = (w.used, c.used)
        && w > c
    {
        return Err(Error::at("warning.used", format!("{w}% is above critical.used ({c}%)")));
    }
    if let (Some(w), Some(c)) = (w.inodes, c.inodes)
        && w > c
    {
        return Err(Error::at("warning.inodes", format!("{w}% is above critical.inodes ({c}%)")));
    }
    if let (Some(w), Some(c)) = (w.free, c.free)
        && w < c
    {
        return Err(Error::at("warning.free", "must be more free space than critical.free"));
    }
    Ok((w, c))
}

fn human(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

impl<P: Probe> Disk<P> {
    /// A disk source on a given probe (tests use a fake one).
    pub fn with_probe(cfg: Config, probe: P, saved: Option<&str>) -> Result<Disk<P>, Error> {
        let (warning, critical) = thresholds(&cfg)?;
        let levels = saved.and_then(|s| serde_json::from_str::<Saved>(s).ok()).unwrap_or_default();
        Ok(Disk {
            probe,
            mounts: cfg.mounts.iter().map(|m| normalize(m)).collect(),
            exclude: cfg.exclude.iter().map(|m| normalize(m)).collect(),
            include_pseudo: cfg.include_pseudo,
            warning,
            critical,
            hysteresis: cfg.hysteresis.map_or(2.0, |p| p.0),
            trigger: trigger(&cfg)?,
            levels,
            unreadable: Default::default(),
        })
    }

    /// The filesystems to look at now.
    fn watched(&self, cx: Option<&Context>) -> Vec<mounts::Mount> {
        let table = match self.probe.mount_table() {
            Ok(t) => t,
            Err(e) => {
                if let Some(cx) = cx {
                    cx.log(LogLevel::Error, &format!("cannot read the mount table: {e}"));
                }
                return Vec::new();
            }
        };
        let (all, bad) = mounts::parse(&table);
        if let (Some(cx), false) = (cx, bad.is_empty()) {
            cx.log(LogLevel::Warn, &format!("skipped unreadable lines {bad:?} of the mount table"));
        }
        // The last mount on a path hides earlier ones.
        let mut by_path: BTreeMap<String, mounts::Mount> = BTreeMap::new();
        for m in all {
            by_path.insert(m.path.clone(), m);
        }
        if self.mounts.is_empty() {
            by_path
                .into_values()
                .filter(|m| self.include_pseudo || !mounts::is_pseudo(&m.fstype))
                .filter(|m| !self.exclude.contains(&m.path))
                .collect()
        } else {
            self.mounts
                .iter()
                .filter(|p| !self.exclude.contains(p))
                .map(|p| {
                    by_path.get(p).cloned().unwrap_or_else(|| mounts::Mount {
                        device: String::new(),
                        path: p.clone(),
                        fstype: String::new(),
                    })
                })
                .collect()
        }
    }

    /// One check: the events for filesystems whose level changed, and the
    /// state to save after them.
    pub fn check_once(&mut self, cx: Option<&Context>) -> (Vec<Event>, String) {
        let mut events = Vec::new();
        let mut seen = Saved::new();
        for m in self.watched(cx) {
            let usage = match self.probe.usage(&m.path) {
                Ok(Some(u)) => u,
                Ok(None) => continue,
                Err(e) => {
                    if self.unreadable.insert(m.path.clone())
                        && let Some(cx) = cx
                    {
                        cx.log(LogLevel::Warn, &format!("cannot check {}: {e}", m.path));
                    }
                    // Keep what we knew: a filesystem that cannot be read
                    // right now has not recovered.
                    if let Some(l) = self.levels.get(&m.path) {
                        seen.insert(m.path.clone(), *l);
                    }
                    continue;
                }
            };
            self.unreadable.remove(&m.path);
            let prev = self.levels.get(&m.path).copied().unwrap_or_default();
            let now = evaluate(prev, &usage, &self.warning, &self.critical, self.hysteresis);
            if let Some(cx) = cx {
                cx.log(
                    LogLevel::Debug,
                    &format!(
                        "checked {}: {:.1}% used, {} free, inodes {}: {:?}",
                        m.path,
                        usage.used_pct,
                        human(usage.free),
                        usage.inodes_pct.map_or("-".into(), |p| format!("{p:.1}%")),
                        now.worst()
                    ),
                );
            }
            if now.worst() != prev.worst() {
                events.push(self.event(&m, &usage, &now));
            }
            seen.insert(m.path.clone(), now);
        }
        // A filesystem no longer mounted (or no longer watched) that was in
        // trouble: its alert is over.
        for (path, l) in &self.levels {
            if !seen.contains_key(path) && l.worst() != Level::Ok {
                events.push(
                    Event::new(Severity::Resolved, format!("{path} is no longer mounted"))
                        .key(format!("mount:{path}"))
                        .label("mount", path.clone()),
                );
            }
        }
        self.levels = seen.into_iter().filter(|(_, l)| l.worst() != Level::Ok).collect();
        let state = serde_json::to_string(&self.levels).expect("levels are JSON");
        (events, state)
    }

    fn event(&self, m: &mounts::Mount, u: &Usage, l: &Levels) -> Event {
        let severity = match l.worst() {
            Level::Ok => Severity::Resolved,
            Level::Warning => Severity::Warning,
            Level::Critical => Severity::Critical,
        };
        let pct = format!("{:.0}", u.used_pct.floor());
        let summary = if l.inodes > l.used && l.inodes > l.free {
            format!("{} has used {:.0}% of its inodes", m.path, u.inodes_pct.unwrap_or_default())
        } else {
            format!("{} is {pct}% full ({} free)", m.path, human(u.free))
        };
        let mut e = Event::new(severity, summary)
            .key(format!("mount:{}", m.path))
            .label("mount", m.path.clone())
            .label("used_pct", pct)
            .label("free", human(u.free))
            .label("size", human(u.size));
        if let Some(p) = u.inodes_pct {
            e = e.label("inodes_pct", format!("{:.0}", p.floor()));
        }
        if !m.device.is_empty() {
            e = e.label("device", m.device.clone()).label("fstype", m.fstype.clone());
        }
        e
    }
}

/// Mount points compare without a trailing slash (except `/`).
fn normalize(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() { "/".into() } else { t.to_string() }
}

impl Check for Disk<System> {
    const NAME: &'static CStr = c"disk";
    const DESCRIPTION: &'static CStr =
        c"space and inode use of mounted filesystems, with warning and critical thresholds";
    type Config = Config;

    fn validate(cfg: &Config) -> Result<(), Error> {
        let mut problems: Vec<Error> = Vec::new();
        problems.extend(trigger(cfg).err());
        problems.extend(thresholds(cfg).err());
        for (i, m) in cfg.mounts.iter().chain(&cfg.exclude).enumerate() {
            if !m.starts_with('/') {
                let key = if i < cfg.mounts.len() {
                    format!("mounts[{i}]")
                } else {
                    format!("exclude[{}]", i - cfg.mounts.len())
                };
                problems.push(Error::at(key, format!("`{m}` is not an absolute path")));
            }
        }
        Error::all(problems)
    }

    fn new(cfg: Config, cx: &Context) -> Result<Self, Error> {
        Disk::with_probe(cfg, System, cx.saved_state().as_deref())
    }

    fn trigger(&self) -> Trigger {
        self.trigger.clone()
    }

    fn check(&mut self, cx: &Context) -> Result<Vec<Event>, Error> {
        let before = self.levels.clone();
        let (events, state) = self.check_once(Some(cx));
        // Emit here rather than return: the state must follow the events.
        for e in &events {
            // A full queue is rare for a source this quiet; try again shortly.
            let mut tries = 0;
            while let Err(alerter_plugin_sdk::EmitError::Backpressure) = cx.emit(e) {
                tries += 1;
                if tries > 100 || cx.wait_for_shutdown(Duration::from_millis(50)) {
                    // Not told: forget the change, so the next check finds it again.
                    self.levels = before;
                    return Ok(Vec::new());
                }
            }
        }
        let _ = cx.save_state(&state);
        Ok(Vec::new())
    }
}

#[cfg(not(feature = "dylib"))]
alerter_plugin_sdk::declare_builtin_source!(alerter_plugin_sdk::Periodic<Disk>);
#[cfg(feature = "dylib")]
alerter_plugin_sdk::declare_source!(alerter_plugin_sdk::Periodic<Disk>);

#[cfg(test)]
mod tests;
