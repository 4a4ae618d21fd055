//! Acknowledgements from the popup, the daemon's side: the secret that
//! makes each popup's token, the footer the messenger transport adds, and
//! the listener that takes acknowledgements back.
//!
//! A popup about firing alerts carries (see `messenger_transport::ack`)
//! its notification's id and a token, HMAC-SHA256 of the id under a secret
//! only the daemon holds (`ack.key` in the state directory, made at the
//! first start): unguessable, and different for every notification, so
//! only someone who saw the popup (or read it off the wire, when popups
//! are not sealed) can acknowledge it, and only for the episode it told
//! of: an alert that resolved and fired again is not acknowledged by an
//! old popup. The receiver sends
//! `ACK <id> <token>` as a Messenger message to the daemon's
//! acknowledgement port; the listener's gate checks the token (and, when
//! the transport seals, the seal) before the sender is answered, so a bad
//! acknowledgement is refused on the wire and logged. A good one goes to
//! the engine loop, which acknowledges the notification's alerts: their
//! repeats stop for every recipient, and history says who and from where.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use messenger_transport::ack::AckMessage;
use messenger_transport::limits::LogEvery;
use messenger_transport::listener::{Event, Gate, Listener, ListenerConfig, Received, SealPolicy};
use messenger_transport::seal::SealKey;
use sha2::Sha256;
use tokio::sync::mpsc;

/// The secret's file in the state directory.
pub const KEY_FILE: &str = "ack.key";
/// Token bytes kept (80 bits, 20 hex digits): unguessable over a network.
const TOKEN_BYTES: usize = 10;
/// What the MAC covers besides the id, so that the secret signs nothing
/// else by accident.
const CONTEXT: &[u8] = b"alerter popup ack v1\0";

/// The daemon's secret for acknowledgement tokens.
#[derive(Clone)]
pub struct AckSecret([u8; 32]);

impl std::fmt::Debug for AckSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckSecret(..)")
    }
}

impl AckSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> AckSecret {
        AckSecret(bytes)
    }

    /// The secret in `dir`, made (random, 0600, never over an existing
    /// file) when there is none; read with the checks every secret gets.
    pub fn load_or_create(dir: &Path) -> Result<AckSecret, String> {
        let path = dir.join(KEY_FILE);
        if !path.exists() {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for {}: {e}", path.display()))?;
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                Ok(mut f) => f
                    .write_all(format!("{hex}\n").as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
                // Made meanwhile by another start: read that one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cannot make {}: {e}", path.display())),
            }
        }
        let text = crate::files::read_secret(&path).map_err(|e| e.to_string())?;
        let bytes = decode_hex(text.trim()).ok_or_else(|| {
            format!("{} is not 64 hex digits: delete it and a new one is made at the next start", path.display())
        })?;
        Ok(AckSecret(bytes))
    }

    fn mac(&self, notification: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(CONTEXT);
        mac.update(notification.as_bytes());
        mac
    }

    /// The token of a notification.
    pub fn token(&self, notification: &str) -> String {
        let tag = self.mac(notification).finalize().into_bytes();
        tag[..TOKEN_BYTES].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `token` is the notification's (in constant time).
    pub fn verify(&self, notification: &str, token: &str) -> bool {
        let Some(bytes) = decode_hex_vec(token).filter(|b| b.len() == TOKEN_BYTES) else { return false };
        self.mac(notification).verify_truncated_left(&bytes).is_ok()
    }
}

fn decode_hex_vec(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    decode_hex_vec(s)?.try_into().ok()
}

/// What the messenger transport needs to add the footer.
#[derive(Debug, Clone)]
pub struct Footer {
    pub secret: Arc<AckSecret>,
    /// The acknowledgement port the footer names.
    pub port: u16,
}

/// An acknowledgement the listener let in, for the engine loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopupAck {
    pub notification: String,
    /// Who: the sender's name and address, as history shows it.
    pub by: String,
}

/// The acknowledgement listener's settings.
#[derive(Debug, Clone)]
pub struct AckListen {
    /// The name acknowledgements are sent to (the transport's `from`).
    pub name: String,
    pub addr: SocketAddr,
    /// With a key, only acknowledgements sealed with it are taken.
    pub seal: Option<SealKey>,
    /// Where the ids of the sealed acknowledgements taken are kept.
    pub replay_file: Option<std::path::PathBuf>,
    pub secret: Arc<AckSecret>,
}

/// Listens for acknowledgements; those with a valid token (and seal) come
/// out of the receiver returned, the others are refused and logged.
pub async fn listen(cfg: AckListen) -> Result<(Listener, mpsc::Receiver<PopupAck>), String> {
    let mut l = ListenerConfig::new(&cfg.name);
    l.tcp = vec![cfg.addr];
    // A short text: `ACK`, an id and a token.
    l.max_text = 256;
    if let Some(key) = cfg.seal {
        // The replay guard is kept on disk: a sealed acknowledgement
        // recorded off the wire is refused again after a restart.
        l.seal = Some(SealPolicy { require: true, replay_file: cfg.replay_file.clone(), ..SealPolicy::new(key) });
    }
    let secret = cfg.secret.clone();
    l.gate = Some(Gate(Arc::new(move |m: &Received| check(&secret, m).map(|_| ()))));
    let (listener, mut events) =
        Listener::bind(l).await.map_err(|e| format!("cannot listen for acknowledgements on {}: {e}", cfg.addr))?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut logs: std::collections::HashMap<String, LogEvery> = std::collections::HashMap::new();
        while let Some(e) = events.recv().await {
            match e {
                Event::Message(m) => {
                    // The gate let it in: it parses.
                    let Ok(ack) = AckMessage::parse(&m.text) else { continue };
                    let who = m.sealed.as_ref().and_then(|s| s.verified_sender.clone()).unwrap_or(m.from.clone());
                    let by = format!("{} at {}", crate::visible::visible_line(&who), m.peer.ip());
                    if tx.send(PopupAck { notification: ack.notification, by }).await.is_err() {
                        break;
                    }
                }
                Event::Rejected { peer, from, reason } => {
                    // A flood of bad acknowledgements is a few log lines: one
                    // per kind of refusal and 10 s, with how many were not logged.
                    let kind: String = reason.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
                    if logs.len() >= 64 && !logs.contains_key(&kind) {
                        logs.clear();
                    }
                    let log = logs.entry(kind).or_insert_with(|| LogEvery::new(std::time::Duration::from_secs(10)));
                    if let Some(skipped) = log.hit(std::time::Instant::now()) {
                        let more =
                            if skipped > 0 { format!(" ({skipped} more like it not logged)") } else { String::new() };
                        tracing::warn!(
                            %peer,
                            from = %from.as_deref().map(crate::visible::visible_line).unwrap_or_default(),
                            "an acknowledgement refused: {reason}{more}"
                        );
                    }
                }
                Event::NameConflict { .. } => {}
            }
        }
    });
    Ok((listener, rx))
}

/// What the acknowledgement listener of a configuration depends on, to
/// tell at a reload whether it must be started again.
pub fn setting(cfg: &crate::config::Config) -> Option<String> {
    use crate::config::model::TransportConfig;
    cfg.transports.values().find_map(|t| match t {
        TransportConfig::Messenger(m) => {
            m.acks.as_ref().map(|a| {
                // The key's content, not only its path: a key replaced in
                // place must reach the listener too.
                let key = m.seal_key_file.as_ref().map(|p| {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    std::fs::read(p).unwrap_or_default().hash(&mut h);
                    h.finish()
                });
                format!("{a:?} {:?} {key:?} {:?} {}", m.seal_key_file, m.from, cfg.name)
            })
        }
        _ => None,
    })
}

/// The acknowledgement listener of a configuration: that of the messenger
/// transport with `acks` (at most one may have it), or none.
pub async fn listen_for(
    cfg: &crate::config::Config,
    secret: &Arc<AckSecret>,
) -> Result<Option<(Listener, mpsc::Receiver<PopupAck>)>, String> {
    use crate::config::model::TransportConfig;
    let with: Vec<(&String, &crate::config::model::MessengerConfig)> = cfg
        .transports
        .iter()
        .filter_map(|(name, t)| match t {
            TransportConfig::Messenger(m) if m.acks.is_some() => Some((name, &**m)),
            _ => None,
        })
        .collect();
    let [(name, m)] = with.as_slice() else {
        if with.len() > 1 {
            let names: Vec<&str> = with.iter().map(|(n, _)| n.as_str()).collect();
            return Err(format!(
                "transports {} all set `acks`; one port takes them all: set it on one of them",
                names.join(", ")
            ));
        }
        return Ok(None);
    };
    let a = m.acks.as_ref().expect("filtered on it");
    let seal = match &m.seal_key_file {
        Some(p) => Some(crate::transport::messenger::read_key_file(p).map_err(|e| format!("transport `{name}`: {e}"))?),
        None => None,
    };
    let from = m.from.clone().unwrap_or_else(|| cfg.name.chars().take(15).collect());
    let addr = SocketAddr::new(a.bind.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()), a.port);
    let sealed = if seal.is_some() { ", sealed only" } else { "" };
    let replay_file = Some(cfg.state_dir.join("ack-seen"));
    let listening = listen(AckListen { name: from, addr, seal, replay_file, secret: secret.clone() }).await?;
    tracing::info!("taking acknowledgements from popups on {addr}{sealed}");
    Ok(Some(listening))
}

/// Acknowledges the alerts of the notification a popup acknowledgement
/// names: their repeats stop for every recipient, and history records who.
/// What cannot be acknowledged (a notification no longer kept, alerts
/// resolved meanwhile) is logged.
pub fn apply(
    engine: &mut alerter_engine::Engine,
    store: &crate::store::Store,
    ack: &PopupAck,
    now: chrono::DateTime<chrono::Utc>,
) {
    let n = match store.outbox_entry(&ack.notification) {
        Ok(Some(e)) => e.notification,
        Ok(None) => {
            tracing::warn!(by = %ack.by, "an acknowledgement of notification {}, which is no longer kept; nothing acknowledged", ack.notification);
            return;
        }
        Err(e) => {
            tracing::warn!(by = %ack.by, "an acknowledgement of notification {} cannot be looked up: {e}", ack.notification);
            return;
        }
    };
    let alerts: Vec<_> = n.alerts.iter().map(|a| a.fingerprint).collect();
    match engine.acknowledge_notified(&alerts, n.created_at, &ack.by, Some("from the popup"), now) {
        Ok(acked) => tracing::info!(by = %ack.by, alerts = acked.len(), "popup acknowledged ({})", n.rule),
        Err(e) => tracing::info!(by = %ack.by, "a popup acknowledged ({}), but {e}", n.rule),
    }
}

/// An acknowledgement's text, checked: its token must be its
/// notification's.
fn check(secret: &AckSecret, m: &Received) -> Result<AckMessage, String> {
    let ack = AckMessage::parse(&m.text).map_err(|e| format!("not an acknowledgement: {e}"))?;
    if !secret.verify(&ack.notification, &ack.token) {
        return Err(format!("wrong token for notification {}", ack.notification));
    }
    Ok(ack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_by_notification_and_secret_and_verify_only_their_own() {
        let a = AckSecret::from_bytes([1; 32]);
        let b = AckSecret::from_bytes([2; 32]);
        let t = a.token("n1");
        assert_eq!(t.len(), 20);
        assert!(a.verify("n1", &t));
        assert_ne!(t, a.token("n2"));
        assert_ne!(t, b.token("n1"));
        assert!(!a.verify("n2", &t));
        assert!(!b.verify("n1", &t));
        for bad in ["", "00", &t[..18], &format!("{t}00"), &t.to_uppercase().replace(char::is_numeric, "g")] {
            assert!(!a.verify("n1", bad), "{bad}");
        }
    }

    /// A popup acknowledges the episode it told of; after the alert
    /// resolved and fired again, the old popup acknowledges nothing.
    #[test]
    fn an_old_popup_does_not_acknowledge_a_new_firing() {
        use crate::event::{Event, Inbound, Severity};
        let text = r#"
transports:
  popup: { type: messenger }
subscribers:
  alice: { machine: ALICE-PC }
rules:
  - name: disk
    notify: [{ subscribers: [alice], via: [popup] }]
"#;
        let registry = crate::plugin::PluginRegistry::empty();
        let loaded = crate::config::load_str("a.yaml", text, None, &crate::transport::load_options(&registry)).unwrap();
        let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&chrono::Utc);
        let now = t("2026-12-03T10:00:00Z");
        let mut engine =
            alerter_engine::Engine::new(loaded.config.engine_config(), Vec::new(), Default::default(), now);
        let event = |sev: Severity, at| Inbound::Event(Event::new("disk", "web01", sev, "disk full", at).with_key("d"));
        let fire = |engine: &mut alerter_engine::Engine, at| {
            engine.handle(event(Severity::Warning, at), at);
            engine.tick(at);
            engine.take_turn().notifications.into_iter().next().expect("a popup")
        };
        let first = fire(&mut engine, now);
        let later = t("2026-12-03T11:00:00Z");
        engine.handle(event(Severity::Resolved, later), later);
        engine.tick(later);
        engine.take_turn();
        let again = t("2026-12-03T12:00:00Z");
        let second = fire(&mut engine, again);
        let alerts = |n: &crate::notify::Notification| n.alerts.iter().map(|a| a.fingerprint).collect::<Vec<_>>();
        assert_eq!(alerts(&first), alerts(&second), "the same alert, two episodes");
        let old = engine.acknowledge_notified(&alerts(&first), first.created_at, "alice at 10.0.0.5", None, again);
        assert!(old.is_err(), "the old popup acknowledges nothing: {old:?}");
        let new = engine.acknowledge_notified(&alerts(&second), second.created_at, "alice at 10.0.0.5", None, again);
        assert_eq!(new.unwrap().len(), 1);
    }

    #[test]
    fn the_secret_is_made_once_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = AckSecret::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = AckSecret::load_or_create(dir.path()).unwrap();
        assert_eq!(first.token("x"), again.token("x"));
        std::fs::write(dir.path().join(KEY_FILE), "not hex\n").unwrap();
        let e = AckSecret::load_or_create(dir.path()).unwrap_err();
        assert!(e.contains("is not 64 hex digits"), "{e}");
    }
}
