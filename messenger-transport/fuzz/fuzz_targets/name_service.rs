//! UDP 137 input: a name service packet.
#![no_main]
use libfuzzer_sys::fuzz_target;
use messenger_transport::nbns::Packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        for r in p.answers.iter().chain(&p.additional) {
            let _ = (r.addresses(), r.status_names());
        }
        let _ = Packet::decode(&p.encode());
    }
});
