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
    #[error("unsigned: this receiver accepts only messages signed by a trusted sender")]
    Unsigned,
    #[error("the sender's signature does not verify")]
    BadSignature,
    #[error("signed by {0}, a key this receiver does not trust; add it to the trusted senders to accept it")]
    UntrustedSigner(String),
    #[error("claims to be {claimed} but is signed by the key of {signer}")]
    Impersonation { claimed: String, signer: String },
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
    /// The sender's Ed25519 public key (`ed25519:` and hex), when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The signature of [`Sealed::signed_bytes`] (hex), when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
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
            signer: None,
            signature: None,
        }
    }

    /// What a sender signs: every field but the signature, each length-
    /// prefixed after a domain tag, so no two messages sign the same bytes
    /// and the signature means nothing outside a sealed message.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = b"alerter sealed message signature v1\0".to_vec();
        for field in [&self.from, &self.to, &self.id, &self.severity, &self.text] {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out.extend_from_slice(&self.time.to_be_bytes());
        out
    }

    /// Signs the message with a sender's key.
    pub fn sign(&mut self, key: &SigningKey) {
        use ed25519_dalek::Signer;
        self.signature = None;
        self.signer = Some(key.public().to_text());
        self.signature = Some(hex(&key.0.sign(&self.signed_bytes()).to_bytes()));
    }

    /// Checks the signature against the trusted senders: the verified
    /// sender's name, or why the message is refused. An unsigned message
    /// is refused too: a receiver with a trust list accepts signed
    /// messages only.
    pub fn verify(&self, trusted: &TrustedSenders) -> Result<String, SealError> {
        let (Some(signer), Some(signature)) = (&self.signer, &self.signature) else {
            return Err(SealError::Unsigned);
        };
        let key = PublicKey::from_text(signer).map_err(|_| SealError::BadSignature)?;
        let sig = unhex::<64>(signature).ok_or(SealError::BadSignature)?;
        key.0
            .verify_strict(&self.signed_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))
            .map_err(|_| SealError::BadSignature)?;
        let Some(name) = trusted.name_of(&key) else {
            return Err(SealError::UntrustedSigner(key.to_text()));
        };
        if !name.eq_ignore_ascii_case(&self.from) {
            return Err(SealError::Impersonation { claimed: self.from.clone(), signer: name.to_string() });
        }
        Ok(name.to_string())
    }
}

/// `N` bytes from exactly `2N` hex digits.
fn unhex<const N: usize>(t: &str) -> Option<[u8; N]> {
    if t.len() != 2 * N || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

const SECRET_PREFIX: &str = "ed25519-secret:";
const PUBLIC_PREFIX: &str = "ed25519:";

/// A sender's Ed25519 signing key. Its file holds `ed25519-secret:` and 64
/// hex digits (the seed), so it cannot be mistaken for a workgroup key.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public().to_text())
    }
}

impl SigningKey {
    pub fn from_text(text: &str) -> Result<SigningKey, SealError> {
        let seed = text.trim().strip_prefix(SECRET_PREFIX).and_then(unhex::<32>).ok_or_else(|| {
            SealError::BadKey(format!(
                "expected `{SECRET_PREFIX}` and 64 hex digits (a signing key); make one with `alerter keygen --sign`"
            ))
        })?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// A new random signing key, as its file's text.
    pub fn generate_text() -> String {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the system's random number generator works");
        format!("{SECRET_PREFIX}{}", hex(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }
}

/// A sender's public key: `ed25519:` and 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    pub fn from_text(text: &str) -> Result<PublicKey, SealError> {
        let bad = || SealError::BadKey(format!("expected `{PUBLIC_PREFIX}` and 64 hex digits (a sender's public key)"));
        let bytes = text.strip_prefix(PUBLIC_PREFIX).and_then(unhex::<32>).ok_or_else(bad)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map(PublicKey).map_err(|_| bad())
    }

    pub fn to_text(&self) -> String {
        format!("{PUBLIC_PREFIX}{}", hex(self.0.as_bytes()))
    }
}

/// The senders a receiver trusts: a public key per line with the sender
/// name it vouches for (`ed25519:<hex> NAME`), as `alerter keygen --sign`
/// prints it; `#` starts a comment. A name may have several keys (while
/// one replaces another); a key names one sender.
#[derive(Debug, Clone, Default)]
pub struct TrustedSenders {
    keys: HashMap<PublicKey, String>,
}

impl TrustedSenders {
    /// Parses a trust list; every bad line is reported, with its number.
    pub fn parse(text: &str) -> Result<TrustedSenders, Vec<String>> {
        let mut keys = HashMap::new();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(key), Some(name), None) = (words.next(), words.next(), words.next()) else {
                problems.push(format!("line {}: expected `ed25519:<key> NAME`", i + 1));
                continue;
            };
            match PublicKey::from_text(key) {
                Ok(k) if name.len() <= 15 => {
                    if let Some(other) = keys.insert(k, name.to_ascii_uppercase())
                        && !other.eq_ignore_ascii_case(name)
                    {
                        problems.push(format!("line {}: this key is already trusted for {other}", i + 1));
                    }
                }
                Ok(_) => problems.push(format!("line {}: `{name}` is longer than a NetBIOS name (15)", i + 1)),
                Err(e) => problems.push(format!("line {}: {e}", i + 1)),
            }
        }
        if problems.is_empty() { Ok(TrustedSenders { keys }) } else { Err(problems) }
    }

    pub fn name_of(&self, key: &PublicKey) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
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

    /// Remembers a message accepted before (loaded from the disk), unless
    /// it is too old to matter; whether it was kept.
    pub fn remember(&mut self, id: &str, time: i64, now: i64) -> bool {
        let keep = now - time <= 2 * self.window.as_secs() as i64;
        if keep {
            self.seen.insert(id.to_string(), time);
        }
        keep
    }

    /// Messages remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// What is remembered, as (id, time).
    pub fn entries(&self) -> impl Iterator<Item = (&str, i64)> {
        self.seen.iter().map(|(id, t)| (id.as_str(), *t))
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
    fn signatures_name_the_sender_the_receiver_trusts() {
        let alerter = SigningKey::from_text(&SigningKey::generate_text()).unwrap();
        let mallory = SigningKey::from_text(&SigningKey::generate_text()).unwrap();
        let trusted =
            TrustedSenders::parse(&format!("# ours\n{} alerter  # the daemon\n", alerter.public().to_text())).unwrap();
        let mut m = Sealed::new("ALERTER", "BOB", 1000, "critical", "disk full");
        assert_eq!(m.verify(&trusted), Err(SealError::Unsigned));
        m.sign(&alerter);
        // Through a seal and back, as a receiver sees it.
        let m = open(&key(), &seal(&key(), &m)).unwrap();
        assert_eq!(m.verify(&trusted), Ok("ALERTER".into()));
        let mut changed = m.clone();
        changed.text = "disk fine".into();
        assert_eq!(changed.verify(&trusted), Err(SealError::BadSignature));
        let mut claims = Sealed::new("ADMIN", "BOB", 1000, "info", "hi");
        claims.sign(&alerter);
        assert!(matches!(claims.verify(&trusted), Err(SealError::Impersonation { .. })));
        let mut stranger = Sealed::new("ALERTER", "BOB", 1000, "info", "hi");
        stranger.sign(&mallory);
        assert_eq!(stranger.verify(&trusted), Err(SealError::UntrustedSigner(mallory.public().to_text())));
        // A message signed with a key but claiming another signer's key.
        let mut swapped = stranger.clone();
        swapped.signer = Some(alerter.public().to_text());
        assert_eq!(swapped.verify(&trusted), Err(SealError::BadSignature));
    }

    #[test]
    fn trust_lists_and_signing_keys_report_bad_lines() {
        let k = SigningKey::from_text(&SigningKey::generate_text()).unwrap().public().to_text();
        let problems =
            TrustedSenders::parse(&format!("{k}\n{k} A B\ned25519:zz A\n{k} A\n{k} B\n{k} ABCDEFGHIJKLMNOPQ\n"))
                .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].starts_with("line 1:") && problems[4].starts_with("line 6:"), "{problems:?}");
        assert!(problems[3].contains("already trusted for A"), "{problems:?}");
        assert!(SigningKey::from_text(&"ab".repeat(32)).is_err(), "a workgroup key is not a signing key");
        assert!(SealKey::from_text(&SigningKey::generate_text()).is_err(), "nor the other way round");
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
