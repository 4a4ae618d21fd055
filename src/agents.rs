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
//!
//! An agent acknowledges a popup (its desktop notification's action)
//! through the receiver, which holds the workgroup key its user does not:
//! the agent names the notification, the receiver finds it among the
//! popups it handed to that agent (nothing else is ever sent on an agent's
//! say), and sends the acknowledgement sealed, in the name the kernel
//! gave for the agent's user.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::presence::Session;

/// Where the system receiver's socket is, by default (systemd's
/// `RuntimeDirectory=alerter-listen`).
pub const DEFAULT_SOCKET: &str = "/run/alerter-listen/agents.sock";
/// The longest line a client may send the receiver.
pub const MAX_LINE: usize = 64 * 1024;
/// The longest line an agent takes from the receiver, which it trusts: a
/// popup of the receiver's `--max-text`, every character escaped.
pub const MAX_POPUP_LINE: usize = 1024 * 1024;
/// The longest text `alerter deliver` hands over: with every character
/// JSON-escaped (6 bytes), its hello still fits in [`MAX_LINE`].
pub const MAX_HANDED_TEXT: usize = 8 * 1024;
/// Connections of ordinary users served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// Connections one ordinary user may hold (agents and those still saying
/// hello): no user can fill the socket and lock Samba's hand-overs out.
const MAX_PER_USER: usize = 12;
/// Connections of root and the Samba accounts, counted apart from the
/// others so that a hand-over always finds room.
const MAX_PRIVILEGED: usize = 64;
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
/// Popups a user's agents can still acknowledge: the newest they were handed.
const ACKABLE: usize = 64;
/// Users whose acknowledgeable popups are remembered.
const ACKABLE_USERS: usize = 256;
/// Acknowledgements waiting for the receiver to send them.
const ACKS: usize = 16;

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
    /// A user here (by their exact login name).
    User(String),
    /// The machine or the workgroup: everyone.
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

/// What an agent says after its hello.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentSays {
    /// Acknowledge the popup of this notification (handed to me).
    Ack { notification: String },
}

/// The receiver's word on an acknowledgement an agent asked for.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acked {
    pub notification: String,
    /// Why it was not acknowledged; `None` when the daemon took it.
    pub error: Option<String>,
}

/// An acknowledgement for the receiver to send: for `login`, to where the
/// popup came from; its outcome goes back to the agent on `reply`.
pub struct Relayed {
    pub login: String,
    pub ack: crate::popup_ack::Ackable,
    pub reply: mpsc::Sender<Arc<str>>,
}

impl Relayed {
    /// Tells the agent how it went (or nothing, if it is behind or gone).
    pub fn answer(&self, error: Option<String>) {
        let _ = self.reply.try_send(Acked { notification: self.ack.ack.notification.clone(), error }.line());
    }
}

impl Acked {
    /// The line that tells an agent.
    fn line(self) -> Arc<str> {
        format!("{}\n", serde_json::json!({ "acked": self })).into()
    }
}

/// The connected agents.
#[derive(Default)]
struct Agents {
    list: Mutex<Vec<Agent>>,
    next: AtomicU64,
    /// The popups handed to each user's agents that they may acknowledge,
    /// newest last: kept by user, so that a session agent that reconnects
    /// (or another of the user's) can still acknowledge what is on screen.
    ackable: Mutex<HashMap<String, std::collections::VecDeque<crate::popup_ack::Ackable>>>,
}

impl Agents {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Agent>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers that `login`'s agents were handed `ack`'s popup.
    fn handed(&self, login: &str, ack: &crate::popup_ack::Ackable) {
        let mut all = self.ackable.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() >= ACKABLE_USERS && !all.contains_key(login) {
            // A bounded table: someone's oldest memory makes room.
            if let Some(k) = all.keys().next().cloned() {
                all.remove(&k);
            }
        }
        let list = all.entry(login.to_string()).or_default();
        if list.iter().any(|a| a.ack.notification == ack.ack.notification) {
            return;
        }
        if list.len() >= ACKABLE {
            list.pop_front();
        }
        list.push_back(ack.clone());
    }

    /// The popup of `notification` handed to `login`'s agents, if any.
    fn ackable_by(&self, login: &str, notification: &str) -> Option<crate::popup_ack::Ackable> {
        let all = self.ackable.lock().unwrap_or_else(|e| e.into_inner());
        all.get(login)?.iter().rev().find(|a| a.ack.notification == notification).cloned()
    }
}

/// Connections held, by uid, so that one user cannot take them all.
#[derive(Default)]
struct Slots {
    held: Mutex<HashMap<u32, usize>>,
}

/// A connection's place; given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    uid: u32,
}

impl Slots {
    /// A place for a connection of `uid`, unless its share (or, for an
    /// ordinary user, all ordinary users' share) is taken.
    fn admit(self: &Arc<Self>, uid: u32, privileged: bool) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.get(&uid).copied().unwrap_or(0);
        let ok = if privileged {
            mine < MAX_PRIVILEGED
        } else {
            let ordinary: usize = held.iter().filter(|(u, _)| **u != uid).map(|(_, n)| n).sum::<usize>() + mine;
            mine < MAX_PER_USER && ordinary < MAX_CONNECTIONS
        };
        if !ok {
            return None;
        }
        *held.entry(uid).or_default() += 1;
        Some(Slot { slots: self.clone(), uid })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.uid);
            }
        }
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
    /// A workgroup key is in use: only sealed popups may be acknowledged
    /// through the receiver (anyone can send an unsealed one, with an ack
    /// line naming any address).
    pub sealed_acks_only: bool,
}

/// The receiver's side of the socket (see the module docs).
pub struct Hub {
    agents: Arc<Agents>,
    pub socket: PathBuf,
    sealed_acks_only: bool,
}

impl Hub {
    /// Binds the socket (replacing a stale one) and serves it; messages
    /// handed over by smbd arrive on the receiver returned.
    pub fn bind(cfg: HubConfig) -> anyhow::Result<(Hub, mpsc::Receiver<Handed>, mpsc::Receiver<Relayed>)> {
        let listener = bind_socket(&cfg.socket)?;
        let agents = Arc::new(Agents::default());
        let (intake_tx, intake) = mpsc::channel(INTAKE);
        let (acks_tx, acks) = mpsc::channel(ACKS);
        let slots = Arc::new(Slots::default());
        let shared = Arc::new(Shared {
            agents: agents.clone(),
            cfg: cfg.clone(),
            intake: intake_tx,
            acks: acks_tx,
            refusals: Mutex::new(Refusals::default()),
        });
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
                // Who it is, before it takes a place: root and the Samba
                // accounts have places of their own.
                let uid = match stream.peer_cred() {
                    Ok(c) => c.uid(),
                    Err(e) => {
                        tracing::debug!("an agents' socket peer without credentials: {e}");
                        continue;
                    }
                };
                let privileged = shared.may_deliver(uid);
                // Its share held: the newcomer is closed, those served go on.
                let Some(slot) = slots.admit(uid, privileged) else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    serve(stream, uid, &shared).await;
                    drop(slot);
                });
            }
        });
        Ok((Hub { agents, socket: cfg.socket, sealed_acks_only: cfg.sealed_acks_only }, intake, acks))
    }

    /// Hands a popup (its JSON, as `alerter listen --json` prints it) to
    /// the agents of `to`: the user's own, or every agent. Returns the
    /// logins of the agents that took it.
    pub fn hand(&self, to: &Audience, popup: &serde_json::Value) -> Vec<String> {
        let sealed = !popup["sealed"].is_null();
        let ackable = crate::popup_ack::ackable(popup).filter(|_| sealed || !self.sealed_acks_only);
        // The agent offers the action only for what the receiver will send.
        let mut message = popup.clone();
        message["ackable"] = serde_json::Value::Bool(ackable.is_some());
        let line: Arc<str> =
            format!("{}\n", crate::listen_cli::json_line(&serde_json::json!({ "message": message }))).into();
        let agents = self.agents.lock();
        let mut took = Vec::new();
        for a in agents.iter() {
            if let Audience::User(login) = to
                && a.login != *login
            {
                continue;
            }
            match a.tx.try_send(line.clone()) {
                Ok(()) => {
                    took.push(a.login.clone());
                    if let Some(ack) = &ackable {
                        self.agents.handed(&a.login, ack);
                    }
                }
                Err(_) => tracing::warn!(login = %a.login, "a session agent is behind; it misses this popup"),
            }
        }
        took.sort();
        took.dedup();
        took
    }

    /// The logins of the agents connected.
    pub fn logins(&self) -> Vec<String> {
        self.agents.lock().iter().map(|a| a.login.clone()).collect()
    }
}

/// The one login that the NetBIOS name `to` stands for, among `logins`:
/// the login spelled so, else the only one that differs in case alone
/// (NetBIOS names are upper case, logins mostly lower). None when there is
/// no such login or several (`Alice` and `alice`): a popup is never given
/// to two people because their names look alike.
pub fn login_named(to: &str, logins: impl IntoIterator<Item = String>) -> Option<String> {
    let mut like: Vec<String> = logins.into_iter().filter(|l| l.eq_ignore_ascii_case(to)).collect();
    if let Some(exact) = like.iter().find(|l| *l == to) {
        return Some(exact.clone());
    }
    like.sort();
    like.dedup();
    match like.len() {
        1 => like.pop(),
        _ => None,
    }
}

/// Refused hand-overs, logged at most once a minute with how many.
#[derive(Default)]
struct Refusals {
    logged: Option<Instant>,
    since: u64,
}

struct Shared {
    agents: Arc<Agents>,
    cfg: HubConfig,
    intake: mpsc::Sender<Handed>,
    /// Acknowledgements agents asked for, for the receiver to send.
    acks: mpsc::Sender<Relayed>,
    refusals: Mutex<Refusals>,
}

impl Shared {
    fn may_deliver(&self, uid: u32) -> bool {
        uid == 0 || self.cfg.deliverers.contains(&uid)
    }

    /// Logs a refused hand-over, unless one was logged within the minute
    /// (a local user trying in a loop must not fill the journal).
    fn log_refusal(&self, who: &str) {
        let mut r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        r.since += 1;
        if r.logged.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        let more = match r.since {
            1 => String::new(),
            n => format!(" ({} refused since the last such line)", n - 1),
        };
        tracing::warn!("{who} tried to hand a message over; refused (only root and --samba-user may){more}");
        r.logged = Some(Instant::now());
        r.since = 0;
    }
}

/// Makes the socket: its directory if missing (0755), a stale socket
/// replaced (a live one, or anything else in its place, is an error),
/// readable and writable by every local user (what each may do is
/// decided by who they are). The directory must be writable by its owner
/// alone: in a shared one (/tmp) another user could swap the socket for a
/// link between its binding and its chmod, or put their own in its place.
fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("cannot make {}: {e}", dir.display()))?;
        // Made under the service's umask (0077): agents must get in.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let d = std::fs::metadata(dir).map_err(|e| anyhow::anyhow!("cannot look at {}: {e}", dir.display()))?;
    if d.mode() & 0o022 != 0 {
        anyhow::bail!(
            "{} is writable by others than its owner: put the agents' socket in a directory of its own \
             (the default, {DEFAULT_SOCKET}, is)",
            dir.display()
        );
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "another receiver listens at {} already: stop it, or choose another --agents",
                    path.display()
                );
            }
            std::fs::remove_file(path)?
        }
        Ok(_) => anyhow::bail!("{} exists and is not a socket: remove it, or choose another --agents", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot look at {}: {e}", path.display()),
    }
    let listener = UnixListener::bind(path).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Reads one line of at most `max` bytes; `None` at the end.
pub async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<()>> {
    buf.clear();
    let n = (&mut *r).take(max as u64 + 1).read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a line longer than {max} bytes")));
    }
    Ok(Some(()))
}

/// One connection: an agent (until it goes), or one hand-over.
async fn serve(stream: UnixStream, uid: u32, shared: &Shared) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut buf = Vec::new();
    let hello = match tokio::time::timeout(DEADLINE, read_line(&mut read, &mut buf, MAX_LINE)).await {
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
            let reply = deliver(uid, m, shared).await;
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

/// The login of `uid`, from the user database: off the runtime's
/// threads, which a stalled directory service (LDAP, sssd) must not hold.
async fn login_of(uid: u32) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
    })
    .await
    .ok()
    .flatten()
}

/// A hand-over from smbd's `message command`: from root or a deliverer
/// account only, cut to size, queued for the receiver.
async fn deliver(uid: u32, mut m: Handed, shared: &Shared) -> Reply {
    if !shared.may_deliver(uid) {
        let who = login_of(uid).await.unwrap_or_else(|| format!("uid {uid}"));
        shared.log_refusal(&who);
        return Reply::Error(format!(
            "{who} may not hand messages over: only root and the accounts given with --samba-user may"
        ));
    }
    // Names are NetBIOS names (smbd made them alphanumeric); anything
    // longer is not one.
    m.from = m.from.chars().take(64).collect();
    m.to = m.to.chars().take(64).collect();
    m.text.truncate(m.text.floor_char_boundary(shared.cfg.max_text));
    match shared.intake.try_send(m) {
        Ok(()) => Reply::Ok {},
        Err(_) => Reply::Error("the receiver is busy; try again".into()),
    }
}

/// An agent: registered under its user until it goes or falls silent on
/// a write. What it says is read as it comes (a full buffer never blocks
/// it): acknowledgements of popups handed to it, queued for the receiver
/// to send; anything else is ignored.
async fn agent(
    uid: u32,
    mut read: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut write: tokio::net::unix::OwnedWriteHalf,
    shared: &Shared,
) {
    let Some(login) = login_of(uid).await else {
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
        list.push(Agent { id, login: login.clone(), tx: tx.clone() });
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
        while let Ok(Some(())) = read_line(&mut read, &mut buf, MAX_LINE).await {
            let Ok(AgentSays::Ack { notification }) = serde_json::from_slice::<AgentSays>(&buf) else {
                tracing::debug!(%login, "a session agent said something not understood");
                continue;
            };
            let found = shared.agents.ackable_by(&login, &notification);
            let relayed = |ack| Relayed { login: login.clone(), ack, reply: tx.clone() };
            match found {
                Some(ack) => {
                    if let Err(e) = shared.acks.try_send(relayed(ack)) {
                        let r = match e {
                            mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
                        };
                        r.answer(Some("the receiver is busy; try again".into()));
                    }
                }
                None => {
                    let error = Some("no such popup was handed to this agent (or it is too old)".into());
                    let _ = tx.try_send(Acked { notification, error }.line());
                }
            }
        }
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

    /// A NetBIOS name stands for the login spelled so, else for the one
    /// login that differs in case alone; never for two.
    #[test]
    fn a_name_stands_for_one_login_or_none() {
        let logins = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(login_named("ALICE", logins(&["bob", "alice", "alice"])), Some("alice".into()));
        assert_eq!(login_named("Alice", logins(&["alice", "Alice"])), Some("Alice".into()));
        assert_eq!(login_named("ALICE", logins(&["alice", "Alice"])), None, "two alike: neither");
        assert_eq!(login_named("CAROL", logins(&["alice"])), None);
        assert_eq!(login_named("ALI", logins(&["alice"])), None);
    }

    /// One ordinary user cannot take every place, all ordinary users
    /// together cannot take root's and Samba's, and places come back.
    #[test]
    fn places_are_shared_out_by_user() {
        let slots = Arc::new(Slots::default());
        let mallory: Vec<Slot> = (0..MAX_PER_USER).map(|_| slots.admit(1000, false).unwrap()).collect();
        assert!(slots.admit(1000, false).is_none(), "a user's share is taken");
        let mut others: Vec<Slot> = Vec::new();
        let mut uid = 2000;
        while let Some(s) = slots.admit(uid, false) {
            others.push(s);
            uid += 1;
        }
        assert_eq!(mallory.len() + others.len(), MAX_CONNECTIONS, "ordinary users share this many");
        assert!(slots.admit(0, true).is_some(), "root still gets in");
        assert!(slots.admit(65534, true).is_some(), "so does Samba's account");
        drop(mallory);
        assert!(slots.admit(1000, false).is_some(), "places given back are taken again");
    }
}
