//! The follower on real files: appends, both kinds of rotation, restarts.

use std::io::Write;

use super::*;

#[derive(Default)]
struct Got {
    lines: Vec<String>,
    cut: usize,
    /// Stop after this many lines (then refuse the next one).
    limit: Option<usize>,
}

impl Lines for Got {
    fn line(&mut self, _path: &str, line: &[u8], cut: bool) -> bool {
        if self.limit.is_some_and(|l| self.lines.len() >= l) {
            return false;
        }
        self.lines.push(String::from_utf8_lossy(line).into_owned());
        self.cut += usize::from(cut);
        true
    }
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn poll(f: &mut Follower, path: &Path, start: StartAt) -> Vec<String> {
    let mut got = Got::default();
    assert!(f.poll(path.to_str().unwrap(), start, &mut got).unwrap());
    got.lines
}

#[test]
fn appends_partial_lines_and_start_at() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "old 1\nold 2\nhalf");
    let mut end = Follower::new(Saved::new(), 1000);
    assert_eq!(poll(&mut end, &log, StartAt::End), Vec::<String>::new());
    let mut begin = Follower::new(Saved::new(), 1000);
    assert_eq!(poll(&mut begin, &log, StartAt::Beginning), ["old 1", "old 2"]);
    append(&log, " a line\r\nnew\n");
    assert_eq!(poll(&mut end, &log, StartAt::End), ["half a line", "new"], "the partial line, whole, CR dropped");
    assert_eq!(poll(&mut begin, &log, StartAt::End), ["half a line", "new"]);
    assert_eq!(poll(&mut end, &log, StartAt::End), Vec::<String>::new());
}

#[test]
fn rename_and_create_reads_the_old_file_to_its_end_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "1\n2\n");
    let mut f = Follower::new(Saved::new(), 1000);
    assert_eq!(poll(&mut f, &log, StartAt::Beginning), ["1", "2"]);
    append(&log, "3\n4\n");
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, "5\n");
    assert_eq!(poll(&mut f, &log, StartAt::End), ["3", "4", "5"]);
    assert!(f.notices.iter().any(|n| matches!(n, Notice::Rotated { how: "renamed", .. })));
    // A writer that had not reopened yet still reaches us through the old file.
    append(&dir.path().join("app.log.1"), "late\n");
    append(&log, "6\n");
    let got = poll(&mut f, &log, StartAt::End);
    assert_eq!(got, ["late", "6"]);
    // Once quiet for the retirement time, the old file is let go.
    let mut f = Follower::with_retirement(f.saved(), 1000, Duration::ZERO);
    assert_eq!(poll(&mut f, &log, StartAt::End), Vec::<String>::new());
    assert!(!f.has_retired());
}

#[test]
fn copytruncate_reads_the_rest_from_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "first\n2\n");
    let mut f = Follower::new(Saved::new(), 1000);
    assert_eq!(poll(&mut f, &log, StartAt::Beginning), ["first", "2"]);
    append(&log, "3\n4\n");
    std::fs::copy(&log, dir.path().join("app.log.1")).unwrap();
    std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
    // Regrown past the old offset before we look: the first line tells.
    append(&log, "after the truncation, a long first line\n5\n");
    assert_eq!(poll(&mut f, &log, StartAt::End), ["3", "4", "after the truncation, a long first line", "5"]);
    assert!(f.notices.iter().any(|n| matches!(n, Notice::Rotated { how: "copied and truncated", .. })));
}

#[test]
fn a_restart_resumes_exactly_even_across_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "1\n2\n3\n");
    let mut f = Follower::new(Saved::new(), 1000);
    let mut got = Got { limit: Some(2), ..Default::default() };
    assert!(!f.poll(log.to_str().unwrap(), StartAt::Beginning, &mut got).unwrap(), "stopped after 2");
    let saved = f.saved();
    assert_eq!(saved[log.to_str().unwrap()].offset, 4, "just past line 2");
    // Restart: line 3 comes next, once.
    let mut f = Follower::new(saved.clone(), 1000);
    assert_eq!(poll(&mut f, &log, StartAt::End), ["3"]);
    // Rotated (rename) while stopped, with more lines in both files.
    append(&log, "4\n");
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, "5\n");
    let mut f2 = Follower::new(f.saved(), 1000);
    assert_eq!(poll(&mut f2, &log, StartAt::End), ["4", "5"]);
    // Copied and truncated while stopped.
    append(&log, "6\n");
    let saved = f2.saved();
    std::fs::rename(dir.path().join("app.log.1"), dir.path().join("app.log.2")).unwrap();
    std::fs::copy(&log, dir.path().join("app.log.1")).unwrap();
    std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
    append(&log, "7\n");
    let mut f3 = Follower::new(saved, 1000);
    assert_eq!(poll(&mut f3, &log, StartAt::End), ["6", "7"]);
    // The rotated file compressed away: said, not silently skipped.
    append(&log, "8\n");
    let saved = f3.saved();
    std::fs::rename(&log, dir.path().join("app.log.1.gz")).unwrap();
    append(&log, "9\n");
    let mut f4 = Follower::new(saved, 1000);
    assert_eq!(poll(&mut f4, &log, StartAt::End), ["9"]);
    assert!(f4.notices.iter().any(|n| matches!(n, Notice::Lost { .. })), "{:?}", f4.notices);
}

#[test]
fn overlong_lines_are_cut_and_bad_bytes_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let long = "x".repeat(300);
    append(&log, &format!("short\n{long}\nafter\n"));
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(b"bad \xff\xfe bytes\n").unwrap();
    let mut f = Follower::new(Saved::new(), 100);
    let mut got = Got::default();
    assert!(f.poll(log.to_str().unwrap(), StartAt::Beginning, &mut got).unwrap());
    assert_eq!(got.lines.len(), 4);
    assert_eq!(got.lines[1].len(), 100);
    assert_eq!(got.cut, 1);
    assert_eq!(got.lines[2], "after");
    assert_eq!(got.lines[3], "bad \u{fffd}\u{fffd} bytes");
    // An overlong line still being written: cut once, the rest skipped as it comes.
    append(&log, &"y".repeat(150));
    let mut got = Got::default();
    assert!(f.poll(log.to_str().unwrap(), StartAt::End, &mut got).unwrap());
    assert_eq!((got.lines.len(), got.cut), (1, 1));
    append(&log, &format!("{}\nnext\n", "y".repeat(150)));
    assert_eq!(poll(&mut f, &log, StartAt::End), ["next"]);
    // Stopped inside the skip and restarted: still skipping.
    append(&log, &"z".repeat(150));
    let mut got = Got::default();
    assert!(f.poll(log.to_str().unwrap(), StartAt::End, &mut got).unwrap());
    let mut f = Follower::new(f.saved(), 100);
    append(&log, "zz\nlast\n");
    assert_eq!(poll(&mut f, &log, StartAt::End), ["last"]);
}

#[test]
fn a_missing_file_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("later.log");
    let mut f = Follower::new(Saved::new(), 1000);
    assert_eq!(poll(&mut f, &log, StartAt::End), Vec::<String>::new());
    append(&log, "hello\n");
    // Not known before: a file that appears later is new, read from its start... when
    // start is Beginning; `end` is for files that exist when following starts.
    assert_eq!(poll(&mut f, &log, StartAt::Beginning), ["hello"]);
}

#[test]
fn truncated_then_renamed_while_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "a\nb\n");
    let mut f = Follower::new(Saved::new(), 1000);
    assert_eq!(poll(&mut f, &log, StartAt::Beginning), ["a", "b"]);
    let saved = f.saved();
    drop(f);
    // While stopped: more lines, copytruncate, more lines, then a
    // rename-and-create rotation on top.
    append(&log, "c\n");
    std::fs::copy(&log, dir.path().join("app.log.1")).unwrap();
    std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
    append(&log, "d\n");
    std::fs::rename(dir.path().join("app.log.1"), dir.path().join("app.log.2")).unwrap();
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, "e\n");
    let mut f = Follower::new(saved, 1000);
    assert_eq!(poll(&mut f, &log, StartAt::End), ["c", "d", "e"]);
    assert!(f.notices.iter().all(|n| !matches!(n, Notice::Lost { .. })), "{:?}", f.notices);
    // And the next restart does not read any of it again.
    let mut f = Follower::new(f.saved(), 1000);
    assert_eq!(poll(&mut f, &log, StartAt::End), Vec::<String>::new());
}

#[test]
fn several_rotations_while_stopped_are_read_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "1\n");
    let mut f = Follower::new(Saved::new(), 1000);
    assert_eq!(poll(&mut f, &log, StartAt::Beginning), ["1"]);
    let saved = f.saved();
    drop(f);
    let shift = |dir: &Path| {
        for i in (1..5).rev() {
            let from = dir.join(format!("app.log.{i}"));
            if from.exists() {
                std::fs::rename(&from, dir.join(format!("app.log.{}", i + 1))).unwrap();
            }
        }
    };
    // Down for three rotations: create, copytruncate, create.
    append(&log, "2\n");
    shift(dir.path());
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, "3\n");
    std::thread::sleep(Duration::from_millis(20)); // distinct modification times
    shift(dir.path());
    std::fs::copy(&log, dir.path().join("app.log.1")).unwrap();
    std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
    append(&log, "4\n");
    std::thread::sleep(Duration::from_millis(20));
    shift(dir.path());
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, "5\n");
    let mut f = Follower::new(saved, 1000);
    assert_eq!(poll(&mut f, &log, StartAt::End), ["2", "3", "4", "5"]);
    let mut f = Follower::new(f.saved(), 1000);
    assert_eq!(poll(&mut f, &log, StartAt::End), Vec::<String>::new(), "and none again");
}

/// Lines that run an action when a given line goes by (a rotation while the
/// follower is busy reading).
struct During<'a> {
    got: Vec<String>,
    at: &'a str,
    action: Option<Box<dyn FnOnce() + 'a>>,
}

impl Lines for During<'_> {
    fn line(&mut self, _path: &str, line: &[u8], _cut: bool) -> bool {
        let line = String::from_utf8_lossy(line).into_owned();
        if line == self.at
            && let Some(a) = self.action.take()
        {
            a();
        }
        self.got.push(line);
        true
    }
}

#[test]
fn rotations_while_catching_up_after_a_restart_lose_nothing() {
    for at in ["33", "40", "59", "60", "65", "69"] {
        rotations_while_catching_up(at);
    }
}

/// Killed while reading the file a `create` rotation made current;
/// stopped through a `copytruncate`; restarted, and while it catches up
/// (when line `at` goes by) a `copytruncate` and a `create` again.
fn rotations_while_catching_up(at: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let lines = |from: usize, to: usize| (from..to).map(|i| format!("{i}\n")).collect::<String>();
    let shift = |dir: &Path| {
        for i in (1..9).rev() {
            let from = dir.join(format!("app.log.{i}"));
            if from.exists() {
                std::fs::rename(&from, dir.join(format!("app.log.{}", i + 1))).unwrap();
            }
        }
    };
    let pause = || std::thread::sleep(Duration::from_millis(20));
    let copytruncate = |dir: &Path| {
        shift(dir);
        std::fs::copy(&log, dir.join("app.log.1")).unwrap();
        std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
    };
    let create = |dir: &Path| {
        shift(dir);
        std::fs::rename(&log, dir.join("app.log.1")).unwrap();
    };
    append(&log, &lines(0, 20));
    let mut f = Follower::new(Saved::new(), 1000);
    let mut all = poll(&mut f, &log, StartAt::Beginning);
    pause();
    create(dir.path());
    append(&log, &lines(20, 50));
    let mut got = Got { limit: Some(13), ..Got::default() };
    f.poll(log.to_str().unwrap(), StartAt::End, &mut got).unwrap();
    all.extend(got.lines);
    let saved = f.saved();
    drop(f);
    // Stopped: more lines, a copytruncate, more lines.
    pause();
    append(&log, &lines(50, 60));
    pause();
    copytruncate(dir.path());
    append(&log, &lines(60, 70));
    pause();
    // Started, and while it reads the copy: a copytruncate and a create.
    let mut f = Follower::new(saved, 1000);
    let mut during = During {
        got: Vec::new(),
        at,
        action: Some(Box::new(|| {
            append(&log, &lines(70, 78));
            pause();
            copytruncate(dir.path());
            append(&log, &lines(78, 85));
            pause();
            create(dir.path());
            append(&log, &lines(85, 100));
        })),
    };
    for _ in 0..3 {
        f.poll(log.to_str().unwrap(), StartAt::End, &mut during).unwrap();
        f.poll_all_retired(&mut during).unwrap();
    }
    all.extend(during.got);
    let want: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    assert_eq!(all, want, "rotated when {at} went by");
}
