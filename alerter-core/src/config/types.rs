//! Config values that need parsing, as newtypes.
//!
//! Each type deserializes from a YAML string and declares a JSON Schema
//! `format`. [`check_format`] is the one place that knows how to check each
//! format; the structural validator calls it for every string whose schema
//! names a format, so a bad duration or regex is reported with its position
//! together with all other problems, and serde afterwards never fails on one.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveTime, Utc, Weekday};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Checks a string against a named format: `None` for formats this
/// module does not own (schemars' own, like `uint16`), else the verdict,
/// with the message for the admin.
pub fn check_format(format: &str, value: &str) -> Option<Result<(), String>> {
    Some(match format {
        "duration" => parse_duration(value).map(drop),
        "regex" => compile_anchored(value).map(drop).map_err(|e| regex_message(&e)),
        "crontab" => parse_cron(value).map(drop),
        "timezone" => parse_tz(value).map(drop),
        "time-range" => parse_time_range(value).map(drop),
        "weekday-range" => parse_weekday_range(value).map(drop),
        "template" => check_template(value),
        "date-time" => parse_timestamp(value).map(drop),
        "ipv4" => parse_ipv4(value).map(drop),
        "ip-target" => parse_ip_target(value).map(drop),
        "budget" => parse_budget(value).map(drop),
        _ => return None,
    })
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty), $format:literal, $parse:path, $desc:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            /// What the admin wrote.
            pub raw: String,
            pub value: $inner,
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.raw)
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.raw == other.raw
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Ok($name { raw: s.to_owned(), value: $parse(s)? })
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.raw)
            }
        }

        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "format": $format, "description": $desc })
            }
        }
    };
}

string_newtype!(
    /// A duration such as `30s`, `5m`, `1h 30m`.
    Duration(std::time::Duration),
    "duration",
    parse_duration,
    "A duration: a number and a unit (ms, s, m, h, d), e.g. 30s, 5m, 1h 30m."
);
string_newtype!(
    /// A regex that must match a whole value.
    RegexStr(regex::Regex),
    "regex",
    regex_from_str,
    "A regular expression (Rust regex syntax) that must match the whole value."
);
string_newtype!(
    /// A crontab(5) line.
    CronExpr(alerter_schedule::Cron),
    "crontab",
    parse_cron,
    "A crontab(5) schedule: minute hour day-of-month month day-of-week (0 and 7 are Sunday), optionally with seconds first."
);
string_newtype!(
    /// An IANA time zone.
    TimeZoneName(chrono_tz::Tz),
    "timezone",
    parse_tz,
    "An IANA time zone name such as Europe/Berlin or UTC."
);
string_newtype!(
    /// `HH:MM-HH:MM`.
    TimeRangeStr(TimeRange),
    "time-range",
    parse_time_range,
    "A time-of-day range HH:MM-HH:MM; it may cross midnight, and 24:00 ends a day."
);
string_newtype!(
    /// `mon`, `monday`, `mon-fri`.
    WeekdayRange((Weekday, Weekday)),
    "weekday-range",
    parse_weekday_range,
    "A day of the week (monday or mon) or a range of them (mon-fri)."
);
string_newtype!(
    /// A minijinja template.
    TemplateStr(()),
    "template",
    template_syntax,
    "A minijinja template, e.g. \"{{ severity }}: {{ summary }}\"."
);
string_newtype!(
    /// An RFC 3339 time.
    Timestamp(DateTime<Utc>),
    "date-time",
    parse_timestamp,
    "A point in time, RFC 3339: 2026-11-26T20:00:00Z or 2026-11-26T21:00:00+01:00."
);

string_newtype!(
    /// An IPv4 address.
    Ipv4Str(std::net::Ipv4Addr),
    "ipv4",
    parse_ipv4,
    "An IPv4 address, e.g. 192.168.1.255."
);
string_newtype!(
    /// An address with an optional port.
    IpTarget((std::net::IpAddr, Option<u16>)),
    "ip-target",
    parse_ip_target,
    "An IP address, optionally with a port: 10.0.0.5 or 127.0.0.1:1139."
);

string_newtype!(
    /// `5 per 10m`, or `unlimited`.
    BudgetStr(alerter_engine::budget::Allowance),
    "budget",
    parse_budget,
    "A budget: at most a count per window, e.g. `5 per 10m` or `20 per 1h`; or `unlimited`."
);

/// `N per DURATION` (N at least 1, the window at least a second), or
/// `unlimited`.
pub fn parse_budget(s: &str) -> Result<alerter_engine::budget::Allowance, String> {
    use alerter_engine::budget::{Allowance, Limit};
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(Allowance::Unlimited);
    }
    let hint = || format!("`{s}` is not a budget: write a count and a window, e.g. `5 per 10m`, or `unlimited`");
    let (count, per) = t.split_once(" per ").ok_or_else(hint)?;
    let count: u32 = count.trim().parse().map_err(|_| hint())?;
    if count == 0 {
        return Err(format!("`{s}`: a budget of 0 would fold everything; write at least 1, or mute the rule instead"));
    }
    let per = parse_duration(per.trim()).map_err(|e| format!("`{s}`: {e}"))?;
    if per < std::time::Duration::from_secs(1) {
        return Err(format!("`{s}`: the window must be at least 1s"));
    }
    Ok(Allowance::Limited(Limit { count, per }))
}

pub fn parse_ipv4(s: &str) -> Result<std::net::Ipv4Addr, String> {
    s.trim().parse().map_err(|_| format!("`{s}` is not an IPv4 address"))
}

pub fn parse_ip_target(s: &str) -> Result<(std::net::IpAddr, Option<u16>), String> {
    let s = s.trim();
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Ok((sa.ip(), Some(sa.port())));
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| (ip, None))
        .map_err(|_| format!("`{s}` is not an IP address (with an optional :port)"))
}

/// A value that may be written as one item or as a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn to_vec(&self) -> Vec<&T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v.iter().collect(),
        }
    }

    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

pub use alerter_engine::schedule::TimeRange;

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write a number and a unit, e.g. 30s, 5m, 1h 30m"))
}

fn compile_anchored(s: &str) -> Result<regex::Regex, regex::Error> {
    // Anchoring makes `web` mean the label is exactly "web", as in Alertmanager;
    // `web.*` must be written to match a prefix.
    regex::Regex::new(&format!("^(?:{s})$"))
}

fn regex_message(e: &regex::Error) -> String {
    // The regex crate's messages quote our anchored wrapper; show the error
    // text only, which names the problem and its place in the pattern.
    let text = e.to_string();
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(&text);
    format!("not a valid regex: {}", last.trim().trim_start_matches("error: "))
}

fn regex_from_str(s: &str) -> Result<regex::Regex, String> {
    compile_anchored(s).map_err(|e| regex_message(&e))
}

/// Parses a crontab line with crontab(5) semantics (see alerter-schedule).
pub fn parse_cron(s: &str) -> Result<alerter_schedule::Cron, String> {
    alerter_schedule::Cron::parse(s)
}

pub fn parse_tz(s: &str) -> Result<chrono_tz::Tz, String> {
    s.parse::<chrono_tz::Tz>().map_err(|_| {
        let suggestion = crate::config::diag::did_you_mean(s, chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()));
        format!(
            "unknown time zone `{s}`; use an IANA name such as Europe/Berlin or UTC{}",
            suggestion.map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default()
        )
    })
}

fn parse_hhmm(s: &str) -> Result<u16, String> {
    if s == "24:00" {
        return Ok(1440);
    }
    let t = NaiveTime::parse_from_str(s, "%H:%M")
        .map_err(|_| format!("`{s}` is not a time of day; write HH:MM, e.g. 08:00"))?;
    use chrono::Timelike;
    Ok((t.hour() * 60 + t.minute()) as u16)
}

pub fn parse_time_range(s: &str) -> Result<TimeRange, String> {
    let (a, b) =
        s.split_once('-').ok_or_else(|| format!("`{s}` is not a time range; write HH:MM-HH:MM, e.g. 08:00-18:00"))?;
    let start = parse_hhmm(a.trim())?;
    let end = parse_hhmm(b.trim())?;
    if start == 1440 {
        return Err(format!("`{s}`: a range cannot start at 24:00"));
    }
    if start == end {
        return Err(format!("`{s}` is empty; write 00:00-24:00 for the whole day"));
    }
    Ok(TimeRange { start, end })
}

fn parse_weekday(s: &str) -> Result<Weekday, String> {
    let lower = s.trim().to_ascii_lowercase();
    const NAMES: [(&str, Weekday); 7] = [
        ("monday", Weekday::Mon),
        ("tuesday", Weekday::Tue),
        ("wednesday", Weekday::Wed),
        ("thursday", Weekday::Thu),
        ("friday", Weekday::Fri),
        ("saturday", Weekday::Sat),
        ("sunday", Weekday::Sun),
    ];
    for (name, day) in NAMES {
        if lower == name || lower == name[..3] {
            return Ok(day);
        }
    }
    let suggestion = crate::config::diag::did_you_mean(&lower, NAMES.iter().map(|(n, _)| *n));
    Err(format!(
        "`{s}` is not a day of the week{}",
        suggestion.map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default()
    ))
}

pub fn parse_weekday_range(s: &str) -> Result<(Weekday, Weekday), String> {
    match s.split_once('-') {
        Some((a, b)) => Ok((parse_weekday(a)?, parse_weekday(b)?)),
        None => {
            let d = parse_weekday(s)?;
            Ok((d, d))
        }
    }
}

fn template_syntax(s: &str) -> Result<(), String> {
    check_template(s)
}

/// Compiles a template once to find syntax errors and unknown filters.
pub fn check_template(s: &str) -> Result<(), String> {
    let env = crate::template::environment();
    env.template_from_str(s).map(drop).map_err(|e| format!("template error: {}", crate::template::describe_error(&e)))
}

pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time ({e}); write e.g. 2026-11-26T20:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
        assert_eq!(parse_duration("1h 30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("0").unwrap().as_secs(), 0);
        assert!(parse_duration("5 minutes please").unwrap_err().contains("not a duration"));
        assert!(parse_duration("10").is_err(), "a bare number has no unit");
    }

    #[test]
    fn regexes_are_anchored() {
        let r: RegexStr = "web\\d".parse().unwrap();
        assert!(r.value.is_match("web1"));
        assert!(!r.value.is_match("xweb1"));
        assert!(check_format("regex", "(").unwrap().unwrap_err().starts_with("not a valid regex"));
    }

    #[test]
    fn crontab_semantics() {
        assert!(parse_cron("0 18 * * fri").is_ok());
        assert!(parse_cron("*/10 * * * * *").is_ok(), "seconds are optional");
        assert!(parse_cron("61 * * * *").unwrap_err().contains("not a crontab schedule"));
        assert!(parse_cron("* * *").is_err());
    }

    #[test]
    fn time_zones_suggest() {
        assert!(parse_tz("Europe/Berlin").is_ok());
        let e = parse_tz("Europe/Berln").unwrap_err();
        assert!(e.contains("did you mean `Europe/Berlin`"), "{e}");
    }

    #[test]
    fn time_ranges_and_weekdays() {
        assert_eq!(parse_time_range("22:00-06:00").unwrap(), TimeRange { start: 1320, end: 360 });
        assert_eq!(parse_time_range("08:00-24:00").unwrap().end, 1440);
        assert!(parse_time_range("8-18").is_err());
        assert!(parse_time_range("10:00-10:00").is_err());
        assert_eq!(parse_weekday_range("mon-fri").unwrap(), (Weekday::Mon, Weekday::Fri));
        assert_eq!(parse_weekday_range("Sunday").unwrap(), (Weekday::Sun, Weekday::Sun));
        assert!(parse_weekday_range("fryday").unwrap_err().contains("did you mean `friday`"));
    }

    #[test]
    fn templates_and_timestamps() {
        assert_eq!(check_format("template", "{{ summary }}"), Some(Ok(())));
        assert!(check_format("template", "{{ summary ").unwrap().is_err());
        assert_eq!(check_format("date-time", "2026-11-26T20:00:00Z"), Some(Ok(())));
        assert!(check_format("date-time", "tomorrow").unwrap().is_err());
        assert!(check_format("ipv4", "10.0.0.256").unwrap().is_err());
        assert_eq!(check_format("ip-target", "127.0.0.1:1139"), Some(Ok(())));
        assert_eq!(check_format("uint16", "anything"), None);
    }
}
