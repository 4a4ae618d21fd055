//! The Messenger protocol: `net send` and WinPopup, on the wire exactly as
//! Windows and Samba speak it, plus sealed (authenticated) messages.
//!
//! The codec modules are sans-IO: they turn bytes into values and back and
//! never touch a socket. [`client`], [`resolve`] and [`listener`] put tokio
//! sockets on top. This crate depends on nothing else in the workspace;
//! the engine adapts it into a transport. shared/protocol/MESSENGER.md
//! (copied into docs/messenger.md) is the byte-level reference.
//!
//! - [`name`]: NetBIOS names and their first-level encoding.
//! - [`oem`]: OEM code pages and the 0x14 line break.
//! - [`nbns`]: the name service (UDP 137): query, registration, node status.
//! - [`dgram`]: the datagram service (UDP 138) and the WinPopup mailslot body.
//! - [`hold`]: holding names: registration by broadcast and with WINS,
//!   refresh, conflicts, release; message aliases (logged-on users).
//! - [`nbss`]: the session service framing (TCP 139, and 445).
//! - [`smb`]: SMB1 message commands, negotiate, mailslot writes.
//! - [`rpc`]: the RPC form, NetrSendMessage as DCE/RPC connectionless PDUs (UDP 135).
//! - [`seal`]: sealed messages (ChaCha20-Poly1305) and sender signatures (Ed25519).
//! - [`replay`]: the replay guard's memory on disk.
//! - [`iface`]: the machine's interfaces, and where broadcasts go.
//! - [`ack`]: acknowledgements from the popup: its footer, and the reply.
#![forbid(unsafe_code)]

pub mod ack;
pub mod client;
pub mod dgram;
pub mod hold;
pub mod iface;
pub mod limits;
pub mod listener;
pub mod name;
pub mod nbns;
pub mod nbss;
pub mod oem;
pub mod replay;
pub mod resolve;
pub mod rpc;
pub mod seal;
pub mod smb;

pub use name::NetbiosName;
pub use oem::CodePage;

/// A problem with bytes received or a value given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("truncated: {0} is incomplete")]
    Truncated(&'static str),
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("bad NetBIOS name: {0}")]
    BadName(String),
    #[error("code page {0} is not an OEM code page this build knows (try 437, 850, 852 or 866)")]
    BadCodePage(u16),
}
