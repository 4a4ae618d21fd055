//! The system receiver's hand-over to the people at the machine.
//!
//! The receiver that owns the NetBIOS ports runs as a system service, with
//! no desktop of its own. Session agents (`alerter agent`, one per desktop
//! session) connect to its local socket and are handed the popups for
//! their user, and those for the machine or the workgroup. Beside Samba,
//! smbd's `message command` (`alerter deliver`) hands over what smbd
//! received through the same socket. A user with no agent connected gets
//! the popup on their terminals, as `write` does.
//!
//! Who is at the other end of the socket is what the kernel says
//! (`SO_PEERCRED`), never what a client claims: an agent receives only its
//! own user's popups (and the machine's), and only root and the accounts
//! named (Samba's guest account) may hand messages over. Every read has a
//! deadline and a length limit, every agent a bounded queue, and a stuck
//! agent is dropped rather than waited for.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};

use crate::presence::Session;

/// Where the system receiver's socket is, by default (systemd's
/// `RuntimeDirectory=alerter-listen`).
pub const DEFAULT_SOCKET: &str = "/run/alerter-listen/agents.sock";
/// The longest line either side may send.
pub const MAX_LINE: usize = 64 * 1024;
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// Agents one user may have connected (a few sessions, not a flood).
const MAX_AGENTS_PER_USER: usize = 8;
/// Popups waiting for one agent; an agent that falls this far behind
/// misses the next ones (they are in the history).
const QUEUE: usize = 64;
/// How long a client may take to say what it is, and an agent to take a
/// popup.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// Messages from Samba waiting for the receiver.
const INTAKE: usize = 64;

/// The first line a client sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Hello {
    /// A session agent: popups for my user, please.
    Agent {},
    /// A message smbd received (`message command`), to be shown.
    Deliver(Handed),
}

/// A message handed over by smbd's `message command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handed {
    pub from: String,
    pub to: String,
    pub text: String,
}

/// The receiver's answer to a hand-over.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok {},
    Error(String),
}

/// Who a popup is for, at this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// A user logged on here (by login name).
    User(String),
    /// The machine, the workgroup, or a name that is nobody here: everyone.
    Everyone,
}

/// Where a popup was shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Shown {
    /// The logins of the agents that took it.
    pub agents: Vec<String>,
    /// The terminals written to (`pts/3`).
    pub terminals: Vec<String>,
}

struct Agent {
    id: u64,
    login: String,
    tx: mpsc::Sender<Arc<str>>,
}

/// The connected agents.
#[derive(Default)]
struct Agents {
    list: Mutex<Vec<Agent>>,
    next: AtomicU64,
}

impl Agents {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Agent>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the socket's server needs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub socket: PathBuf,
    /// Accounts besides root that may hand messages over (Samba's guest).
    pub deliverers: Vec<u32>,
    /// Longest text kept from a handed-over message, in bytes.
    pub max_text: usize,
}

/// The receiver's side of the socket (see the module docs).
pub struct Hub {
    agents: Arc<Agents>,
    pub socket: PathBuf,
}

impl Hub {
    /// Binds the socket (replacing a stale one) and serves it; messages
    /// handed over by smbd arrive on the receiver returned.
    pub fn bind(cfg: HubConfig) -> anyhow::Result<(Hub, mpsc::Receiver<Handed>)> {
        let listener = bind_socket(&cfg.socket)?;
        let agents = Arc::new(Agents::default());
        let (intake_tx, intake) = mpsc::channel(INTAKE);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let shared = Arc::new(Shared { agents: agents.clone(), cfg: cfg.clone(), intake: intake_tx });
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!("the agents' socket: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Full: the newcomer is closed, those served go on.
                let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    serve(stream, &shared).await;
                    drop(slot);
                });
            }
        });
        Ok((Hub { agents, socket: cfg.socket }, intake))
    }

    /// Hands a popup (its JSON, as `alerter listen --json` prints it) to
    /// the agents of `to`: the user's own, or every agent. Returns the
    /// logins of the agents that took it.
    pub fn hand(&self, to: &Audience, popup: &serde_json::Value) -> Vec<String> {
        let line: Arc<str> =
            format!("{}\n", crate::listen_cli::json_line(&serde_json::json!({ "message": popup }))).into();
        let agents = self.agents.lock();
        let mut took = Vec::new();
        for a in agents.iter() {
            if let Audience::User(login) = to
                && !a.login.eq_ignore_ascii_case(login)
            {
                continue;
            }
            match a.tx.try_send(line.clone()) {
                Ok(()) => took.push(a.login.clone()),
                Err(_) => tracing::warn!(login = %a.login, "a session agent is behind; it misses this popup"),
            }
        }
        took.sort();
        took.dedup();
        took
    }

    /// Whether an agent of `login` is connected.
    pub fn has_agent(&self, login: &str) -> bool {
        self.agents.lock().iter().any(|a| a.login.eq_ignore_ascii_case(login))
    }
}

struct Shared {
    agents: Arc<Agents>,
    cfg: HubConfig,
    intake: mpsc::Sender<Handed>,
}

/// Makes the socket: its directory if missing, a stale socket replaced
/// (anything else in its place is an error), readable and writable by
/// every local user (what each may do is decided by who they are).
fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("cannot make {}: {e}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => anyhow::bail!("{} exists and is not a socket: remove it, or choose another --agents", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot look at {}: {e}", path.display()),
    }
    let listener = UnixListener::bind(path).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Reads one line of at most [`MAX_LINE`] bytes; `None` at the end.
pub async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<()>> {
    buf.clear();
    let n = (&mut *r).take(MAX_LINE as u64 + 1).read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_LINE {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a line longer than 64 KiB"));
    }
    Ok(Some(()))
}

/// One connection: an agent (until it goes), or one hand-over.
async fn serve(stream: UnixStream, shared: &Shared) {
    let uid = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            tracing::debug!("an agents' socket peer without credentials: {e}");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut buf = Vec::new();
    let hello = match tokio::time::timeout(DEADLINE, read_line(&mut read, &mut buf)).await {
        Ok(Ok(Some(()))) => serde_json::from_slice::<Hello>(&buf),
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(uid, "the agents' socket: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(uid, "the agents' socket: nothing said in {DEADLINE:?}; closed");
            return;
        }
    };
    match hello {
        Ok(Hello::Agent {}) => agent(uid, read, write, shared).await,
        Ok(Hello::Deliver(m)) => {
            let reply = deliver(uid, m, shared);
            let line = format!("{}\n", serde_json::to_string(&reply).unwrap_or_default());
            let _ = tokio::time::timeout(DEADLINE, write.write_all(line.as_bytes())).await;
        }
        Err(e) => {
            tracing::debug!(uid, "the agents' socket: not a hello: {e}");
            let reply = Reply::Error(format!("not understood: {e}"));
            let line = format!("{}\n", serde_json::to_string(&reply).unwrap_or_default());
            let _ = tokio::time::timeout(DEADLINE, write.write_all(line.as_bytes())).await;
        }
    }
}

/// The login of `uid`, from the user database.
fn login_of(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
}

/// A hand-over from smbd's `message command`: from root or a deliverer
/// account only, cut to size, queued for the receiver.
fn deliver(uid: u32, mut m: Handed, shared: &Shared) -> Reply {
    if uid != 0 && !shared.cfg.deliverers.contains(&uid) {
        let who = login_of(uid).unwrap_or_else(|| format!("uid {uid}"));
        tracing::warn!("{who} tried to hand a message over; refused (only root and --samba-user may)");
        return Reply::Error(format!(
            "{who} may not hand messages over: only root and the accounts given with --samba-user may"
        ));
    }
    // Names are NetBIOS names (smbd made them alphanumeric); anything
    // longer is not one.
    m.from = m.from.chars().take(64).collect();
    m.to = m.to.chars().take(64).collect();
    if m.text.len() > shared.cfg.max_text {
        let mut cut = shared.cfg.max_text;
        while !m.text.is_char_boundary(cut) {
            cut -= 1;
        }
        m.text.truncate(cut);
    }
    match shared.intake.try_send(m) {
        Ok(()) => Reply::Ok {},
        Err(_) => Reply::Error("the receiver is busy; try again".into()),
    }
}

/// An agent: registered under its user until it goes or falls silent on
/// a write; what it sends is read (and, for now, ignored) so a full
/// buffer never blocks it.
async fn agent(
    uid: u32,
    mut read: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut write: tokio::net::unix::OwnedWriteHalf,
    shared: &Shared,
) {
    let Some(login) = login_of(uid) else {
        tracing::warn!(uid, "a session agent of a uid with no login name; closed");
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Arc<str>>(QUEUE);
    let id = shared.agents.next.fetch_add(1, Ordering::Relaxed);
    {
        let mut list = shared.agents.lock();
        if list.iter().filter(|a| a.login == login).count() >= MAX_AGENTS_PER_USER {
            tracing::warn!(%login, "more than {MAX_AGENTS_PER_USER} session agents of one user; closed");
            return;
        }
        list.push(Agent { id, login: login.clone(), tx });
    }
    tracing::info!(%login, "a session agent of {login} connected");
    let writer = async {
        while let Some(line) = rx.recv().await {
            match tokio::time::timeout(DEADLINE, write.write_all(line.as_bytes())).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::warn!(%login, "a session agent took no popup for {DEADLINE:?}; dropped");
                    break;
                }
            }
        }
    };
    let reader = async {
        let mut buf = Vec::new();
        while let Ok(Some(())) = read_line(&mut read, &mut buf).await {}
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
    shared.agents.lock().retain(|a| a.id != id);
    tracing::info!(%login, "a session agent of {login} went");
}

/// Writes a popup to each terminal in `sessions`, as `write` does: only a
/// character device that belongs to the session's user and that they
/// let others write to (`mesg y`), opened without following links and
/// without waiting (a terminal that does not take it is skipped). Returns
/// the lines written to, and why the others were not.
pub fn write_terminals(sessions: &[Session], text: &str) -> (Vec<String>, Vec<String>) {
    let mut users: HashMap<&str, Option<u32>> = HashMap::new();
    let (mut done, mut skipped) = (Vec::new(), Vec::new());
    for s in sessions {
        let uid = *users
            .entry(&s.login)
            .or_insert_with(|| nix::unistd::User::from_name(&s.login).ok().flatten().map(|u| u.uid.as_raw()));
        match write_terminal(s, uid, text) {
            Ok(()) => done.push(s.line.clone()),
            Err(why) => skipped.push(format!("{}: {why}", s.line)),
        }
    }
    (done, skipped)
}

fn write_terminal(s: &Session, uid: Option<u32>, text: &str) -> Result<(), String> {
    let line = &s.line;
    if line.starts_with('/') || line.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("not a terminal's name".into());
    }
    let Some(uid) = uid else { return Err(format!("no user {} here", s.login)) };
    let flags = nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOFOLLOW;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(flags.bits())
        .open(Path::new("/dev").join(line))
        .map_err(|e| e.to_string())?;
    // Checked on the descriptor written to.
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.file_type().is_char_device() || !nix::unistd::isatty(&file).unwrap_or(false) {
        return Err("not a terminal".into());
    }
    if meta.uid() != uid {
        return Err(format!("not {}'s terminal", s.login));
    }
    if meta.mode() & 0o020 == 0 {
        return Err("messages refused (mesg n)".into());
    }
    file.write_all(text.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(login: &str, line: &str) -> Session {
        Session { login: login.into(), line: line.into() }
    }

    /// Lines that leave /dev, devices that are not terminals, and users
    /// that do not exist are each refused, with why.
    #[test]
    fn only_a_users_own_terminal_is_written_to() {
        let sessions = [
            session("root", "../etc/passwd"),
            session("root", "/etc/passwd"),
            session("root", "pts//0"),
            session("root", "null"),
            session("root", "pts/999999"),
            session("no-such-user-here", "pts/0"),
        ];
        let (done, skipped) = write_terminals(&sessions, "hello");
        assert!(done.is_empty(), "{done:?}");
        assert_eq!(skipped.len(), 6, "{skipped:?}");
        for (why, want) in skipped.iter().zip([
            "not a terminal's name",
            "not a terminal's name",
            "not a terminal's name",
            "not a terminal",
            "No such file",
            "no user no-such-user-here here",
        ]) {
            assert!(why.contains(want), "{why:?} should say {want:?}");
        }
    }

    /// Hellos are what they say, and nothing else parses as one.
    #[test]
    fn hellos_parse_strictly() {
        let agent: Hello = serde_json::from_str(r#"{"agent":{}}"#).unwrap();
        assert!(matches!(agent, Hello::Agent {}));
        let d: Hello = serde_json::from_str(r#"{"deliver":{"from":"A","to":"B","text":"t"}}"#).unwrap();
        assert!(matches!(d, Hello::Deliver(Handed { ref from, .. }) if from == "A"));
        for bad in [
            r#"{"agent":"please"}"#,
            r#"{"deliver":{"from":"A"}}"#,
            r#"{"deliver":{"from":"A","to":"B","text":"t","uid":0}}"#,
            "[]",
            "",
        ] {
            assert!(serde_json::from_str::<Hello>(bad).is_err(), "{bad}");
        }
    }
}
