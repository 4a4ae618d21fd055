//! Router behaviour on injected time: `for:`, `repeat_interval`,
//! `send_resolved`, grouping, silences, mute windows, `continue` and
//! first-match-wins, restore after restart. The router never reads a clock,
//! so every test states exactly when things happen and checks exactly when
//! notifications come out.

use std::sync::Arc;
use std::time::Duration;

use alerter_engine::event::{Event, Severity};
use alerter_engine::rules::router::{Dispatch, Output, Router, SuppressReason};
use alerter_engine::rules::{LabelCond, Matcher, Recipient, Rule, Silence, SourcePattern, Target};
use alerter_engine::schedule::TimeRange;
use alerter_engine::schedule::{Schedule, Window};
use chrono::Weekday;
use chrono::{DateTime, Utc};

fn t0() -> DateTime<Utc> {
    // A Monday, 12:00 UTC.
    DateTime::parse_from_rfc3339("2026-01-05T12:00:00Z").unwrap().with_timezone(&Utc)
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

const MIN: i64 = 60;
const HOUR: i64 = 3600;

fn disk(sev: Severity, mount: &str) -> Event {
    Event::new("disk", "web1", sev, format!("{mount} is full"), t0()).with_label("mount", mount)
}

fn rule(name: &str) -> Rule {
    let mut r = Rule::new(name);
    r.targets = vec![Target { transport: "log".into(), recipients: vec![Recipient::workgroup()] }];
    r
}

fn new_router(rules: Vec<Rule>) -> Router {
    Router::new(rules.into_iter().map(Arc::new).collect(), vec![])
}

fn notified(out: &[Output]) -> Vec<&Dispatch> {
    out.iter()
        .filter_map(|o| match o {
            Output::Notify(d) => Some(d),
            Output::Suppressed(_) => None,
        })
        .collect()
}

fn suppressed(out: &[Output]) -> Vec<&SuppressReason> {
    out.iter()
        .filter_map(|o| match o {
            Output::Suppressed(s) => Some(&s.reason),
            Output::Notify(_) => None,
        })
        .collect()
}

/// Runs all timers up to `until`, returning every output with its time.
fn run_until(r: &mut Router, until: DateTime<Utc>) -> Vec<Output> {
    let mut out = Vec::new();
    while let Some(w) = r.next_wakeup() {
        if w > until {
            break;
        }
        r.tick_into(w, &mut out);
    }
    out
}

#[test]
fn for_holds_back_then_fires() {
    let mut r = rule("disk");
    r.hold_for = Duration::from_secs(5 * 60);
    let mut router = new_router(vec![r]);
    assert!(router.handle(disk(Severity::Warning, "/var"), at(0)).is_empty());
    assert_eq!(router.next_wakeup(), Some(at(5 * MIN)));
    // Still holding one second before.
    assert!(router.tick(at(5 * MIN - 1)).is_empty());
    // Repeated events during the hold do not restart or shorten it.
    assert!(router.handle(disk(Severity::Warning, "/var"), at(2 * MIN)).is_empty());
    let out = router.tick(at(5 * MIN));
    let n = notified(&out);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].at, at(5 * MIN));
    assert_eq!(n[0].alerts[0].status, "firing");
}

#[test]
fn for_never_fires_when_resolved_in_time() {
    let mut r = rule("disk");
    r.hold_for = Duration::from_secs(5 * 60);
    let mut router = new_router(vec![r]);
    router.handle(disk(Severity::Warning, "/var"), at(0));
    let out = router.handle(disk(Severity::Resolved, "/var"), at(4 * MIN));
    assert!(out.is_empty());
    assert!(run_until(&mut router, at(10 * HOUR)).is_empty(), "nothing fires, nothing resolves");
}

#[test]
fn repeat_interval_resends_and_not_sooner() {
    let mut r = rule("disk");
    r.repeat_interval = Duration::from_secs(4 * 3600);
    let mut router = new_router(vec![r]);
    assert_eq!(notified(&router.handle(disk(Severity::Critical, "/"), at(0))).len(), 1);
    // The same condition reported again is not news.
    assert!(router.handle(disk(Severity::Critical, "/"), at(HOUR)).is_empty());
    assert!(run_until(&mut router, at(4 * HOUR - 1)).is_empty());
    let out = run_until(&mut router, at(4 * HOUR));
    let n = notified(&out);
    assert_eq!(n.len(), 1);
    assert!(n[0].repeat, "marked as a reminder");
    assert_eq!(n[0].at, at(4 * HOUR));
    // And again four hours later, not before.
    assert!(run_until(&mut router, at(8 * HOUR - 1)).is_empty());
    assert_eq!(notified(&run_until(&mut router, at(8 * HOUR))).len(), 1);
}

#[test]
fn severity_change_is_news() {
    let mut router = new_router(vec![rule("disk")]);
    router.handle(disk(Severity::Warning, "/"), at(0));
    // Within group_interval (1m) of the last notification: wait for it.
    assert!(router.handle(disk(Severity::Critical, "/"), at(10)).is_empty());
    let out = run_until(&mut router, at(MIN));
    let n = notified(&out);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].at, at(MIN));
    assert_eq!(n[0].alerts[0].event.severity, Severity::Critical);
    assert!(!n[0].repeat);
}

#[test]
fn a_refresh_keeps_the_latest_report() {
    let mut router = new_router(vec![rule("disk")]);
    router.handle(disk(Severity::Warning, "/"), at(0));
    let mut later = disk(Severity::Warning, "/");
    later.summary = "/ is 97% full".into();
    later.details = "12 GB left".into();
    later.time = at(30);
    router.handle(later, at(30));
    let alerts = router.alerts("disk");
    assert_eq!(alerts.len(), 1);
    let e = &alerts[0].event;
    assert_eq!((e.summary.as_str(), e.details.as_str(), e.time), ("/ is 97% full", "12 GB left", at(30)));
    assert_eq!(e.labels.get("mount").map(String::as_str), Some("/"));
    // Counted since the notification that went out at once.
    assert_eq!(alerts[0].count, 1);

    // With a key the labels are not part of the identity: a refresh may
    // bring other labels, and the latest ones are kept.
    let mut router = new_router(vec![rule("disk")]);
    let keyed = |mount: &str| {
        let mut e = disk(Severity::Warning, mount);
        e.key = Some("disk-full".into());
        e
    };
    router.handle(keyed("/"), at(0));
    router.handle(keyed("/srv"), at(10));
    let alerts = router.alerts("disk");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].event.labels.get("mount").map(String::as_str), Some("/srv"));
    assert_eq!(alerts[0].event.summary, "/srv is full");
}

#[test]
fn send_resolved_sends_once_on_recovery() {
    let mut router = new_router(vec![rule("disk")]);
    router.handle(disk(Severity::Warning, "/"), at(0));
    let out = router.handle(disk(Severity::Resolved, "/").clone(), at(2 * MIN));
    let n = notified(&out);
    assert_eq!(n.len(), 1, "{out:?}");
    assert_eq!(n[0].alerts[0].status, "resolved");
    // Another resolved event, or waiting, sends nothing more.
    assert!(router.handle(disk(Severity::Resolved, "/"), at(3 * MIN)).is_empty());
    assert!(run_until(&mut router, at(10 * HOUR)).is_empty());
}

#[test]
fn without_send_resolved_recovery_is_silent() {
    let mut r = rule("disk");
    r.send_resolved = false;
    let mut router = new_router(vec![r]);
    router.handle(disk(Severity::Warning, "/"), at(0));
    assert!(router.handle(disk(Severity::Resolved, "/"), at(2 * MIN)).is_empty());
    assert!(run_until(&mut router, at(10 * HOUR)).is_empty(), "and no more repeats either");
}

#[test]
fn group_by_and_group_wait_batch() {
    let mut r = rule("disk");
    r.group_by = vec!["host".into()];
    r.group_wait = Duration::from_secs(30);
    let mut router = new_router(vec![r]);
    assert!(router.handle(disk(Severity::Warning, "/"), at(0)).is_empty());
    let web2 = Event::new("disk", "web2", Severity::Critical, "full", t0()).with_label("mount", "/");
    assert!(router.handle(web2, at(5)).is_empty());
    assert!(router.handle(disk(Severity::Critical, "/var"), at(10)).is_empty());
    assert!(run_until(&mut router, at(29)).is_empty());
    let out = run_until(&mut router, at(30));
    let n = notified(&out);
    assert_eq!(n.len(), 1, "web1's group after 30s");
    assert_eq!(n[0].group_labels.get("host").map(String::as_str), Some("web1"));
    assert_eq!(n[0].alerts.len(), 2, "both web1 alerts in one notification");
    let out = run_until(&mut router, at(35));
    let n = notified(&out);
    assert_eq!(n.len(), 1, "web2's group 30s after its first alert");
    assert_eq!(n[0].group_labels.get("host").map(String::as_str), Some("web2"));
    // A new alert in an already notified group waits for group_interval (1m).
    assert!(router.handle(disk(Severity::Warning, "/srv"), at(40)).is_empty());
    let out = run_until(&mut router, at(90));
    let n = notified(&out);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].at, at(90));
    assert_eq!(n[0].alerts.len(), 3, "the whole group is shown again");
}

#[test]
fn silences_suppress_and_record_why() {
    let silence = Silence {
        id: "silence#1".into(),
        matcher: Matcher::new(None, vec![], vec![("mount".into(), LabelCond::Equals("/boot".into()))]),
        matchers: vec!["mount=/boot".into()],
        starts: Some(at(0)),
        ends: at(HOUR),
        comment: Some("replacing the disk".into()),
        created_by: None,
        created_at: None,
    };
    let mut router = Router::new(vec![Arc::new(rule("disk"))], vec![silence]);
    let out = router.handle(disk(Severity::Critical, "/boot"), at(MIN));
    assert!(notified(&out).is_empty());
    let reasons = suppressed(&out);
    assert_eq!(reasons.len(), 1);
    assert!(matches!(reasons[0], SuppressReason::Silenced { silence, .. } if silence == "silence#1"));
    assert!(reasons[0].to_string().contains("replacing the disk"));
    // Other alerts are not silenced.
    assert_eq!(notified(&router.handle(disk(Severity::Critical, "/"), at(MIN))).len(), 1);
    // When the silence ends and the alert still fires, it is notified.
    let out = run_until(&mut router, at(HOUR));
    let n = notified(&out);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].at, at(HOUR));
    assert_eq!(n[0].alerts[0].event.label("mount"), Some("/boot"));
}

fn night() -> Arc<Schedule> {
    Arc::new(Schedule {
        name: "night".into(),
        tz: chrono_tz::UTC,
        windows: vec![Window::new(&[], vec![TimeRange { start: 22 * 60, end: 6 * 60 }])],
    })
}

#[test]
fn mute_during_suppresses_and_sends_when_the_window_ends() {
    let mut r = rule("disk");
    r.mute_during = vec![night()];
    let mut router = new_router(vec![r]);
    // 23:00 Monday.
    let out = router.handle(disk(Severity::Warning, "/"), at(11 * HOUR));
    assert!(notified(&out).is_empty());
    let reasons = suppressed(&out);
    assert_eq!(reasons.len(), 1);
    assert_eq!(reasons[0].to_string(), "muted during schedule `night`");
    // Tuesday 06:00: the window is over and the alert still fires.
    let out = run_until(&mut router, at(18 * HOUR));
    let n = notified(&out);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].at, at(18 * HOUR));
}

#[test]
fn active_during_limits_to_the_window() {
    let business = Arc::new(Schedule {
        name: "business".into(),
        tz: chrono_tz::UTC,
        windows: vec![Window::new(&[(Weekday::Mon, Weekday::Fri)], vec![TimeRange { start: 8 * 60, end: 18 * 60 }])],
    });
    let mut r = rule("disk");
    r.active_during = vec![business];
    let mut router = new_router(vec![r]);
    // Monday 12:00 is inside.
    assert_eq!(notified(&router.handle(disk(Severity::Warning, "/"), at(0))).len(), 1);
    // Monday 20:00 is outside: recorded, then sent Tuesday 08:00.
    let out = router.handle(disk(Severity::Warning, "/var"), at(8 * HOUR));
    assert!(suppressed(&out)[0].to_string().contains("outside active schedule `business`"));
    let out = run_until(&mut router, at(20 * HOUR - 1));
    assert!(notified(&out).is_empty(), "nothing during the night: {out:?}");
    let out = run_until(&mut router, at(20 * HOUR));
    let n = notified(&out);
    // The held-back alert, and the reminder for `/` that fell due at night.
    assert_eq!(n.len(), 2);
    assert!(n.iter().all(|d| d.at == at(20 * HOUR)));
    let var = n.iter().find(|d| d.alerts[0].event.label("mount") == Some("/var")).unwrap();
    assert!(!var.repeat);
    let root = n.iter().find(|d| d.alerts[0].event.label("mount") == Some("/")).unwrap();
    assert!(root.repeat);
}

#[test]
fn first_match_wins_unless_continue() {
    let mut specific = rule("var");
    specific.matcher = Matcher::new(None, vec![], vec![("mount".into(), LabelCond::Equals("/var".into()))]);
    let catch_all = rule("all");
    let mut router = new_router(vec![specific.clone(), catch_all.clone()]);
    let out = router.handle(disk(Severity::Warning, "/var"), at(0));
    let rules: Vec<&str> = notified(&out).iter().map(|d| d.rule.name.as_str()).collect();
    assert_eq!(rules, vec!["var"], "first match wins");
    let out = router.handle(disk(Severity::Warning, "/srv"), at(0));
    let rules: Vec<&str> = notified(&out).iter().map(|d| d.rule.name.as_str()).collect();
    assert_eq!(rules, vec!["all"], "falls through to the next rule that matches");

    specific.continue_matching = true;
    let mut router = new_router(vec![specific, catch_all]);
    let out = router.handle(disk(Severity::Warning, "/var"), at(0));
    let rules: Vec<&str> = notified(&out).iter().map(|d| d.rule.name.as_str()).collect();
    assert_eq!(rules, vec!["var", "all"], "continue fans out");
}

#[test]
fn matchers_gate_rules() {
    let mut r = rule("crit");
    r.matcher = Matcher::new(Some(Severity::Critical), vec![SourcePattern::new("disk*").unwrap()], vec![]);
    let mut router = new_router(vec![r]);
    assert!(router.handle(disk(Severity::Warning, "/"), at(0)).is_empty());
    let log = Event::new("log", "h", Severity::Critical, "x", t0());
    assert!(router.handle(log, at(0)).is_empty());
    assert_eq!(notified(&router.handle(disk(Severity::Critical, "/"), at(0))).len(), 1);
}

#[test]
fn oneshots_are_notified_once_and_throttled_by_key() {
    let mut r = rule("ssh");
    r.repeat_interval = Duration::from_secs(15 * 60);
    let mut router = new_router(vec![r]);
    let line = |ip: &str| {
        Event::new("auth", "h", Severity::Warning, format!("failed login from {ip}"), t0())
            .with_label("ip", ip)
            .oneshot()
    };
    assert_eq!(notified(&router.handle(line("192.0.2.1"), at(0))).len(), 1);
    let out = router.handle(line("192.0.2.1"), at(MIN));
    assert!(notified(&out).is_empty());
    assert!(matches!(suppressed(&out)[0], SuppressReason::RepeatInterval { .. }));
    // Further repeats in the same quiet period are counted, not recorded again.
    assert!(router.handle(line("192.0.2.1"), at(2 * MIN)).is_empty());
    assert_eq!(notified(&router.handle(line("192.0.2.2"), at(MIN))).len(), 1, "another key is news");
    // One-shots never repeat or resolve on their own.
    assert!(notified(&run_until(&mut router, at(10 * HOUR))).is_empty());
    // After the quiet period the same key is news again.
    assert_eq!(notified(&router.handle(line("192.0.2.1"), at(16 * MIN))).len(), 1);
}

/// A notified one-shot is kept only as when it was sent: it leaves the
/// alerts, the store is given a `Sent`, a restart restores the throttle
/// (from that, or from the full `sent` alert an older alerter stored), and
/// when the throttle ends it is forgotten, in the store too.
#[test]
fn notified_one_shots_are_kept_as_when_they_were_sent() {
    use alerter_engine::rules::router::{Alert, AlertStatus, Kept, Sent};
    let mut r = rule("ssh");
    r.repeat_interval = Duration::from_secs(15 * 60);
    let r = Arc::new(r);
    let line = |ip: &str| {
        Event::new("auth", "h", Severity::Warning, format!("failed login from {ip}"), t0())
            .with_label("ip", ip)
            .oneshot()
    };
    let mut before = Router::new(vec![r.clone()], vec![]);
    assert_eq!(notified(&before.handle(line("192.0.2.1"), at(0))).len(), 1);
    assert_eq!(notified(&before.handle(line("192.0.2.2"), at(MIN))).len(), 1);
    assert!(before.alerts("ssh").is_empty(), "no longer an alert");
    assert_eq!(before.throttled("ssh"), 2);
    let mut stored = saved(&mut before);
    stored.sort_by_key(|(_, _, k)| match k {
        Kept::Sent(s) => s.at,
        Kept::Alert(a) => a.since,
    });
    let fp1 = line("192.0.2.1").fingerprint();
    assert_eq!(stored[0], ("ssh".to_string(), fp1, Kept::Sent(Sent { at: at(0), repeats: 0 })));
    assert_eq!(stored[1].2, Kept::Sent(Sent { at: at(MIN), repeats: 0 }));

    // The second as an older alerter stored it: a whole alert, `sent`.
    let fp2 = line("192.0.2.2").fingerprint();
    let old = Alert {
        fingerprint: fp2,
        event: line("192.0.2.2"),
        status: AlertStatus::Sent,
        since: at(MIN),
        fired_at: Some(at(MIN)),
        resolved_at: None,
        last_notified: Some(at(MIN)),
        notified_severity: Some(Severity::Warning),
        count: 0,
        ack: None,
    };
    stored[1].2 = Kept::Alert(Box::new(old));
    let mut after = Router::new(vec![r], vec![]);
    after.restore(stored, at(2 * MIN));
    assert_eq!(after.throttled("ssh"), 2);
    let again = saved(&mut after);
    assert_eq!(again, vec![("ssh".to_string(), fp2, Kept::Sent(Sent { at: at(MIN), repeats: 0 }))], "rewritten small");
    assert!(matches!(
        suppressed(&after.handle(line("192.0.2.1"), at(3 * MIN)))[..],
        [SuppressReason::RepeatInterval { .. }]
    ));
    assert!(matches!(
        suppressed(&after.handle(line("192.0.2.2"), at(3 * MIN)))[..],
        [SuppressReason::RepeatInterval { .. }]
    ));
    // The first throttle ends at 15 minutes, the second a minute later;
    // each is forgotten when it ends.
    assert!(run_until(&mut after, at(15 * MIN)).is_empty());
    assert_eq!(after.throttled("ssh"), 1);
    let changes = after.take_changes();
    assert!(changes.iter().any(|c| c.fingerprint == fp1 && c.alert.is_none()), "{changes:?}");
    run_until(&mut after, at(16 * MIN));
    assert_eq!(after.throttled("ssh"), 0);
    assert_eq!(after.next_wakeup(), None, "no timer left behind");
    assert_eq!(notified(&after.handle(line("192.0.2.2"), at(17 * MIN))).len(), 1, "news again");
}

#[test]
fn restored_state_is_not_renotified_within_repeat_interval() {
    let mut r = rule("disk");
    r.repeat_interval = Duration::from_secs(4 * 3600);
    let r = Arc::new(r);
    let mut before = Router::new(vec![r.clone()], vec![]);
    assert_eq!(notified(&before.handle(disk(Severity::Critical, "/"), at(0))).len(), 1);
    let saved = saved(&mut before);
    assert_eq!(saved.len(), 1);

    // "Restart" an hour later: the source reports the same condition again.
    let mut after = Router::new(vec![r], vec![]);
    after.restore(saved, at(HOUR));
    assert!(after.handle(disk(Severity::Critical, "/"), at(HOUR)).is_empty());
    assert!(run_until(&mut after, at(4 * HOUR - 1)).is_empty());
    let out = run_until(&mut after, at(4 * HOUR));
    assert_eq!(notified(&out).len(), 1, "the repeat is still due on time");
    // And the forgotten firing alert resolves normally.
    let out = after.handle(disk(Severity::Resolved, "/"), at(5 * HOUR));
    assert_eq!(notified(&out)[0].alerts[0].status, "resolved");
}

#[test]
fn reconfigure_keeps_state_of_unchanged_rules() {
    let mut router = new_router(vec![rule("disk"), rule("other")]);
    router.handle(disk(Severity::Critical, "/"), at(0));
    let mut changed = rule("disk");
    changed.group_by = vec!["host".into()];
    router.reconfigure(vec![Arc::new(changed)], vec![], at(MIN));
    assert_eq!(router.alerts("disk").len(), 1);
    // Already notified: the same report is not news after the reload.
    assert!(router.handle(disk(Severity::Critical, "/"), at(2 * MIN)).is_empty());
    let changes = router.take_changes();
    assert!(changes.iter().all(|c| c.rule == "disk"), "{changes:?}");
}

#[test]
fn flapping_before_the_resolved_notice_stays_quiet() {
    let mut r = rule("disk");
    r.group_by = vec!["host".into()];
    r.group_interval = Duration::from_secs(5 * 60);
    let mut router = new_router(vec![r]);
    assert_eq!(notified(&router.handle(disk(Severity::Warning, "/"), at(0))).len(), 1);
    // Resolved and back within group_interval: recipients never hear of the blip.
    assert!(router.handle(disk(Severity::Resolved, "/"), at(MIN)).is_empty());
    assert!(router.handle(disk(Severity::Warning, "/"), at(2 * MIN)).is_empty());
    assert!(notified(&run_until(&mut router, at(HOUR))).is_empty());
}

/// Every dispatch as (time, statuses of its alerts, repeat).
fn dispatches(out: &[Output]) -> Vec<(DateTime<Utc>, Vec<&'static str>, bool)> {
    notified(out).iter().map(|d| (d.at, d.alerts.iter().map(|a| a.status).collect(), d.repeat)).collect()
}

#[test]
fn without_group_by_a_resolution_is_notified_at_once() {
    // Default timing: group_wait 0s, group_interval 1m.
    let mut router = new_router(vec![rule("disk")]);
    assert_eq!(dispatches(&router.handle(disk(Severity::Warning, "/"), at(0))), vec![(at(0), vec!["firing"], false)]);
    // Ten seconds later it clears: nothing to batch it with, so no waiting
    // for the rest of group_interval.
    assert_eq!(
        dispatches(&router.handle(disk(Severity::Resolved, "/"), at(10))),
        vec![(at(10), vec!["resolved"], false)]
    );
    assert!(run_until(&mut router, at(10 * HOUR)).is_empty());
}

#[test]
fn without_group_by_a_resolution_waits_group_wait_and_a_return_within_it_stays_quiet() {
    let mut r = rule("disk");
    r.group_wait = Duration::from_secs(2 * 60);
    r.group_interval = Duration::from_secs(60);
    let mut router = new_router(vec![r.clone()]);
    router.handle(disk(Severity::Warning, "/"), at(0));
    assert_eq!(dispatches(&run_until(&mut router, at(2 * MIN))), vec![(at(2 * MIN), vec!["firing"], false)]);
    // Resolved at 3m (a whole group_interval after the last notification,
    // so the old rule would have sent it at once): due at 3m + group_wait.
    assert!(router.handle(disk(Severity::Resolved, "/"), at(3 * MIN)).is_empty());
    assert_eq!(router.next_wakeup(), Some(at(5 * MIN)));
    assert!(run_until(&mut router, at(5 * MIN - 1)).is_empty());
    assert_eq!(dispatches(&run_until(&mut router, at(5 * MIN))), vec![(at(5 * MIN), vec!["resolved"], false)]);

    // Back within group_wait of the resolution: it never stopped.
    let mut router = new_router(vec![r]);
    router.handle(disk(Severity::Warning, "/"), at(0));
    assert_eq!(notified(&run_until(&mut router, at(2 * MIN))).len(), 1);
    assert!(router.handle(disk(Severity::Resolved, "/"), at(3 * MIN)).is_empty());
    assert!(router.handle(disk(Severity::Warning, "/"), at(4 * MIN)).is_empty());
    let out = run_until(&mut router, at(4 * HOUR + 2 * MIN));
    // Only the reminder that it still fires, four hours after the first notification.
    assert_eq!(dispatches(&out), vec![(at(4 * HOUR + 2 * MIN), vec!["firing"], true)]);
}

#[test]
fn with_group_by_a_resolution_waits_for_group_interval() {
    let mut r = rule("disk");
    r.group_by = vec!["host".into()];
    let mut router = new_router(vec![r]);
    router.handle(disk(Severity::Warning, "/"), at(0));
    router.handle(disk(Severity::Warning, "/var"), at(0));
    // Batched with whatever else changes in the group within group_interval (1m).
    assert!(router.handle(disk(Severity::Resolved, "/"), at(10)).is_empty());
    assert!(run_until(&mut router, at(MIN - 1)).is_empty());
    assert_eq!(dispatches(&run_until(&mut router, at(MIN))), vec![(at(MIN), vec!["firing", "resolved"], false)]);
}

/// What `router` would have in the store: its alerts, by rule.
type Saved = (String, alerter_engine::event::Fingerprint, alerter_engine::rules::router::Kept);

fn saved(router: &mut Router) -> Vec<Saved> {
    router.take_changes().into_iter().filter_map(|c| c.alert.map(|a| (c.rule, c.fingerprint, a))).collect()
}

/// The two shapes of rule in which a resolved notice can still be due at
/// a shutdown: grouped (waiting for group_interval), or with a group_wait.
fn rules_with_a_pending_resolution() -> Vec<Rule> {
    let mut grouped = rule("disk");
    grouped.group_by = vec!["host".into()];
    grouped.group_interval = Duration::from_secs(5 * 60);
    let mut waiting = rule("disk");
    waiting.group_wait = Duration::from_secs(5 * 60);
    vec![grouped, waiting]
}

/// Fires `/` at 0, resolves it a minute after it was told, and returns the
/// stored state (the resolved notice still due) and when it was told.
fn resolved_but_not_yet_told(r: &Arc<Rule>) -> (Vec<Saved>, DateTime<Utc>) {
    let mut before = Router::new(vec![r.clone()], vec![]);
    let mut out = before.handle(disk(Severity::Warning, "/"), at(0));
    out.extend(run_until(&mut before, at(5 * MIN)));
    let told = notified(&out).iter().map(|d| d.at).collect::<Vec<_>>();
    assert_eq!(told.len(), 1);
    let resolved = told[0] + chrono::Duration::minutes(1);
    assert!(before.handle(disk(Severity::Resolved, "/"), resolved).is_empty());
    assert!(before.next_wakeup().is_some_and(|t| t > resolved), "the resolved notice is still due");
    (saved(&mut before), told[0])
}

#[test]
fn after_a_restart_a_condition_failing_again_gets_no_stale_resolved_notice() {
    for r in rules_with_a_pending_resolution() {
        let r = Arc::new(r);
        let (stored, told) = resolved_but_not_yet_told(&r);
        // The daemon was down until 20m; its resolved notice fell due meanwhile.
        let restart = at(20 * MIN);
        let mut after = Router::new(vec![r.clone()], vec![]);
        after.restore(stored, restart);
        // The daemon's first step after a restart runs the timers due then.
        assert!(after.tick(restart).is_empty(), "nothing before the sources had their say");
        assert_eq!(after.next_wakeup(), Some(restart + chrono::Duration::seconds(60)));
        // The source's first check after the restart finds the disk full again.
        assert!(after.handle(disk(Severity::Warning, "/"), restart + chrono::Duration::seconds(2)).is_empty());
        // Back before the resolved notice went out: it never stopped. The
        // only notification is the reminder that it still fires, four hours
        // after it was first told.
        let out = run_until(&mut after, at(10 * HOUR));
        let ds = dispatches(&out);
        assert!(!ds.is_empty());
        assert!(ds.iter().all(|(_, statuses, repeat)| *repeat && statuses == &vec!["firing"]), "{ds:?}");
        assert_eq!(ds[0].0, told + chrono::Duration::hours(4));
    }
}

#[test]
fn after_a_restart_a_resolution_that_holds_is_told_once_the_sources_had_their_say() {
    for r in rules_with_a_pending_resolution() {
        let r = Arc::new(r);
        let (stored, _) = resolved_but_not_yet_told(&r);
        let restart = at(20 * MIN);
        let mut after = Router::new(vec![r.clone()], vec![]);
        after.restore(stored, restart);
        assert!(run_until(&mut after, restart + chrono::Duration::seconds(59)).is_empty());
        let settled = restart + chrono::Duration::seconds(60);
        assert_eq!(dispatches(&run_until(&mut after, at(10 * HOUR))), vec![(settled, vec!["resolved"], false)]);
    }
}

#[test]
fn after_a_restart_a_firing_alert_that_cleared_while_down_is_not_announced() {
    let mut r = rule("disk");
    r.group_wait = Duration::from_secs(5 * 60);
    let r = Arc::new(r);
    let mut before = Router::new(vec![r.clone()], vec![]);
    // Fires at 0; its first notification is due at 5m, but the daemon
    // stops at 1m.
    assert!(before.handle(disk(Severity::Warning, "/"), at(0)).is_empty());
    let stored = saved(&mut before);
    let restart = at(30 * MIN);
    let mut after = Router::new(vec![r], vec![]);
    after.restore(stored, restart);
    assert!(after.tick(restart).is_empty());
    // The source's first report after the restart: the disk is fine.
    assert!(after.handle(disk(Severity::Resolved, "/"), restart + chrono::Duration::seconds(1)).is_empty());
    assert!(run_until(&mut after, at(10 * HOUR)).is_empty(), "never told, nothing to tell");
}

#[test]
fn after_a_restart_a_restored_alert_is_not_notified_with_a_past_time() {
    let mut r = rule("disk");
    r.hold_for = Duration::from_secs(5 * 60);
    let r = Arc::new(r);
    let mut before = Router::new(vec![r.clone()], vec![]);
    assert!(before.handle(disk(Severity::Warning, "/"), at(0)).is_empty());
    let stored = saved(&mut before);
    // Down from 1m to 30m: `for:` passed while down and nobody said otherwise.
    let restart = at(30 * MIN);
    let mut after = Router::new(vec![r], vec![]);
    after.restore(stored, restart);
    // Promoted at once (its `for:` is over), told once the sources had
    // their say, and dated then, not when `for:` ran out during the stop.
    let out = run_until(&mut after, restart + chrono::Duration::seconds(60));
    assert_eq!(dispatches(&out), vec![(restart + chrono::Duration::seconds(60), vec!["firing"], false)]);
}

#[test]
fn after_a_restart_new_alerts_are_not_held_unless_they_join_a_restored_group() {
    let r = Arc::new(rule("disk"));
    let mut before = Router::new(vec![r.clone()], vec![]);
    assert_eq!(notified(&before.handle(disk(Severity::Warning, "/"), at(0))).len(), 1);
    let stored = saved(&mut before);
    let restart = at(30 * MIN);
    let mut after = Router::new(vec![r], vec![]);
    after.restore(stored, restart);
    let out = after.handle(disk(Severity::Critical, "/var"), restart + chrono::Duration::seconds(1));
    assert_eq!(dispatches(&out), vec![(restart + chrono::Duration::seconds(1), vec!["firing"], false)]);
    assert_eq!(notified(&out)[0].alerts[0].event.label("mount"), Some("/var"));

    // Unless it joins a group holding a restored alert: then it is told
    // with that group, once the minute is over.
    let mut grouped = rule("disk");
    grouped.group_by = vec!["host".into()];
    let grouped = Arc::new(grouped);
    let mut before = Router::new(vec![grouped.clone()], vec![]);
    assert_eq!(notified(&before.handle(disk(Severity::Warning, "/"), at(0))).len(), 1);
    let stored = saved(&mut before);
    let mut after = Router::new(vec![grouped], vec![]);
    after.restore(stored, restart);
    assert!(after.handle(disk(Severity::Critical, "/var"), restart + chrono::Duration::seconds(1)).is_empty());
    let settled = restart + chrono::Duration::seconds(60);
    assert_eq!(dispatches(&run_until(&mut after, settled)), vec![(settled, vec!["firing", "firing"], false)]);
}

/// An acknowledged alert is not repeated; a rise in severity re-opens it
/// and is notified; its resolution is notified and ends the ack, so a new
/// firing is repeated again.
#[test]
fn acknowledged_alerts_stop_repeating_until_their_severity_rises() {
    let mut r = rule("disk");
    r.repeat_interval = Duration::from_secs(HOUR as u64);
    let mut router = new_router(vec![r]);
    assert_eq!(notified(&router.handle(disk(Severity::Warning, "/var"), at(0))).len(), 1);
    let acked = router.acknowledge(|rule, _| rule == "disk", "user:alice", Some("on it"), at(MIN));
    assert_eq!(acked.len(), 1);
    assert_eq!(acked[0].1.ack.as_ref().unwrap().severity, Severity::Warning);

    // The repeat at 1h is held back, with who acknowledged in the record.
    let out = run_until(&mut router, at(3 * HOUR));
    assert!(notified(&out).is_empty(), "no repeats: {out:?}");
    let reasons = suppressed(&out);
    assert_eq!(reasons.len(), 1, "recorded once, not at every tick: {reasons:?}");
    assert_eq!(reasons[0].to_string(), "acknowledged by user:alice: on it");
    // The same severity again, or a lower one, is no news either.
    assert!(notified(&router.handle(disk(Severity::Warning, "/var"), at(3 * HOUR))).is_empty());
    assert!(notified(&router.handle(disk(Severity::Info, "/var"), at(3 * HOUR + 1))).is_empty());
    assert!(notified(&router.handle(disk(Severity::Warning, "/var"), at(3 * HOUR + 2))).is_empty());
    assert!(run_until(&mut router, at(4 * HOUR)).iter().all(|o| matches!(o, Output::Suppressed(_))));

    // Critical is above what was acknowledged: notified, and re-opened.
    let out = router.handle(disk(Severity::Critical, "/var"), at(5 * HOUR));
    let out = if notified(&out).is_empty() { run_until(&mut router, at(5 * HOUR + MIN)) } else { out };
    let n = notified(&out);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].alerts[0].event.severity, Severity::Critical);
    assert!(router.alerts("disk")[0].ack.is_none(), "re-opened");
    let out = run_until(&mut router, at(6 * HOUR + MIN));
    assert_eq!(notified(&out).len(), 1, "repeats again once re-opened");

    // Acked again, then resolved: the resolution is told, and the ack ends with the alert.
    router.acknowledge(|_, _| true, "user:bob", None, at(7 * HOUR));
    let out = router.handle(disk(Severity::Resolved, "/var"), at(7 * HOUR + MIN));
    let out = if notified(&out).is_empty() { run_until(&mut router, at(7 * HOUR + 2 * MIN)) } else { out };
    assert_eq!(notified(&out)[0].alerts[0].status, "resolved");
    assert!(router.alerts("disk").is_empty());
    assert_eq!(notified(&router.handle(disk(Severity::Warning, "/var"), at(8 * HOUR))).len(), 1);
    let out = run_until(&mut router, at(9 * HOUR));
    assert_eq!(notified(&out).len(), 1, "a new firing is repeated as usual");
}

/// In a group, only the acknowledged alert is left out of the repeats.
#[test]
fn an_ack_silences_only_its_own_alert_in_a_group() {
    let mut r = rule("disk");
    r.group_by = vec!["host".into()];
    r.repeat_interval = Duration::from_secs(HOUR as u64);
    let mut router = new_router(vec![r]);
    router.handle(disk(Severity::Warning, "/var"), at(0));
    router.handle(disk(Severity::Warning, "/srv"), at(0));
    run_until(&mut router, at(MIN));
    router.acknowledge(
        |_, a| a.event.labels.get("mount").map(String::as_str) == Some("/var"),
        "user:alice",
        None,
        at(2 * MIN),
    );
    let out = run_until(&mut router, at(HOUR + 2 * MIN));
    let n = notified(&out);
    assert_eq!(n.len(), 1);
    let mounts: Vec<&str> = n[0].alerts.iter().map(|a| a.event.labels["mount"].as_str()).collect();
    assert_eq!(mounts, vec!["/srv"], "the acknowledged one is not repeated");
}
