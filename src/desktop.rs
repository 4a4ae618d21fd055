//! Desktop notifications: each popup shown through the session's
//! freedesktop notification service (`org.freedesktop.Notifications` on
//! the D-Bus session bus, spoken with zbus), the way a desktop user
//! expects a message to arrive.
//!
//! - Urgency by severity: a critical alert is a critical notification
//!   (which servers keep until dismissed), a resolved one or an info is low.
//! - A repeat replaces: popups about the same alerts (the ack footer names
//!   them) or with the same sender and text take the place of the
//!   notification already shown instead of stacking a new one.
//! - Acknowledge: a popup that can be acknowledged gets an "Acknowledge"
//!   action; invoking it sends the acknowledgement back to the daemon, as
//!   `alerter ack` would (`crate::popup_ack`), or asks the system receiver
//!   to (a session agent has no key).
//!
//! The terminal copy of each popup is printed either way; without a
//! notification service (no session bus, nothing owning the name) the
//! terminal is all there is, and the receiver says so once. Nothing here
//! may hold up receiving: popups are handed to a task over a bounded
//! channel, a full channel drops the desktop copy (not the message), and
//! every call to the service has a deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use messenger_transport::ack::AckRef;
use tokio::sync::mpsc;
use zbus::zvariant::Value;

use alerter_core::visible::{visible, visible_line};

#[zbus::proxy(
    interface = "org.freedesktop.Notifications",
    default_service = "org.freedesktop.Notifications",
    default_path = "/org/freedesktop/Notifications"
)]
trait Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: &str,
        replaces_id: u32,
        app_icon: &str,
        summary: &str,
        body: &str,
        actions: &[&str],
        hints: HashMap<&str, Value<'_>>,
        expire_timeout: i32,
    ) -> zbus::Result<u32>;

    fn get_capabilities(&self) -> zbus::Result<Vec<String>>;

    fn get_server_information(&self) -> zbus::Result<(String, String, String, String)>;

    #[zbus(signal)]
    fn action_invoked(&self, id: u32, action_key: String) -> zbus::Result<()>;

    #[zbus(signal)]
    fn notification_closed(&self, id: u32, reason: u32) -> zbus::Result<()>;
}

/// The action a popup's acknowledgement is invoked by.
const ACK_ACTION: &str = "ack";
/// The longest a call to the notification service (or connecting to it)
/// may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Popups waiting for the notification task; more are shown in the
/// terminal only.
const QUEUE: usize = 64;
/// Notifications remembered for replacement and actions: the newest ones
/// (a server that never says "closed" must not grow this without bound).
const REMEMBERED: usize = 256;

/// What a popup's notification looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub summary: String,
    pub body: String,
    /// 0 low, 1 normal, 2 critical (the specification's byte).
    pub urgency: u8,
    /// Popups with the same key replace each other.
    pub key: String,
    /// Where its acknowledgement goes, when it can be acknowledged.
    pub ack: Option<crate::popup_ack::Ackable>,
}

/// How popups become notifications here.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shaping {
    /// A workgroup key is in use: only sealed popups are offered for
    /// acknowledgement (anyone can send an unsealed one with an ack line
    /// pointing anywhere), and only a seal makes a notification critical.
    pub sealed_only: bool,
    /// The server reads markup in bodies (`body-markup`): text is escaped.
    pub markup: bool,
}

/// A popup (as `listen_cli::message_json` makes it) as a notification.
/// The system receiver marks what it hands an agent `"ackable": false`
/// when it would not send that popup's acknowledgement.
pub fn notification(m: &serde_json::Value, how: Shaping) -> Shown {
    let field = |k: &str| m[k].as_str().unwrap_or_default();
    let text = field("text");
    let footer = AckRef::find(text);
    let sealed = !m["sealed"].is_null();
    let offered = m.get("ackable").and_then(serde_json::Value::as_bool).unwrap_or(true) && (sealed || !how.sealed_only);
    let ack = crate::popup_ack::ackable(m).filter(|_| offered);
    // The footer is for readers without an action button; here the
    // action takes its place.
    let shown_text = match (&footer, &ack) {
        (Some((_, end)), Some(_)) => text[..*end].trim_end(),
        _ => text,
    };
    let severity = m["sealed"]["severity"].as_str().map(str::to_ascii_lowercase).or_else(|| {
        let head = text.split_once(':')?.0;
        (head.len() <= 10 && head.bytes().all(|b| b.is_ascii_uppercase())).then(|| head.to_ascii_lowercase())
    });
    let urgency = match severity.as_deref() {
        // A critical notification stays until dismissed: with a key, only
        // a sealed popup may ask for that.
        Some("critical" | "error" | "emergency" | "alert") if sealed || !how.sealed_only => 2,
        Some("info" | "resolved" | "ok" | "notice") => 0,
        _ => 1,
    };
    let key = match &footer {
        Some((r, _)) if !r.alerts.is_empty() => format!("alerts {}", r.alerts.join(" ")),
        _ => format!("text {}\n{}", field("from"), text),
    };
    let body = visible(shown_text);
    Shown {
        summary: format!("Message from {}", visible_line(field("from"))),
        body: if how.markup { markup_escaped(&body) } else { body.into_owned() },
        urgency,
        key,
        ack,
    }
}

/// Servers that read markup in the body get text escaped.
fn markup_escaped(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The notifications on screen, by key and by the server's id.
#[derive(Default)]
struct Onscreen {
    by_key: HashMap<String, u32>,
    by_id: HashMap<u32, (String, Option<crate::popup_ack::Ackable>)>,
    order: std::collections::VecDeque<u32>,
}

impl Onscreen {
    fn shown(&mut self, id: u32, s: &Shown) {
        if let Some((old_key, _)) = self.by_id.insert(id, (s.key.clone(), s.ack.clone())) {
            if old_key != s.key {
                self.by_key.remove(&old_key);
            }
        } else {
            self.order.push_back(id);
        }
        self.by_key.insert(s.key.clone(), id);
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.front().copied() {
                self.closed(old);
            }
        }
    }

    fn closed(&mut self, id: u32) {
        if let Some((key, _)) = self.by_id.remove(&id) {
            self.order.retain(|i| *i != id);
            if self.by_key.get(&key) == Some(&id) {
                self.by_key.remove(&key);
            }
        }
    }
}

/// Where an acknowledgement from a notification's action goes.
#[derive(Debug, Clone)]
pub enum Acker {
    /// Sent from here (`alerter listen` in the session), as `alerter ack`.
    Direct(crate::popup_ack::Sender),
    /// Asked of the system receiver, which holds the key (`alerter agent`):
    /// the notification's id goes on this channel.
    Relay(mpsc::Sender<String>),
}

/// The desktop's notification service, or `None` (said in the log) when
/// there is none: popups are then in the terminal only.
pub async fn connect_or_say(acks: Acker, sealed_only: bool) -> Option<Desktop> {
    match tokio::time::timeout(CALL_TIMEOUT, Desktop::connect(acks, sealed_only)).await {
        Ok(Ok(d)) => Some(d),
        Ok(Err(e)) => {
            tracing::info!("{e:#}; popups are shown in the terminal only");
            None
        }
        Err(_) => {
            tracing::info!("the session bus does not answer; popups are shown in the terminal only");
            None
        }
    }
}

/// The session's notification service.
pub struct Desktop {
    tx: mpsc::Sender<serde_json::Value>,
}

impl Desktop {
    /// Connects to the session bus's notification service.
    pub async fn connect(acks: Acker, sealed_only: bool) -> anyhow::Result<Desktop> {
        // A notification server that hangs must not hang us: every call
        // has a deadline.
        let conn = zbus::connection::Builder::session()
            .map_err(|e| anyhow::anyhow!("no session bus: {e}"))?
            .method_timeout(CALL_TIMEOUT)
            .build()
            .await
            .map_err(|e| anyhow::anyhow!("no session bus: {e}"))?;
        let proxy = NotificationsProxy::new(&conn).await?;
        let (name, vendor, version, _) = proxy
            .get_server_information()
            .await
            .map_err(|e| anyhow::anyhow!("no notification service on the session bus: {e}"))?;
        let caps = proxy.get_capabilities().await.unwrap_or_default();
        let actions = caps.iter().any(|c| c == "actions");
        let how = Shaping { sealed_only, markup: caps.iter().any(|c| c == "body-markup") };
        tracing::info!(
            "desktop notifications through {name} {version} ({vendor}){}",
            if actions { "" } else { ", no actions" }
        );
        let onscreen = Arc::new(Mutex::new(Onscreen::default()));
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(show_all(proxy.clone(), rx, onscreen.clone(), actions, how));
        tokio::spawn(follow_signals(proxy, onscreen, acks));
        Ok(Desktop { tx })
    }

    /// Shows a popup, without waiting: the terminal has it already.
    pub fn show(&self, popup: &serde_json::Value) {
        if self.tx.try_send(popup.clone()).is_err() {
            tracing::warn!("the desktop is slow to take notifications; this one is in the terminal only");
        }
    }
}

async fn show_all(
    proxy: NotificationsProxy<'static>,
    mut rx: mpsc::Receiver<serde_json::Value>,
    onscreen: Arc<Mutex<Onscreen>>,
    actions: bool,
    how: Shaping,
) {
    let mut failing = false;
    while let Some(popup) = rx.recv().await {
        let s = notification(&popup, how);
        let replaces = lock(&onscreen).by_key.get(&s.key).copied().unwrap_or(0);
        let acts: &[&str] = if actions && s.ack.is_some() { &[ACK_ACTION, "Acknowledge"] } else { &[] };
        let mut hints = HashMap::new();
        hints.insert("urgency", Value::U8(s.urgency));
        hints.insert("category", Value::from("im.received"));
        match proxy.notify("alerter", replaces, "", &s.summary, &s.body, acts, hints, -1).await {
            Ok(id) => {
                lock(&onscreen).shown(id, &s);
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        "cannot show a desktop notification ({e}); popups are in the terminal only until it works again"
                    );
                }
                failing = true;
                // Its ids may be gone with it (a restarted server): the
                // next notification replaces nothing.
                *lock(&onscreen) = Onscreen::default();
            }
        }
    }
}

async fn follow_signals(proxy: NotificationsProxy<'static>, onscreen: Arc<Mutex<Onscreen>>, acks: Acker) {
    let (Ok(mut invoked), Ok(mut closed)) =
        (proxy.receive_action_invoked().await, proxy.receive_notification_closed().await)
    else {
        tracing::warn!("cannot follow the notification service's signals: popups cannot be acknowledged from it");
        return;
    };
    loop {
        tokio::select! {
            Some(s) = invoked.next() => {
                let Ok(args) = s.args() else { continue };
                if args.action_key != ACK_ACTION {
                    continue;
                }
                let ack = lock(&onscreen).by_id.get(&args.id).and_then(|(_, a)| a.clone());
                let Some(a) = ack else { continue };
                match &acks {
                    // On a task of its own (with its deadline): the
                    // signals keep being read meanwhile.
                    Acker::Direct(sender) => {
                        let sender = sender.clone();
                        tokio::spawn(async move {
                            match crate::popup_ack::send(&sender, &a).await {
                                Ok(()) => tracing::info!("acknowledged to {} ({}) from the desktop", a.daemon, a.addr),
                                Err(e) => tracing::warn!("{e:#}"),
                            }
                        });
                    }
                    Acker::Relay(tx) => {
                        if tx.try_send(a.ack.notification.clone()).is_err() {
                            tracing::warn!("the acknowledgement could not be passed on to the receiver; try again");
                        }
                    }
                }
            }
            Some(s) = closed.next() => {
                if let Ok(args) = s.args() {
                    lock(&onscreen).closed(args.id);
                }
            }
            else => break,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification_of(m: &serde_json::Value) -> Shown {
        notification(m, Shaping { sealed_only: false, markup: true })
    }

    #[test]
    fn with_a_key_only_sealed_popups_are_acknowledged_or_critical_and_markup_only_where_read() {
        let key = Shaping { sealed_only: true, markup: false };
        let footer = "CRITICAL: disk <b>\n\nTo acknowledge: alerter ack 0123abcd\n[ack 1139 n1 t1 0123abcd0123abcd]";
        let forged = notification(&popup(footer, None), key);
        assert!(forged.ack.is_none(), "unsealed: no action");
        assert_eq!(forged.urgency, 1, "unsealed: not critical");
        assert!(forged.body.starts_with("CRITICAL: disk <b>"), "no markup read: nothing escaped: {}", forged.body);
        let sealed = notification(&popup(footer, Some("critical")), key);
        assert!(sealed.ack.is_some());
        assert_eq!(sealed.urgency, 2);
        // What the system receiver would not acknowledge is not offered.
        let mut m = popup(footer, Some("critical"));
        m["ackable"] = serde_json::json!(false);
        assert!(notification(&m, Shaping::default()).ack.is_none());
    }

    fn popup(text: &str, severity: Option<&str>) -> serde_json::Value {
        let mut m = serde_json::json!({"from": "FILESERVER", "to": "WS1", "text": text, "peer": "10.0.0.1:40000"});
        if let Some(s) = severity {
            m["sealed"] = serde_json::json!({"severity": s});
        }
        m
    }

    #[test]
    fn urgency_follows_the_severity() {
        assert_eq!(notification_of(&popup("disk full", Some("critical"))).urgency, 2);
        assert_eq!(notification_of(&popup("disk full", Some("warning"))).urgency, 1);
        assert_eq!(notification_of(&popup("disk fine", Some("info"))).urgency, 0);
        // Unsealed: the daemon's severity prefix says it.
        assert_eq!(notification_of(&popup("CRITICAL: disk full", None)).urgency, 2);
        assert_eq!(notification_of(&popup("RESOLVED: disk full", None)).urgency, 0);
        // A plain `net send` is normal, even with a colon in it.
        assert_eq!(notification_of(&popup("Lunch: now", None)).urgency, 1);
        assert_eq!(notification_of(&popup("lunch", None)).urgency, 1);
    }

    #[test]
    fn repeats_of_the_same_alerts_share_a_key_and_the_footer_becomes_the_action() {
        let a = "WARNING: disk\n\nTo acknowledge: alerter ack 0123abcd\n[ack 1139 n1 t1 0123abcd0123abcd]";
        let b = "WARNING: disk, again\n\nTo acknowledge: alerter ack 0123abcd\n[ack 1139 n2 t2 0123abcd0123abcd]";
        let (sa, sb) = (notification_of(&popup(a, None)), notification_of(&popup(b, None)));
        assert_eq!(sa.key, sb.key);
        assert_eq!(sa.body, "WARNING: disk");
        let ack = sa.ack.expect("it can be acknowledged");
        assert_eq!(ack.addr, "10.0.0.1:1139".parse().unwrap());
        assert_eq!(ack.ack.notification, "n1");
        // Without a footer, the same text from the same sender replaces.
        let plain = notification_of(&popup("<b>lunch</b> & \u{1b}[2J", None));
        assert_eq!(plain.key, notification_of(&popup("<b>lunch</b> & \u{1b}[2J", None)).key);
        assert_ne!(plain.key, notification_of(&popup("tea", None)).key);
        assert!(plain.ack.is_none());
        assert!(plain.body.starts_with("&lt;b&gt;lunch&lt;/b&gt; &amp; "), "{}", plain.body);
        assert!(!plain.body.contains('\u{1b}'), "controls made visible: {}", plain.body);
    }

    #[test]
    fn replaced_and_closed_notifications_are_forgotten() {
        let s =
            |key: &str| Shown { summary: String::new(), body: String::new(), urgency: 1, key: key.into(), ack: None };
        let mut o = Onscreen::default();
        o.shown(1, &s("a"));
        o.shown(1, &s("a"));
        o.shown(2, &s("b"));
        assert_eq!(o.by_key.get("a"), Some(&1));
        o.closed(1);
        assert_eq!(o.by_key.get("a"), None);
        assert_eq!(o.by_key.get("b"), Some(&2));
        for id in 10..(10 + REMEMBERED as u32 + 5) {
            o.shown(id, &s(&format!("k{id}")));
        }
        assert!(o.by_id.len() <= REMEMBERED && o.by_key.len() <= REMEMBERED);
        // An id closed and given again (servers reuse them) is remembered
        // once, and stays while newer ones come.
        let mut o = Onscreen::default();
        o.shown(1, &s("a"));
        o.closed(1);
        o.shown(1, &s("b"));
        assert_eq!(o.order.len(), 1);
        for id in 2..(REMEMBERED as u32) {
            o.shown(id, &s(&format!("k{id}")));
        }
        assert_eq!(o.by_key.get("b"), Some(&1));
    }
}
