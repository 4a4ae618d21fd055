//! alerter-api: the control API of a running daemon, and the client of it
//! that the command line uses.
//!
//! The daemon answers [`Call`]s: the server turns HTTP requests into calls
//! (after deciding who the caller is and whether their scope allows the
//! call, see [`access`]) and hands them over a channel; whoever holds the
//! other end (the daemon's engine loop) answers each through its reply
//! channel. This crate knows nothing of the engine or the store.
#![forbid(unsafe_code)]

pub mod access;
pub mod client;
mod error;
pub mod openapi;
pub mod server;
pub mod types;

pub use error::ApiError;
pub use types::{Caller, Need, Scope};

use tokio::sync::oneshot;

/// Where a call's answer goes.
pub type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// One request to the daemon, with the channel its answer goes back on.
#[derive(Debug)]
pub enum Call {
    Status(Reply<types::Status>),
    Silences {
        query: types::SilenceQuery,
        reply: Reply<Vec<types::Silence>>,
    },
    AddSilence {
        silence: types::SilenceRequest,
        by: Caller,
        reply: Reply<types::Silence>,
    },
    ExpireSilence {
        id: String,
        by: Caller,
        reply: Reply<types::Silence>,
    },
    Alerts {
        query: types::AlertsQuery,
        reply: Reply<types::AlertsPage>,
    },
    Ack {
        ack: types::AckRequest,
        by: Caller,
        reply: Reply<types::AckResult>,
    },
    Ingest {
        events: Vec<types::EventIn>,
        by: Caller,
        reply: Reply<types::Ingested>,
    },
    /// An Alertmanager webhook notification for the `alertmanager`
    /// source `source`, as received (bounded, not yet parsed: the source's
    /// settings decide what it becomes).
    Alertmanager {
        source: String,
        body: Vec<u8>,
        by: Caller,
        reply: Reply<types::Ingested>,
    },
    Notices(Reply<Vec<types::Notice>>),
    /// Read the config again (as SIGHUP does) and answer once it is
    /// applied or refused.
    Reload {
        by: Caller,
        reply: Reply<types::Reloaded>,
    },
    Test {
        test: types::TestRequest,
        by: Caller,
        reply: Reply<types::TestQueued>,
    },
    History {
        query: types::HistoryQuery,
        reply: Reply<types::HistoryPage>,
    },
    AddNotice {
        notice: types::NoticeRequest,
        by: Caller,
        reply: Reply<types::Notice>,
    },
    CancelNotice {
        id: String,
        by: Caller,
        reply: Reply<types::Notice>,
    },
    /// What the name service finds on the LAN (takes a second or two).
    Network(Reply<types::Network>),
    /// Subscribers, groups and transports, for forms.
    Directory(Reply<types::Directory>),
    /// What a notice would send, without setting it.
    PreviewNotice {
        notice: types::NoticeRequest,
        reply: Reply<types::NoticePreview>,
    },
    /// The Prometheus exposition.
    Metrics(Reply<String>),
    /// Whether the daemon is ready (started, its store writing); `Err` says why not.
    Ready(Reply<()>),
}

/// The paths of the API, shared by server and client.
pub mod paths {
    pub const STATUS: &str = "/api/v1/status";
    pub const SILENCES: &str = "/api/v1/silences";
    pub const ALERTS: &str = "/api/v1/alerts";
    pub const ACKS: &str = "/api/v1/acks";
    pub const EVENTS: &str = "/api/v1/events";
    /// Followed by the source's id: `/api/v1/alertmanager/am`.
    pub const ALERTMANAGER: &str = "/api/v1/alertmanager";
    pub const NOTICES: &str = "/api/v1/notices";
    pub const NOTICE_PREVIEW: &str = "/api/v1/notices/preview";
    pub const NETWORK: &str = "/api/v1/network";
    pub const DIRECTORY: &str = "/api/v1/directory";
    pub const HISTORY: &str = "/api/v1/history";
    pub const RELOAD: &str = "/api/v1/reload";
    pub const TEST: &str = "/api/v1/test";
    pub const OPENAPI: &str = "/api/v1/openapi.json";
    pub const METRICS: &str = "/metrics";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
}
