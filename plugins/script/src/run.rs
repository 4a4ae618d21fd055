//! Running one command: a clean environment, output capped, and nothing
//! left behind: through `alerter-spawn`'s reaper, every process the command
//! started is killed when it exits, at the timeout, and when the daemon
//! stops or dies, including ones that left its process group.

use std::io::Read;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The program and its arguments (for `shell:`, `/bin/sh -c LINE`).
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Bytes of standard output (and, separately, of standard error) kept.
    pub max_output: usize,
    /// Run as this user (uid, gid, home), when set.
    pub user: Option<(u32, u32, String)>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    /// The exit code; `None` when killed by a signal or not started.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Output beyond `max_output` was thrown away.
    pub truncated: bool,
    pub timed_out: bool,
    /// Why it could not be started.
    pub spawn_error: Option<String>,
    pub took: Duration,
}

/// The PATH commands see.
pub const PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/nagios/plugins:/usr/lib/monitoring-plugins";

/// Reads a stream to its end, keeping the first `cap` bytes: the rest is
/// read and dropped, so a chatty command neither blocks on a full pipe nor
/// grows our memory.
fn drain(mut r: impl Read, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut truncated = false;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (kept, truncated)
}

/// Runs a command to completion or to its timeout. `stop` is polled while
/// waiting; when it says so, the command is killed like on a timeout.
pub fn run(spec: &Spec, mut stop: impl FnMut(Duration) -> bool) -> Ran {
    let started = Instant::now();
    let mut env = vec![
        ("PATH".to_string(), PATH.to_string()),
        ("LC_ALL".into(), "C".into()),
        ("LANG".into(), "C".into()),
        ("HOME".into(), spec.user.as_ref().map_or("/", |u| u.2.as_str()).to_string()),
    ];
    env.extend(spec.env.iter().cloned());
    let how = alerter_spawn::Spec { argv: spec.argv.clone(), env, user: spec.user.as_ref().map(|u| (u.0, u.1)) };
    let mut run = match alerter_spawn::spawn(&how) {
        Ok(r) => r,
        Err(e) => {
            return Ran {
                code: None,
                stdout: String::new(),
                stderr: String::new(),
                truncated: false,
                timed_out: false,
                spawn_error: Some(format!("cannot run {}: {e}", spec.argv[0])),
                took: started.elapsed(),
            };
        }
    };
    let child = &mut run.child;
    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>, bool)>();
    let cap = spec.max_output;
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let tx2 = tx.clone();
    let readers = [
        std::thread::spawn(move || {
            let (b, t) = drain(out, cap);
            let _ = tx.send((true, b, t));
        }),
        std::thread::spawn(move || {
            let (b, t) = drain(err, cap);
            let _ = tx2.send((false, b, t));
        }),
    ];
    let deadline = started + spec.timeout;
    let mut timed_out = false;
    let mut status = None;
    // Wait for the process to exit, polling so the timeout and a shutdown
    // request are noticed within a few milliseconds.
    loop {
        match child.try_wait() {
            Ok(Some(s)) => {
                status = Some(s);
                break;
            }
            Ok(None) => {}
            Err(_) => break,
        }
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        if stop((deadline - now).min(Duration::from_millis(10))) {
            timed_out = true;
            break;
        }
    }
    // Whatever it left behind goes too: children that kept our pipes open
    // would otherwise keep the readers (and us) waiting.
    if status.is_none() {
        run.kill();
        status = run.child.wait().ok();
    } else {
        run.finish();
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut truncated = false;
    for _ in 0..2 {
        // The group is dead, so the pipes close; this does not wait long.
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok((true, b, t)) => {
                stdout = b;
                truncated |= t;
            }
            Ok((false, b, t)) => {
                stderr = b;
                truncated |= t;
            }
            Err(_) => break,
        }
    }
    for r in readers {
        if r.is_finished() {
            let _ = r.join();
        }
    }
    let code = if timed_out { None } else { status.and_then(|s| s.code()) };
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    // The reaper could not start the command: the same report as without one.
    let spawn_error = (code == Some(127))
        .then(|| stderr.strip_prefix(alerter_spawn::CANNOT_RUN))
        .flatten()
        .map(|rest| format!("cannot run {}", rest.trim_end()));
    Ran {
        code: if spawn_error.is_some() { None } else { code },
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: if spawn_error.is_some() { String::new() } else { stderr },
        truncated,
        timed_out,
        spawn_error,
        took: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(line: &str, timeout: Duration) -> Ran {
        let spec = Spec {
            argv: vec!["/bin/sh".into(), "-c".into(), line.into()],
            env: vec![("GREETING".into(), "hello".into())],
            timeout,
            max_output: 1024,
            user: None,
        };
        run(&spec, |d| {
            std::thread::sleep(d);
            false
        })
    }

    #[test]
    fn exit_code_output_and_a_clean_environment() {
        let r = sh("echo $GREETING; echo oops >&2; env | grep -c . ; exit 3", Duration::from_secs(10));
        assert_eq!(r.code, Some(3));
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines[0], "hello");
        // PATH, LC_ALL, LANG, HOME, GREETING, and what sh itself sets (PWD, SHLVL, _).
        assert!(lines[1].parse::<u32>().unwrap() <= 8, "{}", r.stdout);
        assert_eq!(r.stderr, "oops\n");
        assert!(!r.truncated && !r.timed_out);
    }

    #[test]
    fn output_is_capped() {
        let r = sh("head -c 1000000 /dev/zero | tr '\\0' x", Duration::from_secs(10));
        assert_eq!(r.stdout.len(), 1024);
        assert!(r.truncated);
        assert_eq!(r.code, Some(0));
    }

    #[test]
    fn runs_as_another_user_without_root_groups() {
        assert!(nix::unistd::geteuid().is_root(), "this test switches users: run it as root");
        let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("a `nobody` user");
        let spec = Spec {
            argv: vec!["/bin/sh".into(), "-c".into(), "id -u; id -G; echo $HOME".into()],
            env: vec![],
            timeout: Duration::from_secs(10),
            max_output: 1024,
            user: Some((nobody.uid.as_raw(), nobody.gid.as_raw(), "/nonexistent".into())),
        };
        let r = run(&spec, |d| {
            std::thread::sleep(d);
            false
        });
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines[0], nobody.uid.to_string());
        assert_eq!(lines[1], nobody.gid.to_string(), "only the user's group: root's are dropped");
        assert_eq!(lines[2], "/nonexistent");
    }

    #[test]
    fn a_timeout_kills_the_whole_group() {
        let started = Instant::now();
        let r = sh("sleep 31337.41 & sleep 31337.42; echo never", Duration::from_millis(300));
        assert!(r.timed_out && r.code.is_none());
        assert!(started.elapsed() < Duration::from_secs(5), "did not wait for the children");
        assert_eq!(r.stdout, "");
        let left = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter(|e| {
                    std::fs::read(e.path().join("cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("31337.4"))
                })
                .count()
        };
        // SIGKILL is delivered asynchronously: give the kernel a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while left() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(left(), 0, "a child survived the timeout");
    }

    #[test]
    fn a_missing_program_is_reported() {
        let spec = Spec {
            argv: vec!["/nonexistent/check".into()],
            env: vec![],
            timeout: Duration::from_secs(1),
            max_output: 10,
            user: None,
        };
        let r = run(&spec, |_| false);
        assert!(r.spawn_error.unwrap().contains("No such file"));
    }
}
