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

use alerter_core::config::{self, LoadOptions, NoSources};
use alerter_core::daemon::{self, Control, RunOptions, SystemClock};
use alerter_core::ruletest;
use anyhow::Context;
use clap::{Parser, Subcommand};

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
    /// Print the JSON Schema of the config file (for editors).
    Schema,
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("alerter: bad log filter `{filter}` ({e}); using `info`");
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, shutdown_grace } => {
            init_logging(&cli.log);
            run(config, Duration::from_secs(shutdown_grace))
        }
        Command::Check { config } => check(config),
        Command::Test { files } => test(&files),
        Command::Schema => {
            print!("{}", config::json_schema_text());
            ExitCode::SUCCESS
        }
    }
}

fn check(path: Option<PathBuf>) -> ExitCode {
    let color = std::io::stdout().is_terminal();
    match config::load(path.as_deref(), &LoadOptions::default()) {
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
        match ruletest::run_file(path, &NoSources) {
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
    let loaded = match config::load(path.as_deref(), &LoadOptions::default()) {
        Ok(l) => l,
        Err(errors) => {
            eprint!("{}", errors.render(std::io::stderr().is_terminal()));
            return ExitCode::from(EX_CONFIG);
        }
    };
    for line in config::diag::render_short(&loaded.warnings, &loaded.sources) {
        tracing::warn!("{line}");
    }
    match run_daemon(loaded.config, path, grace) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("alerter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_daemon(cfg: config::Config, path: Option<PathBuf>, grace: Duration) -> anyhow::Result<()> {
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(8);
        let signals = tokio::spawn(forward_signals(ctl_tx));
        let opts = RunOptions {
            config_path: path,
            catalog: Arc::new(NoSources),
            clock: Arc::new(SystemClock),
            shutdown_grace: grace,
        };
        let result = daemon::run(cfg, opts, ctl_rx, None).await;
        signals.abort();
        result.context("the daemon stopped with an error")
    })
}

/// Turns SIGHUP into a reload and SIGTERM/SIGINT into a shutdown.
async fn forward_signals(tx: tokio::sync::mpsc::Sender<Control>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    loop {
        let ctl = tokio::select! {
            _ = hup.recv() => Control::Reload,
            _ = term.recv() => Control::Shutdown,
            _ = int.recv() => Control::Shutdown,
        };
        if tx.send(ctl).await.is_err() {
            return Ok(());
        }
    }
}
