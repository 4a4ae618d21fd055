//! What travels over the API, as serde types: requests, answers and the
//! error body. Server and client share them, and the OpenAPI document is
//! generated from them, so the three cannot disagree.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a caller may do. `read` sees everything; `ingest` only posts
/// events (an Alertmanager webhook, a script); `operate` reads and
/// changes silences, acknowledgements and notices; `admin` does all of
/// that, ingests, and reloads the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Ingest,
    Operate,
    Admin,
}

/// What an endpoint needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Ingest,
    Operate,
    Admin,
}

impl Scope {
    pub fn allows(self, need: Need) -> bool {
        match need {
            Need::Read => matches!(self, Scope::Read | Scope::Operate | Scope::Admin),
            Need::Ingest => matches!(self, Scope::Ingest | Scope::Operate | Scope::Admin),
            Need::Operate => matches!(self, Scope::Operate | Scope::Admin),
            Need::Admin => self == Scope::Admin,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Ingest => "ingest",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        match s {
            "read" => Ok(Scope::Read),
            "ingest" => Ok(Scope::Ingest),
            "operate" => Ok(Scope::Operate),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("`{other}` is not a scope (read, ingest, operate, admin)")),
        }
    }
}

impl Need {
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Read => "read",
            Need::Ingest => "ingest",
            Need::Operate => "operate",
            Need::Admin => "admin",
        }
    }
}

/// Who made a call: a token's name (`token:NAME`) or a local user
/// (`user:NAME`), and what they may do. This name is what history records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong, and what to do about it.
    pub error: String,
}

/// `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    /// This alerter's name (`alerter.name`).
    pub name: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub uptime_seconds: u64,
    /// SHA-256 of the configuration files as loaded (hex), to tell which
    /// version of them runs.
    pub config_hash: String,
    pub config_loaded_at: DateTime<Utc>,
    pub sources: Vec<SourceHealth>,
    pub transports: Vec<TransportHealth>,
    pub outbox: OutboxStatus,
    pub alerts: AlertCounts,
    /// Silences in force now (the config's and those set at run time).
    pub active_silences: usize,
    /// The next notices and reminders due, earliest first.
    pub next_notices: Vec<NextNotice>,
    /// Budget windows holding folded notifications: the digests to come,
    /// earliest first (docs/budgets.md).
    #[serde(default)]
    pub pending_digests: Vec<PendingDigest>,
    /// The state store refuses writes (a full disk): decisions are held.
    pub store_failing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SourceHealth {
    pub id: String,
    /// The plugin behind it.
    pub kind: String,
    /// `running`, `restarting` or `stopped`.
    pub state: String,
    pub restarts: u64,
    pub dropped_events: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TransportHealth {
    pub id: String,
    pub kind: String,
    /// `ok`, or `failing` after a delivery failed for good, expired, or
    /// needed a third attempt, until the next success.
    pub state: String,
    pub failures_since_success: u64,
    pub pending: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutboxStatus {
    /// Notifications not delivered yet.
    pub pending: u64,
    /// Age of the oldest of them, in seconds.
    pub oldest_pending_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AlertCounts {
    pub firing: u64,
    pub pending: u64,
    pub acknowledged: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PendingDigest {
    /// Its number, as history's `folded into digest #N` says.
    pub number: u64,
    /// Whose budget: a subscriber, `@group`, or `*` (the workgroup).
    pub holder: String,
    pub transport: String,
    /// The budget, as written (`popups 5 per 10m`).
    pub budget: String,
    /// Notifications shown in the window, and folded so far.
    pub shown: u32,
    pub folded: u64,
    /// When the window ends and the digest goes out.
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NextNotice {
    pub name: String,
    /// When it goes out.
    pub at: DateTime<Utc>,
    /// When the announced event happens.
    pub event_at: DateTime<Utc>,
}

/// `POST /api/v1/silences`: what to silence, and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// Matchers in amtool's syntax: `rule=disk-space`, `host=~"web.*"`,
    /// `severity!=info`. `rule` (or `alertname`) names the rule; `source`,
    /// `host`, `severity` the event's fields; anything else a label.
    pub matchers: Vec<String>,
    /// When it starts; default now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts: Option<DateTime<Utc>>,
    /// When it ends. Give this or `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends: Option<DateTime<Utc>>,
    /// How long it lasts from its start (`2h`, `30m`, `1d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Why: shown in history beside every notification it suppresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One silence, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts: Option<DateTime<Utc>>,
    pub ends: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Who set it; absent for silences of the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// `config` or `api`.
    pub origin: String,
    /// `active`, `pending` (starts later) or `expired`.
    pub state: String,
}

/// `GET /api/v1/silences` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SilenceQuery {
    /// Also list silences that ended (in the last day).
    #[serde(default)]
    pub expired: bool,
}

/// `GET /api/v1/alerts` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// Matchers, separated by spaces or commas: `rule=disk-space host=~"web.*"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// `active` (firing and pending, the default), `firing`, `pending`,
    /// or `all` (also resolved ones whose notice has not gone out yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Page size (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// How many to skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    /// `severity` (the default: the most severe first, then the oldest) or
    /// `rule` (by rule name, then as `severity` within each rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
    /// One alert: its id, or its first 4 or more hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A page of alerts, in the order the query asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertsPage {
    /// How many alerts the query matched in all.
    pub total: usize,
    pub offset: usize,
    pub alerts: Vec<AlertInfo>,
    /// Every alert the query matched (not only the page), counted by rule,
    /// the rule with the most severe first.
    #[serde(default)]
    pub rules: Vec<RuleAlerts>,
}

/// The alerts of one rule that a query matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RuleAlerts {
    pub rule: String,
    pub firing: u64,
    pub pending: u64,
    /// Of those firing, how many are acknowledged.
    pub acknowledged: u64,
    /// The most severe among them.
    pub severity: String,
}

/// One alert of one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlertInfo {
    /// Its fingerprint (what `alerter ack` takes; a prefix will do).
    pub id: String,
    pub rule: String,
    /// `firing`, `pending` or `resolved` (its notice not yet out).
    pub state: String,
    pub severity: String,
    pub summary: String,
    pub source: String,
    pub host: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// When it was first seen.
    pub since: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notified: Option<DateTime<Utc>>,
    /// Events merged into it since it was last notified.
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<AckInfo>,
    /// The silence holding its notifications back, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silenced_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AckInfo {
    pub by: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The severity acknowledged: a rise above it re-opens the alert.
    pub severity: String,
}

/// `POST /api/v1/acks`: which firing alerts to acknowledge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Alert ids (fingerprints, or their first 4 or more hex digits).
    #[serde(default)]
    pub ids: Vec<String>,
    /// Or every firing alert these matchers match (a group).
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Why: in history, and in `alerter alerts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AckResult {
    pub acknowledged: Vec<AlertInfo>,
}

/// `POST /api/v1/notices`: a one-off broadcast, now or at a time, with
/// reminders ahead of it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoticeRequest {
    /// What the popup or mail says.
    pub text: String,
    /// When the announced event happens: RFC 3339
    /// (`2026-12-05T18:00:00+01:00`), a local time `2026-12-05 18:00[:SS]`
    /// in the daemon's time zone (`alerter.timezone`), or `+30m` from now.
    /// Default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Reminders ahead of it: `1h`, `15m`. Those already past are left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remind: Vec<String>,
    /// Who: `*` (everyone in the workgroup, a broadcast), `@group`, or a
    /// subscriber id.
    pub to: Vec<String>,
    /// Transport ids. Default: every Messenger transport, and for
    /// recipients without a machine every email transport.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<String>,
    /// A title (a mail's subject is "Notice: TITLE"). Default: the
    /// text's first line, shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// One notice, as listed: the config's (recurring) and those set at run
/// time (once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Notice {
    /// The config's name, or the id of a notice set at run time.
    pub id: String,
    /// `config` or `api`.
    pub origin: String,
    pub title: String,
    /// The text (absent for the config's notices, whose text is a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The crontab line of a recurring notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// When its (next) event happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// The time zone its times are shown in.
    pub timezone: String,
    /// Reminders ahead of the event, in seconds (0: at the event itself).
    pub remind_seconds: Vec<u64>,
    /// Recipients by transport: `* via popup; alice via mail`.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// What goes out next, earliest first.
    pub next: Vec<NoticeFiring>,
}

/// One announcement of a notice still to go out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NoticeFiring {
    /// When it goes out.
    pub at: DateTime<Utc>,
    /// When the announced event happens.
    pub event_at: DateTime<Utc>,
    /// How far ahead of the event, in seconds (0: the event itself).
    pub ahead_seconds: u64,
}

/// `POST /api/v1/reload`: the configuration now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reloaded {
    /// SHA-256 of the files read, as `status` shows it.
    pub config_hash: String,
    pub rules: usize,
    pub sources: usize,
    pub transports: usize,
    pub loaded_at: DateTime<Utc>,
    /// Warnings about the new configuration (it was applied all the same).
    pub warnings: Vec<String>,
}

/// `POST /api/v1/test`: a test notification through one transport.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// The transport's id.
    pub transport: String,
    /// Whom: `*` (the workgroup), `@group`, or subscriber ids. Default: for
    /// a transport that records rather than tells (a log), the workgroup;
    /// otherwise required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// The text; default a line saying it is a test and who asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A test notification, queued in the outbox: follow it in history by its
/// `rule` (`test:ID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TestQueued {
    pub rule: String,
    pub transport: String,
    pub recipients: Vec<String>,
}

/// `GET /api/v1/history`: which entries, newest first. Every filter given
/// must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// A rule's name (`notice:ID` for a notice's notifications).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// `sent`, `failed`, `expired`, `pending`, `suppressed`, `folded`, or a change:
    /// `silence`, `ack`, `notice`, `reload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// A subscriber id (`*`: the workgroup) among the recipients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// An alert id (its fingerprint, or its first 4 or more hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// Page size: default 100, at most 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// One entry of history: a notification (sent, failed, expired, pending)
/// or an audit record (a suppression and why, a change and who made it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryEntry {
    pub time: DateTime<Utc>,
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    pub status: String,
    pub summary: String,
    pub recipients: Vec<String>,
    pub attempts: u32,
    /// The server's reply, the error, why it was suppressed or folded, or who made a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The notification's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<String>,
    /// The alerts it is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<String>,
}

/// A page of history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    /// The cursor of the next (older) page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One event posted to `POST /api/v1/events` (scope `ingest`): routed by
/// the rules like a source's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    /// The source it is from, as rules match it (`source:`). Default `api`;
    /// `alerter` is the daemon's own and refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The host it is about. Default: the daemon's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `info`, `warning`, `critical`, or `resolved` (which clears it).
    pub severity: String,
    pub summary: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// What identifies the alert across events (default: source, host and labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A happening (a log line) rather than a condition: notified once,
    /// never resolved.
    #[serde(default)]
    pub oneshot: bool,
}

/// `POST /api/v1/events` takes one event or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EventsIn {
    One(EventIn),
    Many(Vec<EventIn>),
}

/// What an ingest did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Ingested {
    pub accepted: usize,
}

/// `GET /api/v1/network`: what the Messenger name service finds on the
/// LAN now: the machines that answer a node status request (their names),
/// and, for each subscriber with a machine, whether that name is found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Network {
    pub at: DateTime<Utc>,
    pub workgroup: String,
    /// Where the node status request went: `eth0 (10.0.0.255)`.
    pub asked: Vec<String>,
    /// Machines that answered, by address.
    pub hosts: Vec<NetworkHost>,
    /// Subscribers with a machine, and whether their machine's name is found.
    pub subscribers: Vec<Reach>,
    /// What could not be done (no Messenger transport, no interface up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkHost {
    pub address: String,
    pub names: Vec<NetworkName>,
}

/// One name in a machine's name table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkName {
    /// The name as shown (control characters made visible).
    pub name: String,
    /// Its suffix in hex: `03` a Messenger name (popups reach it), `00` a
    /// workstation, `20` a file server.
    pub suffix: String,
    /// `messenger`, `workstation`, `server` or `other`.
    pub kind: String,
    pub group: bool,
}

/// Whether a subscriber's machine is found by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reach {
    pub subscriber: String,
    pub machine: String,
    /// The address it was found at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// How it was found, or what each way of looking said.
    pub detail: String,
}

/// `GET /api/v1/directory`: whom notices and tests may name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Directory {
    pub workgroup: String,
    pub subscribers: Vec<DirectoryEntry>,
    /// Group names (without the `@`).
    pub groups: Vec<String>,
    /// Transport ids with their kind.
    pub transports: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DirectoryEntry {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    pub email: bool,
}

/// `POST /api/v1/notices/preview`: what a notice would send, without
/// setting it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NoticePreview {
    /// When the event is.
    pub at: DateTime<Utc>,
    pub timezone: String,
    /// What goes out, earliest first (reminders, then the notice).
    pub next: Vec<NoticeFiring>,
    /// Per transport, the text as it will reach people.
    pub messages: Vec<MessagePreview>,
}

/// One transport's rendering of a notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MessagePreview {
    pub transport: String,
    /// `messenger`, `email`, ...
    pub kind: String,
    pub recipients: Vec<String>,
    /// The notice's text as the popup shows it (code page and length
    /// limit applied), or as the mail carries it.
    pub text: String,
    /// For popups: the code page and the byte limit applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_page: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The text's length in the code page, before any cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<usize>,
    /// Whether the text was cut to the limit.
    pub cut: bool,
    /// Characters the code page has not, shown as `?`.
    pub replaced: usize,
}
