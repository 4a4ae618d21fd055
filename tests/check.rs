//! `alerter check` on broken and valid configs. Every broken config in
//! config/testdata/bad must exit 78 and report each problem with
//! file:line:column; every config in config/testdata/warn must exit 0 and
//! report each warning the same way; the whole report is snapshot-tested,
//! so a change in wording or position shows up in review.

mod util;

use std::path::{Path, PathBuf};

use util::alerter;

fn testdata(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/testdata").join(kind)
}

/// The config files of a testdata directory: `*.yaml`, and `*/main.yaml`
/// for cases spread over several files.
fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = testdata(kind);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            if p.is_dir() {
                Some(p.join("main.yaml")).filter(|m| m.exists())
            } else {
                Some(p).filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            }
        })
        .collect();
    out.sort();
    out
}

/// Runs `alerter check` from the config's directory, so reported paths are
/// relative and the snapshots do not depend on where the repository is.
fn check(path: &Path) -> (Option<i32>, String) {
    let dir = path.parent().unwrap();
    let out = alerter()
        .current_dir(dir)
        .arg("check")
        .arg("-c")
        .arg(path.file_name().unwrap())
        .env_remove("ALERTER_CONFIG")
        .env_remove("ALERTER_TEST_UNSET_LOG_PATH")
        .env_remove("ALERTER_TEST_UNSET_OTHER")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn broken_configs_report_every_problem_and_exit_78() {
    let cases = cases("bad");
    assert!(cases.len() >= 15, "at least 15 broken configs, found {}", cases.len());
    for path in cases {
        let name = path.strip_prefix(testdata("bad")).unwrap().display().to_string();
        let (code, report) = check(&path);
        assert_eq!(code, Some(78), "{name} should fail with 78:\n{report}");
        let errors = report.lines().filter(|l| l.starts_with("error")).count();
        assert!(errors > 0, "{name}: no error reported:\n{report}");
        assert_every_problem_located(&name, &report);
        insta::assert_snapshot!(name.replace('/', "__"), report);
    }
}

/// Every error and warning of a report points at file:line:column.
fn assert_every_problem_located(name: &str, report: &str) {
    let problems = report.lines().filter(|l| l.starts_with("error") || l.starts_with("warning")).count();
    let located = report.lines().filter(|l| l.trim_start().starts_with("┌─ ")).count();
    assert_eq!(problems, located, "{name}: every problem needs file:line:column:\n{report}");
    for loc in report.lines().filter_map(|l| l.trim_start().strip_prefix("┌─ ")) {
        let mut parts = loc.rsplitn(3, ':');
        let col = parts.next().unwrap();
        let line = parts.next().unwrap();
        assert!(col.parse::<u32>().is_ok() && line.parse::<u32>().is_ok(), "{name}: bad location {loc}");
    }
}

/// Warnings are reported like errors but do not change the exit status:
/// the configuration is applied as it is.
#[test]
fn configs_with_warnings_are_valid_and_report_each_warning() {
    let cases = cases("warn");
    assert!(!cases.is_empty(), "no configs in config/testdata/warn");
    for path in cases {
        let name = path.strip_prefix(testdata("warn")).unwrap().display().to_string();
        let (code, report) = check(&path);
        assert_eq!(code, Some(0), "{name} has only warnings, so it is valid:\n{report}");
        assert!(!report.lines().any(|l| l.starts_with("error")), "{name}:\n{report}");
        assert!(report.lines().any(|l| l.starts_with("warning")), "{name}: no warning reported:\n{report}");
        assert_every_problem_located(&name, &report);
        insta::assert_snapshot!(format!("warn__{}", name.replace('/', "__")), report);
    }
}

#[test]
fn valid_configs_pass() {
    let mut cases = cases("good");
    cases.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/alerter.yaml"));
    for path in cases {
        let (code, report) = check(&path);
        assert_eq!(code, Some(0), "{} should be valid:\n{report}", path.display());
        assert!(report.starts_with("configuration is valid\n"), "and without warnings:\n{report}");
    }
}

#[test]
fn embedded_default_is_valid() {
    let out = alerter().arg("check").env_remove("ALERTER_CONFIG").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn shipped_schema_is_current() {
    let out = alerter().arg("schema").output().unwrap();
    assert!(out.status.success());
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/alerter.schema.json")).unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap() == shipped,
        "config/alerter.schema.json is stale; regenerate it with `cargo run -- schema > config/alerter.schema.json`"
    );
}

/// The shipped default config as text.
fn default_config() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/alerter.yaml")).unwrap()
}

#[test]
fn the_embedded_default_watches_something() {
    let out = alerter().arg("check").env_remove("ALERTER_CONFIG").output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains(" 2 sources,"), "the disks and the auth log:\n{report}");
}

/// Enables the ready-to-enable blocks of a config the way its header tells
/// an admin to: a comment `# key:` or `# - ...` followed by comment lines
/// indented deeper loses the `# ` in front of each of its lines. Returns
/// the new text and the first line of each block enabled.
fn enable_commented_blocks(text: &str) -> (String, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let comment = |l: &str| -> Option<(usize, String)> {
        let indent = l.len() - l.trim_start().len();
        l.trim_start().strip_prefix("# ").map(|rest| (indent, rest.to_string()))
    };
    let is_header = |rest: &str| {
        rest.starts_with("- ")
            || rest.strip_suffix(':').is_some_and(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()))
    };
    let (mut out, mut headers) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < lines.len() {
        let block = comment(lines[i]).filter(|(_, rest)| is_header(rest)).and_then(|(indent, rest)| {
            let inner = |l: &str| comment(l).filter(|(n, r)| *n == indent && r.starts_with(' '));
            let len = lines[i + 1..].iter().take_while(|l| inner(l).is_some()).count();
            (len > 0).then_some((indent, rest, len))
        });
        match block {
            Some((indent, rest, len)) => {
                headers.push(rest);
                for l in &lines[i..=i + len] {
                    out.push(format!("{}{}", " ".repeat(indent), &l.trim_start()[2..]));
                }
                i += len + 1;
            }
            None => {
                out.push(lines[i].to_string());
                i += 1;
            }
        }
    }
    (out.join("\n") + "\n", headers)
}

#[test]
fn the_defaults_commented_popup_mail_and_people_are_ready_to_enable() {
    let (text, headers) = enable_commented_blocks(&default_config());
    for h in ["popup:", "mail:", "alice:", "oncall:"] {
        assert!(headers.iter().any(|x| x == h), "a commented `{h}` block; found {headers:?}");
    }
    assert_eq!(headers.iter().filter(|h| h.starts_with("- groups: [oncall]")).count(), 4, "{headers:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enabled.yaml");
    std::fs::write(&path, &text).unwrap();
    let (code, report) = check(&path);
    assert_eq!(code, Some(0), "with everything enabled:\n{report}\n{text}");
    assert!(report.contains("4 rules, 2 sources, 3 transports, 2 subscribers, 2 groups"), "{report}");
}

#[test]
fn init_writes_the_starter_refuses_to_overwrite_and_force_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etc/alerter/alerter.yaml");
    let init = |extra: &[&str]| alerter().arg("init").arg("-o").arg(&path).args(extra).output().unwrap();

    // A new file in a new directory: the default config, and what to do next.
    let out = init(&[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), default_config());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o022, 0, "writable by its owner only");
    assert!(said.contains(&format!("wrote {}", path.display())), "{said}");
    assert!(said.contains(&format!("alerter check -c {}", path.display())), "{said}");
    assert!(said.contains(&format!("alerter run -c {}", path.display())), "{said}");
    let (code, report) = check(&path);
    assert_eq!(code, Some(0), "{report}");

    // Again: refused, and the admin's edits are still there.
    std::fs::write(&path, "# mine\n").unwrap();
    let out = init(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("already exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");

    // --force replaces it, and leaves no temporary file behind.
    let out = init(&["--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), default_config());
    assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
}

/// Every Markdown file of the repository (not build output or hidden directories).
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    walk(&path, out);
                }
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new(env!("CARGO_MANIFEST_DIR")), &mut out);
    out.sort();
    out
}

/// The text of a Markdown file outside fenced code blocks and code spans,
/// line by line (links and words in code are examples, not claims).
fn prose(text: &str) -> Vec<(usize, String)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut kept = String::new();
        for (j, part) in line.split('`').enumerate() {
            if j % 2 == 0 {
                kept.push_str(part);
            }
        }
        out.push((i + 1, kept));
    }
    out
}

/// GitHub's anchors for the headings of a Markdown file.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let Some(heading) = line.strip_prefix('#').filter(|_| !fenced) else { continue };
        let title = heading.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.iter().filter(|s| s.as_str() == slug || s.starts_with(&format!("{slug}-"))).count();
        seen.push(if n == 0 { slug } else { format!("{slug}-{n}") });
    }
    seen
}

/// Link targets in a line: `[text](target)` and `[label]: target`.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let end = after.find(')').unwrap_or(after.len());
        out.extend(after[..end].split_whitespace().next().map(str::to_string));
        rest = &after[end..];
    }
    let t = line.trim_start();
    if t.starts_with('[')
        && let Some((_, target)) = t.split_once("]: ")
    {
        out.extend(target.split_whitespace().next().map(str::to_string));
    }
    out
}

#[test]
fn docs_have_no_placeholders_and_no_broken_links() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = markdown_files();
    for must in ["README.md", "examples/README.md", "plugins/README.md", "docs/config.md"] {
        assert!(files.contains(&root.join(must)), "{must} not found among {files:?}");
    }
    let mut problems = Vec::new();
    for file in &files {
        let name = file.strip_prefix(root).unwrap().display().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in prose(&text) {
            let lower = line.to_lowercase();
            let placeholder = ["filled later", "filled by", "to be written", "coming soon"]
                .into_iter()
                .find(|p| lower.contains(p))
                .or_else(|| {
                    line.split(|c: char| !c.is_ascii_alphanumeric()).find(|w| ["TODO", "TBD", "FIXME"].contains(w))
                });
            if let Some(p) = placeholder {
                problems.push(format!("{name}:{n}: placeholder `{p}`: {}", line.trim()));
            }
            for target in link_targets(&line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
                let dest = if path.is_empty() { file.clone() } else { file.parent().unwrap().join(path) };
                if !dest.exists() {
                    problems.push(format!("{name}:{n}: link to `{target}`: no such file"));
                } else if !fragment.is_empty() && dest.extension().is_some_and(|e| e == "md") {
                    let headings = anchors(&std::fs::read_to_string(&dest).unwrap());
                    if !headings.iter().any(|a| a == fragment) {
                        problems.push(format!("{name}:{n}: link to `{target}`: no such heading in {headings:?}"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{} problems in the docs:\n{}", problems.len(), problems.join("\n"));
}

/// `alerter check` on a config whose secret files (an email password and a
/// workgroup key) are set up as `mode`, owned by `owner` (`uid:gid`), run
/// with `env` and as the group `run_gid` when given; its exit code and
/// report.
fn check_secrets(mode: u32, owner: (u32, u32), env: &[(&str, &Path)], run_gid: Option<u32>) -> (Option<i32>, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let pw = creds.join("smtp-password");
    let key = dir.path().join("workgroup.key");
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    for f in [&pw, &key] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(f, Some(owner.0), Some(owner.1)).unwrap();
    }
    let config = dir.path().join("alerter.yaml");
    std::fs::write(
        &config,
        format!(
            "transports:\n  mail:\n    type: email\n    relay: localhost\n    tls: none\n    username: alerter\n    \
             password_file: ${{CREDENTIALS_DIRECTORY:-{}}}/smtp-password\n    from: \"Alerter <alerter@example.org>\"\n  \
             popup:\n    type: messenger\n    seal_key_file: {}\n",
            creds.display(),
            key.display()
        ),
    )
    .unwrap();
    let mut cmd = match run_gid {
        // setpriv changes only the group: the daemon's user stays root, so
        // the test needs no executable path readable by another user.
        Some(gid) => {
            let mut c = std::process::Command::new("setpriv");
            c.args([format!("--regid={gid}"), "--clear-groups".into(), "--".into()]);
            c.arg(env!("CARGO_BIN_EXE_alerter"));
            c
        }
        None => alerter(),
    };
    cmd.args(["check", "-c"]).arg(&config).env_remove("CREDENTIALS_DIRECTORY");
    for (k, v) in env {
        cmd.env(k, v.to_str().unwrap().replace("{creds}", creds.to_str().unwrap()));
    }
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn secret_files_others_can_touch_are_refused_with_the_fix() {
    assert!(nix::unistd::Uid::effective().is_root(), "this test sets owners, so it runs as root (CI does)");
    let (code, report) = check_secrets(0o600, (0, 0), &[], None);
    assert_eq!(code, Some(0), "{report}");
    // Readable by everyone, group-writable, writable by everyone.
    for (mode, problem, fix) in [
        (0o644, "can be read or changed by every user (mode 0644", "fix with `chmod o-rwx "),
        (0o660, "can be changed by its group (mode 0660", "fix with `chmod g-w "),
        (0o602, "can be read or changed by every user (mode 0602", "fix with `chmod o-rwx "),
    ] {
        let (code, report) = check_secrets(mode, (0, 0), &[], None);
        assert_eq!(code, Some(78), "{mode:o}: {report}");
        assert_eq!(report.matches(problem).count(), 2, "both files, {mode:o}: {report}");
        assert_eq!(report.matches(fix).count(), 2, "{mode:o}: {report}");
    }
    // Owned by another user (nobody), though private.
    let (code, report) = check_secrets(0o600, (65534, 65534), &[], None);
    assert_eq!(code, Some(78), "{report}");
    assert_eq!(report.matches("who is neither the daemon's user (root) nor root").count(), 2, "{report}");
    assert!(report.contains("fix with `chown root "), "{report}");
}

#[test]
fn root_and_the_daemon_group_0640_and_systemd_credentials_are_accepted() {
    assert!(nix::unistd::Uid::effective().is_root(), "this test sets owners, so it runs as root (CI does)");
    // The Debian pattern: root:<daemon's group> 0640, with the daemon's group
    // nogroup (65534) here.
    let (code, report) = check_secrets(0o640, (0, 65534), &[], Some(65534));
    assert_eq!(code, Some(0), "{report}");
    // The same files readable by a group that is not the daemon's.
    let (code, report) = check_secrets(0o640, (0, 0), &[], Some(65534));
    assert_eq!(code, Some(78), "{report}");
    assert!(report.contains("can be read by the group root, which is not the daemon's group (nogroup)"), "{report}");
    // A systemd credential: owner and group are systemd's business, so a
    // password owned by another user is accepted there, and only there (the
    // key outside the credentials directory is still refused).
    let creds = Path::new("{creds}");
    let (code, report) = check_secrets(0o440, (65534, 65534), &[("CREDENTIALS_DIRECTORY", creds)], None);
    assert_eq!(code, Some(78), "{report}");
    assert!(!report.contains("smtp-password"), "the credential is accepted: {report}");
    assert_eq!(report.matches("workgroup.key is owned by nobody").count(), 1, "{report}");
    let (code, report) = check_secrets(0o444, (65534, 65534), &[("CREDENTIALS_DIRECTORY", creds)], None);
    assert_eq!(code, Some(78));
    assert!(report.contains("smtp-password can be read or changed by every user"), "{report}");
}
