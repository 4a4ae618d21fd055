//! Executing a file by the descriptor it was checked on.
//!
//! A plugin file is opened once, checked on that descriptor (owner, mode,
//! SHA-256), and then that same open file is what runs, so a file renamed
//! or replaced after the check is never executed. `fexecve` would do for
//! a binary, but a `#!` script's interpreter is handed `/dev/fd/N` to open,
//! which a close-on-exec descriptor no longer is. So the command executes
//! `/proc/self/fd/N` with N's close-on-exec flag cleared in the child only:
//! the kernel runs the checked file, and an interpreter can open it again.
//! This module holds the crate's only `unsafe`: the `pre_exec` hook.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The path that names the open file `fd` in the process that holds it.
pub fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Makes `cmd` keep `fd` open across its exec (with the same number), for
/// a program that is given [`fd_path`]: the file itself, or an argument
/// naming it. `fd` must stay open until `cmd` is spawned.
pub fn keep_open_across_exec(cmd: &mut Command, fd: &OwnedFd) {
    let n = fd.as_raw_fd();
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe functions may be called. It makes one fcntl call,
    // which is, on a descriptor the child inherited from us (the caller
    // keeps it open until the spawn returns), reads errno on failure, and
    // neither allocates nor takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::fcntl(n, nix::libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A command that executes the open file `fd`; `name` is its argv[0] (the
/// file's path, for `ps`).
pub fn command_for_fd(fd: &OwnedFd, name: &str) -> Command {
    let mut c = Command::new(fd_path(fd));
    c.arg0(name);
    keep_open_across_exec(&mut c, fd);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &std::path::Path) -> OwnedFd {
        OwnedFd::from(std::fs::File::open(path).unwrap())
    }

    #[test]
    fn a_script_runs_by_its_descriptor_even_after_its_path_is_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("plugin");
        std::fs::write(&script, "#!/bin/sh\necho checked \"$0\"\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fd = open(&script);
        // Replaced after the check: the descriptor still names the old file.
        std::fs::remove_file(&script).unwrap();
        std::fs::write(&script, "#!/bin/sh\necho planted\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = command_for_fd(&fd, &script.display().to_string()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(text.starts_with("checked /proc/self/fd/"), "{text}");
        // The parent's descriptor is still close-on-exec: only the child's
        // copy was changed.
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & nix::libc::FD_CLOEXEC, 0);
    }
}
