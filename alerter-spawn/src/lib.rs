//! Process spawning that leaves nothing behind.
//!
//! A command run for a source (a script, a Monitoring Plugin) may start
//! children that leave its process group (`setsid`) or outlive it. Killing
//! the group misses those, and a child that keeps the output pipes open
//! keeps the daemon's reader threads waiting forever. So each run goes
//! through a **reaper**: the `alerter` binary executed again with argv[0]
//! [`REAPER_ARG0`], which makes itself a child subreaper (orphaned
//! descendants, `setsid` ones included, become its children), runs the
//! command, and when the command exits, when the daemon ends the run, or
//! when the daemon dies, kills every descendant it can find and reaps them
//! until it has no child left. Then it exits as the command did.
//!
//! The daemon ends a run by closing the write end of a pipe whose read end
//! is the reaper's standard input; the kernel closes it too when the daemon
//! dies, however it dies. This needs no `PR_SET_PDEATHSIG` (which fires
//! when the forking *thread* exits, and tokio retires idle threads), and the
//! daemon never calls `waitpid(-1)` (which would steal the statuses tokio's
//! and std's child handles wait for): only the reaper does, in its own
//! process.
//!
//! Without a registered reaper (unit tests of the plugins, run outside the
//! `alerter` binary) a run falls back to killing its process group.
//!
//! [`fd_exec`] executes a file by the descriptor it was checked on (plugin
//! files); its `pre_exec` hook is the only `unsafe` here.

#![deny(unsafe_code)]

pub mod fd_exec;
pub mod reaper;

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// argv[0] that makes the `alerter` binary a reaper.
pub const REAPER_ARG0: &str = "alerter-reaper";

/// What a reaper prints (and exits 127 with) when the command cannot start.
pub const CANNOT_RUN: &str = "alerter-reaper: cannot run ";

static REAPER: OnceLock<PathBuf> = OnceLock::new();

/// Registers the executable that becomes a reaper when run with argv[0]
/// [`REAPER_ARG0`]: the `alerter` binary, from its `main`.
pub fn set_reaper(exe: PathBuf) {
    let _ = REAPER.set(exe);
}

/// If this process was started as a reaper, runs it to the end and exits.
/// The `alerter` binary calls this first thing in `main`.
pub fn run_reaper_if_invoked() {
    let mut args = std::env::args_os();
    let is_reaper = args.next().is_some_and(|a| a == REAPER_ARG0);
    if is_reaper {
        std::process::exit(reaper::main(args.collect()));
    }
}

/// A command to run.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// The whole environment it gets.
    pub env: Vec<(String, String)>,
    /// Run as this user and group (supplementary groups dropped).
    pub user: Option<(u32, u32)>,
}

/// A running command.
#[derive(Debug)]
pub struct Run {
    /// The reaper, or the command itself without one.
    pub child: Child,
    /// Closing it tells the reaper to kill everything.
    control: Option<File>,
    reaped: bool,
}

impl Run {
    /// Whether a reaper watches this run (else only its process group is
    /// killed).
    pub fn has_reaper(&self) -> bool {
        self.reaped
    }

    /// Ends the run: every process it started is killed. Wait on `child`
    /// afterwards; it exits promptly.
    pub fn kill(&mut self) {
        if self.reaped {
            self.control = None;
        } else {
            let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        }
    }

    /// After the command exited on its own: without a reaper, what it left
    /// in its group is killed (with one, the reaper already did).
    pub fn finish(&mut self) {
        if !self.reaped {
            let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        }
        self.control = None;
    }
}

/// Starts `spec` with standard input from /dev/null and standard output and
/// error piped, in `/`, through the reaper when one is registered.
pub fn spawn(spec: &Spec) -> std::io::Result<Run> {
    let (mut cmd, control) = match REAPER.get() {
        Some(reaper) => {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            let mut c = Command::new(reaper);
            c.arg0(REAPER_ARG0);
            if let Some((uid, gid)) = spec.user {
                c.args(["--uid", &uid.to_string(), "--gid", &gid.to_string()]);
            }
            c.arg("--").args(&spec.argv).stdin(Stdio::from(read));
            (c, Some(File::from(write)))
        }
        None => {
            let mut c = Command::new(&spec.argv[0]);
            c.args(&spec.argv[1..]).stdin(Stdio::null());
            if let Some((uid, gid)) = spec.user {
                // std drops supplementary groups when root sets a uid.
                c.uid(uid).gid(gid);
            }
            (c, None)
        }
    };
    cmd.env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir("/")
        // Its own process group, so a Ctrl-C in the daemon's terminal is
        // the daemon's alone, and the fallback can kill the group.
        .process_group(0);
    let reaped = control.is_some();
    let child = cmd.spawn()?;
    Ok(Run { child, control, reaped })
}

/// Arguments of a reaper, as [`spawn`] passes them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ReaperArgs {
    pub user: Option<(u32, u32)>,
    pub argv: Vec<OsString>,
}

pub(crate) fn parse_reaper_args(args: Vec<OsString>) -> Option<ReaperArgs> {
    let mut it = args.into_iter();
    let mut uid = None;
    let mut gid = None;
    loop {
        let a = it.next()?;
        match a.to_str() {
            Some("--") => break,
            Some("--uid") => uid = Some(it.next()?.to_str()?.parse().ok()?),
            Some("--gid") => gid = Some(it.next()?.to_str()?.parse().ok()?),
            _ => return None,
        }
    }
    let argv: Vec<OsString> = it.collect();
    if argv.is_empty() {
        return None;
    }
    let user = match (uid, gid) {
        (Some(u), Some(g)) => Some((u, g)),
        (None, None) => None,
        _ => return None,
    };
    Some(ReaperArgs { user, argv })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn reaper_arguments() {
        assert_eq!(
            parse_reaper_args(os(&["--", "/bin/sh", "-c", "x"])),
            Some(ReaperArgs { user: None, argv: os(&["/bin/sh", "-c", "x"]) })
        );
        assert_eq!(
            parse_reaper_args(os(&["--uid", "65534", "--gid", "65534", "--", "id"])).unwrap().user,
            Some((65534, 65534))
        );
        for bad in [&["/bin/sh"][..], &["--"], &["--uid", "1", "--", "id"], &["--uid", "x", "--gid", "1", "--", "id"]] {
            assert_eq!(parse_reaper_args(os(bad)), None, "{bad:?}");
        }
    }
}
