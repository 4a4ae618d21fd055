//! Sealed message input: opening must reject, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use messenger_transport::seal::{SealKey, open};

fuzz_target!(|data: &[u8]| {
    let key = SealKey::from_bytes(&[7u8; 32]).expect("a valid key");
    let _ = open(&key, data);
});
