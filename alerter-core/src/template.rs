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
    ("builtin/messenger/text", MESSENGER_TEXT),
    (NOTICE_FALLBACK, "{{ name }}"),
];

/// Mail's HTML alternative: the alerts as a table.
const DEFAULT_HTML: &str = "\
<html><body>
<h3>{{ summary }}</h3>
<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">
<tr><th>status</th><th>severity</th><th>summary</th><th>source</th><th>host</th><th>since</th></tr>
{% for a in alerts %}<tr><td>{{ a.status }}</td><td>{{ a.severity }}</td><td>{{ a.summary }}</td><td>{{ a.source }}</td><td>{{ a.host }}</td><td>{{ a.since }}</td></tr>
{% endfor %}</table>
<p>rule {{ rule }}, from {{ alerter }}</p>
</body></html>";

/// A popup: what and where first, then the alerts; short, since the
/// protocol carries 652 bytes at most.
const MESSENGER_TEXT: &str = "\
{% if status == 'resolved' %}RESOLVED{% else %}{{ severity|upper }}{% endif %}: {{ summary }}
{% if alerts|length > 1 %}{% for a in alerts %}- {{ a.summary }} ({{ a.host }})
{% endfor %}{% else %}{{ source }} on {{ host }}{% endif %}";

const DEFAULT_TITLE: &str =
    "{% if status == 'resolved' %}RESOLVED{% else %}{{ severity|upper }}{% endif %}: {{ summary }}";

const DEFAULT_TEXT: &str = "\
{% for a in alerts -%}
{% if a.status == 'resolved' %}RESOLVED{% else %}{{ a.severity|upper }}{% endif %} {{ a.summary }} ({{ a.source }} on {{ a.host }})
{% endfor %}";

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
    // HTML parts escape what they insert; everything else is plain text.
    env.set_auto_escape_callback(|name| {
        if name.ends_with("/html") { minijinja::AutoEscape::Html } else { minijinja::AutoEscape::None }
    });
    env
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
        let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
        let mut error = None;
        for name in names {
            if let Ok(t) = self.env.get_template(name) {
                match t.render(&ctx) {
                    Ok(s) => return (s.trim_end().to_string(), error),
                    Err(e) => {
                        error = Some(format!("template `{name}`: {}", describe_error(&e)));
                    }
                }
            }
        }
        let rendered = match self.env.get_template(fallback) {
            Ok(t) => t.render(&ctx).unwrap_or_else(|e| format!("(template error: {})", describe_error(&e))),
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

    #[test]
    fn syntax_errors_name_the_line() {
        let e = environment().template_from_str("ok\n{% if %}").map(drop).unwrap_err();
        assert!(describe_error(&e).contains("line 2"), "{}", describe_error(&e));
    }
}
