//! What the HTTP transports (`webhook`, `alertmanager`) share: the client
//! (reqwest over rustls with ring, the public roots plus an optional CA
//! file), the rule on plain HTTP, and turning an answer into a delivery
//! outcome.
//!
//! An answer is read up to [`MAX_REPLY`] bytes and under the request's
//! deadline: a hostile or broken server can neither hold a worker nor
//! fill memory. 2xx is delivered; 408, 429 and 5xx (and no answer at all)
//! are transient; any other status is permanent, since sending the same
//! request again will get the same refusal. The reply (status and the
//! start of the body, control characters made visible) goes into history
//! either way.

use std::path::Path;
use std::time::Duration;

use super::{Delivered, TransportError};
use crate::config::diag::YamlPath;

/// The most of an answer's body that is read.
pub const MAX_REPLY: usize = 64 * 1024;

/// The most of an answer's body that is kept in history.
const REPLY_EXCERPT: usize = 300;

/// Checks a URL and whether plain HTTP may go to it: only to this machine
/// unless `insecure_http`, since alerts (and tokens) would cross the
/// network in clear text.
pub fn check_url(url: &str, insecure_http: bool) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    match u.scheme() {
        "https" => {}
        "http" if insecure_http || is_loopback(&u) => {}
        "http" => {
            return Err(format!(
                "`{url}` would send alerts in clear text to another machine; use https://, or set `insecure_http: true` on a network you trust"
            ));
        }
        other => return Err(format!("`{url}`: the scheme `{other}` is not http or https")),
    }
    if u.host().is_none() {
        return Err(format!("`{url}` names no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "`{url}` carries a user or password; give a `token_file` instead, so it stays out of the config"
        ));
    }
    Ok(u)
}

fn is_loopback(u: &reqwest::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Builds the client: TLS with the public roots and the certificates of
/// `ca_file`, `timeout` for each whole request, no redirects (a webhook
/// that moved is a configuration to fix, not a hop to follow blindly with
/// the token), no proxy from the environment.
pub fn client(ca_file: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, String> {
    let pem = match ca_file {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?),
        None => None,
    };
    let tls = alerter_api::client::client_tls(pem.as_deref(), true)
        .map_err(|e| format!("{}: {e}", ca_file.map_or(String::new(), |p| p.display().to_string())))?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("alerter/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// Reads a bearer token from a `token_file`, checked as every secret.
pub fn read_token(path: &Path) -> Result<String, String> {
    let t = crate::files::read_secret(path).map_err(|e| e.to_string())?;
    let t = t.trim().to_string();
    if t.is_empty() || t.chars().any(|c| c.is_control()) {
        return Err(format!("{}: a token is one line of printable characters", path.display()));
    }
    Ok(t)
}

/// Checks a transport's `token_file` and `ca_file`, as (key, problem).
pub fn check_files(token_file: Option<&Path>, ca_file: Option<&Path>) -> Vec<(YamlPath, String)> {
    let mut problems = Vec::new();
    if let Some(p) = token_file
        && let Err(e) = read_token(p)
    {
        problems.push((YamlPath::root().key("token_file"), e));
    }
    if let Err(e) = client(ca_file, Duration::from_secs(1)) {
        problems.push((YamlPath::root().key("ca_file"), e));
    }
    problems
}

/// Sends a request and judges the answer (see the module header).
pub async fn send(req: reqwest::RequestBuilder) -> Result<Delivered, TransportError> {
    let mut resp = req.send().await.map_err(|e| TransportError::transient(describe_error(&e)))?;
    let status = resp.status();
    let mut body = Vec::new();
    // Read what fits; the rest of a long answer is not waited for.
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                let room = MAX_REPLY - body.len();
                body.extend_from_slice(&c[..c.len().min(room)]);
                if body.len() >= MAX_REPLY {
                    break;
                }
            }
            Ok(None) => break,
            // The status came; a body cut short does not change it.
            Err(_) => break,
        }
    }
    let reply = describe_reply(status, &body);
    match status.as_u16() {
        200..=299 => Ok(Delivered { reply: Some(reply) }),
        408 | 429 | 500..=599 => Err(TransportError::transient(reply)),
        _ => Err(TransportError::permanent(reply)),
    }
}

/// `HTTP 503 Service Unavailable: <the start of the body>`, on one line,
/// with control characters made visible.
pub fn describe_reply(status: reqwest::StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut out = format!("HTTP {status}");
    if !text.is_empty() {
        let cut: String = text.chars().take(REPLY_EXCERPT).collect();
        let flat = cut.replace(['\n', '\r', '\t'], " ");
        out.push_str(": ");
        out.push_str(&crate::visible::visible(&flat));
        if cut.len() < text.len() {
            out.push('…');
        }
    }
    out
}

/// A transport error in words: what failed, without reqwest's nesting.
fn describe_error(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    let mut msg = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_this_machine_unless_allowed() {
        assert!(check_url("http://127.0.0.1:9093", false).is_ok());
        assert!(check_url("http://localhost/x", false).is_ok());
        assert!(check_url("http://[::1]:80/", false).is_ok());
        assert!(check_url("https://ntfy.example.org/alerts", false).is_ok());
        let e = check_url("http://10.0.0.5:9093", false).unwrap_err();
        assert!(e.contains("insecure_http"), "{e}");
        assert!(check_url("http://10.0.0.5:9093", true).is_ok());
        assert!(check_url("ftp://x/", true).unwrap_err().contains("scheme"));
        assert!(check_url("not a url", true).is_err());
        assert!(check_url("https://user:pw@x/", true).unwrap_err().contains("token_file"));
    }

    #[test]
    fn replies_are_one_visible_line() {
        let r = describe_reply(reqwest::StatusCode::SERVICE_UNAVAILABLE, b"down\r\n\x1b[2Jfor maintenance");
        assert_eq!(r, "HTTP 503 Service Unavailable: down  ^[[2Jfor maintenance");
        let long = vec![b'a'; 1000];
        let r = describe_reply(reqwest::StatusCode::OK, &long);
        assert!(r.ends_with('…') && r.len() < 400, "{r}");
        assert_eq!(describe_reply(reqwest::StatusCode::NO_CONTENT, b""), "HTTP 204 No Content");
    }
}
