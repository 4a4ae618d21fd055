//! The config file as admins write it: serde types, one per YAML section.
//!
//! These types are the single source of truth for the file format: the JSON
//! Schema shipped in `config/` and the structural checks in
//! [`super::validate`] are both generated from them. Values that need parsing
//! (durations, regexes, crontab lines, time zones, templates) are newtypes in
//! [`super::types`] whose schema carries a `format`, so that every bad one is
//! reported with its position before serde ever sees it.
//!
//! Doc comments on fields double as the descriptions editors show.

use std::collections::BTreeMap;
use std::path::PathBuf;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{
    BudgetStr, CronExpr, Duration, IpTarget, Ipv4Str, OneOrMany, RegexStr, TemplateStr, TimeRangeStr, TimeZoneName,
    Timestamp, WeekdayRange,
};
use crate::event::Severity;

/// One config file. The main file may use every section; files pulled in by
/// `include` may use every section except `alerter` and `include`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "alerter configuration")]
pub struct ConfigFile {
    /// Settings of the alerter itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerter: Option<AlerterSection>,
    /// The control API (what `alerter status`, `alerter silence` and other
    /// clients talk to) and who may use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiSection>,
    /// Further config files to read, as paths or glob patterns relative to
    /// this file (e.g. `rules.d/*.yaml`). Matches are read in sorted order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Alert sources by id. `type` names the plugin; the other keys are the
    /// plugin's own settings.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub sources: IndexMap<String, SourceConfig>,
    /// Delivery channels by id.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub transports: IndexMap<String, TransportConfig>,
    /// People who receive notifications, by id.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub subscribers: IndexMap<String, SubscriberConfig>,
    /// Named sets of subscribers.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub groups: IndexMap<String, GroupConfig>,
    /// Recurring time windows (business hours, nights, maintenance) that
    /// rules refer to in `mute_during` and `active_during`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub schedules: IndexMap<String, ScheduleConfig>,
    /// Alert rules, in order: the first rule that matches an event handles
    /// it, unless that rule says `continue: true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleConfig>,
    /// Silences: matching alerts are not notified between `starts` and `ends`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silences: Vec<SilenceConfig>,
    /// Scheduled broadcasts (maintenance notices), with optional reminders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<NoticeConfig>,
}

/// The `alerter:` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlerterSection {
    /// This machine's name in notifications and on the network (a NetBIOS
    /// name for Messenger). Default: the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The workgroup whose members `workgroup: true` reaches. Default: WORKGROUP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workgroup: Option<String>,
    /// Where alert state and the outbox live (created on first run).
    /// Default: `$STATE_DIRECTORY`, else /var/lib/alerter as root, else
    /// `$XDG_STATE_HOME/alerter` (or ~/.local/state/alerter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Directories searched for third-party source plugins. A relative one
    /// is relative to the directory of this config file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugin_dirs: Vec<PathBuf>,
    /// How many events of one source may wait for the rules engine before
    /// that source is slowed down (or, for a plugin that cannot wait, its
    /// events dropped and reported): the default of every source's `queue`.
    /// Each source has its own queue, so one source's backlog never delays
    /// another's events. Default: 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_queue: Option<u32>,
    /// How long history (delivered and failed notifications, suppressions)
    /// is kept in the state database; older entries are pruned every few
    /// minutes, so the database grows with this, not with uptime.
    /// Pending notifications are never pruned. Default: 30d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
    /// The time zone of times given without one (`alerter notice add --at
    /// "2026-12-05 18:00"`), and the one notices set at run time show
    /// their times in. Default: the system's (`TZ`, else /etc/localtime),
    /// else UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<TimeZoneName>,
}

/// The `api:` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// The Unix socket of the API (mode 0660). Default: `api.sock` in
    /// `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`), else in the
    /// state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// The group that owns the socket: its members may connect. Default:
    /// the daemon's own group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    /// Also serve the API on this TCP address (`127.0.0.1:9310`,
    /// `[::1]:9310`, `0.0.0.0:9310`). Callers over TCP need a token. Plain
    /// HTTP is allowed on a loopback address only; any other needs `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// TLS for `listen`: a PEM certificate chain and its private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ApiTls>,
    /// Named tokens: each names a file holding the secret (readable by the
    /// daemon only) and the scope it grants: `read`, `ingest`, `operate`
    /// or `admin`. The name is who acted, in history.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub tokens: IndexMap<String, ApiToken>,
    /// Local users (by name or uid) and their scope on the socket. root
    /// and the daemon's own user are `admin` unless named here.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub users: IndexMap<String, alerter_api::Scope>,
    /// The scope of other local users who can open the socket (members of
    /// `socket_group`): `read` (default), `ingest`, `operate`, `admin`, or
    /// `none` to refuse them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub others: Option<OthersScope>,
    /// Where Prometheus scrapes `/metrics` (and `/healthz`, `/readyz`): a
    /// TCP address of its own, plain HTTP. Default `127.0.0.1:9311`; `off`
    /// turns it off. A port already taken is a warning, not a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Whether scrapes need a token with the `read` scope. Default: no.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<bool>,
    /// Whether `listen` also serves the web console (log in with a token
    /// of `tokens`; docs/console.md). Default: yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<bool>,
}

/// The scope of local users not named in `api.users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OthersScope {
    Read,
    Ingest,
    Operate,
    Admin,
    None,
}

impl OthersScope {
    pub fn scope(self) -> Option<alerter_api::Scope> {
        use alerter_api::Scope;
        match self {
            OthersScope::Read => Some(Scope::Read),
            OthersScope::Ingest => Some(Scope::Ingest),
            OthersScope::Operate => Some(Scope::Operate),
            OthersScope::Admin => Some(Scope::Admin),
            OthersScope::None => None,
        }
    }
}

/// TLS for the API's TCP listener.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiTls {
    /// PEM certificate chain, server certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (readable by the daemon only).
    pub key_file: PathBuf,
}

/// One API token.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// The file holding the token (at least 22 printable characters, e.g.
    /// from `openssl rand -hex 24`), readable by the daemon only.
    pub file: PathBuf,
    /// What the token may do.
    pub scope: alerter_api::Scope,
}

/// One source: `type` picks the plugin, the remaining keys configure it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SourceConfig {
    /// The plugin that implements this source (see `alerter plugins`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Set to false to keep the source configured but stopped.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// `process` (default for plugin files): the plugin runs in a child
    /// process of its own, so a crash takes down only that. `in_process`:
    /// on a thread of the daemon (default for built-in plugins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<crate::plugin::Isolation>,
    /// Refuse the plugin file unless its SHA-256 is this (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// How many of this source's events may wait for the engine before
    /// more are dropped (and counted). Default: 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<u32>,
    /// The plugin's own settings.
    #[serde(flatten)]
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// One transport.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum TransportConfig {
    /// Appends each notification as one JSON line to a file, or to standard
    /// output with `path: "-"`. For piping into other tools, and for tests.
    Log {
        /// File to append to; `-` means standard output.
        path: PathBuf,
        /// Message templates overriding this transport's defaults.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<TemplateConfig>,
    },
    /// Popups with the Messenger protocol (`net send`, WinPopup): to the
    /// machines of subscribers, and to the whole workgroup.
    Messenger(Box<MessengerConfig>),
    /// Mail over SMTP, to subscribers' `email` addresses.
    Email(Box<EmailConfig>),
    /// An HTTP request per notification, with a templated body: ntfy,
    /// Gotify, Matrix, Slack-compatible endpoints, anything with a webhook.
    Webhook(Box<WebhookConfig>),
    /// Alerts to a Prometheus Alertmanager cluster (API v2), as Prometheus
    /// sends them: to every node, firing ones re-sent while they last.
    Alertmanager(Box<AlertmanagerConfig>),
}

/// The `webhook` transport.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to send: an `http://` or `https://` URL. Plain HTTP is allowed
    /// to this machine only (localhost, 127.0.0.1, ::1), unless
    /// `insecure_http` says otherwise.
    pub url: String,
    /// Allow plain `http://` to other machines. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_http: Option<bool>,
    /// `POST` (default), `PUT` or `PATCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<WebhookMethod>,
    /// What the body is: `json` (default), `form` or `text`. Values inserted
    /// into `body` are escaped for it: in `json` each is a JSON value
    /// (a string with its quotes: write `{"message": {{ text }}}`), in
    /// `form` each is percent-encoded, in `text` each is as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<WebhookFormat>,
    /// The body, a minijinja template over the notification (`title`,
    /// `text`, `rule`, `status`, `severity`, `alerts`, `group`, `id`,
    /// `recipients`, `repeat`). Default: the whole notification as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<TemplateStr>,
    /// Extra request headers; values are templates like `body` (plain text).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, TemplateStr>,
    /// A file holding a bearer token, sent as `Authorization: Bearer …`
    /// (readable by the daemon only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Extra CA certificate(s) to trust (PEM), for a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How long one request may take, answer included. Default: 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Requests in flight at once. Default: 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Retries (5xx, 408, 429, no answer). Default: from 5s, at most 10m
    /// apart, for up to 24h. Other 4xx answers are permanent failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// `title` and `text` templates, rendered first and given to `body` as
    /// `title` and `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateConfig>,
}

/// The HTTP method of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum WebhookMethod {
    Post,
    Put,
    Patch,
}

/// The body format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    Json,
    Form,
    Text,
}

/// The `alertmanager` transport.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Every node of the Alertmanager cluster, e.g.
    /// `[http://am1:9093, http://am2:9093]`: each alert goes to all of them,
    /// as Prometheus sends it (the cluster deduplicates). Plain HTTP is
    /// allowed to this machine only, unless `insecure_http` says otherwise.
    pub urls: OneOrMany<String>,
    /// How often firing alerts are sent again while they last (their
    /// `endsAt` is four of these ahead, so Alertmanager resolves an alert
    /// whose sender went silent). Default: 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend: Option<Duration>,
    /// Labels added to every alert (e.g. `env: prod`), below the alert's own.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub labels: IndexMap<String, String>,
    /// This alerter's address as people reach it (e.g.
    /// `http://web1.example.org:9310`): each alert's `generatorURL` points
    /// at it. Default: `alerter://NAME/` (no link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    /// A file holding a bearer token for Alertmanager (behind a proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Extra CA certificate(s) to trust (PEM), for a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Allow plain `http://` to other machines (a cluster on a trusted
    /// network, as Prometheus is usually run). Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_http: Option<bool>,
    /// How long one request to one node may take. Default: 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retries of changes (a new alert, a resolution) no node took.
    /// Default: from 1s, at most 1m apart, for up to 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
}

/// The `email` transport.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The mail relay (SMTP server) host name or address.
    pub relay: String,
    /// Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `starttls` (default), `tls` (implicit TLS), or `none` (only to a relay on loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EmailTls>,
    /// User name for SMTP AUTH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the SMTP password (not readable by everyone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The sender, e.g. `Alerter <alerter@example.org>`.
    pub from: String,
    /// Extra CA certificate(s) to trust (PEM), for a relay with a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How long one SMTP conversation may take. Default: 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Connections kept open and used at once. Default: 4; 0 opens one per mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<u32>,
    /// Also send an HTML alternative. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<bool>,
    /// Retries of failed mail. Default: from 5s, at most 10m apart, for up to 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// Subject (`title`), body (`text`) and HTML (`html`) templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateConfig>,
    /// Mails per person (or group) through this transport, e.g. `20 per 1h`,
    /// for those whose own `budget` sets none. Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStr>,
}

/// How the email transport protects the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    Starttls,
    Tls,
    None,
}

/// The `messenger` transport.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessengerConfig {
    /// The sender shown in the popup, at most 15 characters. Default: the alerter's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The OEM code page of the text (437, 850, 852, 866, ...). Default: 850, as Samba.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_page: Option<u16>,
    /// TCP port of the session form: 139 (with a NetBIOS session request) or 445 (direct). Default: 139.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `session` (default): one TCP connection per recipient, delivery confirmed.
    /// `datagram`: one UDP datagram (WinPopup), not confirmed.
    /// `rpc`: NetrSendMessage over DCE/RPC on UDP 135 (Windows 2000/XP/2003), confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<MessengerForm>,
    /// The wire form for particular names (a machine, or a user's name), overriding `form`:
    /// `{OLDXP: rpc, LAB7: datagram}`. Sealed messages never go in the RPC form (it has no
    /// room for a seal): to an `rpc` name they go as a session.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub forms: IndexMap<String, MessengerForm>,
    /// UDP port of the RPC form. Default: 135.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_port: Option<u16>,
    /// When the session form cannot reach a machine, send a datagram instead. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datagram_fallback: Option<bool>,
    /// How long one attempt may take. Default: 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Longest text in bytes (after encoding); longer is cut with ` [...]`.
    /// Default: 652, the protocol's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Broadcast address for workgroup messages and name queries. Default: each interface's own
    /// (see `interfaces`). Set it only to send every broadcast to one address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<Ipv4Str>,
    /// Interfaces to broadcast on, as Samba's `interfaces`: names (`eth0`, `enp*`), addresses of
    /// this machine, or networks (`10.0.0.0/24`). Default: every interface that is up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// A WINS server to ask for names before broadcasting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wins: Option<Ipv4Str>,
    /// Machine names and their addresses (optionally with a port), tried first.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub hosts: IndexMap<String, IpTarget>,
    /// Also look names up in DNS. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<bool>,
    /// Seal every message with this workgroup key file (`alerter keygen` makes one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_key_file: Option<PathBuf>,
    /// Sign every sealed message with this sender key (`alerter keygen --sign`), so receivers
    /// that trust its public key show the sender as verified. Needs `seal_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_key_file: Option<PathBuf>,
    /// With a key: send each message unsealed too, for classic receivers. Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub also_plain: Option<bool>,
    /// Retries of failed popups. Default: from 5s, at most 5m apart, for up to 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// Message templates overriding this transport's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateConfig>,
    /// Popups per person (or group, or the workgroup) through this transport,
    /// e.g. `5 per 10m`, for those whose own `budget` sets none. Default: 10 per 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStr>,
    /// Store-and-forward: keep a popup for someone who is nowhere to be found (not logged on,
    /// machine off), deliver it when their name appears, and after `wait` send it through
    /// another transport instead. Without it, such popups are retried like any failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<OfflineConfig>,
    /// Acknowledgements from the popup: each popup about firing alerts ends with an ack line
    /// (its alert, a token), and the receiver's `alerter ack ID` sends the acknowledgement back
    /// to this port, where the daemon listens. Sealed with `seal_key_file` when one is set, and
    /// then only sealed ones are taken. At most one messenger transport may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acks: Option<AcksConfig>,
}

/// Where the daemon takes acknowledgements from popups.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcksConfig {
    /// The TCP port (the session form of the Messenger protocol). Not 139 or 445 where smbd or
    /// `alerter listen` runs on the same machine: 1139, say.
    pub port: u16,
    /// The address to listen on. Default: 0.0.0.0 (every interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<std::net::IpAddr>,
}

/// Store-and-forward of popups to people who are nowhere to be found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfflineConfig {
    /// How long a popup waits for its recipient to appear. Default: the transport's
    /// `retry.max_age` (1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Duration>,
    /// A transport (e.g. `mail`) to send the message through instead, to those still nowhere
    /// after `wait`. Default: none (the popup expires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<String>,
    /// How often to look for them meanwhile (a name query). Default: 30s. Transport only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<Duration>,
}

/// How failed deliveries are retried.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Wait before the first retry; it doubles each time (with jitter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<Duration>,
    /// Longest wait between retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
    /// Give up on a notification this old, and raise an `alerter` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}

/// The Messenger wire form for messages to one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessengerForm {
    Session,
    Datagram,
    Rpc,
}

impl TransportConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            TransportConfig::Log { .. } => "log",
            TransportConfig::Messenger(_) => "messenger",
            TransportConfig::Email(_) => "email",
            TransportConfig::Webhook(_) => "webhook",
            TransportConfig::Alertmanager(_) => "alertmanager",
        }
    }

    pub fn template(&self) -> Option<&TemplateConfig> {
        match self {
            TransportConfig::Log { template, .. } => template.as_ref(),
            TransportConfig::Messenger(m) => m.template.as_ref(),
            TransportConfig::Email(e) => e.template.as_ref(),
            TransportConfig::Webhook(w) => w.template.as_ref(),
            TransportConfig::Alertmanager(_) => None,
        }
    }
}

/// Message templates (minijinja). See docs/config.md for the variables.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// One line: a mail subject, a popup's first line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<TemplateStr>,
    /// The message text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TemplateStr>,
    /// An HTML alternative (email only; values are HTML-escaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<TemplateStr>,
}

/// A person.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberConfig {
    /// Full name, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// NetBIOS name of their workstation, for Messenger popups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Their login name: popups go to wherever they are logged on (the
    /// receiver there holds `USER<03>` while they are), before `machine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// How many popups and mails they receive before the rest is folded
    /// into one digest. Default: the transport's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetConfig>,
}

/// Budgets per kind of transport: what exceeds them within their window is
/// folded into one digest at its end (docs/budgets.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Messenger popups, e.g. `5 per 10m`. Default: the transport's, else 10 per 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popups: Option<BudgetStr>,
    /// Mails, e.g. `20 per 1h`. Default: the transport's, else unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mails: Option<BudgetStr>,
}

/// A named set of subscribers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Subscriber ids.
    pub members: Vec<String>,
    /// One budget for what rules send to the group (not one per member).
    /// Default: the transport's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetConfig>,
}

/// A recurring time window: the union of its `windows`, in one time zone.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// IANA time zone, e.g. Europe/Berlin. Default: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<TimeZoneName>,
    /// The schedule is active while any window is.
    pub windows: Vec<WindowConfig>,
}

/// Days and times; both default to "all".
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Days of the week: names (`monday`, `mon`) or ranges (`mon-fri`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekdays: Vec<WeekdayRange>,
    /// Times of day as `HH:MM-HH:MM`; a range may cross midnight
    /// (`22:00-06:00`); `24:00` ends a day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub times: Vec<TimeRangeStr>,
}

/// An alert rule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name; shown in notifications and the audit trail.
    pub name: String,
    /// Which events this rule takes. Empty matches everything.
    #[serde(default, rename = "match")]
    pub matcher: MatcherConfig,
    /// The condition must hold this long before the alert fires.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub hold_for: Option<Duration>,
    /// Labels whose values split alerts into separately notified groups.
    /// Empty: every alert is notified on its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_by: Vec<String>,
    /// How long to wait after a group's first alert, to batch others in. Default: 0s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_wait: Option<Duration>,
    /// How long to wait before notifying a group again about changes. Default: 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_interval: Option<Duration>,
    /// How long to wait before re-sending a still-firing alert, and how
    /// long a one-shot event with the same key stays quiet. Default: 4h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_interval: Option<Duration>,
    /// Also notify when the alert clears. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_resolved: Option<bool>,
    /// Go on to later rules after this one matched. Default: false.
    #[serde(default, rename = "continue", skip_serializing_if = "std::ops::Not::not")]
    pub continue_matching: bool,
    /// Who is told, and how.
    pub notify: Vec<RecipientsConfig>,
    /// Message templates for this rule, overriding the transports' own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateConfig>,
    /// Schedules during which this rule sends nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mute_during: Vec<String>,
    /// Schedules outside of which this rule sends nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_during: Vec<String>,
    /// Store-and-forward of this rule's popups (`wait`, `then`), overriding the popup
    /// transport's `offline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<OfflineConfig>,
    /// How its notifications meet people's budgets: `folded` (counted, and
    /// folded into the digest once the budget is spent), `counted` (always
    /// shown at once, counted, up to twice the budget), `exempt` (neither).
    /// Default: `counted` for critical notifications, `folded` for the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<alerter_engine::budget::Mode>,
}

/// Which events a rule or silence applies to. All given conditions must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatcherConfig {
    /// Source ids or glob patterns (`disk`, `log-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<OneOrMany<String>>,
    /// Minimum severity: `warning` also takes `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Label conditions: a plain value must equal the label; `{regex: ...}`
    /// must match all of it; `{not: ...}` and `{not_regex: ...}` negate.
    /// `source`, `host` and `severity` can be used as labels too.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub labels: IndexMap<String, LabelMatch>,
}

/// One label condition.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum LabelMatch {
    /// The label must have exactly this value.
    Equals(String),
    /// An operator.
    Op(LabelOp),
}

/// A label operator; regexes must match the whole value.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LabelOp {
    /// The value matches this regex.
    Regex(RegexStr),
    /// The value is not this (a missing label counts as "not").
    Not(String),
    /// The value does not match this regex.
    NotRegex(RegexStr),
}

/// A set of recipients and the transports that reach them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientsConfig {
    /// Group ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Subscriber ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribers: Vec<String>,
    /// Everyone in the workgroup (a Messenger broadcast).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub workgroup: bool,
    /// Transport ids to use for these recipients.
    pub via: Vec<String>,
}

/// A silence.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceConfig {
    /// Alerts this silence applies to.
    #[serde(rename = "match")]
    pub matcher: MatcherConfig,
    /// Start (RFC 3339, e.g. 2026-11-26T20:00:00Z). Default: always started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts: Option<Timestamp>,
    /// End (RFC 3339).
    pub ends: Timestamp,
    /// Why; shown in the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Who set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

/// A scheduled broadcast.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoticeConfig {
    /// Unique name.
    pub name: String,
    /// When the announced event happens: a crontab(5) line (5 fields, or 6
    /// with seconds first).
    pub cron: CronExpr,
    /// Time zone of the crontab line. Default: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<TimeZoneName>,
    /// The text (a template; `{{ at }}` is the event's local time, `{{ in }}`
    /// how far ahead a reminder is).
    pub message: TemplateStr,
    /// Reminders ahead of the event, e.g. `[1h, 5m]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remind: Vec<Duration>,
    /// Also send at the event time itself. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_time: Option<bool>,
    /// Who is told, and how.
    pub notify: Vec<RecipientsConfig>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}
