//! Acknowledgement and popup-footer text: reading must refuse or give back
//! what writes the same text again, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use messenger_transport::ack::{AckMessage, AckRef};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(m) = AckMessage::parse(&text) {
        assert_eq!(AckMessage::parse(&m.text()).as_ref(), Ok(&m));
    }
    if let Some((r, end)) = AckRef::find(&text) {
        assert!(end <= text.len());
        assert_eq!(AckRef::find(&r.footer()).map(|(again, _)| again), Some(r));
    }
});
