//! Receiving: the session form on TCP (139, 445, or any port), the
//! datagram form on UDP 138, and the name service on UDP 137 (registering
//! `NAME<03>`, answering name queries and node status).
//!
//! Name answers carry the address of the interface the query came in on
//! (IP_PKTINFO), registrations go out on every interface (see [`crate::iface`]),
//! and a listener bound to one address also receives that interface's
//! broadcasts, as nmbd does with `bind interfaces only`.
//!
//! Every input is untrusted: a malformed packet is dropped and counted,
//! never a crash, and a connection that misbehaves is closed. Limits bound
//! what one peer can make the listener hold: message size, connection
//! count, idle time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::client::local_ip_towards;
use crate::dgram::{self, Datagram};
use crate::iface::{self, Broadcast, Interface};
use crate::name::{self, NetbiosName};
use crate::nbns;
use crate::nbss::{self, Packet};
use crate::oem::CodePage;
use crate::seal::{self, ReplayGuard, SealError, SealKey};
use crate::smb::{self, Smb};

/// How sealed messages are treated.
#[derive(Debug, Clone)]
pub struct SealPolicy {
    pub key: SealKey,
    /// Refuse anything unsealed.
    pub require: bool,
    /// How far a message's time may be from ours.
    pub window: Duration,
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
    /// Register `NAME<03>` by broadcast, on the interfaces of `broadcast`.
    pub register: bool,
    /// Where registrations are broadcast: every interface by default.
    pub broadcast: Broadcast,
    pub code_page: CodePage,
    pub seal: Option<SealPolicy>,
    /// Longest text kept from one message.
    pub max_text: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
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
            broadcast: Broadcast::AllInterfaces,
            code_page: CodePage::CP850,
            seal: None,
            max_text: 64 * 1024,
            idle_timeout: Duration::from_secs(30),
            max_connections: 256,
        }
    }
}

/// Which wire form a message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Session,
    Datagram,
}

/// What a verified seal said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealInfo {
    pub id: String,
    pub severity: String,
    pub time: i64,
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
}

/// A running listener; dropping it stops it.
#[derive(Debug)]
pub struct Listener {
    tasks: Vec<JoinHandle<()>>,
    pub stats: Arc<Stats>,
    /// The TCP addresses actually bound (ports resolved).
    pub tcp: Vec<SocketAddr>,
    pub datagram: Option<SocketAddr>,
    pub name_service: Option<SocketAddr>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
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
    our_name: NetbiosName,
    tx: mpsc::Sender<Event>,
    stats: Arc<Stats>,
    replay: Mutex<ReplayGuard>,
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

    fn is_our_group(&self, n: &NetbiosName) -> bool {
        n.name() == "*" || self.cfg.workgroup.as_deref().is_some_and(|w| w.eq_ignore_ascii_case(&n.name()))
    }

    /// A plain (unsealed) message: delivered, unless seals are required.
    fn plain(&self, m: Received) {
        if self.cfg.seal.as_ref().is_some_and(|s| s.require) {
            self.emit(Event::Rejected {
                peer: m.peer,
                from: Some(m.from),
                reason: "unsealed message refused: this receiver requires sealed messages".into(),
            });
            return;
        }
        self.emit(Event::Message(m));
    }

    /// A sealed message: opened and checked, or rejected with the reason.
    fn sealed(&self, bytes: &[u8], form: Form, group: bool, peer: SocketAddr) {
        let Some(policy) = &self.cfg.seal else {
            self.emit(Event::Rejected {
                peer,
                from: None,
                reason: "sealed message, but no workgroup key is configured here".into(),
            });
            return;
        };
        let reject =
            |reason: SealError, from: Option<String>| Event::Rejected { peer, from, reason: reason.to_string() };
        let m = match seal::open(&policy.key, bytes) {
            Ok(m) => m,
            Err(e) => return self.emit(reject(e, None)),
        };
        let to = NetbiosName::new(&m.to, name::MESSENGER);
        let for_us = m.to.eq_ignore_ascii_case(&self.cfg.name) || to.is_ok_and(|n| self.is_our_group(&n));
        if !for_us {
            return self.emit(reject(SealError::WrongRecipient(m.to.clone()), Some(m.from)));
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        if let Err(e) = self.replay.lock().unwrap_or_else(|p| p.into_inner()).check(&m, now) {
            return self.emit(reject(e, Some(m.from)));
        }
        self.emit(Event::Message(Received {
            from: m.from,
            to: m.to,
            text: m.text,
            form,
            group,
            peer,
            sealed: Some(SealInfo { id: m.id, severity: m.severity, time: m.time }),
        }));
    }
}

impl Listener {
    /// Binds everything configured and starts serving. Events arrive on the
    /// returned channel.
    pub async fn bind(cfg: ListenerConfig) -> Result<(Listener, mpsc::Receiver<Event>), BindError> {
        let (tx, rx) = mpsc::channel(1024);
        let stats = Arc::new(Stats::default());
        let our_name = NetbiosName::new(&cfg.name, name::MESSENGER).map_err(|e| BindError {
            what: "name",
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
            hint: "",
        })?;
        let window = cfg.seal.as_ref().map_or(Duration::from_secs(300), |s| s.window);
        let shared =
            Arc::new(Shared { cfg, our_name, tx, stats: stats.clone(), replay: Mutex::new(ReplayGuard::new(window)) });
        let mut listener = Listener { tasks: Vec::new(), stats, tcp: Vec::new(), datagram: None, name_service: None };
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
        if let Some(addr) = shared.cfg.name_service {
            let s = UdpSocket::bind(addr).await.map_err(|e| bind_error("UDP", addr, e))?;
            let _ = s.set_broadcast(true);
            let bound = s.local_addr().unwrap_or(addr);
            listener.name_service = Some(bound);
            let s = Arc::new(s);
            if shared.cfg.register {
                listener.tasks.push(tokio::spawn(register(s.clone(), shared.our_name, shared.cfg.broadcast.clone())));
            }
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

/// B-node registration: three rounds a quarter second apart, as RFC 1002
/// describes and nmbd does, each round on every interface with that
/// interface's own address; objections arrive at the name service socket
/// and are reported there.
async fn register(sock: Arc<UdpSocket>, name: NetbiosName, broadcast: Broadcast) {
    let targets = match broadcast.targets() {
        Ok(t) => t,
        Err(e) => {
            warn!("{name} is not registered by broadcast (name queries are still answered): {e}");
            return;
        }
    };
    let mut live: Vec<Interface> = targets;
    for _ in 0..3 {
        let mut still = Vec::new();
        for i in live {
            let packet = nbns::Packet::registration(0x4e42, name, i.ip, false).encode();
            match sock.send_to(&packet, (i.broadcast, 137)).await {
                Ok(_) => still.push(i),
                Err(e) => warn!("cannot broadcast the registration of {name} on {i}: {e}"),
            }
        }
        live = still;
        if live.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let on: Vec<String> = live.iter().map(|i| format!("{} {}", i.name, i.ip)).collect();
    debug!("registered {name} on {}", on.join(", "));
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
async fn answer_address(local: Option<Ipv4Addr>, peer: SocketAddr) -> Option<Ipv4Addr> {
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
        let Some(our_ip) = answer_address(local, peer).await else { continue };
        let reply = match (p.flags.response, p.flags.opcode, p.questions.first()) {
            (false, nbns::OP_QUERY, Some(q)) if q.qtype == nbns::TYPE_NBSTAT => {
                Some(nbns::Packet::status_response(&p, &[(shared.our_name, false)]))
            }
            (false, nbns::OP_QUERY, Some(q)) if q.qtype == nbns::TYPE_NB && q.name == shared.our_name => {
                shared.stats.name_queries_answered.fetch_add(1, Ordering::Relaxed);
                Some(nbns::Packet::query_response(&p, shared.our_name, our_ip, false))
            }
            (false, nbns::OP_REGISTRATION | nbns::OP_REFRESH, Some(q)) if q.name == shared.our_name => {
                // Defend the name, unless it is our own broadcast coming back.
                let theirs = p.additional.iter().flat_map(|r| r.addresses()).next();
                let ours =
                    |ip: Ipv4Addr| ip == our_ip || iface::addresses().is_ok_and(|all| all.iter().any(|a| a.ip == ip));
                match theirs {
                    Some(ip) if !ours(ip) => Some(nbns::Packet::registration_conflict(&p, shared.our_name, our_ip)),
                    _ => None,
                }
            }
            (true, nbns::OP_REGISTRATION, _) if p.flags.rcode == nbns::RCODE_ACT_ERR => {
                let holder = p.answers.iter().flat_map(|r| r.addresses()).next().map_or(peer.ip(), IpAddr::V4);
                warn!("the name {} is already in use by {holder}", shared.our_name);
                shared.emit(Event::NameConflict { name: shared.our_name.to_string(), holder });
                None
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
        let to_us = d.kind == dgram::DIRECT_UNIQUE && d.destination == shared.our_name;
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

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let limit = Arc::new(Semaphore::new(shared.cfg.max_connections));
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            debug!(%peer, "too many connections; closing");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_connection(stream, peer, &shared).await {
                shared.malformed(peer, "session", e);
            }
        });
    }
}

/// A multi-block message being received.
struct Pending {
    from: Vec<u8>,
    to: Vec<u8>,
    text: Vec<u8>,
}

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) -> Result<(), String> {
    let mut buf: Vec<u8> = Vec::new();
    let mut pending: Option<Pending> = None;
    let mut chunk = vec![0u8; 8192];
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
            let n = match tokio::time::timeout(shared.cfg.idle_timeout, stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Err(_) => return Ok(()),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(e.to_string()),
            };
            buf.extend_from_slice(&chunk[..n]);
        };
        match packet.kind {
            nbss::SESSION_REQUEST => {
                let (called, _calling) = packet.session_names().map_err(|e| e.to_string())?;
                let ours = called.name().eq_ignore_ascii_case(&shared.cfg.name)
                    || called.name() == "*SMBSERVER"
                    || shared.is_our_group(&called);
                let answer = if ours {
                    Packet::new(nbss::POSITIVE_RESPONSE, Vec::new())
                } else {
                    Packet::new(nbss::NEGATIVE_RESPONSE, vec![nbss::CALLED_NAME_NOT_PRESENT])
                };
                stream.write_all(&answer.encode()).await.map_err(|e| e.to_string())?;
                if !ours {
                    return Ok(());
                }
            }
            nbss::KEEP_ALIVE => {}
            nbss::SESSION_MESSAGE => {
                let req = Smb::decode(&packet.payload).map_err(|e| e.to_string())?;
                let reply = handle_smb(&req, &packet.payload, &mut pending, peer, shared);
                stream.write_all(&Packet::message(reply.encode()).encode()).await.map_err(|e| e.to_string())?;
            }
            other => return Err(format!("unexpected session packet {other:#04x}")),
        }
    }
}

fn handle_smb(req: &Smb, raw: &[u8], pending: &mut Option<Pending>, peer: SocketAddr, shared: &Shared) -> Smb {
    let ok = |words| Smb::reply_to(req, 0, words);
    let bad = || Smb::reply_to(req, Smb::dos_error(smb::ERRSRV, 0x0001), vec![]);
    let cp = shared.cfg.code_page;
    let deliver = |from: &[u8], to: &[u8], text: &[u8]| {
        let mut text = text.to_vec();
        text.truncate(shared.cfg.max_text);
        shared.plain(Received {
            from: cp.decode(from),
            to: cp.decode(to),
            text: cp.decode(&text),
            form: Form::Session,
            group: false,
            peer,
            sealed: None,
        });
    };
    match req.command {
        smb::COM_NEGOTIATE => {
            let dialects = smb::parse_dialects(req);
            let idx = dialects.iter().position(|d| d == "NT LM 0.12").map_or(0xffff, |i| i as u16);
            smb::negotiate_response(req, idx)
        }
        smb::COM_SEND_MESSAGE => match smb::parse_names(req) {
            Ok((from, to, Some(text))) => {
                deliver(&from, &to, &text);
                ok(vec![])
            }
            _ => {
                shared.malformed(peer, "SMBsends", "bad fields");
                bad()
            }
        },
        smb::COM_SEND_START => match smb::parse_names(req) {
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
            Some(p) => {
                deliver(&p.from, &p.to, &p.text);
                ok(vec![])
            }
            None => {
                shared.malformed(peer, "SMBsendend", "end without a start");
                bad()
            }
        },
        smb::COM_TRANSACTION => match smb::parse_mailslot_write(raw) {
            Ok((slot, data)) if slot.eq_ignore_ascii_case(dgram::ALERTER_SEALED) => {
                shared.sealed(&data, Form::Session, false, peer);
                ok(vec![])
            }
            Ok((slot, data)) if slot.eq_ignore_ascii_case(dgram::MESSNGR) => match dgram::parse_messenger_body(&data) {
                Ok((from, to, text)) => {
                    deliver(&from, &to, &text);
                    ok(vec![])
                }
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

    #[tokio::test]
    async fn sealed_messages_and_policy() {
        let key = SealKey::from_text(&"11".repeat(32)).unwrap();
        let policy = SealPolicy { key: key.clone(), require: true, window: Duration::from_secs(300) };
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
}
