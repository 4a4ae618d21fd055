//! Network namespaces for tests that need real ports (137, 138, 139) or a
//! broadcast domain with several hosts. Each test makes its own and tears
//! them down; nothing touches the machine's real network. Needs root, as
//! CI has.

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A network namespace with its loopback up.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("alt-{tag}-{}-{n}", std::process::id());
        run(&["netns", "add", &name]);
        run(&["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// A command run inside the namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Panics if the namespace has a default route: the tests of LANs
    /// without one must not pass by accident.
    pub fn assert_no_default_route(&self) {
        let out = self.cmd("ip").args(["-4", "route", "show", "default"]).output().expect("ip route");
        let routes = String::from_utf8_lossy(&out.stdout);
        assert!(routes.trim().is_empty(), "{} has a default route: {routes}", self.name);
    }

    /// Whether something listens on this TCP port inside the namespace.
    pub fn tcp_listening(&self, port: u16) -> bool {
        let out = self.cmd("cat").args(["/proc/net/tcp", "/proc/net/tcp6"]).output().expect("read /proc/net/tcp");
        let want = format!(":{port:04X} ");
        String::from_utf8_lossy(&out.stdout).lines().any(|l| {
            l.split_whitespace().nth(1).is_some_and(|local| format!("{local} ").ends_with(&want))
                && l.split_whitespace().nth(3) == Some("0A")
        })
    }

    /// Whether something has this UDP port open inside the namespace.
    pub fn udp_bound(&self, port: u16) -> bool {
        let out = self.cmd("cat").args(["/proc/net/udp"]).output().expect("read /proc/net/udp");
        let want = format!(":{port:04X}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.split_whitespace().nth(1).is_some_and(|local| local.ends_with(&want)))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// One Ethernet segment, 10.N.0.0/24: a bridge in a namespace of its own,
/// to which hosts are plugged with veth pairs. No host gets a default
/// route: a LAN without one is what the tests must work on.
pub struct Segment {
    pub net: u8,
    switch: Netns,
    ports: AtomicU32,
}

impl Segment {
    pub fn new(net: u8) -> Segment {
        let switch = Netns::new("sw");
        run(&["-n", &switch.name, "link", "add", "br0", "type", "bridge"]);
        run(&["-n", &switch.name, "link", "set", "br0", "up"]);
        Segment { net, switch, ports: AtomicU32::new(0) }
    }

    /// Plugs `host` in as its interface `ifname`, with address 10.N.0.`octet`.
    pub fn attach(&self, host: &Netns, ifname: &str, octet: u8) -> Ipv4Addr {
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        run(&[
            "-n",
            &host.name,
            "link",
            "add",
            ifname,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch.name,
        ]);
        run(&["-n", &self.switch.name, "link", "set", &port, "master", "br0"]);
        run(&["-n", &self.switch.name, "link", "set", &port, "up"]);
        let ip = self.ip(octet);
        let bcast = self.broadcast().to_string();
        run(&["-n", &host.name, "addr", "add", &format!("{ip}/24"), "broadcast", &bcast, "dev", ifname]);
        run(&["-n", &host.name, "link", "set", ifname, "up"]);
        ip
    }

    pub fn ip(&self, octet: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, octet)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, 255)
    }
}

/// Several hosts on one Ethernet segment. Host `i` is 10.77.0.(i+1)/24,
/// interface `eth0`.
pub struct Lan {
    pub hosts: Vec<Netns>,
    pub segment: Segment,
}

impl Lan {
    pub fn new(n: usize) -> Lan {
        let segment = Segment::new(77);
        let hosts = (0..n)
            .map(|i| {
                let h = Netns::new(&format!("h{i}"));
                segment.attach(&h, "eth0", i as u8 + 1);
                h
            })
            .collect();
        Lan { hosts, segment }
    }

    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.segment.ip(i as u8 + 1)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        self.segment.broadcast()
    }
}

/// A background process whose output is collected; killed when dropped.
pub struct Proc {
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    /// Directories that live as long as the process.
    _dirs: Vec<tempfile::TempDir>,
}

fn collect(mut r: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().unwrap(), out.clone());
        collect(child.stderr.take().unwrap(), err.clone());
        Proc { child, out, err, _dirs: Vec::new() }
    }

    /// Keeps `dir` until the process is gone.
    pub fn keep(mut self, dir: tempfile::TempDir) -> Proc {
        self._dirs.push(dir);
        self
    }

    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Sends the process a signal (`HUP`, `TERM`, …).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -{sig} {}", self.child.id());
    }

    /// Asks the process to end (SIGTERM) and waits for it, so that what it
    /// leaves on disk can be examined without racing its writes; killed if
    /// it has not ended after `timeout`.
    pub fn stop(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        let Some(status) = super::exit_within(&mut self.child, timeout) else {
            let _ = self.child.kill();
            panic!("pid {} still running {timeout:?} after SIGTERM", self.child.id());
        };
        status
    }

    /// The JSON lines printed so far.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A failing test shows what its processes said: the panic names
        // what was awaited, their output says why it never came.
        if std::thread::panicking() {
            eprintln!("--- pid {} stdout:\n{}--- stderr:\n{}", self.child.id(), self.stdout(), self.stderr());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until `f` holds, or panics with `what` after `timeout`.
pub fn until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A Samba smbd (and optionally nmbd) in a namespace, with its own
/// configuration and a `message command` that writes each message to a
/// file in `inbox`.
pub struct Samba {
    pub dir: tempfile::TempDir,
    pub inbox: PathBuf,
    procs: Vec<Proc>,
}

impl Samba {
    /// `messages`: whether `message command` is set (else Samba refuses
    /// messages). `nmbd`: also run nmbd at debug level 10 on `interface`.
    pub fn start(ns: &Netns, netbios_name: &str, messages: bool, nmbd: Option<&str>) -> Samba {
        Samba::start_with(ns, netbios_name, messages, nmbd, "")
    }

    /// As [`Samba::start`], with `extra` lines in `[global]` (e.g. `wins support = yes`).
    pub fn start_with(ns: &Netns, netbios_name: &str, messages: bool, nmbd: Option<&str>, extra: &str) -> Samba {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["private", "lock", "state", "cache", "pid", "log", "ncalrpc", "tmp", "inbox"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        for sub in ["tmp", "inbox"] {
            std::fs::set_permissions(d.join(sub), std::fs::Permissions::from_mode(0o1777)).unwrap();
        }
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let inbox = d.join("inbox");
        // %f is the sender, %m the calling machine; %t is broken since 4.12.
        let command = if messages {
            format!("message command = /bin/sh -c 'cat %s > {}/msg-%f-on-%m.txt; rm %s' &", inbox.display())
        } else {
            String::new()
        };
        let interfaces = match nmbd {
            Some(iface) => format!("interfaces = {iface}\n   bind interfaces only = yes"),
            None => "interfaces = lo\n   bind interfaces only = yes".to_string(),
        };
        let conf = format!(
            "[global]
   netbios name = {netbios_name}
   workgroup = TESTWG
   server role = standalone server
   {interfaces}
   smb ports = 139 445
   server min protocol = NT1
   disable netbios = no
   private dir = {d}/private
   lock directory = {d}/lock
   state directory = {d}/state
   cache directory = {d}/cache
   pid directory = {d}/pid
   ncalrpc dir = {d}/ncalrpc
   log file = {d}/log/log.%m
   log level = 3
   max log size = 0
   load printers = no
   printing = bsd
   printcap name = /dev/null
   disable spoolss = yes
   map to guest = Bad User
   guest account = nobody
   {command}
   {extra}
",
            d = d.display()
        );
        let conf_path = d.join("smb.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut procs = Vec::new();
        let mut smbd = ns.cmd("/usr/sbin/smbd");
        smbd.args(["--foreground", "--no-process-group", "--debug-stdout", "-s"])
            .arg(&conf_path)
            .env("TMPDIR", d.join("tmp"));
        procs.push(Proc::spawn(smbd));
        if nmbd.is_some() {
            let mut n = ns.cmd("/usr/sbin/nmbd");
            n.args(["--foreground", "--no-process-group", "--debug-stdout", "-d", "10", "-s"]).arg(&conf_path);
            procs.push(Proc::spawn(n));
        }
        until(Duration::from_secs(20), "smbd to listen on 139", || ns.tcp_listening(139));
        Samba { dir, inbox, procs }
    }

    /// The contents of the messages delivered so far.
    pub fn messages(&self) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&self.inbox)
            .unwrap()
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap_or_default()))
            .collect();
        v.sort();
        v
    }

    /// nmbd's output so far (debug level 10).
    pub fn nmbd_log(&self) -> String {
        self.procs.get(1).map(Proc::stdout).unwrap_or_default()
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("smb.conf")
    }
}

/// A client configuration for smbclient and nmblookup.
pub fn client_conf(dir: &Path, netbios_name: &str, extra: &str) -> PathBuf {
    let d = dir.join(format!("client-{netbios_name}"));
    for sub in ["private", "lock", "state", "cache"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let conf = format!(
        "[global]
   netbios name = {netbios_name}
   workgroup = TESTWG
   private dir = {d}/private
   lock directory = {d}/lock
   state directory = {d}/state
   cache directory = {d}/cache
   {extra}
",
        d = d.display()
    );
    let path = d.join("client.conf");
    std::fs::write(&path, conf).unwrap();
    path
}
