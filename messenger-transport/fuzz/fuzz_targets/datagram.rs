//! UDP 138 input: a datagram, its mailslot write, its messenger body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use messenger_transport::dgram::{Datagram, parse_messenger_body};
use messenger_transport::CodePage;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Datagram::decode(data) {
        // What decodes must encode and decode to the same thing.
        assert_eq!(Datagram::decode(&d.encode()).as_ref(), Ok(&d));
        if let Ok((_, body)) = d.mailslot() {
            if let Ok((from, to, text)) = parse_messenger_body(&body) {
                let cp = CodePage::default();
                let _ = (cp.decode(&from), cp.decode(&to), cp.decode(&text));
            }
        }
    }
});
