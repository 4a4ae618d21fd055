//! The mount table (`/proc/self/mounts`), and which filesystems are "real".

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub path: String,
    pub fstype: String,
}

/// Filesystem types that hold no user data, or whose "fullness" means
/// nothing (read-only images are always 100% full). Skipped unless listed
/// by mount point or `include_pseudo` is set.
const PSEUDO: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "iso9660",
    "fuse.gvfsd-fuse",
    "fuse.portal",
];

/// Whether a filesystem type is a pseudo filesystem (see [`PSEUDO`]).
pub fn is_pseudo(fstype: &str) -> bool {
    PSEUDO.contains(&fstype)
}

/// Parses the mount table. Lines that do not have the four leading fields
/// are skipped and reported by number: the kernel writes this file, so a
/// bad line means something is very wrong, but one bad line must not hide
/// every other filesystem.
pub fn parse(table: &str) -> (Vec<Mount>, Vec<usize>) {
    let mut mounts = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in table.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        match (fields.next(), fields.next(), fields.next(), fields.next()) {
            (Some(device), Some(path), Some(fstype), Some(_options)) => {
                mounts.push(Mount { device: unescape(device), path: unescape(path), fstype: unescape(fstype) })
            }
            _ => bad.push(i + 1),
        }
    }
    (mounts, bad)
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\011` tab,
/// `\012` newline, `\134` backslash). A malformed escape stays as written.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escapes_and_skips_bad_lines() {
        let table = "/dev/sda1 / ext4 rw,relatime 0 0\n\
                     proc /proc proc rw 0 0\n\
                     /dev/sdb1 /media/My\\040Disk vfat rw 0 0\n\
                     garbage\n\
                     \n\
                     /dev/sdc1 /odd\\04 ext4 rw 0 0\n\
                     /dev/sdd1 /big\\777 ext4 rw 0 0\n";
        let (mounts, bad) = parse(table);
        assert_eq!(bad, vec![4]);
        assert_eq!(mounts.len(), 5);
        assert_eq!(mounts[0], Mount { device: "/dev/sda1".into(), path: "/".into(), fstype: "ext4".into() });
        assert_eq!(mounts[2].path, "/media/My Disk");
        assert_eq!(mounts[3].path, "/odd\\04", "a short escape stays as written");
        assert_eq!(mounts[4].path, "/big\\777", "an escape past 255 stays as written");
        assert!(is_pseudo(&mounts[1].fstype));
        assert!(!is_pseudo(&mounts[0].fstype));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        for s in ["\\", "\\0", "a \\ b c", "\\\\\\ \\1 \\12 \\123", "\u{0} \u{0} \u{0} \u{0}"] {
            let _ = parse(s);
        }
    }
}
