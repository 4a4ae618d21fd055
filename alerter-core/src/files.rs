//! Files the daemon trusts: secrets (`*_file` settings, key files) and
//! trust lists (trusted sender keys).
//!
//! Each file is opened once and checked on that descriptor (`fstat`), and
//! what is read is read from the same descriptor, so a file swapped between
//! the check and the read is never used. The rules are those of sshd and
//! Debian's `root:alerter 0640` convention:
//!
//! - a secret must not be accessible to other users at all, must not be
//!   writable by its group, may be readable by its group only when that is
//!   the daemon's own group, and must be owned by the daemon's user or root;
//! - a trust list may be read by anyone but changed only by its owner, who
//!   is the daemon's user or root;
//! - files in `$CREDENTIALS_DIRECTORY` are systemd's (it sets their owner
//!   and access), so only the "other users" rule applies to them.
//!
//! The daemon's user and group are the effective ones of this process: run
//! `alerter check` as the daemon's user to check what the daemon will see.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

/// The largest secret or trust list read (a password, a key, a list of a few
/// thousand keys).
const MAX_SIZE: u64 = 256 * 1024;

/// What a file holds, which decides who may read and change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A password or private key: readable by the daemon alone (and its group).
    Secret,
    /// Public keys trusted to sign: readable by anyone, writable by the owner.
    TrustList,
}

/// Why a file was refused; the message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error("{path} is larger than {MAX_SIZE} bytes; is it the right file?")]
    TooLarge { path: PathBuf },
    #[error("{path} is not text (UTF-8)")]
    NotText { path: PathBuf },
    #[error("{path} {problem} (mode {mode:04o}, owner {owner}:{group}); fix with `{fix}`")]
    Unsafe { path: PathBuf, problem: String, mode: u32, owner: String, group: String, fix: String },
}

fn user_name(uid: u32) -> String {
    User::from_uid(Uid::from_raw(uid)).ok().flatten().map_or_else(|| uid.to_string(), |u| u.name)
}

fn group_name(gid: u32) -> String {
    Group::from_gid(Gid::from_raw(gid)).ok().flatten().map_or_else(|| gid.to_string(), |g| g.name)
}

/// Whether `path` lies in systemd's credentials directory for this service.
fn is_credential(path: &Path) -> bool {
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) else {
        return false;
    };
    let dir = Path::new(&dir);
    // Compare canonical paths, so `..` cannot walk out of the directory.
    match (std::fs::canonicalize(dir), path.parent().map(std::fs::canonicalize)) {
        (Ok(d), Some(Ok(p))) => p == d,
        _ => false,
    }
}

/// The facts about an opened file that the rules look at.
#[derive(Debug, Clone, Copy)]
struct Facts {
    mode: u32,
    uid: u32,
    gid: u32,
    /// The daemon's effective user and group.
    me: u32,
    my_group: u32,
    credential: bool,
}

/// The rules, on facts alone (no I/O), as (problem, fix) when refused.
fn judge(kind: Kind, f: Facts, path: &str) -> Option<(String, String)> {
    let me = user_name(f.me);
    let my_group = group_name(f.my_group);
    let perm = f.mode & 0o7777;
    match kind {
        Kind::Secret => {
            if perm & 0o007 != 0 {
                let fix = if f.gid == f.my_group && perm & 0o020 == 0 {
                    format!("chmod o-rwx {path}")
                } else {
                    format!("chmod 600 {path}")
                };
                return Some(("can be read or changed by every user".into(), fix));
            }
            if f.credential {
                return None;
            }
            if f.uid != f.me && f.uid != 0 {
                return Some((
                    format!("is owned by {}, who is neither the daemon's user ({me}) nor root", user_name(f.uid)),
                    format!("chown {me} {path}"),
                ));
            }
            if perm & 0o020 != 0 {
                return Some(("can be changed by its group".into(), format!("chmod g-w {path}")));
            }
            if perm & 0o070 != 0 && f.gid != f.my_group {
                return Some((
                    format!(
                        "can be read by the group {}, which is not the daemon's group ({my_group})",
                        group_name(f.gid)
                    ),
                    format!("chmod 600 {path}` or `chown :{my_group} {path}"),
                ));
            }
            None
        }
        Kind::TrustList => {
            if perm & 0o022 != 0 {
                return Some(("can be changed by other users than its owner".into(), format!("chmod go-w {path}")));
            }
            if f.uid != f.me && f.uid != 0 {
                return Some((
                    format!("is owned by {}, who is neither the daemon's user ({me}) nor root", user_name(f.uid)),
                    format!("chown root {path}"),
                ));
            }
            None
        }
    }
}

/// Opens `path`, checks it as `kind` on the descriptor, and reads it from
/// that descriptor as text.
pub fn read(path: &Path, kind: Kind) -> Result<String, FileError> {
    let io = |source| FileError::Io { path: path.to_path_buf(), source };
    // O_NONBLOCK: opening a FIFO someone left in the file's place must not
    // hang; it is refused below as not a regular file.
    let mut file =
        File::options().read(true).custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular { path: path.to_path_buf() });
    }
    let facts = Facts {
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        me: Uid::effective().as_raw(),
        my_group: Gid::effective().as_raw(),
        credential: is_credential(path),
    };
    if let Some((problem, fix)) = judge(kind, facts, &path.display().to_string()) {
        return Err(FileError::Unsafe {
            path: path.to_path_buf(),
            problem,
            mode: facts.mode & 0o7777,
            owner: user_name(facts.uid),
            group: group_name(facts.gid),
            fix,
        });
    }
    let mut bytes = Vec::new();
    (&mut file).take(MAX_SIZE + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(FileError::TooLarge { path: path.to_path_buf() });
    }
    String::from_utf8(bytes).map_err(|_| FileError::NotText { path: path.to_path_buf() })
}

/// A secret's text, without the final line break.
pub fn read_secret(path: &Path) -> Result<String, FileError> {
    Ok(read(path, Kind::Secret)?.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 990;
    const MY_GROUP: u32 = 990;

    fn facts(mode: u32, uid: u32, gid: u32) -> Facts {
        Facts { mode, uid, gid, me: ME, my_group: MY_GROUP, credential: false }
    }

    fn secret(mode: u32, uid: u32, gid: u32) -> Option<String> {
        judge(Kind::Secret, facts(mode, uid, gid), "F").map(|(p, f)| format!("{p}; {f}"))
    }

    #[test]
    fn secrets_follow_the_debian_convention() {
        assert_eq!(secret(0o600, ME, MY_GROUP), None);
        assert_eq!(secret(0o400, 0, 0), None, "root's own file");
        assert_eq!(secret(0o640, 0, MY_GROUP), None, "root:alerter 0640");
        assert_eq!(secret(0o440, ME, MY_GROUP), None);
        let world = secret(0o644, 0, MY_GROUP).unwrap();
        assert!(world.contains("every user") && world.ends_with("chmod o-rwx F"), "{world}");
        assert!(secret(0o602, ME, MY_GROUP).unwrap().contains("every user"));
        assert!(secret(0o604, 0, 0).unwrap().ends_with("chmod 600 F"));
        assert!(secret(0o660, 0, MY_GROUP).unwrap().ends_with("chmod g-w F"));
        let other_group = secret(0o640, 0, 4242).unwrap();
        assert!(other_group.contains("not the daemon's group"), "{other_group}");
        assert!(secret(0o600, 4242, MY_GROUP).unwrap().contains("neither the daemon's user"));
    }

    #[test]
    fn systemd_credentials_keep_only_the_other_users_rule() {
        let mut f = facts(0o440, 4242, 4242);
        f.credential = true;
        assert_eq!(judge(Kind::Secret, f, "F"), None);
        f.mode = 0o444;
        assert!(judge(Kind::Secret, f, "F").is_some());
    }

    #[test]
    fn trust_lists_may_be_read_but_not_changed_by_others() {
        assert_eq!(judge(Kind::TrustList, facts(0o644, 0, 0), "F"), None);
        assert_eq!(judge(Kind::TrustList, facts(0o600, ME, 7), "F"), None);
        assert!(judge(Kind::TrustList, facts(0o664, 0, 0), "F").is_some());
        assert!(judge(Kind::TrustList, facts(0o646, 0, 0), "F").is_some());
        assert!(judge(Kind::TrustList, facts(0o644, 4242, 0), "F").is_some());
    }

    #[test]
    fn a_fifo_is_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pw");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(read(&fifo, Kind::Secret), Err(FileError::NotRegular { .. })));
    }
}
