//! Following files through rotation, reading each line once.
//!
//! A [`Follower`] keeps, per followed path, an open handle on the file it
//! reads and a [`Pos`]: device and inode, the offset just past the last
//! line it handled, and a fingerprint of the file's first line. On each
//! [`Follower::poll`] of a path it compares the path's current file with
//! its handle:
//!
//! - **Renamed and recreated** (`create`): the path now names another
//!   inode. The old file is read to its end through the handle still open
//!   on it, then kept as *retired* for a while, because the program writing
//!   it may not have reopened its log yet; the new file is read from 0.
//! - **Copied and truncated** (`copytruncate`): the same inode, but shorter
//!   than the offset, or with another first line. What had not been read
//!   yet is in the copy: the sibling file (`name.1`, `name-20261126`, ...)
//!   that starts with the same first line is read from the offset to its
//!   end; then the truncated file is read from 0.
//!
//! Positions are only ever advanced past whole lines that were handled, and
//! the caller saves them (as the source's state) after the events of those
//! lines, so a restart resumes exactly where the last committed event
//! left off. At a restart the same checks find a file rotated while the
//! daemon was down, by inode or by first line.
//!
//! A line longer than `max_line` is cut there (and the rest of it skipped);
//! bytes that are not UTF-8 are kept as they are and matched bytewise.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How far a file has been read. Saved as part of the source's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pos {
    pub dev: u64,
    pub ino: u64,
    /// Just past the last handled line (or inside an overlong one, when `skipping`).
    pub offset: u64,
    /// xxh3 of the first line, once the file has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_line: Option<u64>,
    /// Inside an overlong line whose first `max_line` bytes were handled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipping: bool,
}

/// The saved state: followed paths, and retired files by the path they
/// were rotated away from (`path` + [`RETIRED`]).
pub type Saved = BTreeMap<String, Pos>;

/// Marks a retired file's key in [`Saved`].
pub const RETIRED: &str = " (rotated)";

/// Where a new file (seen for the first time, not after a rotation) starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Only lines written from now on.
    #[default]
    End,
    /// The whole file.
    Beginning,
}

/// Something the caller should know (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Rotated {
        path: String,
        how: &'static str,
    },
    /// A rotated file could not be found to finish reading it.
    Lost {
        path: String,
        why: String,
    },
    CutLine {
        path: String,
        at: u64,
    },
}

struct Tracked {
    file: File,
    pos: Pos,
    /// When it last grew (retired files are dropped after a quiet spell).
    grew: Instant,
    /// The furthest byte seen, to tell growth from re-reading a partial line.
    seen_end: u64,
    /// A finished copy (from `copytruncate`): read it to its end, last
    /// line with or without `\n`, then drop it.
    complete: bool,
}

impl Tracked {
    fn new(file: File, pos: Pos, complete: bool) -> Tracked {
        Tracked { file, pos, grew: Instant::now(), seen_end: 0, complete }
    }

    fn id(&self) -> (u64, u64) {
        (self.pos.dev, self.pos.ino)
    }
}

/// See the module docs.
pub struct Follower {
    max_line: usize,
    /// How long a retired file is kept open after it stops growing.
    keep_retired: Duration,
    current: BTreeMap<String, Tracked>,
    /// Files rotated away from each path, oldest first: read before the
    /// current one, until done (copies) or quiet (renamed files).
    old: BTreeMap<String, Vec<Tracked>>,
    /// Positions from the saved state not yet matched to an open file.
    pending: Saved,
    buf: Vec<u8>,
    pub notices: Vec<Notice>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").field("files", &self.current.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

/// Where lines go: called with each whole line (without its `\n`).
/// Returning false stops reading: the position stays before that line.
pub trait Lines {
    fn line(&mut self, path: &str, line: &[u8], cut: bool) -> bool;
}

fn fingerprint(file: &File) -> io::Result<Option<u64>> {
    let mut head = [0u8; 1024];
    let n = file.read_at(&mut head, 0)?;
    Ok(memchr::memchr(b'\n', &head[..n]).map(|i| xxhash_rust::xxh3::xxh3_64(&head[..i])))
}

fn id(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

/// Rotated copies of `path` next to it: same directory, name starting with
/// the file's name, not compressed. Newest first.
fn siblings(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return Vec::new() };
    let name = name.to_string_lossy();
    let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n != *name
                && n.starts_with(&*name)
                && ![".gz", ".xz", ".bz2", ".zst", ".lz4", ".Z"].iter().any(|ext| n.ends_with(ext))
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
    found.into_iter().map(|(_, p)| p).collect()
}

/// For ordering rotations with equal times: `name.N` is older the larger N
/// (so it sorts first as -N); dated names sort by name.
fn rotation_age(path: &Path, sibling: &Path) -> i64 {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let other = sibling.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    other
        .strip_prefix(&name)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|n| n.parse::<i64>().ok())
        .map_or(0, |n| -n)
}

/// The copy of a truncated file: a sibling (not `except`) that starts with
/// the same line and is at least `offset` long.
fn find_copy(path: &Path, pos: &Pos, except: Option<(u64, u64)>) -> Option<Tracked> {
    pos.first_line?;
    siblings(path).into_iter().find_map(|s| {
        let f = File::open(&s).ok()?;
        let m = f.metadata().ok()?;
        if Some(id(&m)) == except || m.len() < pos.offset || fingerprint(&f).ok()? != pos.first_line {
            return None;
        }
        Some(Tracked::new(f, Pos { dev: m.dev(), ino: m.ino(), ..*pos }, true))
    })
}

impl Follower {
    pub fn new(saved: Saved, max_line: usize) -> Follower {
        Follower::with_retirement(saved, max_line, Duration::from_secs(60))
    }

    /// With how long a rotated file is kept open after its last growth.
    pub fn with_retirement(saved: Saved, max_line: usize, keep_retired: Duration) -> Follower {
        Follower {
            max_line: max_line.max(64),
            keep_retired,
            current: BTreeMap::new(),
            old: BTreeMap::new(),
            pending: saved,
            buf: Vec::new(),
            notices: Vec::new(),
        }
    }

    /// The state to save: every position, current and rotated.
    pub fn saved(&self) -> Saved {
        let mut s: Saved = self.current.iter().map(|(p, t)| (p.clone(), t.pos)).collect();
        for (p, olds) in &self.old {
            for (i, t) in olds.iter().enumerate() {
                s.insert(format!("{p}{RETIRED}{i}"), t.pos);
            }
        }
        // Saved positions of files not seen yet must not be forgotten.
        for (p, pos) in &self.pending {
            s.entry(p.clone()).or_insert(*pos);
        }
        s
    }

    pub fn is_followed(&self, path: &str) -> bool {
        self.current.contains_key(path)
    }

    pub fn has_retired(&self) -> bool {
        self.old.values().any(|v| !v.is_empty())
    }

    /// Reads what is new in `path` (following it from now on). `start`
    /// says where a file unknown to the saved state starts. Returns false
    /// when `out` stopped it.
    pub fn poll(&mut self, path: &str, start: StartAt, out: &mut impl Lines) -> io::Result<bool> {
        let p = Path::new(path);
        let meta = match std::fs::metadata(p) {
            Ok(m) if m.is_file() => Some(m),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if !self.current.contains_key(path) {
            self.adopt(p, path, meta.as_ref(), start)?;
        } else if let Some(meta) = &meta {
            self.detect_rotation(p, path, meta)?;
        }
        if !self.read_old(path, out)? {
            return Ok(false);
        }
        // Reading the rotated files can take long (the daemon takes lines
        // only as fast as it can commit them), and the path may have been
        // rotated again meanwhile: look again before reading the current
        // file, so that what a rotation moved away is read first.
        if self.current.contains_key(path)
            && let Ok(meta) = std::fs::metadata(p)
            && meta.is_file()
        {
            self.detect_rotation(p, path, &meta)?;
            if !self.read_old(path, out)? {
                return Ok(false);
            }
        }
        match self.current.get_mut(path) {
            Some(t) => Self::read(&mut self.buf, self.max_line, path, t, false, out, &mut self.notices),
            None => Ok(true),
        }
    }

    /// The first look at a path in this run: match it with its saved
    /// positions, finding files rotated while we were stopped.
    fn adopt(&mut self, p: &Path, path: &str, meta: Option<&std::fs::Metadata>, start: StartAt) -> io::Result<()> {
        let prefix = format!("{path}{RETIRED}");
        let mut olds: Vec<(String, Pos)> = self
            .pending
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        olds.sort_by_key(|(k, _)| k[prefix.len()..].parse::<usize>().unwrap_or(0));
        // Files a saved position already covers are read from that position,
        // never again from the start as "newer" rotations.
        let mut claimed: std::collections::HashSet<(u64, u64)> = olds.iter().map(|(_, p)| (p.dev, p.ino)).collect();
        if let Some(pos) = self.pending.get(path) {
            claimed.insert((pos.dev, pos.ino));
        }
        for (k, pos) in olds {
            self.pending.remove(&k);
            let found = self.recover(p, path, &pos);
            self.old.entry(path.to_string()).or_default().extend(found);
        }
        let Some(meta) = meta else { return Ok(()) };
        let current = match self.pending.remove(path) {
            Some(pos) => {
                let mut found = self.recover(p, path, &pos);
                if found.first().is_some_and(|t| t.id() != id(meta)) {
                    // Rotated while we were stopped, perhaps more than once:
                    // the rotations after the one we were reading hold the
                    // lines between it and the file there now.
                    claimed.extend(found.iter().map(Tracked::id));
                    claimed.insert(id(meta));
                    let newer = self.newer_rotations(p, &found[0], &claimed);
                    let at = 1.min(found.len());
                    found.splice(at..at, newer);
                }
                let here = found.last().is_some_and(|t| t.id() == id(meta));
                let current = if here {
                    found.pop().expect("checked")
                } else {
                    self.notices.push(Notice::Rotated { path: path.into(), how: "while stopped" });
                    self.open_at(p, meta, 0)?
                };
                self.old.entry(path.to_string()).or_default().extend(found);
                current
            }
            None => {
                let offset = match start {
                    StartAt::Beginning => 0,
                    StartAt::End => self.last_line_end(p, meta.len())?,
                };
                self.open_at(p, meta, offset)?
            }
        };
        self.current.insert(path.to_string(), current);
        Ok(())
    }

    /// Rotated files next to `path` written after `start`, oldest first,
    /// read from their beginning; files in `claimed` are left alone.
    fn newer_rotations(
        &self,
        path: &Path,
        start: &Tracked,
        claimed: &std::collections::HashSet<(u64, u64)>,
    ) -> Vec<Tracked> {
        let Ok(since) = start.file.metadata().and_then(|m| m.modified()) else { return Vec::new() };
        let mut newer: Vec<((std::time::SystemTime, i64, String), Tracked)> = siblings(path)
            .into_iter()
            .filter_map(|s| {
                let f = File::open(&s).ok()?;
                let m = f.metadata().ok()?;
                let modified = m.modified().ok()?;
                if modified <= since || claimed.contains(&id(&m)) {
                    return None;
                }
                let first_line = fingerprint(&f).ok()?;
                let pos = Pos { dev: m.dev(), ino: m.ino(), offset: 0, first_line, skipping: false };
                Some(((modified, rotation_age(path, &s), s.display().to_string()), Tracked::new(f, pos, true)))
            })
            .collect();
        // Oldest first: by modification time, and for equal times (coarse
        // file system clocks) by logrotate's naming: `.2` is older than `.1`.
        newer.sort_by(|a, b| a.0.cmp(&b.0));
        newer.into_iter().map(|(_, t)| t).collect()
    }

    /// Notices a rotation of a followed path since the last look.
    fn detect_rotation(&mut self, p: &Path, path: &str, meta: &std::fs::Metadata) -> io::Result<()> {
        let t = self.current.get_mut(path).expect("followed");
        if t.id() != id(meta) {
            // Renamed away and recreated: the old file is read to its end
            // first, and kept open until quiet, as its writer may not have
            // reopened its log yet.
            self.notices.push(Notice::Rotated { path: path.into(), how: "renamed" });
            let new = self.open_at(p, meta, 0)?;
            let mut old = self.current.insert(path.to_string(), new).expect("followed");
            // Copied and truncated before it was renamed (two rotations
            // between two looks): its copy comes first.
            let len = old.file.metadata()?.len();
            let copy = self.truncated(p, path, &mut old, len)?;
            let olds = self.old.entry(path.to_string()).or_default();
            olds.extend(copy);
            olds.push(old);
            return Ok(());
        }
        let mut t = self.current.remove(path).expect("followed");
        let copy = self.truncated(p, path, &mut t, meta.len());
        self.current.insert(path.to_string(), t);
        self.old.entry(path.to_string()).or_default().extend(copy?);
        Ok(())
    }

    /// If `t` was copied and truncated since it was last read (it is now
    /// shorter than what was read, or starts with another line), starts it
    /// over from 0 and returns the copy holding what was not read yet.
    fn truncated(&mut self, p: &Path, path: &str, t: &mut Tracked, len: u64) -> io::Result<Option<Tracked>> {
        let now_first = fingerprint(&t.file)?;
        let shorter = len < t.pos.offset;
        let other_start = t.pos.first_line.is_some() && now_first.is_some() && now_first != t.pos.first_line;
        if !(shorter || other_start) {
            return Ok(None);
        }
        // Copied and truncated: what was not read yet is in the copy.
        self.notices.push(Notice::Rotated { path: path.into(), how: "copied and truncated" });
        let pos = t.pos;
        t.pos.offset = 0;
        t.pos.first_line = now_first;
        t.pos.skipping = false;
        t.seen_end = 0;
        let copy = find_copy(p, &pos, Some(t.id()));
        if copy.is_none() {
            self.notices.push(Notice::Lost {
                path: path.into(),
                why: "it was truncated, and no rotated copy starting with the same line was found".into(),
            });
        }
        Ok(copy)
    }

    /// Reads the files rotated away from `path`, oldest first; drops those
    /// done (copies read to the end; renamed files quiet for long).
    fn read_old(&mut self, path: &str, out: &mut impl Lines) -> io::Result<bool> {
        let Some(mut olds) = self.old.remove(path) else { return Ok(true) };
        let mut keep = Vec::new();
        let mut stopped = false;
        for mut t in olds.drain(..) {
            if stopped {
                keep.push(t);
                continue;
            }
            // Quiet for long: its writer has moved on, so a last line
            // without `\n` is as complete as it will get.
            let done = t.complete || t.grew.elapsed() >= self.keep_retired;
            let ok = Self::read(&mut self.buf, self.max_line, path, &mut t, done, out, &mut self.notices)?;
            if !ok {
                stopped = true;
                keep.push(t);
            } else if !done {
                keep.push(t);
            }
        }
        if !keep.is_empty() {
            self.old.insert(path.to_string(), keep);
        }
        Ok(!stopped)
    }

    /// Polls every rotated file (for the periodic tick while any exist).
    pub fn poll_all_retired(&mut self, out: &mut impl Lines) -> io::Result<bool> {
        let paths: Vec<String> = self.old.keys().cloned().collect();
        for p in paths {
            if !self.read_old(&p, out)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Finds the file(s) a saved position was about, at `path` or next to
    /// it, in reading order: the file by inode (read on from the offset);
    /// or, if that file was truncated since, its copy from the offset and
    /// then the file itself from 0; or, if the inode is gone, the copy
    /// found by first line.
    fn recover(&mut self, p: &Path, path: &str, pos: &Pos) -> Vec<Tracked> {
        let mut candidates = vec![p.to_path_buf()];
        candidates.extend(siblings(p));
        let by_inode = candidates.iter().find_map(|c| {
            let m = std::fs::metadata(c).ok()?;
            (id(&m) == (pos.dev, pos.ino)).then(|| File::open(c).ok().map(|f| (f, m))).flatten()
        });
        if let Some((file, m)) = by_inode {
            let first = fingerprint(&file).ok().flatten();
            let intact = m.len() >= pos.offset && (pos.first_line.is_none() || first == pos.first_line);
            if intact {
                return vec![Tracked::new(file, *pos, false)];
            }
            let mut out = Vec::new();
            match find_copy(p, pos, Some(id(&m))) {
                Some(copy) => out.push(copy),
                None => self.notices.push(Notice::Lost {
                    path: path.into(),
                    why:
                        "it was truncated while alerter was stopped, and no copy starting with the same line was found"
                            .into(),
                }),
            }
            out.push(Tracked::new(
                file,
                Pos { dev: m.dev(), ino: m.ino(), offset: 0, first_line: first, skipping: false },
                false,
            ));
            return out;
        }
        match find_copy(p, pos, None) {
            Some(copy) => vec![copy],
            None => {
                self.notices.push(Notice::Lost {
                    path: path.into(),
                    why: "it was rotated while alerter was stopped, and the rotated file is gone or compressed".into(),
                });
                Vec::new()
            }
        }
    }

    fn open_at(&self, p: &Path, meta: &std::fs::Metadata, offset: u64) -> io::Result<Tracked> {
        let file = File::open(p)?;
        // The handle is what we read: if the path moved on between the
        // metadata and the open, take the handle's identity.
        let m = file.metadata().unwrap_or_else(|_| meta.clone());
        let first_line = fingerprint(&file)?;
        Ok(Tracked::new(
            file,
            Pos { dev: m.dev(), ino: m.ino(), offset: offset.min(m.len()), first_line, skipping: false },
            false,
        ))
    }

    /// The end of the last whole line at or before `len`.
    fn last_line_end(&mut self, p: &Path, len: u64) -> io::Result<u64> {
        let file = File::open(p)?;
        let mut at = len;
        let mut chunk = [0u8; 4096];
        while at > 0 {
            let from = at.saturating_sub(chunk.len() as u64);
            let n = file.read_at(&mut chunk[..(at - from) as usize], from)?;
            if let Some(i) = memchr::memrchr(b'\n', &chunk[..n]) {
                return Ok(from + i as u64 + 1);
            }
            at = from;
        }
        Ok(0)
    }

    /// Reads whole lines from `t.pos.offset` to the end of the file. With
    /// `finish`, a last line without `\n` counts too (the file is done).
    #[allow(clippy::too_many_arguments)]
    fn read(
        buf: &mut Vec<u8>,
        max_line: usize,
        path: &str,
        t: &mut Tracked,
        finish: bool,
        out: &mut impl Lines,
        notices: &mut Vec<Notice>,
    ) -> io::Result<bool> {
        const CHUNK: usize = 1 << 20;
        let chunk = CHUNK.max(max_line + 1);
        if buf.len() < chunk {
            buf.resize(chunk, 0);
        }
        loop {
            let n = loop {
                match t.file.read_at(&mut buf[..chunk], t.pos.offset) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                return Ok(true);
            }
            let end = t.pos.offset + n as u64;
            if end > t.seen_end {
                t.seen_end = end;
                t.grew = Instant::now();
            }
            if t.pos.first_line.is_none() && t.pos.offset == 0 {
                t.pos.first_line = fingerprint(&t.file)?;
            }
            let data = &buf[..n];
            let mut at = 0usize;
            if t.pos.skipping {
                match memchr::memchr(b'\n', data) {
                    Some(i) => {
                        at = i + 1;
                        t.pos.skipping = false;
                        t.pos.offset += at as u64;
                    }
                    None => {
                        t.pos.offset += n as u64;
                        continue;
                    }
                }
            }
            let mut progressed = at > 0;
            while at < n {
                match memchr::memchr(b'\n', &data[at..]) {
                    Some(i) if i <= max_line => {
                        let mut line = &data[at..at + i];
                        if line.last() == Some(&b'\r') {
                            line = &line[..line.len() - 1];
                        }
                        if !out.line(path, line, false) {
                            return Ok(false);
                        }
                        at += i + 1;
                        t.pos.offset += (i + 1) as u64;
                        progressed = true;
                    }
                    found => {
                        let rest = n - at;
                        if found.is_some() || rest > max_line {
                            // Overlong: handle its start, skip the rest.
                            notices.push(Notice::CutLine { path: path.into(), at: t.pos.offset });
                            if !out.line(path, &data[at..at + max_line], true) {
                                return Ok(false);
                            }
                            t.pos.offset += max_line as u64;
                            t.pos.skipping = true;
                            at += max_line;
                            progressed = true;
                            match memchr::memchr(b'\n', &data[at..]) {
                                Some(j) => {
                                    at += j + 1;
                                    t.pos.offset += (j + 1) as u64;
                                    t.pos.skipping = false;
                                }
                                None => {
                                    t.pos.offset += (n - at) as u64;
                                    at = n;
                                }
                            }
                        } else if finish && n < chunk {
                            // The file is done: its unterminated last line counts.
                            if !out.line(path, &data[at..n], false) {
                                return Ok(false);
                            }
                            t.pos.offset += rest as u64;
                            return Ok(true);
                        } else {
                            // A partial line: wait for the rest of it.
                            if !progressed || n < chunk {
                                return Ok(true);
                            }
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
