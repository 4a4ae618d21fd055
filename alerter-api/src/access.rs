//! Who is calling, and what they may do: the one access model of every
//! client (the command line, the web console, webhooks, scripts).
//!
//! A caller is named either by a bearer token (named tokens, each with a
//! scope, read from files by the daemon) or, on the Unix socket, by the
//! peer's uid as the kernel reports it (SO_PEERCRED): root and the
//! daemon's own user are `admin`, users named in the config have the scope
//! given there, and any other local user who could open the socket (the
//! socket's group admits them) has the `others` scope, `read` unless the
//! config says otherwise. Over TCP a token is the only way in.
//!
//! Tokens are compared by their SHA-256: the time a comparison takes then
//! tells an attacker only about a hash of their own guess, which is worth
//! nothing to them.

use std::collections::HashMap;
use std::net::SocketAddr;

use sha2::{Digest, Sha256};

use crate::ApiError;
use crate::types::{Caller, Need, Scope};

/// The shortest token accepted: 128 bits of base64 or hex and more.
pub const MIN_TOKEN_LEN: usize = 22;

/// A named token and its scope; only its hash is kept.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    pub scope: Scope,
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("name", &self.name).field("scope", &self.scope).finish_non_exhaustive()
    }
}

impl Token {
    /// A token from the contents of its file (surrounding white space is
    /// ignored). Refuses short or non-printable tokens, which could not be
    /// sent in a header or guessed too easily.
    pub fn new(name: &str, scope: Scope, secret: &[u8]) -> Result<Token, String> {
        let secret = std::str::from_utf8(secret).map_err(|_| "the token is not text".to_string())?.trim();
        if secret.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the token has {} characters; use at least {MIN_TOKEN_LEN} random ones (e.g. `openssl rand -hex 24`)",
                secret.len()
            ));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be printable ASCII without spaces (e.g. `openssl rand -hex 24`)".into());
        }
        Ok(Token { name: name.to_string(), scope, digest: digest(secret) })
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Which configured token a caller logged in with: the token's hash,
/// kept by a console session instead of the token, so that each request
/// finds the token's current name and scope (a reload that removes the
/// token or changes its scope applies to sessions at once).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId([u8; 32]);

impl std::fmt::Debug for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenId(..)")
    }
}

/// How the caller reached the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// The Unix socket: the kernel's word for the peer's user.
    Unix {
        uid: u32,
        gid: u32,
        pid: Option<i32>,
    },
    Tcp {
        addr: SocketAddr,
        tls: bool,
    },
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Unix { uid, pid: Some(pid), .. } => write!(f, "uid {uid} (pid {pid}) on the socket"),
            Peer::Unix { uid, .. } => write!(f, "uid {uid} on the socket"),
            Peer::Tcp { addr, .. } => write!(f, "{addr}"),
        }
    }
}

/// The access model of one configuration.
#[derive(Debug, Clone)]
pub struct Access {
    tokens: Vec<Token>,
    /// Local users by uid: their name and scope.
    users: HashMap<u32, (String, Scope)>,
    /// The scope of other local users who can open the socket.
    others: Option<Scope>,
    /// The daemon's own user.
    owner_uid: u32,
}

impl Access {
    pub fn new(tokens: Vec<Token>, users: Vec<(u32, String, Scope)>, others: Option<Scope>, owner_uid: u32) -> Access {
        let users = users.into_iter().map(|(uid, name, scope)| (uid, (name, scope))).collect();
        Access { tokens, users, others, owner_uid }
    }

    /// Who the caller is. A bearer token, when given, decides (on any
    /// transport); without one, only a Unix socket peer is known.
    pub fn caller(&self, peer: &Peer, bearer: Option<&str>) -> Result<Caller, ApiError> {
        if let Some(secret) = bearer {
            let d = digest(secret.trim());
            return self
                .tokens
                .iter()
                .find(|t| t.digest == d)
                .map(|t| Caller { name: format!("token:{}", t.name), scope: t.scope })
                .ok_or_else(|| ApiError::Unauthorized("the token is not one of the configured `api.tokens`".into()));
        }
        match peer {
            Peer::Unix { uid, .. } => {
                let name = |uid: u32| {
                    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                        .ok()
                        .flatten()
                        .map_or_else(|| format!("user:{uid}"), |u| format!("user:{}", u.name))
                };
                if let Some((user, scope)) = self.users.get(uid) {
                    return Ok(Caller { name: format!("user:{user}"), scope: *scope });
                }
                if *uid == 0 || *uid == self.owner_uid {
                    return Ok(Caller { name: name(*uid), scope: Scope::Admin });
                }
                match self.others {
                    Some(scope) => Ok(Caller { name: name(*uid), scope }),
                    None => Err(ApiError::Forbidden(format!(
                        "{} (uid {uid}) has no access; name the user in `api.users` or set `api.others`",
                        name(*uid)
                    ))),
                }
            }
            Peer::Tcp { .. } => Err(ApiError::Unauthorized(
                "a token is needed over TCP: send `Authorization: Bearer <token>` (the CLI's `--token-file`)".into(),
            )),
        }
    }
}

impl Access {
    /// The caller a token names, and the token's id, for a login.
    pub fn login(&self, secret: &str) -> Result<(Caller, TokenId), ApiError> {
        let d = digest(secret.trim());
        self.tokens
            .iter()
            .find(|t| t.digest == d)
            .map(|t| (Caller { name: format!("token:{}", t.name), scope: t.scope }, TokenId(d)))
            .ok_or_else(|| ApiError::Unauthorized("the token is not one of the configured `api.tokens`".into()))
    }

    /// The caller of a token logged in with, if the token is still configured.
    pub fn by_token_id(&self, id: &TokenId) -> Option<Caller> {
        self.tokens
            .iter()
            .find(|t| t.digest == id.0)
            .map(|t| Caller { name: format!("token:{}", t.name), scope: t.scope })
    }
}

/// Whether `caller` may do what `need` says; the error names both.
pub fn authorize(caller: &Caller, need: Need) -> Result<(), ApiError> {
    if caller.scope.allows(need) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "{} has the scope `{}`, which does not allow this (it needs `{}`)",
        caller.name,
        caller.scope.as_str(),
        need.as_str()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn access() -> Access {
        let tokens = vec![
            Token::new("ops", Scope::Operate, SECRET.as_bytes()).unwrap(),
            Token::new("hook", Scope::Ingest, b"ingest-ingest-ingest-ingest\n").unwrap(),
        ];
        Access::new(tokens, vec![(1000, "alice".into(), Scope::Operate)], Some(Scope::Read), 999)
    }

    fn tcp() -> Peer {
        Peer::Tcp { addr: "127.0.0.1:40000".parse().unwrap(), tls: false }
    }

    fn unix(uid: u32) -> Peer {
        Peer::Unix { uid, gid: uid, pid: None }
    }

    #[test]
    fn scopes() {
        assert!(Scope::Read.allows(Need::Read) && !Scope::Read.allows(Need::Operate));
        assert!(!Scope::Ingest.allows(Need::Read) && Scope::Ingest.allows(Need::Ingest));
        assert!(!Scope::Ingest.allows(Need::Operate), "an ingest token cannot silence");
        assert!(Scope::Operate.allows(Need::Operate) && !Scope::Operate.allows(Need::Admin));
        assert!(Scope::Admin.allows(Need::Admin) && Scope::Admin.allows(Need::Ingest));
    }

    #[test]
    fn tokens_name_their_caller() {
        let a = access();
        let c = a.caller(&tcp(), Some(SECRET)).unwrap();
        assert_eq!(c, Caller { name: "token:ops".into(), scope: Scope::Operate });
        let c = a.caller(&tcp(), Some("ingest-ingest-ingest-ingest")).unwrap();
        assert_eq!(c.scope, Scope::Ingest, "the file's trailing newline is not part of the token");
        assert!(matches!(a.caller(&tcp(), Some("wrong-wrong-wrong-wrong-wrong")), Err(ApiError::Unauthorized(_))));
        assert!(matches!(a.caller(&tcp(), None), Err(ApiError::Unauthorized(m)) if m.contains("Bearer")));
    }

    #[test]
    fn unix_peers_by_uid() {
        let a = access();
        assert_eq!(a.caller(&unix(0), None).unwrap().scope, Scope::Admin);
        assert_eq!(a.caller(&unix(999), None).unwrap().scope, Scope::Admin, "the daemon's own user");
        assert_eq!(a.caller(&unix(1000), None).unwrap(), Caller { name: "user:alice".into(), scope: Scope::Operate });
        assert_eq!(a.caller(&unix(4242), None).unwrap().scope, Scope::Read);
        let closed = Access::new(Vec::new(), Vec::new(), None, 999);
        assert!(matches!(closed.caller(&unix(4242), None), Err(ApiError::Forbidden(m)) if m.contains("api.users")));
        // A token on the socket decides over the uid.
        assert_eq!(a.caller(&unix(0), Some("ingest-ingest-ingest-ingest")).unwrap().scope, Scope::Ingest);
    }

    #[test]
    fn a_login_is_found_again_while_its_token_is_configured() {
        let a = access();
        let (caller, id) = a.login(SECRET).unwrap();
        assert_eq!(caller.name, "token:ops");
        assert_eq!(a.by_token_id(&id), Some(caller));
        assert!(a.login("wrong-wrong-wrong-wrong-wrong").is_err());
        let without = Access::new(Vec::new(), Vec::new(), None, 999);
        assert_eq!(without.by_token_id(&id), None, "a token removed by a reload ends its sessions");
    }

    #[test]
    fn weak_tokens_are_refused() {
        assert!(Token::new("x", Scope::Read, b"short").unwrap_err().contains("at least"));
        assert!(Token::new("x", Scope::Read, b"has spaces in the middle of it").unwrap_err().contains("printable"));
        assert!(Token::new("x", Scope::Read, &[0xff; 30]).unwrap_err().contains("not text"));
    }

    #[test]
    fn authorize_says_what_is_missing() {
        let c = Caller { name: "token:hook".into(), scope: Scope::Ingest };
        let e = authorize(&c, Need::Operate).unwrap_err();
        assert_eq!(e.to_string(), "token:hook has the scope `ingest`, which does not allow this (it needs `operate`)");
    }
}
