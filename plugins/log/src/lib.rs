//! The `log` source: follows log files and turns matching lines into events.
//!
//! Files are named by paths and globs; their directories are watched with
//! inotify (through `notify`), so the source sleeps until something is
//! written, and a new file matching a glob is picked up when it appears.
//! [`follow`] reads each line once, through rotations; [`matcher`] matches
//! all patterns in one pass. Each matching line is a one-shot event with
//! the pattern's severity, its named captures as labels, and the line (or
//! the pattern's `summary` with `{capture}` filled in) as summary.
//!
//! Exactly once: after the events of a batch of lines, the source saves
//! the files' positions as its state; the daemon commits that state in the
//! same transaction as what those events caused, and hands it back at the
//! next start. A line whose event was not taken (a full queue, shutdown)
//! is read again, never skipped.

pub mod follow;
pub mod matcher;

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// File events queued for the source's loop at most (see `watch_queue`).
/// Tiny in tests, so that they drop events.
const WATCH_QUEUE: usize = if cfg!(test) { 2 } else { 1024 };

/// The source's end of the queue of file events.
struct WatchQueue {
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
    overflowed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl WatchQueue {
    /// Whether events were dropped since the last call.
    fn take_overflow(&self) -> bool {
        self.overflowed.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

/// A bounded queue of file events: the watcher's handler and the source's
/// end. A busy file beside the followed ones (the daemon's own output in
/// the same directory, say) makes an event per write, and an unbounded
/// queue held them all (15 MB during a 100,000-line storm). What does not
/// fit is dropped and noted; the source then reads every followed file,
/// which is all those events could have asked for.
fn watch_queue(capacity: usize) -> (impl FnMut(notify::Result<notify::Event>) + Send + 'static, WatchQueue) {
    let (tx, rx) = mpsc::sync_channel(capacity);
    let overflowed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = overflowed.clone();
    let push = move |ev| {
        if let Err(mpsc::TrySendError::Full(_)) = tx.try_send(ev) {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    };
    (push, WatchQueue { rx, overflowed })
}

use alerter_plugin_sdk::{Context, EmitError, Error, Event, Level as LogLevel, Severity, Source};
use follow::{Follower, Lines, Notice, Saved, StartAt};
use matcher::Matcher;
use serde::Deserialize;

/// One pattern.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// A name for it (label `pattern`); default `pattern-N`.
    #[serde(default)]
    pub name: Option<String>,
    /// The regular expression (Rust syntax; bytewise unless it says `(?u)`).
    pub regex: String,
    /// Default `warning`.
    #[serde(default)]
    pub severity: Option<String>,
    /// The event's summary, with `{name}` for named captures (and `{line}`,
    /// `{file}`); default: the line.
    #[serde(default)]
    pub summary: Option<String>,
    /// What makes two lines "the same" for the rules' repeat throttling,
    /// e.g. `"{ip}"`; default: the whole line.
    #[serde(default)]
    pub key: Option<String>,
}

/// The settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Files to follow: paths or globs (`/var/log/nginx/*.log`).
    pub paths: Vec<String>,
    /// Lines to look for; a plain string is a regex with the defaults.
    pub patterns: Vec<PatternOrRegex>,
    /// Lines matching any of these are never reported.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Where to start in a file that exists when following begins and that
    /// has no saved position: `end` (default) or `beginning`.
    #[serde(default)]
    pub start_at: StartAt,
    /// Lines longer than this are cut; default 16 KiB.
    #[serde(default)]
    pub max_line: Option<String>,
}

/// A pattern written as a plain regex, or with settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PatternOrRegex {
    Regex(String),
    Full(PatternConfig),
}

impl PatternOrRegex {
    fn config(&self) -> PatternConfig {
        match self {
            PatternOrRegex::Regex(r) => {
                PatternConfig { name: None, regex: r.clone(), severity: None, summary: None, key: None }
            }
            PatternOrRegex::Full(p) => p.clone(),
        }
    }
}

/// A pattern, ready.
#[derive(Debug, Clone)]
struct Pattern {
    name: String,
    severity: Severity,
    summary: Option<String>,
    key: Option<String>,
}

struct Checked {
    matcher: Matcher,
    patterns: Vec<Pattern>,
    max_line: usize,
}

fn check_config(cfg: &Config) -> Result<Checked, Error> {
    // Every problem is collected, so `alerter check` shows them all.
    let mut problems = Vec::new();
    if cfg.paths.is_empty() {
        problems.push(Error::at("paths", "name at least one file or glob to follow"));
    }
    for (i, p) in cfg.paths.iter().enumerate() {
        if !p.starts_with('/') {
            problems.push(Error::at(format!("paths[{i}]"), format!("`{p}` is not an absolute path")));
        } else if let Err(e) = glob::Pattern::new(p) {
            problems.push(Error::at(format!("paths[{i}]"), format!("`{p}` is not a valid glob: {e}")));
        }
    }
    let configs: Vec<PatternConfig> = cfg.patterns.iter().map(PatternOrRegex::config).collect();
    let regexes: Vec<&str> = configs.iter().map(|p| p.regex.as_str()).collect();
    let ignore: Vec<&str> = cfg.ignore.iter().map(String::as_str).collect();
    let matcher = if regexes.is_empty() {
        problems.push(Error::at("patterns", "give at least one pattern"));
        for e in matcher::check(&ignore) {
            problems.push(Error::at(format!("ignore[{}]", e.index), e.message));
        }
        None
    } else {
        match Matcher::new(&regexes, &ignore) {
            Ok(m) => Some(m),
            Err(errors) => {
                for e in errors {
                    if e.index < regexes.len() {
                        let path = match &cfg.patterns[e.index] {
                            PatternOrRegex::Regex(_) => format!("patterns[{}]", e.index),
                            PatternOrRegex::Full(_) => format!("patterns[{}].regex", e.index),
                        };
                        problems.push(Error::at(path, e.message));
                    } else {
                        problems.push(Error::at(format!("ignore[{}]", e.index - regexes.len()), e.message));
                    }
                }
                None
            }
        }
    };
    let mut patterns = Vec::new();
    for (i, p) in configs.iter().enumerate() {
        let severity = match p.severity.as_deref().unwrap_or("warning") {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            other => {
                problems.push(Error::at(
                    format!("patterns[{i}].severity"),
                    format!("`{other}`: write info, warning or critical"),
                ));
                Severity::Warning
            }
        };
        patterns.push(Pattern {
            name: p.name.clone().unwrap_or_else(|| format!("pattern-{}", i + 1)),
            severity,
            summary: p.summary.clone(),
            key: p.key.clone(),
        });
    }
    let max_line = match &cfg.max_line {
        None => 16 * 1024,
        Some(t) => match t.parse::<bytesize::ByteSize>() {
            Ok(b) => b.as_u64().clamp(64, 1 << 20) as usize,
            Err(_) => {
                problems.push(Error::at("max_line", format!("`{t}` is not a size; write e.g. \"16 KiB\"")));
                0
            }
        },
    };
    Error::all(problems)?;
    Ok(Checked { matcher: matcher.expect("no problems"), patterns, max_line })
}

/// `{name}` replaced by captures (and `line`, `file`); unknown names stay.
fn fill(template: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                match vars.iter().find(|(k, _)| k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&rest[open..open + close + 2]),
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Turns lines into events and hands them over.
struct Emitter<'a> {
    cx: &'a Context,
    matcher: &'a Matcher,
    patterns: &'a [Pattern],
    /// Events handed over since the last saved state.
    emitted: usize,
    stopping: bool,
}

impl Emitter<'_> {
    fn event(&self, path: &str, line: &[u8], pattern: usize, cut: bool) -> Event {
        let p = &self.patterns[pattern];
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        let mut vars = self.matcher.captures(pattern, line);
        let captures = vars.len();
        vars.push(("line".into(), text.to_string()));
        vars.push(("file".into(), path.to_string()));
        let summary = match &p.summary {
            Some(t) => fill(t, &vars),
            None => text.to_string(),
        };
        let key = match &p.key {
            Some(t) => format!("{}:{}", p.name, fill(t, &vars)),
            None => format!("{}:{:016x}", p.name, xxhash_rust::xxh3::xxh3_64(line)),
        };
        let mut e = Event::new(p.severity, summary)
            .oneshot()
            .key(key)
            .label("file", path.to_string())
            .label("pattern", p.name.clone());
        for (k, v) in vars.into_iter().take(captures) {
            e = e.label(k, v);
        }
        if p.summary.is_some() {
            e = e.details(text.to_string());
        }
        if cut {
            e = e.label("cut", "true");
        }
        e
    }
}

impl Lines for Emitter<'_> {
    fn line(&mut self, path: &str, line: &[u8], cut: bool) -> bool {
        let Some(pattern) = self.matcher.line(line) else { return true };
        let json = self.event(path, line, pattern, cut).to_json();
        // A full queue means the daemon is busy: wait for room rather than
        // drop the line. The follower keeps its position before this line
        // until it is taken.
        loop {
            match self.cx.emit_json(&json) {
                Ok(()) => {
                    self.emitted += 1;
                    return true;
                }
                Err(EmitError::Backpressure) => {
                    if self.cx.wait_for_shutdown(Duration::from_millis(5)) {
                        self.stopping = true;
                        return false;
                    }
                }
                Err(EmitError::ShuttingDown) => {
                    self.stopping = true;
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}

/// The source.
pub struct Log {
    cfg: Config,
    matcher: Matcher,
    patterns: Vec<Pattern>,
    follower: Follower,
    /// Paths found by the globs, followed.
    files: BTreeSet<String>,
    /// Directories watched.
    dirs: BTreeSet<PathBuf>,
    /// The last state handed over, to save only changes.
    last_saved: Option<String>,
    /// Paths that could not be read, with the error last logged for each:
    /// an unreadable file is retried whenever it changes, and the log says
    /// so once, not on every write (auth.log is written all the time).
    unreadable: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("paths", &self.cfg.paths).finish_non_exhaustive()
    }
}

/// The directory to watch for a path or glob: the longest leading part
/// without glob characters.
fn watch_dir(pattern: &str) -> PathBuf {
    let mut dir = PathBuf::from("/");
    for part in Path::new(pattern).parent().unwrap_or(Path::new("/")).components().skip(1) {
        let s = part.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[', ']']) {
            break;
        }
        dir.push(part);
    }
    dir
}

impl Log {
    fn matching(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for p in &self.cfg.paths {
            if p.contains(['*', '?', '[']) {
                if let Ok(paths) = glob::glob(p) {
                    out.extend(paths.flatten().filter(|p| p.is_file()).map(|p| p.display().to_string()));
                }
            } else {
                out.insert(p.clone());
            }
        }
        out
    }

    /// Reads what is new in `paths`; saves the state after the events.
    fn poll(&mut self, cx: &Context, paths: &BTreeSet<String>, start: StartAt, retired: bool) -> bool {
        let mut em = Emitter { cx, matcher: &self.matcher, patterns: &self.patterns, emitted: 0, stopping: false };
        for p in paths {
            // A file that appears after following began is new: all of it counts.
            let start = if self.follower.is_followed(p) { StartAt::End } else { start };
            match self.follower.poll(p, start, &mut em) {
                Ok(going_on) => {
                    if self.unreadable.remove(p).is_some() {
                        cx.log(LogLevel::Info, &format!("{p} can be read now"));
                    }
                    if !going_on {
                        break;
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    if self.unreadable.get(p) != Some(&msg) {
                        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                            "; give alerter's user read access (on Debian and Ubuntu: the `adm` group) or run it as root"
                        } else {
                            ""
                        };
                        cx.log(
                            LogLevel::Warn,
                            &format!("cannot read {p}: {msg}{hint}; tried again whenever it changes"),
                        );
                        self.unreadable.insert(p.clone(), msg);
                    }
                }
            }
        }
        if retired
            && !em.stopping
            && let Err(e) = self.follower.poll_all_retired(&mut em)
        {
            cx.log(LogLevel::Warn, &format!("cannot read a rotated file: {e}"));
        }
        let stopping = em.stopping;
        for n in self.follower.notices.drain(..) {
            match n {
                Notice::Rotated { path, how } => cx.log(LogLevel::Info, &format!("{path} was rotated ({how})")),
                Notice::Lost { path, why } => {
                    cx.log(LogLevel::Warn, &format!("lines of {path} may have been missed: {why}"))
                }
                Notice::CutLine { path, at } => {
                    cx.log(LogLevel::Debug, &format!("{path}: a line at byte {at} is longer than max_line; cut"))
                }
            }
        }
        self.save(cx);
        !stopping
    }

    fn save(&mut self, cx: &Context) {
        let state = serde_json::to_string(&self.follower.saved()).expect("positions are JSON");
        if self.last_saved.as_deref() == Some(&state) {
            return;
        }
        // Taken even while stopping; a full queue drains quickly.
        for _ in 0..200 {
            match cx.save_state(&state) {
                Ok(()) => {
                    self.last_saved = Some(state);
                    return;
                }
                Err(EmitError::Backpressure) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => return,
            }
        }
    }
}

impl Source for Log {
    const NAME: &'static CStr = c"log";
    const DESCRIPTION: &'static CStr =
        c"follows log files through rotation and reports lines matching patterns, each line exactly once";
    type Config = Config;

    fn validate(cfg: &Config) -> Result<(), Error> {
        check_config(cfg).map(drop)
    }

    fn new(cfg: Config, cx: &Context) -> Result<Self, Error> {
        let c = check_config(&cfg)?;
        let saved: Saved = cx.saved_state().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        let dirs = cfg.paths.iter().map(|p| watch_dir(p)).collect();
        Ok(Log {
            matcher: c.matcher,
            patterns: c.patterns,
            follower: Follower::new(saved, c.max_line),
            files: BTreeSet::new(),
            dirs,
            last_saved: cx.saved_state(),
            unreadable: Default::default(),
            cfg,
        })
    }

    fn run(&mut self, cx: &Context) -> Result<(), Error> {
        use notify::Watcher;
        let (push, queue) = watch_queue(WATCH_QUEUE);
        let rx = &queue.rx;
        let mut watcher =
            notify::recommended_watcher(push).map_err(|e| Error::msg(format!("cannot watch files (inotify): {e}")))?;
        let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
        let watch_all =
            |watcher: &mut notify::RecommendedWatcher, dirs: &BTreeSet<PathBuf>, watched: &mut BTreeSet<PathBuf>| {
                for d in dirs {
                    if !watched.contains(d) && watcher.watch(d, notify::RecursiveMode::NonRecursive).is_ok() {
                        watched.insert(d.clone());
                    }
                }
            };
        watch_all(&mut watcher, &self.dirs, &mut watched);
        for d in self.dirs.iter().filter(|d| !watched.contains(*d)) {
            cx.log(LogLevel::Warn, &format!("{} cannot be watched yet (missing?); checking every 10 s", d.display()));
        }
        // The first look: files there now start at `start_at`.
        self.files = self.matching();
        let files = self.files.clone();
        if !self.poll(cx, &files, self.cfg.start_at, true) {
            return Ok(());
        }
        let (followed, absent): (Vec<&String>, Vec<&String>) =
            self.files.iter().filter(|p| !self.unreadable.contains_key(*p)).partition(|p| self.follower.is_followed(p));
        cx.log(LogLevel::Info, &format!("following {} files", followed.len()));
        for p in absent {
            cx.log(LogLevel::Info, &format!("{p} does not exist yet; it is read from its start when it appears"));
        }
        loop {
            // Sleep until something happens in a watched directory. Wake now
            // and then only to notice a stop request, to retry directories
            // that could not be watched, and while rotated files are open.
            let tick = if self.follower.has_retired() || watched.len() < self.dirs.len() {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(500)
            };
            let mut touched: BTreeSet<String> = BTreeSet::new();
            let mut rescan = false;
            match rx.recv_timeout(tick) {
                Ok(first) => {
                    let mut handle = |ev: notify::Result<notify::Event>| match ev {
                        Ok(ev) => {
                            if matches!(
                                ev.kind,
                                notify::EventKind::Create(_)
                                    | notify::EventKind::Modify(notify::event::ModifyKind::Name(_))
                                    | notify::EventKind::Remove(_)
                            ) {
                                rescan = true;
                            }
                            touched.extend(ev.paths.iter().map(|p| p.display().to_string()));
                        }
                        Err(_) => rescan = true,
                    };
                    handle(first);
                    while let Ok(ev) = rx.try_recv() {
                        handle(ev);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if cx.should_stop() {
                        return Ok(());
                    }
                    if watched.len() < self.dirs.len() {
                        watch_all(&mut watcher, &self.dirs, &mut watched);
                        rescan = true;
                    }
                    if !self.follower.has_retired() && !rescan {
                        continue;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::msg("the file watcher stopped"));
                }
            }
            if cx.should_stop() {
                return Ok(());
            }
            let mut due: BTreeSet<String> = self.files.intersection(&touched).cloned().collect();
            if queue.take_overflow() {
                // Events were dropped: any followed file may have grown, and
                // one may have appeared.
                due.extend(self.files.iter().cloned());
                rescan = true;
            }
            if rescan {
                let now = self.matching();
                // New files (and rotated-to ones) are read from their start.
                due.extend(now.iter().cloned());
                self.files = now;
            }
            // Rotated files live on under other names; their events name those.
            let retired = self.follower.has_retired();
            if !self.poll(cx, &due, StartAt::Beginning, retired) {
                return Ok(());
            }
        }
    }
}

#[cfg(not(feature = "dylib"))]
alerter_plugin_sdk::declare_builtin_source!(Log);
#[cfg(feature = "dylib")]
alerter_plugin_sdk::declare_source!(Log);

#[cfg(test)]
mod tests {
    use super::*;
    use alerter_plugin_sdk::testing;
    use serde_json::json;

    #[test]
    fn fill_replaces_known_names_only() {
        let vars = vec![("ip".to_string(), "10.0.0.1".to_string()), ("user".to_string(), "root".to_string())];
        assert_eq!(fill("{user} from {ip}", &vars), "root from 10.0.0.1");
        assert_eq!(fill("{nope} {ip", &vars), "{nope} {ip");
        assert_eq!(fill("", &vars), "");
    }

    #[test]
    fn watch_dirs_stop_at_globs() {
        assert_eq!(watch_dir("/var/log/syslog"), PathBuf::from("/var/log"));
        assert_eq!(watch_dir("/var/log/nginx/*.log"), PathBuf::from("/var/log/nginx"));
        assert_eq!(watch_dir("/srv/*/logs/app.log"), PathBuf::from("/srv"));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let d = super::descriptor();
        let err = |v| testing::validate(d, v).unwrap_err();
        assert!(err(json!({"paths": [], "patterns": ["x"]})).contains("paths"));
        assert!(err(json!({"paths": ["var/log/x"], "patterns": ["x"]})).contains("paths[0]"));
        assert!(err(json!({"paths": ["/x"], "patterns": []})).contains("patterns"));
        assert!(err(json!({"paths": ["/x"], "patterns": ["ok", "(bad"]})).contains("patterns[1]"));
        assert!(err(json!({"paths": ["/x"], "patterns": [{"regex": "(bad"}]})).contains("patterns[0].regex"));
        assert!(err(json!({"paths": ["/x"], "patterns": ["x"], "ignore": ["[z-a]"]})).contains("ignore[0]"));
        assert!(err(json!({"paths": ["/x"], "patterns": [{"regex": "x", "severity": "dire"}]})).contains("severity"));
        assert!(err(json!({"paths": ["/x"], "patterns": ["x"], "start_at": "middle"})).contains("start_at"));
        assert!(err(json!({"paths": ["/x"], "patterns": ["x"], "max_line": "huge"})).contains("max_line"));
        assert!(
            testing::validate(
                d,
                json!({"paths": ["/var/log/*.log"], "patterns": ["error", {"regex": "fail", "severity": "critical"}]})
            )
            .is_ok()
        );
    }

    #[test]
    fn an_unreadable_file_is_reported_once_not_on_every_change() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        // A symlink to itself: reading it fails (ELOOP) with an error other
        // than "not found", as a file without read permission does for a
        // user other than root.
        let bad = dir.path().join("loop.log");
        std::os::unix::fs::symlink(&bad, &bad).unwrap();
        let good = dir.path().join("good.log");
        std::fs::write(&good, "").unwrap();
        let writer = {
            let (dir, good) = (dir.path().to_path_buf(), good.clone());
            std::thread::spawn(move || {
                for i in 0..15 {
                    std::thread::sleep(Duration::from_millis(100));
                    // A new file in the directory: every path is looked at again.
                    std::fs::write(dir.join(format!("other-{i}")), "").unwrap();
                    let mut f = std::fs::OpenOptions::new().append(true).open(&good).unwrap();
                    writeln!(f, "boom {i}").unwrap();
                }
            })
        };
        let out = testing::run(
            super::descriptor(),
            json!({"paths": [bad, good], "patterns": ["boom"]}),
            testing::Stop::After(Duration::from_secs(2)),
        );
        writer.join().unwrap();
        assert!(out.events.len() >= 2, "the files were looked at again and again: {:?}", out.events);
        let warnings: Vec<_> = out.logs.iter().filter(|(_, m)| m.contains("cannot read")).collect();
        assert_eq!(warnings.len(), 1, "one warning, not one per change: {warnings:?}");
        assert!(warnings[0].1.contains("loop.log"), "{warnings:?}");
    }

    /// The queue of file events holds what fits and notes what it dropped.
    #[test]
    fn the_watch_queue_is_bounded_and_notes_what_it_drops() {
        let (mut push, q) = watch_queue(2);
        assert!(!q.take_overflow());
        for _ in 0..3 {
            push(Ok(notify::Event::default()));
        }
        assert_eq!(q.rx.try_iter().count(), 2);
        assert!(q.take_overflow(), "the third was dropped");
        assert!(!q.take_overflow(), "noted once");
        push(Ok(notify::Event::default()));
        assert_eq!(q.rx.try_iter().count(), 1);
        assert!(!q.take_overflow());
    }

    /// A busy file beside the followed one (an event per write) with a
    /// queue of two file events: whatever the watcher drops, no line of
    /// the followed file is missed.
    #[test]
    fn a_busy_neighbour_overflows_the_event_queue_and_no_line_is_missed() {
        use std::io::Write;
        const LINES: usize = 200;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        std::fs::write(&log, "").unwrap();
        let writer = {
            let (dir, log) = (dir.path().to_path_buf(), log.clone());
            std::thread::spawn(move || {
                // Give the source time to start following.
                std::thread::sleep(Duration::from_millis(300));
                let mut busy = std::fs::File::create(dir.join("busy.out")).unwrap();
                let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
                // Each line followed by a burst of noise: its own event
                // finds the queue full more often than not, the last one's
                // included, and nothing written later would make up for it.
                for i in 0..LINES {
                    writeln!(f, "ERROR {i}").unwrap();
                    for _ in 0..200 {
                        writeln!(busy, "noise").unwrap();
                    }
                }
            })
        };
        let out = testing::run(
            super::descriptor(),
            json!({"paths": [log], "patterns": [{"name": "e", "regex": "ERROR (?P<n>[0-9]+)", "key": "{n}"}]}),
            testing::Stop::After(Duration::from_secs(3)),
        );
        writer.join().unwrap();
        let got: std::collections::BTreeSet<String> =
            out.events.iter().map(|e| e["labels"]["n"].as_str().unwrap().to_string()).collect();
        assert_eq!(got.len(), LINES, "every line once: {} of {LINES}", got.len());
    }

    #[test]
    fn lines_become_events_with_captures_and_the_state_follows() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("auth.log");
        std::fs::write(
            &log,
            "ok\nsshd[1]: Failed password for root from 10.0.0.1 port 22\nCRON noise Failed password for x from 1.2.3.4\n",
        )
        .unwrap();
        let out = testing::run(
            super::descriptor(),
            json!({
                "paths": [log],
                "start_at": "beginning",
                "ignore": ["^CRON"],
                "patterns": [{"name": "ssh", "regex": r"Failed password for (?P<user>\S+) from (?P<ip>[0-9.]+)", "summary": "{user} from {ip}", "key": "{ip}"}],
            }),
            testing::Stop::AfterEvents(1),
        );
        let e = &out.events[0];
        assert_eq!(e["summary"], "root from 10.0.0.1");
        assert_eq!(e["labels"]["ip"], "10.0.0.1");
        assert_eq!(e["labels"]["pattern"], "ssh");
        assert_eq!(e["key"], "ssh:10.0.0.1");
        assert_eq!(e["oneshot"], true);
        assert!(e["details"].as_str().unwrap().contains("sshd[1]"));
        // The position after the event was saved (the whole file was read).
        let saved: Saved = serde_json::from_str(out.states.last().unwrap()).unwrap();
        assert_eq!(saved[log.to_str().unwrap()].offset, std::fs::metadata(&log).unwrap().len());
    }
}
