//! The third wire form: `NetrSendMessage` of the Messenger service's
//! `msgsvc` interface, as DCE/RPC connectionless (CL) PDUs on UDP 135.
//! Sans-IO: PDUs, their NDR body, fragmentation, and the receiving side's
//! state ([`Server`]: reassembly, duplicates, pings, replies), all taking
//! `now` as a parameter.
//!
//! The PDU is C706's (DCE 1.1 RPC, chapter 12): an 80-byte header whose
//! integers (and the first three fields of each UUID) are in the byte
//! order the sender's data representation (`drep`) names, then the body.
//! The body of `NetrSendMessage` (MS-MSRP 3.2.4.1, opnum 0) is three
//! top-level `[in, string] char *` parameters, From, To and Text, each an
//! NDR conformant varying string: maximum count, offset, actual count (all
//! u32, the counts including the terminating NUL), the bytes, padding to
//! the next multiple of four. Wireshark calls the three fields `server`,
//! `client` and `message`; MS-MSRP's names and order are what Windows
//! checks, so From travels first (Wireshark's `server`) and To second.
//!
//! Every input is untrusted. What the [`Server`] holds is bounded (calls
//! being reassembled per peer and in all, bytes and fragments per call,
//! calls remembered), and a reply is never longer than the datagram it
//! answers, so a forged source address gains an attacker no amplification.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::Error;

/// The `msgsvc` interface: 5a7b91f8-ff00-11d0-a9b2-00c04fb6e6fc, version 1.0.
pub const MSGSVC: uuid::Uuid = uuid::Uuid::from_u128(0x5a7b91f8_ff00_11d0_a9b2_00c04fb6e6fc);
/// The interface version on the wire: major 1 in the low half, minor 0.
pub const MSGSVC_VERSION: u32 = 1;
/// `NetrSendMessage`.
pub const OPNUM_SEND_MESSAGE: u16 = 0;
/// The endpoint mapper's well-known port, where Windows' msgsvc answered.
pub const PORT: u16 = 135;
/// The CL header.
pub const HEADER_LEN: usize = 80;
/// The largest PDU sent: what fits in one Ethernet frame with room to
/// spare for IP options and tunnels, so no fragment is split by IP.
pub const MAX_PDU: usize = 1464;
/// The largest body of one fragment (a multiple of 8, as C706 asks).
pub const MAX_FRAGMENT_BODY: usize = (MAX_PDU - HEADER_LEN) / 8 * 8;

/// PDU types (C706 12.5.2).
pub mod ptype {
    pub const REQUEST: u8 = 0;
    pub const PING: u8 = 1;
    pub const RESPONSE: u8 = 2;
    pub const FAULT: u8 = 3;
    pub const WORKING: u8 = 4;
    pub const NOCALL: u8 = 5;
    pub const REJECT: u8 = 6;
    pub const ACK: u8 = 7;
    pub const CL_CANCEL: u8 = 8;
    pub const FACK: u8 = 9;
    pub const CANCEL_ACK: u8 = 10;
}

/// Header flags (`flags1`).
pub mod flags {
    pub const LAST_FRAG: u8 = 0x02;
    pub const FRAG: u8 = 0x04;
    pub const NO_FACK: u8 = 0x08;
    pub const MAYBE: u8 = 0x10;
    pub const IDEMPOTENT: u8 = 0x20;
    pub const BROADCAST: u8 = 0x40;
}

/// Status codes in replies.
pub mod status {
    pub const SUCCESS: u32 = 0;
    /// ERROR_ACCESS_DENIED: the sender is not allowed here.
    pub const ACCESS_DENIED: u32 = 5;
    /// NERR_NameNotFound: To is no name this receiver holds.
    pub const NAME_NOT_FOUND: u32 = 2273;
    /// ERROR_INSUFFICIENT_BUFFER: the message is longer than the receiver takes.
    pub const TOO_LONG: u32 = 122;
    /// nca_s_op_rng_error: no such operation in the interface.
    pub const OP_RANGE_ERROR: u32 = 0x1c01_0002;
    /// nca_s_unk_if: no such interface here.
    pub const UNKNOWN_INTERFACE: u32 = 0x1c01_0003;
    /// nca_s_proto_error: a PDU this implementation does not take.
    pub const PROTOCOL_ERROR: u32 = 0x1c01_000b;
    /// nca_s_fault_ndr (RPC_X_BAD_STUB_DATA): the body does not decode.
    pub const BAD_STUB_DATA: u32 = 0x0000_06f7;
}

/// The sender's data representation: integer byte order and character set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drep {
    pub little_endian: bool,
    /// ASCII (else EBCDIC, which nothing here reads).
    pub ascii: bool,
    /// The floating-point format byte, kept as sent.
    pub float: u8,
}

impl Drep {
    /// Little-endian, ASCII, IEEE: what alerter sends.
    pub const LITTLE: Drep = Drep { little_endian: true, ascii: true, float: 0 };
    pub const BIG: Drep = Drep { little_endian: false, ascii: true, float: 0 };

    fn encode(self) -> [u8; 3] {
        [(u8::from(self.little_endian) << 4) | u8::from(!self.ascii), self.float, 0]
    }

    fn decode(b: [u8; 3]) -> Drep {
        Drep { little_endian: b[0] >> 4 == 1, ascii: b[0] & 0x0f == 0, float: b[1] }
    }
}

/// The CL header (C706 12.5.3), its fields in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub ptype: u8,
    pub flags1: u8,
    pub flags2: u8,
    pub drep: Drep,
    /// The fragment's serial number (serial_hi and serial_lo joined).
    pub serial: u16,
    pub object: uuid::Uuid,
    pub interface: uuid::Uuid,
    pub activity: uuid::Uuid,
    pub server_boot: u32,
    pub if_version: u32,
    pub seqnum: u32,
    pub opnum: u16,
    pub ihint: u16,
    pub ahint: u16,
    pub fragnum: u16,
    pub auth_proto: u8,
}

impl Header {
    /// A header for `ptype` in the call `call`, to the msgsvc interface.
    pub fn new(ptype: u8, call: Call) -> Header {
        Header {
            ptype,
            flags1: 0,
            flags2: 0,
            drep: Drep::LITTLE,
            serial: 0,
            object: uuid::Uuid::nil(),
            interface: MSGSVC,
            activity: call.activity,
            server_boot: 0,
            if_version: MSGSVC_VERSION,
            seqnum: call.seqnum,
            opnum: OPNUM_SEND_MESSAGE,
            ihint: 0xffff,
            ahint: 0xffff,
            fragnum: 0,
            auth_proto: 0,
        }
    }

    /// The call this PDU belongs to.
    pub fn call(&self) -> Call {
        Call { activity: self.activity, seqnum: self.seqnum }
    }

    fn is(&self, flag: u8) -> bool {
        self.flags1 & flag != 0
    }

    /// The last (or only) fragment of its PDU.
    pub fn is_last_fragment(&self) -> bool {
        !self.is(flags::FRAG) || self.is(flags::LAST_FRAG)
    }
}

/// One CL PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub header: Header,
    pub body: Vec<u8>,
}

/// Integers in the byte order a drep names.
struct Ints(bool);

impl Ints {
    fn u16(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.0 { u16::from_le_bytes(a) } else { u16::from_be_bytes(a) }
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.0 { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) }
    }

    fn put_u16(&self, out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&if self.0 { v.to_le_bytes() } else { v.to_be_bytes() });
    }

    fn put_u32(&self, out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&if self.0 { v.to_le_bytes() } else { v.to_be_bytes() });
    }

    /// A UUID: its first three fields in this order, the last eight bytes as they are.
    fn uuid(&self, b: &[u8]) -> uuid::Uuid {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        if self.0 { uuid::Uuid::from_bytes_le(a) } else { uuid::Uuid::from_bytes(a) }
    }

    fn put_uuid(&self, out: &mut Vec<u8>, u: &uuid::Uuid) {
        out.extend_from_slice(&if self.0 { u.to_bytes_le() } else { *u.as_bytes() });
    }
}

impl Pdu {
    /// Reads one PDU. Bytes after the body (an authentication verifier,
    /// padding) are ignored.
    pub fn decode(b: &[u8]) -> Result<Pdu, Error> {
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated("DCE/RPC header"));
        }
        if b[0] != 4 {
            return Err(Error::Malformed(format!("RPC version {} (connectionless is 4)", b[0])));
        }
        let ptype = b[1] & 0x1f;
        if ptype > ptype::CANCEL_ACK {
            return Err(Error::Malformed(format!("PDU type {ptype}")));
        }
        let drep = Drep::decode([b[4], b[5], b[6]]);
        let i = Ints(drep.little_endian);
        let len = i.u16(&b[74..]) as usize;
        let body = b.get(HEADER_LEN..HEADER_LEN + len).ok_or(Error::Truncated("DCE/RPC body"))?.to_vec();
        let header = Header {
            ptype,
            flags1: b[2],
            flags2: b[3],
            drep,
            serial: u16::from(b[7]) << 8 | u16::from(b[79]),
            object: i.uuid(&b[8..]),
            interface: i.uuid(&b[24..]),
            activity: i.uuid(&b[40..]),
            server_boot: i.u32(&b[56..]),
            if_version: i.u32(&b[60..]),
            seqnum: i.u32(&b[64..]),
            opnum: i.u16(&b[68..]),
            ihint: i.u16(&b[70..]),
            ahint: i.u16(&b[72..]),
            fragnum: i.u16(&b[76..]),
            auth_proto: b[78],
        };
        Ok(Pdu { header, body })
    }

    /// The PDU's bytes, in the byte order of its drep.
    pub fn encode(&self) -> Vec<u8> {
        let h = &self.header;
        let i = Ints(h.drep.little_endian);
        let mut out = Vec::with_capacity(HEADER_LEN + self.body.len());
        out.extend_from_slice(&[4, h.ptype, h.flags1, h.flags2]);
        out.extend_from_slice(&h.drep.encode());
        out.push((h.serial >> 8) as u8);
        i.put_uuid(&mut out, &h.object);
        i.put_uuid(&mut out, &h.interface);
        i.put_uuid(&mut out, &h.activity);
        i.put_u32(&mut out, h.server_boot);
        i.put_u32(&mut out, h.if_version);
        i.put_u32(&mut out, h.seqnum);
        i.put_u16(&mut out, h.opnum);
        i.put_u16(&mut out, h.ihint);
        i.put_u16(&mut out, h.ahint);
        i.put_u16(&mut out, self.body.len() as u16);
        i.put_u16(&mut out, h.fragnum);
        out.push(h.auth_proto);
        out.push(h.serial as u8);
        out.extend_from_slice(&self.body);
        out
    }
}

/// One call: an activity (a client's conversation) and its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Call {
    pub activity: uuid::Uuid,
    pub seqnum: u32,
}

impl Call {
    /// A call on a new, random activity.
    pub fn fresh() -> Call {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            bytes = (nanos.as_nanos() ^ u128::from(std::process::id()) << 96).to_le_bytes();
        }
        Call { activity: uuid::Builder::from_random_bytes(bytes).into_uuid(), seqnum: 0 }
    }
}

/// `NetrSendMessage`'s three strings, as bytes in the sender's OEM code page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendMessage {
    pub from: Vec<u8>,
    pub to: Vec<u8>,
    pub text: Vec<u8>,
}

fn put_string(out: &mut Vec<u8>, s: &[u8], i: &Ints) {
    // A NUL inside would end the string early at the receiver.
    let s = &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())];
    let count = s.len() as u32 + 1;
    i.put_u32(out, count);
    i.put_u32(out, 0);
    i.put_u32(out, count);
    out.extend_from_slice(s);
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn get_string(body: &[u8], pos: &mut usize, i: &Ints, what: &'static str) -> Result<Vec<u8>, Error> {
    *pos = pos.next_multiple_of(4);
    let head = body.get(*pos..pos.saturating_add(12)).ok_or(Error::Truncated(what))?;
    let (max, offset, actual) = (i.u32(head), i.u32(&head[4..]), i.u32(&head[8..]));
    if u64::from(offset) + u64::from(actual) > u64::from(max) {
        return Err(Error::Malformed(format!(
            "{what}: offset {offset} and actual count {actual} exceed the maximum count {max}"
        )));
    }
    *pos += 12;
    let end = pos.checked_add(actual as usize).ok_or(Error::Truncated(what))?;
    let bytes = body.get(*pos..end).ok_or(Error::Truncated(what))?;
    *pos += actual as usize;
    // The count includes the terminating NUL; a string without one is taken
    // whole, and anything after an inner NUL is not part of it.
    Ok(bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())].to_vec())
}

impl SendMessage {
    /// The NDR body in the byte order of `drep`.
    pub fn encode(&self, drep: Drep) -> Vec<u8> {
        let i = Ints(drep.little_endian);
        let mut out = Vec::with_capacity(48 + self.from.len() + self.to.len() + self.text.len());
        put_string(&mut out, &self.from, &i);
        put_string(&mut out, &self.to, &i);
        put_string(&mut out, &self.text, &i);
        out
    }

    /// Reads the NDR body sent in the byte order of `drep`.
    pub fn decode(body: &[u8], drep: Drep) -> Result<SendMessage, Error> {
        if !drep.ascii {
            return Err(Error::Malformed("EBCDIC strings (this receiver reads ASCII-based code pages)".into()));
        }
        let i = Ints(drep.little_endian);
        let mut pos = 0;
        let from = get_string(body, &mut pos, &i, "NetrSendMessage From")?;
        let to = get_string(body, &mut pos, &i, "NetrSendMessage To")?;
        let text = get_string(body, &mut pos, &i, "NetrSendMessage Text")?;
        Ok(SendMessage { from, to, text })
    }
}

/// The request PDUs of one call carrying `body`: one, or fragments of at
/// most `max_fragment` body bytes (rounded down to a multiple of 8).
pub fn request(call: Call, body: &[u8], max_fragment: usize) -> Vec<Pdu> {
    // A fragment's length is a u16.
    let size = (max_fragment.min(usize::from(u16::MAX)) / 8 * 8).max(8);
    let chunks: Vec<&[u8]> = if body.is_empty() { vec![&[]] } else { body.chunks(size).collect() };
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(k, chunk)| {
            let mut header = Header::new(ptype::REQUEST, call);
            // Not idempotent: a popup shown twice is a fault, so the
            // server keeps the answer until the client acknowledges it.
            header.flags1 = flags::NO_FACK;
            if n > 1 {
                header.flags1 |= flags::FRAG | if k + 1 == n { flags::LAST_FRAG } else { 0 };
            }
            header.fragnum = k as u16;
            Pdu { header, body: chunk.to_vec() }
        })
        .collect()
}

/// A reply of `ptype` to `to`, in our byte order, carrying `status` (or
/// nothing, for working and nocall).
pub fn reply(to: &Header, ptype: u8, status: Option<u32>, server_boot: u32) -> Pdu {
    let header = Header {
        ptype,
        flags1: if ptype == ptype::NOCALL { flags::NO_FACK } else { 0 },
        flags2: 0,
        drep: Drep::LITTLE,
        serial: 0,
        server_boot,
        fragnum: 0,
        auth_proto: 0,
        ..to.clone()
    };
    Pdu { header, body: status.map(|s| s.to_le_bytes().to_vec()).unwrap_or_default() }
}

/// A fragment acknowledgement (C706 12.5.3.4) for the fragment `to`: the
/// highest fragment in sequence (`fragnum`), the serial number of the
/// fragment that asked, and the selective acknowledgement mask. Without
/// fragment 0 there is no sequence yet: `fragnum` is 0xffff then.
pub fn fack(to: &Header, in_sequence: Option<u16>, selack: u32, server_boot: u32) -> Pdu {
    let mut p = reply(to, ptype::FACK, None, server_boot);
    p.header.fragnum = in_sequence.unwrap_or(0xffff);
    let mut body = vec![0u8, 0];
    body.extend_from_slice(&32u16.to_le_bytes()); // window: fragments
    body.extend_from_slice(&(MAX_PDU as u32).to_le_bytes()); // max_tsdu
    body.extend_from_slice(&(MAX_PDU as u32).to_le_bytes()); // max_frag_size
    body.extend_from_slice(&to.serial.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes()); // selack_len
    body.extend_from_slice(&selack.to_le_bytes());
    p.body = body;
    p
}

/// Peers as the server counts them: an IPv6 address by its /64 (one
/// machine owns a whole /64 and can send from any address in it).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1)))
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What a server's PDU tells the client that made the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The call's result (an error_status_t: 0 is success).
    Status(u32),
    Fault(u32),
    Reject(u32),
    /// Still at it: wait.
    Working,
    /// The server has not (all of) the call: send it again.
    Nocall,
    /// Nothing the client acts on (a fack, a cancel ack).
    Ignore,
}

/// Reads a server's PDU in answer to `call`: `None` when it is about
/// another call.
pub fn answer(p: &Pdu, call: Call) -> Result<Option<Answer>, Error> {
    if p.header.call() != call {
        return Ok(None);
    }
    let status = || {
        let b = p.body.get(..4).ok_or(Error::Truncated("status of an RPC reply"))?;
        Ok::<u32, Error>(Ints(p.header.drep.little_endian).u32(b))
    };
    Ok(Some(match p.header.ptype {
        ptype::RESPONSE => Answer::Status(status()?),
        ptype::FAULT => Answer::Fault(status()?),
        ptype::REJECT => Answer::Reject(status()?),
        ptype::WORKING => Answer::Working,
        ptype::NOCALL => Answer::Nocall,
        _ => Answer::Ignore,
    }))
}

/// A message reassembled by the [`Server`], for the receiver to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub message: SendMessage,
    pub call: Call,
    /// The data representation it came in.
    pub drep: Drep,
}

/// What the [`Server`] holds and for how long.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Body bytes of one call (all its fragments).
    pub max_call_bytes: usize,
    /// Fragments of one call.
    pub max_fragments: u16,
    /// Calls being reassembled for one peer address.
    pub max_partial_per_peer: usize,
    /// Calls being reassembled in all.
    pub max_partial: usize,
    /// How long a call may take to arrive whole.
    pub reassembly_timeout: Duration,
    /// Calls answered whose answer is kept (for duplicates and retransmissions).
    pub remember: usize,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_call_bytes: 16 * 1024,
            max_fragments: 32,
            max_partial_per_peer: 4,
            max_partial: 256,
            reassembly_timeout: Duration::from_secs(30),
            remember: 4096,
        }
    }
}

/// What became of one datagram.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The bytes to send back, if any (never longer than the datagram).
    pub reply: Option<Vec<u8>>,
    /// A whole, new message was judged (and, if the judge took it, shown).
    pub judged: Option<(Incoming, u32)>,
    /// Why the datagram was dropped or refused, for the counters and logs.
    pub problem: Option<Problem>,
    /// A reply was due but longer than the datagram, so none went.
    pub reply_suppressed: bool,
}

/// Why the server did not take a datagram as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// It does not parse as a CL PDU, or its body as NetrSendMessage.
    Malformed(Error),
    /// Another interface, operation or version than msgsvc's
    /// NetrSendMessage, or authentication: rejected.
    Unsupported(String),
    /// Over a bound: too long, too many fragments, too many calls in
    /// reassembly (from this peer, or in all).
    OverLimit(&'static str),
    /// The peer is not allowed to send here.
    Refused,
    /// A retransmission or duplicate of a call already answered.
    Duplicate,
}

#[derive(Debug)]
struct Partial {
    started: Instant,
    drep: Drep,
    header: Header,
    fragments: BTreeMap<u16, Vec<u8>>,
    bytes: usize,
    last: Option<u16>,
}

/// A call whose fragments are all in: its first header, the drep that
/// reads its body, and the body.
type Whole = (Header, Drep, Vec<u8>);

/// What one fragment made of its call.
enum Fragment {
    /// Every fragment is in.
    Whole(Whole),
    /// Not yet: the highest fragment in sequence from 0 (none without
    /// fragment 0), and a bit for each of the 32 from the next one on.
    Incomplete { in_sequence: Option<u16>, selack: u32 },
    /// No room for it now (the sender will send it again).
    Busy(&'static str),
    /// Over what one call may hold: refused for good.
    TooLong(&'static str),
}

/// The last call answered on an activity, and its answer.
#[derive(Debug, Clone, Copy)]
struct Done {
    seqnum: u32,
    status: u32,
}

/// The receiving side of the CL protocol for NetrSendMessage. See the
/// module docs; [`Server::receive`] takes each datagram.
#[derive(Debug)]
pub struct Server {
    limits: ServerLimits,
    boot: u32,
    partial: HashMap<(IpAddr, Call), Partial>,
    done: HashMap<(IpAddr, uuid::Uuid), Done>,
    /// Insertion order of `done`, to forget the oldest first.
    done_order: VecDeque<(IpAddr, uuid::Uuid)>,
}

impl Server {
    /// `boot` is the server's boot time (seconds), sent in every reply.
    pub fn new(limits: ServerLimits, boot: u32) -> Server {
        Server { limits, boot, partial: HashMap::new(), done: HashMap::new(), done_order: VecDeque::new() }
    }

    /// Calls being reassembled now.
    pub fn partial_calls(&self) -> usize {
        self.partial.len()
    }

    /// Takes one datagram from `peer`. `allowed` says whether the peer may
    /// send here at all (an allow-list). `judge` sees each whole, new
    /// message once and returns the status to answer (0: taken).
    pub fn receive(
        &mut self,
        datagram: &[u8],
        peer: IpAddr,
        allowed: bool,
        now: Instant,
        judge: impl FnOnce(&Incoming) -> u32,
    ) -> Outcome {
        self.expire(now);
        let peer = peer_key(peer);
        let mut out = self.receive_inner(datagram, peer, allowed, now, judge);
        if let Some(r) = &out.reply
            && r.len() > datagram.len()
        {
            out.reply = None;
            out.reply_suppressed = true;
        }
        out
    }

    fn receive_inner(
        &mut self,
        datagram: &[u8],
        peer: IpAddr,
        allowed: bool,
        now: Instant,
        judge: impl FnOnce(&Incoming) -> u32,
    ) -> Outcome {
        let mut out = Outcome::default();
        let p = match Pdu::decode(datagram) {
            Ok(p) => p,
            Err(e) => {
                out.problem = Some(Problem::Malformed(e));
                return out;
            }
        };
        let h = &p.header;
        let boot = self.boot;
        // "Maybe" and broadcast calls expect no answer (C706).
        let answers = !h.is(flags::MAYBE) && !h.is(flags::BROADCAST);
        let send = |ptype, status: Option<u32>| answers.then(|| reply(h, ptype, status, boot).encode());
        match h.ptype {
            ptype::REQUEST => {}
            ptype::PING if allowed => {
                // A completed call's answer is sent again when its request
                // is (a reply to a ping must not be longer than the ping):
                // "nocall" asks for that, and for a call not yet whole.
                out.reply = send(ptype::NOCALL, None);
                return out;
            }
            // Acknowledgements, cancels, facks and stray replies need nothing.
            _ => return out,
        }
        if let Some(why) = unsupported(h) {
            // Scans of the endpoint mapper and other interfaces: rejected
            // for those allowed, unanswered for the rest of the world.
            if allowed {
                out.reply = send(ptype::REJECT, Some(why.0));
            }
            out.problem = Some(Problem::Unsupported(why.1));
            return out;
        }
        if !allowed {
            out.problem = Some(Problem::Refused);
            if h.is_last_fragment() {
                out.reply = send(ptype::RESPONSE, Some(status::ACCESS_DENIED));
            }
            return out;
        }
        // A call already answered: its answer again, to the last fragment
        // (a client retransmitting sends them all); an older call: nothing.
        if let Some(d) = self.done.get(&(peer, h.activity)).copied()
            && h.seqnum <= d.seqnum
        {
            out.problem = Some(Problem::Duplicate);
            if h.seqnum == d.seqnum && h.is_last_fragment() {
                out.reply = send(ptype::RESPONSE, Some(d.status));
            }
            return out;
        }
        let too_long = |this: &mut Server, out: &mut Outcome, what: &'static str| {
            // Refused for good: remembered, so every later fragment is a
            // duplicate and the last one is answered "too long".
            this.remember(peer, h.activity, h.seqnum, status::TOO_LONG);
            out.problem = Some(Problem::OverLimit(what));
            if h.is_last_fragment() {
                out.reply = send(ptype::RESPONSE, Some(status::TOO_LONG));
            }
        };
        let (first, drep, body) = if h.is(flags::FRAG) {
            match self.fragment(&p, peer, now) {
                Fragment::Whole(whole) => whole,
                Fragment::Incomplete { in_sequence, selack } => {
                    // The sender asked to hear what has arrived (its window).
                    if !h.is(flags::NO_FACK) && answers {
                        out.reply = Some(fack(h, in_sequence, selack, boot).encode());
                    }
                    return out;
                }
                Fragment::Busy(what) => {
                    out.problem = Some(Problem::OverLimit(what));
                    return out;
                }
                Fragment::TooLong(what) => {
                    too_long(self, &mut out, what);
                    return out;
                }
            }
        } else {
            if p.body.len() > self.limits.max_call_bytes {
                too_long(self, &mut out, "bytes in one call");
                return out;
            }
            (h.clone(), h.drep, p.body.clone())
        };
        let answers = !first.is(flags::MAYBE) && !first.is(flags::BROADCAST);
        let message = match SendMessage::decode(&body, drep) {
            Ok(m) => m,
            Err(e) => {
                let fault = reply(&first, ptype::FAULT, Some(status::BAD_STUB_DATA), self.boot);
                out.reply = answers.then(|| fault.encode());
                out.problem = Some(Problem::Malformed(e));
                return out;
            }
        };
        let incoming = Incoming { message, call: first.call(), drep };
        let st = judge(&incoming);
        self.remember(peer, first.activity, first.seqnum, st);
        out.reply = answers.then(|| reply(&first, ptype::RESPONSE, Some(st), self.boot).encode());
        out.judged = Some((incoming, st));
        out
    }

    /// Adds a fragment (see [`Fragment`]).
    fn fragment(&mut self, p: &Pdu, peer: IpAddr, now: Instant) -> Fragment {
        let h = &p.header;
        let l = self.limits;
        let key = (peer, h.call());
        if h.fragnum >= l.max_fragments {
            self.partial.remove(&key);
            return Fragment::TooLong("fragments in one call");
        }
        if !self.partial.contains_key(&key) {
            if self.partial.keys().filter(|(ip, _)| *ip == peer).count() >= l.max_partial_per_peer {
                return Fragment::Busy("calls in reassembly from one address");
            }
            // Full: the oldest call in reassembly makes room, so that no
            // one can keep the table full and every newcomer out.
            if self.partial.len() >= l.max_partial
                && let Some(oldest) = self.partial.iter().min_by_key(|(_, p)| p.started).map(|(k, _)| *k)
            {
                self.partial.remove(&oldest);
            }
            let header = Header { fragnum: 0, ..h.clone() };
            let part = Partial { started: now, drep: h.drep, header, fragments: BTreeMap::new(), bytes: 0, last: None };
            self.partial.insert(key, part);
        }
        let Some(part) = self.partial.get_mut(&key) else { return Fragment::Busy("calls in reassembly") };
        if h.fragnum == 0 {
            // The first fragment's drep reads the body.
            part.drep = h.drep;
            part.header = h.clone();
        }
        let conflicting_last = match part.last {
            Some(last) => h.is(flags::LAST_FRAG) && last != h.fragnum || h.fragnum > last,
            None => h.is(flags::LAST_FRAG) && part.fragments.keys().any(|&k| k > h.fragnum),
        };
        if conflicting_last {
            self.partial.remove(&key);
            return Fragment::Busy("fragments in one call (a second last fragment)");
        }
        if h.is(flags::LAST_FRAG) {
            part.last = Some(h.fragnum);
        }
        if !part.fragments.contains_key(&h.fragnum) {
            if part.bytes + p.body.len() > l.max_call_bytes {
                self.partial.remove(&key);
                return Fragment::TooLong("bytes in one call");
            }
            part.bytes += p.body.len();
            part.fragments.insert(h.fragnum, p.body.clone());
        }
        let whole = part.last.is_some_and(|last| part.fragments.len() == usize::from(last) + 1);
        if !whole {
            // The highest fragment received in sequence from 0, and which
            // of the 32 from the next one on are in (bit 0: the next one,
            // missing by definition).
            let mut in_sequence: Option<u16> = None;
            while part.fragments.contains_key(&in_sequence.map_or(0, |n| n + 1)) {
                in_sequence = Some(in_sequence.map_or(0, |n| n + 1));
            }
            let next = in_sequence.map_or(0, |n| n + 1);
            let selack =
                (0..32u16).filter(|k| part.fragments.contains_key(&(next + k))).fold(0u32, |mask, k| mask | 1 << k);
            return Fragment::Incomplete { in_sequence, selack };
        }
        let Some(part) = self.partial.remove(&key) else { return Fragment::Busy("calls in reassembly") };
        let body = part.fragments.into_values().collect::<Vec<_>>().concat();
        Fragment::Whole((part.header, part.drep, body))
    }

    /// Remembers the answer to a call; calls of the same activity still in
    /// reassembly (older, or this one by another path) are let go.
    fn remember(&mut self, peer: IpAddr, activity: uuid::Uuid, seqnum: u32, status: u32) {
        if self.done.insert((peer, activity), Done { seqnum, status }).is_none() {
            self.done_order.push_back((peer, activity));
        }
        self.partial.retain(|(ip, call), _| !(*ip == peer && call.activity == activity && call.seqnum <= seqnum));
        while self.done.len() > self.limits.remember {
            match self.done_order.pop_front() {
                Some(old) => {
                    self.done.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Forgets calls that did not arrive whole in time.
    fn expire(&mut self, now: Instant) {
        let timeout = self.limits.reassembly_timeout;
        self.partial.retain(|_, p| now.saturating_duration_since(p.started) < timeout);
    }
}

/// Why a request is not for NetrSendMessage here: the reject status, and the reason.
fn unsupported(h: &Header) -> Option<(u32, String)> {
    if h.interface != MSGSVC || h.if_version & 0xffff != MSGSVC_VERSION {
        return Some((
            status::UNKNOWN_INTERFACE,
            format!("interface {} version {}.{}", h.interface, h.if_version & 0xffff, h.if_version >> 16),
        ));
    }
    if h.opnum != OPNUM_SEND_MESSAGE {
        return Some((status::OP_RANGE_ERROR, format!("operation {} of msgsvc", h.opnum)));
    }
    if h.auth_proto != 0 {
        return Some((status::PROTOCOL_ERROR, format!("authentication protocol {}", h.auth_proto)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn message(text: &str) -> SendMessage {
        SendMessage { from: b"ALERTER".to_vec(), to: b"WS1".to_vec(), text: text.as_bytes().to_vec() }
    }

    #[test]
    fn the_header_is_eighty_bytes_in_the_order_c706_gives() {
        let call = Call { activity: uuid::Uuid::from_u128(0x00112233_4455_6677_8899_aabbccddeeff), seqnum: 7 };
        let mut p = request(call, &message("hi").encode(Drep::LITTLE), MAX_FRAGMENT_BODY).remove(0);
        p.header.serial = 0x0102;
        let b = p.encode();
        // No fack wanted; not idempotent (a popup must not show twice).
        assert_eq!(&b[..8], &[4, 0, 0x08, 0, 0x10, 0, 0, 0x01]);
        assert_eq!(&b[8..24], &[0; 16]);
        // The interface's first three fields little-endian, the rest as written.
        assert_eq!(
            &b[24..40],
            &[0xf8, 0x91, 0x7b, 0x5a, 0x00, 0xff, 0xd0, 0x11, 0xa9, 0xb2, 0x00, 0xc0, 0x4f, 0xb6, 0xe6, 0xfc]
        );
        assert_eq!(&b[40..44], &[0x33, 0x22, 0x11, 0x00]);
        assert_eq!(&b[60..64], &[1, 0, 0, 0]);
        assert_eq!(&b[64..68], &[7, 0, 0, 0]);
        assert_eq!(&b[68..74], &[0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(usize::from(u16::from_le_bytes([b[74], b[75]])), b.len() - HEADER_LEN);
        assert_eq!(b[79], 0x02);
        assert_eq!(Pdu::decode(&b).unwrap(), p);
    }

    #[test]
    fn strings_are_conformant_varying_with_their_nul_and_padding() {
        let body = message("hi").encode(Drep::LITTLE);
        // "ALERTER\0" is 8 bytes: 12 + 8, no padding.
        assert_eq!(&body[..12], &[8, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0]);
        assert_eq!(&body[12..20], b"ALERTER\0");
        // "WS1\0" then "hi\0" + one byte of padding.
        assert_eq!(&body[20..36], b"\x04\0\0\0\0\0\0\0\x04\0\0\0WS1\0");
        assert_eq!(&body[36..48], b"\x03\0\0\0\0\0\0\0\x03\0\0\0");
        assert_eq!(&body[48..], b"hi\0\0");
        assert_eq!(SendMessage::decode(&body, Drep::LITTLE).unwrap(), message("hi"));
    }

    #[test]
    fn big_endian_senders_are_read_in_their_order() {
        let m = message("big-endian");
        let mut p = request(Call::fresh(), &m.encode(Drep::BIG), MAX_FRAGMENT_BODY).remove(0);
        p.header.drep = Drep::BIG;
        p.header.seqnum = 0x01020304;
        let b = p.encode();
        assert_eq!(b[4], 0x00);
        assert_eq!(&b[64..68], &[1, 2, 3, 4]);
        let back = Pdu::decode(&b).unwrap();
        assert_eq!(back, p);
        assert_eq!(SendMessage::decode(&back.body, back.header.drep).unwrap(), m);
    }

    #[test]
    fn long_messages_are_fragmented_in_multiples_of_eight() {
        let body = message(&"x".repeat(4000)).encode(Drep::LITTLE);
        let pdus = request(Call::fresh(), &body, MAX_FRAGMENT_BODY);
        assert_eq!(pdus.len(), 3);
        for (k, p) in pdus.iter().enumerate() {
            assert_eq!(p.header.fragnum as usize, k);
            assert!(p.header.flags1 & flags::FRAG != 0);
            assert_eq!(p.header.flags1 & flags::LAST_FRAG != 0, k == 2);
            assert!(p.encode().len() <= MAX_PDU);
        }
        assert_eq!(pdus[0].body.len() % 8, 0);
        let joined: Vec<u8> = pdus.iter().flat_map(|p| p.body.clone()).collect();
        assert_eq!(joined, body);
    }

    fn serve(s: &mut Server, b: &[u8], now: Instant) -> Outcome {
        s.receive(b, PEER, true, now, |_| status::SUCCESS)
    }

    fn status_of(reply: &[u8]) -> (u8, u32) {
        let p = Pdu::decode(reply).unwrap();
        (p.header.ptype, u32::from_le_bytes(p.body[..4].try_into().unwrap()))
    }

    #[test]
    fn fragments_out_of_order_make_one_message_and_one_answer() {
        let mut s = Server::new(ServerLimits::default(), 1);
        let now = Instant::now();
        let m = message(&"y".repeat(3000));
        let pdus: Vec<Vec<u8>> =
            request(Call::fresh(), &m.encode(Drep::LITTLE), 1000).iter().map(Pdu::encode).collect();
        assert_eq!(pdus.len(), 4);
        for k in [3, 1, 0] {
            let o = serve(&mut s, &pdus[k], now);
            assert!(o.reply.is_none() && o.judged.is_none(), "fragment {k}");
        }
        let o = serve(&mut s, &pdus[2], now);
        assert_eq!(o.judged.unwrap().0.message, m);
        assert_eq!(status_of(&o.reply.unwrap()), (ptype::RESPONSE, 0));
        assert_eq!(s.partial_calls(), 0);
        // The sender retransmits it all: answered again, judged never again.
        for (k, p) in pdus.iter().enumerate() {
            let o = serve(&mut s, p, now);
            assert!(o.judged.is_none());
            assert_eq!(o.problem, Some(Problem::Duplicate));
            assert_eq!(o.reply.is_some(), k == 3, "fragment {k}");
        }
    }

    #[test]
    fn a_duplicate_is_answered_with_the_first_answer_and_judged_once() {
        let mut s = Server::new(ServerLimits::default(), 1);
        let now = Instant::now();
        let p = request(Call::fresh(), &message("once").encode(Drep::LITTLE), MAX_FRAGMENT_BODY)[0].encode();
        let mut judged = 0;
        for _ in 0..3 {
            let o = s.receive(&p, PEER, true, now, |_| {
                judged += 1;
                status::NAME_NOT_FOUND
            });
            assert_eq!(status_of(&o.reply.unwrap()), (ptype::RESPONSE, status::NAME_NOT_FOUND));
        }
        assert_eq!(judged, 1);
    }

    #[test]
    fn pings_get_nocall_and_never_more_bytes_than_they_sent() {
        let mut s = Server::new(ServerLimits::default(), 1);
        let now = Instant::now();
        let call = Call::fresh();
        let ping = Pdu { header: Header::new(ptype::PING, call), body: vec![] }.encode();
        let o = serve(&mut s, &ping, now);
        let r = o.reply.unwrap();
        assert_eq!(Pdu::decode(&r).unwrap().header.ptype, ptype::NOCALL);
        assert!(r.len() <= ping.len());
        // A request with an empty body gets no fault: it would be longer.
        let empty = request(call, &[], MAX_FRAGMENT_BODY)[0].encode();
        let o = serve(&mut s, &empty, now);
        assert!(o.reply.is_none() && o.reply_suppressed);
        assert!(matches!(o.problem, Some(Problem::Malformed(_))));
    }

    #[test]
    fn refused_peers_hear_access_denied_and_nothing_is_kept() {
        let mut s = Server::new(ServerLimits::default(), 1);
        let now = Instant::now();
        let pdus = request(Call::fresh(), &message(&"z".repeat(2000)).encode(Drep::LITTLE), 1000);
        let mut judged = false;
        for (k, p) in pdus.iter().enumerate() {
            let o = s.receive(&p.encode(), PEER, false, now, |_| {
                judged = true;
                0
            });
            assert_eq!(o.problem, Some(Problem::Refused));
            assert_eq!(o.reply.is_some(), k + 1 == pdus.len());
        }
        assert!(!judged);
        assert_eq!(s.partial_calls(), 0);
        let o = s.receive(&pdus[2].encode(), PEER, false, now, |_| 0);
        assert_eq!(status_of(&o.reply.unwrap()), (ptype::RESPONSE, status::ACCESS_DENIED));
    }

    #[test]
    fn other_interfaces_and_operations_are_rejected() {
        let mut s = Server::new(ServerLimits::default(), 1);
        let now = Instant::now();
        let body = message("x").encode(Drep::LITTLE);
        let mut p = request(Call::fresh(), &body, MAX_FRAGMENT_BODY).remove(0);
        p.header.opnum = 1;
        assert_eq!(status_of(&serve(&mut s, &p.encode(), now).reply.unwrap()), (ptype::REJECT, status::OP_RANGE_ERROR));
        p.header.opnum = 0;
        p.header.interface = uuid::Uuid::from_u128(0x17fdd703_1827_4e34_79d4_24a55c53bb37);
        let o = serve(&mut s, &p.encode(), now);
        assert_eq!(status_of(&o.reply.unwrap()), (ptype::REJECT, status::UNKNOWN_INTERFACE));
    }

    #[test]
    fn reassembly_is_bounded_and_forgets_what_never_completes() {
        let limits = ServerLimits { max_partial_per_peer: 2, max_call_bytes: 4096, ..ServerLimits::default() };
        let mut s = Server::new(limits, 1);
        let t0 = Instant::now();
        let first =
            |len: usize| request(Call::fresh(), &message(&"w".repeat(len)).encode(Drep::LITTLE), 512)[0].encode();
        assert!(serve(&mut s, &first(2000), t0).problem.is_none());
        assert!(serve(&mut s, &first(2000), t0).problem.is_none());
        assert_eq!(
            serve(&mut s, &first(2000), t0).problem,
            Some(Problem::OverLimit("calls in reassembly from one address"))
        );
        assert_eq!(s.partial_calls(), 2);
        // Too long in all: refused as the bytes arrive.
        let long = request(Call::fresh(), &message(&"v".repeat(5000)).encode(Drep::LITTLE), 512);
        let later = t0 + Duration::from_secs(31);
        let outcomes: Vec<_> = long.iter().map(|p| serve(&mut s, &p.encode(), later)).collect();
        assert!(outcomes.iter().any(|o| o.problem == Some(Problem::OverLimit("bytes in one call"))));
        assert!(outcomes.iter().all(|o| o.judged.is_none()));
        // The two stale calls were forgotten at `later`.
        assert!(s.partial_calls() <= 1);
    }

    #[test]
    fn fragments_asking_for_facks_get_them_with_what_arrived() {
        let mut s = Server::new(ServerLimits::default(), 1);
        let now = Instant::now();
        let mut pdus = request(Call::fresh(), &message(&"f".repeat(600)).encode(Drep::LITTLE), 128);
        assert_eq!(pdus.len(), 6);
        for (k, p) in pdus.iter_mut().enumerate() {
            p.header.flags1 &= !flags::NO_FACK;
            p.header.serial = 100 + k as u16;
        }
        let fack_of = |o: Outcome| {
            let p = Pdu::decode(&o.reply.unwrap()).unwrap();
            assert_eq!((p.header.ptype, p.body.len()), (ptype::FACK, 20));
            let serial = u16::from_le_bytes([p.body[12], p.body[13]]);
            let selack = u32::from_le_bytes(p.body[16..20].try_into().unwrap());
            (p.header.fragnum, serial, selack)
        };
        // 2 first: nothing in sequence; fragment 2 is bit 2 from fragment 0.
        assert_eq!(fack_of(serve(&mut s, &pdus[2].encode(), now)), (0xffff, 102, 0b100));
        assert_eq!(fack_of(serve(&mut s, &pdus[0].encode(), now)), (0, 100, 0b10));
        assert_eq!(fack_of(serve(&mut s, &pdus[1].encode(), now)), (2, 101, 0));
        assert_eq!(fack_of(serve(&mut s, &pdus[4].encode(), now)), (2, 104, 0b10));
        assert_eq!(fack_of(serve(&mut s, &pdus[3].encode(), now)), (4, 103, 0));
        let o = serve(&mut s, &pdus[5].encode(), now);
        assert_eq!(status_of(&o.reply.unwrap()), (ptype::RESPONSE, 0));
    }

    #[test]
    fn a_call_too_long_is_refused_on_its_last_fragment_and_never_judged() {
        let limits = ServerLimits { max_call_bytes: 1000, ..ServerLimits::default() };
        let mut s = Server::new(limits, 1);
        let now = Instant::now();
        let pdus = request(Call::fresh(), &message(&"l".repeat(3000)).encode(Drep::LITTLE), 512);
        let mut replies = Vec::new();
        for p in &pdus {
            let o = s.receive(&p.encode(), PEER, true, now, |_| panic!("judged"));
            replies.extend(o.reply);
        }
        assert_eq!(replies.len(), 1);
        assert_eq!(status_of(&replies[0]), (ptype::RESPONSE, status::TOO_LONG));
        assert_eq!(s.partial_calls(), 0);
        // In one PDU too.
        let one = request(Call::fresh(), &message(&"l".repeat(1200)).encode(Drep::LITTLE), 2000)[0].encode();
        let o = s.receive(&one, PEER, true, now, |_| panic!("judged"));
        assert_eq!(status_of(&o.reply.unwrap()), (ptype::RESPONSE, status::TOO_LONG));
    }

    #[test]
    fn a_full_table_lets_the_oldest_call_go_not_the_newcomer() {
        let limits = ServerLimits { max_partial: 2, max_partial_per_peer: 8, ..ServerLimits::default() };
        let mut s = Server::new(limits, 1);
        let t0 = Instant::now();
        let calls: Vec<Vec<Pdu>> =
            (0..3).map(|_| request(Call::fresh(), &message(&"o".repeat(300)).encode(Drep::LITTLE), 128)).collect();
        for (k, c) in calls.iter().enumerate() {
            serve(&mut s, &c[0].encode(), t0 + Duration::from_secs(k as u64));
        }
        assert_eq!(s.partial_calls(), 2);
        // The newest completes; the oldest was let go (its rest starts anew).
        let later = t0 + Duration::from_secs(5);
        let done: Vec<bool> =
            calls[2][1..].iter().map(|p| serve(&mut s, &p.encode(), later).judged.is_some()).collect();
        assert_eq!(done.last(), Some(&true));
    }

    #[test]
    fn maybe_calls_are_taken_unanswered_and_replies_carry_no_fragment_or_auth() {
        let mut s = Server::new(ServerLimits::default(), 1);
        let now = Instant::now();
        let mut p = request(Call::fresh(), &message("maybe").encode(Drep::LITTLE), MAX_FRAGMENT_BODY).remove(0);
        p.header.flags1 |= flags::MAYBE;
        let o = serve(&mut s, &p.encode(), now);
        assert!(o.judged.is_some() && o.reply.is_none());
        let mut p = request(Call::fresh(), &message("x").encode(Drep::LITTLE), MAX_FRAGMENT_BODY).remove(0);
        p.header.auth_proto = 10;
        p.header.fragnum = 3;
        let r = Pdu::decode(&serve(&mut s, &p.encode(), now).reply.unwrap()).unwrap();
        assert_eq!((r.header.ptype, r.header.auth_proto, r.header.fragnum), (ptype::REJECT, 0, 0));
    }

    #[test]
    fn outsiders_probing_other_interfaces_hear_nothing() {
        let mut s = Server::new(ServerLimits::default(), 1);
        let mut p = request(Call::fresh(), &message("x").encode(Drep::LITTLE), MAX_FRAGMENT_BODY).remove(0);
        p.header.interface = uuid::Uuid::from_u128(0xe1af8308_5d1f_11c9_91a4_08002b14a0fa); // the endpoint mapper
        let o = s.receive(&p.encode(), PEER, false, Instant::now(), |_| 0);
        assert!(o.reply.is_none());
        assert!(matches!(o.problem, Some(Problem::Unsupported(_))));
    }

    #[test]
    fn an_ipv6_sender_is_one_peer_for_its_whole_64() {
        let limits = ServerLimits { max_partial_per_peer: 2, ..ServerLimits::default() };
        let mut s = Server::new(limits, 1);
        let now = Instant::now();
        let mut problems = Vec::new();
        for k in 1..=3u16 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, k));
            let p = request(Call::fresh(), &message(&"6".repeat(300)).encode(Drep::LITTLE), 128)[0].encode();
            problems.push(s.receive(&p, ip, true, now, |_| 0).problem);
        }
        assert_eq!(problems[2], Some(Problem::OverLimit("calls in reassembly from one address")));
    }

    #[test]
    fn answers_are_read_for_their_call_only() {
        let call = Call::fresh();
        let req = Header::new(ptype::REQUEST, call);
        let ok = reply(&req, ptype::RESPONSE, Some(0), 9);
        assert_eq!(answer(&ok, call), Ok(Some(Answer::Status(0))));
        assert_eq!(answer(&ok, Call { seqnum: 1, ..call }), Ok(None));
        let nocall = reply(&req, ptype::NOCALL, None, 9);
        assert_eq!(answer(&nocall, call), Ok(Some(Answer::Nocall)));
        let short = Pdu { header: ok.header.clone(), body: vec![0] };
        assert!(answer(&short, call).is_err());
    }
}
