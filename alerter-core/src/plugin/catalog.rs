//! The plugins available to a configuration: built-in ones and those found
//! in the plugin directories, each identified by the name it reports.
//!
//! A third-party plugin is never loaded into the process that scans for it:
//! `.so` files are inspected by `alerter plugin-host` in a child process,
//! and executables are asked directly, both through the plugin protocol.
//! A plugin that crashes while being inspected is refused, with the reason.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::discover::{self, CandidateKind, Refusal};
use super::ffi::Descriptor;
use super::protocol::{ConfigProblem, FromPlugin, PROTOCOL_VERSION, PluginMeta, ToPlugin};

/// How long a plugin process may take to answer at inspection or validation.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers kept from one probe, and bytes of its standard error.
const PROBE_REPLIES: usize = 16;
const PROBE_STDERR: usize = 4096;

/// The PATH plugin processes see: they get a clean environment.
pub const PLUGIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A plugin process ready to spawn. For a plugin file, it executes (or its
/// host loads) the descriptor the file was checked on, which must stay open
/// until the spawn: keep this value until then.
#[derive(Debug)]
pub struct Prepared {
    pub cmd: Command,
    checked: Option<OwnedFd>,
}

impl Prepared {
    /// The command, and the descriptor to keep open until it is spawned.
    pub fn into_parts(self) -> (Command, Option<OwnedFd>) {
        (self.cmd, self.checked)
    }
}

/// How a plugin is run.
#[derive(Debug, Clone)]
pub enum PluginKind {
    /// Linked into alerter.
    Builtin(Descriptor),
    /// A shared object in a plugin directory.
    SharedObject(PathBuf),
    /// An executable speaking the plugin protocol.
    Executable(PathBuf),
}

/// One usable plugin.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub meta: PluginMeta,
    pub kind: PluginKind,
    /// Of the file; `None` for built-ins.
    pub sha256: Option<String>,
}

impl Plugin {
    pub fn path(&self) -> Option<&Path> {
        match &self.kind {
            PluginKind::Builtin(_) => None,
            PluginKind::SharedObject(p) | PluginKind::Executable(p) => Some(p),
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            PluginKind::Builtin(_) => "built-in",
            PluginKind::SharedObject(_) => "shared object",
            PluginKind::Executable(_) => "executable",
        }
    }
}

/// What alerter knows how to load: its built-in plugins, and how to run
/// a plugin host for the others.
#[derive(Debug, Clone, Default)]
pub struct PluginRegistry {
    builtins: Vec<Descriptor>,
    /// The `alerter` binary, whose `plugin-host` subcommand loads `.so`
    /// plugins in a child process. Without it, `.so` plugins cannot be used
    /// (library tests run without one).
    host_exe: Option<PathBuf>,
}

impl PluginRegistry {
    pub fn new(builtins: Vec<Descriptor>, host_exe: Option<PathBuf>) -> PluginRegistry {
        PluginRegistry { builtins, host_exe }
    }

    /// No plugins at all.
    pub fn empty() -> PluginRegistry {
        PluginRegistry::default()
    }

    pub fn builtins(&self) -> &[Descriptor] {
        &self.builtins
    }

    pub fn host_exe(&self) -> Option<&Path> {
        self.host_exe.as_deref()
    }

    /// Finds every plugin in `dirs`, with the reason for each refusal.
    pub fn scan(&self, dirs: &[PathBuf]) -> PluginSet {
        let mut set = PluginSet { plugins: BTreeMap::new(), refused: Vec::new(), host_exe: self.host_exe.clone() };
        for d in &self.builtins {
            set.plugins.insert(
                d.name().to_string(),
                Plugin {
                    meta: PluginMeta {
                        name: d.name().to_string(),
                        version: d.version().to_string(),
                        description: Some(d.description().to_string()).filter(|s| !s.is_empty()),
                        abi: Some(d.abi()),
                    },
                    kind: PluginKind::Builtin(*d),
                    sha256: None,
                },
            );
        }
        let (candidates, refused) = discover::scan(dirs);
        set.refused = refused;
        for c in candidates {
            let kind = match c.kind {
                CandidateKind::SharedObject => PluginKind::SharedObject(c.path.clone()),
                CandidateKind::Executable => PluginKind::Executable(c.path.clone()),
            };
            let mut prepared = match set.command_for(&kind, Some(&c.sha256)) {
                Ok(p) => p,
                Err(reason) => {
                    set.refused.push(Refusal { path: c.path, reason });
                    continue;
                }
            };
            let meta = match probe(&mut prepared.cmd, &[ToPlugin::Hello { protocol: PROTOCOL_VERSION }]) {
                Ok(replies) => match replies.into_iter().next() {
                    Some(FromPlugin::Hello { plugin, .. }) => plugin,
                    Some(FromPlugin::Refused { error }) => {
                        set.refused.push(Refusal { path: c.path, reason: error });
                        continue;
                    }
                    other => {
                        set.refused.push(Refusal {
                            path: c.path,
                            reason: format!("not an alerter plugin: it answered {other:?} to hello"),
                        });
                        continue;
                    }
                },
                Err(reason) => {
                    set.refused.push(Refusal { path: c.path, reason });
                    continue;
                }
            };
            if let Some(existing) = set.plugins.get(&meta.name) {
                let by = match existing.path() {
                    Some(p) => p.display().to_string(),
                    None => "the built-in plugin".to_string(),
                };
                set.refused.push(Refusal {
                    path: c.path,
                    reason: format!("name clash: plugin `{}` is already provided by {by}", meta.name),
                });
                continue;
            }
            set.plugins.insert(meta.name.clone(), Plugin { meta, kind, sha256: Some(c.sha256) });
        }
        set
    }
}

/// The plugins found for one configuration.
#[derive(Debug, Clone, Default)]
pub struct PluginSet {
    pub plugins: BTreeMap<String, Plugin>,
    pub refused: Vec<Refusal>,
    host_exe: Option<PathBuf>,
}

impl PluginSet {
    /// The command that runs a plugin as a protocol-speaking child process,
    /// in a clean environment. A plugin file is opened and checked now
    /// (`discover::open_for_run`, against `sha256` when given), so this is
    /// called afresh for every spawn; `Err` says why the file is refused.
    pub fn command_for(&self, kind: &PluginKind, sha256: Option<&str>) -> Result<Prepared, String> {
        let host =
            || self.host_exe.as_ref().ok_or_else(|| "cannot find the alerter binary to host the plugin".to_string());
        let (mut cmd, checked) = match kind {
            PluginKind::Executable(path) => {
                let fd = discover::open_for_run(path, sha256)?;
                (alerter_spawn::fd_exec::command_for_fd(&fd, &path.display().to_string()), Some(fd))
            }
            PluginKind::SharedObject(path) => {
                let fd = discover::open_for_run(path, sha256)?;
                let mut c = Command::new(host()?);
                // The path names it in `ps`; the host loads the descriptor.
                c.arg("plugin-host").arg(path).arg("--fd").arg(std::os::fd::AsRawFd::as_raw_fd(&fd).to_string());
                alerter_spawn::fd_exec::keep_open_across_exec(&mut c, &fd);
                (c, Some(fd))
            }
            PluginKind::Builtin(d) => {
                let mut c = Command::new(host()?);
                c.arg("plugin-host").arg("--builtin").arg(d.name());
                (c, None)
            }
        };
        cmd.env_clear().env("PATH", PLUGIN_PATH);
        // Times in the plugin's messages are the machine's.
        if let Some(tz) = std::env::var_os("TZ") {
            cmd.env("TZ", tz);
        }
        Ok(Prepared { cmd, checked })
    }

    /// Checks a source's settings with the plugin's own validation. Built-in
    /// plugins are asked in-process; others in a child process.
    pub fn validate(&self, name: &str, settings: &serde_json::Value) -> Vec<ConfigProblem> {
        let Some(plugin) = self.plugins.get(name) else {
            return vec![ConfigProblem { path: None, message: format!("no plugin `{name}`") }];
        };
        match &plugin.kind {
            PluginKind::Builtin(d) => super::ffi::validate(d, &settings.to_string()).err().unwrap_or_default(),
            kind => {
                let mut prepared = match self.command_for(kind, plugin.sha256.as_deref()) {
                    Ok(p) => p,
                    Err(e) => return vec![ConfigProblem { path: None, message: format!("cannot validate: {e}") }],
                };
                let msgs =
                    [ToPlugin::Hello { protocol: PROTOCOL_VERSION }, ToPlugin::Validate { config: settings.clone() }];
                match probe(&mut prepared.cmd, &msgs) {
                    Ok(replies) => replies
                        .into_iter()
                        .find_map(|r| match r {
                            FromPlugin::Validated { errors } => Some(errors),
                            _ => None,
                        })
                        .unwrap_or_else(|| {
                            vec![ConfigProblem { path: None, message: "the plugin did not answer `validate`".into() }]
                        }),
                    Err(e) => vec![ConfigProblem { path: None, message: format!("cannot validate: {e}") }],
                }
            }
        }
    }
}

/// Runs a plugin process, sends `msgs`, closes its input and collects its
/// answers until it exits (or the timeout, after which it is killed).
fn probe(cmd: &mut Command, msgs: &[ToPlugin]) -> Result<Vec<FromPlugin>, String> {
    probe_within(cmd, msgs, PROBE_TIMEOUT)
}

fn probe_within(cmd: &mut Command, msgs: &[ToPlugin], timeout: Duration) -> Result<Vec<FromPlugin>, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let input: String = msgs.iter().map(ToPlugin::line).collect();
    // Writing may fail if the plugin exits early; its exit status says why.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Lines are cut at the protocol's limit, and only the first few
        // answers are kept: a plugin cannot grow our memory.
        let mut replies = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut reader).take(super::protocol::MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line.last() != Some(&b'\n') && line.len() > super::protocol::MAX_LINE {
                // Overlong: skip to the end of the line, a bounded piece at a time.
                loop {
                    line.clear();
                    match (&mut reader).take(super::protocol::MAX_LINE as u64).read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line.last() == Some(&b'\n') => break,
                        Ok(_) => {}
                    }
                }
                continue;
            }
            if replies.len() < PROBE_REPLIES
                && let Ok(m) = serde_json::from_slice::<FromPlugin>(&line)
            {
                replies.push(m);
            }
        }
        let _ = tx.send(replies);
    });
    let (err_tx, err_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read it all (a plugin blocked on a full pipe would never exit) and
        // keep the end, where the reason usually is.
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        let mut stderr = stderr;
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * PROBE_STDERR {
                tail.drain(..tail.len() - PROBE_STDERR);
            }
        }
        let tail = &tail[tail.len().saturating_sub(PROBE_STDERR)..];
        let _ = err_tx.send(String::from_utf8_lossy(tail).into_owned());
    });
    let deadline = Instant::now() + timeout;
    let replies = match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no answer within {timeout:?}"));
        }
    };
    // Its output is closed; it has until the deadline to exit.
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("it closed its output but did not exit within {timeout:?}"));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    // A child it left behind may hold its standard error open: wait no
    // longer than the deadline (and a moment) for the tail.
    let stderr = err_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(100))
        .unwrap_or_default();
    if replies.is_empty() {
        let how = describe_exit(status);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
        return Err(if last.is_empty() {
            format!("no answer; it {how}")
        } else {
            format!("no answer; it {how}: {last}")
        });
    }
    Ok(replies)
}

/// "exited with status 3", "was killed by signal SIGSEGV".
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => format!("was killed by signal {s}"),
            Err(_) => format!("was killed by signal {sig}"),
        },
        _ => "ended".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    const HELLO: &str = r#"{"op":"hello","protocol":1,"plugin":{"name":"p","version":"1"}}"#;

    #[test]
    fn a_probe_skips_overlong_lines_and_keeps_a_few_answers() {
        // 50 MB without a line break, then twenty answers.
        let script =
            format!("head -c 50000000 /dev/zero | tr '\\0' x; echo; for i in $(seq 20); do echo '{HELLO}'; done");
        let replies = probe_within(&mut sh(&script), &[], Duration::from_secs(30)).unwrap();
        assert_eq!(replies.len(), PROBE_REPLIES);
        assert!(matches!(&replies[0], FromPlugin::Hello { plugin, .. } if plugin.name == "p"));
    }

    #[test]
    fn a_probe_does_not_wait_for_a_plugin_that_will_not_exit() {
        let t = Instant::now();
        let e = probe_within(&mut sh(&format!("echo '{HELLO}'; exec >&-; sleep 3")), &[], Duration::from_millis(500))
            .unwrap_err();
        assert!(e.contains("closed its output but did not exit within"), "{e}");
        let e = probe_within(&mut sh("sleep 3"), &[], Duration::from_millis(500)).unwrap_err();
        assert!(e.contains("no answer within"), "{e}");
        // A child holding standard error does not hold us either.
        let e = probe_within(&mut sh("sleep 3 >/dev/null & exit 3"), &[], Duration::from_millis(500)).unwrap_err();
        assert_eq!(e, "no answer; it exited with status 3");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }
}
