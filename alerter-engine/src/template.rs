//! Message templates: the minijinja environment, the built-in defaults per
//! transport kind, and rendering a notification's title and text.
//!
//! Precedence for each of title and text: the rule's template, then the
//! transport's, then the built-in default for the transport's kind.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The name of the built-in template for a transport kind and part.
pub fn default_template(kind: &str, part: Part) -> &'static str {
    match (kind, part) {
        ("messenger", Part::Text) => "builtin/messenger/text",
        ("email", Part::Text) => "builtin/email/text",
        (_, Part::Html) => "builtin/default/html",
        (_, Part::Title) => "builtin/default/title",
        (_, Part::Text) => "builtin/default/text",
    }
}

/// The message of a notice without a template of its own.
pub const NOTICE_FALLBACK: &str = "builtin/notice/message";

const BUILTINS: &[(&str, &str)] = &[
    ("builtin/default/title", DEFAULT_TITLE),
    ("builtin/default/text", DEFAULT_TEXT),
    ("builtin/default/html", DEFAULT_HTML),
    ("builtin/email/text", EMAIL_TEXT),
    ("builtin/messenger/text", MESSENGER_TEXT),
    (NOTICE_FALLBACK, "{{ name }}"),
];

/// A mail is read later, away from the machine, perhaps forwarded: it says
/// everything an admin needs to act without logging in first. Per alert:
/// what happened (the summary, then the event's details, e.g. the log line
/// that matched), where (host, source), how bad, since when (and until when),
/// and its labels; then which rule sent it. Times are UTC, said so.
const EMAIL_TEXT: &str = "\
{% if count > 1 %}
{{ summary }}

{% endif %}
{% for a in alerts %}
{% if a.status == 'resolved' %}RESOLVED{% else %}{{ a.severity|upper }}{% endif %}: {{ a.summary }}
{% if a.details %}

{{ a.details|indent(4, true) }}

{% endif %}
  host:      {{ a.host }}
  source:    {{ a.source }}
  severity:  {{ a.severity }}
  started:   {{ a.since|datetime }}
{% if a.status == 'resolved' %}
  resolved:  by {{ now|datetime }}
{% endif %}
{% if a.count > 1 %}
  events:    {{ a.count }} since the last notification
{% endif %}
{% if a.labels %}
  labels:    {% for k, v in a.labels|items %}{{ k }}={{ v }}{% if not loop.last %}, {% endif %}{% endfor %}

{% endif %}

{% endfor %}
-- 
{% if repeat %}A reminder: still going on. {% endif %}Rule `{{ rule }}` of alerter on {{ alerter }}, {{ now|datetime }}.
";

/// Mail's HTML alternative: the same as the text, each alert a small table.
const DEFAULT_HTML: &str = "\
<html><body>
<h3>{{ summary }}</h3>
{% for a in alerts %}
<h4>{% if a.status == 'resolved' %}RESOLVED{% else %}{{ a.severity|upper }}{% endif %}: {{ a.summary }}</h4>
{% if a.details %}
<pre>{{ a.details }}</pre>
{% endif %}
<table cellpadding=\"3\" cellspacing=\"0\">
<tr><th align=\"left\">host</th><td>{{ a.host }}</td></tr>
<tr><th align=\"left\">source</th><td>{{ a.source }}</td></tr>
<tr><th align=\"left\">severity</th><td>{{ a.severity }}</td></tr>
<tr><th align=\"left\">started</th><td>{{ a.since|datetime }}</td></tr>
{% if a.status == 'resolved' %}
<tr><th align=\"left\">resolved</th><td>by {{ now|datetime }}</td></tr>
{% endif %}
{% if a.count > 1 %}
<tr><th align=\"left\">events</th><td>{{ a.count }} since the last notification</td></tr>
{% endif %}
{% if a.labels %}
<tr><th align=\"left\">labels</th><td>{% for k, v in a.labels|items %}{{ k }}={{ v }}{% if not loop.last %}<br>{% endif %}{% endfor %}</td></tr>
{% endif %}
</table>
{% endfor %}
<p>{% if repeat %}A reminder: still going on. {% endif %}Rule <code>{{ rule }}</code> of alerter on {{ alerter }}, {{ now|datetime }}.</p>
</body></html>";

/// A popup: what and where first, then the alerts; short, since the
/// protocol carries 652 bytes at most.
const MESSENGER_TEXT: &str = "\
{% if status == 'resolved' %}RESOLVED{% else %}{{ severity|upper }}{% endif %}: {{ summary }}
{% if alerts|length > 1 %}{% for a in alerts %}- {{ a.summary }} ({{ a.host }})
{% endfor %}{% else %}{{ source }} on {{ host }}{% endif %}";

const DEFAULT_TITLE: &str =
    "{% if status == 'resolved' %}RESOLVED{% else %}{{ severity|upper }}{% endif %}: {{ summary }}";

/// The log transport (and any other without its own): one line per alert.
/// Its JSON line carries every field of every alert besides.
const DEFAULT_TEXT: &str = "\
{% for a in alerts -%}
{% if a.status == 'resolved' %}RESOLVED{% else %}{{ a.severity|upper }}{% endif %} {{ a.summary }} ({{ a.source }} on {{ a.host }})
{% endfor %}";

/// The `datetime` filter: an RFC 3339 time (as `since` and `now` are) in
/// a readable form, `2026-11-26 20:00:00 UTC` by default. `format` is a
/// strftime string, `tz` an IANA time zone: `{{ a.since|datetime("%H:%M",
/// tz="Europe/Berlin") }}`. Anything that is not a time is left as it is,
/// so a template never fails on an odd value.
fn datetime(
    value: String,
    format: Option<String>,
    kwargs: minijinja::value::Kwargs,
) -> Result<String, minijinja::Error> {
    use chrono::format::{Item, StrftimeItems};
    use minijinja::{Error, ErrorKind};
    let format = format.or(kwargs.get::<Option<String>>("format")?).unwrap_or_else(|| "%Y-%m-%d %H:%M:%S %Z".into());
    let tz = kwargs.get::<Option<String>>("tz")?;
    kwargs.assert_all_used()?;
    // chrono panics on an invalid format when displaying: check it first.
    if StrftimeItems::new(&format).any(|i| matches!(i, Item::Error)) {
        return Err(Error::new(ErrorKind::InvalidOperation, format!("`{format}` is not a strftime format")));
    }
    let tz: chrono_tz::Tz = match tz {
        None => chrono_tz::UTC,
        Some(name) => name
            .parse()
            .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("`{name}` is not an IANA time zone")))?,
    };
    Ok(match chrono::DateTime::parse_from_rfc3339(value.trim()) {
        Ok(t) => t.with_timezone(&tz).format(&format).to_string(),
        Err(_) => value,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Title,
    Text,
    /// An HTML alternative (mail); rendered with HTML escaping.
    Html,
}

/// A fresh environment with the filters templates may use.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Strict undefined would turn a typo in an optional label into a lost
    // alert; lenient renders it empty, and `alerter check` and `alerter test`
    // are where typos are caught.
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    // A template loop over a huge list must not stall the router.
    env.set_fuel(Some(1_000_000));
    env.add_filter("datetime", datetime);
    // What a template's name ends with says what it makes, and so how
    // inserted values are escaped: HTML parts escape HTML, a webhook's JSON
    // body inserts each value as a JSON value, a form body percent-encodes
    // it; everything else is plain text.
    env.set_auto_escape_callback(|name| {
        if name.ends_with("/html") {
            minijinja::AutoEscape::Html
        } else if name.ends_with("/json") {
            minijinja::AutoEscape::Json
        } else if name.ends_with("/form") {
            minijinja::AutoEscape::Custom(FORM.into())
        } else {
            minijinja::AutoEscape::None
        }
    });
    // Values come from sources (a log line, a script's output) and end on
    // a terminal or a desktop: every inserted string has its control
    // characters made visible (see `visible`), unless the template marks
    // it `|safe`, which is the explicit opt-out.
    env.set_formatter(|out, state, value| {
        if !value.is_safe()
            && let Some(s) = value.as_str()
            && let std::borrow::Cow::Owned(shown) = crate::visible::visible(s)
        {
            return escape(out, state, &minijinja::Value::from(shown));
        }
        escape(out, state, value)
    });
    env
}

/// The auto-escape mode of `application/x-www-form-urlencoded` bodies.
const FORM: &str = "form";

/// minijinja's escaping, plus percent-encoding for form bodies.
fn escape(
    out: &mut minijinja::Output<'_>,
    state: &mut minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    if matches!(state.auto_escape(), minijinja::AutoEscape::Custom(m) if m == FORM) && !value.is_safe() {
        if value.is_undefined() || value.is_none() {
            return Ok(());
        }
        let text = value.to_string();
        for part in form_urlencoded::byte_serialize(text.as_bytes()) {
            out.write_str(part).map_err(minijinja::Error::from)?;
        }
        return Ok(());
    }
    minijinja::escape_formatter(out, state, value)
}

/// What a minijinja error says, with its line inside the template.
pub fn describe_error(e: &minijinja::Error) -> String {
    let mut msg = e.kind().to_string();
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (template line {line})"));
    }
    msg
}

/// All templates of a configuration, compiled once at load.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        let mut env = environment();
        for (name, source) in BUILTINS {
            env.add_template(name, source).expect("built-in templates are valid");
        }
        Templates { env }
    }
}

impl Templates {
    /// Adds a template under `name`. Syntax was checked at validation, so an
    /// error here is reported the same way as there.
    pub fn add(&mut self, name: String, source: String) -> Result<(), String> {
        self.env.add_template_owned(name, source).map_err(|e| describe_error(&e))
    }

    pub fn has(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    /// Renders the first of `names` that exists, falling back to the
    /// template named `fallback` (a built-in) when none does or one fails
    /// at run time: an alert is never lost to a template bug; the error is
    /// returned alongside for logging.
    pub fn render<S: Serialize>(&self, names: &[&str], fallback: &str, ctx: &S) -> (String, Option<String>) {
        self.render_value(names, fallback, &Self::context_value(ctx))
    }

    /// A context turned into a template value once, for rendering several
    /// templates with it: turning a notification's context (every alert
    /// with its labels) into a value costs more than most templates do.
    pub fn context_value<S: Serialize>(ctx: &S) -> minijinja::Value {
        minijinja::Value::from(minijinja::value::Serde(ctx))
    }

    /// [`Templates::render`] with a context made by [`Templates::context_value`].
    pub fn render_value(&self, names: &[&str], fallback: &str, ctx: &minijinja::Value) -> (String, Option<String>) {
        let mut error = None;
        for name in names {
            if let Ok(t) = self.env.get_template(name) {
                match t.render(ctx.clone()) {
                    Ok(s) => return (s.trim_end().to_string(), error),
                    Err(e) => {
                        error = Some(format!("template `{name}`: {}", describe_error(&e)));
                    }
                }
            }
        }
        let rendered = match self.env.get_template(fallback) {
            Ok(t) => t.render(ctx.clone()).unwrap_or_else(|e| format!("(template error: {})", describe_error(&e))),
            Err(_) => format!("(no template `{fallback}`)"),
        };
        (rendered.trim_end().to_string(), error)
    }
}

/// A small context for ad-hoc rendering in tests and notices.
pub fn context(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_on_runtime_errors() {
        let mut t = Templates::default();
        t.add("bad".into(), "{{ 1 / 0 }}".into()).unwrap();
        t.add("good".into(), "hi {{ name }}".into()).unwrap();
        let ctx = context(&[("name", "bob")]);
        let (s, err) = t.render(&["bad", "good"], NOTICE_FALLBACK, &ctx);
        assert_eq!(s, "hi bob");
        assert!(err.unwrap().contains("bad"));
        let (s, _) = t.render(&["missing"], NOTICE_FALLBACK, &ctx);
        assert_eq!(s, "bob");
    }

    #[test]
    fn inserted_values_have_their_controls_made_visible_unless_marked_safe() {
        let mut t = Templates::default();
        t.add("text".into(), "{{ line }}".into()).unwrap();
        t.add("raw".into(), "{{ line|safe }}".into()).unwrap();
        t.add("mail/html".into(), "<p>{{ line }}</p>".into()).unwrap();
        let ctx = context(&[("line", "hello\x1b[2J\x1b]0;pwned\x07 <world>\u{202e}")]);
        assert_eq!(t.render(&["text"], NOTICE_FALLBACK, &ctx).0, "hello^[[2J^[]0;pwned^G <world><U+202E>");
        assert_eq!(t.render(&["raw"], NOTICE_FALLBACK, &ctx).0, "hello\x1b[2J\x1b]0;pwned\x07 <world>\u{202e}");
        assert_eq!(
            t.render(&["mail/html"], NOTICE_FALLBACK, &ctx).0,
            "<p>hello^[[2J^[]0;pwned^G &lt;world&gt;<U+202E></p>".replace("<U+202E>", "&lt;U+202E&gt;")
        );
        // The built-in popup text, from an event's summary and details.
        let ctx = serde_json::json!({
            "summary": "x\x1b[6n", "count": 1, "rule": "r", "alerter": "a",
            "alerts": [{"summary": "x\x1b[6n", "details": "\r\x1b[AMessage from ADMINISTRATOR", "severity": "warning",
                        "status": "firing", "host": "h", "source": "log", "labels": {}, "count": 1}],
        });
        let popup = t.render(&[], default_template("messenger", Part::Text), &ctx).0;
        assert!(!popup.contains('\x1b') && !popup.contains('\r'), "{popup:?}");
        assert!(popup.contains("x^[[6n"), "{popup:?}");
    }

    #[test]
    fn json_and_form_bodies_escape_for_their_format() {
        let mut t = Templates::default();
        t.add("hook/json".into(), r#"{"m": {{ name }}, "n": {{ n }}, "x": {{ missing }}}"#.into()).unwrap();
        t.add("hook/form".into(), "m={{ name }}&raw={{ name|safe }}&x={{ missing }}".into()).unwrap();
        let ctx = serde_json::json!({"name": "a \"quote\" & b=c\n\x1b", "n": 3});
        let (json, err) = t.render(&["hook/json"], NOTICE_FALLBACK, &ctx);
        assert_eq!(err, None);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["m"], "a \"quote\" & b=c\n^[");
        assert_eq!(v["n"], 3);
        assert_eq!(v["x"], serde_json::Value::Null, "{json}");
        let (form, _) = t.render(&["hook/form"], NOTICE_FALLBACK, &ctx);
        assert_eq!(form, "m=a+%22quote%22+%26+b%3Dc%0A%5E%5B&raw=a \"quote\" & b=c\n\x1b&x=");
    }

    #[test]
    fn html_escapes_and_text_does_not() {
        let mut t = Templates::default();
        t.add("transport/mail/html".into(), "<b>{{ name }}</b>".into()).unwrap();
        t.add("transport/mail/text".into(), "{{ name }}".into()).unwrap();
        let ctx = context(&[("name", "<script>")]);
        assert_eq!(t.render(&["transport/mail/html"], NOTICE_FALLBACK, &ctx).0, "<b>&lt;script&gt;</b>");
        assert_eq!(t.render(&["transport/mail/text"], NOTICE_FALLBACK, &ctx).0, "<script>");
        let ctx = serde_json::json!({"summary": "a<b", "alerts": [], "rule": "r", "alerter": "x"});
        assert!(t.render(&[], default_template("email", Part::Html), &ctx).0.contains("<h3>a&lt;b</h3>"));
    }

    /// A grouped mail: a log line (with details) and a resolved disk alert.
    fn mail_context() -> serde_json::Value {
        serde_json::json!({
            "rule": "failed-logins", "status": "firing", "severity": "warning", "count": 2,
            "summary": "2 alerts for host=fileserver (1 firing, 1 resolved)", "source": "(several)",
            "host": "fileserver", "alerter": "FILESERVER", "repeat": false,
            "now": "2026-11-26T10:00:11.5+00:00",
            "alerts": [
                {"status": "firing", "source": "auth", "host": "fileserver", "severity": "warning",
                 "summary": "failed ssh login as root from 203.0.113.9",
                 "details": "Nov 26 10:00:01 fs sshd[812]: Failed password for root from 203.0.113.9 port 22 ssh2",
                 "labels": {"file": "/var/log/auth.log", "ip": "203.0.113.9", "user": "root"},
                 "since": "2026-11-26T10:00:01.25Z", "count": 3},
                {"status": "resolved", "source": "disks", "host": "fileserver", "severity": "critical",
                 "summary": "/var is 70% full", "labels": {"mount": "/var"},
                 "since": "2026-11-26T09:00:00Z", "count": 1},
            ],
        })
    }

    #[test]
    fn the_default_mail_says_what_where_when_and_which_rule() {
        let t = Templates::default();
        let (text, err) = t.render(&[], default_template("email", Part::Text), &mail_context());
        assert_eq!(err, None);
        let expected = "\
2 alerts for host=fileserver (1 firing, 1 resolved)

WARNING: failed ssh login as root from 203.0.113.9

    Nov 26 10:00:01 fs sshd[812]: Failed password for root from 203.0.113.9 port 22 ssh2

  host:      fileserver
  source:    auth
  severity:  warning
  started:   2026-11-26 10:00:01 UTC
  events:    3 since the last notification
  labels:    file=/var/log/auth.log, ip=203.0.113.9, user=root

RESOLVED: /var is 70% full
  host:      fileserver
  source:    disks
  severity:  critical
  started:   2026-11-26 09:00:00 UTC
  resolved:  by 2026-11-26 10:00:11 UTC
  labels:    mount=/var

-- 
Rule `failed-logins` of alerter on FILESERVER, 2026-11-26 10:00:11 UTC.";
        assert_eq!(text, expected, "\n{text}");

        let (html, err) = t.render(&[], default_template("email", Part::Html), &mail_context());
        assert_eq!(err, None);
        for part in [
            "<pre>Nov 26 10:00:01 fs sshd[812]: Failed password for root from 203.0.113.9 port 22 ssh2</pre>",
            "<td>fileserver</td>",
            "<td>2026-11-26 10:00:01 UTC</td>",
            "ip=203.0.113.9<br>",
            "<td>by 2026-11-26 10:00:11 UTC</td>",
            "<code>failed-logins</code>",
        ] {
            assert!(html.contains(part), "{part} in\n{html}");
        }
    }

    #[test]
    fn popups_and_log_lines_stay_short() {
        let t = Templates::default();
        let (popup, _) = t.render(&[], default_template("messenger", Part::Text), &mail_context());
        assert!(!popup.contains("sshd[812]"), "no details in a popup: {popup}");
        assert!(popup.len() < 200, "{popup}");
        let (line, _) = t.render(&[], default_template("log", Part::Text), &mail_context());
        assert_eq!(line.lines().count(), 2, "one line per alert: {line}");
    }

    #[test]
    fn datetime_filter() {
        let env = environment();
        let ctx = minijinja::Value::from(minijinja::value::Serde(serde_json::json!({"t": "2026-11-26T20:00:00.5Z"})));
        let r = |src: &str| env.render_str(src, &ctx);
        assert_eq!(r("{{ t|datetime }}").unwrap(), "2026-11-26 20:00:00 UTC");
        assert_eq!(r("{{ t|datetime('%H:%M', tz='Europe/Berlin') }}").unwrap(), "21:00");
        assert_eq!(r("{{ 'soon'|datetime }}").unwrap(), "soon", "not a time: left alone");
        assert!(r("{{ t|datetime('%Q') }}").unwrap_err().to_string().contains("strftime"));
        assert!(r("{{ t|datetime(tz='Mars/Olympus') }}").unwrap_err().to_string().contains("time zone"));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = environment().template_from_str("ok\n{% if %}").map(drop).unwrap_err();
        assert!(describe_error(&e).contains("line 2"), "{}", describe_error(&e));
    }
}
