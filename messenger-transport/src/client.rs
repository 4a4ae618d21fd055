//! Sending: the session form (`net send`, `smbclient -M`) over TCP 139 or
//! 445, the datagram form (WinPopup) over UDP 138, and the RPC form
//! (NetrSendMessage, DCE/RPC connectionless) over UDP 135.
//!
//! The session sender uses SMBsendstrt / SMBsendtxt / SMBsendend, which
//! Samba accepts without a negotiate, and splits the text into blocks of at
//! most 128 bytes *after* converting it to the OEM code page (smbclient
//! splits before, and garbles a character that straddles a block).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::dgram::{self, Datagram};
use crate::iface::{Interface, NoBroadcast};
use crate::name::{self, NetbiosName};
use crate::nbss::{self, Packet};
use crate::oem::CodePage;
use crate::resolve::NotFound;
use crate::rpc;
use crate::smb::{self, Smb};

/// Why a message was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    NameNotFound(NotFound),
    #[error("{0}")]
    NoBroadcast(#[from] NoBroadcast),
    #[error("the broadcast went out on no interface: {0}")]
    Broadcast(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("{addr} refused the session for {name}: {reason}")]
    SessionRefused { addr: SocketAddr, name: String, reason: String },
    #[error("{0} is not accepting messages (its Messenger service is off)")]
    NotAccepting(String),
    #[error("{0} refused the message (it accepts only sealed messages, or none from this sender)")]
    Refused(String),
    #[error("{0} is busy: it takes no more messages from this sender for now (its rate limit)")]
    Busy(String),
    #[error("no answer from {0} in time")]
    Timeout(SocketAddr),
    #[error("protocol error talking to {addr}: {detail}")]
    Protocol { addr: SocketAddr, detail: String },
    #[error("network error talking to {addr}: {source}")]
    Io { addr: SocketAddr, source: std::io::Error },
    #[error("bad name: {0}")]
    BadName(String),
    #[error("{addr} does not receive for {name}: the name is not there")]
    NotThere { addr: SocketAddr, name: String },
}

impl SendError {
    /// Worth trying again later (the machine may be off, the network down).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SendError::NameNotFound(_)
                | SendError::Connect { .. }
                | SendError::Timeout(_)
                | SendError::Busy(_)
                | SendError::Io { .. }
                | SendError::Broadcast(_)
                // An interface may come up (DHCP, a cable); turned off or
                // misnamed in the config, it will not.
                | SendError::NoBroadcast(NoBroadcast::NoneUp { .. } | NoBroadcast::Read(_))
        )
    }
}

/// A message in the session form.
#[derive(Debug, Clone)]
pub struct SessionMessage<'a> {
    /// Sender name (the SMB "From", and our calling NetBIOS name).
    pub from: &'a str,
    /// Recipient name (the SMB "To", and the called name `TO<03>`).
    pub to: &'a str,
    pub text: &'a str,
}

/// How to send.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub code_page: CodePage,
    /// Per step (connect, each reply).
    pub timeout: Duration,
    /// Send a NetBIOS session request first: needed on 139, not on 445.
    pub session_request: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { code_page: CodePage::CP850, timeout: Duration::from_secs(5), session_request: true }
    }
}

struct Conn {
    stream: TcpStream,
    addr: SocketAddr,
    timeout: Duration,
    buf: Vec<u8>,
}

impl Conn {
    async fn send(&mut self, p: &Packet) -> Result<(), SendError> {
        let bytes = p.encode();
        match tokio::time::timeout(self.timeout, self.stream.write_all(&bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(SendError::Io { addr: self.addr, source }),
            Err(_) => Err(SendError::Timeout(self.addr)),
        }
    }

    async fn recv(&mut self) -> Result<Packet, SendError> {
        loop {
            match Packet::decode(&self.buf) {
                Ok(Some((p, used))) => {
                    self.buf.drain(..used);
                    if p.kind == nbss::KEEP_ALIVE {
                        continue;
                    }
                    return Ok(p);
                }
                Ok(None) => {}
                Err(e) => return Err(SendError::Protocol { addr: self.addr, detail: e.to_string() }),
            }
            let mut chunk = [0u8; 4096];
            let n = match tokio::time::timeout(self.timeout, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) => {
                    return Err(SendError::Protocol { addr: self.addr, detail: "the connection was closed".into() });
                }
                Ok(Ok(n)) => n,
                Ok(Err(source)) => return Err(SendError::Io { addr: self.addr, source }),
                Err(_) => return Err(SendError::Timeout(self.addr)),
            };
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn exchange(&mut self, req: Smb, to: &str) -> Result<Smb, SendError> {
        self.send(&Packet::message(req.encode())).await?;
        let reply = self.recv().await?;
        let smb =
            Smb::decode(&reply.payload).map_err(|e| SendError::Protocol { addr: self.addr, detail: e.to_string() })?;
        if smb.command != req.command {
            return Err(SendError::Protocol {
                addr: self.addr,
                detail: format!("reply to {:#04x} for request {:#04x}", smb.command, req.command),
            });
        }
        if smb.is_not_accepting() {
            return Err(SendError::NotAccepting(to.to_string()));
        }
        match smb.dos_status() {
            Some((smb::ERRSRV, smb::ERR_ACCESS)) => return Err(SendError::Refused(to.to_string())),
            Some((smb::ERRSRV, smb::ERR_NOROOM)) => return Err(SendError::Busy(to.to_string())),
            _ => {}
        }
        if smb.is_error() {
            return Err(SendError::Protocol {
                addr: self.addr,
                detail: format!("the server answered status {:#010x}", smb.status),
            });
        }
        Ok(smb)
    }
}

/// Delivers one message in the session form to `addr`.
pub async fn send_session(addr: SocketAddr, m: &SessionMessage<'_>, opts: &SessionOptions) -> Result<(), SendError> {
    let called = NetbiosName::new(m.to, name::MESSENGER).map_err(|e| SendError::BadName(e.to_string()))?;
    let calling = NetbiosName::new(m.from, name::WORKSTATION).map_err(|e| SendError::BadName(e.to_string()))?;
    let stream = match tokio::time::timeout(opts.timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(SendError::Connect { addr, source }),
        Err(_) => return Err(SendError::Timeout(addr)),
    };
    let _ = stream.set_nodelay(true);
    let mut c = Conn { stream, addr, timeout: opts.timeout, buf: Vec::new() };
    if opts.session_request {
        c.send(&Packet::session_request(&called, &calling)).await?;
        let answer = c.recv().await?;
        match answer.kind {
            nbss::POSITIVE_RESPONSE => {}
            nbss::NEGATIVE_RESPONSE => {
                let reason = match answer.payload.first() {
                    Some(&nbss::CALLED_NAME_NOT_PRESENT) | Some(0x80) => "the name is not there".to_string(),
                    Some(code) => format!("error {code:#04x}"),
                    None => "no reason".to_string(),
                };
                return Err(SendError::SessionRefused { addr, name: called.to_string(), reason });
            }
            other => {
                return Err(SendError::Protocol { addr, detail: format!("session answer {other:#04x}") });
            }
        }
    }
    let from = opts.code_page.encode(m.from);
    let to = opts.code_page.encode(m.to);
    let text = opts.code_page.encode(m.text);
    let start = c.exchange(smb::send_start(&from, &to), m.to).await?;
    // The spec answers with the message group id; Samba with no words.
    let group = start.words.first().copied().unwrap_or(0);
    for block in text.chunks(smb::MAX_BLOCK) {
        c.exchange(smb::send_text(group, block), m.to).await?;
    }
    c.exchange(smb::send_end(group), m.to).await?;
    let _ = c.stream.shutdown().await;
    Ok(())
}

/// A message in the datagram form.
#[derive(Debug, Clone)]
pub struct DatagramMessage<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub text: &'a str,
    /// A group destination (a workgroup broadcast) rather than one machine.
    pub group: bool,
}

/// Builds the datagram (for tests and for senders with their own socket).
pub fn build_datagram(
    m: &DatagramMessage<'_>,
    source_ip: Ipv4Addr,
    id: u16,
    code_page: CodePage,
) -> Result<Vec<u8>, SendError> {
    let source = NetbiosName::new(m.from, name::WORKSTATION).map_err(|e| SendError::BadName(e.to_string()))?;
    let dest = NetbiosName::new(m.to, name::MESSENGER).map_err(|e| SendError::BadName(e.to_string()))?;
    let from = code_page.encode(m.from);
    let to = code_page.encode(m.to);
    let max = dgram::max_text(dgram::MESSNGR, from.len(), to.len());
    let text = crate::oem::truncate_with_marker(code_page.encode(m.text), max, b" [...]");
    let body = dgram::messenger_body(&from, &to, &text);
    let kind = if m.group { dgram::DIRECT_GROUP } else { dgram::DIRECT_UNIQUE };
    Ok(Datagram::new(kind, id, source_ip, source, dest, dgram::messenger_user_data(dgram::MESSNGR, &body)).encode())
}

/// Where a broadcast went: a datagram is never confirmed, so this is all
/// a sender can know.
#[derive(Debug, Clone, Default)]
pub struct BroadcastReport {
    pub sent: Vec<Interface>,
    /// Interfaces it could not go out on, and why.
    pub failed: Vec<(Interface, String)>,
}

impl std::fmt::Display for BroadcastReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.sent.len();
        let on = self.sent.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        write!(f, "sent, unconfirmed: broadcast on {n} interface{} ({on})", if n == 1 { "" } else { "s" })?;
        for (i, why) in &self.failed {
            write!(f, "; not on {i}: {why}")?;
        }
        Ok(())
    }
}

/// Sends the bytes `build(source ip)` makes to each interface's broadcast
/// address, from a socket bound to that interface's address so the
/// datagram's source (in the IP header and in the NetBIOS header) is the
/// interface's own. Fails only when it went out nowhere.
async fn broadcast_bytes(
    targets: &[Interface],
    port: u16,
    build: impl Fn(Ipv4Addr) -> Vec<u8>,
) -> Result<BroadcastReport, SendError> {
    let mut report = BroadcastReport::default();
    for i in targets {
        let to = SocketAddr::new(IpAddr::V4(i.broadcast), port);
        let sent = async {
            let sock = UdpSocket::bind((i.ip, 0)).await?;
            sock.set_broadcast(true)?;
            sock.send_to(&build(i.ip), to).await
        };
        match sent.await {
            Ok(_) => report.sent.push(i.clone()),
            Err(e) => report.failed.push((i.clone(), format!("cannot send to {to}: {e}"))),
        }
    }
    if report.sent.is_empty() {
        let why: Vec<String> = report.failed.iter().map(|(i, e)| format!("{}: {e}", i.name)).collect();
        return Err(SendError::Broadcast(why.join("; ")));
    }
    Ok(report)
}

/// Broadcasts one WinPopup datagram on each of `targets` (a workgroup
/// message, `DIRECT_GROUP` when `m.group`).
pub async fn broadcast_datagram(
    targets: &[Interface],
    port: u16,
    m: &DatagramMessage<'_>,
    code_page: CodePage,
) -> Result<BroadcastReport, SendError> {
    let id = datagram_id();
    // Check the names once, before anything is sent.
    build_datagram(m, Ipv4Addr::UNSPECIFIED, id, code_page)?;
    broadcast_bytes(targets, port, |ip| build_datagram(m, ip, id, code_page).unwrap_or_default()).await
}

/// Broadcasts raw datagram user data (a sealed message) on each of `targets`.
pub async fn broadcast_raw_datagram(
    targets: &[Interface],
    port: u16,
    kind: u8,
    from: &str,
    to: NetbiosName,
    user_data: Vec<u8>,
) -> Result<BroadcastReport, SendError> {
    let source = NetbiosName::new(from, name::WORKSTATION).map_err(|e| SendError::BadName(e.to_string()))?;
    let id = datagram_id();
    broadcast_bytes(targets, port, |ip| Datagram::new(kind, id, ip, source, to, user_data.clone()).encode()).await
}

/// Sends one WinPopup datagram to `addr` (a machine, or a broadcast address).
pub async fn send_datagram(addr: SocketAddr, m: &DatagramMessage<'_>, code_page: CodePage) -> Result<(), SendError> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.map_err(|source| SendError::Io { addr, source })?;
    sock.set_broadcast(true).map_err(|source| SendError::Io { addr, source })?;
    let source_ip = match local_ip_towards(addr.ip()).await {
        Some(IpAddr::V4(ip)) => ip,
        _ => Ipv4Addr::UNSPECIFIED,
    };
    let bytes = build_datagram(m, source_ip, datagram_id(), code_page)?;
    sock.send_to(&bytes, addr).await.map_err(|source| SendError::Io { addr, source })?;
    Ok(())
}

/// Sends raw datagram user data (e.g. a sealed message) as one datagram.
pub async fn send_raw_datagram(
    addr: SocketAddr,
    kind: u8,
    from: &str,
    to: NetbiosName,
    user_data: Vec<u8>,
) -> Result<(), SendError> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.map_err(|source| SendError::Io { addr, source })?;
    sock.set_broadcast(true).map_err(|source| SendError::Io { addr, source })?;
    let source_ip = match local_ip_towards(addr.ip()).await {
        Some(IpAddr::V4(ip)) => ip,
        _ => Ipv4Addr::UNSPECIFIED,
    };
    let source = NetbiosName::new(from, name::WORKSTATION).map_err(|e| SendError::BadName(e.to_string()))?;
    let d = Datagram::new(kind, datagram_id(), source_ip, source, to, user_data);
    sock.send_to(&d.encode(), addr).await.map_err(|source| SendError::Io { addr, source })?;
    Ok(())
}

/// Sends an SMB message (e.g. a sealed mailslot write) over a session,
/// for messages too long for a datagram.
pub async fn send_session_smb(
    addr: SocketAddr,
    from: &str,
    to: &str,
    smb: Smb,
    opts: &SessionOptions,
) -> Result<(), SendError> {
    let called = NetbiosName::new(to, name::MESSENGER).map_err(|e| SendError::BadName(e.to_string()))?;
    let calling = NetbiosName::new(from, name::WORKSTATION).map_err(|e| SendError::BadName(e.to_string()))?;
    let stream = match tokio::time::timeout(opts.timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(SendError::Connect { addr, source }),
        Err(_) => return Err(SendError::Timeout(addr)),
    };
    let mut c = Conn { stream, addr, timeout: opts.timeout, buf: Vec::new() };
    if opts.session_request {
        c.send(&Packet::session_request(&called, &calling)).await?;
        let answer = c.recv().await?;
        if answer.kind != nbss::POSITIVE_RESPONSE {
            return Err(SendError::SessionRefused {
                addr,
                name: called.to_string(),
                reason: format!("answer {:#04x}", answer.kind),
            });
        }
    }
    c.exchange(smb, to).await?;
    let _ = c.stream.shutdown().await;
    Ok(())
}

/// A message in the RPC form.
#[derive(Debug, Clone)]
pub struct RpcMessage<'a> {
    /// NetrSendMessage's From.
    pub from: &'a str,
    /// Its To: the name the receiver must hold.
    pub to: &'a str,
    pub text: &'a str,
}

/// How to send in the RPC form.
#[derive(Debug, Clone)]
pub struct RpcOptions {
    pub code_page: CodePage,
    /// For the whole call, retransmissions included.
    pub timeout: Duration,
    /// The first wait for an answer; each retransmission doubles it.
    pub retransmit: Duration,
    /// Body bytes per fragment.
    pub max_fragment: usize,
}

impl Default for RpcOptions {
    fn default() -> Self {
        RpcOptions {
            code_page: CodePage::CP850,
            timeout: Duration::from_secs(5),
            retransmit: Duration::from_millis(500),
            max_fragment: rpc::MAX_FRAGMENT_BODY,
        }
    }
}

/// Delivers one message in the RPC form to `addr` (UDP 135): the request's
/// fragments, sent again when no answer comes (each wait twice the last)
/// or when the server says it lacks some of them, until a result or the
/// timeout. An answer of success is a confirmed delivery.
pub async fn send_rpc(addr: SocketAddr, m: &RpcMessage<'_>, opts: &RpcOptions) -> Result<(), SendError> {
    let io = |source| SendError::Io { addr, source };
    let cp = opts.code_page;
    let body = rpc::SendMessage { from: cp.encode(m.from), to: cp.encode(m.to), text: cp.encode(m.text) }
        .encode(rpc::Drep::LITTLE);
    let call = rpc::Call::fresh();
    let mut pdus = rpc::request(call, &body, opts.max_fragment);
    if pdus.len() > usize::from(u16::MAX) {
        return Err(SendError::Protocol { addr, detail: "the message is too long for the RPC form".into() });
    }
    let unspecified: SocketAddr =
        if addr.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { "[::]:0".parse().unwrap_or(addr) };
    let sock = UdpSocket::bind(unspecified).await.map_err(io)?;
    // Connected: only the server's datagrams arrive, and a closed port's
    // ICMP error is reported to us.
    sock.connect(addr).await.map_err(|source| SendError::Connect { addr, source })?;
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let mut wait = opts.retransmit;
    let mut serial = 0u16;
    let mut buf = vec![0u8; 2048];
    'send: loop {
        if tokio::time::Instant::now() >= deadline {
            return Err(SendError::Timeout(addr));
        }
        for p in &mut pdus {
            p.header.serial = serial;
            serial = serial.wrapping_add(1);
            match sock.send(&p.encode()).await {
                Ok(_) => {}
                Err(source) if source.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(SendError::Connect { addr, source });
                }
                Err(source) => return Err(io(source)),
            }
        }
        let sent_at = tokio::time::Instant::now();
        let until = (sent_at + wait).min(deadline);
        wait = wait.saturating_mul(2);
        loop {
            let n = match tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
                Err(_) => continue 'send,
                Ok(Err(source)) if source.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(SendError::Connect { addr, source });
                }
                Ok(Err(source)) => return Err(io(source)),
                Ok(Ok(n)) => n,
            };
            // Whatever does not read as an answer to this call (a stray or
            // forged datagram) is let go: it cannot end the call.
            let Some(answer) = rpc::Pdu::decode(&buf[..n]).ok().and_then(|p| rpc::answer(&p, call).ok().flatten())
            else {
                continue;
            };
            let protocol = |detail: String| SendError::Protocol { addr, detail };
            let status = match answer {
                rpc::Answer::Ignore | rpc::Answer::Working => continue,
                // The server lacks part of it: sent again, but not more
                // often than half the first wait (a nocall per datagram
                // must not make us a flood).
                rpc::Answer::Nocall if sent_at.elapsed() >= opts.retransmit / 2 => continue 'send,
                rpc::Answer::Nocall => continue,
                rpc::Answer::Status(st) => st,
                rpc::Answer::Reject(rpc::status::UNKNOWN_INTERFACE) => {
                    return Err(SendError::NotAccepting(m.to.to_string()));
                }
                rpc::Answer::Reject(st) => return Err(protocol(format!("the call was rejected ({st:#010x})"))),
                rpc::Answer::Fault(st) => return Err(protocol(format!("the call failed ({st:#010x})"))),
            };
            // The answer is in: the server may forget it (C706's ack).
            let ack = rpc::Pdu { header: rpc::Header::new(rpc::ptype::ACK, call), body: Vec::new() };
            let _ = sock.send(&ack.encode()).await;
            return match status {
                rpc::status::SUCCESS => Ok(()),
                rpc::status::ACCESS_DENIED => Err(SendError::Refused(m.to.to_string())),
                rpc::status::NAME_NOT_FOUND => {
                    Err(SendError::NotThere { addr, name: format!("{}<03>", m.to.to_ascii_uppercase()) })
                }
                rpc::status::TOO_LONG => Err(protocol("the message is longer than the receiver takes".into())),
                st => Err(protocol(format!("the receiver answered status {st:#x}"))),
            };
        }
    }
}

fn datagram_id() -> u16 {
    crate::nbns::transaction_id()
}

/// The local address the kernel would use to reach `dest` (a UDP
/// "connect" sends nothing).
pub async fn local_ip_towards(dest: IpAddr) -> Option<IpAddr> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
    let _ = sock.set_broadcast(true);
    sock.connect((dest, 9)).await.ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_cut_to_fit() {
        let long = "x".repeat(2000);
        let m = DatagramMessage { from: "ALERTER", to: "BOB", text: &long, group: false };
        let bytes = build_datagram(&m, Ipv4Addr::LOCALHOST, 1, CodePage::CP850).unwrap();
        let d = Datagram::decode(&bytes).unwrap();
        assert!(d.user_data.len() <= dgram::MAX_USER_DATA);
        let (_, data) = d.mailslot().unwrap();
        let (_, _, text) = dgram::parse_messenger_body(&data).unwrap();
        assert!(text.ends_with(b" [...]"));
    }

    #[test]
    fn transient_errors() {
        assert!(SendError::NameNotFound(NotFound { name: "X".into(), tried: vec![] }).is_transient());
        assert!(SendError::NoBroadcast(NoBroadcast::NoneUp { have: "lo".into() }).is_transient());
        assert!(!SendError::NoBroadcast(NoBroadcast::Off).is_transient());
        assert!(!SendError::NotAccepting("X".into()).is_transient());
        assert!(SendError::Timeout("127.0.0.1:1".parse().unwrap()).is_transient());
    }
}
