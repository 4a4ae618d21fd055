//! Finding a machine by its NetBIOS name: a static map from the config,
//! then a NetBIOS name query (to a WINS server, then broadcast on each
//! interface), then DNS, with answers cached for a while.
//!
//! When nothing finds the name, the error says what each step did
//! (no answer, or why a query could not even be sent), so an admin on a
//! LAN without a default route reads "Network is unreachable" rather than
//! a bare "not found".

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::iface::Broadcast;
use crate::name::NetbiosName;
use crate::nbns;

/// Where a name lives: an address, and a port when the map gives one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

/// How names are resolved.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// NAME (uppercase) to address (with an optional port).
    pub hosts: HashMap<String, Target>,
    /// A WINS server (UDP 137 unless tests say otherwise), asked before
    /// broadcasting.
    pub wins: Option<SocketAddr>,
    /// Where to broadcast name queries: every interface by default.
    pub broadcast: Broadcast,
    /// The port name queries go to (137; tests may use another).
    pub nbns_port: u16,
    /// Try DNS last.
    pub dns: bool,
    /// How long one query waits for an answer (it is sent up to three times).
    pub timeout: Duration,
    /// How long an answer is kept.
    pub cache_ttl: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            hosts: HashMap::new(),
            wins: None,
            broadcast: Broadcast::AllInterfaces,
            nbns_port: 137,
            dns: true,
            timeout: Duration::from_millis(500),
            cache_ttl: Duration::from_secs(300),
        }
    }
}

/// A name nothing could find, with what each way of looking said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound {
    pub name: String,
    /// One entry per way tried: "broadcast on eth0 (10.0.0.255): no answer".
    pub tried: Vec<String>,
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot find `{}` on the network", self.name)?;
        if self.tried.is_empty() {
            f.write_str(" (no way to look it up is configured: give its address in `hosts:` or with -I)")
        } else {
            write!(f, " ({})", self.tried.join("; "))
        }
    }
}

impl std::error::Error for NotFound {}

/// A resolver with a cache.
#[derive(Debug)]
pub struct Resolver {
    cfg: ResolverConfig,
    cache: Mutex<HashMap<NetbiosName, (Target, Instant)>>,
}

/// Parses `10.0.0.5` or `10.0.0.5:1139` for the static map.
pub fn parse_target(s: &str) -> Option<Target> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(Target { ip: sa.ip(), port: Some(sa.port()) });
    }
    s.parse::<IpAddr>().ok().map(|ip| Target { ip, port: None })
}

impl Resolver {
    pub fn new(cfg: ResolverConfig) -> Resolver {
        Resolver { cfg, cache: Mutex::new(HashMap::new()) }
    }

    pub fn config(&self) -> &ResolverConfig {
        &self.cfg
    }

    /// Resolves a name, or says what every way of looking found.
    pub async fn resolve(&self, name: &NetbiosName) -> Result<Target, NotFound> {
        if let Some(t) = self.cfg.hosts.get(&name.name()) {
            return Ok(*t);
        }
        if let Some((t, at)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(name)
            && at.elapsed() < self.cfg.cache_ttl
        {
            return Ok(*t);
        }
        let mut tried = Vec::new();
        let mut found = None;
        if let Some(wins) = self.cfg.wins {
            match self.query(name, &[wins], false).await {
                Ok(ip) => found = Some(ip),
                Err(why) => tried.push(format!("WINS server {}: {why}", wins.ip())),
            }
        }
        if found.is_none() && self.cfg.broadcast != Broadcast::Off {
            match self.cfg.broadcast.targets() {
                Ok(ifaces) => {
                    let to: Vec<SocketAddr> =
                        ifaces.iter().map(|i| SocketAddr::new(IpAddr::V4(i.broadcast), self.cfg.nbns_port)).collect();
                    let on = ifaces.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                    match self.query(name, &to, true).await {
                        Ok(ip) => found = Some(ip),
                        Err(why) => tried.push(format!("broadcast name query on {on}: {why}")),
                    }
                }
                Err(e) => tried.push(format!("broadcast name query: {e}")),
            }
        }
        if found.is_none() && self.cfg.dns {
            let host = name.name().to_ascii_lowercase();
            match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(mut addrs) => match addrs.find(|a| a.is_ipv4()) {
                    Some(a) => found = Some(a.ip()),
                    None => tried.push(format!("DNS: `{host}` has no IPv4 address")),
                },
                Err(e) => tried.push(format!("DNS: `{host}`: {e}")),
            }
        }
        let Some(ip) = found else { return Err(NotFound { name: name.name(), tried }) };
        let target = Target { ip, port: None };
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(*name, (target, Instant::now()));
        Ok(target)
    }

    /// Forgets a cached answer: the name moved (a user logged on elsewhere)
    /// or its machine went away, as a refused session says.
    pub fn forget(&self, name: &NetbiosName) -> bool {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(name).is_some()
    }

    /// One NetBIOS name query to each of `to`, sent up to three times; the
    /// first positive answer wins. The error says why none came.
    async fn query(&self, name: &NetbiosName, to: &[SocketAddr], broadcast: bool) -> Result<IpAddr, String> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.map_err(|e| format!("no UDP socket: {e}"))?;
        if broadcast {
            sock.set_broadcast(true).map_err(|e| format!("cannot broadcast: {e}"))?;
        }
        let id = nbns::transaction_id();
        let packet = nbns::Packet::name_query(id, *name, broadcast).encode();
        let mut buf = [0u8; 576];
        let mut negative = None;
        let mut send_errors: Vec<String> = Vec::new();
        for _ in 0..3 {
            send_errors.clear();
            for addr in to {
                if let Err(e) = sock.send_to(&packet, addr).await {
                    send_errors.push(format!("cannot send to {addr}: {e}"));
                }
            }
            if send_errors.len() == to.len() {
                // Nothing left the machine; waiting would only hide why.
                return Err(send_errors.join(", "));
            }
            let deadline = tokio::time::Instant::now() + self.cfg.timeout;
            while let Ok(Ok((n, from))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                let Ok(p) = nbns::Packet::decode(&buf[..n]) else { continue };
                if p.id != id || !p.flags.response {
                    continue;
                }
                if p.flags.rcode != 0 {
                    negative = Some(format!("{from} answered that the name does not exist (rcode {})", p.flags.rcode));
                    continue;
                }
                if let Some(ip) = p.answers.iter().filter(|r| r.name == *name).flat_map(|r| r.addresses()).next() {
                    return Ok(IpAddr::V4(ip));
                }
            }
        }
        let waited = self.cfg.timeout * 3;
        let mut why = negative.unwrap_or_else(|| format!("no answer in {waited:?}"));
        if !send_errors.is_empty() {
            why.push_str(&format!(" ({})", send_errors.join(", ")));
        }
        Err(why)
    }
}

/// One machine's answer to a node status request: its address and the
/// names it holds, with their flags (`nbns::FLAG_GROUP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub ip: Ipv4Addr,
    pub names: Vec<(NetbiosName, u16)>,
}

/// The most machines one scan keeps: a hostile LAN cannot make it grow
/// without end.
pub const MAX_SCANNED: usize = 1024;

/// Sends a node status request (`nmblookup -A`, the wildcard name) to each
/// of `to` (machines, or broadcast addresses, which every machine that
/// answers broadcast node status hears) and collects the answers that
/// arrive within `wait`, one per address, the first kept. Answers to
/// another transaction, and packets that are not answers, are ignored.
pub async fn node_status(to: &[SocketAddr], wait: Duration) -> std::io::Result<Vec<NodeStatus>> {
    scan(to, wait, None).await
}

/// One machine's node status (`nmblookup -A ADDRESS`): only its own answer
/// counts (another machine answering cannot name it), and the first one
/// ends the wait.
pub async fn node_status_of(addr: SocketAddr, wait: Duration) -> std::io::Result<Option<NodeStatus>> {
    let IpAddr::V4(ip) = addr.ip() else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "node status is asked over IPv4"));
    };
    Ok(scan(&[addr], wait, Some(ip)).await?.pop())
}

async fn scan(to: &[SocketAddr], wait: Duration, only: Option<Ipv4Addr>) -> std::io::Result<Vec<NodeStatus>> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    sock.set_broadcast(true)?;
    let id = nbns::transaction_id();
    let packet = nbns::Packet::status_query(id).encode();
    let mut sent = 0;
    let mut last_error = None;
    for addr in to {
        match sock.send_to(&packet, addr).await {
            Ok(_) => sent += 1,
            Err(e) => last_error = Some(e),
        }
    }
    if sent == 0
        && let Some(e) = last_error
    {
        return Err(e);
    }
    let mut found: Vec<NodeStatus> = Vec::new();
    let mut buf = [0u8; 1500];
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok((n, from))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
        let Ok(p) = nbns::Packet::decode(&buf[..n]) else { continue };
        let IpAddr::V4(ip) = from.ip() else { continue };
        if p.id != id || !p.flags.response || found.iter().any(|f| f.ip == ip) || only.is_some_and(|o| o != ip) {
            continue;
        }
        let names: Vec<(NetbiosName, u16)> = p.answers.iter().flat_map(nbns::Record::status_names).collect();
        if names.is_empty() {
            continue;
        }
        found.push(NodeStatus { ip, names });
        if found.len() >= MAX_SCANNED || only.is_some() {
            break;
        }
    }
    found.sort_by_key(|f| f.ip);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_targets() {
        assert_eq!(parse_target("10.0.0.5"), Some(Target { ip: "10.0.0.5".parse().unwrap(), port: None }));
        assert_eq!(parse_target("127.0.0.1:1139").unwrap().port, Some(1139));
        assert_eq!(parse_target("nonsense"), None);
    }

    #[tokio::test]
    async fn the_static_map_wins_and_unknown_names_fail() {
        let mut cfg = ResolverConfig { broadcast: Broadcast::Off, dns: false, ..ResolverConfig::default() };
        cfg.hosts.insert("BOB".into(), parse_target("127.0.0.1:1139").unwrap());
        let r = Resolver::new(cfg);
        assert_eq!(r.resolve(&"bob".parse().unwrap()).await.unwrap().port, Some(1139));
        let e = r.resolve(&"nobody".parse().unwrap()).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot find `NOBODY` on the network (no way to look it up is configured: give its address in `hosts:` or with -I)"
        );
    }

    #[tokio::test]
    async fn answers_from_a_name_server() {
        // A name server on loopback that answers one query.
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 576];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            let q = nbns::Packet::decode(&buf[..n]).unwrap();
            let a = nbns::Packet::query_response(&q, q.questions[0].name, Ipv4Addr::new(10, 9, 8, 7), false);
            server.send_to(&a.encode(), from).await.unwrap();
        });
        let cfg = ResolverConfig {
            wins: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            broadcast: Broadcast::Off,
            timeout: Duration::from_millis(200),
            dns: false,
            ..ResolverConfig::default()
        };
        let r = Resolver::new(cfg);
        let t = r.resolve(&"ALICE".parse().unwrap()).await.unwrap();
        assert_eq!(t.ip, IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7)));
        // Cached: the server is gone, the answer is still known.
        assert_eq!(r.resolve(&"ALICE".parse().unwrap()).await, Ok(t));
        // Forgotten (once): asked again, and nobody answers now.
        assert!(r.forget(&"ALICE".parse().unwrap()));
        assert!(!r.forget(&"ALICE".parse().unwrap()));
        assert!(r.resolve(&"ALICE".parse().unwrap()).await.is_err());
    }

    #[tokio::test]
    async fn node_status_collects_each_machines_names_once() {
        // Two "machines" on loopback: one answers twice (kept once), one
        // answers another transaction first (ignored) and garbage.
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        let to = [a.local_addr().unwrap(), b.local_addr().unwrap()];
        let name = |s: &str| -> NetbiosName { s.parse().unwrap() };
        tokio::spawn(async move {
            let mut buf = [0u8; 576];
            let (n, from) = a.recv_from(&mut buf).await.unwrap();
            let q = nbns::Packet::decode(&buf[..n]).unwrap();
            let r = nbns::Packet::status_response(&q, &[(name("ALICE").with_suffix(3), false)]);
            a.send_to(&r.encode(), from).await.unwrap();
            a.send_to(&r.encode(), from).await.unwrap();
        });
        tokio::spawn(async move {
            let mut buf = [0u8; 576];
            let (n, from) = b.recv_from(&mut buf).await.unwrap();
            let mut q = nbns::Packet::decode(&buf[..n]).unwrap();
            b.send_to(b"\x00\x01garbage", from).await.unwrap();
            q.id = q.id.wrapping_add(1);
            let other = nbns::Packet::status_response(&q, &[(name("MALLORY"), false)]);
            b.send_to(&other.encode(), from).await.unwrap();
            q.id = q.id.wrapping_sub(1);
            let r = nbns::Packet::status_response(&q, &[(name("BOB"), false), (name("TESTWG"), true)]);
            b.send_to(&r.encode(), from).await.unwrap();
        });
        let found = node_status(&to, Duration::from_millis(500)).await.unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].names, vec![(name("ALICE").with_suffix(3), nbns::FLAG_ACTIVE)]);
        assert_eq!(found[1].ip, Ipv4Addr::new(127, 0, 0, 2));
        let names: Vec<String> = found[1].names.iter().map(|(n, _)| n.name()).collect();
        assert_eq!(names, vec!["BOB", "TESTWG"]);
        assert_ne!(found[1].names[1].1 & nbns::FLAG_GROUP, 0);
    }
}
