//! Finding plugin files in the plugin directories, and refusing unsafe ones.
//!
//! Loading a plugin runs its code, so a file is a candidate only if nobody
//! but root or the daemon's own user could have written it: the file and
//! its directory must be owned by one of them and not group- or
//! world-writable, every directory above up to `/` too (a sticky one owned
//! by root, like `/tmp`, may be writable by all: nobody can rename what is
//! not theirs in it), and a symlink must not lead out of the directory.
//! Every refusal says exactly why. Nothing here loads or runs a plugin.
//!
//! The scan's checks go by path. Before every run, [`open_for_run`] does
//! them again without trusting a path: it opens each directory from `/`
//! down without following links, checks it on its descriptor, opens the
//! file the same way, and checks the file's owner, mode and SHA-256 on the
//! descriptor that is then executed or loaded.

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, fstat};

use sha2::{Digest, Sha256};

/// How a candidate is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateKind {
    /// An ELF shared object, loaded through the C ABI.
    SharedObject,
    /// An executable that speaks the plugin protocol itself.
    Executable,
}

/// A file that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub path: PathBuf,
    pub kind: CandidateKind,
    pub sha256: String,
}

/// A file that will not be loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub path: PathBuf,
    pub reason: String,
}

/// The user ids allowed to own plugins: root and the daemon's own.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// Why a file or directory with this metadata must not be trusted.
fn unsafe_because(meta: &fs::Metadata, what: &str) -> Option<String> {
    unsafe_mode_or_owner(meta.permissions().mode(), meta.uid(), what)
}

/// [`unsafe_because`] on the mode and owner alone (from an `fstat`).
fn unsafe_mode_or_owner(mode: u32, uid: u32, what: &str) -> Option<String> {
    if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group- and world-writable",
            (true, false) => "group-writable",
            _ => "world-writable",
        };
        return Some(format!("{what} is {who} (mode {:04o}); fix with `chmod go-w`", mode & 0o7777));
    }
    if !trusted_owner(uid) {
        return Some(format!(
            "{what} is owned by uid {}, neither root nor the alerter's user ({}); fix with `chown root`",
            uid,
            nix::unistd::geteuid()
        ));
    }
    None
}

/// The hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    sha256_of(fs::File::open(path)?)
}

/// The hex SHA-256 of what `f` reads to its end.
fn sha256_of(mut f: impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// What kind of file this is: an ELF shared object, an executable, or neither.
fn classify(path: &Path, meta: &fs::Metadata) -> Result<Option<CandidateKind>, String> {
    let mut head = [0u8; 18];
    let n = fs::File::open(path).and_then(|mut f| f.read(&mut head)).map_err(|e| format!("cannot read: {e}"))?;
    let is_elf = n >= 18 && head[..4] == *b"\x7fELF";
    let named_so = path.file_name().is_some_and(|n| {
        let n = n.to_string_lossy();
        n.ends_with(".so") || n.contains(".so.")
    });
    if is_elf {
        // e_type, little- or big-endian per EI_DATA: 3 is ET_DYN (shared
        // object or position-independent executable).
        let e_type = if head[5] == 2 {
            u16::from_be_bytes([head[16], head[17]])
        } else {
            u16::from_le_bytes([head[16], head[17]])
        };
        if named_so {
            if e_type != 3 {
                return Err("not a shared object (an ELF file, but not ET_DYN)".into());
            }
            return Ok(Some(CandidateKind::SharedObject));
        }
    }
    if named_so {
        return Err("not a shared object (no ELF header); is it a text file named .so?".into());
    }
    if meta.permissions().mode() & 0o111 != 0 {
        return Ok(Some(CandidateKind::Executable));
    }
    Ok(None)
}

/// Scans the directories (in order; files in each in name order).
/// Missing directories are skipped: a packaged default that does not
/// exist yet is not an error.
pub fn scan(dirs: &[PathBuf]) -> (Vec<Candidate>, Vec<Refusal>) {
    let mut found = Vec::new();
    let mut refused = Vec::new();
    for dir in dirs {
        let Ok(dir_meta) = fs::metadata(dir) else { continue };
        if !dir_meta.is_dir() {
            refused.push(Refusal { path: dir.clone(), reason: "a plugin directory must be a directory".into() });
            continue;
        }
        let canonical_dir = match fs::canonicalize(dir) {
            Ok(d) => d,
            Err(e) => {
                refused.push(Refusal { path: dir.clone(), reason: format!("cannot resolve the directory: {e}") });
                continue;
            }
        };
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                refused.push(Refusal { path: dir.clone(), reason: format!("cannot read the directory: {e}") });
                continue;
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        // From the top down, as `open_for_run` walks.
        let unsafe_dir = unsafe_parents(&canonical_dir).or_else(|| unsafe_because(&dir_meta, "the plugin directory"));
        if let Some(reason) = unsafe_dir {
            // Anyone who can write the directory can swap any plugin in it.
            for path in paths {
                refused.push(Refusal { path, reason: reason.clone() });
            }
            continue;
        }
        for path in paths {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') || name.ends_with('~') {
                continue;
            }
            match check_file(&path, &canonical_dir) {
                Ok(Some(c)) => found.push(c),
                Ok(None) => {}
                Err(reason) => refused.push(Refusal { path, reason }),
            }
        }
    }
    (found, refused)
}

/// Why a directory above a plugin directory must not be trusted: its
/// owner, or who can write it (see the module header).
fn unsafe_parent(mode: u32, uid: u32, path: &Path) -> Option<String> {
    let what = format!("the directory {} above it", path.display());
    let sticky_roots = mode & 0o1000 != 0 && uid == 0;
    if mode & 0o022 != 0 && !sticky_roots {
        let who = if mode & 0o002 != 0 { "world-writable" } else { "group-writable" };
        return Some(format!(
            "{what} is {who} (mode {:04o}): whoever can write it can swap the plugin directory; fix with `chmod go-w {}`",
            mode & 0o7777,
            path.display()
        ));
    }
    if !trusted_owner(uid) {
        return Some(format!(
            "{what} is owned by uid {uid}, neither root nor the alerter's user ({}); fix with `chown root {}`",
            nix::unistd::geteuid(),
            path.display()
        ));
    }
    None
}

/// Checks every directory above `dir` (canonical), by path, for the scan.
fn unsafe_parents(dir: &Path) -> Option<String> {
    let mut above: Vec<&Path> = dir.ancestors().skip(1).collect();
    above.reverse();
    above.into_iter().find_map(|p| match fs::metadata(p) {
        Ok(m) => unsafe_parent(m.mode(), m.uid(), p),
        Err(e) => Some(format!("cannot check the directory {} above it: {e}", p.display())),
    })
}

/// Opens a plugin file to run or load it, checking on descriptors (see the
/// module header): every directory from `/` down, the file's owner and
/// mode, and, when given, that its SHA-256 is still the one it had when it
/// was scanned. The descriptor returned is the file to execute or load.
pub fn open_for_run(path: &Path, sha256: Option<&str>) -> Result<OwnedFd, String> {
    let canonical = fs::canonicalize(path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    let names: Vec<&std::ffi::OsStr> = canonical
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let Some((file_name, dirs)) = names.split_last() else {
        return Err(format!("{} is not a file", canonical.display()));
    };
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut walked = PathBuf::from("/");
    let mut dir = open("/", dir_flags, Mode::empty()).map_err(|e| format!("cannot open /: {e}"))?;
    let st = fstat(&dir).map_err(|e| format!("cannot check /: {e}"))?;
    if let Some(reason) = unsafe_parent(st.st_mode, st.st_uid, &walked) {
        return Err(reason);
    }
    for (i, name) in dirs.iter().enumerate() {
        walked.push(name);
        dir = openat(&dir, *name, dir_flags, Mode::empty()).map_err(|e| match e {
            nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
                format!("{} was replaced by a symbolic link or a file since the plugin was scanned", walked.display())
            }
            e => format!("cannot open {}: {e}", walked.display()),
        })?;
        let st = fstat(&dir).map_err(|e| format!("cannot check {}: {e}", walked.display()))?;
        let is_plugin_dir = i + 1 == dirs.len();
        let reason = if is_plugin_dir {
            unsafe_mode_or_owner(st.st_mode, st.st_uid, &format!("the plugin directory {}", walked.display()))
        } else {
            unsafe_parent(st.st_mode, st.st_uid, &walked)
        };
        if let Some(reason) = reason {
            return Err(reason);
        }
    }
    let file = openat(&dir, *file_name, OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| match e {
            nix::errno::Errno::ELOOP => format!("{} was replaced by a symbolic link", canonical.display()),
            e => format!("cannot open {}: {e}", canonical.display()),
        })?;
    let file = fs::File::from(file);
    let meta = file.metadata().map_err(|e| format!("cannot check {}: {e}", canonical.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", canonical.display()));
    }
    if let Some(reason) = unsafe_because(&meta, "the file") {
        return Err(reason);
    }
    if let Some(want) = sha256 {
        let got = sha256_of(&file).map_err(|e| format!("cannot read {}: {e}", canonical.display()))?;
        if got != want {
            return Err(format!(
                "{} changed since it was scanned (sha256 {got}, was {want}); if the change is yours, reload (SIGHUP) to take the new file",
                canonical.display()
            ));
        }
    }
    Ok(OwnedFd::from(file))
}

fn check_file(path: &Path, dir: &Path) -> Result<Option<Candidate>, String> {
    let link_meta = fs::symlink_metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    let target = if link_meta.file_type().is_symlink() {
        let t = fs::canonicalize(path).map_err(|e| format!("broken symlink: {e}"))?;
        if t.parent() != Some(dir) {
            return Err(format!("symlink leads out of the plugin directory (to {})", t.display()));
        }
        t
    } else {
        path.to_path_buf()
    };
    let meta = fs::metadata(&target).map_err(|e| format!("cannot stat: {e}"))?;
    if meta.is_dir() {
        return Ok(None);
    }
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if let Some(reason) = unsafe_because(&meta, "the file") {
        return Err(reason);
    }
    let Some(kind) = classify(&target, &meta)? else { return Ok(None) };
    let sha256 = sha256_file(&target).map_err(|e| format!("cannot read: {e}"))?;
    Ok(Some(Candidate { path: path.to_path_buf(), kind, sha256 }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, bytes: &[u8], mode: u32) {
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn elf_so() -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[5] = 1;
        b[16] = 3;
        b
    }

    #[test]
    fn directories_above_may_be_sticky_and_roots_but_not_writable_by_others() {
        let tmp = Path::new("/tmp");
        assert_eq!(unsafe_parent(0o41777, 0, tmp), None, "/tmp itself");
        assert_eq!(unsafe_parent(0o40755, 0, tmp), None);
        assert!(unsafe_parent(0o40777, 0, tmp).unwrap().contains("world-writable (mode 0777)"));
        assert!(unsafe_parent(0o40775, 0, tmp).unwrap().contains("group-writable"));
        assert!(unsafe_parent(0o41777, 4242, tmp).unwrap().contains("world-writable"), "sticky, but not root's");
        assert!(unsafe_parent(0o40755, 4242, tmp).is_some());
    }

    #[test]
    fn refuses_unsafe_files_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        write(&d.join("good.so"), &elf_so(), 0o644);
        write(&d.join("open.so"), &elf_so(), 0o666);
        write(&d.join("text.so"), b"just some text\n", 0o644);
        write(&d.join("check.py"), b"#!/usr/bin/env python3\n", 0o755);
        write(&d.join("README"), b"not a plugin", 0o644);
        let outside = tempfile::tempdir().unwrap();
        write(&outside.path().join("elsewhere.so"), &elf_so(), 0o644);
        symlink(outside.path().join("elsewhere.so"), d.join("link.so")).unwrap();

        let (found, refused) = scan(&[d.to_path_buf()]);
        let names: Vec<String> =
            found.iter().map(|c| c.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, vec!["check.py", "good.so"]);
        assert_eq!(found[0].kind, CandidateKind::Executable);
        assert_eq!(found[1].kind, CandidateKind::SharedObject);
        assert_eq!(found[1].sha256.len(), 64);
        let reason = |n: &str| refused.iter().find(|r| r.path.ends_with(n)).map(|r| r.reason.clone()).unwrap();
        assert!(reason("open.so").contains("group- and world-writable (mode 0666)"), "{}", reason("open.so"));
        assert!(reason("text.so").contains("not a shared object"));
        assert!(reason("link.so").contains("symlink leads out of the plugin directory"));
    }

    #[test]
    fn a_writable_directory_taints_everything_in_it() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("good.so"), &elf_so(), 0o644);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let (found, refused) = scan(&[dir.path().to_path_buf()]);
        assert!(found.is_empty());
        assert!(refused[0].reason.contains("the plugin directory is"), "{}", refused[0].reason);
    }

    #[test]
    fn missing_directories_are_skipped() {
        let (found, refused) = scan(&[PathBuf::from("/nonexistent/alerter/plugins")]);
        assert!(found.is_empty() && refused.is_empty());
    }
}
