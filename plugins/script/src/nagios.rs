//! The Nagios plugin output convention, as Monitoring Plugins write it:
//!
//! ```text
//! DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968
//! long output line 1
//! long output line 2 | more=1;2;3 perf=4
//! more=5 perf data lines
//! ```
//!
//! The exit code is the state (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN;
//! anything else is UNKNOWN). The first line's text is the summary; after
//! its `|` comes performance data. Lines after the first are long output,
//! until one holds a `|`: after that, everything is performance data.

/// A check's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl State {
    pub fn from_exit(code: Option<i32>) -> State {
        match code {
            Some(0) => State::Ok,
            Some(1) => State::Warning,
            Some(2) => State::Critical,
            _ => State::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Warning => "warning",
            State::Critical => "critical",
            State::Unknown => "unknown",
        }
    }
}

/// One performance data item: `'label'=value[UOM];[warn];[crit];[min];[max]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Perf {
    pub label: String,
    /// The value with its unit of measure, as written (`2643MB`, `0.36`, `U`).
    pub value: String,
    pub warn: Option<String>,
    pub crit: Option<String>,
    pub min: Option<String>,
    pub max: Option<String>,
}

/// A parsed plugin output.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Output {
    pub summary: String,
    pub long: Vec<String>,
    pub perf: Vec<Perf>,
    /// Perf data items that did not parse, as written.
    pub bad_perf: Vec<String>,
}

/// Parses a plugin's standard output. Never fails: what does not follow
/// the convention is kept as text.
pub fn parse(stdout: &str) -> Output {
    let mut out = Output::default();
    let mut lines = stdout.lines();
    let mut perf_text = String::new();
    if let Some(first) = lines.next() {
        match first.split_once('|') {
            Some((text, perf)) => {
                out.summary = text.trim().to_string();
                perf_text.push_str(perf);
            }
            None => out.summary = first.trim().to_string(),
        }
    }
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            perf_text.push(' ');
            perf_text.push_str(line);
            continue;
        }
        match line.split_once('|') {
            Some((text, perf)) => {
                if !text.trim().is_empty() {
                    out.long.push(text.trim_end().to_string());
                }
                perf_text.push(' ');
                perf_text.push_str(perf);
                in_perf = true;
            }
            None => out.long.push(line.trim_end().to_string()),
        }
    }
    let (perf, bad) = parse_perf(&perf_text);
    out.perf = perf;
    out.bad_perf = bad;
    out
}

/// Splits performance data into items; labels may be quoted with `'`
/// (and contain spaces and `=`), `''` inside quotes is one quote.
pub fn parse_perf(text: &str) -> (Vec<Perf>, Vec<String>) {
    let mut items = Vec::new();
    let mut bad = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let start = i;
        let mut label = String::new();
        let mut ok = true;
        if chars[i] == '\'' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        ok = false;
                        break;
                    }
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        label.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        label.push(*c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
                label.push(chars[i]);
                i += 1;
            }
        }
        // The rest of the item: up to the next whitespace.
        let rest_start = i;
        while i < chars.len() && !chars[i].is_whitespace() {
            i += 1;
        }
        let rest: String = chars[rest_start..i].iter().collect();
        let whole: String = chars[start..i].iter().collect();
        let Some(values) = rest.strip_prefix('=') else {
            bad.push(whole);
            continue;
        };
        if !ok || label.is_empty() || values.is_empty() {
            bad.push(whole);
            continue;
        }
        let mut parts = values.split(';').map(|s| Some(s.to_string()).filter(|s| !s.is_empty()));
        let value = parts.next().flatten().unwrap_or_default();
        if value.is_empty()
            || !(value.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.') || value == "U")
        {
            bad.push(whole);
            continue;
        }
        items.push(Perf {
            label,
            value,
            warn: parts.next().flatten(),
            crit: parts.next().flatten(),
            min: parts.next().flatten(),
            max: parts.next().flatten(),
        });
    }
    (items, bad)
}

/// A perf label as an event label name: `perf_` and the label with
/// anything but letters, digits, `_`, `.` and `-` made `_`.
pub fn label_name(label: &str) -> String {
    let clean: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' })
        .collect();
    format!("perf_{clean}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitoring_plugins_output() {
        let o = parse(
            "DISK OK - free space: / 54301MiB (58% inode=97%);| /=40633368576B;135276265472;243497277849;0;270552530944\n",
        );
        assert_eq!(o.summary, "DISK OK - free space: / 54301MiB (58% inode=97%);");
        assert_eq!(o.perf.len(), 1);
        assert_eq!(o.perf[0].label, "/");
        assert_eq!(o.perf[0].value, "40633368576B");
        assert_eq!(o.perf[0].max.as_deref(), Some("270552530944"));
        let o = parse(
            "LOAD OK - total load average: 0.36, 0.68, 0.95|load1=0.360;50.000;90.000;0; load5=0.680;50.000;90.000;0; load15=0.950;50.000;90.000;0; \n",
        );
        assert_eq!(o.perf.iter().map(|p| p.label.as_str()).collect::<Vec<_>>(), ["load1", "load5", "load15"]);
        assert_eq!(o.perf[2].warn.as_deref(), Some("50.000"));
        assert_eq!(o.perf[2].max, None);
    }

    #[test]
    fn long_output_and_multiline_perfdata() {
        let o = parse(
            "APP WARNING - 2 queues slow | q1=5s;3;10\nqueue a: 5s\nqueue b: 4s | q2=4s;3;10\nq3=1s;3;10\n'queue four'=2s\n",
        );
        assert_eq!(o.summary, "APP WARNING - 2 queues slow");
        assert_eq!(o.long, vec!["queue a: 5s", "queue b: 4s"]);
        let labels: Vec<_> = o.perf.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["q1", "q2", "q3", "queue four"]);
    }

    #[test]
    fn malformed_perfdata_is_kept_aside_not_fatal() {
        let (perf, bad) = parse_perf("ok=1 =2 novalue= x=abc y==1 z 'it''s'=4%;;;0;100");
        assert_eq!(perf.iter().map(|p| p.label.as_str()).collect::<Vec<_>>(), ["ok", "it's"]);
        assert_eq!(perf[1].min.as_deref(), Some("0"));
        assert_eq!(bad, ["=2", "novalue=", "x=abc", "y==1", "z"]);
        let (perf, bad) = parse_perf("a=1 'unterminated=3 b=2");
        assert_eq!(perf.len(), 1);
        assert_eq!(bad, ["'unterminated=3 b=2"]);
        // Nothing at all, or only text.
        assert_eq!(parse(""), Output::default());
        assert_eq!(parse("just text\n").summary, "just text");
        assert_eq!(parse("|||\n|\n").summary, "");
        assert_eq!(parse_perf("\u{0}=1 \u{fffd}=\u{fffd}").1.len(), 1);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(State::from_exit(Some(0)), State::Ok);
        assert_eq!(State::from_exit(Some(2)), State::Critical);
        assert_eq!(State::from_exit(Some(3)), State::Unknown);
        assert_eq!(State::from_exit(Some(127)), State::Unknown);
        assert_eq!(State::from_exit(None), State::Unknown, "killed by a signal");
        assert_eq!(label_name("/var lib"), "perf__var_lib");
        assert_eq!(label_name("load1"), "perf_load1");
    }
}
