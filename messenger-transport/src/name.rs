//! NetBIOS names: 15 characters, uppercase, space-padded, plus a suffix
//! byte (`<03>` is the Messenger service), and their first-level encoding
//! on the wire (RFC 1001 §14, RFC 1002 §4.1).

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The Messenger service suffix.
pub const MESSENGER: u8 = 0x03;
/// Workstation service.
pub const WORKSTATION: u8 = 0x00;
/// File server service.
pub const SERVER: u8 = 0x20;

/// A NetBIOS name with its suffix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetbiosName {
    /// Uppercase, padded with spaces.
    bytes: [u8; 15],
    pub suffix: u8,
}

impl NetbiosName {
    /// A name from text: at most 15 bytes once uppercased, no control
    /// characters. `*` alone is the wildcard used by node status queries.
    pub fn new(name: &str, suffix: u8) -> Result<NetbiosName, Error> {
        let upper = name.to_ascii_uppercase();
        if upper.is_empty() {
            return Err(Error::BadName("a NetBIOS name cannot be empty".into()));
        }
        if upper.len() > 15 {
            return Err(Error::BadName(format!("`{name}` is longer than 15 characters")));
        }
        if !upper.bytes().all(|b| (0x20..0x7f).contains(&b) && !b"\\/:*?\"<>|".contains(&b) || upper == "*") {
            return Err(Error::BadName(format!("`{name}` has characters a NetBIOS name cannot have")));
        }
        let mut bytes = [b' '; 15];
        bytes[..upper.len()].copy_from_slice(upper.as_bytes());
        Ok(NetbiosName { bytes, suffix })
    }

    /// The wildcard `*` (padded with NULs, as node status queries use it).
    pub fn wildcard() -> NetbiosName {
        let mut bytes = [0u8; 15];
        bytes[0] = b'*';
        NetbiosName { bytes, suffix: 0 }
    }

    pub fn with_suffix(self, suffix: u8) -> NetbiosName {
        NetbiosName { suffix, ..self }
    }

    /// The name without padding.
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.bytes).trim_end_matches([' ', '\0']).to_string()
    }

    /// The 16 raw bytes: padded name and suffix.
    pub fn raw(&self) -> [u8; 16] {
        let mut raw = [0u8; 16];
        raw[..15].copy_from_slice(&self.bytes);
        raw[15] = self.suffix;
        raw
    }

    pub fn from_raw(raw: [u8; 16]) -> NetbiosName {
        let mut bytes = [0u8; 15];
        bytes.copy_from_slice(&raw[..15]);
        NetbiosName { bytes, suffix: raw[15] }
    }

    /// First-level encoding: 0x20, 32 letters, 0x00 (no scope): 34 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(0x20);
        for b in self.raw() {
            out.push(b'A' + (b >> 4));
            out.push(b'A' + (b & 0x0f));
        }
        out.push(0);
    }

    pub fn encoded(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(34);
        self.encode(&mut v);
        v
    }

    /// Decodes an encoded name at the start of `buf`; returns it and the
    /// bytes used. A scope (further labels) is skipped; a compression
    /// pointer (used in name service answers) ends the name.
    pub fn decode(buf: &[u8]) -> Result<(NetbiosName, usize), Error> {
        let len = *buf.first().ok_or(Error::Truncated("NetBIOS name"))? as usize;
        if len != 0x20 {
            return Err(Error::Malformed(format!("NetBIOS name label of length {len}, expected 32")));
        }
        let letters = buf.get(1..33).ok_or(Error::Truncated("NetBIOS name"))?;
        let mut raw = [0u8; 16];
        for (i, pair) in letters.chunks_exact(2).enumerate() {
            let hi = pair[0].wrapping_sub(b'A');
            let lo = pair[1].wrapping_sub(b'A');
            if hi > 15 || lo > 15 {
                return Err(Error::Malformed("NetBIOS name is not first-level encoded".into()));
            }
            raw[i] = (hi << 4) | lo;
        }
        // Skip the scope labels up to the terminating zero.
        let mut pos = 33;
        loop {
            let l = *buf.get(pos).ok_or(Error::Truncated("NetBIOS name scope"))? as usize;
            if l == 0 {
                pos += 1;
                break;
            }
            if l & 0xc0 == 0xc0 {
                pos += 2;
                break;
            }
            if l > 63 {
                return Err(Error::Malformed("bad NetBIOS scope label".into()));
            }
            pos += 1 + l;
        }
        if pos > buf.len() {
            return Err(Error::Truncated("NetBIOS name scope"));
        }
        Ok((NetbiosName::from_raw(raw), pos))
    }
}

impl fmt::Display for NetbiosName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}<{:02x}>", self.name(), self.suffix)
    }
}

impl fmt::Debug for NetbiosName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetbiosName({self})")
    }
}

impl FromStr for NetbiosName {
    type Err = Error;

    /// `NAME`, `NAME#03` (nmblookup's form) or `NAME<03>` (tshark's form);
    /// without a suffix, the Messenger service `<03>`.
    fn from_str(s: &str) -> Result<NetbiosName, Error> {
        let parse_hex = |h: &str| {
            u8::from_str_radix(h, 16).map_err(|_| Error::BadName(format!("`{h}` is not a hex NetBIOS suffix")))
        };
        if let Some((name, suffix)) = s.split_once('#') {
            return NetbiosName::new(name, parse_hex(suffix)?);
        }
        if let Some(stripped) = s.strip_suffix('>')
            && let Some((name, suffix)) = stripped.rsplit_once('<')
        {
            return NetbiosName::new(name, parse_hex(suffix)?);
        }
        NetbiosName::new(s, MESSENGER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_samba() {
        // MESSENGER.md §2.2: PROTOSRV<03>.
        let n = NetbiosName::new("protosrv", MESSENGER).unwrap();
        assert_eq!(&n.encoded()[1..33], b"FAFCEPFEEPFDFCFGCACACACACACACAAD");
        assert_eq!(n.to_string(), "PROTOSRV<03>");
        let (back, used) = NetbiosName::decode(&n.encoded()).unwrap();
        assert_eq!((back, used), (n, 34));
    }

    #[test]
    fn parses_the_usual_spellings() {
        assert_eq!("alice".parse::<NetbiosName>().unwrap().to_string(), "ALICE<03>");
        assert_eq!("ALICE#20".parse::<NetbiosName>().unwrap().suffix, 0x20);
        assert_eq!("ALICE<00>".parse::<NetbiosName>().unwrap().suffix, 0);
        assert!("A-VERY-LONG-MACHINE".parse::<NetbiosName>().is_err());
        assert!("".parse::<NetbiosName>().is_err());
        assert!("bad\\name".parse::<NetbiosName>().is_err());
    }

    #[test]
    fn rejects_malformed_encodings() {
        assert!(NetbiosName::decode(&[]).is_err());
        assert!(NetbiosName::decode(&[0x20, b'A']).is_err());
        let mut bad = NetbiosName::new("X", 3).unwrap().encoded();
        bad[5] = b'z';
        assert!(NetbiosName::decode(&bad).is_err());
        let mut scoped = NetbiosName::new("X", 3).unwrap().encoded();
        scoped.pop();
        scoped.extend_from_slice(&[3, b'c', b'o', b'm', 0]);
        assert_eq!(NetbiosName::decode(&scoped).unwrap().1, 38);
    }
}
