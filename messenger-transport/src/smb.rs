//! SMB1 as far as Messenger needs it: the 32-byte header, the message
//! commands (0xD0 send, 0xD5 start, 0xD7 text, 0xD6 end), negotiate, and
//! the transaction (0x25) mailslot write. All fields little-endian
//! ([MS-CIFS], [MS-MSRP] §2.2.3, [MS-MAIL] §2.2.1).

use crate::Error;

pub const SMB_MAGIC: [u8; 4] = [0xff, b'S', b'M', b'B'];
pub const HEADER_LEN: usize = 32;

pub const COM_TRANSACTION: u8 = 0x25;
pub const COM_NEGOTIATE: u8 = 0x72;
pub const COM_SEND_MESSAGE: u8 = 0xd0;
pub const COM_SEND_START: u8 = 0xd5;
pub const COM_SEND_END: u8 = 0xd6;
pub const COM_SEND_TEXT: u8 = 0xd7;

/// Longest text block in one 0xD0 or 0xD7.
pub const MAX_BLOCK: usize = 128;

/// DOS error class and codes that mean "not accepting messages".
pub const ERRDOS: u8 = 0x01;
pub const ERRSRV: u8 = 0x02;
pub const ERROR_REQ_NOT_ACCEP: u16 = 71;
pub const ERR_MSGOFF: u16 = 82;
/// ERRSRV ERRaccess: our listener's answer to a message its policy refuses
/// (unsealed where seals are required, a seal that does not open).
pub const ERR_ACCESS: u16 = 4;
/// ERRSRV ERRnoroom, "no room to buffer the message": our listener's answer
/// to a sender over its rate, worth trying again later.
pub const ERR_NOROOM: u16 = 83;
/// NT status STATUS_REQUEST_NOT_ACCEPTED.
pub const STATUS_REQUEST_NOT_ACCEPTED: u32 = 0xc000_00d0;

/// Flags2 bit: the status field is an NT status.
pub const FLAGS2_NT_STATUS: u16 = 0x4000;

/// An SMB1 message: header fields, parameter words and data bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Smb {
    pub command: u8,
    /// NT status, or DOS class in the low byte and code in the high half.
    pub status: u32,
    pub flags: u8,
    pub flags2: u16,
    pub tid: u16,
    pub pid: u16,
    pub uid: u16,
    pub mid: u16,
    pub words: Vec<u16>,
    pub bytes: Vec<u8>,
}

impl Smb {
    pub fn request(command: u8, words: Vec<u16>, bytes: Vec<u8>) -> Smb {
        Smb { command, words, bytes, ..Smb::default() }
    }

    /// A reply to `req`, with the same ids, the reply flag and this status.
    pub fn reply_to(req: &Smb, status: u32, words: Vec<u16>) -> Smb {
        Smb {
            command: req.command,
            status,
            flags: 0x80,
            flags2: req.flags2 & FLAGS2_NT_STATUS,
            tid: req.tid,
            pid: req.pid,
            uid: req.uid,
            mid: req.mid,
            words,
            bytes: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 3 + self.words.len() * 2 + self.bytes.len());
        out.extend_from_slice(&SMB_MAGIC);
        out.push(self.command);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.push(self.flags);
        out.extend_from_slice(&self.flags2.to_le_bytes());
        out.extend_from_slice(&[0u8; 12]); // PIDHigh, SecuritySignature, Reserved
        out.extend_from_slice(&self.tid.to_le_bytes());
        out.extend_from_slice(&self.pid.to_le_bytes());
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&self.mid.to_le_bytes());
        out.push(self.words.len() as u8);
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&(self.bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.bytes);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Smb, Error> {
        if buf.len() < HEADER_LEN + 3 {
            return Err(Error::Truncated("SMB header"));
        }
        if buf[..4] != SMB_MAGIC {
            return Err(Error::Malformed("not an SMB1 message (no \\xffSMB)".into()));
        }
        let u16_at = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]);
        let wct = buf[HEADER_LEN] as usize;
        let words_end = HEADER_LEN + 1 + wct * 2;
        if buf.len() < words_end + 2 {
            return Err(Error::Truncated("SMB parameter words"));
        }
        let words = (0..wct).map(|i| u16_at(HEADER_LEN + 1 + i * 2)).collect();
        let bcc = u16_at(words_end) as usize;
        // Some senders count bytes beyond the buffer; take what is there.
        let bytes = buf[words_end + 2..].get(..bcc).unwrap_or(&buf[words_end + 2..]).to_vec();
        Ok(Smb {
            command: buf[4],
            status: u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]),
            flags: buf[9],
            flags2: u16_at(10),
            tid: u16_at(24),
            pid: u16_at(26),
            uid: u16_at(28),
            mid: u16_at(30),
            words,
            bytes,
        })
    }

    /// Whether this reply says "not accepting messages", in any of the
    /// three ways servers say it.
    pub fn is_not_accepting(&self) -> bool {
        if self.flags2 & FLAGS2_NT_STATUS != 0 {
            return self.status == STATUS_REQUEST_NOT_ACCEPTED;
        }
        let class = (self.status & 0xff) as u8;
        let code = (self.status >> 16) as u16;
        (class == ERRDOS && code == ERROR_REQ_NOT_ACCEP) || (class == ERRSRV && code == ERR_MSGOFF)
    }

    /// The DOS error (class, code) of this reply, if it carries one.
    pub fn dos_status(&self) -> Option<(u8, u16)> {
        if self.flags2 & FLAGS2_NT_STATUS != 0 || self.status == 0 {
            return None;
        }
        Some(((self.status & 0xff) as u8, (self.status >> 16) as u16))
    }

    pub fn is_error(&self) -> bool {
        self.status != 0
    }

    /// A DOS error status (class in the low byte, code in the high half).
    pub fn dos_error(class: u8, code: u16) -> u32 {
        u32::from(class) | (u32::from(code) << 16)
    }
}

/// Reads `04 name \0` (a buffer-format ASCII string) at `pos`.
fn read_string(bytes: &[u8], pos: &mut usize) -> Result<Vec<u8>, Error> {
    if bytes.get(*pos) != Some(&0x04) {
        return Err(Error::Malformed("expected a string (buffer format 0x04)".into()));
    }
    *pos += 1;
    let rest = &bytes[*pos..];
    let end = rest.iter().position(|b| *b == 0).ok_or(Error::Truncated("string"))?;
    *pos += end + 1;
    Ok(rest[..end].to_vec())
}

/// Reads `01 len16 data` (a buffer-format data block) at `pos`.
fn read_block(bytes: &[u8], pos: &mut usize) -> Result<Vec<u8>, Error> {
    if bytes.get(*pos) != Some(&0x01) {
        return Err(Error::Malformed("expected a data block (buffer format 0x01)".into()));
    }
    let len_bytes = bytes.get(*pos + 1..*pos + 3).ok_or(Error::Truncated("data block length"))?;
    let len = u16::from_le_bytes([len_bytes[0], len_bytes[1]]) as usize;
    *pos += 3;
    // Take what is there if the length overstates it (Samba does too).
    let end = (*pos + len).min(bytes.len());
    let data = bytes[*pos..end].to_vec();
    *pos = end;
    Ok(data)
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.push(0x04);
    out.extend_from_slice(s);
    out.push(0);
}

fn block(data: &[u8], out: &mut Vec<u8>) {
    out.push(0x01);
    out.extend_from_slice(&(data.len() as u16).to_le_bytes());
    out.extend_from_slice(data);
}

/// 0xD5: start a multi-block message.
pub fn send_start(from: &[u8], to: &[u8]) -> Smb {
    let mut b = Vec::new();
    string(from, &mut b);
    string(to, &mut b);
    Smb::request(COM_SEND_START, Vec::new(), b)
}

/// 0xD7: one block of text.
pub fn send_text(group: u16, text: &[u8]) -> Smb {
    let mut b = Vec::new();
    block(text, &mut b);
    Smb::request(COM_SEND_TEXT, vec![group], b)
}

/// 0xD6: end of the message.
pub fn send_end(group: u16) -> Smb {
    Smb::request(COM_SEND_END, vec![group], Vec::new())
}

/// 0xD0: a single-block message.
pub fn send_single(from: &[u8], to: &[u8], text: &[u8]) -> Smb {
    let mut b = Vec::new();
    string(from, &mut b);
    string(to, &mut b);
    block(text, &mut b);
    Smb::request(COM_SEND_MESSAGE, Vec::new(), b)
}

/// From, To and (for 0xD0) the text of a message request, in the OEM code page.
pub type MessageFields = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// From and To of a 0xD5 or 0xD0 request (and the text of a 0xD0).
pub fn parse_names(req: &Smb) -> Result<MessageFields, Error> {
    let mut pos = 0;
    let from = read_string(&req.bytes, &mut pos)?;
    let to = read_string(&req.bytes, &mut pos)?;
    let text = if req.command == COM_SEND_MESSAGE { Some(read_block(&req.bytes, &mut pos)?) } else { None };
    Ok((from, to, text))
}

/// The text of a 0xD7 request.
pub fn parse_text(req: &Smb) -> Result<Vec<u8>, Error> {
    read_block(&req.bytes, &mut 0)
}

/// The dialect strings of a negotiate request.
pub fn parse_dialects(req: &Smb) -> Vec<String> {
    req.bytes
        .split(|b| *b == 0)
        .filter_map(|d| d.strip_prefix(&[0x02]))
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect()
}

/// A minimal NT LM 0.12 negotiate response (share-level, no security
/// blob), enough for a client to go on to send a 0xD0.
pub fn negotiate_response(req: &Smb, dialect_index: u16) -> Smb {
    let mut r = Smb::reply_to(req, 0, Vec::new());
    if dialect_index == 0xffff {
        r.words = vec![0xffff];
        return r;
    }
    // DialectIndex, SecurityMode|MaxMpxCount, MaxNumberVcs, MaxBufferSize
    // (2 words), MaxRawSize (2), SessionKey (2), Capabilities (2),
    // SystemTime (4), ServerTimeZone, ChallengeLength (low byte).
    r.words = vec![dialect_index, 0x0100, 0x0001, 4356, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    r
}

/// SMB_COM_TRANSACTION mailslot write (as in a WinPopup datagram).
pub fn mailslot_write(mailslot: &str, body: &[u8], pad: bool) -> Smb {
    let name_len = mailslot.len() + 1;
    let pad_len = usize::from(pad);
    // 32 header + 1 WCT + 17*2 words + 2 BCC = 69; DataOffset counts from
    // the header start.
    let data_offset = (HEADER_LEN + 1 + 17 * 2 + 2 + name_len + pad_len) as u16;
    let total = body.len() as u16;
    let words = vec![
        0,     // TotalParameterCount
        total, // TotalDataCount
        0,     // MaxParameterCount
        0,     // MaxDataCount
        0,     // MaxSetupCount, Reserved
        0,     // Flags
        0,
        0,     // Timeout
        0,     // Reserved2
        0,     // ParameterCount
        0,     // ParameterOffset
        total, // DataCount
        data_offset,
        3, // SetupCount, Reserved3
        1, // Setup[0]: mailslot write
        0, // Setup[1]: priority
        2, // Setup[2]: class 2, unreliable & broadcast
    ];
    let mut bytes = Vec::with_capacity(name_len + pad_len + body.len());
    bytes.extend_from_slice(mailslot.as_bytes());
    bytes.push(0);
    bytes.extend(std::iter::repeat_n(0, pad_len));
    bytes.extend_from_slice(body);
    Smb::request(COM_TRANSACTION, words, bytes)
}

/// The mailslot name and data of a transaction mailslot write. `raw` is the
/// whole SMB message, because DataOffset counts from its start.
pub fn parse_mailslot_write(raw: &[u8]) -> Result<(String, Vec<u8>), Error> {
    let smb = Smb::decode(raw)?;
    if smb.command != COM_TRANSACTION {
        return Err(Error::Malformed(format!("SMB command {:#04x}, expected a transaction", smb.command)));
    }
    if smb.words.len() < 17 || smb.words[13] & 0xff != 3 || smb.words[14] != 1 {
        return Err(Error::Malformed("not a mailslot write (setup)".into()));
    }
    let count = smb.words[11] as usize;
    let offset = smb.words[12] as usize;
    let name_end = smb.bytes.iter().position(|b| *b == 0).ok_or(Error::Truncated("mailslot name"))?;
    let name = String::from_utf8_lossy(&smb.bytes[..name_end]).into_owned();
    let data = raw
        .get(offset..offset + count)
        .ok_or_else(|| Error::Malformed(format!("mailslot data ({count} bytes at {offset}) beyond the message")))?;
    Ok((name, data.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn decodes_smbclient_requests() {
        // captures/smbclient-M-OK.payloads.txt, without the 4-byte NBSS header.
        let d5 = Smb::decode(&hex(
            "ff534d42d5000000000000000000000000000000000000000000392c0000000000110004616c696365000450524f544f53525600",
        ))
        .unwrap();
        assert_eq!(d5.command, COM_SEND_START);
        assert_eq!(d5.pid, 0x2c39);
        let (from, to, text) = parse_names(&d5).unwrap();
        assert_eq!((from.as_slice(), to.as_slice(), text), (&b"alice"[..], &b"PROTOSRV"[..], None));
        let d7 = Smb::decode(&hex("ff534d42d7000000000000000000000000000000000000000000392c00000000010000150001120068656c6c6f2066726f6d20616c6963650d0a")).unwrap();
        assert_eq!(d7.words, vec![0]);
        assert_eq!(parse_text(&d7).unwrap(), b"hello from alice\r\n".to_vec());
    }

    #[test]
    fn requests_round_trip() {
        let m = send_start(b"ALERTER", b"BOB");
        assert_eq!(Smb::decode(&m.encode()).unwrap(), m);
        let t = send_text(7, &[0x82; 128]);
        assert_eq!(parse_text(&Smb::decode(&t.encode()).unwrap()).unwrap(), vec![0x82; 128]);
        let s = send_single(b"A", b"B", b"hi");
        assert_eq!(parse_names(&Smb::decode(&s.encode()).unwrap()).unwrap().2, Some(b"hi".to_vec()));
    }

    #[test]
    fn recognises_not_accepting() {
        let req = send_start(b"A", b"B");
        assert!(Smb::reply_to(&req, Smb::dos_error(ERRDOS, ERROR_REQ_NOT_ACCEP), vec![]).is_not_accepting());
        assert!(Smb::reply_to(&req, Smb::dos_error(ERRSRV, ERR_MSGOFF), vec![]).is_not_accepting());
        let mut nt = Smb::reply_to(&req, STATUS_REQUEST_NOT_ACCEPTED, vec![]);
        nt.flags2 = FLAGS2_NT_STATUS;
        assert!(nt.is_not_accepting());
        assert!(!Smb::reply_to(&req, 0, vec![]).is_not_accepting());
    }

    #[test]
    fn mailslot_writes_honour_data_offset() {
        for pad in [false, true] {
            let raw = mailslot_write("\\MAILSLOT\\MESSNGR", b"A\0B\0hi\0", pad).encode();
            let smb = Smb::decode(&raw).unwrap();
            assert_eq!(smb.words[12], if pad { 88 } else { 87 });
            let (name, data) = parse_mailslot_write(&raw).unwrap();
            assert_eq!(name, "\\MAILSLOT\\MESSNGR");
            assert_eq!(data, b"A\0B\0hi\0".to_vec());
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(Smb::decode(b"\xffSMB").is_err());
        assert!(Smb::decode(&[0u8; 40]).is_err());
        let mut raw = mailslot_write("\\MAILSLOT\\MESSNGR", b"x", false).encode();
        raw[HEADER_LEN + 1 + 12 * 2] = 200; // DataOffset past the end
        assert!(parse_mailslot_write(&raw).is_err());
        let bad = Smb::request(COM_SEND_START, vec![], vec![0x04, b'a']);
        assert!(parse_names(&bad).is_err());
    }
}
