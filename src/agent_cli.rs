//! `alerter agent`: the small per-user process in a desktop session that
//! shows the popups the system receiver hands it; and `alerter deliver`,
//! what smbd's `message command` runs to hand a message it received to
//! the receiver. Both talk to the receiver's local socket (see
//! [`crate::agents`]).

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::agents::{
    Acked, AgentSays, DEADLINE, DEFAULT_SOCKET, Handed, Hello, MAX_HANDED_TEXT, MAX_LINE, MAX_POPUP_LINE, Reply,
    read_line,
};

/// `alerter agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The system receiver's socket (`alerter listen --agents`).
    #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
    socket: PathBuf,
    /// Print one JSON object per message instead of text.
    #[arg(long)]
    json: bool,
    /// Do not show desktop notifications.
    #[arg(long)]
    no_desktop: bool,
}

/// `alerter deliver`.
#[derive(Debug, Args)]
pub struct DeliverArgs {
    /// The sender's name (smbd's `%f`).
    #[arg(long, value_name = "NAME")]
    from: String,
    /// The name it was sent to (smbd's `%L`, the called name). A name
    /// with spaces may come as several words, and one may start with `-`:
    /// they are all taken, so give it last.
    #[arg(long, value_name = "NAME", num_args = 1.., allow_hyphen_values = true, required = true)]
    to: Vec<String>,
    /// The file smbd wrote the text to (`%s`), deleted once read; without
    /// it, the text is read from standard input.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// The system receiver's socket (`alerter listen --agents`).
    #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
    socket: PathBuf,
}

/// The longest message text taken from smbd's file.
const MAX_FILE: u64 = 64 * 1024;

pub fn agent(a: AgentArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("alerter agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let mut stop = crate::signals::StopSignals::new();
        tokio::select! {
            _ = run_agent(&a) => {}
            _ = stop.recv() => {}
        }
    });
    ExitCode::SUCCESS
}

/// Connects, shows what comes, and connects again (1 s doubling to 30 s)
/// when the receiver goes away: it restarts, the agent stays.
async fn run_agent(a: &AgentArgs) {
    // Acknowledgements from the notifications go through the receiver,
    // which holds the workgroup key: asked while it is away, they go when
    // it is back (and it knows the popups it handed before it went).
    let (acks_tx, mut acks) = mpsc::channel(16);
    let desktop = match a.no_desktop {
        true => None,
        // Whether a popup may be acknowledged is the receiver's word
        // (`ackable`), which knows whether the workgroup seals.
        false => crate::desktop::connect_or_say(crate::desktop::Acker::Relay(acks_tx), false).await,
    };
    let mut wait = Duration::from_secs(1);
    let mut said = None::<String>;
    loop {
        match session(a, desktop.as_ref(), &mut acks).await {
            Ok(()) => {
                tracing::info!("the receiver closed the connection; connecting again");
                wait = Duration::from_secs(1);
            }
            Err(e) => {
                let e = e.to_string();
                if said.as_deref() != Some(&e) {
                    tracing::warn!("{e}; trying again");
                    said = Some(e);
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

async fn session(
    a: &AgentArgs,
    desktop: Option<&crate::desktop::Desktop>,
    acks: &mut mpsc::Receiver<String>,
) -> anyhow::Result<()> {
    let stream = UnixStream::connect(&a.socket)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the receiver at {}: {e}", a.socket.display()))?;
    let (read, mut write) = stream.into_split();
    let hello = format!("{}\n", serde_json::to_string(&Hello::Agent {})?);
    write.write_all(hello.as_bytes()).await?;
    tracing::info!("connected to the receiver at {}", a.socket.display());
    let mut read = BufReader::new(read);
    let reader = async {
        let mut buf = Vec::new();
        while read_line(&mut read, &mut buf, MAX_POPUP_LINE).await?.is_some() {
            let v: serde_json::Value = match serde_json::from_slice(&buf) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("the receiver sent something that is not JSON: {e}");
                    continue;
                }
            };
            if let Some(m) = v.get("message") {
                crate::listen_cli::show(m, a.json);
                if let Some(d) = desktop {
                    d.show(m);
                }
            } else if let Some(Ok(acked)) = v.get("acked").map(|v| serde_json::from_value::<Acked>(v.clone())) {
                match acked.error {
                    None => tracing::info!("acknowledged (notification {})", acked.notification),
                    Some(e) => tracing::warn!("not acknowledged (notification {}): {e}", acked.notification),
                }
            } else {
                tracing::debug!("an unknown line from the receiver");
            }
        }
        anyhow::Ok(())
    };
    // Acknowledgements asked for from the desktop, to the receiver; those
    // asked while it was away go when it is back.
    let writer = async {
        while let Some(notification) = acks.recv().await {
            let line = format!("{}\n", serde_json::to_string(&AgentSays::Ack { notification })?);
            write.write_all(line.as_bytes()).await?;
        }
        std::future::pending::<anyhow::Result<()>>().await
    };
    tokio::select! {
        r = reader => r,
        r = writer => r,
    }
}

pub fn deliver(a: DeliverArgs) -> ExitCode {
    match deliver_inner(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alerter deliver: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn deliver_inner(a: &DeliverArgs) -> anyhow::Result<()> {
    let text = match &a.file {
        Some(f) => read_message_file(f)?,
        None => {
            let mut bytes = Vec::new();
            std::io::stdin().take(MAX_FILE).read_to_end(&mut bytes)?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
    };
    // Cut here, so that the hello fits the socket's line however the text
    // is escaped: a long message is shown cut rather than lost.
    let mut text = text;
    text.truncate(text.floor_char_boundary(MAX_HANDED_TEXT));
    let handed = Handed { from: a.from.clone(), to: a.to.join(" "), text };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let reply = rt.block_on(async {
        tokio::time::timeout(DEADLINE * 2, hand_over(&a.socket, handed))
            .await
            .map_err(|_| anyhow::anyhow!("the receiver at {} did not answer", a.socket.display()))?
    })?;
    match reply {
        Reply::Ok {} => Ok(()),
        Reply::Error(e) => anyhow::bail!("the receiver refused the message: {e}"),
    }
}

async fn hand_over(socket: &Path, m: Handed) -> anyhow::Result<Reply> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the receiver at {}: {e}", socket.display()))?;
    let line = format!("{}\n", serde_json::to_string(&Hello::Deliver(m))?);
    stream.write_all(line.as_bytes()).await?;
    let mut read = BufReader::new(stream);
    let mut buf = Vec::new();
    if read_line(&mut read, &mut buf, MAX_LINE).await?.is_none() {
        anyhow::bail!("the receiver closed the connection without an answer");
    }
    Ok(serde_json::from_slice(&buf)?)
}

/// smbd's message file: read on the descriptor checked (a regular file,
/// not a link, with no other name, written by the account we run as, at
/// most 64 KiB), then deleted, as smbd expects of the command. smbd has
/// made it UTF-8 already.
fn read_message_file(path: &Path) -> anyhow::Result<String> {
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open the message file {}: {e}", path.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        anyhow::bail!("{} is not a regular file", path.display());
    }
    // smbd writes the file as the account it runs the command as: a file
    // of someone else's, or a hard link to one, is not a message.
    if meta.nlink() != 1 {
        anyhow::bail!("{} has other names (a hard link): not smbd's message file", path.display());
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        anyhow::bail!(
            "{} belongs to uid {}, not to us (uid {me}): not smbd's message file",
            path.display(),
            meta.uid()
        );
    }
    let mut bytes = Vec::new();
    (&mut file).take(MAX_FILE).read_to_end(&mut bytes)?;
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!("cannot delete the message file {}: {e}", path.display());
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
