//! Console sessions: which token each browser logged in with, its CSRF
//! token, and when it ends; and the bound on failed logins per address.
//!
//! A session id is 256 random bits, sent to the browser as a cookie and
//! kept here only as its SHA-256, like tokens: a look at this memory, or
//! the time a lookup takes, tells nothing about an id worth having.
//! Sessions live in memory: a restart of the daemon logs everyone out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alerter_api::access::TokenId;
use sha2::{Digest, Sha256};

/// A session unused this long ends (a wall screen's live updates use it).
pub const IDLE: Duration = Duration::from_secs(60 * 60);
/// A session ends this long after its login, used or not.
pub const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// The most sessions at once; a new login ends the oldest beyond it.
pub const MAX_SESSIONS: usize = 1000;
/// The most sessions of one token: past it, the token's oldest ends.
pub const PER_TOKEN: usize = 50;
/// Failed logins one address may make in [`FAILED_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
pub const FAILED_WINDOW: Duration = Duration::from_secs(5 * 60);
/// The most addresses whose failures are remembered.
const MAX_FAILING: usize = 10_000;

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: TokenId,
    /// The token every form of this session carries.
    pub csrf: String,
    created: Instant,
    last: Instant,
}

#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<[u8; 32], Session>,
    failures: HashMap<IpAddr, (u32, Instant)>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `token`: the cookie's value and the session.
    pub fn create(&self, token: TokenId, now: Instant) -> (String, Session) {
        let id = random_hex(32);
        let session = Session { token, csrf: random_hex(32), created: now, last: now };
        let mut inner = self.lock();
        inner.by_id.retain(|_, s| alive(s, now));
        // Beyond a token's share, its own oldest session gives way, so one
        // token logging in again and again cannot end everyone else's.
        let mine = inner.by_id.values().filter(|s| s.token == token).count();
        let full = mine >= PER_TOKEN || inner.by_id.len() >= MAX_SESSIONS;
        let oldest = inner
            .by_id
            .iter()
            .filter(|(_, s)| mine < PER_TOKEN || s.token == token)
            .min_by_key(|(_, s)| s.created)
            .map(|(k, _)| *k);
        if full && let Some(oldest) = oldest {
            inner.by_id.remove(&oldest);
        }
        inner.by_id.insert(digest(&id), session.clone());
        (id, session)
    }

    /// The session of a cookie's value, if it is alive (and now used).
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let key = digest(id);
        let mut inner = self.lock();
        let s = inner.by_id.get_mut(&key)?;
        if !alive(s, now) {
            inner.by_id.remove(&key);
            return None;
        }
        s.last = now;
        Some(s.clone())
    }

    pub fn end(&self, id: &str) {
        self.lock().by_id.remove(&digest(id));
    }

    /// Whether `ip` may try to log in now.
    pub fn login_allowed(&self, ip: IpAddr, now: Instant) -> bool {
        match self.lock().failures.get(&network(ip)) {
            Some((n, since)) => *n < MAX_FAILURES || now.duration_since(*since) >= FAILED_WINDOW,
            None => true,
        }
    }

    pub fn login_failed(&self, ip: IpAddr, now: Instant) {
        let ip = network(ip);
        let mut inner = self.lock();
        if inner.failures.len() >= MAX_FAILING && !inner.failures.contains_key(&ip) {
            inner.failures.retain(|_, (_, since)| now.duration_since(*since) < FAILED_WINDOW);
            // Still full: the oldest gives way, so the table stays bounded.
            if inner.failures.len() >= MAX_FAILING
                && let Some(oldest) = inner.failures.iter().min_by_key(|(_, (_, since))| *since).map(|(k, _)| *k)
            {
                inner.failures.remove(&oldest);
            }
        }
        let e = inner.failures.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= FAILED_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
    }

    pub fn login_succeeded(&self, ip: IpAddr) {
        self.lock().failures.remove(&network(ip));
    }
}

/// Whose failures count together: an IPv4 address, or an IPv6 /64 (one
/// host has a whole /64 to send from).
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last) < IDLE && now.duration_since(s.created) < LIFETIME
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// `bytes` random bytes from the system, in hex.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the system's random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether two secrets are equal, compared through their hashes so the
/// time taken says nothing about how much of a guess was right.
pub fn same(a: &str, b: &str) -> bool {
    digest(a) == digest(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alerter_api::Scope;
    use alerter_api::access::{Access, Token};

    fn token() -> TokenId {
        token_of("ops")
    }

    fn token_of(name: &str) -> TokenId {
        let secret = format!("{name}-0123456789abcdef0123456789abcdef");
        let t = Token::new(name, Scope::Operate, secret.as_bytes()).unwrap();
        Access::new(vec![t], Vec::new(), None, 0).login(&secret).unwrap().1
    }

    #[test]
    fn sessions_end_when_idle_at_their_lifetime_and_at_logout() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (id, session) = s.create(token(), t0);
        assert_eq!(id.len(), 64);
        assert!(s.get("not-a-session", t0).is_none());
        let again = s.get(&id, t0 + IDLE / 2).expect("alive");
        assert!(same(&again.csrf, &session.csrf));
        // Used within IDLE each time, it lives up to LIFETIME.
        let mut t = t0;
        while t + IDLE / 2 < t0 + LIFETIME {
            t += IDLE / 2;
            assert!(s.get(&id, t).is_some());
        }
        assert!(s.get(&id, t0 + LIFETIME).is_none(), "past its lifetime");
        let (id, _) = s.create(token(), t0);
        assert!(s.get(&id, t0 + IDLE).is_none(), "idle too long");
        let (id, _) = s.create(token(), t0);
        s.end(&id);
        assert!(s.get(&id, t0).is_none(), "logged out");
    }

    #[test]
    fn one_token_logging_in_again_and_again_ends_only_its_own_sessions() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (other, _) = s.create(token_of("oncall"), t0);
        let (first, _) = s.create(token(), t0);
        for i in 1..PER_TOKEN {
            s.create(token(), t0 + Duration::from_millis(i as u64));
        }
        assert!(s.get(&first, t0 + Duration::from_secs(2)).is_some());
        for i in 0..MAX_SESSIONS {
            s.create(token(), t0 + Duration::from_secs(3) + Duration::from_millis(i as u64));
        }
        assert!(s.get(&first, t0 + Duration::from_secs(5)).is_none(), "its own oldest gave way");
        assert!(s.get(&other, t0 + Duration::from_secs(5)).is_some(), "another token's session stays");
    }

    #[test]
    fn the_failure_table_stays_bounded_and_counts_an_ipv6_64_as_one() {
        let s = Sessions::default();
        let t0 = Instant::now();
        for i in 0..(MAX_FAILING as u32 + 100) {
            s.login_failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(s.lock().failures.len(), MAX_FAILING);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        for i in 0..MAX_FAILURES {
            s.login_failed(format!("2001:db8:1:2::{:x}", i + 2).parse().unwrap(), t0);
        }
        assert!(!s.login_allowed(a, t0), "another address of the same /64");
        assert!(s.login_allowed("2001:db8:1:3::1".parse().unwrap(), t0));
    }

    #[test]
    fn failed_logins_lock_an_address_out_for_a_while() {
        let s = Sessions::default();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let other: IpAddr = "10.0.0.10".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(s.login_allowed(ip, t0));
            s.login_failed(ip, t0);
        }
        assert!(!s.login_allowed(ip, t0 + Duration::from_secs(1)));
        assert!(s.login_allowed(other, t0), "others are not locked out");
        assert!(s.login_allowed(ip, t0 + FAILED_WINDOW));
        s.login_succeeded(ip);
        assert!(s.login_allowed(ip, t0));
    }
}
