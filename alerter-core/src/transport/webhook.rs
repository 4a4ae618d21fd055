//! The `webhook` transport: one HTTP request per notification, its body
//! and headers rendered from templates at send time.
//!
//! The body is a minijinja template over the notification (the same fields
//! the log transport writes), in one of three formats whose name decides
//! how inserted values are escaped (see [`crate::template::environment`]):
//! `json` inserts each value as a JSON value, `form` percent-encodes it,
//! `text` inserts it as it is. Without a `body`, the notification itself
//! goes as JSON. Header values are templates too, rendered on one line
//! (a value's newline is shown as `^J`, so it can never start a header).
//! Answers are judged by [`super::http::send`].

use std::sync::Arc;
use std::time::Duration;

use minijinja::Environment;
use reqwest::header::{HeaderName, HeaderValue};

use super::http;
use super::{BoxFuture, Delivered, Transport, TransportError};
use crate::config::diag::YamlPath;
use crate::config::model::{WebhookConfig, WebhookFormat, WebhookMethod};
use crate::notify::Notification;

/// The template names: their endings pick the escaping.
const BODY_JSON: &str = "webhook/body/json";
const BODY_FORM: &str = "webhook/body/form";
const BODY_TEXT: &str = "webhook/body/text";

fn body_name(format: WebhookFormat) -> &'static str {
    match format {
        WebhookFormat::Json => BODY_JSON,
        WebhookFormat::Form => BODY_FORM,
        WebhookFormat::Text => BODY_TEXT,
    }
}

fn content_type(format: WebhookFormat) -> &'static str {
    match format {
        WebhookFormat::Json => "application/json",
        WebhookFormat::Form => "application/x-www-form-urlencoded",
        WebhookFormat::Text => "text/plain; charset=utf-8",
    }
}

/// Webhooks retry like mail: from 5 s, at most 10 min apart, for a day.
pub fn retry(c: &WebhookConfig) -> super::RetryPolicy {
    super::RetryPolicy {
        concurrency: c.concurrency.unwrap_or(4).clamp(1, 64) as usize,
        ..super::RetryPolicy::default()
    }
}

/// Checks the settings beyond their shape, as (key, problem).
pub fn check(c: &WebhookConfig) -> Vec<(YamlPath, String)> {
    let root = YamlPath::root();
    let mut problems = Vec::new();
    if let Err(e) = http::check_url(&c.url, c.insecure_http.unwrap_or(false)) {
        problems.push((root.key("url"), e));
    }
    if c.format == Some(WebhookFormat::Form) && c.body.is_none() {
        problems.push((root.key("format"), "a `form` webhook needs a `body`, e.g. `message={{ text }}`".into()));
    }
    for name in c.headers.keys() {
        if let Err(e) = header_name(name) {
            problems.push((root.key("headers").key(name.as_str()), e));
        }
    }
    problems.extend(http::check_files(c.token_file.as_deref(), c.ca_file.as_deref()));
    problems
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    let h = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("`{name}` is not an HTTP header name"))?;
    if h == reqwest::header::CONTENT_LENGTH || h == reqwest::header::HOST || h == reqwest::header::TRANSFER_ENCODING {
        return Err(format!("`{name}` is set by the transport itself"));
    }
    Ok(h)
}

/// A configured webhook.
pub struct WebhookTransport {
    client: reqwest::Client,
    url: reqwest::Url,
    method: reqwest::Method,
    format: WebhookFormat,
    has_body: bool,
    headers: Vec<(HeaderName, String)>,
    token: Option<String>,
    env: Arc<Environment<'static>>,
}

impl WebhookTransport {
    pub fn new(c: &WebhookConfig) -> Result<WebhookTransport, String> {
        let url = http::check_url(&c.url, c.insecure_http.unwrap_or(false))?;
        let timeout = c.timeout.as_ref().map_or(Duration::from_secs(10), |d| d.value);
        let client = http::client(c.ca_file.as_deref(), timeout)?;
        let format = c.format.unwrap_or(WebhookFormat::Json);
        let mut env = crate::template::environment();
        if let Some(body) = &c.body {
            env.add_template_owned(body_name(format), body.raw.clone())
                .map_err(|e| format!("body: {}", crate::template::describe_error(&e)))?;
        }
        let mut headers = Vec::new();
        for (i, (name, value)) in c.headers.iter().enumerate() {
            let template = format!("webhook/header/{i}");
            env.add_template_owned(template.clone(), value.raw.clone())
                .map_err(|e| format!("headers.{name}: {}", crate::template::describe_error(&e)))?;
            headers.push((header_name(name)?, template));
        }
        let token = c.token_file.as_deref().map(http::read_token).transpose()?;
        Ok(WebhookTransport {
            client,
            url,
            method: match c.method.unwrap_or(WebhookMethod::Post) {
                WebhookMethod::Post => reqwest::Method::POST,
                WebhookMethod::Put => reqwest::Method::PUT,
                WebhookMethod::Patch => reqwest::Method::PATCH,
            },
            format,
            has_body: c.body.is_some(),
            headers,
            token,
            env: Arc::new(env),
        })
    }

    /// The body for a notification (public for `alerter send --dry-run`
    /// and tests).
    pub fn body(&self, n: &Notification) -> Result<String, String> {
        if !self.has_body {
            return serde_json::to_string(n).map_err(|e| e.to_string());
        }
        let body = self.render(body_name(self.format), n)?;
        // A receiver would refuse it anyway, with less of a clue why.
        if self.format == WebhookFormat::Json
            && let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&body)
        {
            return Err(format!(
                "the body is not JSON ({e}); values are inserted as JSON values, so write `\"message\": {{{{ text }}}}` without quotes around them"
            ));
        }
        Ok(body)
    }

    fn render(&self, name: &str, n: &Notification) -> Result<String, String> {
        let t = self.env.get_template(name).map_err(|e| e.to_string())?;
        t.render(crate::template::Templates::context_value(n))
            .map_err(|e| format!("the template `{name}` failed: {}", crate::template::describe_error(&e)))
    }

    async fn deliver(&self, n: &Notification) -> Result<Delivered, TransportError> {
        // A template that fails now fails every time: no point retrying.
        let body = self.body(n).map_err(TransportError::permanent)?;
        let mut req = self
            .client
            .request(self.method.clone(), self.url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                content_type(if self.has_body { self.format } else { WebhookFormat::Json }),
            )
            .header("X-Alerter-Notification", n.id.as_str());
        for (name, template) in &self.headers {
            let value = self.render(template, n).map_err(TransportError::permanent)?;
            let value = crate::visible::visible_line(value.trim()).into_owned();
            let value = HeaderValue::from_str(&value).map_err(|_| {
                TransportError::permanent(format!("the header {name} is not a valid header value: {value}"))
            })?;
            req = req.header(name, value);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        http::send(req.body(body)).await
    }
}

impl Transport for WebhookTransport {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Delivered, TransportError>> {
        Box::pin(self.deliver(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification() -> Notification {
        serde_json::from_value(serde_json::json!({
            "id": "1a2b", "created_at": "2026-12-03T10:00:00Z", "rule": "disk", "transport": "hook",
            "status": "firing", "severity": "critical", "title": "CRITICAL: /var is \"full\"",
            "text": "line one\nline two", "recipients": [],
            "alerts": [{"fingerprint": "00000000000000aa", "status": "firing", "source": "disks", "host": "web1",
                        "severity": "critical", "summary": "/var is full", "since": "2026-12-03T09:00:00Z", "count": 1}],
        }))
        .unwrap()
    }

    fn transport(yaml: &str) -> WebhookTransport {
        let c: WebhookConfig = serde_norway::from_str(yaml).unwrap();
        assert!(check(&c).is_empty(), "{:?}", check(&c));
        WebhookTransport::new(&c).unwrap()
    }

    /// The bodies docs/alertmanager.md shows render what their services read.
    #[test]
    fn the_documented_bodies_render_valid_json_and_forms() {
        let n = notification();
        let ntfy = transport(
            r#"{url: "http://127.0.0.1/alerts", body: '{"topic": "alerts", "title": {{ title }}, "message": {{ text }}, "priority": {% if severity == "critical" %}5{% else %}3{% endif %}}'}"#,
        );
        let v: serde_json::Value = serde_json::from_str(&ntfy.body(&n).unwrap()).unwrap();
        assert_eq!(v["title"], "CRITICAL: /var is \"full\"");
        assert_eq!(v["message"], "line one\nline two");
        assert_eq!(v["priority"], 5);
        let slack = transport(r#"{url: "http://127.0.0.1/", body: '{"text": {{ title ~ "\n" ~ text }}}'}"#);
        let v: serde_json::Value = serde_json::from_str(&slack.body(&n).unwrap()).unwrap();
        assert_eq!(v["text"], "CRITICAL: /var is \"full\"\nline one\nline two");
        let form = transport(
            r#"{url: "http://127.0.0.1/", format: form, body: "title={{ title }}&host={{ alerts[0].host }}"}"#,
        );
        assert_eq!(form.body(&n).unwrap(), "title=CRITICAL%3A+%2Fvar+is+%22full%22&host=web1");
        let quoted = transport(r#"{url: "http://127.0.0.1/", body: '{"message": "{{ text }}"}'}"#);
        let e = quoted.body(&n).unwrap_err();
        assert!(e.contains("not JSON") && e.contains("without quotes"), "{e}");
        let default = transport(r#"{url: "http://127.0.0.1/"}"#);
        let v: serde_json::Value = serde_json::from_str(&default.body(&n).unwrap()).unwrap();
        assert_eq!(v["rule"], "disk", "without a body, the notification as JSON");
    }
}
