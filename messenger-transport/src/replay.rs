//! The sealed-message replay guard's memory on disk, so that a restart
//! does not forget which messages were already shown.
//!
//! The file holds one line per accepted message, `<time> <id>`, appended
//! and flushed to the disk (`fdatasync`) before the message is shown. At
//! start the lines within the guard's memory (twice the time window) are
//! loaded; when dead lines outnumber live ones the file is rewritten to a
//! temporary file and renamed over it. One receiver owns a file: an
//! exclusive lock on `<file>.lock` is held for the receiver's lifetime,
//! and a second receiver is told to use a file of its own.
//!
//! The file is created 0600 and opened without following a symbolic link;
//! one that is not a regular file owned by this user is refused. Lines that
//! do not parse (a crash mid-line, or tampering) are skipped and counted.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::seal::{ReplayGuard, SealError, Sealed};

/// Longest id kept (ours are 24 hex digits).
const MAX_ID: usize = 64;

/// Why the replay file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReplayFileError {
    #[error("cannot use the replay file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the replay file {path} is in use by another receiver; give each receiver its own (`--replay-file`)")]
    InUse { path: PathBuf },
    #[error("the replay file {path} is {what}; remove it, or choose another with `--replay-file`")]
    Unsafe { path: PathBuf, what: String },
}

/// A receiver's persisted replay memory.
#[derive(Debug)]
pub struct ReplayFile {
    path: PathBuf,
    file: File,
    /// Lines in the file, live or not.
    lines: usize,
    /// Held for the receiver's lifetime.
    _lock: File,
}

/// The replay guard, with its memory on disk when a file is given.
#[derive(Debug)]
pub struct Replay {
    guard: ReplayGuard,
    file: Option<ReplayFile>,
}

impl Replay {
    /// A guard that forgets at restart.
    pub fn in_memory(window: Duration) -> Replay {
        Replay { guard: ReplayGuard::new(window), file: None }
    }

    /// A guard that remembers across restarts, in `path`.
    pub fn persistent(path: &Path, window: Duration, now: i64) -> Result<(Replay, Loaded), ReplayFileError> {
        let mut guard = ReplayGuard::new(window);
        let (file, loaded) = ReplayFile::open(path, &mut guard, now)?;
        Ok((Replay { guard, file: Some(file) }, loaded))
    }

    /// Checks a message at `now`; when accepted, records it on the disk
    /// before returning. `Ok(Some(e))`: accepted, but it could not be
    /// saved (a full disk), so a restart would forget it; the caller
    /// decides (the listener shows it and warns: a receiver that stops
    /// showing alerts when its disk fills is worse).
    pub fn check(&mut self, m: &Sealed, now: i64) -> Result<Option<std::io::Error>, SealError> {
        self.guard.check(m, now)?;
        Ok(self.file.as_mut().and_then(|f| f.record(&m.id, m.time, &self.guard).err()))
    }

    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.path.as_path())
    }
}

/// What loading found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loaded {
    /// Messages still remembered.
    pub live: usize,
    /// Lines that did not parse.
    pub bad: usize,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

fn parse(line: &str) -> Option<(i64, &str)> {
    let (time, id) = line.split_once(' ')?;
    let ok = !id.is_empty() && id.len() <= MAX_ID && id.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then_some(())?;
    Some((time.parse().ok()?, id))
}

impl ReplayFile {
    /// Opens (or creates) the file and loads what it remembers into `guard`.
    pub fn open(path: &Path, guard: &mut ReplayGuard, now: i64) -> Result<(ReplayFile, Loaded), ReplayFileError> {
        let io = |source| ReplayFileError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        }
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock = open_append(Path::new(&lock_path)).map_err(io)?;
        if let Err(e) = lock.try_lock() {
            return Err(match e {
                std::fs::TryLockError::WouldBlock => ReplayFileError::InUse { path: path.to_path_buf() },
                std::fs::TryLockError::Error(e) => io(e),
            });
        }
        let file = open_append(path).map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => {
                ReplayFileError::Unsafe { path: path.to_path_buf(), what: "a symbolic link".into() }
            }
            _ => io(e),
        })?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(ReplayFileError::Unsafe { path: path.to_path_buf(), what: "not a regular file".into() });
        }
        if meta.uid() != nix::unistd::Uid::effective().as_raw() {
            return Err(ReplayFileError::Unsafe {
                path: path.to_path_buf(),
                what: format!("owned by another user (uid {})", meta.uid()),
            });
        }
        let mut loaded = Loaded::default();
        let mut lines = 0;
        for line in BufReader::new(&file).split(b'\n') {
            let line = line.map_err(io)?;
            lines += 1;
            match std::str::from_utf8(&line).ok().and_then(parse) {
                Some((time, id)) => {
                    if guard.remember(id, time, now) {
                        loaded.live += 1;
                    }
                }
                None => loaded.bad += 1,
            }
        }
        let mut file = file;
        // A crash mid-line left a torn record: end it, so the next one
        // starts on a line of its own instead of being swallowed by it.
        if meta.len() > 0 {
            let mut last = [0u8; 1];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut last, meta.len() - 1).map_err(io)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(io)?;
            }
        }
        let mut me = ReplayFile { path: path.to_path_buf(), file, lines, _lock: lock };
        if lines > 2 * loaded.live + 1024 {
            me.compact(guard).map_err(io)?;
        }
        Ok((me, loaded))
    }

    /// Records an accepted message, on the disk before this returns; the
    /// guard has just accepted it and holds every live entry.
    fn record(&mut self, id: &str, time: i64, guard: &ReplayGuard) -> std::io::Result<()> {
        self.file.write_all(format!("{time} {id}\n").as_bytes())?;
        self.file.sync_data()?;
        self.lines += 1;
        if self.lines > 2 * guard.len() + 1024 {
            self.compact(guard)?;
        }
        Ok(())
    }

    /// Rewrites the file with the live entries only.
    fn compact(&mut self, guard: &ReplayGuard) -> std::io::Result<()> {
        let mut tmp_path = self.path.as_os_str().to_owned();
        tmp_path.push(".tmp");
        let tmp_path = PathBuf::from(tmp_path);
        let _ = std::fs::remove_file(&tmp_path);
        let mut tmp = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&tmp_path)?;
        let mut text = String::new();
        for (id, time) in guard.entries() {
            text.push_str(&format!("{time} {id}\n"));
        }
        tmp.write_all(text.as_bytes())?;
        tmp.sync_all()?;
        std::fs::rename(&tmp_path, &self.path)?;
        // The new file first: if syncing the directory fails, later records
        // still go where a restart reads them.
        self.file = open_append(&self.path)?;
        self.lines = guard.len();
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_remembers_what_was_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/sealed-seen");
        let m = Sealed::new("A", "B", 1000, "info", "hi");
        {
            let (mut r, loaded) = Replay::persistent(&path, Duration::from_secs(300), 1000).unwrap();
            assert_eq!(loaded, Loaded::default());
            assert!(r.check(&m, 1000).unwrap().is_none(), "accepted and saved");
            // A second receiver on the same file is told to use its own.
            let e = Replay::persistent(&path, Duration::from_secs(300), 1000).unwrap_err();
            assert!(matches!(e, ReplayFileError::InUse { .. }));
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        // A torn last line and garbage are skipped, and counted.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"junk\n1001 zz\n1002 ab").unwrap();
        let next = Sealed::new("A", "B", 1100, "info", "after the torn line");
        {
            let (mut r, loaded) = Replay::persistent(&path, Duration::from_secs(300), 1100).unwrap();
            assert_eq!(loaded, Loaded { live: 2, bad: 2 }, "the id `ab` parses: ids are any hex");
            assert_eq!(r.check(&m, 1100).unwrap_err(), SealError::Replayed(m.id.clone()));
            assert!(r.check(&next, 1100).unwrap().is_none());
        }
        // What was recorded after the torn line is remembered too.
        let (mut r, _) = Replay::persistent(&path, Duration::from_secs(300), 1100).unwrap();
        assert_eq!(r.check(&next, 1100).unwrap_err(), SealError::Replayed(next.id.clone()));
        // In memory only, a restart forgets.
        assert!(Replay::in_memory(Duration::from_secs(300)).check(&m, 1100).is_ok());
    }

    #[test]
    fn dead_entries_are_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen");
        let (mut r, _) = Replay::persistent(&path, Duration::from_secs(10), 0).unwrap();
        for t in 0..3000 {
            assert!(r.check(&Sealed::new("A", "B", t, "info", "x"), t).unwrap().is_none());
        }
        let live = r.guard.len();
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 2 * live + 1025, "{lines} lines for {live} live");
        drop(r);
        let (_r, loaded) = Replay::persistent(&path, Duration::from_secs(10), 2999).unwrap();
        assert_eq!(loaded.live, live);
    }

    #[test]
    fn a_symlink_or_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("seen");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        let e = Replay::persistent(&link, Duration::from_secs(10), 0).unwrap_err();
        assert!(e.to_string().contains("a symbolic link"), "{e}");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(Replay::persistent(&sub, Duration::from_secs(10), 0).is_err());
    }
}
