//! `alerter listen`: the receiver, like WinPopup. Prints each message (text
//! made safe for a terminal), shows it on the desktop, and keeps the
//! history.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use alerter_core::config;
use alerter_core::service::ServiceManager;
use alerter_core::transport::messenger::{read_key_file, read_trusted_senders};
use clap::Args;
use messenger_transport::CodePage;
use messenger_transport::iface::{Broadcast, InterfaceSpec};
use messenger_transport::limits::RateLimit;
use messenger_transport::listener::{Event, Listener, ListenerConfig, RpcListen, SealPolicy};

use crate::history::{Cap, History};

/// `alerter listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The name to receive for (`NAME<03>`); default: this host's name.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Also receive messages to this workgroup.
    #[arg(long, default_value = "WORKGROUP", value_name = "NAME")]
    workgroup: String,
    /// TCP ports for the session form (repeatable): 139, 445, or any.
    #[arg(short, long = "port", default_values_t = [139u16], value_name = "PORT")]
    ports: Vec<u16>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0", value_name = "ADDRESS")]
    bind: IpAddr,
    /// UDP port of the datagram form; 0 turns it off.
    #[arg(long, default_value_t = 138, value_name = "PORT")]
    datagram_port: u16,
    /// Also take messages in the RPC form (NetrSendMessage over DCE/RPC, as
    /// Windows 2000/XP/2003 sent them when a session failed). Off by
    /// default: it was the Messenger spam path. Taken only from --rpc-allow.
    #[arg(long, conflicts_with = "beside_samba")]
    rpc: bool,
    /// UDP port of the RPC form.
    #[arg(long, default_value_t = 135, value_name = "PORT", requires = "rpc")]
    rpc_port: u16,
    /// Networks the RPC form is taken from (repeatable: `10.0.0.0/24`,
    /// `192.168.1.7`); others are answered "access denied". Default: the
    /// networks of this machine's interfaces. Datagrams' source addresses
    /// can be forged: this keeps out other networks, not a liar on the LAN
    /// (seal messages for that).
    #[arg(long, value_name = "NETWORK", value_parser = parse_network, requires = "rpc")]
    rpc_allow: Vec<ipnet::IpNet>,
    /// UDP port of the name service; 0 turns it off (no registration, no answers).
    #[arg(long, default_value_t = 137, value_name = "PORT")]
    name_port: u16,
    /// Register the name by broadcasting to this address only (repeatable),
    /// instead of to each interface's own broadcast address.
    #[arg(long, value_name = "ADDRESS")]
    broadcast: Vec<Ipv4Addr>,
    /// Register the name on these interfaces only (repeatable), as Samba's
    /// `interfaces`: a name (`eth0`, `enp*`), an address of this machine, or
    /// a network (`10.0.0.0/24`). Default: every interface that is up.
    #[arg(long, value_name = "IFACE")]
    interface: Vec<InterfaceSpec>,
    /// Do not register the name by broadcast (still answer queries for it).
    #[arg(long)]
    no_register: bool,
    /// Also register the names with this WINS server (`ADDRESS`, or
    /// `ADDRESS:PORT`), so that senders on other subnets find them.
    #[arg(long, value_name = "ADDRESS", value_parser = parse_wins)]
    wins: Option<SocketAddr>,
    /// Where the logged-on users are read from (login records in utmp
    /// format), to receive for each one's name as well (`ALICE<03>`).
    #[arg(long, default_value = crate::presence::DEFAULT_UTMP, value_name = "FILE")]
    utmp: PathBuf,
    /// Do not receive for the logged-on users' names, only for the machine's.
    #[arg(long)]
    no_users: bool,
    /// Workgroup key for sealed messages.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Refuse unsealed messages (needs --key-file).
    #[arg(long, requires = "key_file")]
    require_seal: bool,
    /// Accept only sealed messages signed by a sender listed in this file
    /// (`ed25519:<key> NAME` per line, as `alerter keygen --sign` prints),
    /// and show the sender as verified.
    #[arg(long, value_name = "FILE", requires = "key_file")]
    trusted_senders: Option<PathBuf>,
    /// Where the sealed messages already shown are remembered, so a replay
    /// after a restart is refused; default: `sealed-seen-NAME` in the state
    /// directory (where the history goes by default).
    #[arg(long, value_name = "FILE")]
    replay_file: Option<PathBuf>,
    /// How far a sealed message's time may be from ours, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    seal_window: u64,
    /// OEM code page of received text.
    #[arg(long, default_value_t = 850, value_name = "NUMBER")]
    code_page: u16,
    /// Print one JSON object per message instead of text.
    #[arg(long)]
    json: bool,
    /// Keep the history in this file (JSON lines); default: in the XDG state directory.
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Rotate the history when it reaches this size (`10MiB`, `512KiB`; 0: never).
    #[arg(long, default_value = "10MiB", value_name = "SIZE")]
    history_size: bytesize::ByteSize,
    /// Rotated history files kept (`messages.jsonl.1`, `.2`, ...).
    #[arg(long, default_value_t = 2, value_name = "N")]
    history_keep: usize,
    /// Do not show desktop notifications.
    #[arg(long)]
    no_desktop: bool,
    /// Run as the system receiver: hand each popup to the session agents
    /// (`alerter agent`) connected on this socket, the addressed user's
    /// own or, for the machine and the workgroup, every one; a user with
    /// no agent gets it on their terminals.
    #[arg(long, value_name = "SOCKET", num_args = 0..=1, default_missing_value = crate::agents::DEFAULT_SOCKET)]
    agents: Option<PathBuf>,
    /// An account (besides root) that may hand over messages smbd received
    /// (`alerter deliver`, run by smbd's `message command` as Samba's guest
    /// account; repeatable).
    #[arg(long, default_values_t = ["nobody".to_string()], value_name = "USER")]
    samba_user: Vec<String>,
    /// Beside Samba, which owns the NetBIOS ports: take messages only from
    /// smbd's `message command` (`alerter deliver`), through --agents.
    #[arg(long, requires = "agents")]
    beside_samba: bool,
    /// Longest text kept from one message, in bytes (longer is cut).
    #[arg(long, default_value_t = 4096, value_name = "BYTES")]
    max_text: usize,
    /// Connections held at once; when full, the longest-idle connection of
    /// the address holding most is closed for a newcomer.
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_connections: usize,
    /// Connections one address may hold.
    #[arg(long, default_value_t = 16, value_name = "N")]
    max_per_peer: usize,
    /// Close a connection after this many seconds without a message
    /// (keep-alives do not count).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    idle_timeout: u64,
    /// Messages per second one address may send (bursts of four times as
    /// many pass); 0: no limit.
    #[arg(long, default_value_t = 5.0, value_name = "N")]
    peer_messages: f64,
    /// Bytes per second one address may send (bursts of four times as many
    /// pass); 0: no limit.
    #[arg(long, default_value = "16KiB", value_name = "SIZE")]
    peer_bytes: bytesize::ByteSize,
}

/// `--wins`: an address, port 137 unless given.
pub fn parse_wins(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<Ipv4Addr>()
        .map(|ip| SocketAddr::new(IpAddr::V4(ip), 137))
        .map_err(|_| format!("`{s}` is not an IPv4 address (or ADDRESS:PORT)"))
}

/// `--rpc-allow`: a network, or one address.
fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("`{s}` is neither a network (10.0.0.0/24) nor an address"))
}

/// The networks of this machine's interfaces that are up, loopback's too:
/// where `--rpc` takes messages from unless told otherwise.
fn local_networks() -> Vec<ipnet::IpNet> {
    let all = messenger_transport::iface::addresses().unwrap_or_default();
    let mut nets: Vec<ipnet::IpNet> = all
        .iter()
        .filter(|a| a.up)
        .filter_map(|a| ipnet::Ipv4Net::with_netmask(a.ip, a.netmask).ok())
        .map(|n| ipnet::IpNet::V4(n.trunc()))
        .collect();
    nets.push("127.0.0.0/8".parse().unwrap_or_else(|_| ipnet::IpNet::from(IpAddr::from(Ipv4Addr::LOCALHOST))));
    nets.sort();
    nets.dedup();
    nets
}

/// The per-address rate limit from `--peer-messages` and `--peer-bytes`.
fn rate_limit(messages: f64, bytes: u64) -> RateLimit {
    let per = |v: f64| if v <= 0.0 { (f64::INFINITY, f64::INFINITY) } else { (v, v * 4.0) };
    let (messages_per_sec, message_burst) = per(messages);
    let (bytes_per_sec, byte_burst) = per(bytes as f64);
    RateLimit { messages_per_sec, message_burst, bytes_per_sec, byte_burst }
}

pub fn listen(a: ListenArgs) -> ExitCode {
    match listen_inner(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alerter listen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The receiver's state directory: systemd's `$STATE_DIRECTORY` (the
/// first, when it names several), else `$XDG_STATE_HOME/alerter`, else
/// `~/.local/state/alerter`, else `/var/lib/alerter`.
fn state_dir() -> PathBuf {
    if let Some(dir) = config::systemd_directory("STATE_DIRECTORY") {
        return dir;
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    base.join("alerter")
}

fn history_path(a: &ListenArgs) -> PathBuf {
    a.history.clone().unwrap_or_else(default_history)
}

/// Where `alerter listen` keeps its history by default.
pub fn default_history() -> PathBuf {
    state_dir().join("messages.jsonl")
}

fn listen_inner(a: ListenArgs) -> anyhow::Result<()> {
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| config::hostname().split('.').next().unwrap_or("ALERTER").chars().take(15).collect());
    let mut cfg = ListenerConfig::new(&name);
    cfg.max_text = a.max_text;
    cfg.max_connections = a.max_connections;
    cfg.max_per_peer = a.max_per_peer;
    cfg.idle_timeout = Duration::from_secs(a.idle_timeout.max(1));
    cfg.rate = rate_limit(a.peer_messages, a.peer_bytes.as_u64());
    cfg.workgroup = Some(a.workgroup.clone());
    cfg.code_page = CodePage::new(a.code_page)?;
    cfg.tcp = a.ports.iter().map(|p| SocketAddr::new(a.bind, *p)).collect();
    if a.datagram_port != 0 {
        cfg.datagram = Some(SocketAddr::new(a.bind, a.datagram_port));
    }
    if a.rpc {
        let allow = if a.rpc_allow.is_empty() { local_networks() } else { a.rpc_allow.clone() };
        let shown: Vec<String> = allow.iter().map(ToString::to_string).collect();
        tracing::info!("the RPC form is taken on UDP {} from {}", a.rpc_port, shown.join(", "));
        cfg.rpc = Some(RpcListen {
            addr: SocketAddr::new(a.bind, a.rpc_port),
            allow,
            limits: messenger_transport::rpc::ServerLimits { max_call_bytes: a.max_text + 1024, ..Default::default() },
        });
    }
    if let Some(k) = &a.key_file {
        let key = read_key_file(k).map_err(anyhow::Error::msg)?;
        let trusted = match &a.trusted_senders {
            Some(f) => Some(std::sync::Arc::new(read_trusted_senders(f).map_err(anyhow::Error::msg)?)),
            None => None,
        };
        // One per name: the ids one receiver showed are its own.
        let replay_file =
            a.replay_file.clone().unwrap_or_else(|| state_dir().join(format!("sealed-seen-{}", name.to_uppercase())));
        cfg.seal = Some(SealPolicy {
            require: a.require_seal,
            window: Duration::from_secs(a.seal_window),
            trusted,
            replay_file: Some(replay_file),
            ..SealPolicy::new(key)
        });
    }
    // The same key seals acknowledgements sent from here: the desktop's,
    // and those agents ask for.
    let ack_key = cfg.seal.as_ref().map(|s| s.key.clone());
    let history = history_path(&a);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        if a.name_port != 0 {
            cfg.name_service = Some(SocketAddr::new(a.bind, a.name_port));
            cfg.register = !a.no_register;
            cfg.wins = a.wins;
            cfg.broadcast = if !a.broadcast.is_empty() {
                Broadcast::Addresses(a.broadcast.clone())
            } else if !a.interface.is_empty() {
                Broadcast::Interfaces(a.interface.clone())
            } else {
                Broadcast::AllInterfaces
            };
        }
        // Beside Samba the ports are smbd's and nmbd's: nothing is bound.
        let (listener, mut rx) = if a.beside_samba {
            tracing::info!(name = %name, "taking messages from smbd's message command only");
            (None, None)
        } else {
            let (listener, rx) = Listener::bind(cfg).await?;
            tracing::info!(name = %name, tcp = ?listener.tcp, datagram = ?listener.datagram, rpc = ?listener.rpc, names = ?listener.name_service, "listening");
            (Some(listener), Some(rx))
        };
        let (hub, mut intake, mut relays) = match &a.agents {
            Some(socket) => {
                let deliverers = a
                    .samba_user
                    .iter()
                    .filter_map(|u| match nix::unistd::User::from_name(u) {
                        Ok(Some(u)) => Some(u.uid.as_raw()),
                        _ => {
                            tracing::warn!("--samba-user {u}: no such user");
                            None
                        }
                    })
                    .collect();
                let hub_cfg = crate::agents::HubConfig {
                    socket: socket.clone(),
                    deliverers,
                    max_text: a.max_text,
                    sealed_acks_only: ack_key.is_some(),
                };
                let (hub, intake, relays) = crate::agents::Hub::bind(hub_cfg)?;
                tracing::info!(socket = %socket.display(), "session agents connect at {}", socket.display());
                (Some(hub), Some(intake), Some(relays))
            }
            None => (None, None, None),
        };
        // Acknowledgements sent for agents at once, at most: the rest are
        // told to try again, so no user can make the receiver hold many
        // connections open.
        let relaying = std::sync::Arc::new(tokio::sync::Semaphore::new(RELAYS));
        let cap = Cap { bytes: a.history_size.as_u64(), keep: a.history_keep };
        let mut hist = match History::open(&history, cap) {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!("cannot keep the message history in {}: {e}", history.display());
                None
            }
        };
        let desktop = match a.no_desktop {
            true => None,
            false => {
                let acker = crate::desktop::Acker::Direct(ack_sender(ack_key.clone(), None));
                crate::desktop::connect_or_say(acker, ack_key.is_some()).await
            }
        };
        let service = ServiceManager::from_env();
        service.ready(&format!("receiving messages for {name}"));
        let mut watchdog = service.watchdog_timer();
        let mut users = (!a.no_users).then(|| crate::presence::Watch::new(a.utmp.clone()));
        let mut logged_on = crate::presence::LoggedOn::default();
        let mut presence_tick = tokio::time::interval(Duration::from_secs(1));
        presence_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = crate::signals::StopSignals::new();
        loop {
            let popup = tokio::select! {
                _ = watchdog.due() => { service.watchdog(); continue }
                now = presence_tick.tick(), if users.is_some() => {
                    if let Some(w) = users.as_mut()
                        && let Some(l) = follow_users(listener.as_ref(), w, now.into_std()).await
                    {
                        logged_on = l;
                    }
                    continue
                }
                Some(r) = async { relays.as_mut()?.recv().await }, if relays.is_some() => {
                    relay_ack(r, ack_key.clone(), &relaying);
                    continue
                }
                m = async { intake.as_mut()?.recv().await }, if intake.is_some() => match m {
                    Some(m) => handed_json(&m),
                    None => break,
                },
                e = async { rx.as_mut()?.recv().await }, if rx.is_some() => match e {
                    Some(Event::Message(m)) => message_json(&m),
                    Some(Event::Rejected { peer, from, reason }) => {
                        tracing::warn!(%peer, from = from.as_deref().unwrap_or("?"), "message rejected: {reason}");
                        if a.json {
                            println!("{}", json_line(&serde_json::json!({"rejected": reason, "peer": peer.to_string(), "from": from})));
                            let _ = std::io::stdout().flush();
                        }
                        continue
                    }
                    Some(Event::NameConflict { name, holder }) => {
                        tracing::error!("the name {name} is already in use by {holder}; messages by name will go there");
                        continue
                    }
                    None => break,
                },
                _ = stop.recv() => break,
            };
            let mut popup = popup;
            if let Some(hub) = &hub {
                let shown = hand_over(hub, &popup, &logged_on, &name, &a.workgroup).await;
                popup["shown"] = serde_json::to_value(&shown).unwrap_or_default();
            }
            show(&popup, a.json);
            if let Some(d) = &desktop {
                d.show(&popup);
            }
            if let Some(h) = hist.as_mut()
                && let Err(e) = h.append(&json_line(&popup))
            {
                tracing::warn!("cannot add to the message history {}: {e}", history.display());
            }
        }
        service.stopping();
        if let Some(listener) = &listener {
            // Senders should not keep finding a receiver that is gone; but a
            // WINS server that does not answer must not hold the stop up.
            let _ = tokio::time::timeout(Duration::from_secs(3), listener.release_names()).await;
            let s = &listener.stats;
            tracing::info!(
                messages = s.messages.load(std::sync::atomic::Ordering::Relaxed),
                rejected = s.rejected.load(std::sync::atomic::Ordering::Relaxed),
                malformed = s.malformed.load(std::sync::atomic::Ordering::Relaxed),
                "stopped"
            );
        }
        if let Some(hub) = &hub {
            let _ = std::fs::remove_file(&hub.socket);
        }
        anyhow::Ok(())
    })
}

/// Hands a popup to the agents of whom it is for, and to the terminals of
/// those with no agent. A popup for a user here (their login name in any
/// case, resolved to the one login) reaches that user alone; one for the
/// machine or the workgroup (or any group message) reaches everyone, each
/// user through their agents or else their terminals; one for a name that
/// is neither (someone not logged on here; beside Samba, smbd takes any
/// name) reaches nobody, and is kept in the history only: another user's
/// popup is never shown to the rest.
async fn hand_over(
    hub: &crate::agents::Hub,
    popup: &serde_json::Value,
    logged_on: &crate::presence::LoggedOn,
    machine: &str,
    workgroup: &str,
) -> crate::agents::Shown {
    use crate::agents::Audience;
    let to = popup["to"].as_str().unwrap_or_default();
    let group = popup["group"].as_bool().unwrap_or(false);
    let audience = if group || to.eq_ignore_ascii_case(machine) || to.eq_ignore_ascii_case(workgroup) {
        Audience::Everyone
    } else {
        let logins = logged_on.sessions.iter().map(|s| s.login.clone()).chain(hub.logins());
        match crate::agents::login_named(to, logins) {
            Some(login) => Audience::User(login),
            None => {
                tracing::info!(to = %to, "a popup for {to}, who is not here: kept in the history only");
                return crate::agents::Shown::default();
            }
        }
    };
    let agents = hub.hand(&audience, popup);
    // Each user the popup is for who has no agent gets it on their terminals.
    let sessions: Vec<crate::presence::Session> = logged_on
        .sessions
        .iter()
        .filter(|s| match &audience {
            Audience::User(login) => &s.login == login,
            Audience::Everyone => true,
        })
        .filter(|s| !agents.contains(&s.login))
        .cloned()
        .collect();
    let mut shown = crate::agents::Shown { agents, terminals: Vec::new() };
    if sessions.is_empty() {
        return shown;
    }
    let text = terminal_text(popup);
    let (done, skipped) =
        tokio::task::spawn_blocking(move || crate::agents::write_terminals(&sessions, &text)).await.unwrap_or_default();
    // When no terminal took it, the admin of this machine should see why.
    for why in skipped {
        if done.is_empty() {
            tracing::info!("a terminal not written to: {why}");
        } else {
            tracing::debug!("a terminal not written to: {why}");
        }
    }
    shown.terminals = done;
    shown
}

/// A popup as a terminal shows it (as `write` does: a bell, who from, the
/// text), every control made visible, lines ended with CR LF.
fn terminal_text(popup: &serde_json::Value) -> String {
    use alerter_core::visible::{visible, visible_line};
    let field = |k: &str| visible_line(popup[k].as_str().unwrap_or_default());
    let when = chrono::Local::now().format("%H:%M");
    let mut out = format!("\r\n\x07Message from {} to {} at {when}:\r\n", field("from"), field("to"));
    for line in visible(popup["text"].as_str().unwrap_or_default()).lines() {
        out.push_str(&format!("  {line}\r\n"));
    }
    out
}

/// Holds the name of each user logged on, and only theirs: a user who
/// logged on since the last look is added as an alias, one who left is
/// released.
async fn follow_users(
    listener: Option<&Listener>,
    watch: &mut crate::presence::Watch,
    now: std::time::Instant,
) -> Option<crate::presence::LoggedOn> {
    let logged_on = match watch.poll(now) {
        None => return None,
        Some(Ok(l)) => l,
        Some(Err(e)) => {
            tracing::warn!("{e}; no user names are held until it can be read");
            Default::default()
        }
    };
    for why in &logged_on.unusable {
        tracing::debug!("a logged-on user's name is not held: {why}");
    }
    if logged_on.bad_records > 0 {
        tracing::debug!("{} records of {} did not parse", logged_on.bad_records, watch.path().display());
    }
    if logged_on.over_limit > 0 {
        tracing::warn!(
            "{} more users are logged on than the {} whose names are held",
            logged_on.over_limit,
            crate::presence::MAX_USERS
        );
    }
    let Some(listener) = listener else { return Some(logged_on) };
    let held: std::collections::BTreeSet<String> = listener.aliases().into_iter().collect();
    for gone in held.difference(&logged_on.users) {
        if listener.remove_alias(gone).await {
            tracing::info!("{gone} logged off: messages to {gone} are no longer received here");
        }
    }
    for user in logged_on.users.difference(&held) {
        match listener.add_alias(user) {
            Ok(true) => tracing::info!("{user} logged on: receiving messages for {user} as well"),
            Ok(false) => {}
            Err(e) => tracing::debug!("{user}: {e}"),
        }
    }
    Some(logged_on)
}

fn message_json(m: &messenger_transport::listener::Received) -> serde_json::Value {
    let mut v = serde_json::json!({
        "time": chrono::Utc::now().to_rfc3339(),
        "from": m.from,
        "to": m.to,
        "text": m.text,
        "form": m.form.as_str(),
        "group": m.group,
        "peer": m.peer.to_string(),
        "sealed": m.sealed.as_ref().map(|s| serde_json::json!({
            "id": s.id, "severity": s.severity, "time": s.time, "verified_sender": s.verified_sender,
        })),
    });
    // A popup that can be acknowledged (`alerter ack ID`).
    if let Some((a, _)) = messenger_transport::ack::AckRef::find(&m.text) {
        v["ack"] = serde_json::json!({ "alerts": a.alerts, "notification": a.notification, "port": a.port });
    }
    v
}

/// A message smbd received, handed over by its `message command`.
fn handed_json(m: &crate::agents::Handed) -> serde_json::Value {
    serde_json::json!({
        "time": chrono::Utc::now().to_rfc3339(),
        "from": m.from,
        "to": m.to,
        "text": m.text,
        "form": "samba",
        "group": false,
    })
}

/// One JSON line with nothing a terminal acts on: serde_json escapes C0
/// controls, and this escapes C1 and bidirectional controls too (as
/// `\u009b`, `\u202e`), which serde_json writes raw. Lossless: the text
/// read back is the text received. Outside strings JSON has none of these
/// characters, so replacing them anywhere is replacing them in strings.
pub fn json_line(v: &serde_json::Value) -> String {
    use alerter_core::visible::is_control_or_bidi;
    let s = v.to_string();
    if !s.chars().any(is_control_or_bidi) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_control_or_bidi(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// How acknowledgements go from here: in the name of `login` (an agent's
/// user), else of the user running the receiver.
fn ack_sender(key: Option<messenger_transport::seal::SealKey>, login: Option<&str>) -> crate::popup_ack::Sender {
    crate::popup_ack::Sender {
        from: login.map_or_else(crate::popup_ack::login_name, |l| l.chars().take(15).collect()),
        key,
        timeout: Duration::from_secs(5),
    }
}

/// Acknowledgements sent for agents at once.
const RELAYS: usize = 4;

/// Sends an acknowledgement a session agent asked for, in its user's name,
/// and tells the agent how it went; the receiver goes on meanwhile.
fn relay_ack(
    r: crate::agents::Relayed,
    key: Option<messenger_transport::seal::SealKey>,
    slots: &std::sync::Arc<tokio::sync::Semaphore>,
) {
    let Ok(slot) = slots.clone().try_acquire_owned() else {
        r.answer(Some("the receiver is busy with other acknowledgements; try again".into()));
        return;
    };
    tokio::spawn(async move {
        let _slot = slot;
        let sender = ack_sender(key, Some(&r.login));
        match crate::popup_ack::send(&sender, &r.ack).await {
            Ok(()) => {
                tracing::info!(login = %r.login, "acknowledged to {} ({}) for {}", r.ack.daemon, r.ack.addr, r.login);
                r.answer(None);
            }
            Err(e) => {
                tracing::warn!(login = %r.login, "an acknowledgement for {}: {e:#}", r.login);
                r.answer(Some(format!("{e:#}")));
            }
        }
    });
}

/// Prints a popup (its JSON, as [`message_json`] makes it): the JSON line
/// itself, or text with every control made visible; and shows it on the
/// desktop when asked.
pub fn show(m: &serde_json::Value, json: bool) {
    use alerter_core::visible::{visible, visible_line};
    let field = |k: &str| m[k].as_str().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", json_line(m));
    } else {
        let when = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        let severity = m["sealed"]["severity"].as_str().map(visible_line);
        let seal = match severity {
            Some(s) if !m["sealed"]["verified_sender"].is_null() => format!(" (sealed, signed by a trusted key, {s})"),
            Some(s) => format!(" (sealed, {s})"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "Message from {} to {} on {when}{seal}",
            visible_line(field("from")),
            visible_line(field("to"))
        );
        for line in visible(field("text")).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    let _ = out.flush();
}
