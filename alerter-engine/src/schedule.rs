//! Time: recurring weekly windows (`schedules:`). Crontab lines are
//! alerter-schedule's.
//!
//! Everything here is pure and takes `now` as a parameter. Local times are
//! computed in each schedule's own time zone, so "08:00-18:00 Europe/Berlin"
//! stays 08:00 local across daylight-saving changes.

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// A time-of-day range in minutes since midnight; `end` may be 1440 (24:00)
/// and may be lower than `start` when the range crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: u16,
    pub end: u16,
}

/// A named recurring window: active while any of its windows is.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub tz: Tz,
    pub windows: Vec<Window>,
}

/// Days of the week and times of day. A time range that crosses midnight
/// belongs to the day it starts on: `mon 22:00-06:00` ends Tuesday 06:00.
#[derive(Debug, Clone)]
pub struct Window {
    /// Indexed by `Weekday::num_days_from_monday`.
    pub days: [bool; 7],
    /// Empty means the whole day.
    pub times: Vec<TimeRange>,
}

impl Window {
    pub fn new(days: &[(chrono::Weekday, chrono::Weekday)], times: Vec<TimeRange>) -> Window {
        let mut set = [days.is_empty(); 7];
        for (from, to) in days {
            let (a, b) = (from.num_days_from_monday() as usize, to.num_days_from_monday() as usize);
            // A range like fri-mon wraps over the weekend.
            let mut d = a;
            loop {
                set[d] = true;
                if d == b {
                    break;
                }
                d = (d + 1) % 7;
            }
        }
        Window { days: set, times }
    }

    fn active_at(&self, local: NaiveDateTime) -> bool {
        let day = local.weekday().num_days_from_monday() as usize;
        let yesterday = (day + 6) % 7;
        let minute = (local.hour() * 60 + local.minute()) as u16;
        if self.times.is_empty() {
            return self.days[day];
        }
        self.times.iter().any(|r| {
            if r.start < r.end {
                self.days[day] && minute >= r.start && minute < r.end
            } else {
                (self.days[day] && minute >= r.start) || (self.days[yesterday] && minute < r.end)
            }
        })
    }
}

impl Schedule {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.tz).naive_local();
        self.windows.iter().any(|w| w.active_at(local))
    }

    /// The first instant after `now` at which [`Schedule::is_active`] changes,
    /// if it changes within the next eight days (a weekly pattern that has not
    /// changed by then never will).
    pub fn next_change(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let current = self.is_active(now);
        let mut candidates: Vec<DateTime<Utc>> = Vec::new();
        let today = now.with_timezone(&self.tz).date_naive();
        for offset in 0..=8u64 {
            let Some(date) = today.checked_add_days(Days::new(offset)) else { continue };
            let mut minutes: Vec<u16> = vec![0];
            for w in &self.windows {
                for r in &w.times {
                    minutes.push(r.start);
                    minutes.push(r.end % 1440);
                }
            }
            for m in minutes {
                if let Some(t) = local_to_utc(&self.tz, date, m)
                    && t > now
                {
                    candidates.push(t);
                }
            }
        }
        candidates.sort();
        candidates.dedup();
        candidates.into_iter().find(|t| self.is_active(*t) != current)
    }
}

/// The UTC instant of a local date and minute of day. A time skipped by a
/// daylight-saving change maps to the first instant after the gap; a time
/// that occurs twice maps to its first occurrence.
pub fn local_to_utc(tz: &Tz, date: NaiveDate, minute: u16) -> Option<DateTime<Utc>> {
    let time = NaiveTime::from_hms_opt(u32::from(minute / 60), u32::from(minute % 60), 0)?;
    let naive = date.and_time(time);
    match tz.from_local_datetime(&naive).earliest() {
        Some(t) => Some(t.with_timezone(&Utc)),
        None => {
            // In a gap: step forward minute by minute (gaps are at most a few hours).
            (1..=24 * 60).find_map(|step| {
                let later = naive + chrono::Duration::minutes(step);
                tz.from_local_datetime(&later).earliest().map(|t| t.with_timezone(&Utc))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The config parses these with messages for admins; tests need only the shape.
    fn parse_weekday_range(s: &str) -> Option<(chrono::Weekday, chrono::Weekday)> {
        match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|d| (d, d)),
        }
    }

    fn parse_time_range(s: &str) -> Option<TimeRange> {
        let minutes = |t: &str| -> Option<u16> {
            let (h, m) = t.split_once(':')?;
            Some(h.parse::<u16>().ok()? * 60 + m.parse::<u16>().ok()?)
        };
        let (a, b) = s.split_once('-')?;
        Some(TimeRange { start: minutes(a)?, end: minutes(b)? })
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn sched(tz: &str, days: &[&str], times: &[&str]) -> Schedule {
        let days: Vec<_> = days.iter().map(|d| parse_weekday_range(d).unwrap()).collect();
        let times = times.iter().map(|t| parse_time_range(t).unwrap()).collect();
        Schedule { name: "s".into(), tz: tz.parse().unwrap(), windows: vec![Window::new(&days, times)] }
    }

    #[test]
    fn business_hours_in_local_time() {
        let s = sched("Europe/Berlin", &["mon-fri"], &["08:00-18:00"]);
        // 2026-11-26 is a Thursday; Berlin is UTC+1 in November.
        assert!(s.is_active(utc("2026-11-26T07:00:00Z")));
        assert!(!s.is_active(utc("2026-11-26T06:59:00Z")));
        assert!(!s.is_active(utc("2026-11-26T17:00:00Z")));
        assert!(!s.is_active(utc("2026-11-28T10:00:00Z")), "Saturday");
        assert_eq!(s.next_change(utc("2026-11-26T10:00:00Z")), Some(utc("2026-11-26T17:00:00Z")));
        // From Friday evening the next change is Monday 08:00 local.
        assert_eq!(s.next_change(utc("2026-11-27T18:00:00Z")), Some(utc("2026-11-30T07:00:00Z")));
    }

    #[test]
    fn ranges_cross_midnight_and_weekends_wrap() {
        let s = sched("UTC", &["fri"], &["22:00-06:00"]);
        assert!(s.is_active(utc("2026-11-27T23:00:00Z")), "Friday night");
        assert!(s.is_active(utc("2026-11-28T05:59:00Z")), "Saturday early belongs to Friday");
        assert!(!s.is_active(utc("2026-11-28T22:30:00Z")), "Saturday night is not Friday");
        let w = sched("UTC", &["fri-mon"], &[]);
        assert!(w.is_active(utc("2026-11-29T12:00:00Z")), "Sunday is in fri-mon");
        assert!(!w.is_active(utc("2026-11-25T12:00:00Z")), "Wednesday is not");
    }

    #[test]
    fn daylight_saving_keeps_local_hours() {
        // Europe/Berlin switches to summer time on 2026-03-29 at 02:00 local.
        let s = sched("Europe/Berlin", &[], &["01:00-03:00"]);
        assert!(s.is_active(utc("2026-03-29T00:30:00Z")), "01:30 CET");
        assert!(!s.is_active(utc("2026-03-29T01:00:00Z")), "03:00 CEST: the window is over");
        assert_eq!(s.next_change(utc("2026-03-29T00:30:00Z")), Some(utc("2026-03-29T01:00:00Z")));
    }
}
