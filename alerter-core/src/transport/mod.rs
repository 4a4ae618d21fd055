//! Transports: the trait every delivery channel implements, its error type,
//! and building transports from the config.
//!
//! A transport delivers one [`Notification`] to its recipients. It knows
//! nothing of rules or state; retries are the caller's business, guided by
//! whether an error is [`TransportError::Transient`] (try again later) or
//! [`TransportError::Permanent`] (give up and record why).

pub mod email;
pub mod log;
pub mod messenger;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::model::TransportConfig;
use crate::notify::Notification;

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
}

impl TransportError {
    pub fn transient(message: impl Into<String>) -> TransportError {
        TransportError::Transient { message: message.into(), source: None }
    }

    pub fn permanent(message: impl Into<String>) -> TransportError {
        TransportError::Permanent { message: message.into(), source: None }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, TransportError::Transient { .. })
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
}

/// What building a transport needs to know about the alerter.
#[derive(Debug, Clone)]
pub struct BuildCx<'a> {
    pub alerter_name: &'a str,
    pub workgroup: &'a str,
}

/// Builds a transport from its config. Opens files but connects nowhere.
pub fn build(cfg: &TransportConfig, cx: &BuildCx<'_>) -> Result<Arc<dyn Transport>, TransportError> {
    match cfg {
        TransportConfig::Log { path, .. } => Ok(Arc::new(log::LogTransport::open(path)?)),
        TransportConfig::Messenger(m) => {
            let opts = messenger::MessengerOptions::from_config(m, cx.alerter_name, cx.workgroup)
                .map_err(TransportError::permanent)?;
            Ok(Arc::new(messenger::MessengerTransport::new(opts)))
        }
        TransportConfig::Email(e) => Ok(Arc::new(email::EmailTransport::new(e).map_err(TransportError::permanent)?)),
    }
}
