//! Sealed messages: what the original Messenger lacked.
//!
//! Classic Messenger has no authentication, which is why it became a spam
//! channel. With a workgroup key, alerter senders seal each message with
//! ChaCha20-Poly1305 (an AEAD): sender, recipient, time, a unique id,
//! severity and text are encrypted and authenticated together. A receiver
//! that requires seals drops anything unsealed, tampered with, replayed or
//! outside its time window, and says why. docs/sealed-messages.md
//! describes the wire format.
//!
//! Sealed messages travel as mailslot writes to `\MAILSLOT\ALERTER\SEALED`
//! (a datagram, or the same SMB over a session for longer ones), which
//! classic receivers do not read: they never show the ciphertext.

use std::collections::HashMap;
use std::time::Duration;

use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// "ALRT", then the format version.
pub const MAGIC: &[u8; 4] = b"ALRT";
pub const VERSION: u8 = 1;
const HEADER: usize = 4 + 1 + 8;
const NONCE: usize = 12;

/// Why a sealed message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("not a sealed message")]
    NotSealed,
    #[error("sealed with an unknown key (key id {0}); is the workgroup key the same everywhere?")]
    UnknownKey(String),
    #[error("tampered with or corrupted: the seal does not verify")]
    Tampered,
    #[error("sealed message version {0} is not supported")]
    Version(u8),
    #[error("the sealed content is not valid: {0}")]
    BadContent(String),
    #[error("replayed: message {0} was already received")]
    Replayed(String),
    #[error("stale: sent {0} s away from now, outside the accepted window")]
    Stale(i64),
    #[error("addressed to {0}, not to this receiver")]
    WrongRecipient(String),
    #[error("bad key file: {0}")]
    BadKey(String),
}

/// A workgroup key.
#[derive(Clone)]
pub struct SealKey {
    key: Key,
    id: [u8; 8],
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey(id {})", hex(&self.id))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl SealKey {
    /// A key from a key file's contents: 64 hex digits (what `alerter
    /// keygen` writes), optionally surrounded by whitespace.
    pub fn from_text(text: &str) -> Result<SealKey, SealError> {
        let t = text.trim();
        if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SealError::BadKey(
                "expected 64 hex digits (a 256-bit key); make one with `alerter keygen`".into(),
            ));
        }
        let bytes: Vec<u8> =
            (0..32).map(|i| u8::from_str_radix(&t[i * 2..i * 2 + 2], 16).expect("hex checked")).collect();
        SealKey::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SealKey, SealError> {
        let key = Key::try_from(bytes).map_err(|_| SealError::BadKey("a key is 32 bytes".into()))?;
        let digest = Sha256::digest(bytes);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Ok(SealKey { key, id })
    }

    /// A new random key as 64 hex digits.
    pub fn generate_text() -> String {
        hex(&Key::generate())
    }

    /// Identifies the key without revealing it.
    pub fn id(&self) -> String {
        hex(&self.id)
    }
}

/// What a sealed message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub from: String,
    pub to: String,
    /// Unix time in seconds when it was sealed.
    pub time: i64,
    /// Unique per message (hex), for replay detection.
    pub id: String,
    pub severity: String,
    pub text: String,
}

impl Sealed {
    /// A new message with a fresh random id.
    pub fn new(from: &str, to: &str, time: i64, severity: &str, text: &str) -> Sealed {
        Sealed {
            from: from.into(),
            to: to.into(),
            time,
            id: hex(&Nonce::generate()),
            severity: severity.into(),
            text: text.into(),
        }
    }
}

/// Seals a message: `ALRT 01 keyid(8) nonce(12) ciphertext+tag`, with the
/// header authenticated as associated data.
pub fn seal(key: &SealKey, m: &Sealed) -> Vec<u8> {
    let plaintext = serde_json::to_vec(m).expect("a sealed message is JSON");
    let nonce = Nonce::generate();
    let mut out = Vec::with_capacity(HEADER + NONCE + plaintext.len() + 16);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&key.id);
    let cipher = ChaCha20Poly1305::new(&key.key);
    let ct = cipher
        .encrypt(&nonce, Payload { msg: &plaintext, aad: &out[..HEADER] })
        .expect("encryption of an in-memory buffer does not fail");
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Whether bytes look like a sealed message (before any key is tried).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Opens a sealed message, verifying its seal.
pub fn open(key: &SealKey, bytes: &[u8]) -> Result<Sealed, SealError> {
    if !is_sealed(bytes) {
        return Err(SealError::NotSealed);
    }
    if bytes.len() < HEADER + NONCE + 16 {
        return Err(SealError::Tampered);
    }
    if bytes[4] != VERSION {
        return Err(SealError::Version(bytes[4]));
    }
    if bytes[5..13] != key.id {
        return Err(SealError::UnknownKey(hex(&bytes[5..13])));
    }
    let nonce = Nonce::try_from(&bytes[HEADER..HEADER + NONCE]).map_err(|_| SealError::Tampered)?;
    let cipher = ChaCha20Poly1305::new(&key.key);
    let plain = cipher
        .decrypt(&nonce, Payload { msg: &bytes[HEADER + NONCE..], aad: &bytes[..HEADER] })
        .map_err(|_| SealError::Tampered)?;
    serde_json::from_slice(&plain).map_err(|e| SealError::BadContent(e.to_string()))
}

/// Rejects replays and stale messages. Ids are remembered for twice the
/// window; anything older than the window is stale anyway, so memory stays
/// bounded by the message rate times the window.
#[derive(Debug)]
pub struct ReplayGuard {
    window: Duration,
    seen: HashMap<String, i64>,
}

impl ReplayGuard {
    pub fn new(window: Duration) -> ReplayGuard {
        ReplayGuard { window, seen: HashMap::new() }
    }

    /// Checks a message at time `now` (Unix seconds); records it if accepted.
    pub fn check(&mut self, m: &Sealed, now: i64) -> Result<(), SealError> {
        let window = self.window.as_secs() as i64;
        let skew = now - m.time;
        if skew.abs() > window {
            return Err(SealError::Stale(skew));
        }
        self.seen.retain(|_, t| now - *t <= 2 * window);
        if self.seen.contains_key(&m.id) {
            return Err(SealError::Replayed(m.id.clone()));
        }
        self.seen.insert(m.id.clone(), m.time);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealKey {
        SealKey::from_text(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn seal_and_open() {
        let m = Sealed::new("ALERTER", "BOB", 1_800_000_000, "critical", "disk full");
        let b = seal(&key(), &m);
        assert!(is_sealed(&b));
        assert_eq!(open(&key(), &b).unwrap(), m);
    }

    #[test]
    fn tampering_and_wrong_keys_are_detected() {
        let b = seal(&key(), &Sealed::new("A", "B", 0, "info", "hi"));
        for i in [HEADER + 2, b.len() - 1, 6] {
            let mut t = b.clone();
            t[i] ^= 1;
            assert!(open(&key(), &t).is_err(), "flipped byte {i}");
        }
        let other = SealKey::from_text(&"cd".repeat(32)).unwrap();
        assert!(matches!(open(&other, &b), Err(SealError::UnknownKey(_))));
        assert_eq!(open(&key(), b"plain text"), Err(SealError::NotSealed));
        assert_eq!(open(&key(), b"ALRT\x01"), Err(SealError::Tampered));
    }

    #[test]
    fn replays_and_stale_messages_are_rejected() {
        let mut g = ReplayGuard::new(Duration::from_secs(300));
        let m = Sealed::new("A", "B", 1000, "info", "hi");
        assert!(g.check(&m, 1010).is_ok());
        assert_eq!(g.check(&m, 1020), Err(SealError::Replayed(m.id.clone())));
        assert_eq!(g.check(&Sealed::new("A", "B", 1000, "info", "x"), 1400), Err(SealError::Stale(400)));
        assert!(g.check(&Sealed::new("A", "B", 1000, "info", "x"), 800).is_ok(), "clock skew within the window");
    }

    #[test]
    fn key_files() {
        assert!(SealKey::from_text("short").is_err());
        let text = SealKey::generate_text();
        assert_eq!(text.len(), 64);
        assert!(SealKey::from_text(&format!("{text}\n")).is_ok());
        assert_ne!(SealKey::generate_text(), text);
    }
}
