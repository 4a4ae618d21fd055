//! The receiver's message history: one JSON object per line, capped in
//! size and rotated (`messages.jsonl`, `.1`, `.2`, ...), safe for several
//! listeners sharing one file.
//!
//! Every append happens under an exclusive lock on the file, in one
//! `write` on an append-mode descriptor, so lines never interleave. After
//! taking the lock the path is checked to still name the locked file: if
//! another listener rotated it meanwhile, the new file is opened and locked
//! instead. The file is created 0600 (the mode is given at creation only: an
//! existing file keeps the mode its owner chose), and a path that is not a
//! regular file, such as `/dev/null`, is written to but never rotated.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How big the history may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// Bytes in the current file before it is rotated; 0 for no cap.
    pub bytes: u64,
    /// Rotated files kept beside it.
    pub keep: usize,
}

#[derive(Debug)]
pub struct History {
    path: PathBuf,
    file: File,
    cap: Cap,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

impl History {
    pub fn open(path: &Path, cap: Cap) -> std::io::Result<History> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        Ok(History { path: path.to_path_buf(), file: open(path)?, cap })
    }

    /// Appends one line (a newline is added).
    pub fn append(&mut self, line: &str) -> std::io::Result<()> {
        let mut line = line.to_string();
        line.push('\n');
        // A line longer than the whole cap would rotate every time; it is
        // written whole all the same, the cap being about growth over time.
        for _ in 0..8 {
            self.file.lock()?;
            let result = self.append_locked(line.as_bytes());
            let unlocked = self.file.unlock();
            match result {
                Ok(true) => return unlocked,
                Ok(false) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("the history file keeps being replaced; is another program rotating it?"))
    }

    /// With the lock held: `Ok(false)` when the locked file is no longer the
    /// one at the path (rotated by another listener), after reopening it.
    fn append_locked(&mut self, line: &[u8]) -> std::io::Result<bool> {
        let held = self.file.metadata()?;
        if held.file_type().is_file() {
            match std::fs::metadata(&self.path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {}
                // Rotated or removed: write to what the path names now.
                _ => {
                    self.file = open(&self.path)?;
                    return Ok(false);
                }
            }
            if self.cap.bytes > 0 && held.len() > 0 && held.len() + line.len() as u64 > self.cap.bytes {
                self.rotate()?;
                self.file = open(&self.path)?;
                return Ok(false);
            }
        }
        self.file.write_all(line)?;
        Ok(true)
    }

    /// `path.{keep-1}` → `path.{keep}`, ..., `path` → `path.1`; the oldest
    /// falls off. Called with the lock on the current file held.
    fn rotate(&self) -> std::io::Result<()> {
        let numbered = |n: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.cap.keep == 0 {
            return std::fs::remove_file(&self.path);
        }
        for n in (1..self.cap.keep).rev() {
            match std::fs::rename(numbered(n), numbered(n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, numbered(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn size_of_all(dir: &Path) -> u64 {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
    }

    #[test]
    fn the_history_is_created_private_capped_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/alerter/messages.jsonl");
        let cap = Cap { bytes: 1000, keep: 2 };
        let mut h = History::open(&path, cap).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        for i in 0..1000 {
            h.append(&format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(50))).unwrap();
        }
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(size_of_all(path.parent().unwrap()) <= 3 * 1000);
        // The newest line is last in the current file, and every line whole.
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.ends_with("{\"n\":999,\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n"));
        for line in current.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn an_existing_file_keeps_its_mode_and_dev_null_is_never_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.jsonl");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let mut h = History::open(&path, Cap { bytes: 10 << 20, keep: 2 }).unwrap();
        h.append("{}").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        let before = std::fs::metadata("/dev/null").unwrap();
        let mut null = History::open(Path::new("/dev/null"), Cap { bytes: 1, keep: 1 }).unwrap();
        for _ in 0..10 {
            null.append("{\"x\":1}").unwrap();
        }
        let after = std::fs::metadata("/dev/null").unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&after.file_type()));
        assert_eq!((before.ino(), before.mode()), (after.ino(), after.mode()));
        assert!(!Path::new("/dev/null.1").exists());
    }

    #[test]
    fn two_writers_rotating_one_file_lose_and_tear_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.jsonl");
        let cap = Cap { bytes: 4000, keep: 1000 };
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut h = History::open(&path, cap).unwrap();
                    for i in 0..2000 {
                        h.append(&format!("{{\"w\":{w},\"i\":{i}}}")).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let mut seen = std::collections::HashSet::new();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let e = e.unwrap();
            assert!(e.metadata().unwrap().len() <= 4000, "{:?}", e.file_name());
            for line in std::fs::read_to_string(e.path()).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("torn line {line:?}"));
                assert!(seen.insert((v["w"].as_u64().unwrap(), v["i"].as_u64().unwrap())), "twice: {line}");
            }
        }
        assert_eq!(seen.len(), 4000, "every line kept (keep is large enough here)");
    }
}
