//! Holding names on the network: the machine's `NAME<03>` and the message
//! aliases beside it (`ALICE<03>` while Alice is logged on, as Windows'
//! Messenger registered the logged-on user), registered by broadcast and
//! with a WINS server, refreshed there, and released when given up.
//!
//! A name is held by one task: it registers (three broadcast rounds on
//! each interface, as nmbd does, then with the WINS server if there is
//! one), refreshes the WINS registration at half its TTL, and, for an
//! alias that someone else defended, stops answering for it and tries
//! again after `conflict_retry` (Alice may be logged on elsewhere too; when
//! she leaves there, the name comes here). The machine's own name is
//! never given up on a conflict: that is a misconfiguration, reported.
//!
//! The name service socket's task hands every answer to [`NameTable::on_response`],
//! which routes a WINS server's answers to the task waiting for them by
//! transaction id and turns a neighbour's defence into a conflict.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::iface::{Broadcast, Interface};
use crate::listener::{Event, lock};
use crate::name::NetbiosName;
use crate::nbns;

/// How names are held.
#[derive(Debug, Clone)]
pub struct HoldConfig {
    /// Register (and release) by broadcast.
    pub register: bool,
    /// Where broadcasts go.
    pub broadcast: Broadcast,
    /// A WINS server to register names with (UDP 137; tests use another port).
    pub wins: Option<SocketAddr>,
    /// How long an alias someone else defended waits before trying again.
    pub conflict_retry: Duration,
}

/// How long one WINS request waits for its answer; it is sent three times.
const WINS_WAIT: Duration = Duration::from_secs(2);
const WINS_TRIES: u32 = 3;
/// The longest wait a WACK may ask for.
const MAX_WACK: Duration = Duration::from_secs(60);
/// Refresh at half the TTL granted, but at least this often (a WINS server
/// restarted without its database learns the name again) ...
const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// ... and no more often than this, whatever TTL a server grants.
const MIN_REFRESH: Duration = Duration::from_secs(10);
/// When the WINS server did not answer, when to try again.
const WINS_RETRY: Duration = Duration::from_secs(60);

/// One name and the task holding it.
#[derive(Debug)]
struct Hold {
    name: NetbiosName,
    /// An alias, given up to whoever defends it; not the machine's name.
    alias: bool,
    /// Answered and defended: false while someone else holds it.
    held: AtomicBool,
    /// Someone else defended it.
    conflict: Notify,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// The names this receiver holds: its own and the aliases.
#[derive(Debug)]
pub(crate) struct NameTable {
    machine: Arc<Hold>,
    aliases: Mutex<HashMap<NetbiosName, Arc<Hold>>>,
    cfg: HoldConfig,
    /// The name service socket, once bound (none: names are answered for
    /// messages but not registered).
    sock: OnceLock<Arc<UdpSocket>>,
    /// WINS requests waiting for their answer, by transaction id.
    waiting: Mutex<HashMap<u16, mpsc::Sender<nbns::Packet>>>,
    events: mpsc::Sender<Event>,
}

/// What a WINS server said.
enum WinsAnswer {
    Granted(u32),
    Refused(IpAddr),
    Other(u8),
}

impl NameTable {
    pub(crate) fn new(machine: NetbiosName, cfg: HoldConfig, events: mpsc::Sender<Event>) -> NameTable {
        NameTable {
            machine: Arc::new(Hold::new(machine, false)),
            aliases: Mutex::new(HashMap::new()),
            cfg,
            sock: OnceLock::new(),
            waiting: Mutex::new(HashMap::new()),
            events,
        }
    }

    /// Whether name queries for `n` are answered (and registrations of it
    /// defended): the machine's name, and the aliases not lost to a conflict.
    pub(crate) fn answers_for(&self, n: &NetbiosName) -> bool {
        *n == self.machine.name || lock(&self.aliases).get(n).is_some_and(|h| h.held.load(Ordering::Relaxed))
    }

    /// Whether messages to `n` are ours: the machine's name and every
    /// alias (a message that reaches us for Alice is for Alice, even while
    /// her name is answered elsewhere).
    pub(crate) fn receives_for(&self, n: &NetbiosName) -> bool {
        *n == self.machine.name || lock(&self.aliases).contains_key(n)
    }

    /// The names a node status answer lists.
    pub(crate) fn held(&self) -> Vec<NetbiosName> {
        let mut v = vec![self.machine.name];
        let aliases = lock(&self.aliases);
        let mut held: Vec<NetbiosName> =
            aliases.values().filter(|h| h.held.load(Ordering::Relaxed)).map(|h| h.name).collect();
        held.sort();
        v.extend(held);
        v
    }

    pub(crate) fn aliases(&self) -> Vec<NetbiosName> {
        let mut v: Vec<NetbiosName> = lock(&self.aliases).keys().copied().collect();
        v.sort();
        v
    }

    /// Starts holding the machine's name on `sock`.
    pub(crate) fn start(self: &Arc<Self>, sock: Arc<UdpSocket>) {
        let _ = self.sock.set(sock);
        if self.cfg.register || self.cfg.wins.is_some() {
            self.spawn_hold(self.machine.clone());
        }
    }

    fn spawn_hold(self: &Arc<Self>, h: Arc<Hold>) {
        let Some(sock) = self.sock.get().cloned() else { return };
        let task = tokio::spawn(hold(self.clone(), sock, h.clone()));
        *lock(&h.task) = Some(task);
    }

    /// Adds an alias; false if it was there already.
    pub(crate) fn add_alias(self: &Arc<Self>, name: NetbiosName) -> bool {
        if name == self.machine.name {
            return false;
        }
        let h = Arc::new(Hold::new(name, true));
        {
            let mut aliases = lock(&self.aliases);
            if aliases.contains_key(&name) {
                return false;
            }
            aliases.insert(name, h.clone());
        }
        self.spawn_hold(h);
        true
    }

    /// Gives an alias up: no longer answered, released by broadcast and at
    /// the WINS server. False if it was not held.
    pub(crate) async fn remove_alias(&self, name: &NetbiosName) -> bool {
        let Some(h) = lock(&self.aliases).remove(name) else { return false };
        h.stop();
        if h.held.load(Ordering::Relaxed) {
            self.release(name).await;
        }
        true
    }

    /// Releases every name, the machine's last, as a receiver stopping does.
    pub(crate) async fn release_all(&self) {
        for name in self.aliases() {
            self.remove_alias(&name).await;
        }
        self.machine.stop();
        if self.cfg.register || self.cfg.wins.is_some() {
            self.release(&self.machine.name).await;
        }
    }

    pub(crate) fn stop(&self) {
        self.machine.stop();
        for h in lock(&self.aliases).values() {
            h.stop();
        }
    }

    /// An answer on the name service socket: a WINS server's answer goes to
    /// the request waiting for it; a neighbour defending a name we
    /// registered is a conflict. True when it was handled here.
    pub(crate) fn on_response(&self, p: &nbns::Packet, peer: SocketAddr) -> bool {
        if !p.flags.response {
            return false;
        }
        if self.cfg.wins.is_some_and(|w| w.ip() == peer.ip())
            && let Some(tx) = lock(&self.waiting).get(&p.id)
        {
            let _ = tx.try_send(p.clone());
            return true;
        }
        if p.flags.opcode == nbns::OP_REGISTRATION && p.flags.rcode == nbns::RCODE_ACT_ERR {
            let name = p.answers.first().map_or(self.machine.name, |r| r.name);
            let holder = p.answers.iter().flat_map(|r| r.addresses()).next().map_or(peer.ip(), IpAddr::V4);
            self.conflict(&name, holder);
            return true;
        }
        false
    }

    /// Someone else holds `name`: an alias stops being answered until it is
    /// tried again; the machine's name is reported.
    fn conflict(&self, name: &NetbiosName, holder: IpAddr) {
        let h = if *name == self.machine.name {
            Some(self.machine.clone())
        } else {
            lock(&self.aliases).get(name).cloned()
        };
        let Some(h) = h else { return };
        if h.alias {
            if h.held.swap(false, Ordering::Relaxed) {
                info!(
                    "{name} is held by {holder}: not answering for it here (tried again in {:?})",
                    self.cfg.conflict_retry
                );
            }
            h.conflict.notify_one();
        } else {
            warn!("the name {name} is already in use by {holder}");
        }
        let _ = self.events.try_send(Event::NameConflict { name: name.to_string(), holder });
    }

    /// A request's transaction id: random (see [`nbns::transaction_id`]).
    fn id(&self) -> u16 {
        nbns::transaction_id()
    }

    /// One request to the WINS server and its final answer (after any
    /// WACKs), sent up to three times.
    async fn wins_exchange(
        &self,
        sock: &UdpSocket,
        wins: SocketAddr,
        make: impl Fn(u16, Ipv4Addr) -> nbns::Packet,
    ) -> Result<nbns::Packet, String> {
        let ip = crate::listener::answer_address(None, wins)
            .await
            .ok_or_else(|| format!("no address of this machine reaches the WINS server {wins}"))?;
        let (tx, mut rx) = mpsc::channel(4);
        // The answer finds its request by the id: one no other request
        // waiting has.
        let id = {
            let mut waiting = lock(&self.waiting);
            let id =
                std::iter::repeat_with(|| self.id()).find(|id| !waiting.contains_key(id)).expect("an endless supply");
            waiting.insert(id, tx);
            id
        };
        let _forget = Forget(&self.waiting, id);
        let packet = make(id, ip).encode();
        for _ in 0..WINS_TRIES {
            sock.send_to(&packet, wins).await.map_err(|e| format!("cannot reach the WINS server {wins}: {e}"))?;
            let mut deadline = Instant::now() + WINS_WAIT;
            while let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                match p.wack_ttl() {
                    // The server is checking with the name's last owner.
                    Some(ttl) => deadline = Instant::now() + Duration::from_secs(ttl.into()).clamp(WINS_WAIT, MAX_WACK),
                    None => return Ok(p),
                }
            }
        }
        Err(format!("no answer from the WINS server {wins}"))
    }

    async fn wins_register(
        &self,
        sock: &UdpSocket,
        wins: SocketAddr,
        name: NetbiosName,
        refresh: bool,
    ) -> Result<WinsAnswer, String> {
        let p = self
            .wins_exchange(sock, wins, |id, ip| {
                if refresh {
                    nbns::Packet::wins_refresh(id, name, ip, nbns::DEFAULT_TTL)
                } else {
                    nbns::Packet::wins_registration(id, name, ip, nbns::DEFAULT_TTL)
                }
            })
            .await?;
        Ok(match (p.granted_ttl(), p.flags.rcode) {
            (Some(ttl), _) => WinsAnswer::Granted(ttl),
            (None, nbns::RCODE_ACT_ERR) => {
                WinsAnswer::Refused(p.answers.iter().flat_map(|r| r.addresses()).next().map_or(wins.ip(), IpAddr::V4))
            }
            (None, rcode) => WinsAnswer::Other(rcode),
        })
    }

    /// Gives `name` up: a broadcast release on each interface and a release
    /// at the WINS server, so that neither still sends its popups here.
    async fn release(&self, name: &NetbiosName) {
        let Some(sock) = self.sock.get().cloned() else { return };
        if self.cfg.register {
            match self.cfg.broadcast.targets() {
                Ok(ifaces) => {
                    for i in ifaces {
                        let p = nbns::Packet::release(self.id(), *name, i.ip, true).encode();
                        if let Err(e) = sock.send_to(&p, (i.broadcast, 137)).await {
                            debug!("cannot broadcast the release of {name} on {i}: {e}");
                        }
                    }
                }
                Err(e) => debug!("{name} is not released by broadcast: {e}"),
            }
        }
        if let Some(wins) = self.cfg.wins {
            match self.wins_exchange(&sock, wins, |id, ip| nbns::Packet::release(id, *name, ip, false)).await {
                Ok(p) if p.flags.rcode == 0 => debug!("released {name} at the WINS server {wins}"),
                Ok(p) => debug!("the WINS server {wins} answered the release of {name} with rcode {}", p.flags.rcode),
                Err(e) => warn!("{name} could not be released at the WINS server (it expires there by itself): {e}"),
            }
        }
    }
}

impl Hold {
    fn new(name: NetbiosName, alias: bool) -> Hold {
        Hold { name, alias, held: AtomicBool::new(true), conflict: Notify::new(), task: Mutex::new(None) }
    }

    fn stop(&self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }
}

/// Removes a finished request's waiter, however the request ended.
struct Forget<'a>(&'a Mutex<HashMap<u16, mpsc::Sender<nbns::Packet>>>, u16);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(&self.1);
    }
}

/// Holds one name for as long as the task runs: see the module docs.
async fn hold(table: Arc<NameTable>, sock: Arc<UdpSocket>, h: Arc<Hold>) {
    let name = h.name;
    let mut fresh = true;
    loop {
        if fresh {
            h.held.store(true, Ordering::Relaxed);
            if table.cfg.register {
                register_by_broadcast(&sock, name, &table.cfg.broadcast).await;
            }
        }
        let mut wait = None;
        if let Some(wins) = table.cfg.wins
            && h.held.load(Ordering::Relaxed)
        {
            wait = Some(match table.wins_register(&sock, wins, name, !fresh).await {
                Ok(WinsAnswer::Granted(ttl)) => {
                    debug!("{name} is registered with the WINS server {wins} for {ttl} s");
                    (Duration::from_secs(ttl.into()) / 2).clamp(MIN_REFRESH, MAX_REFRESH)
                }
                Ok(WinsAnswer::Refused(holder)) => {
                    table.conflict(&name, holder);
                    table.cfg.conflict_retry
                }
                Ok(WinsAnswer::Other(rcode)) => {
                    warn!("the WINS server {wins} refused {name} (rcode {rcode}); trying again in {WINS_RETRY:?}");
                    WINS_RETRY
                }
                Err(e) => {
                    warn!("{name} is not registered with WINS: {e}; trying again in {WINS_RETRY:?}");
                    WINS_RETRY
                }
            });
        }
        if h.alias && !h.held.load(Ordering::Relaxed) {
            tokio::time::sleep(table.cfg.conflict_retry).await;
            fresh = true;
            continue;
        }
        let refresh = async {
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        // A conflict signalled during an earlier round left a permit
        // behind: only a conflict that took the name away counts.
        let lost = async {
            loop {
                h.conflict.notified().await;
                if !h.held.load(Ordering::Relaxed) {
                    break;
                }
            }
        };
        tokio::select! {
            _ = lost, if h.alias => {
                tokio::time::sleep(table.cfg.conflict_retry).await;
                fresh = true;
            }
            _ = refresh => fresh = !h.held.load(Ordering::Relaxed),
        }
    }
}

/// B-node registration: three rounds a quarter second apart, as RFC 1002
/// describes and nmbd does, each round on every interface with that
/// interface's own address; objections arrive at the name service socket
/// (see [`NameTable::on_response`]).
async fn register_by_broadcast(sock: &UdpSocket, name: NetbiosName, broadcast: &Broadcast) {
    let targets = match broadcast.targets() {
        Ok(t) => t,
        Err(e) => {
            warn!("{name} is not registered by broadcast (name queries are still answered): {e}");
            return;
        }
    };
    let mut live: Vec<Interface> = targets;
    for _ in 0..3 {
        let mut still = Vec::new();
        for i in live {
            let packet = nbns::Packet::registration(0x4e42, name, i.ip, false).encode();
            match sock.send_to(&packet, (i.broadcast, 137)).await {
                Ok(_) => still.push(i),
                Err(e) => warn!("cannot broadcast the registration of {name} on {i}: {e}"),
            }
        }
        live = still;
        if live.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let on: Vec<String> = live.iter().map(|i| format!("{} {}", i.name, i.ip)).collect();
    debug!("registered {name} on {}", on.join(", "));
}
