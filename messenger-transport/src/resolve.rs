//! Finding a machine by its NetBIOS name: a static map from the config,
//! then a NetBIOS name query (to a WINS server, or broadcast), then DNS,
//! with answers cached for a while.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

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
    /// A WINS server (UDP 137), asked before broadcasting.
    pub wins: Option<Ipv4Addr>,
    /// Where to broadcast name queries, e.g. 192.168.1.255; none: no broadcast.
    pub broadcast: Option<Ipv4Addr>,
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
            broadcast: Some(Ipv4Addr::BROADCAST),
            nbns_port: 137,
            dns: true,
            timeout: Duration::from_millis(500),
            cache_ttl: Duration::from_secs(300),
        }
    }
}

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

    /// Resolves a name; `None` when nothing knows it.
    pub async fn resolve(&self, name: &NetbiosName) -> Option<Target> {
        if let Some(t) = self.cfg.hosts.get(&name.name()) {
            return Some(*t);
        }
        if let Some((t, at)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(name)
            && at.elapsed() < self.cfg.cache_ttl
        {
            return Some(*t);
        }
        let mut found = None;
        if let Some(wins) = self.cfg.wins {
            found = self.query(name, SocketAddr::new(IpAddr::V4(wins), self.cfg.nbns_port), false).await;
        }
        if found.is_none()
            && let Some(b) = self.cfg.broadcast
        {
            found = self.query(name, SocketAddr::new(IpAddr::V4(b), self.cfg.nbns_port), true).await;
        }
        if found.is_none() && self.cfg.dns {
            found = tokio::net::lookup_host((name.name().to_ascii_lowercase(), 0))
                .await
                .ok()
                .and_then(|mut addrs| addrs.find(|a| a.is_ipv4()))
                .map(|a| a.ip());
        }
        let target = found.map(|ip| Target { ip, port: None })?;
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(*name, (target, Instant::now()));
        Some(target)
    }

    /// One NetBIOS name query, sent up to three times.
    async fn query(&self, name: &NetbiosName, to: SocketAddr, broadcast: bool) -> Option<IpAddr> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
        if broadcast {
            sock.set_broadcast(true).ok()?;
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let id: u16 = (std::process::id() as u16) ^ (nanos as u16) ^ ((nanos >> 16) as u16);
        let packet = nbns::Packet::name_query(id, *name, broadcast).encode();
        let mut buf = [0u8; 576];
        for _ in 0..3 {
            if sock.send_to(&packet, to).await.is_err() {
                return None;
            }
            let deadline = tokio::time::Instant::now() + self.cfg.timeout;
            while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                let Ok(p) = nbns::Packet::decode(&buf[..n]) else { continue };
                if p.id != id || !p.flags.response || p.flags.rcode != 0 {
                    continue;
                }
                if let Some(ip) = p.answers.iter().filter(|r| r.name == *name).flat_map(|r| r.addresses()).next() {
                    return Some(IpAddr::V4(ip));
                }
            }
        }
        None
    }
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
        let mut cfg = ResolverConfig { broadcast: None, dns: false, ..ResolverConfig::default() };
        cfg.hosts.insert("BOB".into(), parse_target("127.0.0.1:1139").unwrap());
        let r = Resolver::new(cfg);
        assert_eq!(r.resolve(&"bob".parse().unwrap()).await.unwrap().port, Some(1139));
        assert_eq!(r.resolve(&"nobody".parse().unwrap()).await, None);
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
            wins: Some(Ipv4Addr::LOCALHOST),
            broadcast: None,
            nbns_port: port,
            dns: false,
            ..ResolverConfig::default()
        };
        let r = Resolver::new(cfg);
        let t = r.resolve(&"ALICE".parse().unwrap()).await.unwrap();
        assert_eq!(t.ip, IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7)));
        // Cached: the server is gone, the answer is still known.
        assert_eq!(r.resolve(&"ALICE".parse().unwrap()).await, Some(t));
    }
}
