//! `alerter send` and `alerter keygen`: the Messenger protocol from the
//! command line, like `net send`. (`alerter listen` is in `listen_cli`.)

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use alerter_core::config;
use alerter_core::config::model::{MessengerConfig, MessengerForm, TransportConfig};
use alerter_core::event::Severity;
use alerter_core::notify::Notification;
use alerter_core::rules::Recipient;
use alerter_core::transport;
use alerter_core::transport::Transport;
use alerter_core::transport::messenger::{MessengerOptions, MessengerTransport, read_key_file, read_sign_key_file};
use anyhow::{Context, bail};
use clap::Args;
use messenger_transport::CodePage;
use messenger_transport::iface::{Broadcast, InterfaceSpec};
use messenger_transport::resolve::Target;

/// `alerter send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// How to send: `messenger` (a popup, the default) or `email` (needs a
    /// config with an email transport; `mail` works too).
    #[arg(long, default_value = "messenger", value_parser = via_parser())]
    via: String,
    /// Config file: its transport's settings, and its groups for `@group`.
    #[arg(short, long, env = "ALERTER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Which transport of the config to use (default: the first of its kind).
    #[arg(long, value_name = "ID")]
    transport: Option<String>,
    /// The sender's name (at most 15 characters).
    #[arg(long, value_name = "NAME")]
    from: Option<String>,
    /// Send to this address instead of looking the name up (like `smbclient -I`).
    #[arg(short = 'I', long, value_name = "ADDRESS")]
    ip: Option<IpAddr>,
    /// TCP port: 139 (with a NetBIOS session request), 445, or another.
    #[arg(short, long)]
    port: Option<u16>,
    /// Send a datagram (WinPopup) instead of using a session.
    #[arg(long, conflicts_with = "rpc")]
    datagram: bool,
    /// Send in the RPC form (NetrSendMessage over DCE/RPC on UDP 135), as
    /// Windows 2000/XP/2003 take it. The recipient is a name, or an address
    /// whose name is asked for (a node status request) first. It carries
    /// no seal.
    #[arg(long, conflicts_with = "key_file")]
    rpc: bool,
    /// UDP port of the RPC form (default: the config's `rpc_port`, else
    /// 135; `--port` is the session form's).
    #[arg(long, value_name = "PORT")]
    rpc_port: Option<u16>,
    /// The workgroup `*` means (default: the config's, else WORKGROUP).
    #[arg(long, value_name = "NAME")]
    workgroup: Option<String>,
    /// Broadcast workgroup messages and name queries to this address only
    /// (repeatable), instead of to each interface's own broadcast address.
    #[arg(long, value_name = "ADDRESS")]
    broadcast: Vec<Ipv4Addr>,
    /// Broadcast on these interfaces only (repeatable), as Samba's
    /// `interfaces`: a name (`eth0`, `enp*`), an address of this machine,
    /// or a network (`10.0.0.0/24`). Default: every interface that is up.
    #[arg(long, value_name = "IFACE")]
    interface: Vec<InterfaceSpec>,
    /// Ask this WINS server for names before broadcasting (`ADDRESS`, or
    /// `ADDRESS:PORT`; default: the config's `wins`).
    #[arg(long, value_name = "ADDRESS", value_parser = crate::listen_cli::parse_wins)]
    wins: Option<std::net::SocketAddr>,
    /// Print nothing when the message went out.
    #[arg(short, long)]
    quiet: bool,
    /// Seal the message with this workgroup key file.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Sign the sealed message with this sender key (`alerter keygen --sign`).
    #[arg(long, value_name = "FILE", requires = "key_file")]
    sign_key: Option<PathBuf>,
    /// OEM code page of the text (default: the config's, else 850).
    #[arg(long, value_name = "NUMBER")]
    code_page: Option<u16>,
    /// Longest text in bytes; longer is cut with ` [...]`.
    #[arg(long, default_value_t = 4095, value_name = "BYTES")]
    max_length: usize,
    /// Give up on a recipient after this many seconds.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    timeout: u64,
    /// Recipient: a machine name, `*` for the whole workgroup, or `@group`
    /// from the config; with `--via email`, a mail address or `@group`.
    #[arg(value_name = "NAME|*|@GROUP")]
    to: String,
    /// The message; read from standard input when left out.
    #[arg(value_name = "MESSAGE")]
    message: Vec<String>,
}

/// `--via`: `mail` is accepted for `email`, since that is what admins call
/// it (and what the example configs name the transport); it is normalised
/// here so the rest compares with `email` only.
fn via_parser() -> impl clap::builder::TypedValueParser<Value = String> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new([PossibleValue::new("messenger"), PossibleValue::new("email").alias("mail")])
        .map(|v| if v == "mail" { "email".to_string() } else { v })
}

/// The config for its transports and groups. Sending needs no source, so
/// no plugin directory is read and no plugin started: a message about a
/// broken plugin must still go out. Built-in sources are checked as
/// `alerter check` does, so a valid config is one that `send` accepts.
fn load_config(path: Option<&Path>) -> anyhow::Result<Option<config::Config>> {
    let Some(path) = path else { return Ok(None) };
    let registry = crate::registry();
    match config::load_for_delivery(Some(path), &transport::load_options(&registry)) {
        Ok(l) => Ok(Some(l.config)),
        Err(e) => bail!("{}", e.render(false)),
    }
}

/// The members of `@group` that a transport of `kind` can reach, as the
/// daemon sends to them: a member with neither a user nor a machine gets no popup, one
/// without an address no mail (each is named on standard error).
fn group_recipients(c: &config::Config, group: &str, kind: &str) -> anyhow::Result<Vec<Recipient>> {
    let Some(g) = c.groups.get(group) else { bail!("the config has no group `{group}`") };
    let (field, what) = if kind == "email" { ("email", "mail") } else { ("user` or `machine", "popup") };
    let mut out = Vec::new();
    for (id, s) in g.members.iter().filter_map(|m| c.subscribers.get(m).map(|s| (m, s))) {
        let machine = if kind == "email" { None } else { s.machine.clone() };
        let user = if kind == "email" { None } else { s.user.clone() };
        let email = if kind == "email" { s.email.clone() } else { None };
        let r = Recipient { id: id.clone(), name: s.name.clone(), machine, user, email, group: None };
        if r.reachable_by(kind) {
            out.push(r);
        } else {
            eprintln!("alerter send: `{id}` of @{group} has no `{field}`; no {what} for them");
        }
    }
    if out.is_empty() {
        bail!("nobody in @{group} has a `{field}` to send a {what} to");
    }
    Ok(out)
}

pub fn send(args: SendArgs) -> ExitCode {
    match send_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alerter send: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn send_inner(a: SendArgs) -> anyhow::Result<()> {
    let cfg = load_config(a.config.as_deref())?;
    if a.via == "email" {
        return send_email(&a, cfg);
    }
    let (mcfg, name, workgroup) = match &cfg {
        Some(c) => {
            let m = c.transports.iter().find_map(|(id, t)| match t {
                TransportConfig::Messenger(m) if a.transport.as_deref().is_none_or(|want| want == id) => {
                    Some((**m).clone())
                }
                _ => None,
            });
            if a.transport.is_some() && m.is_none() {
                bail!("the config has no messenger transport `{}`", a.transport.as_deref().unwrap_or_default());
            }
            (m.unwrap_or_default(), c.name.clone(), c.workgroup.clone())
        }
        None => (MessengerConfig::default(), config::hostname(), "WORKGROUP".to_string()),
    };
    let workgroup = a.workgroup.clone().unwrap_or(workgroup);
    let mut opts = MessengerOptions::from_config(&mcfg, &name, &workgroup).map_err(anyhow::Error::msg)?;
    if let Some(f) = &a.from {
        opts.from = f.clone();
    }
    if let Some(p) = a.port {
        opts.port = p;
    }
    if a.datagram {
        opts.form = MessengerForm::Datagram;
        opts.forms.clear();
    }
    if a.rpc {
        opts.form = MessengerForm::Rpc;
        opts.forms.clear();
    }
    if let Some(p) = a.rpc_port {
        opts.rpc_port = p;
    }
    if !a.broadcast.is_empty() {
        opts.broadcast = Broadcast::Addresses(a.broadcast.clone());
    } else if !a.interface.is_empty() {
        opts.broadcast = Broadcast::Interfaces(a.interface.clone());
    }
    opts.resolver.broadcast = opts.broadcast.clone();
    if let Some(w) = a.wins {
        opts.resolver.wins = Some(w);
    }
    if let Some(cp) = a.code_page {
        opts.code_page = CodePage::new(cp)?;
    }
    if let Some(k) = &a.key_file {
        opts.seal = Some(read_key_file(k).map_err(anyhow::Error::msg)?);
    }
    if let Some(k) = &a.sign_key {
        opts.sign = Some(read_sign_key_file(k).map_err(anyhow::Error::msg)?);
    }
    opts.max_length = a.max_length;
    opts.timeout = Duration::from_secs(a.timeout);

    if a.rpc && a.to == "*" {
        bail!("the RPC form addresses one machine: send to `*` without --rpc (a broadcast datagram)");
    }
    let recipients: Vec<Recipient> = if a.to == "*" {
        vec![Recipient::workgroup()]
    } else if let Some(group) = a.to.strip_prefix('@') {
        let Some(c) = &cfg else { bail!("`@{group}` needs a config (-c FILE) that defines the group") };
        group_recipients(c, group, "messenger")?
    } else {
        let mut to = a.to.clone();
        // An address, in the RPC form: NetrSendMessage names the recipient,
        // so the machine is asked for its name first (as `nmblookup -A`).
        if a.rpc
            && a.ip.is_none()
            && let Ok(ip) = a.to.parse::<IpAddr>()
        {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            to = rt
                .block_on(messenger_name_of(ip))
                .with_context(|| format!("{ip} did not tell its name: give it as `alerter send --rpc -I {ip} NAME`"))?;
            opts.resolver.hosts.insert(to.clone(), Target { ip, port: None });
        }
        if let Some(ip) = a.ip {
            opts.resolver.hosts.insert(to.to_ascii_uppercase(), Target { ip, port: a.port });
        }
        vec![Recipient { id: to.clone(), name: None, machine: Some(to), user: None, email: None, group: None }]
    };
    if recipients.is_empty() {
        bail!("nobody to send to");
    }
    let text = if a.message.is_empty() {
        if std::io::stdin().is_terminal() {
            eprintln!("Type your message, ending it with Ctrl-D");
        }
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read the message from standard input")?;
        s
    } else {
        a.message.join(" ")
    };
    let n = Notification {
        id: format!("send-{}", std::process::id()),
        created_at: chrono::Utc::now(),
        rule: "alerter send".into(),
        transport: "messenger".into(),
        status: "notice".into(),
        severity: Severity::Info,
        title: String::new(),
        text,
        html: None,
        recipients,
        alerts: Vec::new(),
        group: BTreeMap::new(),
        repeat: false,
        offline: None,
    };
    let transport = MessengerTransport::new(opts);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let done = rt.block_on(transport.send(&n)).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Like `net send`, say what became of it: "delivered" only when a peer
    // accepted a session; a datagram is "sent, unconfirmed".
    if !a.quiet
        && let Some(reply) = done.reply
    {
        println!("{reply}");
    }
    Ok(())
}

/// The Messenger name (`NAME<03>`, not a group) that the machine at `ip`
/// holds, from its own answer to a node status request.
async fn messenger_name_of(ip: IpAddr) -> anyhow::Result<String> {
    use messenger_transport::resolve::node_status_of;
    let Some(status) = node_status_of(std::net::SocketAddr::new(ip, 137), Duration::from_secs(2)).await? else {
        bail!("no answer to a node status request from {ip} in 2 s");
    };
    status
        .names
        .into_iter()
        .find(|(n, flags)| {
            n.suffix == messenger_transport::name::MESSENGER && flags & messenger_transport::nbns::FLAG_GROUP == 0
        })
        .map(|(n, _)| n.name())
        .ok_or_else(|| anyhow::anyhow!("{ip} holds no Messenger name (NAME<03>): its Messenger service is off"))
}

fn read_message(a: &SendArgs) -> anyhow::Result<String> {
    if !a.message.is_empty() {
        return Ok(a.message.join(" "));
    }
    if std::io::stdin().is_terminal() {
        eprintln!("Type your message, ending it with Ctrl-D");
    }
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).context("cannot read the message from standard input")?;
    Ok(s)
}

/// `alerter send --via email`: the first line is the subject.
fn send_email(a: &SendArgs, cfg: Option<config::Config>) -> anyhow::Result<()> {
    use alerter_core::transport::email::EmailTransport;
    let Some(c) = cfg else { bail!("--via email needs a config (-c FILE) with an email transport") };
    let (id, ecfg) = c
        .transports
        .iter()
        .find_map(|(id, t)| match t {
            TransportConfig::Email(e) if a.transport.as_deref().is_none_or(|w| w == id) => Some((id.clone(), e)),
            _ => None,
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the config has no email transport{}",
                a.transport.as_ref().map(|t| format!(" `{t}`")).unwrap_or_default()
            )
        })?;
    let recipients: Vec<Recipient> = if let Some(group) = a.to.strip_prefix('@') {
        group_recipients(&c, group, "email")?
    } else if let Some(s) = c.subscribers.get(&a.to) {
        vec![Recipient {
            id: a.to.clone(),
            name: s.name.clone(),
            machine: None,
            user: None,
            email: s.email.clone(),
            group: None,
        }]
    } else {
        vec![Recipient {
            id: a.to.clone(),
            name: None,
            machine: None,
            user: None,
            email: Some(a.to.clone()),
            group: None,
        }]
    };
    let text = read_message(a)?;
    let subject = text.lines().next().unwrap_or_default().to_string();
    let now = chrono::Utc::now();
    let n = Notification {
        id: format!("send-{}-{}", std::process::id(), now.timestamp_nanos_opt().unwrap_or_default()),
        created_at: now,
        rule: "alerter send".into(),
        transport: id,
        status: "notice".into(),
        severity: Severity::Info,
        title: subject,
        text,
        html: None,
        recipients,
        alerts: Vec::new(),
        group: BTreeMap::new(),
        repeat: false,
        offline: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let d = rt.block_on(async {
        let transport = EmailTransport::new(ecfg).map_err(anyhow::Error::msg)?;
        transport.send(&n).await.map_err(|e| anyhow::anyhow!("{e}"))
    })?;
    if let Some(reply) = d.reply {
        eprintln!("{reply}");
    }
    Ok(())
}

/// `alerter keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the key to this file (mode 0600) instead of standard output;
    /// with `--sign`, the public key goes to FILE.pub as well.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Make a sender's signing key (Ed25519) instead of a workgroup key.
    #[arg(long)]
    sign: bool,
    /// With `--sign`: the sender name its public key vouches for (default:
    /// this host's name).
    #[arg(long, value_name = "NAME", requires = "sign")]
    name: Option<String>,
}

/// Creates `path` with `mode` and `text`, never replacing a file.
fn create(path: &std::path::Path, mode: u32, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create_new(true).write(true).mode(mode).open(path)?.write_all(text.as_bytes())
}

pub fn keygen(a: KeygenArgs) -> ExitCode {
    match keygen_inner(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alerter keygen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn keygen_inner(a: KeygenArgs) -> anyhow::Result<()> {
    use messenger_transport::seal::{SealKey, SigningKey};
    if !a.sign {
        let key = SealKey::generate_text();
        match &a.output {
            None => println!("{key}"),
            Some(path) => {
                create(path, 0o600, &format!("{key}\n")).with_context(|| format!("cannot write {}", path.display()))?
            }
        }
        return Ok(());
    }
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| config::hostname().split('.').next().unwrap_or("ALERTER").chars().take(15).collect())
        .to_ascii_uppercase();
    messenger_transport::NetbiosName::new(&name, 0).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let secret = SigningKey::generate_text();
    let public = SigningKey::from_text(&secret).map_err(anyhow::Error::msg)?.public().to_text();
    let line = format!("{public} {name}");
    match &a.output {
        None => {
            println!("{secret}");
            eprintln!("public key, for the receivers' trusted senders (alerter listen --trusted-senders):\n{line}");
        }
        Some(path) => {
            let mut pub_path = path.as_os_str().to_owned();
            pub_path.push(".pub");
            let pub_path = PathBuf::from(pub_path);
            create(path, 0o600, &format!("{secret}\n")).with_context(|| format!("cannot write {}", path.display()))?;
            create(&pub_path, 0o644, &format!("{line}\n"))
                .with_context(|| format!("cannot write {}", pub_path.display()))?;
            println!("{line}");
            eprintln!(
                "signing key in {}; add the line above (also in {}) to each receiver's trusted senders",
                path.display(),
                pub_path.display()
            );
        }
    }
    Ok(())
}
