//! The NetBIOS name service (RFC 1002 §4.2), as much as a Messenger
//! receiver and sender need: name queries and their answers, name
//! registration (B-node broadcast) and its defence, and node status
//! (what `nmblookup -A` asks).

use std::net::Ipv4Addr;

use crate::Error;
use crate::name::NetbiosName;

pub const OP_QUERY: u8 = 0;
pub const OP_REGISTRATION: u8 = 5;
pub const OP_RELEASE: u8 = 6;
pub const OP_WACK: u8 = 7;
pub const OP_REFRESH: u8 = 8;

pub const TYPE_NB: u16 = 0x0020;
pub const TYPE_NBSTAT: u16 = 0x0021;
pub const CLASS_IN: u16 = 0x0001;

/// Name already in use (a registration conflict).
pub const RCODE_ACT_ERR: u8 = 6;
/// Name not found.
pub const RCODE_NAM_ERR: u8 = 3;

/// NB_FLAGS / NAME_FLAGS bits.
pub const FLAG_GROUP: u16 = 0x8000;
pub const FLAG_ACTIVE: u16 = 0x0400;
/// The owner node type H (WINS first, then broadcast), in NB_FLAGS: what a
/// name registered with a WINS server says of its owner.
pub const FLAG_H_NODE: u16 = 0x6000;

/// How long a registered name is valid, in seconds (Samba uses 300000).
pub const DEFAULT_TTL: u32 = 300_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    pub response: bool,
    pub opcode: u8,
    pub authoritative: bool,
    pub truncated: bool,
    pub recursion_desired: bool,
    pub recursion_available: bool,
    pub broadcast: bool,
    pub rcode: u8,
}

impl Flags {
    fn to_u16(self) -> u16 {
        (u16::from(self.response) << 15)
            | (u16::from(self.opcode & 0xf) << 11)
            | (u16::from(self.authoritative) << 10)
            | (u16::from(self.truncated) << 9)
            | (u16::from(self.recursion_desired) << 8)
            | (u16::from(self.recursion_available) << 7)
            | (u16::from(self.broadcast) << 4)
            | u16::from(self.rcode & 0xf)
    }

    fn from_u16(v: u16) -> Flags {
        Flags {
            response: v & 0x8000 != 0,
            opcode: ((v >> 11) & 0xf) as u8,
            authoritative: v & 0x0400 != 0,
            truncated: v & 0x0200 != 0,
            recursion_desired: v & 0x0100 != 0,
            recursion_available: v & 0x0080 != 0,
            broadcast: v & 0x0010 != 0,
            rcode: (v & 0xf) as u8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: NetbiosName,
    pub qtype: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: NetbiosName,
    pub rtype: u16,
    pub ttl: u32,
    pub data: Vec<u8>,
}

impl Record {
    /// An NB record: one address with its flags.
    pub fn nb(name: NetbiosName, ttl: u32, flags: u16, ip: Ipv4Addr) -> Record {
        let mut data = flags.to_be_bytes().to_vec();
        data.extend_from_slice(&ip.octets());
        Record { name, rtype: TYPE_NB, ttl, data }
    }

    /// The addresses of an NB record.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        if self.rtype != TYPE_NB {
            return Vec::new();
        }
        self.data.chunks_exact(6).map(|c| Ipv4Addr::new(c[2], c[3], c[4], c[5])).collect()
    }

    /// The names listed in a node status answer.
    pub fn status_names(&self) -> Vec<(NetbiosName, u16)> {
        if self.rtype != TYPE_NBSTAT || self.data.is_empty() {
            return Vec::new();
        }
        let n = self.data[0] as usize;
        self.data[1..]
            .chunks_exact(18)
            .take(n)
            .map(|c| {
                let mut raw = [0u8; 16];
                raw.copy_from_slice(&c[..16]);
                (NetbiosName::from_raw(raw), u16::from_be_bytes([c[16], c[17]]))
            })
            .collect()
    }
}

/// A transaction id for a request of ours: random, so that an off-path
/// host cannot guess it and forge the answer (a name query's or a WINS
/// registration's) before the real one arrives; the clock only if the
/// system has no randomness to give.
pub fn transaction_id() -> u16 {
    getrandom::u32().map(|v| v as u16).unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        (nanos ^ (nanos >> 16)) as u16
    })
}

/// A name service packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packet {
    pub id: u16,
    pub flags: Flags,
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
}

fn read_name(buf: &[u8], pos: usize) -> Result<(NetbiosName, usize), Error> {
    let first = *buf.get(pos).ok_or(Error::Truncated("name"))?;
    if first & 0xc0 == 0xc0 {
        // A compression pointer, in practice to the question's name.
        let ptr = u16::from_be_bytes([first, *buf.get(pos + 1).ok_or(Error::Truncated("name pointer"))?]) & 0x3fff;
        let target = ptr as usize;
        if target >= pos {
            return Err(Error::Malformed("name pointer points forward".into()));
        }
        let (name, _) = NetbiosName::decode(&buf[target..])?;
        return Ok((name, 2));
    }
    NetbiosName::decode(&buf[pos..])
}

fn u16_at(buf: &[u8], pos: usize) -> Result<u16, Error> {
    buf.get(pos..pos + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or(Error::Truncated("name service packet"))
}

fn u32_at(buf: &[u8], pos: usize) -> Result<u32, Error> {
    buf.get(pos..pos + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(Error::Truncated("name service packet"))
}

impl Packet {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.flags.to_u16().to_be_bytes());
        for n in [self.questions.len(), self.answers.len(), self.authority.len(), self.additional.len()] {
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        for q in &self.questions {
            q.name.encode(&mut out);
            out.extend_from_slice(&q.qtype.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
        }
        for r in self.answers.iter().chain(&self.authority).chain(&self.additional) {
            // Records about the question's name point back to it, as Samba does.
            if self.questions.first().is_some_and(|q| q.name == r.name) {
                out.extend_from_slice(&0xc00cu16.to_be_bytes());
            } else {
                r.name.encode(&mut out);
            }
            out.extend_from_slice(&r.rtype.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&r.ttl.to_be_bytes());
            out.extend_from_slice(&(r.data.len() as u16).to_be_bytes());
            out.extend_from_slice(&r.data);
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Packet, Error> {
        if buf.len() < 12 {
            return Err(Error::Truncated("name service header"));
        }
        let counts: Vec<usize> = (0..4).map(|i| u16_at(buf, 4 + i * 2).map(usize::from)).collect::<Result<_, _>>()?;
        if counts.iter().sum::<usize>() > 16 {
            return Err(Error::Malformed("implausible record counts".into()));
        }
        let mut p = Packet { id: u16_at(buf, 0)?, flags: Flags::from_u16(u16_at(buf, 2)?), ..Packet::default() };
        let mut pos = 12;
        for _ in 0..counts[0] {
            let (name, used) = read_name(buf, pos)?;
            pos += used;
            p.questions.push(Question { name, qtype: u16_at(buf, pos)? });
            pos += 4;
        }
        for (i, count) in counts[1..].iter().enumerate() {
            for _ in 0..*count {
                let (name, used) = read_name(buf, pos)?;
                pos += used;
                let rtype = u16_at(buf, pos)?;
                let ttl = u32_at(buf, pos + 4)?;
                let len = u16_at(buf, pos + 8)? as usize;
                pos += 10;
                let data = buf.get(pos..pos + len).ok_or(Error::Truncated("resource record data"))?.to_vec();
                pos += len;
                let r = Record { name, rtype, ttl, data };
                match i {
                    0 => p.answers.push(r),
                    1 => p.authority.push(r),
                    _ => p.additional.push(r),
                }
            }
        }
        Ok(p)
    }

    /// A name query (broadcast, or unicast to a WINS server).
    pub fn name_query(id: u16, name: NetbiosName, broadcast: bool) -> Packet {
        Packet {
            id,
            flags: Flags { opcode: OP_QUERY, recursion_desired: true, broadcast, ..Flags::default() },
            questions: vec![Question { name, qtype: TYPE_NB }],
            ..Packet::default()
        }
    }

    /// A positive answer to a name query.
    pub fn query_response(query: &Packet, name: NetbiosName, ip: Ipv4Addr, group: bool) -> Packet {
        Packet {
            id: query.id,
            flags: Flags {
                response: true,
                opcode: OP_QUERY,
                authoritative: true,
                recursion_desired: query.flags.recursion_desired,
                ..Flags::default()
            },
            answers: vec![Record::nb(name, DEFAULT_TTL, if group { FLAG_GROUP } else { 0 }, ip)],
            ..Packet::default()
        }
    }

    /// A B-node name registration (broadcast).
    pub fn registration(id: u16, name: NetbiosName, ip: Ipv4Addr, group: bool) -> Packet {
        Packet {
            id,
            flags: Flags { opcode: OP_REGISTRATION, recursion_desired: true, broadcast: true, ..Flags::default() },
            questions: vec![Question { name, qtype: TYPE_NB }],
            additional: vec![Record::nb(name, DEFAULT_TTL, if group { FLAG_GROUP } else { 0 }, ip)],
            ..Packet::default()
        }
    }

    /// A registration with a WINS server (RFC 1002 §4.2.2, P/H-node):
    /// unicast, so no B flag; the owner says it is an H-node.
    pub fn wins_registration(id: u16, name: NetbiosName, ip: Ipv4Addr, ttl: u32) -> Packet {
        Packet {
            id,
            flags: Flags { opcode: OP_REGISTRATION, recursion_desired: true, ..Flags::default() },
            questions: vec![Question { name, qtype: TYPE_NB }],
            additional: vec![Record::nb(name, ttl, FLAG_H_NODE, ip)],
            ..Packet::default()
        }
    }

    /// A refresh of a name held at a WINS server (RFC 1002 §4.2.4).
    pub fn wins_refresh(id: u16, name: NetbiosName, ip: Ipv4Addr, ttl: u32) -> Packet {
        let mut p = Packet::wins_registration(id, name, ip, ttl);
        p.flags.opcode = OP_REFRESH;
        p.flags.recursion_desired = false;
        p
    }

    /// A name release (RFC 1002 §4.2.9/§4.2.10): broadcast to the segment,
    /// or unicast to the WINS server, when the name's owner gives it up.
    pub fn release(id: u16, name: NetbiosName, ip: Ipv4Addr, broadcast: bool) -> Packet {
        let flags = if broadcast { 0 } else { FLAG_H_NODE };
        Packet {
            id,
            flags: Flags { opcode: OP_RELEASE, broadcast, ..Flags::default() },
            questions: vec![Question { name, qtype: TYPE_NB }],
            additional: vec![Record::nb(name, 0, flags, ip)],
            ..Packet::default()
        }
    }

    /// For a WACK (wait for acknowledgement, RFC 1002 §4.2.16): how long
    /// the server asks us to wait for its final answer, in seconds.
    pub fn wack_ttl(&self) -> Option<u32> {
        (self.flags.response && self.flags.opcode == OP_WACK).then(|| self.answers.first().map_or(0, |r| r.ttl))
    }

    /// The TTL a positive registration or refresh answer granted.
    pub fn granted_ttl(&self) -> Option<u32> {
        let ok = self.flags.response
            && self.flags.rcode == 0
            && matches!(self.flags.opcode, OP_REGISTRATION | OP_REFRESH | 9);
        ok.then(|| self.answers.first().map_or(DEFAULT_TTL, |r| r.ttl))
    }

    /// "This name is mine": the answer that defends a unique name.
    pub fn registration_conflict(request: &Packet, name: NetbiosName, ip: Ipv4Addr) -> Packet {
        Packet {
            id: request.id,
            flags: Flags {
                response: true,
                opcode: OP_REGISTRATION,
                authoritative: true,
                recursion_desired: true,
                recursion_available: true,
                rcode: RCODE_ACT_ERR,
                ..Flags::default()
            },
            answers: vec![Record::nb(name, 0, 0, ip)],
            ..Packet::default()
        }
    }

    /// A node status request (`nmblookup -A`).
    pub fn status_query(id: u16) -> Packet {
        Packet {
            id,
            flags: Flags { opcode: OP_QUERY, ..Flags::default() },
            questions: vec![Question { name: NetbiosName::wildcard(), qtype: TYPE_NBSTAT }],
            ..Packet::default()
        }
    }

    /// The answer to a node status request: our names, all active.
    pub fn status_response(query: &Packet, names: &[(NetbiosName, bool)]) -> Packet {
        let qname = query.questions.first().map_or_else(NetbiosName::wildcard, |q| q.name);
        let mut data = vec![names.len() as u8];
        for (name, group) in names {
            data.extend_from_slice(&name.raw());
            let flags = FLAG_ACTIVE | if *group { FLAG_GROUP } else { 0 };
            data.extend_from_slice(&flags.to_be_bytes());
        }
        // Statistics: the unit id (MAC) and counters, all zero (46 bytes).
        data.extend_from_slice(&[0u8; 46]);
        Packet {
            id: query.id,
            flags: Flags { response: true, opcode: OP_QUERY, authoritative: true, ..Flags::default() },
            answers: vec![Record { name: qname, rtype: TYPE_NBSTAT, ttl: 0, data }],
            ..Packet::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transaction_ids_are_not_a_sequence() {
        let ids: Vec<u16> = (0..64).map(|_| transaction_id()).collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert!(distinct.len() >= 60, "{ids:?}");
        assert!(ids.windows(2).any(|w| w[1] != w[0].wrapping_add(1)), "sequential: {ids:?}");
        assert!(ids.windows(2).filter(|w| w[1].wrapping_sub(w[0]) < 16).count() < 8, "close together: {ids:?}");
    }

    use super::*;

    fn name(s: &str) -> NetbiosName {
        s.parse().unwrap()
    }

    #[test]
    fn query_and_answer_round_trip() {
        let q = Packet::name_query(0x1234, name("ALICE"), true);
        let bytes = q.encode();
        assert_eq!(&bytes[2..4], &[0x01, 0x10], "RD and B set");
        assert_eq!(Packet::decode(&bytes).unwrap(), q);
        let a = Packet::query_response(&q, name("ALICE"), Ipv4Addr::new(10, 0, 0, 7), false);
        let back = Packet::decode(&a.encode()).unwrap();
        assert!(back.flags.response);
        assert_eq!(back.answers[0].addresses(), vec![Ipv4Addr::new(10, 0, 0, 7)]);
    }

    #[test]
    fn registration_uses_a_pointer_to_the_question() {
        let r = Packet::registration(1, name("ALICE"), Ipv4Addr::new(10, 0, 0, 7), false);
        let bytes = r.encode();
        assert!(bytes.windows(2).any(|w| w == [0xc0, 0x0c]));
        let back = Packet::decode(&bytes).unwrap();
        assert_eq!(back.additional[0].name, name("ALICE"));
        assert_eq!(back.flags.opcode, OP_REGISTRATION);
    }

    #[test]
    fn wins_registration_refresh_and_release() {
        let ip = Ipv4Addr::new(10, 0, 0, 7);
        let r = Packet::wins_registration(3, name("ALICE"), ip, 600);
        let bytes = r.encode();
        assert_eq!(&bytes[2..4], &[0x29, 0x00], "opcode 5, RD, no B flag");
        let back = Packet::decode(&bytes).unwrap();
        assert_eq!(back.additional[0].data[..2], FLAG_H_NODE.to_be_bytes());
        assert_eq!(back.additional[0].ttl, 600);
        let f = Packet::decode(&Packet::wins_refresh(4, name("ALICE"), ip, 600).encode()).unwrap();
        assert_eq!((f.flags.opcode, f.flags.broadcast), (OP_REFRESH, false));
        let b = Packet::release(5, name("ALICE"), ip, true).encode();
        assert_eq!(&b[2..4], &[0x30, 0x10], "opcode 6 with the B flag");
        let u = Packet::decode(&Packet::release(5, name("ALICE"), ip, false).encode()).unwrap();
        assert_eq!((u.flags.opcode, u.flags.broadcast), (OP_RELEASE, false));
        assert_eq!(u.additional[0].addresses(), vec![ip]);
        assert_eq!(u.additional[0].ttl, 0);
    }

    #[test]
    fn answers_from_a_wins_server() {
        let q = Packet::wins_registration(9, name("ALICE"), Ipv4Addr::new(10, 0, 0, 7), 600);
        let mut ok = Packet::query_response(&q, name("ALICE"), Ipv4Addr::new(10, 0, 0, 7), false);
        ok.flags.opcode = OP_REGISTRATION;
        ok.answers[0].ttl = 3600;
        assert_eq!(Packet::decode(&ok.encode()).unwrap().granted_ttl(), Some(3600));
        let mut wack = ok.clone();
        wack.flags.opcode = OP_WACK;
        wack.answers[0].ttl = 2;
        let wack = Packet::decode(&wack.encode()).unwrap();
        assert_eq!((wack.wack_ttl(), wack.granted_ttl()), (Some(2), None));
        let no = Packet::registration_conflict(&q, name("ALICE"), Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(Packet::decode(&no.encode()).unwrap().granted_ttl(), None);
    }

    #[test]
    fn node_status_lists_names() {
        let q = Packet::status_query(9);
        let r = Packet::status_response(&q, &[(name("ALICE"), false), (name("WORKGROUP<00>"), true)]);
        let back = Packet::decode(&r.encode()).unwrap();
        let names = back.answers[0].status_names();
        assert_eq!(names.len(), 2);
        assert_eq!(names[0].0, name("ALICE"));
        assert_eq!(names[1].1 & FLAG_GROUP, FLAG_GROUP);
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert!(Packet::decode(&[0; 5]).is_err());
        let mut q = Packet::name_query(1, name("A"), true).encode();
        q.truncate(20);
        assert!(Packet::decode(&q).is_err());
        let mut counts = Packet::name_query(1, name("A"), true).encode();
        counts[5] = 200;
        assert!(Packet::decode(&counts).is_err());
        // A pointer that loops forward.
        let mut fwd = vec![0, 1, 0x85, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        fwd.extend_from_slice(&[0xc0, 0x20, 0, 0x20, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert!(Packet::decode(&fwd).is_err());
    }
}
