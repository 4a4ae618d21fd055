//! The commands that talk to a running daemon through its control API:
//! `alerter status`, `alerter alerts`, `alerter ack`, `alerter emit`,
//! `alerter silence add|list|expire` and `alerter notice add|list|cancel`.
//!
//! Which daemon: `--url` (TCP, with `--token-file`), else `--socket`, else
//! the socket of `--config`'s daemon, else the default places (systemd's
//! /run/alerter/api.sock, then the default state directory). Text from the
//! daemon has its control characters made visible before it is printed.

use std::path::PathBuf;
use std::process::ExitCode;

use alerter_api::client::{Client, ClientError, Endpoint};
use alerter_api::types;
use alerter_core::config;
use alerter_core::visible::visible_line;
use anyhow::Context;
use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use clap::{Args, Subcommand};

/// How to reach the daemon (every API command takes these).
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The daemon's API socket.
    #[arg(long, env = "ALERTER_SOCKET", value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    /// The daemon's API over TCP, `http://127.0.0.1:9310` or `https://...`
    /// (needs `--token-file`).
    #[arg(long, env = "ALERTER_URL", value_name = "URL", global = true, conflicts_with = "socket")]
    url: Option<String>,
    /// A file holding an API token (`api.tokens`).
    #[arg(long, env = "ALERTER_TOKEN_FILE", value_name = "FILE", global = true)]
    token_file: Option<PathBuf>,
    /// CA certificates (PEM) to trust for an `https` URL.
    #[arg(long, value_name = "FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// The daemon's config file, to find its socket.
    #[arg(short, long, env = "ALERTER_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

/// `alerter silence`.
#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Silence alerts matching all the matchers, as amtool writes them:
    /// `rule=disk-space host=~"web.*" severity!=info`. Prints the id.
    Add {
        /// Matchers: `NAME=VALUE`, `NAME!=VALUE`, `NAME=~REGEX`, `NAME!~REGEX`.
        #[arg(required = true, value_name = "MATCHER")]
        matchers: Vec<String>,
        /// How long it lasts (`30m`, `2h`, `1d`); default 1h.
        #[arg(short, long, conflicts_with = "end")]
        duration: Option<String>,
        /// When it ends: `2026-12-05 18:00` (local time) or RFC 3339.
        #[arg(long, value_name = "TIME")]
        end: Option<String>,
        /// When it starts (default now).
        #[arg(long, value_name = "TIME")]
        start: Option<String>,
        /// Why: shown in history beside what it suppresses.
        #[arg(short = 'm', long)]
        comment: Option<String>,
    },
    /// List silences in force or to come (with `--expired`, also those
    /// that ended in the last day).
    List {
        #[arg(long)]
        expired: bool,
    },
    /// End silences now.
    Expire {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
}

/// `alerter notice`.
#[derive(Debug, Subcommand)]
pub enum NoticeCommand {
    /// Announce something once, now or at a time, with reminders ahead of
    /// it: `alerter notice add --at "2026-12-05 18:00" --remind 1h,15m --to
    /// '*' "The file server goes down for maintenance"`. Prints the id.
    Add {
        /// What the popup or mail says (words are joined with spaces).
        #[arg(required = true, value_name = "TEXT")]
        text: Vec<String>,
        /// When it happens: `2026-12-05 18:00[:SS]` in the daemon's time
        /// zone (`alerter.timezone`), `18:00` (the next one), `+30m`, or
        /// RFC 3339. Default: now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Reminders ahead of it, e.g. `1h,15m`.
        #[arg(long, value_name = "DURATION", value_delimiter = ',')]
        remind: Vec<String>,
        /// Whom: `*` (the whole workgroup), `@group`, or a subscriber id
        /// (repeatable, or comma-separated).
        #[arg(long, required = true, value_name = "WHO", value_delimiter = ',')]
        to: Vec<String>,
        /// Transports to use (default: popups, and mail for those without a machine).
        #[arg(long, value_name = "TRANSPORT", value_delimiter = ',')]
        via: Vec<String>,
        /// A title (a mail's subject); default the text's first line.
        #[arg(long)]
        title: Option<String>,
    },
    /// List notices: those set here, and the config's, with what each sends next.
    List,
    /// Cancel notices set with `notice add`: nothing more of them goes out.
    Cancel {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
}

/// A time as people type it: RFC 3339, or `YYYY-MM-DD HH:MM[:SS]` (also
/// with `T`) in local time.
pub fn parse_time(s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, f) {
            return Local
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .with_context(|| format!("`{s}` does not exist in the local time zone (a daylight-saving gap)"));
        }
    }
    anyhow::bail!("`{s}` is not a time: write `2026-12-05 18:00` (local time) or `2026-12-05T18:00:00+01:00`")
}

impl ApiArgs {
    fn client(&self) -> anyhow::Result<Client> {
        let token = match &self.token_file {
            None => None,
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read the token file {}", f.display()))?
                    .trim()
                    .to_string(),
            ),
        };
        if let Some(url) = &self.url {
            let ca = match &self.ca_file {
                None => None,
                Some(f) => Some(std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?),
            };
            let endpoint = Endpoint::from_url(url, ca.as_deref()).map_err(anyhow::Error::msg)?;
            return Ok(Client::new(endpoint, token));
        }
        Ok(Client::new(Endpoint::Unix(self.socket_path()?), token))
    }

    fn socket_path(&self) -> anyhow::Result<PathBuf> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        if let Some(c) = &self.config {
            let plugins = crate::registry();
            let loaded = config::load_for_delivery(Some(c), &alerter_core::transport::load_options(&plugins))
                .map_err(|e| anyhow::anyhow!("{}", e.render(false)))?;
            return Ok(loaded.config.api.socket_path(&loaded.config.state_dir));
        }
        let systemd = PathBuf::from("/run/alerter").join(config::API_SOCKET);
        if systemd.exists() {
            return Ok(systemd);
        }
        Ok(config::default_state_dir().join(config::API_SOCKET))
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

/// Runs one API command and turns its outcome into an exit status: 0, or
/// 1 with the error on standard error.
pub fn run(name: &str, f: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match f() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alerter {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn call<T>(fut: impl Future<Output = Result<T, ClientError>>) -> anyhow::Result<T> {
    Ok(runtime()?.block_on(fut)?)
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S").to_string()
}

fn human_secs(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Prints rows as columns, the last one unpadded.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let parts: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| if i + 1 == n { c } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        println!("  {}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.iter().map(|c| visible_line(c).into_owned()).collect());
    }
}

/// `alerter status`.
pub fn status(args: &ApiArgs) -> anyhow::Result<()> {
    let client = args.client()?;
    let s: types::Status = call(client.get(alerter_api::paths::STATUS))?;
    if args.json {
        return print_json(&s);
    }
    println!(
        "alerter {} {}, up {} (since {}), config {}",
        visible_line(&s.name),
        s.version,
        human_secs(s.uptime_seconds),
        local(s.started_at),
        &s.config_hash[..s.config_hash.len().min(12)]
    );
    if s.store_failing {
        println!("THE STATE STORE FAILS: decisions are held until it can write (a full disk?)");
    }
    println!(
        "alerts: {} firing, {} pending, {} acknowledged; silences: {} active",
        s.alerts.firing, s.alerts.pending, s.alerts.acknowledged, s.active_silences
    );
    match s.outbox.oldest_pending_seconds {
        Some(age) => println!("outbox: {} pending, the oldest {} old", s.outbox.pending, human_secs(age as u64)),
        None => println!("outbox: nothing pending"),
    }
    if !s.sources.is_empty() {
        println!("sources:");
        let rows: Vec<Vec<String>> = s
            .sources
            .iter()
            .map(|x| {
                vec![
                    x.id.clone(),
                    x.kind.clone(),
                    x.state.clone(),
                    x.restarts.to_string(),
                    x.dropped_events.to_string(),
                ]
            })
            .collect();
        table(&["ID", "PLUGIN", "STATE", "RESTARTS", "DROPPED"], &rows);
    }
    if !s.transports.is_empty() {
        println!("transports:");
        let rows: Vec<Vec<String>> = s
            .transports
            .iter()
            .map(|x| {
                vec![
                    x.id.clone(),
                    x.kind.clone(),
                    x.state.clone(),
                    x.pending.to_string(),
                    x.failures_since_success.to_string(),
                ]
            })
            .collect();
        table(&["ID", "KIND", "STATE", "PENDING", "FAILURES"], &rows);
    }
    if !s.next_notices.is_empty() {
        println!("next notices:");
        let rows: Vec<Vec<String>> = s
            .next_notices
            .iter()
            .map(|n| vec![local(n.at), n.name.clone(), format!("for {}", local(n.event_at))])
            .collect();
        table(&["AT", "NOTICE", "EVENT"], &rows);
    }
    if !s.pending_digests.is_empty() {
        println!("digests to come (budgets spent):");
        let rows: Vec<Vec<String>> = s
            .pending_digests
            .iter()
            .map(|d| {
                vec![
                    local(d.at),
                    format!("#{}", d.number),
                    format!("{} via {}", d.holder, d.transport),
                    d.budget.clone(),
                    d.shown.to_string(),
                    d.folded.to_string(),
                ]
            })
            .collect();
        table(&["AT", "DIGEST", "FOR", "BUDGET", "SHOWN", "FOLDED"], &rows);
    }
    Ok(())
}

/// `alerter silence ...`.
pub fn silence(args: &ApiArgs, cmd: SilenceCommand) -> anyhow::Result<()> {
    let client = args.client()?;
    match cmd {
        SilenceCommand::Add { matchers, duration, end, start, comment } => {
            let ends = end.as_deref().map(parse_time).transpose()?;
            let duration = match (&ends, duration) {
                (None, None) => Some("1h".to_string()),
                (_, d) => d,
            };
            let req = types::SilenceRequest {
                matchers,
                starts: start.as_deref().map(parse_time).transpose()?,
                ends,
                duration,
                comment,
            };
            let s: types::Silence = call(client.post(alerter_api::paths::SILENCES, &req))?;
            if args.json {
                return print_json(&s);
            }
            println!("{}", s.id);
        }
        SilenceCommand::List { expired } => {
            let path = format!("{}?expired={expired}", alerter_api::paths::SILENCES);
            let list: Vec<types::Silence> = call(client.get(&path))?;
            if args.json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("no silences");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|s| {
                    vec![
                        s.id.clone(),
                        s.state.clone(),
                        local(s.ends),
                        s.created_by.clone().unwrap_or_else(|| "config".into()),
                        s.comment.clone().unwrap_or_default(),
                        s.matchers.join(" "),
                    ]
                })
                .collect();
            table(&["ID", "STATE", "ENDS", "BY", "COMMENT", "MATCHERS"], &rows);
        }
        SilenceCommand::Expire { ids } => {
            for id in ids {
                let path = format!("{}/{}", alerter_api::paths::SILENCES, percent_encode(&id));
                let s: types::Silence = call(client.delete(&path))?;
                if args.json {
                    print_json(&s)?;
                } else {
                    println!("expired {}", s.id);
                }
            }
        }
    }
    Ok(())
}

/// `alerter notice ...`.
pub fn notice(args: &ApiArgs, cmd: NoticeCommand) -> anyhow::Result<()> {
    let client = args.client()?;
    match cmd {
        NoticeCommand::Add { text, at, remind, to, via, title } => {
            let req = types::NoticeRequest { text: text.join(" "), at, remind, to, via, title };
            let n: types::Notice = call(client.post(alerter_api::paths::NOTICES, &req))?;
            if args.json {
                return print_json(&n);
            }
            println!("{}", n.id);
            let when = n.at.map(local).unwrap_or_default();
            eprintln!("set for {when} to {}", visible_line(&n.to));
            let reminders: Vec<String> = n
                .next
                .iter()
                .filter(|f| f.ahead_seconds > 0)
                .map(|f| format!("{} ({} ahead)", local(f.at), human_secs(f.ahead_seconds)))
                .collect();
            if !reminders.is_empty() {
                eprintln!("reminders at {}", reminders.join(", "));
            }
        }
        NoticeCommand::List => {
            let list: Vec<types::Notice> = call(client.get(alerter_api::paths::NOTICES))?;
            if args.json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("no notices");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list.iter().map(notice_row).collect();
            table(&["ID", "NEXT", "EVENT", "REMINDERS", "TO", "BY", "TITLE"], &rows);
        }
        NoticeCommand::Cancel { ids } => {
            for id in ids {
                let path = format!("{}/{}", alerter_api::paths::NOTICES, percent_encode(&id));
                let n: types::Notice = call(client.delete(&path))?;
                if args.json {
                    print_json(&n)?;
                } else {
                    println!("cancelled {}", n.id);
                }
            }
        }
    }
    Ok(())
}

fn notice_row(n: &types::Notice) -> Vec<String> {
    let next = n.next.first();
    let event = match (&n.cron, n.at) {
        (Some(cron), Some(at)) => format!("{} (cron {cron})", local(at)),
        (Some(cron), None) => format!("cron {cron}"),
        (None, Some(at)) => local(at),
        (None, None) => String::new(),
    };
    let reminders: Vec<String> = n.remind_seconds.iter().filter(|s| **s > 0).map(|s| human_secs(*s)).collect();
    vec![
        n.id.clone(),
        next.map_or_else(|| "never".into(), |f| local(f.at)),
        event,
        reminders.join(","),
        n.to.clone(),
        n.created_by.clone().unwrap_or_else(|| "config".into()),
        n.title.clone(),
    ]
}

/// `alerter reload`: what SIGHUP does, with the outcome.
pub fn reload(api: &ApiArgs) -> anyhow::Result<()> {
    let r: types::Reloaded = call(api.client()?.post(alerter_api::paths::RELOAD, &serde_json::json!({})))?;
    if api.json {
        return print_json(&r);
    }
    for w in &r.warnings {
        eprintln!("{}", visible_line(w));
    }
    println!(
        "reloaded: {} rules, {} sources, {} transports, config {}",
        r.rules,
        r.sources,
        r.transports,
        &r.config_hash[..r.config_hash.len().min(12)]
    );
    Ok(())
}

/// `alerter test-transport`.
#[derive(Debug, Args)]
pub struct TestTransportArgs {
    /// The transport's id.
    transport: String,
    /// Whom: `*`, `@group` or a subscriber id (repeatable, or comma-separated;
    /// needed for popups and mail).
    #[arg(long, value_name = "WHO", value_delimiter = ',')]
    to: Vec<String>,
    /// The text (default: a line saying it is a test, and who asked).
    text: Vec<String>,
    /// How long to wait for the outcome.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    wait: std::time::Duration,
}

/// `alerter test-transport`: queues a test notification, then follows it
/// in history until it is sent or has failed. Exits 0 only when sent.
pub fn test_transport(api: &ApiArgs, args: TestTransportArgs) -> anyhow::Result<()> {
    let client = api.client()?;
    let req = types::TestRequest {
        transport: args.transport,
        to: args.to,
        text: (!args.text.is_empty()).then(|| args.text.join(" ")),
    };
    let queued: types::TestQueued = call(client.post(alerter_api::paths::TEST, &req))?;
    if !api.json {
        eprintln!("queued {} via {} to {}", queued.rule, queued.transport, queued.recipients.join(", "));
    }
    let path = format!("{}?rule={}", alerter_api::paths::HISTORY, query_value(&queued.rule));
    let deadline = std::time::Instant::now() + args.wait;
    let entry = loop {
        let page: types::HistoryPage = call(client.get(&path))?;
        let done = page.entries.into_iter().find(|e| matches!(e.status.as_str(), "sent" | "failed" | "expired"));
        if let Some(e) = done {
            break e;
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{} is still waiting in the outbox after {}; `alerter history --rule {}` follows it",
                queued.rule,
                humantime::format_duration(args.wait),
                queued.rule
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    if api.json {
        print_json(&entry)?;
    } else {
        let detail = entry.detail.as_deref().map(|d| format!(": {}", visible_line(d))).unwrap_or_default();
        println!("{}{detail}", entry.status);
    }
    if entry.status != "sent" {
        anyhow::bail!("the test notification was not sent");
    }
    Ok(())
}

/// `alerter history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How many entries (at most 1000).
    #[arg(short = 'n', long, default_value_t = 50)]
    limit: usize,
    /// Only this rule's (`notice:ID` for a notice's).
    #[arg(long)]
    rule: Option<String>,
    /// Only this transport's.
    #[arg(long)]
    transport: Option<String>,
    /// Only `sent`, `failed`, `expired`, `pending`, `suppressed`, `folded` (into a digest by a budget), or changes:
    /// `silence`, `ack`, `notice`, `reload`.
    #[arg(long)]
    status: Option<String>,
    /// Only notifications to this subscriber (`*`: the workgroup).
    #[arg(long, value_name = "WHO")]
    to: Option<String>,
    /// Only about this alert (its id, 4 or more hex digits of it).
    #[arg(long, value_name = "ID")]
    alert: Option<String>,
    /// Only entries at or after this time (`2026-12-05 18:00`, local, or RFC 3339).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only entries before this time.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Older entries: the cursor the previous page ended with.
    #[arg(long)]
    cursor: Option<String>,
}

/// `alerter history`: through the API when `--socket` or `--url` says
/// which daemon (what a user without access to the state directory does),
/// else straight from the state database of `--config` (which works with
/// the daemon stopped). Oldest first, so the newest is at the bottom.
pub fn history(
    api: &ApiArgs,
    args: HistoryArgs,
    direct: impl FnOnce(Option<&std::path::Path>, &types::HistoryQuery) -> anyhow::Result<types::HistoryPage>,
) -> anyhow::Result<()> {
    let query = types::HistoryQuery {
        rule: args.rule,
        transport: args.transport,
        status: args.status,
        recipient: args.to,
        alert: args.alert,
        since: args.since.as_deref().map(parse_time).transpose()?,
        until: args.until.as_deref().map(parse_time).transpose()?,
        limit: Some(args.limit),
        cursor: args.cursor,
    };
    let page = if api.url.is_some() || api.socket.is_some() {
        let qs = serde_urlencoded::to_string(&query).context("encoding the query")?;
        call(api.client()?.get(&format!("{}?{qs}", alerter_api::paths::HISTORY)))?
    } else {
        direct(api.config.as_deref(), &query)?
    };
    for e in page.entries.iter().rev() {
        if api.json {
            println!("{}", serde_json::to_string(e)?);
            continue;
        }
        let to = if e.recipients.is_empty() { "-".to_string() } else { e.recipients.join(",") };
        let line = format!(
            "{}  {:<10}  {:<18}  {:<10}  {:<2}  {:<16}  {}",
            local(e.time),
            e.status,
            e.rule,
            e.transport.as_deref().unwrap_or("-"),
            e.attempts,
            to,
            e.summary
        );
        println!("{}", visible_line(&line));
        if let Some(d) = &e.detail {
            println!("{:21}{}", "", visible_line(d));
        }
    }
    if let Some(next) = &page.next {
        eprintln!("older entries: --cursor {next}");
    }
    Ok(())
}

/// `alerter alerts`.
#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Only alerts all these match (amtool's syntax: `rule=disk-space host=~"web.*"`).
    #[arg(value_name = "MATCHER")]
    matchers: Vec<String>,
    /// Which: `active` (firing and pending), `firing`, `pending`, `all`.
    #[arg(long, default_value = "active")]
    state: String,
    /// How many (at most 1000).
    #[arg(short = 'n', long, default_value_t = 100)]
    limit: usize,
    /// Skip this many (the next page).
    #[arg(long, default_value_t = 0)]
    offset: usize,
}

/// `alerter ack`.
#[derive(Debug, Args)]
pub struct AckArgs {
    /// Alert ids as `alerter alerts` shows them (4 or more hex digits
    /// will do), or matchers for a group (`rule=disk-space host=web01`).
    #[arg(required = true, value_name = "ID|MATCHER")]
    targets: Vec<String>,
    /// Why: in history and in `alerter alerts`.
    #[arg(short = 'm', long)]
    comment: Option<String>,
    /// On a receiving machine: the message history where popups are looked
    /// up (default: `alerter listen`'s). An id found in a popup there is
    /// acknowledged back to the daemon that sent it; the others go to the API.
    #[arg(long, value_name = "FILE")]
    history: Option<std::path::PathBuf>,
    /// Seal acknowledgements of popups with this workgroup key file (the
    /// daemon's messenger transport's `seal_key_file`).
    #[arg(long, value_name = "FILE")]
    key_file: Option<std::path::PathBuf>,
}

/// `alerter emit`.
#[derive(Debug, Args)]
pub struct EmitArgs {
    /// What happened (the summary).
    summary: String,
    /// `info`, `warning`, `critical`, or `resolved` to clear it.
    #[arg(short, long, default_value = "warning")]
    severity: String,
    /// The source, as rules match it.
    #[arg(long, default_value = "api")]
    source: String,
    /// The host it is about (default: the daemon's name).
    #[arg(long)]
    host: Option<String>,
    /// A label, `NAME=VALUE` (repeatable).
    #[arg(short, long = "label", value_name = "NAME=VALUE")]
    labels: Vec<String>,
    /// What identifies the alert across events (default: source, host, labels).
    #[arg(long)]
    key: Option<String>,
    /// A happening rather than a condition: notified once, never resolved.
    #[arg(long)]
    oneshot: bool,
    /// More text for mails and history.
    #[arg(long, default_value = "")]
    details: String,
}

/// `alerter emit`.
pub fn emit(api: &ApiArgs, args: EmitArgs) -> anyhow::Result<()> {
    let client = api.client()?;
    let mut labels = std::collections::BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l.split_once('=').with_context(|| format!("`{l}`: a label is NAME=VALUE"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let event = types::EventIn {
        source: Some(args.source),
        host: args.host,
        severity: args.severity,
        summary: args.summary,
        details: args.details,
        labels,
        key: args.key,
        oneshot: args.oneshot,
    };
    let res: types::Ingested = call(client.post(alerter_api::paths::EVENTS, &types::EventsIn::One(event)))?;
    if api.json {
        return print_json(&res);
    }
    println!("accepted {}", res.accepted);
    Ok(())
}

/// A query string value, escaped.
fn query_value(s: &str) -> String {
    percent_encode(s)
}

/// `alerter alerts`.
pub fn alerts(api: &ApiArgs, args: AlertsArgs) -> anyhow::Result<()> {
    let client = api.client()?;
    let mut path = format!(
        "{}?state={}&limit={}&offset={}",
        alerter_api::paths::ALERTS,
        query_value(&args.state),
        args.limit,
        args.offset
    );
    if !args.matchers.is_empty() {
        path.push_str(&format!("&filter={}", query_value(&args.matchers.join(" "))));
    }
    let page: types::AlertsPage = call(client.get(&path))?;
    if api.json {
        return print_json(&page);
    }
    if page.alerts.is_empty() {
        println!("no alerts");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = page.alerts.iter().map(alert_row).collect();
    table(&["ID", "RULE", "SEVERITY", "STATE", "SINCE", "HOST", "NOTE", "SUMMARY"], &rows);
    let shown = page.offset + page.alerts.len();
    if shown < page.total {
        println!("{}-{} of {}; `--offset {shown}` for more", page.offset + 1, shown, page.total);
    }
    Ok(())
}

fn alert_row(a: &types::AlertInfo) -> Vec<String> {
    let note = match (&a.ack, &a.silenced_by) {
        (Some(k), _) => match &k.comment {
            Some(c) => format!("acked by {}: {c}", k.by),
            None => format!("acked by {}", k.by),
        },
        (None, Some(s)) => format!("silenced by {s}"),
        (None, None) => String::new(),
    };
    vec![
        a.id.clone(),
        a.rule.clone(),
        a.severity.clone(),
        a.state.clone(),
        local(a.fired_at.unwrap_or(a.since)),
        a.host.clone(),
        note,
        a.summary.clone(),
    ]
}

/// `alerter ack`.
pub fn ack(api: &ApiArgs, args: AckArgs) -> anyhow::Result<()> {
    let (matchers, ids): (Vec<String>, Vec<String>) = args.targets.into_iter().partition(|t| t.contains(['=', '~']));
    // Popups first: an id this receiver was shown is acknowledged to its
    // sender over the Messenger protocol. What goes wrong with one id is
    // said, and the others still go.
    let history = args.history.clone().unwrap_or_else(crate::popup_ack::default_history);
    let key = match &args.key_file {
        Some(p) => Some(alerter_core::transport::messenger::read_key_file(p).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let mut failed = 0;
    let mut popups = Vec::new();
    let mut ids_left = Vec::new();
    for id in ids {
        match crate::popup_ack::find(&history, &id, key.is_some()) {
            Ok(Some(a)) => popups.push((id, a)),
            Ok(None) => ids_left.push(id),
            Err(e) => {
                eprintln!("alerter ack: {e:#}");
                failed += 1;
            }
        }
    }
    if !popups.is_empty() {
        let sender = crate::popup_ack::Sender {
            from: crate::popup_ack::login_name(),
            key,
            timeout: std::time::Duration::from_secs(5),
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        for (id, a) in &popups {
            match rt.block_on(crate::popup_ack::send(&sender, a)) {
                Ok(()) if api.json => println!(
                    "{}",
                    serde_json::json!({"acknowledged": id, "popup_from": a.daemon, "to": a.addr.to_string(), "notification": a.ack.notification})
                ),
                Ok(()) => println!("acknowledged {id}: the popup from {} ({})", a.daemon, a.addr),
                Err(e) => {
                    eprintln!("alerter ack: {id}: {e:#}");
                    failed += 1;
                }
            }
        }
    }
    let done = |failed: usize| match failed {
        0 => Ok(()),
        n => Err(anyhow::anyhow!("{n} of the ids could not be acknowledged")),
    };
    if ids_left.is_empty() && matchers.is_empty() {
        return done(failed);
    }
    let ids = ids_left;
    let client = api.client()?;
    let req = types::AckRequest { ids, matchers, comment: args.comment };
    let res: types::AckResult = call(client.post(alerter_api::paths::ACKS, &req))?;
    if api.json {
        print_json(&res)?;
        return done(failed);
    }
    let n = res.acknowledged.len();
    println!("acknowledged {n} alert{}", if n == 1 { "" } else { "s" });
    let rows: Vec<Vec<String>> = res.acknowledged.iter().map(alert_row).collect();
    table(&["ID", "RULE", "SEVERITY", "STATE", "SINCE", "HOST", "NOTE", "SUMMARY"], &rows);
    done(failed)
}

/// An id as one path segment: anything but unreserved characters escaped.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
