//! Matchers as `amtool` writes them: `rule=disk-space host=~"web.*"
//! severity!=info`, for silences set at run time.
//!
//! A matcher is a name, an operator (`=`, `!=`, `=~`, `!~`) and a value,
//! quoted with `"` (backslash escapes `\"`, `\\`, `\n`) or bare. Regexes are
//! anchored, as in the config and in Alertmanager. The names `rule` and
//! `alertname` match the rule an alert belongs to; `source`, `host` and
//! `severity` the event's own fields; anything else a label.

use super::{LabelCond, LabelKey, Matcher};

/// Parses one matcher; the error says what is wrong with it.
pub fn parse(text: &str) -> Result<(LabelKey, LabelCond), String> {
    let s = text.trim();
    let name_end =
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')).unwrap_or(s.len());
    let name = &s[..name_end];
    if name.is_empty() {
        return Err(format!("`{text}`: a matcher starts with a label name, as in `rule=disk-space`"));
    }
    let rest = &s[name_end..];
    let (op, value) = ["=~", "!~", "!=", "="]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v)))
        .ok_or_else(|| format!("`{text}`: expected `=`, `!=`, `=~` or `!~` after `{name}`"))?;
    let value = unquote(value.trim()).map_err(|e| format!("`{text}`: {e}"))?;
    let regex =
        || regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| format!("`{text}`: not a valid regex: {e}"));
    let cond = match op {
        "=" => LabelCond::Equals(value.clone()),
        "!=" => LabelCond::Not(value.clone()),
        "=~" => LabelCond::Regex(regex()?),
        _ => LabelCond::NotRegex(regex()?),
    };
    let key = match name {
        "rule" | "alertname" => LabelKey::Rule,
        other => LabelKey::new(other),
    };
    Ok((key, cond))
}

/// Splits a filter into matchers: separated by spaces or commas outside
/// quotes, optionally in braces as PromQL writes them
/// (`{rule="disk-space", host=~"web.*"}`).
pub fn split(text: &str) -> Result<Vec<String>, String> {
    let t = text.trim();
    let t = match t.strip_prefix('{') {
        Some(inner) => inner.strip_suffix('}').ok_or_else(|| format!("`{text}`: the `{{` is not closed"))?,
        None => t,
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in t.chars() {
        match c {
            _ if escaped => {
                escaped = false;
                cur.push(c);
            }
            '\\' if quoted => {
                escaped = true;
                cur.push(c);
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ' ' | '\t' | ',' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(format!("`{text}`: a quoted value has no closing `\"`"));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn unquote(v: &str) -> Result<String, String> {
    let Some(inner) = v.strip_prefix('"') else {
        if v.contains('"') {
            return Err("a value with a `\"` must be quoted, with the quote escaped as `\\\"`".into());
        }
        return Ok(v.to_string());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                return if chars.as_str().trim().is_empty() {
                    Ok(out)
                } else {
                    Err(format!("text after the closing quote: `{}`", chars.as_str()))
                };
            }
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some(c @ ('"' | '\\')) => out.push(c),
                Some(c) => {
                    // Regexes keep their own escapes (`\d`, `\.`).
                    out.push('\\');
                    out.push(c);
                }
                None => return Err("the value ends inside an escape".into()),
            },
            c => out.push(c),
        }
    }
    Err("the quoted value has no closing `\"`".into())
}

/// Compiles a silence's matchers. A silence must name at least one
/// condition, and not only conditions every alert meets, so that a typo
/// cannot silence everything.
pub fn compile(texts: &[String]) -> Result<Matcher, String> {
    if texts.is_empty() {
        return Err("a silence needs at least one matcher, as in `rule=disk-space host=web01`".into());
    }
    let mut labels = Vec::with_capacity(texts.len());
    for t in texts {
        labels.push(parse(t)?);
    }
    let matches_empty = |c: &LabelCond| match c {
        LabelCond::Equals(v) => v.is_empty(),
        LabelCond::Regex(r) => r.is_match(""),
        LabelCond::Not(v) => !v.is_empty(),
        LabelCond::NotRegex(r) => !r.is_match(""),
    };
    if labels.iter().all(|(_, c)| matches_empty(c)) {
        return Err("these matchers match every alert; name at least one value an alert must have".into());
    }
    labels.sort_by_key(|(_, c)| c.cost());
    Ok(Matcher { min_severity: None, sources: Vec::new(), labels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Severity};
    use chrono::DateTime;

    fn ev() -> Event {
        Event::new("disk", "web01", Severity::Warning, "s", DateTime::from_timestamp(0, 0).unwrap())
            .with_label("mount", "/var")
    }

    fn m(list: &[&str]) -> Matcher {
        compile(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn amtool_syntax() {
        let e = ev();
        assert!(m(&["rule=disk-space", r#"host=~"web.*""#]).matches_in(&e, Some("disk-space")));
        assert!(!m(&["rule=disk-space"]).matches_in(&e, Some("other")));
        assert!(!m(&["rule=disk-space"]).matches(&e), "an event alone has no rule");
        assert!(m(&["alertname=r"]).matches_in(&e, Some("r")));
        assert!(m(&["host=~web.*", "severity!=info", "mount=/var"]).matches(&e));
        assert!(!m(&["host=~web"]).matches(&e), "regexes are anchored");
        assert!(m(&["host!~db.*", "mount=/var"]).matches(&e));
        assert!(m(&[r#"mount="/var""#]).matches(&e));
        assert!(m(&["source=disk"]).matches(&e));
    }

    #[test]
    fn quoting_and_escapes() {
        let (_, c) = parse(r#"summary="say \"hi\"""#).unwrap();
        assert!(matches!(c, LabelCond::Equals(v) if v == r#"say "hi""#));
        let (_, c) = parse(r#"host=~"web\d+""#).unwrap();
        assert!(matches!(c, LabelCond::Regex(r) if r.is_match("web12")));
    }

    #[test]
    fn filters_split_into_matchers() {
        assert_eq!(split(r#"rule=a host=~"web 1.*""#).unwrap(), vec!["rule=a", r#"host=~"web 1.*""#]);
        assert_eq!(split(r#"{rule="a", n="x,y"}"#).unwrap(), vec![r#"rule="a""#, r#"n="x,y""#]);
        assert_eq!(split(r#"a="q\"s""#).unwrap(), vec![r#"a="q\"s""#]);
        assert!(split("  ").unwrap().is_empty());
        assert!(split(r#"a="open"#).unwrap_err().contains("no closing"));
        assert!(split("{a=b").unwrap_err().contains("not closed"));
    }

    #[test]
    fn bad_matchers_say_what_is_wrong() {
        let err = |s: &str| parse(s).unwrap_err();
        assert!(err("=x").contains("starts with a label name"), "{}", err("=x"));
        assert!(err("host").contains("expected `=`"));
        assert!(err("host=\"web").contains("no closing"));
        assert!(err("host=\"web\" x").contains("after the closing quote"));
        assert!(err("host=~(").contains("not a valid regex"));
        assert!(err("host=a\"b").contains("must be quoted"));
        assert!(compile(&[]).unwrap_err().contains("at least one matcher"));
        assert!(compile(&["host=~.*".into()]).unwrap_err().contains("match every alert"));
        assert!(compile(&["host!=web01".into()]).unwrap_err().contains("match every alert"));
    }
}
