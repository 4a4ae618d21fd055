//! The `messenger` transport: notifications as popups, with the Messenger
//! protocol from the messenger-transport crate.
//!
//! A subscriber is reached at their machine in the session form (confirmed
//! delivery), the RPC form (confirmed, for old Windows peers), or the
//! datagram form when configured (or as a fallback), per transport or per
//! name; the
//! whole workgroup by a broadcast datagram on each interface. Only a
//! session the peer accepted counts as delivered: a datagram is reported as
//! "sent, unconfirmed", with where it went. With a workgroup key every
//! message is sealed. A retried notification is not shown twice to the
//! recipients that already got it: the transport remembers who got which
//! notification.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use messenger_transport::client::{
    self, BroadcastReport, DatagramMessage, RpcMessage, RpcOptions, SendError, SessionMessage, SessionOptions,
};
use messenger_transport::iface::{Broadcast, InterfaceSpec};
use messenger_transport::resolve::{Resolver, ResolverConfig, Target};
use messenger_transport::seal::{self, SealKey, Sealed, SigningKey, TrustedSenders};
use messenger_transport::{CodePage, NetbiosName, dgram, oem, smb};

use super::{BoxFuture, Delivered, Transport, TransportError};
use crate::config::diag::YamlPath;
use crate::config::model::{MessengerConfig, MessengerForm};
use crate::notify::Notification;
use crate::rules::Recipient;

/// How many recipients are sent to at once.
const CONCURRENCY: usize = 64;
/// How many (notification, recipient) deliveries are remembered.
const REMEMBER: usize = 10_000;

/// Settings resolved from the config.
#[derive(Debug, Clone)]
pub struct MessengerOptions {
    pub from: String,
    pub workgroup: String,
    pub code_page: CodePage,
    pub port: u16,
    pub form: MessengerForm,
    /// Forms for particular names (upper case), overriding `form`.
    pub forms: std::collections::HashMap<String, MessengerForm>,
    pub rpc_port: u16,
    pub datagram_fallback: bool,
    pub timeout: Duration,
    pub max_length: usize,
    /// Where workgroup messages and name queries are broadcast.
    pub broadcast: Broadcast,
    pub datagram_port: u16,
    pub resolver: ResolverConfig,
    pub seal: Option<SealKey>,
    /// Signs sealed messages.
    pub sign: Option<SigningKey>,
    pub also_plain: bool,
    /// Adds the acknowledgement footer to popups about firing alerts.
    pub acks: Option<crate::acks::Footer>,
}

/// A popup hours late is noise: give up after an hour.
pub const RETRY: super::RetryPolicy = super::RetryPolicy {
    initial: std::time::Duration::from_secs(5),
    max: std::time::Duration::from_secs(300),
    max_age: std::time::Duration::from_secs(3600),
    concurrency: 4,
    poll: super::POLL,
};

/// Checks the settings beyond their shape: code page, names, the key
/// file, interface specifications.
pub fn check(m: &MessengerConfig) -> Vec<(YamlPath, String)> {
    let key = |k: &str| YamlPath::root().key(k);
    let mut out = Vec::new();
    if let Some(cp) = m.code_page
        && let Err(e) = messenger_transport::CodePage::new(cp)
    {
        out.push((key("code_page"), e.to_string()));
    }
    if let Some(from) = &m.from
        && let Err(e) = messenger_transport::NetbiosName::new(from, 0)
    {
        out.push((key("from"), e.to_string()));
    }
    if let Some(k) = &m.seal_key_file
        && let Err(e) = read_key_file(k)
    {
        out.push((key("seal_key_file"), e));
    }
    if let Some(a) = &m.acks
        && a.port == 0
    {
        out.push((key("acks").key("port"), "port 0 is no port: choose one, 1139 say".to_string()));
    }
    if let Some(k) = &m.sign_key_file {
        if m.seal_key_file.is_none() {
            out.push((
                key("sign_key_file"),
                "a signature travels inside a sealed message: add a `seal_key_file`".to_string(),
            ));
        }
        if let Err(e) = read_sign_key_file(k) {
            out.push((key("sign_key_file"), e));
        }
    }
    for name in m.hosts.keys() {
        if let Err(e) = messenger_transport::NetbiosName::new(name, 3) {
            out.push((key("hosts").key(name.clone()), e.to_string()));
        }
    }
    for name in m.forms.keys() {
        if let Err(e) = messenger_transport::NetbiosName::new(name, 3) {
            out.push((key("forms").key(name.clone()), e.to_string()));
        }
    }
    if m.rpc_port == Some(0) {
        out.push((key("rpc_port"), "port 0 is no port: leave it out for 135".to_string()));
    }
    for (i, spec) in m.interfaces.iter().enumerate() {
        if let Err(e) = spec.parse::<messenger_transport::iface::InterfaceSpec>() {
            out.push((key("interfaces").index(i), e));
        }
    }
    out
}

/// A key file's text, checked as a secret (see [`crate::files`]).
fn read_secret_key(path: &Path) -> Result<String, String> {
    crate::files::read_secret(path).map_err(|e| match e {
        crate::files::FileError::Io { path, source } => {
            format!("cannot read the key file {}: {source}", path.display())
        }
        e => e.to_string(),
    })
}

/// Reads a workgroup key file.
pub fn read_key_file(path: &Path) -> Result<SealKey, String> {
    SealKey::from_text(&read_secret_key(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a sender's signing key file (`alerter keygen --sign`).
pub fn read_sign_key_file(path: &Path) -> Result<SigningKey, String> {
    SigningKey::from_text(&read_secret_key(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a list of trusted sender keys, which may be public but must not
/// be changed by others (see [`crate::files`]).
pub fn read_trusted_senders(path: &Path) -> Result<TrustedSenders, String> {
    let text = crate::files::read(path, crate::files::Kind::TrustList).map_err(|e| e.to_string())?;
    TrustedSenders::parse(&text).map_err(|problems| format!("{}: {}", path.display(), problems.join("; ")))
}

impl MessengerOptions {
    /// Builds the options; errors are config problems.
    pub fn from_config(c: &MessengerConfig, alerter_name: &str, workgroup: &str) -> Result<MessengerOptions, String> {
        let from = c.from.clone().unwrap_or_else(|| alerter_name.chars().take(15).collect());
        NetbiosName::new(&from, 0).map_err(|e| format!("`from`: {e}"))?;
        let code_page = CodePage::new(c.code_page.unwrap_or(850)).map_err(|e| e.to_string())?;
        let hosts = c
            .hosts
            .iter()
            .map(|(name, t)| (name.to_ascii_uppercase(), Target { ip: t.value.0, port: t.value.1 }))
            .collect();
        // A broadcast address given by hand wins; else the interfaces named;
        // else every up interface, each to its own broadcast address.
        let broadcast = match (&c.broadcast, c.interfaces.is_empty()) {
            (Some(b), _) => Broadcast::Addresses(vec![b.value]),
            (None, false) => Broadcast::Interfaces(
                c.interfaces
                    .iter()
                    .map(|i| i.parse::<InterfaceSpec>().map_err(|e| format!("`interfaces`: {e}")))
                    .collect::<Result<_, _>>()?,
            ),
            (None, true) => Broadcast::AllInterfaces,
        };
        let timeout = c.timeout.as_ref().map_or(Duration::from_secs(5), |t| t.value);
        let seal = match &c.seal_key_file {
            Some(p) => Some(read_key_file(p)?),
            None => None,
        };
        let sign = match &c.sign_key_file {
            Some(p) => Some(read_sign_key_file(p)?),
            None => None,
        };
        Ok(MessengerOptions {
            from,
            workgroup: workgroup.to_string(),
            code_page,
            port: c.port.unwrap_or(139),
            form: c.form.unwrap_or(MessengerForm::Session),
            forms: c.forms.iter().map(|(name, f)| (name.to_ascii_uppercase(), *f)).collect(),
            rpc_port: c.rpc_port.unwrap_or(messenger_transport::rpc::PORT),
            datagram_fallback: c.datagram_fallback.unwrap_or(false),
            timeout,
            max_length: c.max_length.map_or(652, |m| m as usize),
            broadcast: broadcast.clone(),
            datagram_port: 138,
            resolver: ResolverConfig {
                hosts,
                wins: c.wins.as_ref().map(|w| SocketAddr::from((w.value, 137))),
                broadcast,
                dns: c.dns.unwrap_or(true),
                timeout: Duration::from_millis(500).min(timeout),
                ..ResolverConfig::default()
            },
            seal,
            sign,
            also_plain: c.also_plain.unwrap_or(false),
            acks: None,
        })
    }
}

/// Which recipient got which notification: the newest `REMEMBER` pairs.
#[derive(Debug, Default)]
struct DeliveredSet {
    set: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

impl DeliveredSet {
    fn contains(&self, id: &str, who: &str) -> bool {
        self.set.contains(&(id.to_string(), who.to_string()))
    }

    fn insert(&mut self, id: &str, who: &str) {
        let key = (id.to_string(), who.to_string());
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > REMEMBER {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// A popup's text as it will show, with what shaped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopupPreview {
    pub text: String,
    pub code_page: u16,
    pub limit: usize,
    pub bytes: usize,
    pub cut: bool,
    pub replaced: usize,
}

/// See the module docs.
#[derive(Debug)]
pub struct MessengerTransport {
    opts: MessengerOptions,
    resolver: Resolver,
    delivered: Mutex<DeliveredSet>,
}

/// Where one recipient's popup goes.
enum Dest {
    Machine(String),
    Workgroup,
}

/// One recipient's outcome, or who failed and why.
type RecipientResult<'r> = Result<(&'r Recipient, Outcome), (String, SendError)>;

/// What became of one recipient's popup.
enum Outcome {
    /// A session the peer accepted: the only confirmed delivery.
    Delivered { machine: String, addr: SocketAddr },
    /// A datagram to one machine: it left, nobody confirms it arrived.
    Unconfirmed { machine: String, addr: SocketAddr },
    /// A workgroup datagram, and the interfaces it went out on.
    Broadcast { workgroup: String, report: BroadcastReport },
}

impl Outcome {
    fn describe(&self, who: &str) -> String {
        match self {
            Outcome::Delivered { machine, addr } => format!("{who}: delivered to {machine} at {addr}"),
            Outcome::Unconfirmed { machine, addr } => {
                format!("{who}: sent, unconfirmed (a datagram to {machine} at {addr})")
            }
            Outcome::Broadcast { workgroup, report } => format!("workgroup {workgroup}: {report}"),
        }
    }
}

/// The least text a popup keeps beside its ack footer; with less room the
/// footer is left out (the popup is acknowledged through the API then).
const MIN_TEXT_WITH_FOOTER: usize = 80;

impl MessengerTransport {
    pub fn new(opts: MessengerOptions) -> MessengerTransport {
        let resolver = Resolver::new(opts.resolver.clone());
        MessengerTransport { opts, resolver, delivered: Mutex::new(DeliveredSet::default()) }
    }

    fn already(&self, id: &str, who: &str) -> bool {
        self.delivered.lock().unwrap_or_else(|p| p.into_inner()).contains(id, who)
    }

    fn remember(&self, id: &str, who: &str) {
        self.delivered.lock().unwrap_or_else(|p| p.into_inner()).insert(id, who);
    }

    /// The popup text: cut to the limit after encoding, with a marker.
    pub fn shape(&self, text: &str) -> String {
        self.shape_within(text, self.opts.max_length)
    }

    fn shape_within(&self, text: &str, max: usize) -> String {
        let bytes = self.opts.code_page.encode(text.trim_end());
        let cut = oem::truncate_with_marker(bytes, max, b" [...]");
        self.opts.code_page.decode(&cut)
    }

    /// The popup's text: shaped to fit, and, for firing alerts when
    /// acknowledgements are on, the footer after it. Room is kept for the
    /// footer within the smallest limit the popup may meet (a datagram's,
    /// when it may go as one), so the text is what gets cut, never the
    /// footer; a limit too small for the footer gets no footer.
    pub fn popup_text(&self, n: &Notification) -> String {
        let footer = match &self.opts.acks {
            Some(f) if n.status == "firing" && !n.alerts.is_empty() => Some(
                messenger_transport::ack::AckRef {
                    port: f.port,
                    notification: n.id.clone(),
                    token: f.secret.token(&n.id),
                    alerts: n
                        .alerts
                        .iter()
                        .take(messenger_transport::ack::MAX_ALERTS)
                        .map(|a| a.fingerprint.to_string())
                        .collect(),
                }
                .footer(),
            ),
            _ => None,
        };
        let o = &self.opts;
        let limit = self.limit(n.recipients.iter().any(|r| r.is_workgroup()));
        match footer {
            // Some text stays: a footer alone says nothing.
            Some(footer) if o.code_page.encode(&footer).len() + MIN_TEXT_WITH_FOOTER <= limit => {
                let room = limit - o.code_page.encode(&footer).len();
                format!("{}{footer}", self.shape_within(&n.text, room))
            }
            _ => self.shape_within(&n.text, limit),
        }
    }

    /// The most bytes a popup's text may take: the configured limit, and,
    /// when it may go as a datagram (to the workgroup, or by form or
    /// fallback), what a datagram with the longest names carries.
    fn limit(&self, workgroup: bool) -> usize {
        let o = &self.opts;
        let datagram = o.form == MessengerForm::Datagram
            || o.forms.values().any(|f| *f == MessengerForm::Datagram)
            || o.datagram_fallback
            || workgroup;
        if datagram { o.max_length.min(dgram::max_text(dgram::MESSNGR, 15, 15)) } else { o.max_length }
    }

    /// What a popup of `text` will show (to the workgroup, or to
    /// machines), and why: the code page, the limit, the encoded length,
    /// whether it was cut, how many characters the code page lacks.
    pub fn preview(&self, text: &str, workgroup: bool) -> PopupPreview {
        let cp = self.opts.code_page;
        let limit = self.limit(workgroup);
        let bytes = cp.encode(text.trim_end()).len();
        let replaced = text
            .chars()
            .filter(|c| !matches!(c, '?' | '\n' | '\r') && cp.encode(c.encode_utf8(&mut [0; 4])) == b"?")
            .count();
        PopupPreview {
            text: self.shape_within(text, limit),
            code_page: cp.number(),
            limit,
            bytes,
            cut: bytes > limit,
            replaced,
        }
    }

    async fn target(&self, machine: &str) -> Result<SocketAddr, SendError> {
        let name: NetbiosName =
            machine.parse().map_err(|e: messenger_transport::Error| SendError::BadName(e.to_string()))?;
        let t = self.resolver.resolve(&name).await.map_err(SendError::NameNotFound)?;
        Ok(SocketAddr::new(t.ip, t.port.unwrap_or(self.opts.port)))
    }

    /// The wire form for popups to `name`.
    fn form_for(&self, name: &str) -> MessengerForm {
        self.opts.forms.get(&name.to_ascii_uppercase()).copied().unwrap_or(self.opts.form)
    }

    fn session_options(&self, port: u16) -> SessionOptions {
        SessionOptions { code_page: self.opts.code_page, timeout: self.opts.timeout, session_request: port == 139 }
    }

    async fn send_plain(&self, dest: &Dest, text: &str) -> Result<Outcome, SendError> {
        let o = &self.opts;
        match dest {
            Dest::Workgroup => {
                let targets = o.broadcast.targets()?;
                let m = DatagramMessage { from: &o.from, to: &o.workgroup, text, group: true };
                let report = client::broadcast_datagram(&targets, o.datagram_port, &m, o.code_page).await?;
                Ok(Outcome::Broadcast { workgroup: o.workgroup.clone(), report })
            }
            Dest::Machine(machine) => {
                let addr = self.target(machine).await?;
                let datagram = |addr: SocketAddr| async move {
                    let to = SocketAddr::new(addr.ip(), o.datagram_port);
                    let m = DatagramMessage { from: &o.from, to: machine, text, group: false };
                    client::send_datagram(to, &m, o.code_page).await?;
                    Ok(Outcome::Unconfirmed { machine: machine.clone(), addr: to })
                };
                let sent = match self.form_for(machine) {
                    MessengerForm::Datagram => return datagram(addr).await,
                    MessengerForm::Rpc => {
                        let addr = SocketAddr::new(addr.ip(), o.rpc_port);
                        let m = RpcMessage { from: &o.from, to: machine, text };
                        let opts = RpcOptions { code_page: o.code_page, timeout: o.timeout, ..RpcOptions::default() };
                        client::send_rpc(addr, &m, &opts).await.map(|()| addr)
                    }
                    MessengerForm::Session => {
                        let m = SessionMessage { from: &o.from, to: machine, text };
                        client::send_session(addr, &m, &self.session_options(addr.port())).await.map(|()| addr)
                    }
                };
                match sent {
                    Ok(addr) => Ok(Outcome::Delivered { machine: machine.clone(), addr }),
                    Err(e) if o.datagram_fallback && e.is_transient() => {
                        tracing::debug!("popup to {machine} failed ({e}); sending a datagram instead");
                        datagram(addr).await
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn send_sealed(
        &self,
        key: &SealKey,
        dest: &Dest,
        n: &Notification,
        text: &str,
    ) -> Result<Outcome, SendError> {
        let o = &self.opts;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let to_name = match dest {
            Dest::Workgroup => o.workgroup.clone(),
            Dest::Machine(m) => m.clone(),
        };
        let mut m = Sealed::new(&o.from, &to_name, now, n.severity.as_str(), text);
        if let Some(k) = &o.sign {
            m.sign(k);
        }
        let sealed = seal::seal(key, &m);
        let smb = smb::mailslot_write(dgram::ALERTER_SEALED, &sealed, false);
        let to = NetbiosName::new(&to_name, messenger_transport::name::MESSENGER)
            .map_err(|e| SendError::BadName(e.to_string()))?;
        let user_data = smb.encode();
        match dest {
            Dest::Workgroup => {
                let targets = o.broadcast.targets()?;
                if user_data.len() > dgram::MAX_USER_DATA {
                    let addr = SocketAddr::new(targets[0].broadcast.into(), o.datagram_port);
                    return Err(SendError::Protocol {
                        addr,
                        detail: "the sealed message is too long for a broadcast".into(),
                    });
                }
                let report = client::broadcast_raw_datagram(
                    &targets,
                    o.datagram_port,
                    dgram::DIRECT_GROUP,
                    &o.from,
                    to,
                    user_data,
                )
                .await?;
                Ok(Outcome::Broadcast { workgroup: o.workgroup.clone(), report })
            }
            Dest::Machine(m) => {
                let addr = self.target(m).await?;
                // The RPC form has no room for a seal: a session carries it.
                if user_data.len() > dgram::MAX_USER_DATA || self.form_for(m) != MessengerForm::Datagram {
                    client::send_session_smb(addr, &o.from, m, smb, &self.session_options(addr.port())).await?;
                    return Ok(Outcome::Delivered { machine: m.clone(), addr });
                }
                let to_addr = SocketAddr::new(addr.ip(), o.datagram_port);
                client::send_raw_datagram(to_addr, dgram::DIRECT_UNIQUE, &o.from, to, user_data).await?;
                Ok(Outcome::Unconfirmed { machine: m.clone(), addr: to_addr })
            }
        }
    }

    async fn deliver_to<'r>(&self, r: &'r Recipient, n: &Notification, text: &str) -> RecipientResult<'r> {
        self.deliver(r, n, text).await.map(|o| (r, o))
    }

    /// One recipient: the workgroup, or their user name (wherever they are
    /// logged on) and then their machine, whichever is found first.
    async fn deliver(&self, r: &Recipient, n: &Notification, text: &str) -> Result<Outcome, (String, SendError)> {
        if r.is_workgroup() {
            return self.attempt(&Dest::Workgroup, n, text).await.map_err(|e| (r.id.clone(), e));
        }
        let mut names: Vec<&String> = r.user.iter().chain(r.machine.iter()).collect();
        names.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        let Some((last, first)) = names.split_last() else {
            return Err((r.id.clone(), SendError::BadName(format!("subscriber `{}` has no user or machine", r.id))));
        };
        for name in first {
            match self.attempt_name(name, n, text).await {
                // Not logged on anywhere to be found: their own machine next.
                Err(e) if not_there(&e) => {
                    tracing::debug!("{}: {e}; trying their machine", r.id);
                }
                other => return other.map_err(|e| (r.id.clone(), e)),
            }
        }
        self.attempt_name(last, n, text).await.map_err(|e| (r.id.clone(), e))
    }

    /// A popup to one name; when the session is refused at an address
    /// remembered from an earlier lookup (the user logged on elsewhere
    /// since, or the machine changed address), the name is looked up
    /// afresh and tried once more.
    async fn attempt_name(&self, name: &str, n: &Notification, text: &str) -> Result<Outcome, SendError> {
        let dest = Dest::Machine(name.to_string());
        match self.attempt(&dest, n, text).await {
            Err(SendError::SessionRefused { .. } | SendError::NotThere { .. })
                if name.parse::<NetbiosName>().is_ok_and(|nb| self.resolver.forget(&nb)) =>
            {
                tracing::debug!("{name} is no longer at the address remembered; looking it up again");
                self.attempt(&dest, n, text).await
            }
            other => other,
        }
    }

    async fn attempt(&self, dest: &Dest, n: &Notification, text: &str) -> Result<Outcome, SendError> {
        if let Some(key) = &self.opts.seal {
            let sealed = self.send_sealed(key, dest, n, text).await?;
            if !self.opts.also_plain {
                return Ok(sealed);
            }
        }
        self.send_plain(dest, text).await
    }
}

/// Whether an error says the name is nowhere (rather than that its holder
/// refused or failed).
fn not_there(e: &SendError) -> bool {
    matches!(e, SendError::NameNotFound(_) | SendError::SessionRefused { .. } | SendError::NotThere { .. })
}

impl Transport for MessengerTransport {
    fn kind(&self) -> &'static str {
        "messenger"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Delivered, TransportError>> {
        Box::pin(async move {
            let text = self.popup_text(n);
            let pending: Vec<&Recipient> = n.recipients.iter().filter(|r| !self.already(&n.id, &r.id)).collect();
            let text = text.as_str();
            let futures: Vec<_> = pending.into_iter().map(|r| self.deliver_to(r, n, text)).collect();
            let results: Vec<RecipientResult<'_>> =
                futures_util::stream::iter(futures).buffer_unordered(CONCURRENCY).collect().await;
            let mut failures = Vec::new();
            let mut done = Vec::new();
            for r in results {
                match r {
                    Ok((rec, outcome)) => {
                        self.remember(&n.id, &rec.id);
                        done.push((rec.id.clone(), outcome));
                    }
                    Err(f) => failures.push(f),
                }
            }
            if failures.is_empty() {
                return Ok(Delivered { reply: Some(summary(&done)) });
            }
            let detail: Vec<String> = failures.iter().map(|(who, e)| format!("{who}: {e}")).collect();
            if failures.iter().all(|(_, e)| not_there(e)) {
                // Nobody refused or failed: they are not there (yet).
                let message = format!(
                    "{} of {} recipients nowhere to be found: {}",
                    failures.len(),
                    n.recipients.len(),
                    detail.join("; ")
                );
                let recipients = failures.into_iter().map(|(who, _)| who).collect();
                return Err(TransportError::Absent { message, recipients });
            }
            let transient = failures.iter().any(|(_, e)| e.is_transient());
            let message =
                format!("{} of {} recipients failed: {}", failures.len(), n.recipients.len(), detail.join("; "));
            Err(if transient { TransportError::transient(message) } else { TransportError::permanent(message) })
        })
    }
}

/// The audit line for a notification: how many popups were confirmed, how
/// many only sent, and each recipient's outcome.
fn summary(done: &[(String, Outcome)]) -> String {
    let confirmed = done.iter().filter(|(_, o)| matches!(o, Outcome::Delivered { .. })).count();
    let unconfirmed = done.len() - confirmed;
    let mut head = Vec::new();
    if confirmed > 0 {
        head.push(format!("{confirmed} delivered"));
    }
    if unconfirmed > 0 {
        head.push(format!("{unconfirmed} sent, unconfirmed"));
    }
    if head.is_empty() {
        // Everyone had it from an earlier attempt.
        return "nothing left to send: every recipient had it already".into();
    }
    let each: Vec<String> = done.iter().map(|(who, o)| o.describe(who)).collect();
    format!("{}: {}", head.join(", "), each.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acks::{AckSecret, Footer};
    use messenger_transport::ack::AckRef;

    fn transport(c: MessengerConfig) -> MessengerTransport {
        let mut o = MessengerOptions::from_config(&c, "FILESERVER", "WORKGROUP").unwrap();
        o.acks = Some(Footer { secret: std::sync::Arc::new(AckSecret::from_bytes([7; 32])), port: 1139 });
        MessengerTransport::new(o)
    }

    fn notification(status: &str, text: &str, to: &str) -> Notification {
        serde_json::from_value(serde_json::json!({
            "id": "1a23c5f7135b6081d04e0508d9c", "created_at": "2026-12-03T10:00:00Z", "rule": "disk",
            "transport": "popup", "status": status, "severity": "warning", "title": "t", "text": text,
            "recipients": [{"id": to}], "group": {}, "repeat": false,
            "alerts": [{"fingerprint": "0123abcd0123abcd", "status": status, "source": "disk", "host": "h",
                        "severity": "warning", "summary": "s", "since": "2026-12-03T09:00:00Z", "count": 1}],
        }))
        .unwrap()
    }

    #[test]
    fn forms_are_chosen_per_name_and_checked() {
        let mut c = MessengerConfig::default();
        c.forms.insert("oldxp".into(), MessengerForm::Rpc);
        c.forms.insert("LAB7".into(), MessengerForm::Datagram);
        let t = transport(c.clone());
        assert_eq!(t.form_for("OLDXP"), MessengerForm::Rpc);
        assert_eq!(t.form_for("lab7"), MessengerForm::Datagram);
        assert_eq!(t.form_for("ALICE"), MessengerForm::Session);
        assert_eq!(t.opts.rpc_port, 135);
        // A datagram to one of them is possible: popups are cut to fit one.
        assert_eq!(t.limit(false), dgram::max_text(dgram::MESSNGR, 15, 15));
        assert!(check(&c).is_empty());
        c.forms.insert("A NAME FAR TOO LONG".into(), MessengerForm::Rpc);
        c.rpc_port = Some(0);
        let problems: Vec<String> = check(&c).into_iter().map(|(path, e)| format!("{path}: {e}")).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("forms") && problems[1].contains("rpc_port"), "{problems:?}");
    }

    #[test]
    fn a_preview_shows_the_code_page_and_the_limit_at_work() {
        let t = transport(MessengerConfig { max_length: Some(40), ..MessengerConfig::default() });
        let p = t.preview("Café closes at 18:00 € ok", false);
        assert_eq!((p.code_page, p.limit, p.cut, p.replaced), (850, 40, false, 1), "{p:?}");
        assert_eq!(p.text, "Café closes at 18:00 ? ok", "CP850 has é but not €");
        let p = t.preview(&"word ".repeat(20), true);
        assert!(p.cut && p.bytes == 99 && p.text.ends_with(" [...]") && p.text.len() == 40, "{p:?}");
    }

    #[test]
    fn the_footer_is_kept_whole_and_the_text_is_what_is_cut() {
        let t = transport(MessengerConfig::default());
        let long = "x".repeat(2000);
        // To one machine by session: the transport's limit (652).
        let text = t.popup_text(&notification("firing", &long, "alice"));
        let (r, end) = AckRef::find(&text).expect("the footer is there");
        assert_eq!((r.port, r.alerts.as_slice()), (1139, ["0123abcd0123abcd".to_string()].as_slice()));
        assert!(text[..end].ends_with(" [...]"), "the text is cut: {text}");
        assert!(text.len() <= 652 && text.len() > 600, "{}", text.len());
        // To the workgroup (a datagram): the datagram's limit, footer and all.
        let text = t.popup_text(&notification("firing", &long, "*"));
        assert!(AckRef::find(&text).is_some(), "{text}");
        assert!(text.len() <= dgram::max_text(dgram::MESSNGR, 15, 15), "{}", text.len());
        // Resolved: nothing to acknowledge, no footer.
        let text = t.popup_text(&notification("resolved", "all well", "alice"));
        assert_eq!(text, "all well");
        // A limit with no room for the footer and some text: no footer.
        let t = transport(MessengerConfig { max_length: Some(120), ..MessengerConfig::default() });
        let text = t.popup_text(&notification("firing", &long, "alice"));
        assert!(AckRef::find(&text).is_none() && text.len() <= 120, "{text}");
    }
}
