//! The reaper process: runs one command, then kills and reaps everything
//! it left behind. See the crate documentation for why.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::{CANNOT_RUN, parse_reaper_args};

/// Runs the reaper; its exit code (when it does not die of the command's
/// signal instead).
pub fn main(args: Vec<OsString>) -> i32 {
    let Some(args) = parse_reaper_args(args) else {
        eprintln!("alerter-reaper: started with unexpected arguments; it is run by alerter itself");
        return 2;
    };
    // Orphaned descendants, `setsid` ones included, become ours.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("alerter-reaper: cannot become a child subreaper: {e}");
    }
    let mut cmd = Command::new(&args.argv[0]);
    cmd.args(&args.argv[1..]).stdin(Stdio::null()).process_group(0);
    if let Some((uid, gid)) = args.user {
        cmd.uid(uid).gid(gid);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{CANNOT_RUN}{}: {e}", args.argv[0].to_string_lossy());
            return 127;
        }
    };
    // Standard input is the control pipe: readable (EOF, or anything) means
    // the daemon ended the run or died.
    let stdin = std::io::stdin();
    let control = stdin.as_fd();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(_) => break None,
        }
        let mut fds = [PollFd::new(control, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(20u8)) {
            Ok(n) if n > 0 => break None,
            _ => {}
        }
    };
    kill_descendants();
    match status {
        Some(s) => exit_like(s),
        None => 0,
    }
}

/// Dies of the command's signal, or returns its exit code. Rust's runtime
/// ignores SIGPIPE and handles SIGSEGV and SIGBUS itself, so for those the
/// reaper exits with 128 + the signal's number instead, as a shell does.
fn exit_like(s: ExitStatus) -> i32 {
    if let Some(code) = s.code() {
        return code;
    }
    if let Some(sig) = s.signal().and_then(|n| Signal::try_from(n).ok()) {
        // No core file of our own for the command's crash.
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
        let _ = nix::sys::signal::raise(sig);
        return 128 + sig as i32;
    }
    1
}

/// Every process below us: (pid, parent) from /proc, then a walk down
/// from our pid.
fn descendants() -> Vec<Pid> {
    let me = std::process::id() as i32;
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The command name is in parentheses and may hold anything: the
        // fields after the last `)` are state, then the parent's pid.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse::<i32>().ok()) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = vec![me];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(c) {
                out.push(Pid::from_raw(c));
                todo.push(c);
            }
        }
    }
    out
}

/// Kills every descendant and reaps until no child is left. A process that
/// forks while this runs has its children found in the next round: they
/// are ours once their parent is killed.
fn kill_descendants() {
    // A process we may not kill (one that gained privileges) or one stuck
    // in the kernel must not keep us, and the run, going forever.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let found = descendants();
        for &p in &found {
            let _ = kill(p, Signal::SIGKILL);
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(_) => return, // ECHILD: nobody left
            }
        }
        std::thread::sleep(Duration::from_millis(if found.is_empty() { 5 } else { 1 }));
    }
}
