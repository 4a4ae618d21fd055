//! `alerter init`: writes a starter configuration for the admin to edit.
//!
//! The starter is the embedded default config itself (config/alerter.yaml):
//! it watches this machine's disks and auth log and reports on standard
//! output, and carries commented, ready-to-enable popup and mail
//! transports, a subscriber, an on-call group and the rules' targets for
//! them. One text for both means what `alerter run` does with no file is
//! exactly what the admin starts editing from.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use alerter_core::config::DEFAULT_CONFIG;
use anyhow::{Context, bail};
use clap::Args;

/// `alerter init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the config. Default: /etc/alerter/alerter.yaml as
    /// root, else ~/.config/alerter/alerter.yaml (under $XDG_CONFIG_HOME if set).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace the file if it exists (what it held is lost).
    #[arg(long)]
    force: bool,
}

/// Whether we run as root (then the config belongs in /etc).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The default place for the config: where an admin looks for it.
fn default_path() -> anyhow::Result<PathBuf> {
    default_path_for(is_root(), |name| std::env::var_os(name))
}

fn default_path_for(root: bool, var: impl Fn(&str) -> Option<OsString>) -> anyhow::Result<PathBuf> {
    if root {
        return Ok(PathBuf::from("/etc/alerter/alerter.yaml"));
    }
    let base = match var("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => match var("HOME").filter(|d| !d.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!("neither HOME nor XDG_CONFIG_HOME is set; say where to write the config with -o FILE"),
        },
    };
    Ok(base.join("alerter/alerter.yaml"))
}

/// A path as a shell word, quoted when it needs to be, for the printed
/// commands to work when pasted.
fn shell_word(p: &Path) -> String {
    let s = p.display().to_string();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c)) {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Writes the file: a new one (never over an existing file, decided by the
/// kernel with O_EXCL, so a race cannot clobber one), or with `force` a
/// complete replacement renamed into place, so the old one is never left
/// half overwritten.
fn write(path: &Path, force: bool) -> anyhow::Result<()> {
    // Mode 0644 like most of /etc: the config holds no secrets (passwords
    // and keys live in `*_file` files of their own, which `alerter check`
    // insists are private), and a daemon running as its own user must be
    // able to read a file root wrote.
    let open = |p: &Path| std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(p);
    if !force {
        let mut f = match open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "{} already exists; edit it, write elsewhere with -o FILE, or replace it with --force \
                 (what it holds is lost)",
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        };
        return f.write_all(DEFAULT_CONFIG.as_bytes()).with_context(|| format!("cannot write {}", path.display()));
    }
    if path.is_dir() {
        bail!("{} is a directory; name the file to write with -o FILE", path.display());
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = open(&tmp)
        .and_then(|mut f| f.write_all(DEFAULT_CONFIG.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot replace {}", path.display()));
    }
    Ok(())
}

/// `alerter init`: write the starter and say what to do next.
pub fn init(args: InitArgs) -> anyhow::Result<()> {
    let path = match args.output {
        Some(p) => p,
        None => default_path()?,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    write(&path, args.force)?;
    let file = shell_word(&path);
    let schema = shell_word(&path.with_file_name("alerter.schema.json"));
    println!(
        "wrote {path}: the default configuration, which watches this machine's disks and auth log and
reports to standard output.

Next:
  1. Edit it: add your admins under `subscribers` (a `machine` for popups, an `email`
     for mail), enable the `popup` and `mail` transports and the on-call targets of the
     rules (remove the `# ` in front of each line of those blocks).
  2. alerter check -c {file}
  3. alerter run -c {file}

Editors check and complete the file with its JSON Schema: alerter schema > {schema}
Every key: docs/config.md; testing your rules: docs/rule-tests.md.",
        path = path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_paths() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
        };
        let home = env(&[("HOME", "/home/alice")]);
        assert_eq!(default_path_for(true, home).unwrap(), Path::new("/etc/alerter/alerter.yaml"));
        assert_eq!(default_path_for(false, home).unwrap(), Path::new("/home/alice/.config/alerter/alerter.yaml"));
        let xdg = env(&[("HOME", "/home/alice"), ("XDG_CONFIG_HOME", "/cfg")]);
        assert_eq!(default_path_for(false, xdg).unwrap(), Path::new("/cfg/alerter/alerter.yaml"));
        let err = default_path_for(false, env(&[])).unwrap_err().to_string();
        assert!(err.contains("-o FILE"), "{err}");
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word(Path::new("/etc/alerter/alerter.yaml")), "/etc/alerter/alerter.yaml");
        assert_eq!(shell_word(Path::new("my config.yaml")), "'my config.yaml'");
        assert_eq!(shell_word(Path::new("it's.yaml")), r"'it'\''s.yaml'");
    }
}
