//! Scheduled broadcasts: when each notice and each of its reminders is due.
//!
//! A notice announces something that happens at the times of a crontab line
//! ("0 18 * * fri": the file server goes down). Each reminder offset (1h,
//! 5m) and the event time itself is tracked separately by the time it last
//! fired, which the store keeps, so a restart neither repeats a reminder nor
//! sends a burst of stale ones: anything missed by more than [`GRACE`] while
//! the daemon was down is skipped. Pure: `now` is always a parameter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::rules::Target;

/// How late a notice may still go out after a restart.
pub const GRACE: Duration = Duration::from_secs(60);

/// A compiled notice.
#[derive(Debug, Clone)]
pub struct Notice {
    pub name: String,
    pub cron: alerter_schedule::Cron,
    pub tz: Tz,
    /// Offsets ahead of the event; zero is the event itself.
    pub offsets: Vec<Duration>,
    pub targets: Vec<Target>,
}

impl Notice {
    /// The template name of the notice's message.
    pub fn template_name(&self) -> String {
        format!("notice/{}/message", self.name)
    }
}

/// One due notice or reminder.
#[derive(Debug, Clone)]
pub struct NoticeFiring {
    pub notice: Arc<Notice>,
    /// When the announced event happens.
    pub event_at: DateTime<Utc>,
    /// How far ahead of it this one goes out (zero: at the event).
    pub ahead: Duration,
    pub fire_at: DateTime<Utc>,
}

/// The variables a notice message template sees.
#[derive(Debug, Serialize)]
pub struct NoticeContext {
    pub name: String,
    /// Local time of the event, HH:MM.
    pub at: String,
    /// Local date of the event, YYYY-MM-DD.
    pub date: String,
    pub weekday: String,
    /// "1 hour", "5 minutes", or "now".
    #[serde(rename = "in")]
    pub in_: String,
}

impl NoticeFiring {
    pub fn context(&self) -> NoticeContext {
        let local = self.event_at.with_timezone(&self.notice.tz);
        NoticeContext {
            name: self.notice.name.clone(),
            at: local.format("%H:%M").to_string(),
            date: local.format("%Y-%m-%d").to_string(),
            weekday: local.format("%A").to_string(),
            in_: human_duration(self.ahead),
        }
    }

    /// Title and text, given the rendered message.
    pub fn title_and_text(&self, message: &str) -> (String, String) {
        if self.ahead.is_zero() {
            (format!("Notice: {}", self.notice.name), message.to_string())
        } else {
            let when = human_duration(self.ahead);
            (format!("Reminder: {} in {when}", self.notice.name), format!("In {when}: {message}"))
        }
    }
}

/// "1 hour", "5 minutes", "1 hour 30 minutes", "now".
pub fn human_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "now".into();
    }
    let mut parts = Vec::new();
    for (unit, size) in [("day", 86_400), ("hour", 3600), ("minute", 60), ("second", 1)] {
        let n = secs / size;
        if n > 0 {
            parts.push(if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") });
            secs %= size;
        }
    }
    parts.join(" ")
}

type Key = (String, u64);

/// Tracks when each notice offset last fired.
#[derive(Debug, Default)]
pub struct NoticeScheduler {
    notices: Vec<Arc<Notice>>,
    cursors: HashMap<Key, DateTime<Utc>>,
}

impl NoticeScheduler {
    /// `history` maps (notice name, offset in seconds) to when it last fired.
    pub fn new(notices: Vec<Arc<Notice>>, history: &HashMap<Key, DateTime<Utc>>, now: DateTime<Utc>) -> Self {
        let floor = now - chrono::Duration::from_std(GRACE).expect("small");
        let mut cursors = HashMap::new();
        for n in &notices {
            for off in &n.offsets {
                let key = (n.name.clone(), off.as_secs());
                let last = history.get(&key).copied().unwrap_or(floor).max(floor);
                cursors.insert(key, last);
            }
        }
        NoticeScheduler { notices, cursors }
    }

    fn next_fire(&self, n: &Notice, off: Duration) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let cursor = *self.cursors.get(&(n.name.clone(), off.as_secs()))?;
        let off = chrono::Duration::from_std(off).ok()?;
        let event = n.cron.next_after(&n.tz, cursor + off)?;
        Some((event, event - off))
    }

    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        self.notices.iter().flat_map(|n| n.offsets.iter().filter_map(|o| self.next_fire(n, *o).map(|(_, f)| f))).min()
    }

    /// Everything due at or before `now`, in time order. Marks them fired.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<NoticeFiring> {
        let mut out = Vec::new();
        for n in self.notices.clone() {
            for off in &n.offsets {
                while let Some((event_at, fire_at)) = self.next_fire(&n, *off) {
                    if fire_at > now {
                        break;
                    }
                    self.cursors.insert((n.name.clone(), off.as_secs()), fire_at);
                    out.push(NoticeFiring { notice: n.clone(), event_at, ahead: *off, fire_at });
                }
            }
        }
        out.sort_by_key(|f| (f.fire_at, std::cmp::Reverse(f.ahead)));
        out
    }

    /// When each (notice, offset) last fired, for the store.
    pub fn history(&self) -> &HashMap<Key, DateTime<Utc>> {
        &self.cursors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::parse_cron;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn notice() -> Arc<Notice> {
        Arc::new(Notice {
            name: "backup".into(),
            cron: parse_cron("0 18 * * fri").unwrap(),
            tz: "Europe/Berlin".parse().unwrap(),
            offsets: vec![Duration::from_secs(3600), Duration::from_secs(300), Duration::ZERO],
            targets: vec![],
        })
    }

    #[test]
    fn reminders_then_the_event() {
        let start = utc("2026-11-26T12:00:00Z");
        let mut s = NoticeScheduler::new(vec![notice()], &HashMap::new(), start);
        // Friday 2026-11-27 18:00 Berlin = 17:00 UTC.
        assert_eq!(s.next_wakeup(), Some(utc("2026-11-27T16:00:00Z")));
        assert!(s.due(utc("2026-11-27T15:59:59Z")).is_empty());
        let due = s.due(utc("2026-11-27T16:00:00Z"));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].title_and_text("Server down at 18:00").1, "In 1 hour: Server down at 18:00");
        assert_eq!(due[0].context().at, "18:00");
        assert_eq!(s.next_wakeup(), Some(utc("2026-11-27T16:55:00Z")));
        let rest = s.due(utc("2026-11-27T17:00:00Z"));
        let aheads: Vec<u64> = rest.iter().map(|f| f.ahead.as_secs()).collect();
        assert_eq!(aheads, vec![300, 0]);
        assert_eq!(rest[1].title_and_text("x").0, "Notice: backup");
        // Next week's reminder is next.
        assert_eq!(s.next_wakeup(), Some(utc("2026-12-04T16:00:00Z")));
    }

    #[test]
    fn restart_neither_repeats_nor_bursts() {
        let mut s = NoticeScheduler::new(vec![notice()], &HashMap::new(), utc("2026-11-27T15:00:00Z"));
        let fired = s.due(utc("2026-11-27T16:00:00Z"));
        assert_eq!(fired.len(), 1);
        // Restart a minute later with the history: the 1h reminder is not repeated.
        let mut s2 = NoticeScheduler::new(vec![notice()], s.history(), utc("2026-11-27T16:01:00Z"));
        assert!(s2.due(utc("2026-11-27T16:01:00Z")).is_empty());
        // Down over the whole event: nothing stale is sent after coming back.
        let mut s3 = NoticeScheduler::new(vec![notice()], s.history(), utc("2026-11-27T19:00:00Z"));
        assert!(s3.due(utc("2026-11-27T19:00:00Z")).is_empty());
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(300)), "5 minutes");
        assert_eq!(human_duration(Duration::from_secs(5400)), "1 hour 30 minutes");
        assert_eq!(human_duration(Duration::ZERO), "now");
    }
}
