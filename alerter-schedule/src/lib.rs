//! When periodic work runs: a fixed interval, or a crontab(5) line in a
//! time zone. Shared by the daemon (maintenance notices) and by sources
//! (`disk`, `script`, anything built on the SDK's `Periodic`).
//!
//! Pure: every function takes `now`. [`Trigger::next_after`] never fires
//! the same instant twice, even when the caller wakes a little early.
//!
//! Crontab semantics are those of crontab(5) (Vixie cron and cronie): five
//! fields (or six, with seconds first); names or numbers for months and
//! days; Sunday is 0 and 7; `*/n`, `a-b/n` and lists; when both
//! day-of-month and day-of-week are restricted, a day matching either
//! fires. Daylight-saving changes: a time that does not exist locally
//! (02:30 on spring-forward night) fires right after the gap (03:00), as
//! cron runs the jobs of a skipped hour, so a daily job is never lost; a
//! time that occurs twice fires once, at its first occurrence.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

pub use chrono_tz;

/// A parsed crontab line.
#[derive(Debug, Clone)]
pub struct Cron {
    text: String,
    cron: croner::Cron,
}

impl Cron {
    /// Parses a crontab line; the error says what was expected.
    pub fn parse(s: &str) -> Result<Cron, String> {
        use croner::parser::{CronParser, Seconds, Year};
        let text = s.trim();
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .dom_and_dow(false)
            .build()
            .parse(text)
            .map_err(|e| {
                format!(
                    "`{s}` is not a crontab schedule ({e}); expected 5 fields: minute hour day-of-month month day-of-week, e.g. \"0 18 * * fri\""
                )
            })?;
        Ok(Cron { text: text.to_string(), cron })
    }

    /// The line as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first firing strictly after `after`, evaluated in `tz`.
    pub fn next_after(&self, tz: &Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(tz);
        self.cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&Utc))
    }
}

/// When a periodic job runs.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// Every so often, counted from the previous run.
    Every(Duration),
    /// At the instants a crontab line names, in a time zone.
    Cron { cron: Box<Cron>, tz: Tz },
}

impl Trigger {
    /// From a source's settings: `schedule` (a crontab line, with optional
    /// `timezone`, default UTC) wins over `interval` (a duration such as
    /// `5m`); with neither, `default`. Errors name the key.
    pub fn from_settings(
        interval: Option<&str>,
        schedule: Option<&str>,
        timezone: Option<&str>,
        default: Duration,
    ) -> Result<Trigger, (&'static str, String)> {
        if interval.is_some() && schedule.is_some() {
            return Err(("schedule", "give either `interval` or `schedule`, not both".into()));
        }
        let tz: Tz = match timezone {
            Some(name) => name.parse().map_err(|_| {
                ("timezone", format!("unknown time zone `{name}`; use an IANA name such as Europe/Berlin or UTC"))
            })?,
            None => Tz::UTC,
        };
        if let Some(line) = schedule {
            return Ok(Trigger::Cron { cron: Box::new(Cron::parse(line).map_err(|e| ("schedule", e))?), tz });
        }
        match interval {
            Some(text) => {
                let d = humantime::parse_duration(text)
                    .map_err(|e| ("interval", format!("`{text}` is not a duration ({e}); write e.g. 30s, 5m or 1h")))?;
                if d < Duration::from_secs(1) {
                    return Err(("interval", "must be at least 1s".into()));
                }
                Ok(Trigger::Every(d))
            }
            None => Ok(Trigger::Every(default)),
        }
    }

    /// The next run after one at `last` (or, for the first run, `None`),
    /// as seen at `now`. Never returns `last` itself, so a caller that
    /// woke a few milliseconds early does not run twice.
    pub fn next_after(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Trigger::Every(d) => Some(match last {
                // Counted from the previous run, but never in the past: a
                // suspended machine runs once when it wakes, not N times.
                Some(l) => (l + chrono::Duration::from_std(*d).ok()?).max(now),
                None => now,
            }),
            Trigger::Cron { cron, tz } => {
                let from = match last {
                    Some(l) if l > now => l,
                    _ => now,
                };
                cron.next_after(tz, from)
            }
        }
    }
}

#[cfg(test)]
mod tests;
