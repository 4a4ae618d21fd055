//! The plugins available to a configuration: built-in ones and those found
//! in the plugin directories, each identified by the name it reports.
//!
//! A third-party plugin is never loaded into the process that scans for it:
//! `.so` files are inspected by `alerter plugin-host` in a child process,
//! and executables are asked directly, both through the plugin protocol.
//! A plugin that crashes while being inspected is refused, with the reason.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::discover::{self, CandidateKind, Refusal};
use super::ffi::Descriptor;
use super::protocol::{ConfigProblem, FromPlugin, PROTOCOL_VERSION, PluginMeta, ToPlugin};

/// How long a plugin process may take to answer at inspection or validation.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

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
            let Some(mut cmd) = set.command_for(&kind) else {
                set.refused.push(Refusal {
                    path: c.path,
                    reason: "cannot inspect a .so without the alerter binary's plugin host".into(),
                });
                continue;
            };
            let meta = match probe(&mut cmd, &[ToPlugin::Hello { protocol: PROTOCOL_VERSION }]) {
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
    /// The command that runs a plugin as a protocol-speaking child process.
    pub fn command_for(&self, kind: &PluginKind) -> Option<Command> {
        match kind {
            PluginKind::Executable(path) => Some(Command::new(path)),
            PluginKind::SharedObject(path) => {
                let mut c = Command::new(self.host_exe.as_ref()?);
                c.arg("plugin-host").arg(path);
                Some(c)
            }
            PluginKind::Builtin(d) => {
                let mut c = Command::new(self.host_exe.as_ref()?);
                c.arg("plugin-host").arg("--builtin").arg(d.name());
                Some(c)
            }
        }
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
                let Some(mut cmd) = self.command_for(kind) else { return Vec::new() };
                let msgs =
                    [ToPlugin::Hello { protocol: PROTOCOL_VERSION }, ToPlugin::Validate { config: settings.clone() }];
                match probe(&mut cmd, &msgs) {
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
        let mut replies = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(m) = serde_json::from_str::<FromPlugin>(&line) {
                replies.push(m);
            }
        }
        let _ = tx.send(replies);
    });
    let err_reader = std::thread::spawn(move || {
        // Read it all (a plugin blocked on a full pipe would never exit) and
        // keep the end, where the reason usually is.
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut { stderr }, &mut bytes);
        let tail = &bytes[bytes.len().saturating_sub(4096)..];
        String::from_utf8_lossy(tail).into_owned()
    });
    let replies = match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok(r) => r,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no answer within {PROBE_TIMEOUT:?}"));
        }
    };
    let status = child.wait().map_err(|e| e.to_string())?;
    let stderr = err_reader.join().unwrap_or_default();
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
