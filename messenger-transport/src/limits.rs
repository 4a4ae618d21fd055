//! What one peer may make the listener hold or do: connections (per peer
//! and in all, with fair eviction when full), messages and bytes per second,
//! how long a connection may live, and how often a refusal is logged.
//!
//! Sans-IO: every decision takes `now`, so the policies are tested with
//! made-up instants and the listener only wires them to sockets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens at most, refilled at `rate` per second.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(burst: f64, now: Instant) -> Bucket {
        Bucket { tokens: burst, last: now }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
    }
}

/// Messages and bytes one peer address may send per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub messages_per_sec: f64,
    pub message_burst: f64,
    pub bytes_per_sec: f64,
    pub byte_burst: f64,
}

impl RateLimit {
    /// Generous for people and for a daemon sending a burst of popups to
    /// one workstation; a flood of full-size messages is cut to a trickle.
    pub const DEFAULT: RateLimit = RateLimit {
        messages_per_sec: 5.0,
        message_burst: 20.0,
        bytes_per_sec: 16.0 * 1024.0,
        byte_burst: 64.0 * 1024.0,
    };

    /// No limit at all (tests, and `--peer-messages 0`).
    pub const NONE: RateLimit = RateLimit {
        messages_per_sec: f64::INFINITY,
        message_burst: f64::INFINITY,
        bytes_per_sec: f64::INFINITY,
        byte_burst: f64::INFINITY,
    };
}

/// Which limit a message exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Messages,
    Bytes,
}

/// Per-address rate limits. The table is bounded: source addresses of
/// datagrams can be forged, so an attacker must not be able to grow it
/// without end. When it is full, peers whose buckets have refilled (who
/// have been quiet) are forgotten first; if that is not enough, all are,
/// which only ever errs on the side of letting a message through.
#[derive(Debug)]
pub struct PeerRates {
    limit: RateLimit,
    peers: HashMap<IpAddr, (Bucket, Bucket)>,
    cap: usize,
}

impl PeerRates {
    pub fn new(limit: RateLimit, cap: usize) -> PeerRates {
        PeerRates { limit, peers: HashMap::new(), cap: cap.max(1) }
    }

    /// Whether a message of `bytes` from `peer` may pass now; passing takes
    /// its share of both buckets. A message larger than the byte burst
    /// counts as a full burst, so it can pass, once.
    pub fn allow(&mut self, peer: IpAddr, bytes: usize, now: Instant) -> Result<(), Limited> {
        let l = self.limit;
        if l.messages_per_sec.is_infinite() && l.bytes_per_sec.is_infinite() {
            return Ok(());
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.cap {
            self.forget_quiet(now);
        }
        let (m, b) = self
            .peers
            .entry(peer)
            .or_insert_with(|| (Bucket::new(l.message_burst, now), Bucket::new(l.byte_burst, now)));
        m.refill(l.messages_per_sec, l.message_burst, now);
        b.refill(l.bytes_per_sec, l.byte_burst, now);
        let cost = (bytes as f64).min(l.byte_burst);
        if m.tokens < 1.0 {
            return Err(Limited::Messages);
        }
        if b.tokens < cost {
            return Err(Limited::Bytes);
        }
        m.tokens -= 1.0;
        b.tokens -= cost;
        Ok(())
    }

    fn forget_quiet(&mut self, now: Instant) {
        let l = self.limit;
        self.peers.retain(|_, (m, b)| {
            m.refill(l.messages_per_sec, l.message_burst, now);
            b.refill(l.bytes_per_sec, l.byte_burst, now);
            m.tokens < l.message_burst || b.tokens < l.byte_burst
        });
        if self.peers.len() >= self.cap {
            self.peers.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// How long a connection may stay, and how long it may take to say
/// something. Keep-alives are not "saying something": a peer that only
/// sends them is closed at its idle deadline like a silent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimes {
    /// For the first real packet (a session request or an SMB).
    pub handshake: Duration,
    /// Between real packets.
    pub idle: Duration,
    /// In all, however busy.
    pub lifetime: Duration,
}

impl ConnectionTimes {
    /// When a connection that started at `start`, last sent a real packet
    /// at `last_active` (if ever), must be closed.
    pub fn deadline(&self, start: Instant, last_active: Option<Instant>) -> Instant {
        let end = start + self.lifetime;
        let quiet = match last_active {
            None => start + self.handshake.min(self.idle),
            Some(t) => t + self.idle,
        };
        end.min(quiet)
    }
}

/// Why a new connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This address already holds its share.
    PeerLimit,
}

/// What to do with a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<T> {
    /// Take it, under this id.
    Accept(u64),
    /// Take it, after closing this other connection (whose payload is
    /// handed back so the caller can signal it).
    Evict {
        id: u64,
        victim: u64,
        payload: T,
    },
    Refuse(Refusal),
}

#[derive(Debug)]
struct Conn<T> {
    peer: IpAddr,
    last_active: Instant,
    payload: T,
}

/// The connections held, with a per-address limit and fair eviction: when
/// every slot is taken, a newcomer is let in by closing the longest-idle
/// connection of the address holding the most. An attacker spreading
/// connections over many addresses still holds more per address than a
/// legitimate sender with one, so it is the attacker's that go; and among
/// equals the idle one goes, not the one in the middle of a message.
#[derive(Debug)]
pub struct Connections<T> {
    max: usize,
    per_peer: usize,
    next: u64,
    conns: HashMap<u64, Conn<T>>,
    counts: HashMap<IpAddr, usize>,
}

impl<T> Connections<T> {
    pub fn new(max: usize, per_peer: usize) -> Connections<T> {
        Connections {
            max: max.max(1),
            per_peer: per_peer.max(1),
            next: 0,
            conns: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn of_peer(&self, peer: IpAddr) -> usize {
        self.counts.get(&peer).copied().unwrap_or(0)
    }

    pub fn admit(&mut self, peer: IpAddr, now: Instant, payload: T) -> Admit<T> {
        if self.of_peer(peer) >= self.per_peer {
            return Admit::Refuse(Refusal::PeerLimit);
        }
        let evicted = if self.conns.len() >= self.max {
            let victim = self
                .conns
                .iter()
                .max_by(|(ia, a), (ib, b)| {
                    let (ca, cb) = (self.counts[&a.peer], self.counts[&b.peer]);
                    // The most connections, then the longest idle, then the oldest id.
                    ca.cmp(&cb).then(b.last_active.cmp(&a.last_active)).then(ib.cmp(ia))
                })
                .map(|(id, _)| *id);
            victim.and_then(|v| self.close(v).map(|p| (v, p)))
        } else {
            None
        };
        let id = self.next;
        self.next += 1;
        self.conns.insert(id, Conn { peer, last_active: now, payload });
        *self.counts.entry(peer).or_insert(0) += 1;
        match evicted {
            Some((victim, payload)) => Admit::Evict { id, victim, payload },
            None => Admit::Accept(id),
        }
    }

    /// The connection sent a real packet.
    pub fn touch(&mut self, id: u64, now: Instant) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.last_active = now;
        }
    }

    /// Forgets a connection (closed, or evicted); its payload if it was held.
    pub fn close(&mut self, id: u64) -> Option<T> {
        let c = self.conns.remove(&id)?;
        if let Some(n) = self.counts.get_mut(&c.peer) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&c.peer);
            }
        }
        Some(c.payload)
    }
}

/// Logs a kind of refusal at most once per period, with how many were not
/// logged in between: a flood must not become a flood of log lines.
#[derive(Debug, Clone)]
pub struct LogEvery {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogEvery {
    pub fn new(every: Duration) -> LogEvery {
        LogEvery { every, last: None, suppressed: 0 }
    }

    /// `Some(n)` when this occurrence is to be logged, `n` being how many
    /// were suppressed since the last line; `None` to stay quiet.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The delay before accepting again after the `failures`-th accept error
/// in a row: an error such as EMFILE repeats at once if retried at once,
/// burning a core, and clears only when connections close.
pub fn accept_backoff(failures: u32) -> Duration {
    let ms = 10u64.saturating_mul(1u64 << (failures.clamp(1, 8) - 1));
    Duration::from_millis(ms.min(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn rates_pass_a_burst_then_refill() {
        let t0 = Instant::now();
        let limit = RateLimit { messages_per_sec: 2.0, message_burst: 3.0, bytes_per_sec: 100.0, byte_burst: 1000.0 };
        let mut r = PeerRates::new(limit, 10);
        for _ in 0..3 {
            assert_eq!(r.allow(ip(1), 10, t0), Ok(()));
        }
        assert_eq!(r.allow(ip(1), 10, t0), Err(Limited::Messages));
        // Another address has its own buckets.
        assert_eq!(r.allow(ip(2), 10, t0), Ok(()));
        // Half a second later, one more message.
        assert_eq!(r.allow(ip(1), 10, t0 + Duration::from_millis(500)), Ok(()));
        assert_eq!(r.allow(ip(1), 10, t0 + Duration::from_millis(500)), Err(Limited::Messages));
        // Bytes: a message larger than the burst passes once, as a full burst.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(r.allow(ip(3), 5000, t1), Ok(()));
        assert_eq!(r.allow(ip(3), 1, t1), Err(Limited::Bytes));
        assert_eq!(r.allow(ip(3), 100, t1 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn the_rate_table_stays_bounded() {
        let t0 = Instant::now();
        let mut r = PeerRates::new(RateLimit::DEFAULT, 100);
        for i in 0..10_000u32 {
            let peer = IpAddr::from(i.to_be_bytes());
            assert!(r.allow(peer, 10, t0).is_ok());
            assert!(r.len() <= 100);
        }
        // A busy peer is remembered while quiet ones are forgotten.
        let mut r = PeerRates::new(RateLimit { message_burst: 2.0, ..RateLimit::DEFAULT }, 3);
        let busy = ip(9);
        r.allow(busy, 10, t0).unwrap();
        r.allow(busy, 10, t0).unwrap();
        let later = t0 + Duration::from_secs(10);
        for i in 1..=4 {
            r.allow(ip(i), 10, later).ok();
        }
        assert!(r.len() <= 3);
        assert_eq!(RateLimit::NONE.messages_per_sec, f64::INFINITY);
        let mut free = PeerRates::new(RateLimit::NONE, 1);
        for _ in 0..1000 {
            assert!(free.allow(busy, 1 << 20, t0).is_ok());
        }
        assert!(free.is_empty());
    }

    #[test]
    fn deadlines_ignore_keepalives_and_end_at_the_lifetime() {
        let times = ConnectionTimes {
            handshake: Duration::from_secs(5),
            idle: Duration::from_secs(30),
            lifetime: Duration::from_secs(300),
        };
        let t0 = Instant::now();
        assert_eq!(times.deadline(t0, None), t0 + Duration::from_secs(5));
        assert_eq!(times.deadline(t0, Some(t0 + Duration::from_secs(2))), t0 + Duration::from_secs(32));
        assert_eq!(times.deadline(t0, Some(t0 + Duration::from_secs(290))), t0 + Duration::from_secs(300));
        // A handshake allowance longer than the idle time is cut to it.
        let short = ConnectionTimes { idle: Duration::from_secs(1), ..times };
        assert_eq!(short.deadline(t0, None), t0 + Duration::from_secs(1));
    }

    #[test]
    fn a_full_table_evicts_from_the_address_holding_most() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut c: Connections<&'static str> = Connections::new(4, 3);
        assert_eq!(c.admit(ip(1), at(0), "a1"), Admit::Accept(0));
        assert_eq!(c.admit(ip(1), at(1), "a2"), Admit::Accept(1));
        assert_eq!(c.admit(ip(1), at(2), "a3"), Admit::Accept(2));
        assert_eq!(c.admit(ip(1), at(3), "a4"), Admit::Refuse(Refusal::PeerLimit));
        assert_eq!(c.admit(ip(2), at(3), "b1"), Admit::Accept(3));
        // Full: a newcomer evicts one of ip(1)'s, the longest idle (a1 was
        // touched, so a2 is).
        c.touch(0, at(4));
        assert_eq!(c.admit(ip(3), at(5), "c1"), Admit::Evict { id: 4, victim: 1, payload: "a2" });
        assert_eq!(c.of_peer(ip(1)), 2);
        // Among equals (one each... except ip(1) with two), ip(1) again.
        assert_eq!(c.admit(ip(4), at(6), "d1"), Admit::Evict { id: 5, victim: 2, payload: "a3" });
        // Now everyone holds one: the longest idle goes, whoever it is.
        assert_eq!(c.admit(ip(5), at(7), "e1"), Admit::Evict { id: 6, victim: 3, payload: "b1" });
        assert_eq!(c.len(), 4);
        assert_eq!(c.close(6), Some("e1"));
        assert_eq!(c.close(6), None);
        assert_eq!(c.of_peer(ip(5)), 0);
    }

    #[test]
    fn many_addresses_cannot_push_out_a_sender_with_one() {
        let t0 = Instant::now();
        let mut c: Connections<()> = Connections::new(256, 16);
        let attacker = |i: u32| IpAddr::from([10, 1, (i / 200) as u8, (i % 200) as u8]);
        for i in 0..300 {
            let _ = c.admit(attacker(i % 200), t0, ());
        }
        let legit = IpAddr::from([10, 9, 9, 9]);
        let Admit::Evict { id: mine, .. } = c.admit(legit, t0 + Duration::from_millis(1), ()) else { panic!() };
        // The attack goes on, connection after connection, from 200 addresses.
        for i in 0..20_000u32 {
            let _ = c.admit(attacker(i % 200), t0 + Duration::from_millis(2), ());
            assert_eq!(c.of_peer(legit), 1, "evicted after {i}");
        }
        assert!(c.close(mine).is_some());
    }

    #[test]
    fn refusals_are_logged_once_per_period_with_a_count() {
        let t0 = Instant::now();
        let mut l = LogEvery::new(Duration::from_secs(10));
        assert_eq!(l.hit(t0), Some(0));
        for s in 1..10 {
            assert_eq!(l.hit(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(l.hit(t0 + Duration::from_secs(10)), Some(9));
        assert_eq!(l.hit(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn accept_backoff_grows_to_a_second() {
        let steps: Vec<u64> = (1..=9).map(|n| accept_backoff(n).as_millis() as u64).collect();
        assert_eq!(steps, vec![10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(accept_backoff(0), Duration::from_millis(10));
    }
}
