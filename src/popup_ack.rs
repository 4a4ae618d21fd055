//! `alerter ack` on a receiving machine: the popups in this receiver's
//! history that carry an acknowledgement footer are acknowledged back to
//! the daemon that sent them, over the Messenger protocol (sealed with a
//! workgroup key when one is given), to the port the footer names at the
//! address the popup came from. Ids found in no popup go to the control
//! API, as `alerter ack` does on the daemon's own machine.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use messenger_transport::ack::{AckMessage, AckRef};
use messenger_transport::client::{self, SendError, SessionMessage, SessionOptions};
use messenger_transport::{dgram, seal, smb};

/// The most of a history file read (its newest part).
const MAX_READ: u64 = 32 * 1024 * 1024;

/// A popup that can be acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ackable {
    /// The daemon's name (the popup's sender).
    pub daemon: String,
    pub addr: SocketAddr,
    pub ack: AckRef,
}

/// The newest popup in the history at `path` whose alert (or notification)
/// id begins with `id`; `Ok(None)` when there is none (or no history).
pub fn find(path: &Path, id: &str) -> anyhow::Result<Option<Ackable>> {
    let id = id.to_ascii_lowercase();
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("cannot read the message history {}: {e}", path.display()),
    };
    let len = file.metadata()?.len();
    if len > MAX_READ {
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(len - MAX_READ))?;
    }
    let mut bytes = Vec::new();
    file.take(MAX_READ).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    for line in text.lines().rev() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Some(a) = ackable(&v) else { continue };
        if a.ack.alerts.iter().any(|f| f.starts_with(&id)) || a.ack.notification.starts_with(&id) {
            return Ok(Some(a));
        }
    }
    Ok(None)
}

/// What a history line says of where to acknowledge its popup.
pub fn ackable(v: &serde_json::Value) -> Option<Ackable> {
    let (ack, _) = AckRef::find(v["text"].as_str()?)?;
    let peer: SocketAddr = v["peer"].as_str()?.parse().ok()?;
    Some(Ackable { daemon: v["from"].as_str()?.to_string(), addr: SocketAddr::new(peer.ip(), ack.port), ack })
}

/// How to send acknowledgements.
#[derive(Debug, Clone)]
pub struct Sender {
    /// Who acknowledges (the login name, by default).
    pub from: String,
    pub key: Option<seal::SealKey>,
    pub timeout: Duration,
}

/// Sends the acknowledgement of `a`.
pub async fn send(s: &Sender, a: &Ackable) -> anyhow::Result<()> {
    let text = AckMessage { notification: a.ack.notification.clone(), token: a.ack.token.clone() }.text();
    let opts =
        SessionOptions { timeout: s.timeout, session_request: a.addr.port() == 139, ..SessionOptions::default() };
    let sent = match &s.key {
        None => {
            let m = SessionMessage { from: &s.from, to: &a.daemon, text: &text };
            client::send_session(a.addr, &m, &opts).await
        }
        Some(key) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
            let m = seal::Sealed::new(&s.from, &a.daemon, now as i64, "info", &text);
            let smb = smb::mailslot_write(dgram::ALERTER_SEALED, &seal::seal(key, &m), false);
            client::send_session_smb(a.addr, &s.from, &a.daemon, smb, &opts).await
        }
    };
    match sent {
        Ok(()) => Ok(()),
        Err(SendError::Refused(_)) => anyhow::bail!(
            "{} at {} refused the acknowledgement: its token is not right{}",
            a.daemon,
            a.addr,
            if s.key.is_none() {
                ", or it takes sealed ones only (give --key-file)"
            } else {
                ", or the key is not its"
            }
        ),
        Err(e) => anyhow::bail!("cannot acknowledge to {} at {}: {e}", a.daemon, a.addr),
    }
}

/// This user's login name, as the acknowledger's name.
pub fn login_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "UNKNOWN".into())
        .chars()
        .take(15)
        .collect()
}

/// The receiver's history file by default (as `alerter listen` keeps it).
pub fn default_history() -> PathBuf {
    crate::listen_cli::default_history()
}
