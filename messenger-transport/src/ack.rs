//! Acknowledgements from the popup: the footer a popup carries so that its
//! receiver can acknowledge it, and the message the receiver sends back.
//!
//! Both are plain text on top of the Messenger protocol, so a classic
//! receiver (Windows, Samba, LinPopUp) shows the footer as two readable
//! lines, and an acknowledgement is an ordinary (or sealed) message to the
//! sender's acknowledgement port. This module only writes and reads the
//! text; what a token is and whether it is right is the sender's business.
//!
//! The footer ends the text, after a blank line:
//!
//! ```text
//! To acknowledge: alerter ack 3fa2c1d4
//! [ack 1139 0194f3a2b1c5a1b2c3d4e5f6a7b8c 9f8e7d6c5b4a39281706 3fa2c1d4e5f60718]
//! ```
//!
//! (port, notification id, token, the alerts' ids). The acknowledgement's
//! text is `ACK <notification id> <token>`.

use std::fmt::Write as _;

use crate::Error;

/// Alert ids a footer lists at most (the rest of a large group are still
/// acknowledged: the sender knows what the notification held).
pub const MAX_ALERTS: usize = 8;
/// The longest notification id and token taken.
const MAX_FIELD: usize = 64;

/// What a popup's footer says: where and how to acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRef {
    /// The sender's acknowledgement port (TCP, the session form).
    pub port: u16,
    /// The notification's id at the sender.
    pub notification: String,
    /// The token that proves the acknowledger saw this popup.
    pub token: String,
    /// The ids of the alerts it is about (16 hex digits each).
    pub alerts: Vec<String>,
}

fn is_field(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_FIELD && s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

fn is_alert_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl AckRef {
    /// The footer, blank line first, as it is appended to a popup's text.
    /// Its length is what the text must leave room for.
    pub fn footer(&self) -> String {
        let alerts = &self.alerts[..self.alerts.len().min(MAX_ALERTS)];
        let mut out = String::from("\n\n");
        if let Some(first) = alerts.first() {
            let _ = writeln!(out, "To acknowledge: alerter ack {}", &first[..8.min(first.len())]);
        }
        let _ = write!(out, "[ack {} {} {}", self.port, self.notification, self.token);
        for a in alerts {
            let _ = write!(out, " {a}");
        }
        out.push(']');
        out
    }

    /// The footer at the end of `text`, and where the text before it ends;
    /// `None` when the last line is not one. Strict: a field out of shape
    /// means no footer, never a guess.
    pub fn find(text: &str) -> Option<(AckRef, usize)> {
        let trimmed = text.trim_end_matches(['\r', '\n', ' ']);
        let line_start = trimmed.rfind('\n').map_or(0, |i| i + 1);
        let line = trimmed[line_start..].trim_end_matches('\r');
        let inner = line.strip_prefix("[ack ")?.strip_suffix(']')?;
        let mut fields = inner.split(' ');
        let port: u16 = fields.next()?.parse().ok().filter(|p| *p != 0)?;
        let notification = fields.next().filter(|f| is_field(f))?.to_string();
        let token = fields.next().filter(|f| is_field(f))?.to_string();
        let alerts: Vec<String> = fields.map(str::to_string).collect();
        if alerts.len() > MAX_ALERTS || !alerts.iter().all(|a| is_alert_id(a)) {
            return None;
        }
        // The readable line above it, and the blank line, belong to it too.
        let mut start = line_start;
        let before = text[..start].trim_end_matches(['\r', '\n']);
        let prev_start = before.rfind('\n').map_or(0, |i| i + 1);
        if before[prev_start..].starts_with("To acknowledge: alerter ack ") {
            start = prev_start;
        }
        let body_end = text[..start].trim_end_matches(['\r', '\n']).len();
        Some((AckRef { port, notification, token, alerts }, body_end))
    }
}

/// An acknowledgement, as the receiver sends it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckMessage {
    pub notification: String,
    pub token: String,
}

impl AckMessage {
    /// The message's text.
    pub fn text(&self) -> String {
        format!("ACK {} {}", self.notification, self.token)
    }

    /// Reads an acknowledgement's text: exactly `ACK <id> <token>`.
    pub fn parse(text: &str) -> Result<AckMessage, Error> {
        let text = text.trim_end_matches(['\r', '\n']);
        let mut fields = text.split(' ');
        if fields.next() != Some("ACK") {
            return Err(Error::Malformed("not an acknowledgement (it starts with `ACK `)".into()));
        }
        let (Some(notification), Some(token), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(Error::Malformed("an acknowledgement is `ACK <notification> <token>`".into()));
        };
        if !is_field(notification) || !is_field(token) {
            return Err(Error::Malformed("an acknowledgement's id and token are lower-case letters and digits".into()));
        }
        Ok(AckMessage { notification: notification.to_string(), token: token.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AckRef {
        AckRef {
            port: 1139,
            notification: "0194f3a2b1c5a1b2c3d4e5f6a7b8c".into(),
            token: "9f8e7d6c5b4a39281706".into(),
            alerts: vec!["3fa2c1d4e5f60718".into(), "00000000000000ff".into()],
        }
    }

    #[test]
    fn a_footer_is_found_again_at_the_end_of_its_text() {
        let r = sample();
        let text = format!("disk full on /srv\r\nsecond line{}", r.footer());
        assert!(text.contains("\n\nTo acknowledge: alerter ack 3fa2c1d4\n[ack 1139 "), "{text}");
        let (found, end) = AckRef::find(&text).unwrap();
        assert_eq!(found, r);
        assert_eq!(&text[..end], "disk full on /srv\r\nsecond line");
        // As a receiver may hand it on: CR LF line ends, a trailing newline.
        let crlf = text.replace('\n', "\r\n") + "\r\n";
        assert_eq!(AckRef::find(&crlf).unwrap().0, r);
    }

    #[test]
    fn anything_out_of_shape_is_no_footer() {
        let good = sample().footer();
        for bad in [
            "no footer at all".to_string(),
            good.replace("[ack 1139", "[ack 0"),
            good.replace("[ack 1139", "[ack 99999"),
            good.replace("[ack 1139", "[ack x"),
            good.replace("9f8e7d6c5b4a39281706", "9F8E"),
            good.replace(" 3fa2c1d4e5f60718", " 3fa2"),
            good.replace(']', ""),
            good.replace(
                "[ack 1139 0194f3a2b1c5a1b2c3d4e5f6a7b8c 9f8e7d6c5b4a39281706 3fa2c1d4e5f60718 00000000000000ff]",
                "[ack 1139 a]",
            ),
            format!("{good} trailing words"),
            format!("[ack 1 a b {}]", ["0000000000000000"; MAX_ALERTS + 1].join(" ")),
            format!("[ack 1 {} b]", "a".repeat(MAX_FIELD + 1)),
        ] {
            assert_eq!(AckRef::find(&bad), None, "{bad:?}");
        }
        // Only the ack line: found, and the whole text is footer.
        assert_eq!(AckRef::find("[ack 1 a b]").map(|(r, end)| (r.port, end)), Some((1, 0)));
    }

    #[test]
    fn acknowledgements_parse_strictly() {
        let m = AckMessage { notification: "abc123".into(), token: "ff00".into() };
        assert_eq!(AckMessage::parse(&m.text()).unwrap(), m);
        assert_eq!(AckMessage::parse("ACK abc123 ff00\r\n").unwrap(), m);
        for bad in ["", "ACK", "ACK a", "ACK a b c", "ack a b", "ACK A b", "ACK a b\n\nmore", "ACK  a b", "NACK a b"] {
            assert!(AckMessage::parse(bad).is_err(), "{bad:?}");
        }
    }
}
