//! Table tests of next-fire times: each row is a crontab line, a time zone,
//! an instant, and the next firing strictly after it.

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// (line, time zone, after, expected next firing)
fn check(rows: &[(&str, &str, &str, &str)]) {
    for (line, tz, after, expected) in rows {
        let cron = Cron::parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let tz: Tz = tz.parse().unwrap();
        let next = cron.next_after(&tz, utc(after));
        assert_eq!(next, Some(utc(expected)), "`{line}` in {tz} after {after}");
    }
}

#[test]
fn sunday_is_0_and_7_and_names_work() {
    // 2026-11-26 is a Thursday; the next Sunday is 2026-11-29.
    check(&[
        ("0 9 * * 0", "UTC", "2026-11-26T12:00:00Z", "2026-11-29T09:00:00Z"),
        ("0 9 * * 7", "UTC", "2026-11-26T12:00:00Z", "2026-11-29T09:00:00Z"),
        ("0 9 * * sun", "UTC", "2026-11-26T12:00:00Z", "2026-11-29T09:00:00Z"),
        ("0 9 * * SUN", "UTC", "2026-11-26T12:00:00Z", "2026-11-29T09:00:00Z"),
        ("0 9 * * 1", "UTC", "2026-11-26T12:00:00Z", "2026-11-30T09:00:00Z"),
        ("0 9 * * 4", "UTC", "2026-11-26T08:00:00Z", "2026-11-26T09:00:00Z"),
        // A range through the weekend end: fri-sun as 5-7.
        ("0 9 * * 5-7", "UTC", "2026-11-27T10:00:00Z", "2026-11-28T09:00:00Z"),
        ("0 9 * * 5-7", "UTC", "2026-11-28T10:00:00Z", "2026-11-29T09:00:00Z"),
        ("0 9 * * 5-7", "UTC", "2026-11-29T10:00:00Z", "2026-12-04T09:00:00Z"),
        ("0 9 * * mon-fri", "UTC", "2026-11-27T10:00:00Z", "2026-11-30T09:00:00Z"),
    ]);
}

#[test]
fn day_of_month_or_day_of_week() {
    check(&[
        // Both restricted: the 1st of the month OR any Monday.
        // 2026-11-26 Thu: next is Monday 11-30 (before the 1st).
        ("0 0 1 * mon", "UTC", "2026-11-26T12:00:00Z", "2026-11-30T00:00:00Z"),
        // From Monday 11-30: next is Tuesday 12-01 (the 1st), not Monday 12-07.
        ("0 0 1 * mon", "UTC", "2026-11-30T12:00:00Z", "2026-12-01T00:00:00Z"),
        ("0 0 1 * mon", "UTC", "2026-12-01T12:00:00Z", "2026-12-07T00:00:00Z"),
        // Only day-of-month restricted (dow `*`): the 13th only.
        ("0 0 13 * *", "UTC", "2026-11-26T12:00:00Z", "2026-12-13T00:00:00Z"),
        // Only day-of-week restricted (dom `*`): Fridays only.
        ("0 0 * * fri", "UTC", "2026-11-26T12:00:00Z", "2026-11-27T00:00:00Z"),
        // Friday the 13th is NOT an AND in crontab(5): the 13th or a Friday.
        ("0 0 13 * 5", "UTC", "2026-11-26T12:00:00Z", "2026-11-27T00:00:00Z"),
        ("0 0 13 * 5", "UTC", "2026-12-11T12:00:00Z", "2026-12-13T00:00:00Z"),
    ]);
}

#[test]
fn ranges_steps_and_lists() {
    check(&[
        ("*/15 * * * *", "UTC", "2026-11-26T12:07:00Z", "2026-11-26T12:15:00Z"),
        ("*/15 * * * *", "UTC", "2026-11-26T12:45:00Z", "2026-11-26T13:00:00Z"),
        // A step over a range starts at the range's start.
        ("10-50/20 * * * *", "UTC", "2026-11-26T12:00:00Z", "2026-11-26T12:10:00Z"),
        ("10-50/20 * * * *", "UTC", "2026-11-26T12:30:00Z", "2026-11-26T12:50:00Z"),
        ("10-50/20 * * * *", "UTC", "2026-11-26T12:50:00Z", "2026-11-26T13:10:00Z"),
        ("0 8-18/2 * * *", "UTC", "2026-11-26T18:00:00Z", "2026-11-27T08:00:00Z"),
        ("0 6,12,18 * * *", "UTC", "2026-11-26T12:00:00Z", "2026-11-26T18:00:00Z"),
        ("30 2 * jan,jul *", "UTC", "2026-11-26T12:00:00Z", "2027-01-01T02:30:00Z"),
        // Strictly after: at a firing instant, the next one.
        ("0 18 * * fri", "Europe/Berlin", "2026-11-27T17:00:00Z", "2026-12-04T17:00:00Z"),
        // The optional seconds field, first.
        ("*/10 * * * * *", "UTC", "2026-11-26T12:00:05Z", "2026-11-26T12:00:10Z"),
        // February 30 never comes; 29 only in leap years.
        ("0 0 29 2 *", "UTC", "2026-11-26T00:00:00Z", "2028-02-29T00:00:00Z"),
    ]);
}

#[test]
fn daylight_saving_changes() {
    // Europe/Berlin: spring forward 2026-03-29 02:00 CET -> 03:00 CEST;
    // fall back 2026-10-25 03:00 CEST -> 02:00 CET.
    check(&[
        // A daily job at 01:30 local: one hour earlier in UTC once summer time starts.
        ("30 1 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", "2026-03-29T00:30:00Z"),
        ("30 1 * * *", "Europe/Berlin", "2026-03-29T12:00:00Z", "2026-03-29T23:30:00Z"),
        // 02:30 does not exist on 2026-03-29: the job runs right after the
        // gap, at 03:00 CEST, as cron runs jobs of a skipped hour; not lost.
        ("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", "2026-03-29T01:00:00Z"),
        ("30 2 * * *", "Europe/Berlin", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"),
        // 02:30 happens twice on 2026-10-25: fires once, at the first (CEST).
        ("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", "2026-10-25T00:30:00Z"),
        ("30 2 * * *", "Europe/Berlin", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"),
        // Hourly jobs keep running through the change, on the hour.
        ("0 * * * *", "Europe/Berlin", "2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z"),
        // US Eastern: 2026-03-08 02:00 EST -> 03:00 EDT.
        ("0 9 * * *", "America/New_York", "2026-03-07T15:00:00Z", "2026-03-08T13:00:00Z"),
    ]);
}

#[test]
fn bad_lines_say_what_is_expected() {
    for bad in ["", "* * * *", "61 * * * *", "* * * * 8", "0 0 * * funday", "* * * * * * *"] {
        let err = Cron::parse(bad).unwrap_err();
        assert!(err.contains("expected 5 fields"), "{bad}: {err}");
    }
}

#[test]
fn triggers_never_fire_the_same_instant_twice() {
    let t = Trigger::from_settings(None, Some("* * * * *"), None, Duration::from_secs(60)).unwrap();
    let first = t.next_after(None, utc("2026-11-26T12:00:30Z")).unwrap();
    assert_eq!(first, utc("2026-11-26T12:01:00Z"));
    // Woken 2 ms early for the next one: still the next minute, not this one again.
    let early = first + chrono::Duration::seconds(60) - chrono::Duration::milliseconds(2);
    assert_eq!(t.next_after(Some(first), early), Some(utc("2026-11-26T12:02:00Z")));
    // Woken late: the one after now.
    assert_eq!(t.next_after(Some(first), utc("2026-11-26T12:05:30Z")), Some(utc("2026-11-26T12:06:00Z")));

    let every = Trigger::from_settings(Some("5m"), None, None, Duration::from_secs(60)).unwrap();
    let now = utc("2026-11-26T12:00:00Z");
    assert_eq!(every.next_after(None, now), Some(now), "the first run is at once");
    assert_eq!(every.next_after(Some(now), now), Some(utc("2026-11-26T12:05:00Z")));
    // After a suspend, once now rather than a burst of missed runs.
    assert_eq!(every.next_after(Some(now), utc("2026-11-26T15:00:00Z")), Some(utc("2026-11-26T15:00:00Z")));
}

#[test]
fn settings_errors_name_the_key() {
    let d = Duration::from_secs(60);
    assert_eq!(Trigger::from_settings(Some("soon"), None, None, d).unwrap_err().0, "interval");
    assert_eq!(Trigger::from_settings(Some("100ms"), None, None, d).unwrap_err().0, "interval");
    assert_eq!(Trigger::from_settings(None, Some("every day"), None, d).unwrap_err().0, "schedule");
    assert_eq!(Trigger::from_settings(Some("1m"), Some("* * * * *"), None, d).unwrap_err().0, "schedule");
    assert_eq!(Trigger::from_settings(None, Some("* * * * *"), Some("Mars/Olympus"), d).unwrap_err().0, "timezone");
    assert!(matches!(Trigger::from_settings(None, None, None, d).unwrap(), Trigger::Every(x) if x == d));
}
