//! Who is logged on, from the system's login records (utmp, as `who`
//! reads them), so that `alerter listen` holds each user's name as a
//! message alias (`ALICE<03>`), as Windows' Messenger did: a popup sent
//! to `alice` then finds the machine she is at.
//!
//! The file is hostile input like any other: it is opened once per read
//! and checked on that descriptor (a regular file, not writable by
//! everyone, of a sane size); a record that does not parse is skipped and
//! counted, never fatal; an entry whose login process is gone (a crash
//! leaves them behind) does not count. Polling is a `stat` per tick; the
//! file is read again when it changed, and every [`REREAD`] regardless, so
//! that stale entries age out.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use messenger_transport::NetbiosName;

/// Where glibc keeps the login records (`_PATH_UTMP`).
pub const DEFAULT_UTMP: &str = "/var/run/utmp";
/// Read the file again at least this often, changed or not.
const REREAD: Duration = Duration::from_secs(30);
/// A login-records file larger than this is not read (a terminal server
/// with a thousand sessions has a few hundred KiB).
const MAX_FILE: u64 = 16 << 20;
/// Names held at once beyond the machine's own: a node status answer
/// lists at most 255, and a flood of fake records must not become a
/// flood of registrations.
pub const MAX_USERS: usize = 100;

/// Why the login records could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("cannot read the login records {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the login records {0} are not a regular file: not read")]
    NotAFile(PathBuf),
    #[error(
        "the login records {0} are writable by everyone, so anyone could claim to be logged on: not read (chmod o-w)"
    )]
    WorldWritable(PathBuf),
    #[error("the login records {path} are {size} bytes, more than a login-records file can sensibly be: not read")]
    TooLarge { path: PathBuf, size: u64 },
}

/// One reading of the login records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoggedOn {
    /// The names to hold, uppercase NetBIOS names.
    pub users: BTreeSet<String>,
    /// Users whose name cannot be a NetBIOS name, with why.
    pub unusable: Vec<String>,
    /// Records that did not parse.
    pub bad_records: usize,
    /// Users beyond [`MAX_USERS`], not held.
    pub over_limit: usize,
    /// Each live login's user and terminal line (`pts/3`, `tty1`), for
    /// writing to the terminals of a user with no session agent. At most
    /// [`MAX_SESSIONS`].
    pub sessions: Vec<Session>,
}

/// One login on a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The login name, as the records have it.
    pub login: String,
    /// The terminal below /dev (`pts/3`).
    pub line: String,
}

/// Terminal sessions remembered, at most.
pub const MAX_SESSIONS: usize = 1000;

/// Reads the login records at `path` (see the module docs).
pub fn read(path: &Path) -> Result<LoggedOn, PresenceError> {
    let io = |source| PresenceError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(PresenceError::NotAFile(path.to_path_buf()));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(PresenceError::WorldWritable(path.to_path_buf()));
    }
    if meta.len() > MAX_FILE {
        return Err(PresenceError::TooLarge { path: path.to_path_buf(), size: meta.len() });
    }
    Ok(parse(utmp_rs::UtmpParser::from_file(file), process_alive))
}

/// The users of the records `entries`; `alive(pid)` says whether a login
/// process still runs.
fn parse(
    entries: impl Iterator<Item = Result<utmp_rs::UtmpEntry, utmp_rs::ParseError>>,
    alive: impl Fn(i32) -> bool,
) -> LoggedOn {
    let mut out = LoggedOn::default();
    let mut seen = BTreeSet::new();
    for entry in entries {
        let (pid, user, line) = match entry {
            Ok(utmp_rs::UtmpEntry::UserProcess { pid, user, line, .. }) => (pid, user, line),
            Ok(_) => continue,
            Err(utmp_rs::ParseError::Io(_)) => {
                // A torn last record (the file is being written): the
                // rest is read next time.
                out.bad_records += 1;
                break;
            }
            // A record that does not make sense (ParseError is
            // non-exhaustive: anything else is treated the same).
            Err(_) => {
                out.bad_records += 1;
                continue;
            }
        };
        if user.is_empty() || !alive(pid) {
            continue;
        }
        if !line.is_empty() && out.sessions.len() < MAX_SESSIONS {
            out.sessions.push(Session { login: user.clone(), line });
        }
        if !seen.insert(user.clone()) {
            continue;
        }
        match NetbiosName::new(&user, messenger_transport::name::MESSENGER) {
            Ok(n) if out.users.len() < MAX_USERS => {
                out.users.insert(n.name());
            }
            Ok(_) => out.over_limit += 1,
            Err(e) => out.unusable.push(format!("{}: {e}", alerter_core::visible::visible_line(&user))),
        }
    }
    out
}

/// Whether process `pid` runs. A record without a pid cannot be checked
/// and is believed; `kill(pid, 0)` never signals, and for pid 0 or
/// negative pids it would address groups, so those are not asked.
fn process_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    if pid <= 0 {
        return true;
    }
    !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// Watches the login records: [`Watch::poll`] reads them when they may
/// have changed.
#[derive(Debug)]
pub struct Watch {
    path: PathBuf,
    stamp: Option<Stamp>,
    read_at: Option<Instant>,
    /// The last error reported, so that the same one is not repeated.
    last_error: Option<String>,
}

impl Watch {
    pub fn new(path: PathBuf) -> Watch {
        Watch { path, stamp: None, read_at: None, last_error: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The users logged on, when the file changed (or is due a re-read)
    /// since the last call; `Err` carries an error not reported before
    /// (the users are then taken to be nobody: a name held for a user who
    /// may have left would draw their popups to the wrong place).
    pub fn poll(&mut self, now: Instant) -> Option<Result<LoggedOn, String>> {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        });
        let due = self.read_at.is_none_or(|at| now.duration_since(at) >= REREAD);
        if !due && stamp == self.stamp && self.read_at.is_some() {
            return None;
        }
        self.stamp = stamp;
        self.read_at = Some(now);
        match read(&self.path) {
            Ok(l) => {
                self.last_error = None;
                Some(Ok(l))
            }
            Err(e) => {
                let e = e.to_string();
                let new = self.last_error.as_deref() != Some(&e);
                self.last_error = Some(e.clone());
                Some(if new { Err(e) } else { Ok(LoggedOn::default()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(pid: i32, name: &str) -> Result<utmp_rs::UtmpEntry, utmp_rs::ParseError> {
        Ok(utmp_rs::UtmpEntry::UserProcess {
            pid,
            line: "pts/1".into(),
            user: name.into(),
            host: String::new(),
            session: 0,
            time: time::OffsetDateTime::UNIX_EPOCH,
        })
    }

    #[test]
    fn users_with_live_login_processes_count_once_each() {
        let entries = vec![
            user(10, "alice"),
            user(11, "alice"),
            user(12, "bob"),
            user(13, "gone"),
            user(14, ""),
            user(15, "a-very-long-login-name"),
            Err(utmp_rs::ParseError::Utmp(utmp_rs::UtmpError::UnknownType(99))),
            Ok(utmp_rs::UtmpEntry::Empty),
            user(16, "carol"),
        ];
        let l = parse(entries.into_iter(), |pid| pid != 13);
        assert_eq!(l.users.iter().map(String::as_str).collect::<Vec<_>>(), vec!["ALICE", "BOB", "CAROL"]);
        let logins: Vec<&str> = l.sessions.iter().map(|s| s.login.as_str()).collect();
        assert_eq!(logins, ["alice", "alice", "bob", "a-very-long-login-name", "carol"], "each live login's terminal");
        assert_eq!(l.bad_records, 1);
        assert_eq!(l.unusable.len(), 1);
        assert!(l.unusable[0].contains("longer than 15"), "{:?}", l.unusable);
    }

    #[test]
    fn a_flood_of_records_is_capped() {
        let entries: Vec<_> = (0..MAX_USERS + 5).map(|i| user(1, &format!("user{i}"))).collect();
        let l = parse(entries.into_iter(), |_| true);
        assert_eq!((l.users.len(), l.over_limit), (MAX_USERS, 5));
    }

    #[test]
    fn torn_and_hostile_files_are_errors_or_partial_reads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Not a whole record: nothing parsed, one bad record, no panic.
        let torn = dir.path().join("torn");
        std::fs::write(&torn, [7u8; 100]).unwrap();
        let l = read(&torn).unwrap();
        assert!(l.users.is_empty());
        assert_eq!(l.bad_records, 1);
        // Random bytes in whole records.
        let noise = dir.path().join("noise");
        let bytes: Vec<u8> = (0..384 * 4).map(|i| (i * 7919 % 251) as u8).collect();
        std::fs::write(&noise, bytes).unwrap();
        assert!(read(&noise).unwrap().users.is_empty());
        // Writable by everyone: refused.
        let open = dir.path().join("open");
        std::fs::write(&open, []).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(read(&open), Err(PresenceError::WorldWritable(_))));
        assert!(matches!(read(dir.path()), Err(PresenceError::NotAFile(_))));
        assert!(matches!(read(&dir.path().join("missing")), Err(PresenceError::Io { .. })));
    }

    #[test]
    fn the_watch_reads_on_change_and_reports_an_error_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("utmp");
        let mut w = Watch::new(path.clone());
        let t0 = Instant::now();
        let first = w.poll(t0).unwrap();
        assert!(first.unwrap_err().contains("cannot read the login records"));
        // The same error again is not reported again: nobody is logged on.
        assert_eq!(w.poll(t0 + REREAD).unwrap(), Ok(LoggedOn::default()));
        std::fs::write(&path, []).unwrap();
        assert_eq!(w.poll(t0 + REREAD), Some(Ok(LoggedOn::default())), "the file appeared");
        assert_eq!(w.poll(t0 + REREAD + Duration::from_secs(1)), None, "unchanged");
        assert!(w.poll(t0 + REREAD * 2).is_some(), "read again after a while anyway");
    }
}
