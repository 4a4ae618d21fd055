//! `alerter`: the command line. One binary for the daemon, the checks, the
//! rule tests and (in later issues) sending and receiving popups.
//!
//! This file owns argument parsing, logging setup, exit codes and signal
//! handling; everything else lives in alerter-core.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use alerter_core::clock::SystemClock;
use alerter_core::config;
use alerter_core::daemon::{self, Control, RunOptions};
use alerter_core::plugin::ffi::Descriptor;
use alerter_core::plugin::supervisor::Backoff;
use alerter_core::plugin::{PluginRegistry, host};
use alerter_core::ruletest;
use alerter_core::service::ServiceManager;
use alerter_core::transport;
use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

mod agent_cli;
mod agents;
mod api_cli;
mod desktop;
mod history;
mod init_cli;
mod journal;
mod listen_cli;
mod manual_cli;
mod messenger_cli;
mod popup_ack;
mod presence;
mod scan_cli;
mod signals;

/// sysexits(3) EX_CONFIG: the configuration is wrong.
const EX_CONFIG: u8 = 78;

/// Administrative alerts: plugin sources, YAML rules, Messenger popups and email.
#[derive(Debug, Parser)]
#[command(name = "alerter", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log filter, e.g. `info`, `debug`, `alerter_core=debug` (also ALERTER_LOG).
    #[arg(long, global = true, env = "ALERTER_LOG", default_value = "info,rusqlite_migration=warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: load sources, apply rules, deliver notifications.
    ///
    /// SIGHUP reloads the configuration (a broken one is rejected and the
    /// running one kept); SIGTERM or SIGINT shut down cleanly.
    Run {
        /// Config file; without it, the embedded default config.
        #[arg(short, long, env = "ALERTER_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// How long shutdown waits for queued deliveries, in seconds.
        #[arg(long, default_value_t = 5, value_name = "SECONDS")]
        shutdown_grace: u64,
    },
    /// Check a configuration and print every problem with file:line:column.
    ///
    /// Exits 0 when the configuration is valid (warnings allowed) and 78
    /// (EX_CONFIG) when it has errors.
    Check {
        /// Config file; without it, the embedded default config.
        #[arg(short, long, env = "ALERTER_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run rule unit tests: events at given times in, expected notifications out.
    ///
    /// Exits 0 when all pass, 1 when any fails, 78 when a test file or the
    /// config it names is invalid. See docs/rule-tests.md for the format.
    Test {
        /// Test files (YAML).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// List the source plugins: built-in ones and those in the plugin
    /// directories, with version, ABI, path and SHA-256, and why any file
    /// was refused.
    Plugins {
        /// Config file whose `alerter.plugin_dirs` to scan; without it, the
        /// embedded default config.
        #[arg(short, long, env = "ALERTER_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Scan this directory too (repeatable).
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a popup, like `net send`: to a machine, a group of the config
    /// (`@admins`), or the whole workgroup (`*`). Exits 0 when delivered.
    Send(messenger_cli::SendArgs),
    /// Receive popups: the Messenger service for this machine. Registers
    /// the name, answers name queries, and shows each message.
    Listen(listen_cli::ListenArgs),
    /// The session agent: in a user's desktop session, shows the popups
    /// the system receiver (`alerter listen --agents`) hands it.
    Agent(agent_cli::AgentArgs),
    /// Hand a message smbd received to the system receiver: what Samba's
    /// `message command` runs, beside Samba.
    Deliver(agent_cli::DeliverArgs),
    /// Show recent notifications (sent, failed, pending, expired),
    /// suppressions with the reason, and changes (silences, acks, notices)
    /// with who made them; filtered, a page at a time.
    History {
        #[command(flatten)]
        api: api_cli::ApiArgs,
        #[command(flatten)]
        args: api_cli::HistoryArgs,
    },
    /// Make a workgroup key for sealed messages.
    Keygen(messenger_cli::KeygenArgs),
    /// Show a running daemon's state: its sources and transports, alerts,
    /// silences, the outbox, the next notices.
    Status(api_cli::ApiArgs),
    /// List a running daemon's alerts (firing and pending; the most severe
    /// first), with who acknowledged or silenced them.
    Alerts {
        #[command(flatten)]
        api: api_cli::ApiArgs,
        #[command(flatten)]
        args: api_cli::AlertsArgs,
    },
    /// Acknowledge alerts (by id, or a group by matchers): their repeats
    /// stop for every recipient, until their severity rises or they resolve.
    Ack {
        #[command(flatten)]
        api: api_cli::ApiArgs,
        #[command(flatten)]
        args: api_cli::AckArgs,
    },
    /// Send an event to a running daemon, routed by its rules like a
    /// source's (needs the `ingest` scope).
    Emit {
        #[command(flatten)]
        api: api_cli::ApiArgs,
        #[command(flatten)]
        args: api_cli::EmitArgs,
    },
    /// Silence alerts on a running daemon (kept across reloads and
    /// restarts), list silences, or end them.
    Silence {
        #[command(flatten)]
        api: api_cli::ApiArgs,
        #[command(subcommand)]
        command: api_cli::SilenceCommand,
    },
    /// Announce something once to the workgroup, a group or people, now
    /// or at a time, with reminders (kept across restarts); list notices;
    /// cancel them.
    Notice {
        #[command(flatten)]
        api: api_cli::ApiArgs,
        #[command(subcommand)]
        command: api_cli::NoticeCommand,
    },
    /// Make the running daemon read its config again (as SIGHUP does) and
    /// say whether it took it, with every problem if not (needs `admin`).
    Reload {
        #[command(flatten)]
        api: api_cli::ApiArgs,
    },
    /// Send a test notification through one transport of the running
    /// daemon and wait for the outcome: `alerter test-transport popup --to alice`.
    TestTransport {
        #[command(flatten)]
        api: api_cli::ApiArgs,
        #[command(flatten)]
        args: api_cli::TestTransportArgs,
    },
    /// Print the JSON Schema of the config file (for editors).
    Schema,
    /// Print the OpenAPI document of the control API.
    Openapi,
    /// Write a starter config to edit: the default one (disks, auth log),
    /// with popups, mail and people ready to enable. Refuses to overwrite.
    Init(init_cli::InitArgs),
    /// Print the manual page alerter(1) (`alerter man | man -l -`), or
    /// write every page into a directory.
    Man(manual_cli::ManArgs),
    /// Print shell completions: `alerter completions bash >
    /// /etc/bash_completion.d/alerter` (zsh: a `_alerter` file on `$fpath`;
    /// fish: ~/.config/fish/completions/alerter.fish).
    Completions(manual_cli::CompletionArgs),
    /// Run log patterns over files and count what they match, like
    /// `grep -c` or `fail2ban-regex`: to try patterns for a `log` source.
    /// Exits 0 when something matched, 1 when nothing did.
    Scan(scan_cli::ScanArgs),
    /// Host one plugin in this process, speaking the plugin protocol on
    /// standard input and output (the daemon runs this; not for people).
    #[command(hide = true)]
    PluginHost {
        /// Host the built-in plugin of this name instead of a file.
        #[arg(long, value_name = "NAME", conflicts_with = "path")]
        builtin: Option<String>,
        /// The `.so` file.
        #[arg(required_unless_present = "builtin")]
        path: Option<PathBuf>,
        /// Load the file open as this descriptor, checked by the daemon
        /// (PATH then only names it).
        #[arg(long, value_name = "N", requires = "path")]
        fd: Option<i32>,
    },
}

/// The plugins linked into this binary.
fn builtin_plugins() -> Vec<Descriptor> {
    [
        alerter_plugin_heartbeat::descriptor(),
        alerter_plugin_disk::descriptor(),
        alerter_plugin_script::descriptor(),
        alerter_plugin_log::descriptor(),
        alerter_plugin_alertmanager::descriptor(),
    ]
    .into_iter()
    .map(|d| Descriptor::check(d).expect("built-in plugins match this ABI"))
    .collect()
}

fn registry() -> PluginRegistry {
    PluginRegistry::new(builtin_plugins(), std::env::current_exe().ok())
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("alerter: bad log filter `{filter}` ({e}); using `info`");
        tracing_subscriber::EnvFilter::new("info")
    });
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if journal::stderr_is_journal() {
        // journald stamps each line itself and reads the priority from an
        // sd-daemon(3) `<N>` prefix; our own time and colours would only
        // repeat or garble it.
        fmt.with_ansi(false).event_format(journal::Prefixed::new()).init();
    } else {
        fmt.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn main() -> ExitCode {
    // Run as a script's reaper (see alerter-spawn) before anything else.
    alerter_spawn::run_reaper_if_invoked();
    // Reapers are this very binary: `/proc/self/exe` in the forked child is
    // still this image, even after a package upgrade replaced the file.
    alerter_spawn::set_reaper("/proc/self/exe".into());
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, shutdown_grace } => {
            init_logging(&cli.log);
            run(config, Duration::from_secs(shutdown_grace))
        }
        Command::Check { config } => check(config),
        Command::Test { files } => test(&files),
        Command::Plugins { config, dirs, json } => plugins(config, dirs, json),
        Command::Send(args) => {
            // A command for people: quiet unless something goes wrong.
            init_logging(if std::env::var_os("ALERTER_LOG").is_some() { &cli.log } else { "warn" });
            messenger_cli::send(args)
        }
        Command::Listen(args) => {
            init_logging(&cli.log);
            listen_cli::listen(args)
        }
        Command::Agent(args) => {
            init_logging(&cli.log);
            agent_cli::agent(args)
        }
        Command::Deliver(args) => {
            init_logging(if std::env::var_os("ALERTER_LOG").is_some() { &cli.log } else { "warn" });
            agent_cli::deliver(args)
        }
        Command::Keygen(args) => messenger_cli::keygen(args),
        Command::Status(args) => api_cli::run("status", || api_cli::status(&args)),
        Command::Alerts { api, args } => api_cli::run("alerts", || api_cli::alerts(&api, args)),
        Command::Ack { api, args } => api_cli::run("ack", || api_cli::ack(&api, args)),
        Command::Emit { api, args } => api_cli::run("emit", || api_cli::emit(&api, args)),
        Command::Silence { api, command } => api_cli::run("silence", || api_cli::silence(&api, command)),
        Command::Notice { api, command } => api_cli::run("notice", || api_cli::notice(&api, command)),
        Command::Reload { api } => api_cli::run("reload", || api_cli::reload(&api)),
        Command::TestTransport { api, args } => api_cli::run("test-transport", || api_cli::test_transport(&api, args)),
        Command::History { api, args } => api_cli::run("history", || api_cli::history(&api, args, history)),
        Command::PluginHost { builtin, path, fd } => {
            plugin_host(builtin, fd.map(|n| PathBuf::from(format!("/proc/self/fd/{n}"))).or(path))
        }
        Command::Init(args) => match init_cli::init(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("alerter init: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Openapi => {
            print!("{}", alerter_api::openapi::text());
            ExitCode::SUCCESS
        }
        Command::Schema => {
            print!("{}", config::json_schema_text());
            ExitCode::SUCCESS
        }
        Command::Man(args) => match manual_cli::man(Cli::command(), args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("alerter man: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Completions(args) => match manual_cli::completions(Cli::command(), args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("alerter completions: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Scan(args) => match scan_cli::scan(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("alerter scan: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn check(path: Option<PathBuf>) -> ExitCode {
    let color = std::io::stdout().is_terminal();
    let plugins = registry();
    match config::load(path.as_deref(), &transport::load_options(&plugins)) {
        Ok(loaded) => {
            print!("{}", config::diag::render(&loaded.warnings, &loaded.sources, color));
            let c = &loaded.config;
            println!(
                "{} rules, {} sources, {} transports, {} subscribers, {} groups, {} schedules, {} silences, {} notices",
                c.rules.len(),
                c.sources.len(),
                c.transports.len(),
                c.subscribers.len(),
                c.groups.len(),
                c.schedules.len(),
                c.silences.len(),
                c.notices.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print!("{}", errors.render(color));
            ExitCode::from(EX_CONFIG)
        }
    }
}

fn test(files: &[PathBuf]) -> ExitCode {
    let color = std::io::stdout().is_terminal();
    let (mut passed, mut failed, mut invalid) = (0, 0, 0);
    for path in files {
        println!("{}", path.display());
        match ruletest::run_file(path, &registry()) {
            Ok(result) => {
                for case in result.cases {
                    match case.failure {
                        None => {
                            passed += 1;
                            println!("  ok    {}", case.name);
                        }
                        Some(diff) => {
                            failed += 1;
                            println!("  FAIL  {}", case.name);
                            for line in diff.lines() {
                                println!("        {line}");
                            }
                        }
                    }
                }
            }
            Err(ruletest::TestFileError::Invalid(errors)) => {
                invalid += 1;
                print!("{}", errors.render(color));
            }
        }
    }
    let total = passed + failed;
    println!("{total} {}: {passed} passed, {failed} failed", if total == 1 { "test" } else { "tests" });
    if invalid > 0 {
        ExitCode::from(EX_CONFIG)
    } else if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run(path: Option<PathBuf>, grace: Duration) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("alerter: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        // Signals first: the default action of SIGHUP and SIGTERM is to end
        // the process, so one that arrives while the config loads (a reload
        // right after start, say) would kill the daemon. Taken now, it waits
        // until the daemon runs.
        let signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("alerter: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let plugins = registry();
        let loaded = match config::load(path.as_deref(), &transport::load_options(&plugins)) {
            Ok(l) => l,
            Err(errors) => {
                eprint!("{}", errors.render(std::io::stderr().is_terminal()));
                return ExitCode::from(EX_CONFIG);
            }
        };
        for line in config::diag::render_short(&loaded.warnings, &loaded.sources) {
            tracing::warn!("{line}");
        }
        for r in &loaded.config.plugins.refused {
            tracing::warn!(path = %r.path.display(), "plugin refused: {}", r.reason);
        }
        match run_daemon(loaded.config, path, grace, plugins, signals).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("alerter: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn run_daemon(
    cfg: config::Config,
    path: Option<PathBuf>,
    grace: Duration,
    plugins: PluginRegistry,
    signals: Signals,
) -> anyhow::Result<()> {
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(8);
    let forward = tokio::spawn(signals.forward(ctl_tx));
    let opts = RunOptions {
        config_path: path,
        plugins: Arc::new(plugins),
        clock: Arc::new(SystemClock),
        shutdown_grace: grace,
        backoff: Backoff::default(),
        drop_report_every: Duration::from_secs(10),
        service: ServiceManager::from_env(),
    };
    let result = daemon::run(cfg, opts, ctl_rx, None).await;
    forward.abort();
    result.context("the daemon stopped with an error")
}

/// SIGHUP (a reload) and SIGTERM/SIGINT (a shutdown), taken from the start.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    /// The watchdog test hook: SIGUSR2 blocks the engine loop for this
    /// long. Only with `ALERTER_TEST_STALL_ON_SIGUSR2=DURATION` in the
    /// environment; otherwise SIGUSR2 keeps its default action.
    stall: Option<(tokio::signal::unix::Signal, Duration)>,
}

/// The environment variable that turns the watchdog test hook on.
const STALL_HOOK: &str = "ALERTER_TEST_STALL_ON_SIGUSR2";

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let stall = match std::env::var(STALL_HOOK) {
            Ok(v) => {
                let d = humantime::parse_duration(&v).with_context(|| format!("{STALL_HOOK}={v}: not a duration"))?;
                Some((signal(SignalKind::user_defined2()).context("cannot handle SIGUSR2")?, d))
            }
            Err(_) => None,
        };
        Ok(Signals {
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            stall,
        })
    }

    /// Turns them into the daemon's controls.
    async fn forward(mut self, tx: tokio::sync::mpsc::Sender<Control>) {
        loop {
            let stall = async {
                match &mut self.stall {
                    Some((sig, d)) => {
                        sig.recv().await;
                        *d
                    }
                    None => std::future::pending().await,
                }
            };
            let ctl = tokio::select! {
                _ = self.hup.recv() => Control::Reload,
                _ = self.term.recv() => Control::Shutdown,
                _ = self.int.recv() => Control::Shutdown,
                d = stall => Control::Stall(d),
            };
            if tx.send(ctl).await.is_err() {
                return;
            }
        }
    }
}

fn plugins(config: Option<PathBuf>, extra: Vec<PathBuf>, json: bool) -> ExitCode {
    let mut dirs = config::plugin_dirs(config.as_deref());
    dirs.extend(extra);
    let set = registry().scan(&dirs);
    if json {
        let plugins: Vec<serde_json::Value> = set
            .plugins
            .values()
            .map(|p| {
                serde_json::json!({
                    "name": p.meta.name,
                    "version": p.meta.version,
                    "abi": p.meta.abi,
                    "kind": p.kind_name(),
                    "path": p.path(),
                    "sha256": p.sha256,
                    "description": p.meta.description,
                })
            })
            .collect();
        let refused: Vec<serde_json::Value> =
            set.refused.iter().map(|r| serde_json::json!({"path": r.path, "reason": r.reason})).collect();
        println!("{}", serde_json::json!({ "plugins": plugins, "refused": refused }));
        return ExitCode::SUCCESS;
    }
    let rows: Vec<[String; 6]> = set
        .plugins
        .values()
        .map(|p| {
            [
                p.meta.name.clone(),
                p.meta.version.clone(),
                p.meta.abi.clone().unwrap_or_else(|| "-".into()),
                p.kind_name().to_string(),
                p.sha256.clone().unwrap_or_else(|| "-".into()),
                p.path().map_or_else(|| "-".into(), |p| p.display().to_string()),
            ]
        })
        .collect();
    let header = ["NAME", "VERSION", "ABI", "KIND", "SHA256", "PATH"].map(String::from);
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
    if dirs.is_empty() {
        println!("\nno plugin directories configured (alerter.plugin_dirs)");
    }
    if !set.refused.is_empty() {
        println!("\nrefused:");
        for r in &set.refused {
            println!("  {}: {}", r.path.display(), r.reason);
        }
    }
    ExitCode::SUCCESS
}

fn plugin_host(builtin: Option<String>, path: Option<PathBuf>) -> ExitCode {
    let code = match (builtin, path) {
        (Some(name), _) => match builtin_plugins().into_iter().find(|d| d.name() == name) {
            Some(d) => host::main(host::Target::Builtin(d)),
            None => {
                eprintln!("alerter plugin-host: no built-in plugin `{name}`");
                3
            }
        },
        (None, Some(path)) => host::main(host::Target::File(&path)),
        (None, None) => 3,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// A page of history read straight from the state database of a config.
fn history(
    path: Option<&std::path::Path>,
    q: &alerter_api::types::HistoryQuery,
) -> anyhow::Result<alerter_api::types::HistoryPage> {
    let plugins = registry();
    let cfg = match config::load_for_delivery(path, &transport::load_options(&plugins)) {
        Ok(l) => l.config,
        Err(errors) => {
            eprint!("{}", errors.render(std::io::stderr().is_terminal()));
            anyhow::bail!("the config has errors");
        }
    };
    let db = cfg.state_dir.join(alerter_core::store::DB_FILE);
    if !db.exists() {
        anyhow::bail!("no state in {} yet (the daemon has not run with this config)", cfg.state_dir.display());
    }
    let (filter, limit, cursor) = alerter_core::control::history_filter(q).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (items, next) = alerter_core::store::Store::open(&cfg.state_dir)?.history_page(&filter, limit, cursor)?;
    Ok(alerter_api::types::HistoryPage {
        entries: items.into_iter().map(alerter_core::control::history_entry).collect(),
        next: next.map(|c| c.to_string()),
    })
}
