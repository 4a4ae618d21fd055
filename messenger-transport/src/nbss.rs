//! The NetBIOS session service (RFC 1002 §4.3): a 4-byte header (type,
//! flags, 16-bit big-endian length with a 17th bit in the flags) in front
//! of every packet on TCP 139, and the same header on direct TCP 445.

use crate::Error;
use crate::name::NetbiosName;

pub const SESSION_MESSAGE: u8 = 0x00;
pub const SESSION_REQUEST: u8 = 0x81;
pub const POSITIVE_RESPONSE: u8 = 0x82;
pub const NEGATIVE_RESPONSE: u8 = 0x83;
pub const RETARGET_RESPONSE: u8 = 0x84;
pub const KEEP_ALIVE: u8 = 0x85;

/// Negative response codes.
pub const CALLED_NAME_NOT_PRESENT: u8 = 0x82;

/// Largest payload the header can describe.
pub const MAX_LENGTH: usize = 0x1_ffff;

/// One session service packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub kind: u8,
    pub payload: Vec<u8>,
}

impl Packet {
    pub fn new(kind: u8, payload: Vec<u8>) -> Packet {
        Packet { kind, payload }
    }

    pub fn message(payload: Vec<u8>) -> Packet {
        Packet::new(SESSION_MESSAGE, payload)
    }

    pub fn session_request(called: &NetbiosName, calling: &NetbiosName) -> Packet {
        let mut p = Vec::with_capacity(68);
        called.encode(&mut p);
        calling.encode(&mut p);
        Packet::new(SESSION_REQUEST, p)
    }

    pub fn encode(&self) -> Vec<u8> {
        let len = self.payload.len().min(MAX_LENGTH);
        let mut out = Vec::with_capacity(4 + len);
        out.push(self.kind);
        out.push(u8::from(len > 0xffff));
        out.extend_from_slice(&((len & 0xffff) as u16).to_be_bytes());
        out.extend_from_slice(&self.payload[..len]);
        out
    }

    /// The payload length a header announces.
    pub fn header_length(header: [u8; 4]) -> usize {
        (usize::from(header[1] & 1) << 16) | usize::from(u16::from_be_bytes([header[2], header[3]]))
    }

    /// Decodes one packet from the start of `buf`: `Ok(None)` when more
    /// bytes are needed, else the packet and the bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(Packet, usize)>, Error> {
        let Some(header) = buf.get(..4) else { return Ok(None) };
        let header: [u8; 4] = header.try_into().expect("four bytes");
        if header[1] & !1 != 0 {
            return Err(Error::Malformed(format!("session service flags {:#04x}", header[1])));
        }
        if ![SESSION_MESSAGE, SESSION_REQUEST, POSITIVE_RESPONSE, NEGATIVE_RESPONSE, RETARGET_RESPONSE, KEEP_ALIVE]
            .contains(&header[0])
        {
            return Err(Error::Malformed(format!("session service packet type {:#04x}", header[0])));
        }
        let len = Packet::header_length(header);
        let Some(payload) = buf.get(4..4 + len) else { return Ok(None) };
        Ok(Some((Packet::new(header[0], payload.to_vec()), 4 + len)))
    }

    /// The called and calling names of a session request.
    pub fn session_names(&self) -> Result<(NetbiosName, NetbiosName), Error> {
        if self.kind != SESSION_REQUEST {
            return Err(Error::Malformed("not a session request".into()));
        }
        let (called, used) = NetbiosName::decode(&self.payload)?;
        let (calling, _) = NetbiosName::decode(&self.payload[used..])?;
        Ok((called, calling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_request_matches_smbclient() {
        // The first payload of captures/smbclient-M-OK.payloads.txt.
        let called = NetbiosName::new("PROTOSRV", 3).unwrap();
        let calling = NetbiosName::new("ALICEPC", 0).unwrap();
        let p = Packet::session_request(&called, &calling).encode();
        let expected = "8100004420464146434550464545504644464346474341434143414341434143414341414400204542454d454a454445464641454443414341434143414341434143414341414100";
        let hex: String = p.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
        let (back, used) = Packet::decode(&p).unwrap().unwrap();
        assert_eq!(used, p.len());
        assert_eq!(back.session_names().unwrap(), (called, calling));
    }

    #[test]
    fn partial_and_malformed_input() {
        let p = Packet::message(vec![1, 2, 3]).encode();
        assert_eq!(Packet::decode(&p[..5]).unwrap(), None);
        assert_eq!(Packet::decode(&p[..2]).unwrap(), None);
        assert!(Packet::decode(&[0x42, 0, 0, 0]).is_err());
        assert!(Packet::decode(&[0x00, 0x80, 0, 0]).is_err());
        let big = Packet::message(vec![7; 70_000]).encode();
        assert_eq!(big[1], 1, "17th length bit");
        assert_eq!(Packet::decode(&big).unwrap().unwrap().0.payload.len(), 70_000);
    }
}
