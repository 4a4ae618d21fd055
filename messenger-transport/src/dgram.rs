//! The NetBIOS datagram service (RFC 1002 §4.4) and the WinPopup message
//! it carries: an SMB mailslot write to `\MAILSLOT\MESSNGR` whose data is
//! `From\0To\0Text\0` in the OEM code page.

use std::net::Ipv4Addr;

use crate::Error;
use crate::name::NetbiosName;
use crate::smb::{self, parse_mailslot_write};

pub const DIRECT_UNIQUE: u8 = 0x10;
pub const DIRECT_GROUP: u8 = 0x11;
pub const BROADCAST: u8 = 0x12;
pub const DATAGRAM_ERROR: u8 = 0x13;

/// The Messenger mailslot.
pub const MESSNGR: &str = "\\MAILSLOT\\MESSNGR";
/// The mailslot of sealed alerter messages; classic receivers do not read it.
pub const ALERTER_SEALED: &str = "\\MAILSLOT\\ALERTER\\SEALED";

/// Largest user data Samba and most stacks accept in one datagram.
pub const MAX_USER_DATA: usize = 576;

/// A datagram service packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub kind: u8,
    pub flags: u8,
    pub id: u16,
    pub source_ip: Ipv4Addr,
    pub source_port: u16,
    pub source: NetbiosName,
    pub destination: NetbiosName,
    pub user_data: Vec<u8>,
}

impl Datagram {
    /// An unfragmented datagram (FIRST set, B-node).
    pub fn new(
        kind: u8,
        id: u16,
        source_ip: Ipv4Addr,
        source: NetbiosName,
        destination: NetbiosName,
        user_data: Vec<u8>,
    ) -> Datagram {
        Datagram { kind, flags: 0x02, id, source_ip, source_port: 138, source, destination, user_data }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut names = Vec::with_capacity(68);
        self.source.encode(&mut names);
        self.destination.encode(&mut names);
        let mut out = Vec::with_capacity(14 + names.len() + self.user_data.len());
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.source_ip.octets());
        out.extend_from_slice(&self.source_port.to_be_bytes());
        // DGM_LENGTH counts the names and the user data, not the header.
        out.extend_from_slice(&((names.len() + self.user_data.len()) as u16).to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&names);
        out.extend_from_slice(&self.user_data);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Datagram, Error> {
        if buf.len() < 14 {
            return Err(Error::Truncated("datagram header"));
        }
        let kind = buf[0];
        if !(DIRECT_UNIQUE..=BROADCAST).contains(&kind) {
            return Err(Error::Malformed(format!("datagram type {kind:#04x} carries no message")));
        }
        let flags = buf[1];
        if flags & 0x01 != 0 || flags & 0x02 == 0 {
            return Err(Error::Malformed("fragmented datagrams are not supported".into()));
        }
        if u16::from_be_bytes([buf[12], buf[13]]) != 0 {
            return Err(Error::Malformed("datagram with a packet offset (a fragment)".into()));
        }
        let len = u16::from_be_bytes([buf[10], buf[11]]) as usize;
        let body = buf.get(14..14 + len).ok_or(Error::Truncated("datagram (shorter than its length)"))?;
        let (source, a) = NetbiosName::decode(body)?;
        let (destination, b) = NetbiosName::decode(&body[a..])?;
        Ok(Datagram {
            kind,
            flags,
            id: u16::from_be_bytes([buf[2], buf[3]]),
            source_ip: Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]),
            source_port: u16::from_be_bytes([buf[8], buf[9]]),
            source,
            destination,
            user_data: body[a + b..].to_vec(),
        })
    }

    /// The mailslot name and data this datagram writes.
    pub fn mailslot(&self) -> Result<(String, Vec<u8>), Error> {
        parse_mailslot_write(&self.user_data)
    }
}

/// `From\0To\0Text\0`, each in the OEM code page.
pub fn messenger_body(from: &[u8], to: &[u8], text: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(from.len() + to.len() + text.len() + 3);
    for part in [from, to, text] {
        b.extend_from_slice(part);
        b.push(0);
    }
    b
}

/// From, To and Text of a Messenger body, still in the OEM code page.
pub type MessengerBody = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Splits a Messenger body. Tolerates a missing final NUL and trailing
/// bytes after it, as real senders produce both.
pub fn parse_messenger_body(data: &[u8]) -> Result<MessengerBody, Error> {
    let mut parts = data.splitn(3, |b| *b == 0);
    let from = parts.next().ok_or(Error::Truncated("messenger body"))?;
    let to = parts.next().ok_or(Error::Truncated("messenger body: no recipient"))?;
    let rest = parts.next().ok_or(Error::Truncated("messenger body: no text"))?;
    let text = rest.split(|b| *b == 0).next().unwrap_or(rest);
    if from.is_empty() {
        return Err(Error::Malformed("messenger body without a sender".into()));
    }
    Ok((from.to_vec(), to.to_vec(), text.to_vec()))
}

/// The whole user data of a WinPopup datagram.
pub fn messenger_user_data(mailslot: &str, body: &[u8]) -> Vec<u8> {
    smb::mailslot_write(mailslot, body, false).encode()
}

/// Room for text in one datagram, after the names and the framing.
pub fn max_text(mailslot: &str, from: usize, to: usize) -> usize {
    // SMB header and transaction words (69) + mailslot name + NUL, then the
    // body's three strings with their NULs.
    MAX_USER_DATA.saturating_sub(69 + mailslot.len() + 1 + from + to + 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOPAD: &[u8] = include_bytes!("../tests/captures/dgram-unique-nopad.bin");
    const PAD: &[u8] = include_bytes!("../tests/captures/dgram-unique-pad.bin");
    const GROUP: &[u8] = include_bytes!("../tests/captures/dgram-group.bin");

    #[test]
    fn decodes_the_reference_datagrams() {
        for (bytes, kind, dest) in [
            (NOPAD, DIRECT_UNIQUE, "PROTOSRV<03>"),
            (PAD, DIRECT_UNIQUE, "PROTOSRV<03>"),
            (GROUP, DIRECT_GROUP, "PROTOGRP<03>"),
        ] {
            let d = Datagram::decode(bytes).unwrap();
            assert_eq!(d.kind, kind);
            assert_eq!(d.source.to_string(), "ALICEPC<00>");
            assert_eq!(d.destination.to_string(), dest);
            let (slot, data) = d.mailslot().unwrap();
            assert_eq!(slot, MESSNGR);
            let (from, _to, text) = parse_messenger_body(&data).unwrap();
            assert_eq!(from, b"ALICE".to_vec());
            assert!(!text.is_empty());
        }
        let d = Datagram::decode(NOPAD).unwrap();
        let (_, data) = d.mailslot().unwrap();
        assert_eq!(parse_messenger_body(&data).unwrap().2, b"Hello via \\MAILSLOT\\MESSNGR".to_vec());
    }

    #[test]
    fn encodes_byte_for_byte_like_the_reference() {
        // MESSENGER.md §2.5: the same fields give the same 212 bytes.
        let d = Datagram::decode(NOPAD).unwrap();
        let again = Datagram::new(
            d.kind,
            d.id,
            d.source_ip,
            d.source,
            d.destination,
            messenger_user_data(MESSNGR, &messenger_body(b"ALICE", b"PROTOSRV", b"Hello via \\MAILSLOT\\MESSNGR")),
        );
        assert_eq!(again.encode(), NOPAD);
    }

    #[test]
    fn bodies_tolerate_real_world_variations() {
        assert_eq!(parse_messenger_body(b"A\0B\0hi").unwrap().2, b"hi".to_vec(), "no final NUL");
        assert_eq!(parse_messenger_body(b"A\0B\0hi\0junk").unwrap().2, b"hi".to_vec(), "trailing bytes");
        assert!(parse_messenger_body(b"A\0B").is_err());
        assert!(parse_messenger_body(b"\0B\0x\0").is_err());
    }

    #[test]
    fn malformed_datagrams_are_errors() {
        assert!(Datagram::decode(&NOPAD[..20]).is_err());
        let mut frag = NOPAD.to_vec();
        frag[1] = 0x03;
        assert!(Datagram::decode(&frag).is_err());
        let mut short = NOPAD.to_vec();
        short[11] = 0xff;
        assert!(Datagram::decode(&short).is_err());
        let mut err = NOPAD.to_vec();
        err[0] = DATAGRAM_ERROR;
        assert!(Datagram::decode(&err).is_err());
    }
}
