//! TCP 139/445 input: session service framing and the SMB inside it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use messenger_transport::nbss::Packet;
use messenger_transport::smb::{self, Smb};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((p, used))) = Packet::decode(rest) {
        rest = &rest[used..];
        let _ = p.session_names();
        if let Ok(m) = Smb::decode(&p.payload) {
            let _ = (smb::parse_names(&m), smb::parse_text(&m), smb::parse_dialects(&m));
            let _ = smb::parse_mailslot_write(&p.payload);
            let _ = Smb::decode(&m.encode());
        }
    }
});
