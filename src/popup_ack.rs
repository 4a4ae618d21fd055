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

/// The newest popup in the history at `path` about the alert whose id
/// begins with `id` (4 hex digits at least), or whose notification id is
/// `id` in full; `Ok(None)` when there is none (or no history). With
/// `sealed_only`, popups that came unsealed are not believed: anyone on
/// the LAN can send a popup with a footer, naming an address of their
/// choosing. An id that begins more than one alert's id is an error that
/// lists them.
pub fn find(path: &Path, id: &str, sealed_only: bool) -> anyhow::Result<Option<Ackable>> {
    let id = id.to_ascii_lowercase();
    if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
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
    let mut found: Option<Ackable> = None;
    let mut others = std::collections::BTreeSet::new();
    for line in text.lines().rev() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if sealed_only && v["sealed"].is_null() {
            continue;
        }
        let Some(a) = ackable(&v) else { continue };
        if a.ack.notification == id {
            return Ok(Some(a));
        }
        for f in a.ack.alerts.iter().filter(|f| f.starts_with(&id)) {
            match &found {
                None => found = Some(a.clone()),
                Some(first) if !first.ack.alerts.contains(f) => {
                    others.insert(f.clone());
                }
                Some(_) => {}
            }
        }
    }
    if let Some(first) = &found
        && !others.is_empty()
    {
        let mut all: Vec<&String> = first.ack.alerts.iter().filter(|f| f.starts_with(&id)).collect();
        all.extend(&others);
        let all: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        anyhow::bail!("{id} begins several alerts' ids in the popups here ({}): give more of it", all.join(", "));
    }
    Ok(found)
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
    let sending = async {
        match &s.key {
            None => {
                let m = SessionMessage { from: &s.from, to: &a.daemon, text: &text };
                client::send_session(a.addr, &m, &opts).await
            }
            Some(key) => {
                let now =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
                let m = seal::Sealed::new(&s.from, &a.daemon, now as i64, "info", &text);
                let smb = smb::mailslot_write(dgram::ALERTER_SEALED, &seal::seal(key, &m), false);
                client::send_session_smb(a.addr, &s.from, &a.daemon, smb, &opts).await
            }
        }
    };
    // The client's deadlines are per step; a peer that answers slowly at
    // every step must not hold an acknowledgement (and its task) longer.
    let Ok(sent) = tokio::time::timeout(s.timeout * 2, sending).await else {
        anyhow::bail!("{} at {} did not take the acknowledgement within {:?}", a.daemon, a.addr, s.timeout * 2);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, sealed: bool) -> String {
        let mut v = serde_json::json!({"from": "FILESERVER", "to": "WS1", "peer": "10.0.0.1:40000", "text": text});
        if sealed {
            v["sealed"] = serde_json::json!({"severity": "warning"});
        }
        format!("{v}\n")
    }

    fn footer(nid: &str, alerts: &[&str]) -> String {
        format!(
            "WARNING: disk\n\nTo acknowledge: alerter ack x\n[ack 1139 {nid} 0123456789abcdef0123 {}]",
            alerts.join(" ")
        )
    }

    #[test]
    fn popups_are_found_by_alert_prefix_or_whole_notification_id_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let a = "0123abcd0123abcd";
        let history = [
            line(&footer("1a23c5f6965153192935af41a5b", &[a]), true),
            line("just a message", true),
            "not json\n".to_string(),
            line(&footer("1a23c5f7135b6081d04e0508d9c", &[a]), true),
        ]
        .concat();
        std::fs::write(&path, history).unwrap();
        let newest = find(&path, "0123ab", false).unwrap().expect("found by the alert's prefix");
        assert_eq!(newest.ack.notification, "1a23c5f7135b6081d04e0508d9c");
        assert_eq!(newest.addr, "10.0.0.1:1139".parse().unwrap());
        assert_eq!(newest.daemon, "FILESERVER");
        let older = find(&path, "1a23c5f6965153192935af41a5b", false).unwrap().expect("by the notification id");
        assert_eq!(older.ack.notification, "1a23c5f6965153192935af41a5b");
        // A notification id only in full: its prefix is a timestamp, shared by many.
        assert_eq!(find(&path, "1a23c5f", false).unwrap(), None);
        // Too short, not hex, not there.
        for id in ["", "012", "xyz!", "ffff"] {
            assert_eq!(find(&path, id, false).unwrap(), None, "{id:?}");
        }
        assert_eq!(find(&dir.path().join("none.jsonl"), "0123", false).unwrap(), None);
    }

    #[test]
    fn unsealed_popups_are_not_believed_with_a_key_and_ambiguous_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let forged = line(&footer("1a23c5f7135b6081d04e0508d9c", &["0123abcd0123abcd"]), false);
        std::fs::write(&path, &forged).unwrap();
        assert!(find(&path, "0123abcd", false).unwrap().is_some());
        assert_eq!(find(&path, "0123abcd", true).unwrap(), None, "unsealed: not believed with a key");
        let two = [
            line(&footer("1a23c5f6965153192935af41a5b", &["0123abcd0123abcd"]), true),
            line(&footer("1a23c5f7135b6081d04e0508d9c", &["0123ffff0123abcd"]), true),
        ]
        .concat();
        std::fs::write(&path, two).unwrap();
        let e = find(&path, "0123", true).unwrap_err().to_string();
        assert!(e.contains("0123abcd0123abcd") && e.contains("0123ffff0123abcd"), "{e}");
        assert!(find(&path, "0123f", true).unwrap().is_some());
    }
}
