//! Text on the wire: an OEM code page (CP850 by default, as Samba), with
//! line breaks as 0x14.
//!
//! Windows turns CR, LF and CRLF into a single 0x14 in Messenger text
//! ([MS-MSRP] §2.2.3.1.1); receivers turn 0x14 back into a line break.
//! smbclient sends CRLF instead, which receivers also accept.

use crate::Error;

/// An OEM code page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodePage(u16);

impl CodePage {
    pub const CP850: CodePage = CodePage(850);

    /// A code page by number: 437, 850, 852, 866 and the other OEM pages.
    pub fn new(number: u16) -> Result<CodePage, Error> {
        if oem_cp::code_table::ENCODING_TABLE_CP_MAP.get(&number).is_some() {
            Ok(CodePage(number))
        } else {
            Err(Error::BadCodePage(number))
        }
    }

    pub fn number(self) -> u16 {
        self.0
    }

    /// Encodes text: characters the code page lacks become `?`; any line
    /// break becomes 0x14.
    pub fn encode(self, text: &str) -> Vec<u8> {
        let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
        let table = oem_cp::code_table::ENCODING_TABLE_CP_MAP.get(&self.0).expect("checked in new");
        let mut out = Vec::with_capacity(normalized.len());
        for line in normalized.split_inclusive('\n') {
            let (body, newline) = match line.strip_suffix('\n') {
                Some(b) => (b, true),
                None => (line, false),
            };
            out.extend(oem_cp::encode_string_lossy(body, table));
            if newline {
                out.push(0x14);
            }
        }
        out
    }

    /// Decodes text: 0x14 and CRLF become `\n`.
    pub fn decode(self, bytes: &[u8]) -> String {
        let table = oem_cp::code_table::DECODING_TABLE_CP_MAP.get(&self.0).expect("checked in new");
        let text = table.decode_string_lossy(bytes);
        text.replace('\u{14}', "\n").replace("\r\n", "\n")
    }
}

impl Default for CodePage {
    fn default() -> Self {
        CodePage::CP850
    }
}

/// Cuts `bytes` to at most `max` bytes, ending with `marker` when cut.
pub fn truncate_with_marker(mut bytes: Vec<u8>, max: usize, marker: &[u8]) -> Vec<u8> {
    if bytes.len() <= max {
        return bytes;
    }
    let keep = max.saturating_sub(marker.len());
    bytes.truncate(keep);
    bytes.extend_from_slice(&marker[..marker.len().min(max)]);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp850_like_samba() {
        // MESSENGER.md §3.3: é=0x82, ü=0x81, ï=0x8b, §=0xf5.
        let cp = CodePage::CP850;
        assert_eq!(cp.encode("éüï§"), vec![0x82, 0x81, 0x8b, 0xf5]);
        assert_eq!(cp.decode(&[0x82, 0x81, 0x8b, 0xf5]), "éüï§");
        assert_eq!(cp.encode("a€b"), b"a?b".to_vec(), "unmappable becomes ?");
    }

    #[test]
    fn line_breaks() {
        let cp = CodePage::CP850;
        assert_eq!(cp.encode("a\nb\r\nc\rd"), b"a\x14b\x14c\x14d".to_vec());
        assert_eq!(cp.decode(b"a\x14b\r\nc"), "a\nb\nc");
    }

    #[test]
    fn other_code_pages() {
        let cp = CodePage::new(866).unwrap();
        assert_eq!(cp.decode(&cp.encode("Привет")), "Привет");
        assert!(CodePage::new(1252).is_err());
    }

    #[test]
    fn truncation_keeps_the_marker_within_the_limit() {
        let t = truncate_with_marker(b"0123456789".to_vec(), 8, b"[...]");
        assert_eq!(t, b"012[...]".to_vec());
        assert_eq!(truncate_with_marker(b"short".to_vec(), 8, b"[...]"), b"short".to_vec());
    }
}
