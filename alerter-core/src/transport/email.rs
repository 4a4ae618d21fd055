//! The `email` transport: one mail per notification, over SMTP with lettre
//! (rustls; no OpenSSL), through a pool of connections.
//!
//! A notification for several people is one mail to all of them; grouped
//! alerts are listed in one mail. Message-ID and Date come from the
//! notification, which the outbox keeps, so a retried delivery is the same
//! mail to the receiving side, not a new one. SMTP 4xx and connection
//! problems are transient; 5xx is permanent.
//!
//! The pool is ours, around lettre's `AsyncSmtpConnection`, because
//! lettre 0.11.23 (the newest release) opens its sockets without
//! TCP_NODELAY: it writes a mail and its terminating `.` in two writes, so
//! Nagle's algorithm holds the `.` until the server's delayed ACK, 40 ms
//! per mail on Linux (docs/benchmarks.md). We open the socket ourselves,
//! set TCP_NODELAY, and hand it to lettre for the SMTP dialogue. Implicit
//! TLS (`tls: tls`, port 465) still goes through lettre's own connect,
//! because lettre does not expose its TLS setup for a socket we opened; it
//! keeps the 40 ms until lettre releases its fix.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Mailboxes, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::sync::Semaphore;

use super::{BoxFuture, Delivered, Transport, TransportError};
use crate::config::model::{EmailConfig, EmailTls};
use crate::notify::Notification;

/// Whether a relay host is this machine (where unencrypted SMTP is allowed).
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads a secret from a `*_file`, checked as in [`crate::files`].
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    crate::files::read_secret(path).map_err(|e| e.to_string())
}

/// Checks an email transport's settings; each problem with the key it is about.
/// Mail keeps: retry for a day, with as many in flight as connections.
pub fn retry(c: &EmailConfig) -> super::RetryPolicy {
    super::RetryPolicy {
        initial: std::time::Duration::from_secs(5),
        max: std::time::Duration::from_secs(600),
        max_age: std::time::Duration::from_secs(24 * 3600),
        concurrency: c.pool.unwrap_or(4).max(1) as usize,
        poll: super::POLL,
    }
}

/// Checks the settings beyond their shape, as (key, problem).
pub fn check(c: &EmailConfig) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if c.tls == Some(EmailTls::None) && !is_loopback(&c.relay) {
        problems.push((
            "tls",
            format!(
                "`tls: none` would send alerts and passwords in clear text to {}; it is allowed only to a relay on this machine (localhost, 127.0.0.1, ::1)",
                c.relay
            ),
        ));
    }
    if let Err(e) = c.from.parse::<Mailbox>() {
        problems.push((
            "from",
            format!("`{}` is not a mail address ({e}); write e.g. `Alerter <alerter@example.org>`", c.from),
        ));
    }
    match (&c.username, &c.password_file) {
        (Some(_), None) => problems.push(("username", "a `username` needs a `password_file`".into())),
        (None, Some(_)) => problems.push(("password_file", "a `password_file` needs a `username`".into())),
        (Some(_), Some(p)) => {
            if let Err(e) = read_secret_file(p) {
                problems.push(("password_file", e));
            }
        }
        (None, None) => {}
    }
    if let Some(ca) = &c.ca_file {
        match std::fs::read(ca) {
            Ok(pem) => {
                if Certificate::from_pem(&pem).is_err() {
                    problems.push(("ca_file", format!("{} is not a PEM certificate", ca.display())));
                }
            }
            Err(e) => problems.push(("ca_file", format!("cannot read {}: {e}", ca.display()))),
        }
    }
    problems
}

/// How to reach the relay; see [`Pool::connect`].
struct Relay {
    host: String,
    port: u16,
    /// `None` for `tls: none`.
    tls: Option<(EmailTls, TlsParameters)>,
    credentials: Option<Credentials>,
    hello: ClientId,
    /// For connecting and for each whole SMTP transaction.
    timeout: Duration,
}

/// Open SMTP connections, reused across mails when `pool` > 0.
struct Pool {
    relay: Relay,
    /// At most this many connections at once (`pool`, or 1 when 0).
    slots: Semaphore,
    /// Whether to keep connections open between mails.
    keep: bool,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

/// Idle connections older than this are closed rather than reused: relays
/// drop idle clients after a few minutes (Postfix: 300 s).
const MAX_IDLE: Duration = Duration::from_secs(60);
/// A connection idle longer than this is checked with NOOP before use, so a
/// relay that closed it does not cost a failed attempt.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);

impl Pool {
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let r = &self.relay;
        let mut conn = match &r.tls {
            Some((EmailTls::Tls, params)) => {
                AsyncSmtpConnection::connect_tokio1(
                    (r.host.as_str(), r.port),
                    Some(r.timeout),
                    &r.hello,
                    Some(params.clone()),
                    None,
                )
                .await?
            }
            _ => {
                let tcp = tokio::time::timeout(r.timeout, tokio::net::TcpStream::connect((r.host.as_str(), r.port)))
                    .await
                    .map_err(|_| SendError::Timeout(r.timeout))?
                    .map_err(SendError::Connect)?;
                // The reason this pool exists; see the module docs.
                tcp.set_nodelay(true).map_err(SendError::Connect)?;
                let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &r.hello).await?;
                if let Some((_, params)) = &r.tls {
                    conn.starttls(params.clone(), &r.hello).await?;
                }
                conn
            }
        };
        if let Some(creds) = &r.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], creds).await?;
        }
        Ok(conn)
    }

    /// A pooled connection that still works, if any.
    async fn checkout(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut conn, since) = self.idle.lock().expect("pool lock").pop()?;
            let idle = since.elapsed();
            if idle > MAX_IDLE {
                conn.abort().await;
                continue;
            }
            if idle <= CHECK_AFTER_IDLE || conn.test_connected().await {
                return Some(conn);
            }
            conn.abort().await;
        }
    }

    async fn send(
        &self,
        envelope: &lettre::address::Envelope,
        mail: &[u8],
    ) -> Result<lettre::transport::smtp::response::Response, SendError> {
        let _slot = self.slots.acquire().await.expect("the pool's semaphore is never closed");
        let deadline = self.relay.timeout;
        let attempt = async {
            let mut conn = match self.checkout().await {
                Some(c) => c,
                None => self.connect().await?,
            };
            let result = conn.send(envelope, mail).await;
            if self.keep && !conn.has_broken() {
                self.idle.lock().expect("pool lock").push((conn, Instant::now()));
            } else if !conn.has_broken() {
                let _ = conn.quit().await;
            }
            Ok::<_, SendError>(result?)
        };
        match tokio::time::timeout(deadline, attempt).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout(deadline)),
        }
    }
}

/// Why a mail was not accepted.
enum SendError {
    Smtp(lettre::transport::smtp::Error),
    /// Opening the TCP connection failed (lettre takes the socket from us).
    Connect(std::io::Error),
    Timeout(Duration),
}

impl From<lettre::transport::smtp::Error> for SendError {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        SendError::Smtp(e)
    }
}

/// See the module docs.
pub struct EmailTransport {
    pool: Pool,
    from: Mailbox,
    /// For Message-IDs: the sender's domain.
    domain: String,
}

impl std::fmt::Debug for EmailTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailTransport").field("from", &self.from.to_string()).finish_non_exhaustive()
    }
}

impl EmailTransport {
    pub fn new(c: &EmailConfig) -> Result<EmailTransport, String> {
        if let Some((_, problem)) = check(c).into_iter().next() {
            return Err(problem);
        }
        let from: Mailbox = c.from.parse().map_err(|e| format!("`from`: {e}"))?;
        let domain = from.email.domain().to_string();
        let tls = c.tls.unwrap_or(EmailTls::Starttls);
        let port = c.port.unwrap_or(match tls {
            EmailTls::Starttls => 587,
            EmailTls::Tls => 465,
            EmailTls::None => 25,
        });
        let tls = match tls {
            EmailTls::None => None,
            mode => {
                let mut params = TlsParameters::builder(c.relay.clone());
                if let Some(ca) = &c.ca_file {
                    let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
                    let cert = Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", ca.display()))?;
                    params = params.add_root_certificate(cert);
                }
                Some((mode, params.build_rustls().map_err(|e| format!("TLS setup: {e}"))?))
            }
        };
        let credentials = match (&c.username, &c.password_file) {
            (Some(user), Some(pw)) => Some(Credentials::new(user.clone(), read_secret_file(pw)?)),
            _ => None,
        };
        let pool = c.pool.unwrap_or(4);
        let relay = Relay {
            host: c.relay.clone(),
            port,
            tls,
            credentials,
            hello: ClientId::default(),
            timeout: c.timeout.as_ref().map_or(Duration::from_secs(30), |t| t.value),
        };
        let pool =
            Pool { relay, slots: Semaphore::new(pool.max(1) as usize), keep: pool > 0, idle: Mutex::new(Vec::new()) };
        Ok(EmailTransport { pool, from, domain })
    }

    /// The mail for a notification (public for tests and the benchmark).
    pub fn message(&self, n: &Notification) -> Result<Message, TransportError> {
        let mut to = Mailboxes::new();
        for r in &n.recipients {
            let Some(addr) = &r.email else {
                return Err(TransportError::permanent(format!("recipient `{}` has no email address", r.id)));
            };
            let mailbox: Mailbox = match &r.name {
                Some(name) => format!("{name} <{addr}>").parse(),
                None => addr.parse(),
            }
            .map_err(|e| TransportError::permanent(format!("`{addr}` is not a mail address: {e}")))?;
            to.push(mailbox);
        }
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(n.title.lines().next().unwrap_or_default())
            .date(n.created_at.into())
            .message_id(Some(format!("<{}.{}@{}>", n.id, n.created_at.timestamp_millis(), self.domain)))
            .header(XAlerter(format!("rule={}; severity={}; status={}", n.rule, n.severity, n.status)));
        for m in to {
            b = b.to(m);
        }
        let text = SinglePart::builder().header(ContentType::TEXT_PLAIN).body(format!("{}\n", n.text.trim_end()));
        let built = match &n.html {
            Some(html) => b.multipart(
                MultiPart::alternative()
                    .singlepart(text)
                    .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(html.clone())),
            ),
            None => b.singlepart(text),
        };
        built.map_err(|e| TransportError::permanent(format!("cannot build the mail: {e}")))
    }
}

/// `X-Alerter: rule=...; severity=...`, for mail filters.
#[derive(Debug, Clone)]
struct XAlerter(String);

impl lettre::message::header::Header for XAlerter {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Alerter")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(XAlerter(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

impl Transport for EmailTransport {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Delivered, TransportError>> {
        Box::pin(async move {
            let message = self.message(n)?;
            let envelope = message.envelope().clone();
            match self.pool.send(&envelope, &message.formatted()).await {
                Ok(resp) => {
                    let text: Vec<&str> = resp.message().collect();
                    Ok(Delivered { reply: Some(format!("{} {}", resp.code(), text.join(" "))) })
                }
                Err(SendError::Timeout(t)) => Err(TransportError::transient(format!(
                    "the mail server did not finish within {}s (`timeout`)",
                    t.as_secs()
                ))),
                Err(SendError::Connect(e)) => Err(TransportError::transient(format!(
                    "cannot connect to {}:{}: {e}",
                    self.pool.relay.host, self.pool.relay.port
                ))),
                Err(SendError::Smtp(e)) => {
                    let code = e.status().map(|c| format!("{c} ")).unwrap_or_default();
                    let msg = format!("{code}{e}");
                    if e.is_permanent() {
                        Err(TransportError::permanent(msg))
                    } else if e.is_client() {
                        // What this relay cannot do (no AUTH mechanism in
                        // common, no STARTTLS, no SMTPUTF8): retrying will
                        // not change it.
                        Err(TransportError::permanent(msg))
                    } else {
                        Err(TransportError::transient(msg))
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(relay: &str, tls: Option<EmailTls>) -> EmailConfig {
        EmailConfig {
            relay: relay.into(),
            port: None,
            tls,
            username: None,
            password_file: None,
            from: "Alerter <alerter@example.org>".into(),
            ca_file: None,
            timeout: None,
            pool: None,
            html: None,
            retry: None,
            template: None,
            budget: None,
        }
    }

    #[test]
    fn clear_text_only_to_loopback() {
        assert!(check(&cfg("127.0.0.1", Some(EmailTls::None))).is_empty());
        assert!(check(&cfg("localhost", Some(EmailTls::None))).is_empty());
        assert!(check(&cfg("::1", Some(EmailTls::None))).is_empty());
        let p = check(&cfg("mail.example.org", Some(EmailTls::None)));
        assert_eq!(p[0].0, "tls");
        assert!(p[0].1.contains("clear text"));
        assert!(check(&cfg("mail.example.org", None)).is_empty());
    }

    #[test]
    fn credentials_come_in_pairs_from_private_files() {
        let mut c = cfg("mail.example.org", None);
        c.username = Some("alerter".into());
        assert_eq!(check(&c)[0].0, "username");
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        c.password_file = Some(pw.clone());
        assert!(check(&c)[0].1.contains("can be read or changed by every user"));
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check(&c).is_empty());
        assert_eq!(read_secret_file(&pw).unwrap(), "secret");
        c.from = "not an address".into();
        assert_eq!(check(&c)[0].0, "from");
    }
}
