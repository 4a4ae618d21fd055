//! The plugin host: the child side of process isolation.
//!
//! `alerter plugin-host PATH` loads one `.so` plugin and speaks the plugin
//! protocol for it on standard input and output, so that a plugin that
//! crashes, aborts or hangs takes down only this process. Before the
//! plugin's code runs, standard output is moved to a private descriptor and
//! fd 1 is pointed at standard error: a stray `printf` in a plugin then
//! lands in the daemon's log instead of corrupting the protocol.
//!
//! Events from the plugin go through a bounded queue to a writer thread;
//! when the daemon reads too slowly the queue fills, `emit` answers
//! backpressure, and the drops are reported with `{"op":"dropped"}`.

use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use super::ffi::{self, Descriptor, EmitResult, Host, RunEnd, Sink};
use super::protocol::{FromPlugin, PROTOCOL_VERSION, PluginMeta, ToPlugin};

/// How many events may wait for the writer thread.
const QUEUE: usize = 1024;

/// Where the protocol goes: the original standard output. Events pass
/// through a queue; control messages are written and flushed at once, so
/// that they are out before the process exits.
struct Out {
    tx: SyncSender<String>,
    /// Events the queue had no room for; the writer reports them.
    dropped: Arc<AtomicU64>,
    file: Arc<Mutex<BufWriter<File>>>,
}

impl Out {
    fn send(&self, m: &FromPlugin) {
        let mut w = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = w.write_all(m.line().as_bytes()).and_then(|_| w.flush());
    }
}

struct ProtocolSink {
    out: Arc<Out>,
}

impl Sink for ProtocolSink {
    fn emit(&self, json: &str) -> EmitResult {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(json) else {
            self.out.send(&FromPlugin::Log {
                level: "error".into(),
                message: format!("plugin emitted invalid JSON: {json}"),
            });
            return EmitResult::Ok;
        };
        match self.out.tx.try_send(FromPlugin::Event { event }.line()) {
            Ok(()) => EmitResult::Ok,
            Err(TrySendError::Full(_)) => {
                self.out.dropped.fetch_add(1, Ordering::Relaxed);
                EmitResult::Backpressure
            }
            Err(TrySendError::Disconnected(_)) => EmitResult::ShuttingDown,
        }
    }

    fn save_state(&self, json: &str) -> EmitResult {
        let Ok(state) = serde_json::from_str::<serde_json::Value>(json) else {
            self.out.send(&FromPlugin::Log {
                level: "error".into(),
                message: format!("plugin saved a state that is not JSON: {json}"),
            });
            return EmitResult::Ok;
        };
        // Through the event queue: a state must not overtake the events
        // emitted before it.
        match self.out.tx.try_send(FromPlugin::State { state }.line()) {
            Ok(()) => EmitResult::Ok,
            Err(TrySendError::Full(_)) => EmitResult::Backpressure,
            Err(TrySendError::Disconnected(_)) => EmitResult::ShuttingDown,
        }
    }

    fn log(&self, level: u32, message: &str) {
        let level = match level {
            alerter_plugin_abi::LOG_ERROR => "error",
            alerter_plugin_abi::LOG_WARN => "warn",
            alerter_plugin_abi::LOG_DEBUG => "debug",
            _ => "info",
        };
        self.out.send(&FromPlugin::Log { level: level.into(), message: message.to_string() });
    }
}

/// Moves standard output out of the plugin's reach; returns the protocol's
/// file.
fn protect_stdout() -> std::io::Result<File> {
    let proto: OwnedFd = nix::unistd::dup(std::io::stdout())?;
    nix::unistd::dup2_stdout(std::io::stderr())?;
    Ok(File::from(proto))
}

/// What to host.
#[derive(Debug)]
pub enum Target<'a> {
    File(&'a std::path::Path),
    Builtin(Descriptor),
}

/// Runs the plugin host until shutdown. Returns the process exit code:
/// 0 after a requested shutdown, 1 when the plugin failed, 2 when it
/// panicked, 3 when it could not be loaded.
pub fn main(target: Target<'_>) -> i32 {
    // If the daemon dies, so do we: no orphaned plugins.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let proto = match protect_stdout() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("alerter plugin-host: cannot set up the protocol channel: {e}");
            return 3;
        }
    };
    let (tx, rx) = sync_channel::<String>(QUEUE);
    let file = Arc::new(Mutex::new(BufWriter::new(proto)));
    let dropped = Arc::new(AtomicU64::new(0));
    let out = Arc::new(Out { tx, dropped: dropped.clone(), file: file.clone() });
    let writer = std::thread::spawn(move || {
        while let Ok(line) = rx.recv() {
            let mut w = file.lock().unwrap_or_else(|p| p.into_inner());
            if w.write_all(line.as_bytes()).is_err() {
                return;
            }
            // Write what else is waiting before flushing, so a burst costs
            // few system calls but nothing waits long: at most a queue's
            // worth, or a plugin that refills the queue as fast as it
            // drains would keep the drop count below from ever being sent.
            for line in rx.try_iter().take(QUEUE) {
                if w.write_all(line.as_bytes()).is_err() {
                    return;
                }
            }
            // Report drops as they happen: the daemon reads our output only
            // as fast as it can handle it, so a flooding plugin's excess is
            // dropped here, in its own process, and counted.
            let n = dropped.swap(0, Ordering::Relaxed);
            if n > 0 && w.write_all(FromPlugin::Dropped { count: n }.line().as_bytes()).is_err() {
                return;
            }
            if w.flush().is_err() {
                return;
            }
        }
    });

    let descriptor = match target {
        Target::Builtin(d) => Ok(d),
        Target::File(path) => ffi::load(path),
    };
    let code = match descriptor {
        Ok(d) => serve(d, &out),
        Err(e) => {
            out.send(&FromPlugin::Refused { error: e.to_string() });
            3
        }
    };
    drop(out);
    let _ = writer.join();
    code
}

fn serve(d: Descriptor, out: &Arc<Out>) -> i32 {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut host: Option<Arc<Host>> = None;
    let ended: Arc<Mutex<Option<RunEnd>>> = Arc::new(Mutex::new(None));
    let mut runner: Option<std::thread::JoinHandle<()>> = None;
    // Until the daemon closes our input (it is gone, or wants us gone) or
    // says shutdown.
    while let Some(Ok(line)) = lines.next() {
        let msg = match serde_json::from_str::<ToPlugin>(&line) {
            Ok(m) => m,
            Err(e) => {
                out.send(&FromPlugin::Log { level: "error".into(), message: format!("bad protocol line: {e}") });
                continue;
            }
        };
        match msg {
            ToPlugin::Hello { .. } => out.send(&FromPlugin::Hello {
                protocol: PROTOCOL_VERSION,
                plugin: PluginMeta {
                    name: d.name().to_string(),
                    version: d.version().to_string(),
                    description: Some(d.description().to_string()).filter(|s| !s.is_empty()),
                    abi: Some(d.abi()),
                },
            }),
            ToPlugin::Validate { config } => {
                let errors = ffi::validate(&d, &config.to_string()).err().unwrap_or_default();
                out.send(&FromPlugin::Validated { errors });
            }
            ToPlugin::Start { config, state, .. } => {
                if runner.is_some() {
                    out.send(&FromPlugin::Failed { error: "already started".into() });
                    continue;
                }
                out.send(&FromPlugin::Started);
                let h = Arc::new(Host::with_state(
                    Arc::new(ProtocolSink { out: out.clone() }),
                    state.map(|s| s.to_string()),
                ));
                host = Some(h.clone());
                let (host, ended, out) = (h, ended.clone(), out.clone());
                let config = config.to_string();
                runner = Some(std::thread::spawn(move || {
                    let end = ffi::run(&d, &config, &host);
                    // A plugin that stops on its own (not asked to) has
                    // failed: say how and exit, so the daemon restarts it.
                    let requested = matches!(end, RunEnd::Stopped);
                    out.send(&stopped(&end));
                    *ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(end.clone());
                    if !requested {
                        std::process::exit(exit_code(&end));
                    }
                }));
            }
            ToPlugin::Shutdown => break,
        }
    }
    if let Some(host) = &host {
        host.request_stop(&d);
    }
    match runner {
        // The daemon kills us if the plugin ignores the request for longer
        // than its grace period; until then, wait.
        Some(r) => {
            let _ = r.join();
            let end = ended.lock().unwrap_or_else(|p| p.into_inner()).clone();
            end.map_or(0, |e| exit_code(&e))
        }
        None => 0,
    }
}

fn stopped(end: &RunEnd) -> FromPlugin {
    let (status, error) = match end {
        RunEnd::Stopped => ("ok", None),
        RunEnd::CreateFailed(e) => ("error", Some(format!("cannot start: {e}"))),
        RunEnd::Failed(e) => ("error", Some(e.clone())),
        RunEnd::Panicked(e) => ("panicked", Some(e.clone())),
    };
    FromPlugin::Stopped { status: status.into(), error }
}

fn exit_code(end: &RunEnd) -> i32 {
    match end {
        RunEnd::Stopped => 0,
        RunEnd::CreateFailed(_) | RunEnd::Failed(_) => 1,
        RunEnd::Panicked(_) => 2,
    }
}
