//! Scheduled broadcasts: when each notice and each of its reminders is due.
//!
//! A notice announces something that happens at the times of a crontab line
//! ("0 18 * * fri": the file server goes down), or once, at a time an admin
//! gave through the control API (`alerter notice add --at ...`). Each
//! reminder offset (1h, 5m) and the event time itself is tracked separately
//! by a cursor: every firing at or before it has been dealt with (sent or
//! skipped). The store keeps the cursors, so a restart neither repeats a
//! reminder nor sends a burst of stale ones.
//!
//! The rules:
//! - A notice (or reminder offset) never seen before starts from the moment
//!   it is first known: a brand-new notice, or a daemon started for the
//!   first time, fires nothing whose time has already passed. Its cursor is
//!   stored at once, which is what makes it "known" to a later restart.
//! - For a known one, firings missed by more than [`GRACE`] while the daemon
//!   was down are skipped; those missed by less go out late.
//! - A reminder never announces an occurrence that has begun (its time is
//!   at or before now): "In 10 seconds: ..." for something already under way
//!   would be false.
//! - At most one firing per occurrence and offset: the cursor only moves
//!   forward, and offsets are whole seconds, one cursor each.
//!
//! Pure: `now` is always a parameter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::rules::Target;

/// How late a notice may still go out after a restart.
pub const GRACE: Duration = Duration::from_secs(60);

/// When a notice's event happens.
#[derive(Debug, Clone)]
pub enum When {
    /// At every time a crontab line names (the config's notices).
    Cron(Box<alerter_schedule::Cron>),
    /// Once (a notice set at run time).
    Once(DateTime<Utc>),
}

/// A compiled notice.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The config's name, or the id of a notice set at run time.
    pub name: String,
    pub when: When,
    /// The time zone its times are shown in (and a crontab line read in).
    pub tz: Tz,
    /// Offsets ahead of the event; zero is the event itself.
    pub offsets: Vec<Duration>,
    pub targets: Vec<Target>,
    /// For a notice set at run time: its literal text and who set it. The
    /// config's notices have a message template instead.
    pub set: Option<SetNotice>,
}

/// What a notice set at run time carries beside its schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetNotice {
    /// A mail's subject, "Notice: {title}".
    pub title: String,
    pub text: String,
    pub by: String,
    pub at: DateTime<Utc>,
}

impl Notice {
    /// The template name of the notice's message.
    pub fn template_name(&self) -> String {
        format!("notice/{}/message", self.name)
    }

    /// The first time its event happens after `after`.
    pub fn next_event(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.when {
            When::Cron(cron) => cron.next_after(&self.tz, after),
            When::Once(at) => (*at > after).then_some(*at),
        }
    }

    /// What titles call it: the title it was set with, else its name.
    pub fn label(&self) -> &str {
        self.set.as_ref().map_or(&self.name, |s| &s.title)
    }

    /// The record the store keeps of a notice set at run time (`None` for
    /// the config's).
    pub fn record(&self) -> Option<NoticeRecord> {
        let (When::Once(at), Some(set)) = (&self.when, &self.set) else {
            return None;
        };
        Some(NoticeRecord {
            id: self.name.clone(),
            at: *at,
            timezone: self.tz.name().to_string(),
            remind: self.offsets.iter().map(Duration::as_secs).collect(),
            targets: self.targets.clone(),
            title: set.title.clone(),
            text: set.text.clone(),
            created_by: set.by.clone(),
            created_at: set.at,
        })
    }

    /// A notice set at run time, from its record.
    pub fn from_record(r: NoticeRecord) -> Result<Notice, String> {
        Ok(Notice {
            tz: r.timezone.parse().map_err(|_| format!("`{}` is not a time zone", r.timezone))?,
            name: r.id,
            when: When::Once(r.at),
            offsets: r.remind.into_iter().map(Duration::from_secs).collect(),
            targets: r.targets,
            set: Some(SetNotice { title: r.title, text: r.text, by: r.created_by, at: r.created_at }),
        })
    }
}

/// A notice set at run time as the store keeps it (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticeRecord {
    pub id: String,
    pub at: DateTime<Utc>,
    pub timezone: String,
    /// Offsets ahead of `at` in seconds; 0 is `at` itself.
    pub remind: Vec<u64>,
    pub targets: Vec<Target>,
    pub title: String,
    pub text: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
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
            name: self.notice.label().to_string(),
            at: local.format("%H:%M").to_string(),
            date: local.format("%Y-%m-%d").to_string(),
            weekday: local.format("%A").to_string(),
            in_: human_duration(self.ahead),
        }
    }

    /// Title and text, given the rendered message.
    pub fn title_and_text(&self, message: &str) -> (String, String) {
        let label = self.notice.label();
        if self.ahead.is_zero() {
            (format!("Notice: {label}"), message.to_string())
        } else {
            let when = human_duration(self.ahead);
            (format!("Reminder: {label} in {when}"), format!("In {when}: {message}"))
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

/// A notice position's key: the notice's name and a reminder offset in seconds.
pub type NoticeKey = (String, u64);
type Key = NoticeKey;

/// Tracks, per notice and offset, up to when firings have been dealt with.
#[derive(Debug, Default)]
pub struct NoticeScheduler {
    /// Each notice with its offsets in whole seconds, longest first, without
    /// duplicates: the store keys cursors by whole seconds, and two offsets
    /// sharing a cursor would each fire for the same occurrence.
    notices: Vec<(Arc<Notice>, Vec<Duration>)>,
    cursors: HashMap<Key, DateTime<Utc>>,
}

impl NoticeScheduler {
    /// `history` maps (notice name, offset in seconds) to its stored cursor
    /// (see [`NoticeScheduler::history`]). A (notice, offset) missing from
    /// it is new and starts at `now`: firings at `now` or later only.
    pub fn new(notices: Vec<Arc<Notice>>, history: &HashMap<Key, DateTime<Utc>>, now: DateTime<Utc>) -> Self {
        let mut s = NoticeScheduler::default();
        for n in notices {
            s.add(n, history, now);
        }
        s
    }

    /// Adds a notice, with the cursors of `history` where it has them (as
    /// [`NoticeScheduler::new`]). A notice of the same name is replaced.
    pub fn add(&mut self, n: Arc<Notice>, history: &HashMap<Key, DateTime<Utc>>, now: DateTime<Utc>) {
        self.remove(&n.name);
        let floor = now - chrono::Duration::from_std(GRACE).expect("small");
        // Cursors are inclusive ("everything at or before it is done"), so a
        // new one sits just before `now`: a firing exactly at `now` is not
        // from before the notice was known.
        let first_known = now - chrono::Duration::nanoseconds(1);
        let mut offsets: Vec<Duration> = n.offsets.iter().map(|o| Duration::from_secs(o.as_secs())).collect();
        offsets.sort_by(|a, b| b.cmp(a));
        offsets.dedup();
        for off in &offsets {
            let key = (n.name.clone(), off.as_secs());
            let cursor = match history.get(&key) {
                Some(&last) => last.max(floor),
                None => first_known,
            };
            self.cursors.insert(key, cursor);
        }
        self.notices.push((n, offsets));
    }

    /// Forgets a notice and its cursors; the notice, if it was there.
    pub fn remove(&mut self, name: &str) -> Option<Arc<Notice>> {
        let i = self.notices.iter().position(|(n, _)| n.name == name)?;
        let (n, _) = self.notices.remove(i);
        self.cursors.retain(|(k, _), _| k != name);
        Some(n)
    }

    /// The notices, in the order they were added.
    pub fn notices(&self) -> impl Iterator<Item = &Arc<Notice>> {
        self.notices.iter().map(|(n, _)| n)
    }

    /// The notice of this name.
    pub fn get(&self, name: &str) -> Option<&Arc<Notice>> {
        self.notices().find(|n| n.name == name)
    }

    /// What is next to go out for one notice, per offset, earliest first:
    /// (when it goes out, when its event happens, how far ahead).
    pub fn pending(&self, name: &str) -> Vec<(DateTime<Utc>, DateTime<Utc>, Duration)> {
        let Some((n, offsets)) = self.notices.iter().find(|(n, _)| n.name == name) else {
            return Vec::new();
        };
        let mut out: Vec<_> =
            offsets.iter().filter_map(|o| self.next_fire(n, *o).map(|(event, fire)| (fire, event, *o))).collect();
        out.sort_by_key(|(fire, _, _)| *fire);
        out
    }

    /// The names of the notices that will never fire again (one-off
    /// notices that went out).
    pub fn finished(&self) -> Vec<String> {
        self.notices
            .iter()
            .filter(|(n, offsets)| offsets.iter().all(|o| self.next_fire(n, *o).is_none()))
            .map(|(n, _)| n.name.clone())
            .collect()
    }

    fn next_fire(&self, n: &Notice, off: Duration) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let cursor = *self.cursors.get(&(n.name.clone(), off.as_secs()))?;
        let off = chrono::Duration::from_std(off).ok()?;
        let event = n.next_event(cursor + off)?;
        Some((event, event - off))
    }

    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        self.notices
            .iter()
            .flat_map(|(n, offsets)| offsets.iter().filter_map(|o| self.next_fire(n, *o).map(|(_, f)| f)))
            .min()
    }

    /// The next firing of each notice and offset, earliest first: (notice,
    /// when it goes out, when its event happens).
    pub fn upcoming(&self) -> Vec<(&str, DateTime<Utc>, DateTime<Utc>)> {
        let mut out: Vec<(&str, DateTime<Utc>, DateTime<Utc>)> = self
            .notices
            .iter()
            .flat_map(|(n, offsets)| {
                offsets.iter().filter_map(|o| self.next_fire(n, *o).map(|(event, fire)| (n.name.as_str(), fire, event)))
            })
            .collect();
        out.sort_by_key(|(name, fire, _)| (*fire, *name));
        out
    }

    /// Everything due at or before `now`, in time order. Moves the cursors
    /// past them, and past reminders skipped because their occurrence has
    /// begun.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<NoticeFiring> {
        let mut out = Vec::new();
        for (n, offsets) in self.notices.clone() {
            for off in offsets {
                while let Some((event_at, fire_at)) = self.next_fire(&n, off) {
                    if fire_at > now {
                        break;
                    }
                    self.cursors.insert((n.name.clone(), off.as_secs()), fire_at);
                    // Late (after a restart, or a wake-up delayed by a busy
                    // or suspended machine): a reminder for something that
                    // has already begun would announce the past.
                    if !off.is_zero() && event_at <= now {
                        continue;
                    }
                    out.push(NoticeFiring { notice: n.clone(), event_at, ahead: off, fire_at });
                }
            }
        }
        out.sort_by_key(|f| (f.fire_at, std::cmp::Reverse(f.ahead)));
        out
    }

    /// Each (notice, offset in seconds)'s cursor, for the store: everything
    /// due at or before it has been sent or skipped. Stored from the moment
    /// a notice is first known, not only once it has fired, so that a
    /// restart tells a known notice (missed firings within [`GRACE`] go out
    /// late) from a new one (starts from now).
    pub fn history(&self) -> &HashMap<Key, DateTime<Utc>> {
        &self.cursors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alerter_schedule::Cron;

    fn parse_cron(s: &str) -> Result<Cron, String> {
        Cron::parse(s)
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn notice() -> Arc<Notice> {
        Arc::new(Notice {
            name: "backup".into(),
            when: When::Cron(Box::new(parse_cron("0 18 * * fri").unwrap())),
            tz: "Europe/Berlin".parse().unwrap(),
            offsets: vec![Duration::from_secs(3600), Duration::from_secs(300), Duration::ZERO],
            targets: vec![],
            set: None,
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
        let five = s.due(utc("2026-11-27T16:55:00Z"));
        let aheads: Vec<u64> = five.iter().map(|f| f.ahead.as_secs()).collect();
        assert_eq!(aheads, vec![300]);
        let at = s.due(utc("2026-11-27T17:00:00Z"));
        let aheads: Vec<u64> = at.iter().map(|f| f.ahead.as_secs()).collect();
        assert_eq!(aheads, vec![0]);
        assert_eq!(at[0].title_and_text("x").0, "Notice: backup");
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

    /// Every 30 seconds, reminded 10 seconds ahead, as in the report.
    fn every_30s() -> Arc<Notice> {
        Arc::new(Notice {
            name: "drill".into(),
            when: When::Cron(Box::new(parse_cron("*/30 * * * * *").unwrap())),
            tz: "UTC".parse().unwrap(),
            offsets: vec![Duration::from_secs(10), Duration::ZERO],
            targets: vec![],
            set: None,
        })
    }

    /// (fire time, event time, offset in seconds, text) of each firing.
    fn fired(fs: &[NoticeFiring]) -> Vec<(DateTime<Utc>, DateTime<Utc>, u64, String)> {
        fs.iter()
            .map(|f| {
                (f.fire_at, f.event_at, f.ahead.as_secs(), f.title_and_text(&format!("drill at {}", f.context().at)).1)
            })
            .collect()
    }

    /// Steps through every wake-up up to `until`, collecting what fires.
    fn run(s: &mut NoticeScheduler, until: DateTime<Utc>) -> Vec<NoticeFiring> {
        let mut out = Vec::new();
        while let Some(w) = s.next_wakeup().filter(|w| *w <= until) {
            out.extend(s.due(w));
        }
        out
    }

    #[test]
    fn first_start_fires_nothing_from_before_it() {
        // First started at 07:02:27, knowing nothing: the 07:01:30 and
        // 07:02:00 notices and the reminders for 07:02:00 (due 07:01:50) and
        // 07:02:30 (due 07:02:20) all fell before the notice was known.
        let start = utc("2026-01-05T07:02:27Z");
        let mut s = NoticeScheduler::new(vec![every_30s()], &HashMap::new(), start);
        assert!(s.due(start).is_empty());
        assert_eq!(s.next_wakeup(), Some(utc("2026-01-05T07:02:30Z")));
        let out = run(&mut s, utc("2026-01-05T07:03:30Z"));
        assert_eq!(
            fired(&out),
            vec![
                (utc("2026-01-05T07:02:30Z"), utc("2026-01-05T07:02:30Z"), 0, "drill at 07:02".to_string()),
                (
                    utc("2026-01-05T07:02:50Z"),
                    utc("2026-01-05T07:03:00Z"),
                    10,
                    "In 10 seconds: drill at 07:03".to_string()
                ),
                (utc("2026-01-05T07:03:00Z"), utc("2026-01-05T07:03:00Z"), 0, "drill at 07:03".to_string()),
                (
                    utc("2026-01-05T07:03:20Z"),
                    utc("2026-01-05T07:03:30Z"),
                    10,
                    "In 10 seconds: drill at 07:03".to_string()
                ),
                (utc("2026-01-05T07:03:30Z"), utc("2026-01-05T07:03:30Z"), 0, "drill at 07:03".to_string()),
            ]
        );
    }

    #[test]
    fn a_new_notice_starts_at_the_instant_it_is_known() {
        // Known exactly at an occurrence: that one is not from before it.
        let start = utc("2026-01-05T07:02:30Z");
        let mut s = NoticeScheduler::new(vec![every_30s()], &HashMap::new(), start);
        assert_eq!(fired(&s.due(start)), vec![(start, start, 0, "drill at 07:02".to_string())]);
        // A notice added by a reload next to a known one starts from the
        // reload, while the known one keeps its history.
        let mut known = HashMap::new();
        known.insert(("backup".to_string(), 3600), utc("2026-11-20T16:00:00Z"));
        known.insert(("backup".to_string(), 300), utc("2026-11-20T16:55:00Z"));
        known.insert(("backup".to_string(), 0), utc("2026-11-20T17:00:00Z"));
        let reload = utc("2026-11-27T16:00:31Z");
        let mut s = NoticeScheduler::new(vec![notice(), every_30s()], &known, reload);
        let out = s.due(reload);
        assert_eq!(out.len(), 1, "only the known notice's reminder, 31 s late: {:?}", fired(&out));
        assert_eq!((out[0].notice.name.as_str(), out[0].ahead.as_secs()), ("backup", 3600));
        assert_eq!(s.next_wakeup(), Some(utc("2026-11-27T16:00:50Z")), "the new one's first reminder, for 16:01:00");
    }

    #[test]
    fn a_reminder_never_announces_an_occurrence_that_has_begun() {
        // Known since 07:00, stopped after the 07:03:00 notice, back at
        // 07:03:40: within the grace minute, so the 07:03:30 notice still
        // goes out late, but its reminder (due 07:03:20) would say "In 10
        // seconds" about something that began ten seconds ago.
        let mut s = NoticeScheduler::new(vec![every_30s()], &HashMap::new(), utc("2026-01-05T07:00:00Z"));
        run(&mut s, utc("2026-01-05T07:03:05Z"));
        let restart = utc("2026-01-05T07:03:40Z");
        let mut s2 = NoticeScheduler::new(vec![every_30s()], s.history(), restart);
        assert_eq!(
            fired(&s2.due(restart)),
            vec![(utc("2026-01-05T07:03:30Z"), utc("2026-01-05T07:03:30Z"), 0, "drill at 07:03".to_string())]
        );
        assert_eq!(s2.next_wakeup(), Some(utc("2026-01-05T07:03:50Z")), "the reminder for 07:04:00");
        // The same holds without a restart when a wake-up comes late: at
        // 07:00:35 the 07:00:30 reminder (due 07:00:20) is dropped, the
        // notices themselves go out.
        let mut s = NoticeScheduler::new(vec![every_30s()], &HashMap::new(), utc("2026-01-05T07:00:00Z"));
        assert_eq!(
            fired(&s.due(utc("2026-01-05T07:00:35Z"))),
            vec![
                (utc("2026-01-05T07:00:00Z"), utc("2026-01-05T07:00:00Z"), 0, "drill at 07:00".to_string()),
                (utc("2026-01-05T07:00:30Z"), utc("2026-01-05T07:00:30Z"), 0, "drill at 07:00".to_string()),
            ]
        );
        assert_eq!(s.next_wakeup(), Some(utc("2026-01-05T07:00:50Z")));
    }

    #[test]
    fn at_most_one_firing_per_occurrence_and_offset() {
        // Offsets that are the same in whole seconds share a cursor, so
        // they are one offset, not two reminders for every occurrence.
        let mut n = (*every_30s()).clone();
        n.offsets = vec![Duration::from_millis(10_500), Duration::from_secs(10), Duration::ZERO];
        let n = Arc::new(n);
        let start = utc("2026-01-05T07:02:27Z");
        let until = utc("2026-01-05T07:10:00Z");
        // Restarted from its history after every single wake-up, and asked
        // twice each time: still each occurrence once per offset.
        let mut history = HashMap::new();
        let mut s = NoticeScheduler::new(vec![n.clone()], &history, start);
        let mut seen = Vec::new();
        while let Some(w) = s.next_wakeup().filter(|w| *w <= until) {
            seen.extend(s.due(w).iter().map(|f| (f.event_at, f.ahead.as_secs())));
            seen.extend(s.due(w).iter().map(|f| (f.event_at, f.ahead.as_secs())));
            history = s.history().clone();
            s = NoticeScheduler::new(vec![n.clone()], &history, w);
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(seen.len(), unique.len(), "{seen:?}");
        // 07:02:30 to 07:10:00 is 16 occurrences; the first one's reminder
        // was due before the start.
        assert_eq!(seen.iter().filter(|(_, off)| *off == 0).count(), 16);
        assert_eq!(seen.iter().filter(|(_, off)| *off == 10).count(), 15);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(300)), "5 minutes");
        assert_eq!(human_duration(Duration::from_secs(5400)), "1 hour 30 minutes");
        assert_eq!(human_duration(Duration::ZERO), "now");
    }
}
