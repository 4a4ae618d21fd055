//! Logging a repeating error at most once per interval, with a count.
//!
//! A failure that repeats (a full disk refusing every write, a dead server
//! refusing every retry) must not write a log line per attempt: that fills
//! the very disk, and hides everything else in the journal. [`LogThrottle`]
//! says when to log: the first occurrence at once, then at most one line per
//! interval, each saying how often it happened since the line before
//! ("... (12 times in the last 30s)"). Time comes in as `now`, so it is
//! tested with explicit times and follows tokio's paused clock in tests.
//!
//! ```
//! # use alerter_core::throttle::LogThrottle;
//! # use std::time::Duration;
//! # let now = chrono::Utc::now();
//! let mut errors = LogThrottle::new(Duration::from_secs(30));
//! # let e = "database or disk is full";
//! if let Some(repeats) = errors.hit(now) {
//!     tracing::error!("cannot record delivery outcomes: {e}{repeats}");
//! }
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};

/// See the module docs. One per kind of error (per message site).
#[derive(Debug, Clone)]
pub struct LogThrottle {
    every: Duration,
    /// When the last line was logged.
    logged_at: Option<DateTime<Utc>>,
    /// Occurrences since then that were not logged.
    unlogged: u64,
}

/// What to append to a throttled line: how often the error occurred since
/// the previous line, this time included. Displays as nothing for a single
/// occurrence, else as ` (N times in the last 30s)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeats {
    pub count: u64,
    /// Since the previous line (zero for the first line).
    pub over: Duration,
}

impl std::fmt::Display for Repeats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count <= 1 {
            return Ok(());
        }
        let secs = Duration::from_secs(self.over.as_secs().max(1));
        write!(f, " ({} times in the last {})", self.count, humantime::format_duration(secs))
    }
}

impl LogThrottle {
    /// Logs at most once per `every`.
    pub const fn new(every: Duration) -> LogThrottle {
        LogThrottle { every, logged_at: None, unlogged: 0 }
    }

    /// Counts one occurrence at `now`; `Some` when it is to be logged now,
    /// with what to append to the line.
    pub fn hit(&mut self, now: DateTime<Utc>) -> Option<Repeats> {
        let elapsed = match self.logged_at {
            None => None,
            // A clock that went back counts as a fresh start.
            Some(t) if now < t => None,
            Some(t) => Some((now - t).to_std().unwrap_or_default()),
        };
        match elapsed {
            Some(e) if e < self.every => {
                self.unlogged += 1;
                None
            }
            _ => {
                let r = Repeats { count: self.unlogged + 1, over: elapsed.unwrap_or_default() };
                self.logged_at = Some(now);
                self.unlogged = 0;
                Some(r)
            }
        }
    }

    /// The error stopped (the write went through): the next occurrence is
    /// logged at once. Returns how many occurrences since the last line were
    /// never logged, if any, for a closing line ("... recovered after 12
    /// more failures").
    pub fn clear(&mut self) -> Option<u64> {
        let was_failing = self.logged_at.is_some();
        let n = std::mem::take(&mut self.unlogged);
        self.logged_at = None;
        (was_failing && n > 0).then_some(n)
    }

    /// Whether an occurrence was counted since the last [`LogThrottle::clear`].
    pub fn is_failing(&self) -> bool {
        self.logged_at.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn logs_the_first_at_once_then_once_per_interval_with_a_count() {
        let mut t = LogThrottle::new(Duration::from_secs(30));
        let first = t.hit(at(0)).expect("the first occurrence is logged");
        assert_eq!(first.count, 1);
        assert_eq!(first.to_string(), "", "a single occurrence needs no count");
        // Every 100 ms for the next 30 s: nothing logged.
        for tenth in 1..300 {
            assert_eq!(t.hit(at(0) + chrono::Duration::milliseconds(tenth * 100)), None, "at {tenth}/10 s");
        }
        let second = t.hit(at(30)).expect("logged again after the interval");
        assert_eq!(second, Repeats { count: 300, over: Duration::from_secs(30) });
        assert_eq!(second.to_string(), " (300 times in the last 30s)");
        // Rare repeats after that are each logged, with the time since.
        assert_eq!(t.hit(at(95)).unwrap().to_string(), "");
        assert_eq!(t.hit(at(100)), None);
        assert_eq!(t.hit(at(125)).unwrap().to_string(), " (2 times in the last 30s)");
    }

    #[test]
    fn clear_reports_what_was_never_logged_and_rearms() {
        let mut t = LogThrottle::new(Duration::from_secs(30));
        assert_eq!(t.clear(), None, "nothing happened");
        assert!(t.hit(at(0)).is_some());
        assert!(t.is_failing());
        assert_eq!(t.clear(), None, "the one occurrence was logged");
        assert!(!t.is_failing());
        assert!(t.hit(at(1)).is_some(), "after recovery the next error is logged at once");
        assert_eq!(t.hit(at(2)), None);
        assert_eq!(t.hit(at(3)), None);
        assert_eq!(t.clear(), Some(2));
        assert!(t.hit(at(4)).is_some());
    }

    #[test]
    fn a_clock_going_back_logs_rather_than_going_quiet() {
        let mut t = LogThrottle::new(Duration::from_secs(30));
        assert!(t.hit(at(3600)).is_some());
        assert!(t.hit(at(0)).is_some(), "not silenced for an hour");
        assert_eq!(t.hit(at(10)), None);
    }
}
