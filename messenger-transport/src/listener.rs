//! Receiving: the session form on TCP (139, 445, or any port), the
//! datagram form on UDP 138, the RPC form on UDP 135 (when asked, for an
//! allow-list of sender networks), and the name service on UDP 137
//! (registering `NAME<03>`, answering name queries and node status).
//!
//! Name answers carry the address of the interface the query came in on
//! (IP_PKTINFO), registrations go out on every interface (see [`crate::iface`]),
//! and a listener bound to one address also receives that interface's
//! broadcasts, as nmbd does with `bind interfaces only`.
//!
//! Every input is untrusted: a malformed packet is dropped and counted,
//! never a crash, and a connection that misbehaves is closed. Limits bound
//! what one peer can make the listener hold (see [`crate::limits`]):
//! message size, connections per address and in all (a full table evicts
//! the longest-idle connection of the address holding most), a deadline for
//! the first real packet, an idle time that keep-alives do not reset, a
//! lifetime, and messages and bytes per second per address. Refusals are
//! counted and logged at most once per ten seconds each.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::client::local_ip_towards;
use crate::dgram::{self, Datagram};
use crate::hold::{HoldConfig, NameTable};
use crate::iface::{self, Broadcast};
use crate::limits::{self, Admit, ConnectionTimes, Connections, LogEvery, PeerRates, RateLimit};
use crate::name::{self, NetbiosName};
use crate::nbns;
use crate::nbss::{self, Packet};
use crate::oem::CodePage;
use crate::replay::{Replay, ReplayFileError};
use crate::rpc;
use crate::seal::{self, SealError, SealKey, TrustedSenders};
use crate::smb::{self, Smb};

/// How sealed messages are treated.
#[derive(Debug, Clone)]
pub struct SealPolicy {
    pub key: SealKey,
    /// Refuse anything unsealed.
    pub require: bool,
    /// How far a message's time may be from ours.
    pub window: Duration,
    /// Accept only messages signed by one of these senders.
    pub trusted: Option<Arc<TrustedSenders>>,
    /// Remember accepted messages here, so a restart does not forget them;
    /// without it the replay guard is in memory only.
    pub replay_file: Option<PathBuf>,
}

impl SealPolicy {
    /// Seals verified with `key`; nothing required, a 5-minute window, the
    /// replay guard in memory.
    pub fn new(key: SealKey) -> SealPolicy {
        SealPolicy { key, require: false, window: Duration::from_secs(300), trusted: None, replay_file: None }
    }
}

/// A last check of each message, made before the sender is answered: a
/// message it refuses is refused on the wire (the sender learns it was
/// not taken) and reported as [`Event::Rejected`] with its reason.
#[derive(Clone)]
pub struct Gate(pub Arc<GateFn>);

/// The check a [`Gate`] makes: `Err` carries the reason for the log.
pub type GateFn = dyn Fn(&Received) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate(..)")
    }
}

/// What to listen on.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The name we receive for (`NAME<03>`).
    pub name: String,
    /// Group messages to `WORKGROUP<03>` are ours too.
    pub workgroup: Option<String>,
    /// Session service listeners (TCP 139, 445, or test ports).
    pub tcp: Vec<SocketAddr>,
    /// The datagram service (UDP 138).
    pub datagram: Option<SocketAddr>,
    /// The name service (UDP 137).
    pub name_service: Option<SocketAddr>,
    /// Register `NAME<03>` (and the aliases) by broadcast, on the
    /// interfaces of `broadcast`.
    pub register: bool,
    /// A WINS server to register the names with (UDP 137; tests use
    /// another port), so that senders on other subnets find them.
    pub wins: Option<SocketAddr>,
    /// How long an alias another machine defended waits before it is
    /// registered again.
    pub conflict_retry: Duration,
    /// Where registrations are broadcast: every interface by default.
    pub broadcast: Broadcast,
    pub code_page: CodePage,
    pub seal: Option<SealPolicy>,
    /// Longest text kept from one message, in bytes before decoding.
    pub max_text: usize,
    /// Between real packets (keep-alives do not count).
    pub idle_timeout: Duration,
    /// For a new connection's first real packet.
    pub handshake_timeout: Duration,
    /// How long one connection may stay, however busy.
    pub max_lifetime: Duration,
    /// Connections held in all; lowered at bind to what RLIMIT_NOFILE allows.
    pub max_connections: usize,
    /// Connections held by one address.
    pub max_per_peer: usize,
    /// Messages and bytes per second per address.
    pub rate: RateLimit,
    /// Checks each message (after its seal) before it is taken.
    pub gate: Option<Gate>,
    /// The RPC form (NetrSendMessage on UDP 135); off unless set.
    pub rpc: Option<RpcListen>,
}

/// Where and from whom the RPC form is taken.
#[derive(Debug, Clone)]
pub struct RpcListen {
    /// UDP 135, or another port.
    pub addr: SocketAddr,
    /// Sender networks taken from; others are answered "access denied".
    /// Empty: nobody. (Source addresses of datagrams can be forged: this
    /// keeps out the Internet and other networks, not a liar on the LAN.)
    pub allow: Vec<ipnet::IpNet>,
    pub limits: rpc::ServerLimits,
}

impl ListenerConfig {
    pub fn new(name: &str) -> ListenerConfig {
        ListenerConfig {
            name: name.to_ascii_uppercase(),
            workgroup: None,
            tcp: Vec::new(),
            datagram: None,
            name_service: None,
            register: false,
            wins: None,
            conflict_retry: Duration::from_secs(60),
            broadcast: Broadcast::AllInterfaces,
            code_page: CodePage::CP850,
            seal: None,
            // What a popup can sensibly show, and what `alerter send` sends.
            max_text: 4096,
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(300),
            max_connections: 256,
            max_per_peer: 16,
            rate: RateLimit::DEFAULT,
            gate: None,
            rpc: None,
        }
    }
}

/// Which wire form a message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Session,
    Datagram,
    Rpc,
}

impl Form {
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Session => "session",
            Form::Datagram => "datagram",
            Form::Rpc => "rpc",
        }
    }
}

/// What a verified seal said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealInfo {
    pub id: String,
    pub severity: String,
    pub time: i64,
    /// The sender named by a trusted signature.
    pub verified_sender: Option<String>,
}

/// A message received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub from: String,
    pub to: String,
    pub text: String,
    pub form: Form,
    /// Sent to a group (the workgroup) rather than to us alone.
    pub group: bool,
    pub peer: SocketAddr,
    pub sealed: Option<SealInfo>,
}

/// What the listener reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Message(Received),
    /// A message refused, and why (seal policy).
    Rejected {
        peer: SocketAddr,
        from: Option<String>,
        reason: String,
    },
    /// Someone else holds our name.
    NameConflict {
        name: String,
        holder: IpAddr,
    },
}

/// Counters, for logs and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub messages: AtomicU64,
    pub rejected: AtomicU64,
    pub malformed: AtomicU64,
    pub not_for_us: AtomicU64,
    pub name_queries_answered: AtomicU64,
    pub dropped_events: AtomicU64,
    /// Messages refused for exceeding a peer's rate.
    pub rate_limited: AtomicU64,
    /// Connections refused because their address held its share.
    pub refused_connections: AtomicU64,
    /// Connections closed to make room for a newcomer.
    pub evicted_connections: AtomicU64,
    /// Connections closed at their handshake, idle or lifetime deadline.
    pub timed_out_connections: AtomicU64,
    pub accept_errors: AtomicU64,
}

/// A running listener; dropping it stops it.
#[derive(Debug)]
pub struct Listener {
    tasks: Vec<JoinHandle<()>>,
    names: Arc<NameTable>,
    pub stats: Arc<Stats>,
    /// The TCP addresses actually bound (ports resolved).
    pub tcp: Vec<SocketAddr>,
    pub datagram: Option<SocketAddr>,
    pub name_service: Option<SocketAddr>,
    /// The RPC form's UDP address, when on.
    pub rpc: Option<SocketAddr>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.names.stop();
    }
}

/// Binding failed; says which address and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {what} {addr}: {source}{hint}")]
pub struct BindError {
    pub what: &'static str,
    pub addr: SocketAddr,
    pub source: std::io::Error,
    pub hint: &'static str,
}

fn bind_error(what: &'static str, addr: SocketAddr, source: std::io::Error) -> BindError {
    let hint = match source.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE; or choose another port)"
        }
        std::io::ErrorKind::AddrInUse => " (another program, perhaps Samba's smbd or nmbd, is using it)",
        _ => "",
    };
    BindError { what, addr, source, hint }
}

struct Shared {
    cfg: ListenerConfig,
    names: Arc<NameTable>,
    tx: mpsc::Sender<Event>,
    stats: Arc<Stats>,
    replay: Mutex<Replay>,
    /// The connections held; each one's payload closes it when dropped.
    conns: Mutex<Connections<oneshot::Sender<()>>>,
    rates: Mutex<PeerRates>,
    /// One rate-limited log per kind of refusal.
    logs: Mutex<HashMap<&'static str, LogEvery>>,
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (every critical section here is a single table update).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn emit(&self, e: Event) {
        match &e {
            Event::Message(_) => self.stats.messages.fetch_add(1, Ordering::Relaxed),
            Event::Rejected { .. } => self.stats.rejected.fetch_add(1, Ordering::Relaxed),
            Event::NameConflict { .. } => 0,
        };
        if self.tx.try_send(e).is_err() {
            self.stats.dropped_events.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn malformed(&self, peer: SocketAddr, what: &str, e: impl std::fmt::Display) {
        self.stats.malformed.fetch_add(1, Ordering::Relaxed);
        debug!(%peer, "dropped malformed {what}: {e}");
    }

    /// Logs a refusal of kind `kind`, at most once per ten seconds, with
    /// how many of that kind went unlogged in between.
    fn refusal(&self, kind: &'static str, line: impl FnOnce() -> String) {
        let now = Instant::now().into_std();
        let hit = lock(&self.logs).entry(kind).or_insert_with(|| LogEvery::new(Duration::from_secs(10))).hit(now);
        match hit {
            Some(0) => warn!("{}", line()),
            Some(n) => warn!("{} ({n} more like it not logged)", line()),
            None => {}
        }
    }

    /// Whether `peer` may send a message of `bytes` now.
    fn within_rate(&self, peer: SocketAddr, bytes: usize) -> bool {
        let verdict = lock(&self.rates).allow(peer.ip(), bytes, Instant::now().into_std());
        match verdict {
            Ok(()) => true,
            Err(what) => {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                let what = match what {
                    limits::Limited::Messages => "messages",
                    limits::Limited::Bytes => "bytes",
                };
                self.refusal("rate", || {
                    format!("messages from {} dropped: over its rate of {what} per second", peer.ip())
                });
                false
            }
        }
    }

    fn is_our_group(&self, n: &NetbiosName) -> bool {
        n.name() == "*" || self.cfg.workgroup.as_deref().is_some_and(|w| w.eq_ignore_ascii_case(&n.name()))
    }

    /// A plain (unsealed) message: delivered, unless seals are required.
    /// Whether it was delivered.
    fn plain(&self, m: Received) -> bool {
        if self.requires_seal() {
            self.refuse_plain(m.peer, m.from);
            return false;
        }
        if !self.passes_gate(&m) {
            return false;
        }
        self.emit(Event::Message(m));
        true
    }

    /// Whether the gate (if any) lets `m` in; a refusal is reported.
    fn passes_gate(&self, m: &Received) -> bool {
        let Some(gate) = &self.cfg.gate else { return true };
        match (gate.0)(m) {
            Ok(()) => true,
            Err(reason) => {
                self.emit(Event::Rejected { peer: m.peer, from: Some(m.from.clone()), reason });
                false
            }
        }
    }

    fn requires_seal(&self) -> bool {
        self.cfg.seal.as_ref().is_some_and(|s| s.require)
    }

    fn refuse_plain(&self, peer: SocketAddr, from: String) {
        self.emit(Event::Rejected {
            peer,
            from: Some(from),
            reason: "unsealed message refused: this receiver requires sealed messages".into(),
        });
    }

    /// A sealed message: opened and checked, or rejected with the reason.
    fn sealed(&self, bytes: &[u8], form: Form, group: bool, peer: SocketAddr) -> bool {
        let Some(policy) = &self.cfg.seal else {
            self.emit(Event::Rejected {
                peer,
                from: None,
                reason: "sealed message, but no workgroup key is configured here".into(),
            });
            return false;
        };
        let reject =
            |reason: SealError, from: Option<String>| Event::Rejected { peer, from, reason: reason.to_string() };
        let m = match seal::open(&policy.key, bytes) {
            Ok(m) => m,
            Err(e) => {
                self.emit(reject(e, None));
                return false;
            }
        };
        let to = NetbiosName::new(&m.to, name::MESSENGER);
        let for_us = to.is_ok_and(|n| self.names.receives_for(&n) || self.is_our_group(&n));
        if !for_us {
            self.emit(reject(SealError::WrongRecipient(m.to.clone()), Some(m.from)));
            return false;
        }
        let verified_sender = match &policy.trusted {
            Some(trusted) => match m.verify(trusted) {
                Ok(name) => Some(name),
                Err(e) => {
                    self.emit(reject(e, Some(m.from)));
                    return false;
                }
            },
            None => None,
        };
        let received = Received {
            from: m.from.clone(),
            to: m.to.clone(),
            text: m.text.clone(),
            form,
            group,
            peer,
            sealed: Some(SealInfo { id: m.id.clone(), severity: m.severity.clone(), time: m.time, verified_sender }),
        };
        if !self.passes_gate(&received) {
            return false;
        }
        // Last, so that only a message about to be shown is remembered.
        let checked = lock(&self.replay).check(&m, unix_now());
        match checked {
            Ok(None) => {}
            Ok(Some(e)) => self.refusal("replay-file", || {
                format!("sealed message shown, but the replay guard could not save it (a restart would forget it): {e}")
            }),
            Err(e) => {
                self.emit(reject(e, Some(m.from)));
                return false;
            }
        }
        self.emit(Event::Message(received));
        true
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Replay(#[from] ReplayFileError),
}

impl Listener {
    /// Binds everything configured and starts serving. Events arrive on the
    /// returned channel.
    pub async fn bind(cfg: ListenerConfig) -> Result<(Listener, mpsc::Receiver<Event>), ListenError> {
        let (tx, rx) = mpsc::channel(1024);
        let stats = Arc::new(Stats::default());
        let our_name = NetbiosName::new(&cfg.name, name::MESSENGER).map_err(|e| BindError {
            what: "name",
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
            hint: "",
        })?;
        let window = cfg.seal.as_ref().map_or(Duration::from_secs(300), |s| s.window);
        let replay = match cfg.seal.as_ref().and_then(|s| s.replay_file.as_deref()) {
            Some(path) => {
                let (replay, loaded) = Replay::persistent(path, window, unix_now())?;
                if loaded.bad > 0 {
                    warn!("{} lines of the replay file {} did not parse and were skipped", loaded.bad, path.display());
                }
                debug!("the replay guard remembers {} sealed messages from {}", loaded.live, path.display());
                replay
            }
            None => Replay::in_memory(window),
        };
        let mut cfg = cfg;
        cfg.max_connections = fit_to_open_files(cfg.max_connections, cfg.tcp.len());
        let hold = HoldConfig {
            register: cfg.register,
            broadcast: cfg.broadcast.clone(),
            wins: cfg.wins,
            conflict_retry: cfg.conflict_retry,
        };
        let names = Arc::new(NameTable::new(our_name, hold, tx.clone()));
        let shared = Arc::new(Shared {
            replay: Mutex::new(replay),
            conns: Mutex::new(Connections::new(cfg.max_connections, cfg.max_per_peer)),
            rates: Mutex::new(PeerRates::new(cfg.rate, 4096)),
            logs: Mutex::new(HashMap::new()),
            cfg,
            names: names.clone(),
            tx,
            stats: stats.clone(),
        });
        let mut listener = Listener {
            tasks: Vec::new(),
            names,
            stats,
            tcp: Vec::new(),
            datagram: None,
            name_service: None,
            rpc: None,
        };
        for addr in shared.cfg.tcp.clone() {
            let l = TcpListener::bind(addr).await.map_err(|e| bind_error("TCP", addr, e))?;
            listener.tcp.push(l.local_addr().unwrap_or(addr));
            listener.tasks.push(tokio::spawn(serve_tcp(l, shared.clone())));
        }
        if let Some(addr) = shared.cfg.datagram {
            let s = UdpSocket::bind(addr).await.map_err(|e| bind_error("UDP", addr, e))?;
            let _ = s.set_broadcast(true);
            let bound = s.local_addr().unwrap_or(addr);
            listener.datagram = Some(bound);
            listener.tasks.push(tokio::spawn(serve_datagrams(s, shared.clone())));
            if let Some(b) = broadcast_socket(bound).await? {
                listener.tasks.push(tokio::spawn(serve_datagrams(b, shared.clone())));
            }
        }
        if let Some(r) = shared.cfg.rpc.clone() {
            let s = UdpSocket::bind(r.addr).await.map_err(|e| bind_error("UDP", r.addr, e))?;
            listener.rpc = Some(s.local_addr().unwrap_or(r.addr));
            listener.tasks.push(tokio::spawn(serve_rpc(s, r, shared.clone())));
        }
        if let Some(addr) = shared.cfg.name_service {
            let s = UdpSocket::bind(addr).await.map_err(|e| bind_error("UDP", addr, e))?;
            let _ = s.set_broadcast(true);
            let bound = s.local_addr().unwrap_or(addr);
            listener.name_service = Some(bound);
            let s = Arc::new(s);
            shared.names.start(s.clone());
            if let Some(b) = broadcast_socket(bound).await? {
                // Answers leave by the unicast socket: a reply from a
                // broadcast address would be nonsense.
                listener.tasks.push(tokio::spawn(serve_names(Arc::new(b), s.clone(), shared.clone())));
            }
            listener.tasks.push(tokio::spawn(serve_names(s.clone(), s, shared.clone())));
        }
        Ok((listener, rx))
    }
}

impl Listener {
    /// Adds a message alias, as Windows registered the logged-on user's
    /// name beside the machine's: `ALICE<03>` is registered (by broadcast,
    /// and with the WINS server if configured), answered, defended and
    /// received for until it is removed. False if it was there already.
    pub fn add_alias(&self, alias: &str) -> Result<bool, crate::Error> {
        let n = NetbiosName::new(alias, name::MESSENGER)?;
        Ok(self.names.add_alias(n))
    }

    /// Removes an alias: no longer answered or received for, and released
    /// by broadcast and at the WINS server. False if it was not there.
    pub async fn remove_alias(&self, alias: &str) -> bool {
        match NetbiosName::new(alias, name::MESSENGER) {
            Ok(n) => self.names.remove_alias(&n).await,
            Err(_) => false,
        }
    }

    /// The aliases held (answered or, while someone else holds them, not).
    pub fn aliases(&self) -> Vec<String> {
        self.names.aliases().iter().map(NetbiosName::name).collect()
    }

    /// Releases every name, aliases first, as a receiver stopping should:
    /// senders then look elsewhere at once instead of finding a machine
    /// that no longer listens.
    pub async fn release_names(&self) {
        self.names.release_all().await;
    }

    /// Stops listening and returns once the ports are free again, so that
    /// they can be bound anew at once (dropping only asks the tasks to end).
    pub async fn close(mut self) {
        for t in std::mem::take(&mut self.tasks) {
            t.abort();
            let _ = t.await;
        }
    }
}

/// A socket bound to one unicast address does not see broadcasts. When the
/// listener is bound to an interface's address, a second socket on the
/// same port bound to that interface's broadcast address receives them.
async fn broadcast_socket(bound: SocketAddr) -> Result<Option<UdpSocket>, BindError> {
    let IpAddr::V4(ip) = bound.ip() else { return Ok(None) };
    if ip.is_unspecified() || ip.is_loopback() {
        return Ok(None);
    }
    let Some(bcast) = iface::addresses().ok().and_then(|all| all.into_iter().find(|a| a.ip == ip)?.broadcast) else {
        return Ok(None);
    };
    let addr = SocketAddr::new(IpAddr::V4(bcast), bound.port());
    let s = UdpSocket::bind(addr).await.map_err(|e| bind_error("UDP", addr, e))?;
    Ok(Some(s))
}

/// Receives one datagram with the local address it arrived at: for a
/// broadcast, the address of the interface it came in on (IP_PKTINFO's
/// `ipi_spec_dst`), so the answer names the address the asker can reach.
async fn recv_with_local(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr, Option<Ipv4Addr>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg};
    use std::os::fd::AsRawFd;
    sock.async_io(tokio::io::Interest::READABLE, || {
        let mut cmsg = nix::cmsg_space!(nix::libc::in_pktinfo);
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrIn>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
            .map_err(std::io::Error::from)?;
        let local = msg.cmsgs().ok().and_then(|mut c| {
            c.find_map(|c| match c {
                ControlMessageOwned::Ipv4PacketInfo(p) => Some(Ipv4Addr::from(u32::from_be(p.ipi_spec_dst.s_addr))),
                _ => None,
            })
        });
        let peer = msg
            .address
            .map(|a| SocketAddr::from((a.ip(), a.port())))
            .ok_or_else(|| std::io::Error::other("a datagram without a sender"))?;
        Ok((msg.bytes, peer, local.filter(|ip| !ip.is_unspecified())))
    })
    .await
}

/// The address to put in an answer to `peer`: the one the query arrived
/// at, else that of the interface on the peer's network, else what the
/// routing table would use.
pub(crate) async fn answer_address(local: Option<Ipv4Addr>, peer: SocketAddr) -> Option<Ipv4Addr> {
    if let Some(ip) = local {
        return Some(ip);
    }
    if let Some(ip) = iface::addresses().ok().and_then(|all| iface::address_facing(&all, peer.ip())) {
        return Some(ip);
    }
    match local_ip_towards(peer.ip()).await {
        Some(IpAddr::V4(ip)) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

async fn serve_names(sock: Arc<UdpSocket>, reply_sock: Arc<UdpSocket>, shared: Arc<Shared>) {
    let pktinfo = nix::sys::socket::setsockopt(&*sock, nix::sys::socket::sockopt::Ipv4PacketInfo, &true);
    if let Err(e) = pktinfo {
        debug!("no IP_PKTINFO ({e}); answers name the interface on the asker's network");
    }
    let mut buf = vec![0u8; 1024];
    loop {
        let Ok((n, peer, local)) = recv_with_local(&sock, &mut buf).await else { continue };
        let p = match nbns::Packet::decode(&buf[..n]) {
            Ok(p) => p,
            Err(e) => {
                shared.malformed(peer, "name service packet", e);
                continue;
            }
        };
        if shared.names.on_response(&p, peer) {
            continue;
        }
        let Some(our_ip) = answer_address(local, peer).await else { continue };
        let names = &shared.names;
        let reply = match (p.flags.response, p.flags.opcode, p.questions.first()) {
            (false, nbns::OP_QUERY, Some(q)) if q.qtype == nbns::TYPE_NBSTAT => {
                let held: Vec<(NetbiosName, bool)> = names.held().into_iter().map(|n| (n, false)).collect();
                Some(nbns::Packet::status_response(&p, &held))
            }
            (false, nbns::OP_QUERY, Some(q)) if q.qtype == nbns::TYPE_NB && names.answers_for(&q.name) => {
                shared.stats.name_queries_answered.fetch_add(1, Ordering::Relaxed);
                Some(nbns::Packet::query_response(&p, q.name, our_ip, false))
            }
            (false, nbns::OP_REGISTRATION | nbns::OP_REFRESH, Some(q)) if names.answers_for(&q.name) => {
                // Defend the name, unless it is our own broadcast coming back.
                let theirs = p.additional.iter().flat_map(|r| r.addresses()).next();
                let ours =
                    |ip: Ipv4Addr| ip == our_ip || iface::addresses().is_ok_and(|all| all.iter().any(|a| a.ip == ip));
                match theirs {
                    Some(ip) if !ours(ip) => Some(nbns::Packet::registration_conflict(&p, q.name, our_ip)),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(r) = reply {
            let _ = reply_sock.send_to(&r.encode(), peer).await;
        }
    }
}

async fn serve_datagrams(sock: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else { continue };
        let d = match Datagram::decode(&buf[..n]) {
            Ok(d) => d,
            Err(e) => {
                shared.malformed(peer, "datagram", e);
                continue;
            }
        };
        let to_us = d.kind == dgram::DIRECT_UNIQUE && shared.names.receives_for(&d.destination);
        let to_group = d.kind != dgram::DIRECT_UNIQUE
            && d.destination.suffix == name::MESSENGER
            && shared.is_our_group(&d.destination);
        if !to_us && !to_group {
            shared.stats.not_for_us.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let (slot, data) = match d.mailslot() {
            Ok(x) => x,
            Err(e) => {
                shared.malformed(peer, "mailslot write", e);
                continue;
            }
        };
        let known = slot.eq_ignore_ascii_case(dgram::ALERTER_SEALED) || slot.eq_ignore_ascii_case(dgram::MESSNGR);
        if known && !shared.within_rate(peer, data.len()) {
            continue;
        }
        if slot.eq_ignore_ascii_case(dgram::ALERTER_SEALED) {
            shared.sealed(&data, Form::Datagram, to_group, peer);
        } else if slot.eq_ignore_ascii_case(dgram::MESSNGR) {
            match dgram::parse_messenger_body(&data) {
                Ok((from, to, text)) => {
                    let cp = shared.cfg.code_page;
                    let mut text = text;
                    text.truncate(shared.cfg.max_text);
                    shared.plain(Received {
                        from: cp.decode(&from),
                        to: cp.decode(&to),
                        text: cp.decode(&text),
                        form: Form::Datagram,
                        group: to_group,
                        peer,
                        sealed: None,
                    });
                }
                Err(e) => shared.malformed(peer, "messenger body", e),
            }
        } else {
            shared.stats.not_for_us.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The RPC form: each datagram within its peer's rate goes to the sans-IO
/// [`rpc::Server`], which reassembles, answers duplicates and pings, and
/// hands each whole new message here once to be judged like any other
/// form's; its reply (never longer than the datagram) goes back. A peer
/// over its rate hears nothing: an answer per datagram of a flood would
/// make the receiver a reflector.
async fn serve_rpc(sock: UdpSocket, cfg: RpcListen, shared: Arc<Shared>) {
    let boot = unix_now() as u32;
    let mut server = rpc::Server::new(cfg.limits, boot);
    // Any UDP datagram whole: a peer's unfragmented PDU may exceed ours.
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else { continue };
        if !shared.within_rate(peer, n) {
            continue;
        }
        let ip = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let allowed = cfg.allow.iter().any(|net| net.contains(&ip));
        let now = Instant::now().into_std();
        let out = server.receive(&buf[..n], ip, allowed, now, |m| judge_rpc(&shared, m, peer));
        match &out.problem {
            None | Some(rpc::Problem::Duplicate) => {}
            Some(rpc::Problem::Malformed(e)) => shared.malformed(peer, "RPC PDU", e),
            Some(rpc::Problem::Unsupported(what)) => shared.malformed(peer, "RPC call", format!("unsupported: {what}")),
            Some(rpc::Problem::OverLimit(what)) => {
                shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
                shared.refusal("rpc-limit", || format!("RPC datagram from {} dropped: too many {what}", peer.ip()));
            }
            // Counted and logged, at most once per ten seconds: not an
            // event each, as forged sources could flood the log with them.
            Some(rpc::Problem::Refused) => {
                shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                shared.refusal("rpc-allow", || {
                    format!("RPC message from {} refused: not in an allowed network (--rpc-allow)", peer.ip())
                });
            }
        }
        if let Some(reply) = out.reply {
            let _ = sock.send_to(&reply, peer).await;
        }
    }
}

/// A whole NetrSendMessage: for one of our names (else "name not found",
/// as MS-MSRP 3.2.4.3 has it), then taken as a plain message of any form.
fn judge_rpc(shared: &Shared, m: &rpc::Incoming, peer: SocketAddr) -> u32 {
    let cp = shared.cfg.code_page;
    let to = cp.decode(&m.message.to);
    let name = NetbiosName::new(to.trim(), name::MESSENGER);
    let group = name.as_ref().is_ok_and(|n| !shared.names.receives_for(n) && shared.is_our_group(n));
    if !name.as_ref().is_ok_and(|n| shared.names.receives_for(n) || shared.is_our_group(n)) {
        shared.stats.not_for_us.fetch_add(1, Ordering::Relaxed);
        return rpc::status::NAME_NOT_FOUND;
    }
    let text = &m.message.text[..m.message.text.len().min(shared.cfg.max_text)];
    let taken = shared.plain(Received {
        from: cp.decode(&m.message.from),
        to,
        text: cp.decode(text),
        form: Form::Rpc,
        group,
        peer,
        sealed: None,
    });
    if taken { rpc::status::SUCCESS } else { rpc::status::ACCESS_DENIED }
}

/// Descriptors kept for everything but connections: the runtime, the
/// listening and UDP sockets, standard streams, the history file, a resolver.
const RESERVED_FILES: u64 = 32;

/// The number of connections RLIMIT_NOFILE allows: the soft limit is raised
/// (up to the hard one) to make room for `wanted`; if it cannot be, the
/// connection limit is lowered to fit and a warning says how to raise it,
/// so the listener evicts and refuses by its own rules instead of failing
/// to accept.
fn fit_to_open_files(wanted: usize, listeners: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let need = wanted as u64 + RESERVED_FILES + listeners as u64;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return wanted };
    if soft >= need {
        return wanted;
    }
    let raised = need.min(hard);
    let soft = if setrlimit(Resource::RLIMIT_NOFILE, raised, hard).is_ok() { raised } else { soft };
    if soft >= need {
        return wanted;
    }
    let fits = soft.saturating_sub(RESERVED_FILES + listeners as u64).max(4) as usize;
    warn!(
        "the open-file limit is {soft} (hard limit {hard}): at most {fits} connections are held instead of {wanted}; \
         raise it (ulimit -n, or LimitNOFILE= in the unit) or lower --max-connections"
    );
    fits.min(wanted)
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let mut failures = 0u32;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => {
                failures = 0;
                x
            }
            Err(e) => {
                shared.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                // A connection reset before it was accepted is the peer's
                // business; anything else (EMFILE, ENFILE, ENOMEM) repeats
                // if retried at once, so wait, longer each time.
                if matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset) {
                    continue;
                }
                failures = failures.saturating_add(1);
                let pause = limits::accept_backoff(failures);
                shared.refusal("accept", || {
                    format!("cannot accept connections: {e}; trying again in {} ms (raise the open-file limit or lower --max-connections)", pause.as_millis())
                });
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let (kill, killed) = oneshot::channel();
        let admitted = lock(&shared.conns).admit(peer.ip(), Instant::now().into_std(), kill);
        let id = match admitted {
            Admit::Accept(id) => id,
            Admit::Evict { id, victim: _, payload } => {
                // Dropping the victim's sender closes it.
                drop(payload);
                shared.stats.evicted_connections.fetch_add(1, Ordering::Relaxed);
                shared.refusal("evict", || {
                    format!(
                        "connection table full ({} held): closing the longest-idle connection of the busiest address",
                        shared.cfg.max_connections
                    )
                });
                id
            }
            Admit::Refuse(limits::Refusal::PeerLimit) => {
                shared.stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                shared.refusal("peer-limit", || {
                    format!(
                        "connection from {} refused: it already holds {} connections",
                        peer.ip(),
                        shared.cfg.max_per_peer
                    )
                });
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, peer, id, &shared, killed).await {
                shared.malformed(peer, "session", e);
            }
            lock(&shared.conns).close(id);
        });
    }
}

/// A multi-block message being received.
struct Pending {
    from: Vec<u8>,
    to: Vec<u8>,
    text: Vec<u8>,
}

/// How long a reply may take to leave: a peer that does not read must not
/// hold a task (and a slot) forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

async fn write_packet(stream: &mut TcpStream, p: &Packet) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&p.encode())).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("the peer does not read its answers".into()),
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    shared: &Shared,
    mut killed: oneshot::Receiver<()>,
) -> Result<(), String> {
    let mut buf: Vec<u8> = Vec::new();
    let mut pending: Option<Pending> = None;
    let mut chunk = vec![0u8; 8192];
    let times = ConnectionTimes {
        handshake: shared.cfg.handshake_timeout,
        idle: shared.cfg.idle_timeout,
        lifetime: shared.cfg.max_lifetime,
    };
    let start = Instant::now().into_std();
    let mut last_active = None;
    // A session packet can announce up to 128 KiB; nothing legitimate here
    // comes near that.
    const MAX_PACKET: usize = 70 * 1024;
    loop {
        let packet = loop {
            if buf.len() >= 4 {
                let announced = Packet::header_length([buf[0], buf[1], buf[2], buf[3]]);
                if announced > MAX_PACKET {
                    return Err(format!("a {announced}-byte packet"));
                }
            }
            if let Some((p, used)) = Packet::decode(&buf).map_err(|e| e.to_string())? {
                buf.drain(..used);
                break p;
            }
            let deadline = Instant::from_std(times.deadline(start, last_active));
            let n = tokio::select! {
                r = tokio::time::timeout_at(deadline, stream.read(&mut chunk)) => match r {
                    Ok(Ok(0)) => return Ok(()),
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => {
                        shared.stats.timed_out_connections.fetch_add(1, Ordering::Relaxed);
                        debug!(%peer, "connection closed at its deadline");
                        return Ok(());
                    }
                },
                // Evicted to make room: the sender was dropped.
                _ = &mut killed => return Ok(()),
            };
            buf.extend_from_slice(&chunk[..n]);
        };
        if packet.kind != nbss::KEEP_ALIVE {
            let now = Instant::now().into_std();
            last_active = Some(now);
            lock(&shared.conns).touch(id, now);
        }
        match packet.kind {
            nbss::SESSION_REQUEST => {
                let (called, _calling) = packet.session_names().map_err(|e| e.to_string())?;
                let ours = shared.names.receives_for(&called.with_suffix(name::MESSENGER))
                    || called.name() == "*SMBSERVER"
                    || shared.is_our_group(&called);
                let answer = if ours {
                    Packet::new(nbss::POSITIVE_RESPONSE, Vec::new())
                } else {
                    Packet::new(nbss::NEGATIVE_RESPONSE, vec![nbss::CALLED_NAME_NOT_PRESENT])
                };
                write_packet(&mut stream, &answer).await?;
                if !ours {
                    return Ok(());
                }
            }
            nbss::KEEP_ALIVE => {}
            nbss::SESSION_MESSAGE => {
                let req = Smb::decode(&packet.payload).map_err(|e| e.to_string())?;
                let reply = handle_smb(&req, &packet.payload, &mut pending, peer, shared);
                write_packet(&mut stream, &Packet::message(reply.encode())).await?;
            }
            other => return Err(format!("unexpected session packet {other:#04x}")),
        }
    }
}

fn handle_smb(req: &Smb, raw: &[u8], pending: &mut Option<Pending>, peer: SocketAddr, shared: &Shared) -> Smb {
    let ok = |words| Smb::reply_to(req, 0, words);
    let bad = || Smb::reply_to(req, Smb::dos_error(smb::ERRSRV, 0x0001), vec![]);
    // What the sender is told of a message we did not deliver, so that it
    // does not report it delivered.
    let refused = || Smb::reply_to(req, Smb::dos_error(smb::ERRSRV, smb::ERR_ACCESS), vec![]);
    let busy = || Smb::reply_to(req, Smb::dos_error(smb::ERRSRV, smb::ERR_NOROOM), vec![]);
    let cp = shared.cfg.code_page;
    let deliver = |from: &[u8], to: &[u8], text: &[u8]| {
        if !shared.within_rate(peer, from.len() + to.len() + text.len()) {
            return busy();
        }
        let text = &text[..text.len().min(shared.cfg.max_text)];
        let delivered = shared.plain(Received {
            from: cp.decode(from),
            to: cp.decode(to),
            text: cp.decode(text),
            form: Form::Session,
            group: false,
            peer,
            sealed: None,
        });
        if delivered { ok(vec![]) } else { refused() }
    };
    match req.command {
        smb::COM_NEGOTIATE => {
            let dialects = smb::parse_dialects(req);
            let idx = dialects.iter().position(|d| d == "NT LM 0.12").map_or(0xffff, |i| i as u16);
            smb::negotiate_response(req, idx)
        }
        smb::COM_SEND_MESSAGE => match smb::parse_names(req) {
            Ok((from, to, Some(text))) => deliver(&from, &to, &text),
            _ => {
                shared.malformed(peer, "SMBsends", "bad fields");
                bad()
            }
        },
        smb::COM_SEND_START => match smb::parse_names(req) {
            // Refused at the start, as a receiver with Messenger off does,
            // before the sender types out the text.
            Ok((from, _, _)) if shared.requires_seal() => {
                shared.refuse_plain(peer, cp.decode(&from));
                refused()
            }
            Ok((from, to, _)) => {
                *pending = Some(Pending { from, to, text: Vec::new() });
                ok(vec![1])
            }
            Err(e) => {
                shared.malformed(peer, "SMBsendstrt", e);
                bad()
            }
        },
        smb::COM_SEND_TEXT => match (smb::parse_text(req), pending.as_mut()) {
            (Ok(text), Some(p)) => {
                let room = shared.cfg.max_text.saturating_sub(p.text.len());
                p.text.extend_from_slice(&text[..text.len().min(room)]);
                ok(vec![])
            }
            _ => {
                shared.malformed(peer, "SMBsendtxt", "text without a start, or bad fields");
                bad()
            }
        },
        smb::COM_SEND_END => match pending.take() {
            Some(p) => deliver(&p.from, &p.to, &p.text),
            None => {
                shared.malformed(peer, "SMBsendend", "end without a start");
                bad()
            }
        },
        smb::COM_TRANSACTION => match smb::parse_mailslot_write(raw) {
            Ok((slot, data)) if slot.eq_ignore_ascii_case(dgram::ALERTER_SEALED) => {
                if !shared.within_rate(peer, data.len()) {
                    busy()
                } else if shared.sealed(&data, Form::Session, false, peer) {
                    ok(vec![])
                } else {
                    refused()
                }
            }
            Ok((slot, data)) if slot.eq_ignore_ascii_case(dgram::MESSNGR) => match dgram::parse_messenger_body(&data) {
                Ok((from, to, text)) => deliver(&from, &to, &text),
                Err(e) => {
                    shared.malformed(peer, "messenger body", e);
                    bad()
                }
            },
            Ok(_) => bad(),
            Err(e) => {
                shared.malformed(peer, "transaction", e);
                bad()
            }
        },
        _ => bad(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{self, DatagramMessage, SessionMessage, SessionOptions};

    async fn listener(seal: Option<SealPolicy>) -> (Listener, mpsc::Receiver<Event>) {
        let mut cfg = ListenerConfig::new("BOB");
        cfg.workgroup = Some("OFFICE".into());
        cfg.tcp = vec!["127.0.0.1:0".parse().unwrap()];
        cfg.datagram = Some("127.0.0.1:0".parse().unwrap());
        cfg.name_service = Some("127.0.0.1:0".parse().unwrap());
        cfg.seal = seal;
        Listener::bind(cfg).await.unwrap()
    }

    async fn next(rx: &mut mpsc::Receiver<Event>) -> Event {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("an event in time").expect("open")
    }

    #[tokio::test]
    async fn session_and_datagram_messages_arrive() {
        let (l, mut rx) = listener(None).await;
        let text = "é".repeat(300) + "\nline two";
        let m = SessionMessage { from: "ALERTER", to: "BOB", text: &text };
        for session_request in [true, false] {
            let opts = SessionOptions { session_request, ..SessionOptions::default() };
            client::send_session(l.tcp[0], &m, &opts).await.unwrap();
            let Event::Message(r) = next(&mut rx).await else { panic!() };
            assert_eq!((r.from.as_str(), r.to.as_str(), r.form), ("ALERTER", "BOB", Form::Session));
            assert_eq!(r.text, text);
        }
        let d = DatagramMessage { from: "ALERTER", to: "OFFICE", text: "to all", group: true };
        client::send_datagram(l.datagram.unwrap(), &d, CodePage::CP850).await.unwrap();
        let Event::Message(r) = next(&mut rx).await else { panic!() };
        assert!(r.group);
        assert_eq!(r.text, "to all");
    }

    async fn rpc_listener(allow: &str) -> (Listener, mpsc::Receiver<Event>) {
        let mut cfg = ListenerConfig::new("BOB");
        cfg.workgroup = Some("OFFICE".into());
        let allow = if allow.is_empty() { vec![] } else { vec![allow.parse().unwrap()] };
        cfg.rpc = Some(RpcListen { addr: "127.0.0.1:0".parse().unwrap(), allow, limits: rpc::ServerLimits::default() });
        Listener::bind(cfg).await.unwrap()
    }

    #[tokio::test]
    async fn rpc_messages_arrive_and_are_answered() {
        let (l, mut rx) = rpc_listener("127.0.0.0/8").await;
        let addr = l.rpc.unwrap();
        // Long enough for three fragments.
        let text = "ü".repeat(3000) + "\nend";
        let m = client::RpcMessage { from: "OLDNT", to: "bob", text: &text };
        client::send_rpc(addr, &m, &client::RpcOptions::default()).await.unwrap();
        let Event::Message(r) = next(&mut rx).await else { panic!() };
        assert_eq!((r.from.as_str(), r.to.as_str(), r.form, r.group), ("OLDNT", "bob", Form::Rpc, false));
        assert_eq!(r.text, text);
        let m = client::RpcMessage { from: "OLDNT", to: "OFFICE", text: "to the workgroup" };
        client::send_rpc(addr, &m, &client::RpcOptions::default()).await.unwrap();
        let Event::Message(r) = next(&mut rx).await else { panic!() };
        assert!(r.group);
        let m = client::RpcMessage { from: "OLDNT", to: "CAROL", text: "hi" };
        let err = client::send_rpc(addr, &m, &client::RpcOptions::default()).await.unwrap_err();
        assert!(matches!(err, client::SendError::NotThere { .. }), "{err}");
        assert_eq!(l.stats.messages.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn rpc_senders_outside_the_allowed_networks_are_refused() {
        let (l, mut rx) = rpc_listener("10.0.0.0/8").await;
        let m = client::RpcMessage { from: "SPAM", to: "BOB", text: "buy now" };
        let err = client::send_rpc(l.rpc.unwrap(), &m, &client::RpcOptions::default()).await.unwrap_err();
        assert!(matches!(err, client::SendError::Refused(_)), "{err}");
        // Counted, not reported one by one (forged sources could flood that).
        assert_eq!(l.stats.rejected.load(Ordering::Relaxed), 1);
        assert_eq!(l.stats.messages.load(Ordering::Relaxed), 0);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn rpc_requests_are_sent_again_when_unanswered_or_asked_for() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let fake = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            // The first request is lost; the second is answered "nocall"
            // (the server lacks a part); the third gets its result.
            for answer in [None, Some(rpc::ptype::NOCALL), Some(rpc::ptype::RESPONSE)] {
                let (n, peer) = server.recv_from(&mut buf).await.unwrap();
                let req = rpc::Pdu::decode(&buf[..n]).unwrap();
                if let Some(ptype) = answer {
                    let status = (ptype == rpc::ptype::RESPONSE).then_some(0);
                    server.send_to(&rpc::reply(&req.header, ptype, status, 1).encode(), peer).await.unwrap();
                }
            }
        });
        let m = client::RpcMessage { from: "A", to: "B", text: "x" };
        let opts = client::RpcOptions {
            timeout: Duration::from_secs(30),
            retransmit: Duration::from_millis(50),
            ..Default::default()
        };
        client::send_rpc(addr, &m, &opts).await.unwrap();
        fake.await.unwrap();
    }

    #[tokio::test]
    async fn rpc_to_a_closed_port_fails_at_once() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        drop(sock);
        let m = client::RpcMessage { from: "A", to: "B", text: "x" };
        let opts = client::RpcOptions { timeout: Duration::from_secs(30), ..Default::default() };
        let started = std::time::Instant::now();
        let err = client::send_rpc(addr, &m, &opts).await.unwrap_err();
        assert!(matches!(err, client::SendError::Connect { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn wrong_called_names_are_refused() {
        let (l, _rx) = listener(None).await;
        let m = SessionMessage { from: "ALERTER", to: "CAROL", text: "hi" };
        let err = client::send_session(l.tcp[0], &m, &SessionOptions::default()).await.unwrap_err();
        assert!(matches!(err, client::SendError::SessionRefused { .. }), "{err}");
    }

    #[tokio::test]
    async fn answers_name_queries_and_node_status() {
        let (l, _rx) = listener(None).await;
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let q = nbns::Packet::name_query(7, "BOB".parse().unwrap(), false);
        sock.send_to(&q.encode(), l.name_service.unwrap()).await.unwrap();
        let mut buf = [0u8; 600];
        let (n, _) = sock.recv_from(&mut buf).await.unwrap();
        let a = nbns::Packet::decode(&buf[..n]).unwrap();
        assert_eq!(a.answers[0].addresses(), vec![Ipv4Addr::LOCALHOST]);
        sock.send_to(&nbns::Packet::status_query(8).encode(), l.name_service.unwrap()).await.unwrap();
        let (n, _) = sock.recv_from(&mut buf).await.unwrap();
        let s = nbns::Packet::decode(&buf[..n]).unwrap();
        assert_eq!(s.answers[0].status_names()[0].0.to_string(), "BOB<03>");
    }

    /// Asks `to` for `name`; the address answered, if any.
    async fn query(to: SocketAddr, name: &str) -> Option<Ipv4Addr> {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let q = nbns::Packet::name_query(7, name.parse().unwrap(), false);
        sock.send_to(&q.encode(), to).await.unwrap();
        let mut buf = [0u8; 600];
        let (n, _) = tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await.ok()?.unwrap();
        nbns::Packet::decode(&buf[..n]).unwrap().answers.first()?.addresses().first().copied()
    }

    #[tokio::test]
    async fn aliases_are_answered_and_received_for_until_removed() {
        let (l, mut rx) = listener(None).await;
        let ns = l.name_service.unwrap();
        assert_eq!(query(ns, "ALICE").await, None);
        assert!(l.add_alias("alice").unwrap());
        assert!(!l.add_alias("ALICE").unwrap(), "already there");
        assert!(l.add_alias("bad\\name").is_err());
        assert_eq!(l.aliases(), vec!["ALICE"]);
        assert_eq!(query(ns, "ALICE").await, Some(Ipv4Addr::LOCALHOST));
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(&nbns::Packet::status_query(8).encode(), ns).await.unwrap();
        let mut buf = [0u8; 600];
        let (n, _) = sock.recv_from(&mut buf).await.unwrap();
        let names: Vec<String> = nbns::Packet::decode(&buf[..n]).unwrap().answers[0]
            .status_names()
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(names, vec!["BOB<03>", "ALICE<03>"]);
        let m = SessionMessage { from: "ALERTER", to: "ALICE", text: "for alice" };
        client::send_session(l.tcp[0], &m, &SessionOptions::default()).await.unwrap();
        let Event::Message(r) = next(&mut rx).await else { panic!() };
        assert_eq!((r.to.as_str(), r.text.as_str()), ("ALICE", "for alice"));
        let d = DatagramMessage { from: "ALERTER", to: "ALICE", text: "a datagram", group: false };
        client::send_datagram(l.datagram.unwrap(), &d, CodePage::CP850).await.unwrap();
        let Event::Message(r) = next(&mut rx).await else { panic!() };
        assert_eq!(r.text, "a datagram");
        assert!(l.remove_alias("alice").await);
        assert!(!l.remove_alias("alice").await);
        assert_eq!(query(ns, "ALICE").await, None);
        let err = client::send_session(l.tcp[0], &m, &SessionOptions::default()).await.unwrap_err();
        assert!(matches!(err, client::SendError::SessionRefused { .. }), "{err}");
        assert_eq!(query(ns, "BOB").await, Some(Ipv4Addr::LOCALHOST), "the machine's name stays");
    }

    /// A WINS server on loopback: it grants registrations for 40 s after a
    /// WACK, refuses `TAKEN` always and `ONCE` the first time, and reports
    /// each request.
    async fn fake_wins() -> (SocketAddr, mpsc::Receiver<nbns::Packet>) {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut buf = [0u8; 600];
            let mut refused_once = false;
            loop {
                let (n, from) = server.recv_from(&mut buf).await.unwrap();
                let p = nbns::Packet::decode(&buf[..n]).unwrap();
                let name = p.questions[0].name;
                let mut answer = nbns::Packet::query_response(&p, name, Ipv4Addr::LOCALHOST, false);
                answer.flags.opcode = p.flags.opcode;
                if p.flags.opcode == nbns::OP_REGISTRATION {
                    let mut wack = answer.clone();
                    wack.flags.opcode = nbns::OP_WACK;
                    wack.answers[0].ttl = 1;
                    server.send_to(&wack.encode(), from).await.unwrap();
                }
                let once = name.name() == "ONCE" && !std::mem::replace(&mut refused_once, true);
                if name.name() == "TAKEN" || once {
                    answer = nbns::Packet::registration_conflict(&p, name, Ipv4Addr::new(10, 1, 2, 3));
                } else {
                    answer.answers[0].ttl = 40;
                }
                server.send_to(&answer.encode(), from).await.unwrap();
                tx.send(p).await.unwrap();
            }
        });
        (addr, rx)
    }

    async fn next_request(seen: &mut mpsc::Receiver<nbns::Packet>) -> nbns::Packet {
        tokio::time::timeout(Duration::from_secs(5), seen.recv()).await.expect("a request in time").unwrap()
    }

    #[tokio::test]
    async fn names_are_registered_with_wins_and_released_there() {
        let (wins, mut seen) = fake_wins().await;
        let mut cfg = ListenerConfig::new("BOB");
        cfg.name_service = Some("127.0.0.1:0".parse().unwrap());
        cfg.wins = Some(wins);
        let (l, mut rx) = Listener::bind(cfg).await.unwrap();
        let r = next_request(&mut seen).await;
        assert_eq!(
            (r.questions[0].name.to_string(), r.flags.opcode, r.flags.broadcast),
            ("BOB<03>".into(), nbns::OP_REGISTRATION, false)
        );
        assert_eq!(r.additional[0].addresses(), vec![Ipv4Addr::LOCALHOST]);
        l.add_alias("alice").unwrap();
        let r = next_request(&mut seen).await;
        assert_eq!((r.questions[0].name.to_string(), r.flags.opcode), ("ALICE<03>".into(), nbns::OP_REGISTRATION));
        // Refused by the server: a conflict, and the name is not answered.
        l.add_alias("taken").unwrap();
        let r = next_request(&mut seen).await;
        assert_eq!(r.questions[0].name.to_string(), "TAKEN<03>");
        let Event::NameConflict { name, holder } = next(&mut rx).await else { panic!() };
        assert_eq!((name.as_str(), holder), ("TAKEN<03>", IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))));
        assert_eq!(query(l.name_service.unwrap(), "TAKEN").await, None);
        assert_eq!(query(l.name_service.unwrap(), "ALICE").await, Some(Ipv4Addr::LOCALHOST));
        // Released at the server when removed.
        assert!(l.remove_alias("alice").await);
        let r = next_request(&mut seen).await;
        assert_eq!((r.questions[0].name.to_string(), r.flags.opcode), ("ALICE<03>".into(), nbns::OP_RELEASE));
        l.release_names().await;
        let r = next_request(&mut seen).await;
        assert_eq!((r.questions[0].name.to_string(), r.flags.opcode), ("BOB<03>".into(), nbns::OP_RELEASE));
    }

    #[tokio::test(start_paused = true)]
    async fn wins_registrations_are_refreshed_at_half_their_ttl() {
        let (wins, mut seen) = fake_wins().await;
        let mut cfg = ListenerConfig::new("BOB");
        cfg.name_service = Some("127.0.0.1:0".parse().unwrap());
        cfg.wins = Some(wins);
        let (_l, _rx) = Listener::bind(cfg).await.unwrap();
        let first = seen.recv().await.unwrap();
        assert_eq!(first.flags.opcode, nbns::OP_REGISTRATION);
        let at = Instant::now();
        let refresh = seen.recv().await.unwrap();
        assert_eq!(refresh.flags.opcode, nbns::OP_REFRESH);
        // The server granted 40 s: refreshed after 20.
        let waited = at.elapsed();
        assert!(waited >= Duration::from_secs(20) && waited < Duration::from_secs(22), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_alias_refused_once_is_registered_again_later_and_then_only_refreshed() {
        let (wins, mut seen) = fake_wins().await;
        let mut cfg = ListenerConfig::new("BOB");
        cfg.name_service = Some("127.0.0.1:0".parse().unwrap());
        cfg.wins = Some(wins);
        cfg.conflict_retry = Duration::from_secs(30);
        let (l, _rx) = Listener::bind(cfg).await.unwrap();
        assert_eq!(seen.recv().await.unwrap().questions[0].name.to_string(), "BOB<03>");
        l.add_alias("once").unwrap();
        let mut requests = Vec::new();
        let start = Instant::now();
        // Everything about ONCE in the next two minutes, and when.
        while let Ok(Some(p)) = tokio::time::timeout_at(start + Duration::from_secs(120), seen.recv()).await {
            if p.questions[0].name.name() == "ONCE" {
                requests.push((p.flags.opcode, start.elapsed().as_secs()));
            }
        }
        let opcodes: Vec<u8> = requests.iter().map(|r| r.0).collect();
        // Refused, tried again after 30 s and granted for 40 s, then
        // refreshed every 20 s: never registered from scratch again.
        assert_eq!(opcodes[..2], [nbns::OP_REGISTRATION, nbns::OP_REGISTRATION], "{requests:?}");
        assert!(opcodes[2..].iter().all(|o| *o == nbns::OP_REFRESH), "{requests:?}");
        assert!((30..33).contains(&requests[1].1), "{requests:?}");
        assert!(requests.len() >= 5, "{requests:?}");
    }

    #[tokio::test]
    async fn sealed_messages_and_policy() {
        let key = SealKey::from_text(&"11".repeat(32)).unwrap();
        let policy = SealPolicy { require: true, ..SealPolicy::new(key.clone()) };
        let (l, mut rx) = listener(Some(policy)).await;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let m = seal::Sealed::new("ALERTER", "BOB", now, "critical", "disk full");
        let sealed = seal::seal(&key, &m);
        let user_data = smb::mailslot_write(dgram::ALERTER_SEALED, &sealed, false).encode();
        let to: NetbiosName = "BOB".parse().unwrap();
        let send =
            |data: Vec<u8>| client::send_raw_datagram(l.datagram.unwrap(), dgram::DIRECT_UNIQUE, "ALERTER", to, data);
        send(user_data.clone()).await.unwrap();
        let Event::Message(r) = next(&mut rx).await else { panic!() };
        assert_eq!(r.sealed.unwrap().severity, "critical");
        // The same message again: a replay.
        send(user_data).await.unwrap();
        let Event::Rejected { reason, .. } = next(&mut rx).await else { panic!() };
        assert!(reason.starts_with("replayed"), "{reason}");
        // Unsealed, with seals required.
        let d = DatagramMessage { from: "MALLORY", to: "BOB", text: "click here", group: false };
        client::send_datagram(l.datagram.unwrap(), &d, CodePage::CP850).await.unwrap();
        let Event::Rejected { reason, from, .. } = next(&mut rx).await else { panic!() };
        assert_eq!(from.as_deref(), Some("MALLORY"));
        assert!(reason.starts_with("unsealed message refused"), "{reason}");
        // Tampered.
        let mut t = seal::seal(&key, &seal::Sealed::new("ALERTER", "BOB", now, "info", "x"));
        let last = t.len() - 1;
        t[last] ^= 0x55;
        send(smb::mailslot_write(dgram::ALERTER_SEALED, &t, false).encode()).await.unwrap();
        let Event::Rejected { reason, .. } = next(&mut rx).await else { panic!() };
        assert!(reason.starts_with("tampered"), "{reason}");
        // Stale.
        let old = seal::seal(&key, &seal::Sealed::new("ALERTER", "BOB", now - 3600, "info", "x"));
        send(smb::mailslot_write(dgram::ALERTER_SEALED, &old, false).encode()).await.unwrap();
        let Event::Rejected { reason, .. } = next(&mut rx).await else { panic!() };
        assert!(reason.starts_with("stale"), "{reason}");
        // Long sealed messages over a session.
        let long = seal::seal(&key, &seal::Sealed::new("ALERTER", "BOB", now, "warning", &"z".repeat(3000)));
        let smb = smb::mailslot_write(dgram::ALERTER_SEALED, &long, false);
        client::send_session_smb(l.tcp[0], "ALERTER", "BOB", smb, &SessionOptions::default()).await.unwrap();
        let Event::Message(r) = next(&mut rx).await else { panic!() };
        assert_eq!(r.text.len(), 3000);
        assert_eq!(r.form, Form::Session);
    }

    /// A gate refuses on the wire, plain and sealed alike; what it lets
    /// through arrives as ever, and a refused sealed message is not
    /// remembered as seen.
    #[tokio::test]
    async fn a_gate_refuses_before_the_sender_is_answered() {
        let key = SealKey::from_text(&"11".repeat(32)).unwrap();
        let mut cfg = ListenerConfig::new("BOB");
        cfg.tcp = vec!["127.0.0.1:0".parse().unwrap()];
        cfg.seal = Some(SealPolicy::new(key.clone()));
        cfg.gate =
            Some(Gate(Arc::new(
                |m: &Received| {
                    if m.text.starts_with("ok") { Ok(()) } else { Err(format!("not ok: {}", m.text)) }
                },
            )));
        let (l, mut rx) = Listener::bind(cfg).await.unwrap();
        let opts = SessionOptions::default();
        let m = SessionMessage { from: "ALICE", to: "BOB", text: "bad one" };
        let e = client::send_session(l.tcp[0], &m, &opts).await.unwrap_err();
        assert!(matches!(e, client::SendError::Refused(_)), "{e}");
        let Event::Rejected { reason, from, .. } = next(&mut rx).await else { panic!() };
        assert_eq!((reason.as_str(), from.as_deref()), ("not ok: bad one", Some("ALICE")));
        let m = SessionMessage { from: "ALICE", to: "BOB", text: "ok then" };
        client::send_session(l.tcp[0], &m, &opts).await.unwrap();
        let Event::Message(r) = next(&mut rx).await else { panic!() };
        assert_eq!(r.text, "ok then");

        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let sealed = |text: &str| {
            let s = seal::seal(&key, &seal::Sealed::new("ALICE", "BOB", now, "info", text));
            smb::mailslot_write(dgram::ALERTER_SEALED, &s, false)
        };
        let bad = sealed("sealed but bad");
        let e = client::send_session_smb(l.tcp[0], "ALICE", "BOB", bad.clone(), &opts).await.unwrap_err();
        assert!(matches!(e, client::SendError::Refused(_)), "{e}");
        let Event::Rejected { reason, .. } = next(&mut rx).await else { panic!() };
        assert_eq!(reason, "not ok: sealed but bad");
        client::send_session_smb(l.tcp[0], "ALICE", "BOB", sealed("ok sealed"), &opts).await.unwrap();
        let Event::Message(r) = next(&mut rx).await else { panic!() };
        assert_eq!((r.text.as_str(), r.sealed.is_some()), ("ok sealed", true));
        // Refused, it was not remembered: the gate is asked again (and a
        // replay would have said "replayed").
        let _ = client::send_session_smb(l.tcp[0], "ALICE", "BOB", bad, &opts).await;
        let Event::Rejected { reason, .. } = next(&mut rx).await else { panic!() };
        assert_eq!(reason, "not ok: sealed but bad");
    }

    /// 10,000 random and truncated frames on every port, then valid
    /// messages: all still served, the garbage counted.
    #[tokio::test]
    async fn garbage_is_dropped_and_service_goes_on() {
        let (l, mut rx) = listener(None).await;
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let good_dgram = client::build_datagram(
            &DatagramMessage { from: "ALERTER", to: "BOB", text: "a real one", group: false },
            Ipv4Addr::LOCALHOST,
            1,
            CodePage::CP850,
        )
        .unwrap();
        let good_query = nbns::Packet::name_query(3, "BOB".parse().unwrap(), false).encode();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..10_000u64 {
            let r = rand();
            let frame: Vec<u8> = match i % 3 {
                // Truncated real frames, and real frames with a byte flipped.
                0 => good_dgram[..(r as usize % good_dgram.len())].to_vec(),
                1 => {
                    let mut f = good_query.clone();
                    let at = r as usize % f.len();
                    f[at] ^= (r >> 8) as u8 | 1;
                    f
                }
                _ => (0..(r % 600)).map(|_| rand() as u8).collect(),
            };
            let port = if i % 2 == 0 { l.datagram.unwrap() } else { l.name_service.unwrap() };
            sock.send_to(&frame, port).await.unwrap();
            if i % 50 == 0 {
                // And sessions that send junk or stop halfway.
                let mut tcp = TcpStream::connect(l.tcp[0]).await.unwrap();
                let junk: Vec<u8> = (0..(r % 300)).map(|_| rand() as u8).collect();
                let _ = tcp.write_all(&junk).await;
            }
        }
        let m = SessionMessage { from: "ALERTER", to: "BOB", text: "still here" };
        client::send_session(l.tcp[0], &m, &SessionOptions::default()).await.unwrap();
        client::send_datagram(
            l.datagram.unwrap(),
            &DatagramMessage { from: "A", to: "BOB", text: "and here", group: false },
            CodePage::CP850,
        )
        .await
        .unwrap();
        let mut texts = Vec::new();
        while texts.len() < 2 {
            if let Event::Message(r) = next(&mut rx).await
                && r.text != "a real one"
            {
                texts.push(r.text);
            }
        }
        texts.sort();
        assert_eq!(texts, vec!["and here".to_string(), "still here".to_string()]);
        assert!(l.stats.malformed.load(Ordering::Relaxed) > 5_000, "{:?}", l.stats);
    }

    /// A connection from `source` (any 127.x address) to `to`.
    async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from((source, 0))).unwrap();
        sock.connect(to).await.unwrap()
    }

    /// Waits until the listener closes `c` (end of file or reset).
    async fn closed(c: &mut TcpStream) -> bool {
        let mut b = [0u8; 64];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), c.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    const KEEP_ALIVE: [u8; 4] = [0x85, 0, 0, 0];

    /// Sends a keep-alive every 50 ms until the listener closes `c`.
    async fn keep_alive_until_closed(c: &mut TcpStream) {
        let feeder = async {
            while c.write_all(&KEEP_ALIVE).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), feeder).await.expect("closed in time");
    }

    #[tokio::test]
    async fn keepalives_do_not_keep_a_connection_open() {
        let mut cfg = ListenerConfig::new("BOB");
        cfg.tcp = vec!["127.0.0.1:0".parse().unwrap()];
        cfg.handshake_timeout = Duration::from_millis(300);
        cfg.idle_timeout = Duration::from_millis(600);
        let (l, _rx) = Listener::bind(cfg).await.unwrap();
        // Keep-alives only: closed at the handshake deadline however many.
        let mut c = TcpStream::connect(l.tcp[0]).await.unwrap();
        keep_alive_until_closed(&mut c).await;
        assert_eq!(l.stats.timed_out_connections.load(Ordering::Relaxed), 1);
        // After a session request, keep-alives still do not reset the idle time.
        let mut c = TcpStream::connect(l.tcp[0]).await.unwrap();
        let called: NetbiosName = "BOB".parse().unwrap();
        let calling = NetbiosName::new("MALLORY", name::WORKSTATION).unwrap();
        c.write_all(&Packet::session_request(&called, &calling).encode()).await.unwrap();
        let mut answer = [0u8; 4];
        c.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer[0], nbss::POSITIVE_RESPONSE);
        keep_alive_until_closed(&mut c).await;
        assert_eq!(l.stats.timed_out_connections.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_full_listener_evicts_the_busiest_address_and_serves_a_newcomer() {
        let mut cfg = ListenerConfig::new("BOB");
        cfg.tcp = vec!["127.0.0.1:0".parse().unwrap()];
        cfg.max_connections = 8;
        cfg.max_per_peer = 3;
        let (l, mut rx) = Listener::bind(cfg).await.unwrap();
        let to = l.tcp[0];
        // One address: three held, the fourth refused.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(connect_from([127, 0, 0, 2], to).await);
        }
        let mut fourth = connect_from([127, 0, 0, 2], to).await;
        assert!(closed(&mut fourth).await);
        assert_eq!(l.stats.refused_connections.load(Ordering::Relaxed), 1);
        // Five more addresses fill the table (3 + 5 = 8).
        for i in 3..8 {
            held.push(connect_from([127, 0, 0, i], to).await);
        }
        for c in &mut held {
            c.write_all(&KEEP_ALIVE).await.unwrap();
        }
        // A sender from yet another address is served, and one of the
        // busiest address's connections made room.
        let m = SessionMessage { from: "ALICE", to: "BOB", text: "let me in" };
        client::send_session(to, &m, &SessionOptions::default()).await.unwrap();
        let Event::Message(r) = next(&mut rx).await else { panic!() };
        assert_eq!(r.text, "let me in");
        assert_eq!(l.stats.evicted_connections.load(Ordering::Relaxed), 1);
        assert!(closed(&mut held[0]).await, "the longest idle of 127.0.0.2 goes");
    }

    #[tokio::test]
    async fn a_flooding_peer_is_told_to_wait_and_others_are_served() {
        let mut cfg = ListenerConfig::new("BOB");
        cfg.tcp = vec!["127.0.0.1:0".parse().unwrap()];
        cfg.datagram = Some("127.0.0.1:0".parse().unwrap());
        cfg.rate = RateLimit { messages_per_sec: 0.001, message_burst: 3.0, ..RateLimit::DEFAULT };
        let (l, mut rx) = Listener::bind(cfg).await.unwrap();
        let m = SessionMessage { from: "FLOOD", to: "BOB", text: "x" };
        for _ in 0..3 {
            client::send_session(l.tcp[0], &m, &SessionOptions::default()).await.unwrap();
        }
        let err = client::send_session(l.tcp[0], &m, &SessionOptions::default()).await.unwrap_err();
        assert!(matches!(err, client::SendError::Busy(_)), "{err}");
        assert!(err.is_transient());
        // Datagrams from the same address are dropped too.
        let d = DatagramMessage { from: "FLOOD", to: "BOB", text: "y", group: false };
        client::send_datagram(l.datagram.unwrap(), &d, CodePage::CP850).await.unwrap();
        // Another address is not affected.
        let other = UdpSocket::bind("127.0.0.9:0").await.unwrap();
        let d = DatagramMessage { from: "CALM", to: "BOB", text: "z", group: false };
        let frame = client::build_datagram(&d, Ipv4Addr::new(127, 0, 0, 9), 1, CodePage::CP850).unwrap();
        other.send_to(&frame, l.datagram.unwrap()).await.unwrap();
        let mut from = Vec::new();
        for _ in 0..4 {
            let Event::Message(r) = next(&mut rx).await else { panic!() };
            from.push(r.from);
        }
        from.sort();
        assert_eq!(from, ["CALM", "FLOOD", "FLOOD", "FLOOD"]);
        let until = Instant::now() + Duration::from_secs(5);
        while l.stats.rate_limited.load(Ordering::Relaxed) < 2 {
            assert!(Instant::now() < until, "{:?}", l.stats);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(rx.try_recv().is_err(), "nothing over the rate was delivered");
    }

    #[tokio::test]
    async fn long_messages_are_cut_at_max_text() {
        let (l, mut rx) = listener(None).await;
        let text = "a".repeat(10_000);
        let m = SessionMessage { from: "ALERTER", to: "BOB", text: &text };
        client::send_session(l.tcp[0], &m, &SessionOptions::default()).await.unwrap();
        let Event::Message(r) = next(&mut rx).await else { panic!() };
        assert_eq!(r.text.len(), 4096);
    }

    /// Accept errors (here EMFILE: every descriptor taken) are retried
    /// after a growing pause, not in a loop that burns a core; when
    /// descriptors are free again, the listener serves. The descriptors
    /// are taken for the whole process, so this runs in a child process of
    /// its own under any test runner.
    #[test]
    fn accept_errors_back_off() {
        const CHILD: &str = "ALERTER_TEST_ACCEPT_BACKOFF_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "listener::tests::accept_errors_back_off", "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "{all}");
            assert!(all.contains("accept errors:"), "the child ran the test: {all}");
            return;
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let mut cfg = ListenerConfig::new("BOB");
            cfg.tcp = vec!["127.0.0.1:0".parse().unwrap()];
            let (l, mut rx) = Listener::bind(cfg).await.unwrap();
            let to = l.tcp[0];
            // Two client sockets, then every descriptor left taken: the
            // clients connect, and the listener cannot accept them.
            let clients = [tokio::net::TcpSocket::new_v4().unwrap(), tokio::net::TcpSocket::new_v4().unwrap()];
            let null = std::fs::File::open("/dev/null").unwrap();
            let mut hoard = Vec::new();
            while let Ok(fd) = null.try_clone() {
                hoard.push(fd);
            }
            let mut held = Vec::new();
            for c in clients {
                held.push(c.connect(to).await.unwrap());
            }
            let errors = || l.stats.accept_errors.load(Ordering::Relaxed);
            let t0 = Instant::now();
            while errors() == 0 {
                assert!(t0.elapsed() < Duration::from_secs(10), "no accept error");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Retried at once, this would be hundreds of thousands of errors
            // a second; with the pauses (10 ms doubling to 1 s) at most
            // eight fit in 1.3 s, counted from the first.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let n = errors();
            println!("accept errors: {n}");
            assert!((1..=8).contains(&n), "{n} accept errors in a second");
            drop(hoard);
            drop(held);
            let m = SessionMessage { from: "ALERTER", to: "BOB", text: "after the drought" };
            client::send_session(
                to,
                &m,
                &SessionOptions { timeout: Duration::from_secs(10), ..SessionOptions::default() },
            )
            .await
            .unwrap();
            loop {
                if let Event::Message(r) = next(&mut rx).await {
                    assert_eq!(r.text, "after the drought");
                    break;
                }
            }
        });
    }
}
