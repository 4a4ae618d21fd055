//! Helpers for end-to-end tests of the `alerter` binary: temporary configs,
//! a daemon process with captured stderr, and polling with a deadline.
#![allow(dead_code)]

pub mod netns;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn alerter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_alerter"))
}

/// A config file in a temporary directory, with `{state}` and `{out}` in
/// its text replaced by a state directory and a log transport file there.
pub struct TempConfig {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub state: PathBuf,
    pub out: PathBuf,
    /// A plugin directory (`{plugins}` in the text), mode 0755.
    pub plugins: PathBuf,
}

impl TempConfig {
    pub fn new(text: &str) -> TempConfig {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("alerter.yaml");
        let state = dir.path().join("state");
        let out = dir.path().join("notifications.jsonl");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = TempConfig { dir, path, state, out, plugins };
        cfg.write(text);
        cfg
    }

    /// Writes new config text (with the same substitutions).
    pub fn write(&self, text: &str) {
        let text = text
            .replace("{state}", &self.state.display().to_string())
            .replace("{out}", &self.out.display().to_string())
            .replace("{plugins}", &self.plugins.display().to_string())
            .replace("{dir}", &self.dir.path().display().to_string());
        // Write then rename, so the daemon never reads half a file.
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.path).expect("replace config");
    }

    /// Every notification the log transport has written so far.
    pub fn notifications(&self) -> Vec<serde_json::Value> {
        read_jsonl(&self.out)
    }
}

pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .filter(|l| l.ends_with('}'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Polls `f` until it returns something, or panics at the deadline.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit; `None` (the child still running) after `timeout`.
pub fn exit_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `alerter run` with its stderr and stdout collected in the background.
pub struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Reads a pipe into a string until it closes.
fn collect(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (text, reader)
}

impl Daemon {
    pub fn start(config: &Path, extra: &[&str]) -> Daemon {
        let mut cmd = alerter();
        cmd.arg("run").arg("-c").arg(config).args(extra);
        Daemon::spawn(cmd)
    }

    /// Starts `cmd` (an `alerter run ...` with its own arguments and environment).
    pub fn spawn(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .env("ALERTER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start alerter");
        let (stderr, err_reader) = collect(child.stderr.take().expect("piped"));
        let (stdout, out_reader) = collect(child.stdout.take().expect("piped"));
        Daemon { child, stderr, stdout, readers: vec![err_reader, out_reader] }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name: `HUP`, `TERM`, `INT`, `KILL`.
    pub fn signal(&self, sig: &str) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let signal: Signal = format!("SIG{sig}").parse().unwrap_or_else(|_| panic!("no signal {sig}"));
        kill(Pid::from_raw(self.pid() as i32), signal).unwrap_or_else(|e| panic!("kill -{sig}: {e}"));
    }

    pub fn stderr_so_far(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout_so_far(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits for exit, killing the process if it does not exit in time.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let Some(status) = exit_within(&mut self.child, timeout) else {
            let _ = self.child.kill();
            panic!("alerter did not exit within {timeout:?}; stderr:\n{}", self.stderr_so_far());
        };
        // The pipes close when the process is gone; the readers end then.
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds a workspace package's cdylib and returns the `.so` path. The build
/// uses a target directory of its own so that it does not wait for (or
/// invalidate) the build the tests themselves came from.
pub fn build_cdylib(package: &str, lib_name: &str) -> PathBuf {
    let target = repo().join("target/test-plugins");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", package, "--target-dir"])
        .arg(&target)
        .current_dir(repo())
        .status()
        .expect("run cargo");
    assert!(status.success(), "building {package} failed");
    let so = target.join("debug").join(format!("lib{lib_name}.so"));
    assert!(so.exists(), "{} missing after the build", so.display());
    so
}

/// Compiles a C plugin against the generated header.
pub fn build_c(source: &Path, out: &Path, defines: &[&str]) {
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-I"])
        .arg(repo().join("plugins/abi/include"))
        .args(defines.iter().map(|d| format!("-D{d}")))
        .arg(source)
        .arg("-o")
        .arg(out)
        .status()
        .expect("run gcc");
    assert!(status.success(), "gcc failed on {}", source.display());
}

/// A plugin directory the checks accept: mode 0755, files copied in 0644
/// (0755 for executables).
pub fn install_plugin(dir: &Path, file: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dest = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(file, &tmp).unwrap();
    let exec = std::fs::metadata(file).unwrap().permissions().mode() & 0o111 != 0 && !name.ends_with(".so");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 })).unwrap();
    std::fs::rename(&tmp, &dest).unwrap();
    dest
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Pids of processes whose command line contains `needle`.
pub fn pids_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// A tmpfs mounted for the test, unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "alerter-test"])
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root");
        Tmpfs(path.to_path_buf())
    }

    /// Makes the filesystem `pct` percent full (as df counts), with one file.
    pub fn fill_to(&self, pct: f64) {
        let file = self.0.join("filler");
        let _ = std::fs::remove_file(&file);
        let s = nix::sys::statvfs::statvfs(&self.0).unwrap();
        let total = s.blocks() as f64 * s.fragment_size() as f64;
        let bytes = (total * pct / 100.0) as usize;
        std::fs::write(&file, vec![0u8; bytes]).unwrap();
    }

    /// Fills the filesystem to the last byte (writes until ENOSPC).
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        let _ = f.flush();
        let s = nix::sys::statvfs::statvfs(&self.0).unwrap();
        assert_eq!(s.blocks_available(), 0, "the tmpfs is full");
    }

    /// Frees what [`Tmpfs::fill`] took.
    pub fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Every history entry of a config's state database (`alerter history
/// --json`, page by page along the cursors), oldest first; `args` filter.
pub fn all_history(config: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut pages: Vec<Vec<serde_json::Value>> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut c = alerter();
        c.args(["history", "--json", "-n", "1000", "-c"]).arg(config).args(args);
        if let Some(at) = &cursor {
            c.args(["--cursor", at]);
        }
        let out = c.output().expect("alerter history");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let page = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect();
        pages.push(page);
        cursor = err.lines().find_map(|l| l.strip_prefix("older entries: --cursor ")).map(|c| c.trim().to_string());
        if cursor.is_none() {
            break;
        }
    }
    // Each page is oldest first, and each is older than the one before.
    pages.into_iter().rev().flatten().collect()
}

/// The API's TCP address, from the daemon's log (it asked for port 0).
pub fn api_addr(d: &Daemon) -> String {
    let mut addr = String::new();
    wait_for(Duration::from_secs(20), || {
        if let Some(l) = d.stderr_so_far().lines().find(|l| l.contains("control API listening") && l.contains("addr="))
        {
            addr = l.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
        }
        (!addr.is_empty()).then_some(())
    });
    addr
}

/// One HTTP/1.1 request over TCP (`Connection: close`): the status and
/// the body. `body` may be shorter than a `Content-Length` given in
/// `headers` (to show that a server refuses by the header alone).
pub fn http_request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let (status, _, body) = http_exchange(addr, method, path, headers, body);
    (status, body)
}

/// [`http_request`], with the answer's headers (names in lower case).
pub fn http_exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("nothing answers at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (and close) before taking all of the body.
    let _ = s.write_all(body);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}
