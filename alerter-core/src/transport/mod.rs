//! Transports: the trait every delivery channel implements, its error type,
//! and building transports from the config.
//!
//! A transport delivers one [`Notification`] to its recipients. It knows
//! nothing of rules or state; retries are the caller's business, guided by
//! whether an error is [`TransportError::Transient`] (try again later) or
//! [`TransportError::Permanent`] (give up and record why).

pub mod alertmanager;
pub mod email;
pub mod http;
pub mod log;
pub mod messenger;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::config::LoadOptions;
use crate::config::diag::YamlPath;
use crate::config::model::TransportConfig;
use crate::notify::Notification;
use crate::plugin::PluginRegistry;

/// A boxed future, so transports can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Worth retrying: a timeout, a refused connection, a full mailbox.
    #[error("temporary delivery failure: {message}")]
    Transient {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Retrying will not help: an unknown recipient, a rejected message.
    #[error("permanent delivery failure: {message}")]
    Permanent {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Every recipient that failed is nowhere to be found (not logged on,
    /// machine off): worth looking for them again soon, and, after a
    /// while, reaching them another way (see [`crate::notify::Offline`]).
    #[error("{message}")]
    Absent {
        message: String,
        /// The ids of the recipients who are nowhere.
        recipients: Vec<String>,
    },
}

impl TransportError {
    pub fn transient(message: impl Into<String>) -> TransportError {
        TransportError::Transient { message: message.into(), source: None }
    }

    pub fn permanent(message: impl Into<String>) -> TransportError {
        TransportError::Permanent { message: message.into(), source: None }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, TransportError::Transient { .. } | TransportError::Absent { .. })
    }
}

/// What a successful delivery reports back (for the audit trail).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The far side's answer, if it gave one (an SMTP reply, say).
    pub reply: Option<String>,
}

/// A delivery channel.
pub trait Transport: Send + Sync {
    /// The config `type` of this transport.
    fn kind(&self) -> &'static str;
    /// Delivers one notification to all of its recipients.
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Delivered, TransportError>>;
    /// An Alertmanager transport, whose firing alerts the daemon re-sends.
    fn as_alertmanager(&self) -> Option<&alertmanager::AlertmanagerTransport> {
        None
    }
}

/// What building a transport needs to know about the alerter.
#[derive(Debug, Clone)]
pub struct BuildCx<'a> {
    pub alerter_name: &'a str,
    pub workgroup: &'a str,
    /// The secret of acknowledgement tokens, for a messenger transport
    /// with `acks`.
    pub ack_secret: Option<&'a Arc<crate::acks::AckSecret>>,
}

/// Builds a transport from its config. Opens files but connects nowhere.
pub fn build(cfg: &TransportConfig, cx: &BuildCx<'_>) -> Result<Arc<dyn Transport>, TransportError> {
    match cfg {
        TransportConfig::Log { path, .. } => Ok(Arc::new(log::LogTransport::open(path)?)),
        TransportConfig::Messenger(m) => {
            let mut opts = messenger::MessengerOptions::from_config(m, cx.alerter_name, cx.workgroup)
                .map_err(TransportError::permanent)?;
            opts.acks = match (&m.acks, cx.ack_secret) {
                (Some(a), Some(secret)) => Some(crate::acks::Footer { secret: secret.clone(), port: a.port }),
                _ => None,
            };
            Ok(Arc::new(messenger::MessengerTransport::new(opts)))
        }
        TransportConfig::Email(e) => Ok(Arc::new(email::EmailTransport::new(e).map_err(TransportError::permanent)?)),
        TransportConfig::Webhook(w) => {
            Ok(Arc::new(webhook::WebhookTransport::new(w).map_err(TransportError::permanent)?))
        }
        TransportConfig::Alertmanager(a) => Ok(Arc::new(
            alertmanager::AlertmanagerTransport::new(a, cx.alerter_name).map_err(TransportError::permanent)?,
        )),
    }
}

/// Checks a transport's settings beyond their shape (files readable,
/// names and addresses valid). Passed to config loading as
/// [`LoadOptions::check_transport`].
pub fn check_settings(cfg: &TransportConfig) -> Vec<(YamlPath, String)> {
    match cfg {
        TransportConfig::Log { .. } => Vec::new(),
        TransportConfig::Messenger(m) => messenger::check(m),
        TransportConfig::Email(e) => email::check(e).into_iter().map(|(k, p)| (YamlPath::root().key(k), p)).collect(),
        TransportConfig::Webhook(w) => webhook::check(w),
        TransportConfig::Alertmanager(a) => alertmanager::check(a),
    }
}

/// Options for loading a config with the transports' checks.
pub fn load_options(plugins: &PluginRegistry) -> LoadOptions<'_> {
    LoadOptions { plugins, env: None, check_transport: check_settings }
}

/// How a transport's deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Give up (and raise an `alerter` event) on a notification this old.
    pub max_age: Duration,
    /// Notifications in flight at once.
    pub concurrency: usize,
    /// The longest wait between tries while recipients are nowhere to be
    /// found: they may appear any time, and are looked for at least this
    /// often instead of ever more rarely.
    pub poll: Duration,
}

/// How often recipients who are nowhere are looked for, by default.
pub const POLL: Duration = Duration::from_secs(30);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(600),
            max_age: Duration::from_secs(24 * 3600),
            concurrency: 1,
            poll: POLL,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempts + 1`: doubling from `initial`,
    /// capped at `max`, times a random factor between 0.5 and 1.5 so that
    /// many failed notifications do not retry in lockstep.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let base = self.initial.saturating_mul(1u32 << attempts.saturating_sub(1).min(20)).min(self.max);
        base.mul_f64(0.5 + fastrand::f64())
    }
}

/// How a configured transport's deliveries are retried: its kind's
/// defaults, with what the config sets.
pub fn retry_policy(cfg: &TransportConfig) -> RetryPolicy {
    let (retry, defaults) = match cfg {
        TransportConfig::Log { .. } => (None, log::RETRY),
        TransportConfig::Messenger(m) => {
            let poll = m.offline.as_ref().and_then(|o| o.poll.as_ref()).map_or(POLL, |p| p.value);
            (m.retry.as_ref(), RetryPolicy { poll, ..messenger::RETRY })
        }
        TransportConfig::Email(e) => (e.retry.as_ref(), email::retry(e)),
        TransportConfig::Webhook(w) => (w.retry.as_ref(), webhook::retry(w)),
        TransportConfig::Alertmanager(a) => (a.retry.as_ref(), alertmanager::retry(a)),
    };
    let Some(r) = retry else { return defaults };
    RetryPolicy {
        initial: r.initial.as_ref().map_or(defaults.initial, |d| d.value),
        max: r.max.as_ref().map_or(defaults.max, |d| d.value),
        max_age: r.max_age.as_ref().map_or(defaults.max_age, |d| d.value),
        concurrency: defaults.concurrency,
        poll: defaults.poll,
    }
}
