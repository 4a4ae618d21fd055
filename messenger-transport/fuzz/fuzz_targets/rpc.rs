//! UDP 135 input: DCE/RPC connectionless PDUs, NetrSendMessage bodies, and
//! the receiving side's reassembly of several datagrams in a row. The input
//! is a sequence of datagrams, each preceded by its length (u16, little-endian)
//! and a byte whose low bit says whether the sender is allowed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use messenger_transport::rpc::{Pdu, SendMessage, Server, ServerLimits};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let limits = ServerLimits { max_call_bytes: 4096, max_fragments: 16, max_partial: 8, ..ServerLimits::default() };
    let mut server = Server::new(limits, 0);
    let start = Instant::now();
    let mut rest = data;
    let mut k = 0u64;
    while rest.len() >= 3 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 3);
        let allowed = rest[2] & 1 == 1;
        let datagram = &rest[3..3 + len];
        rest = &rest[3 + len..];
        if let Ok(p) = Pdu::decode(datagram) {
            assert_eq!(Pdu::decode(&p.encode()).as_ref(), Ok(&p));
            let _ = SendMessage::decode(&p.body, p.header.drep);
        }
        let peer = std::net::Ipv4Addr::new(10, 0, 0, (k % 3) as u8).into();
        let now = start + Duration::from_secs(k);
        let o = server.receive(datagram, peer, allowed, now, |_| 0);
        // Never more bytes back than came in: no amplification.
        assert!(o.reply.as_ref().is_none_or(|r| r.len() <= datagram.len()));
        assert!(server.partial_calls() <= 8);
        k += 1;
    }
});
