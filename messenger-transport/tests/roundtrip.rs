//! Property tests: everything encoded decodes to what went in.

use std::net::Ipv4Addr;

use messenger_transport::CodePage;
use messenger_transport::dgram::{self, Datagram};
use messenger_transport::name::NetbiosName;
use messenger_transport::nbns;
use messenger_transport::nbss::Packet;
use messenger_transport::rpc;
use messenger_transport::seal::{self, SealKey, Sealed};
use messenger_transport::smb::{self, Smb};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = NetbiosName> {
    ("[A-Z0-9][A-Z0-9_-]{0,14}", any::<u8>()).prop_map(|(n, s)| NetbiosName::new(&n, s).unwrap())
}

/// Text every character of which CP850 has.
fn cp850_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('a'),
            Just('Z'),
            Just(' '),
            Just('é'),
            Just('ü'),
            Just('ß'),
            Just('Ç'),
            Just('\n'),
            Just('9'),
            Just('§')
        ],
        0..400,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #[test]
    fn names(n in name()) {
        let (back, used) = NetbiosName::decode(&n.encoded()).unwrap();
        prop_assert_eq!(back, n);
        prop_assert_eq!(used, 34);
        prop_assert_eq!(n.to_string().parse::<NetbiosName>().unwrap(), n);
    }

    #[test]
    fn code_page(text in cp850_text()) {
        let cp = CodePage::CP850;
        prop_assert_eq!(cp.decode(&cp.encode(&text)), text);
    }

    #[test]
    fn datagrams(src in name(), dst in name(), id: u16, ip: [u8; 4], body in proptest::collection::vec(any::<u8>(), 0..300), pad: bool) {
        let user = smb::mailslot_write(dgram::MESSNGR, &body, pad).encode();
        let d = Datagram::new(dgram::DIRECT_UNIQUE, id, Ipv4Addr::from(ip), src, dst, user);
        let back = Datagram::decode(&d.encode()).unwrap();
        prop_assert_eq!(&back, &d);
        let (slot, data) = back.mailslot().unwrap();
        prop_assert_eq!(slot, dgram::MESSNGR);
        prop_assert_eq!(data, body);
    }

    #[test]
    fn session_packets(kind in prop_oneof![Just(0x00u8), Just(0x81), Just(0x82), Just(0x85)], payload in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let p = Packet::new(kind, payload);
        let bytes = p.encode();
        prop_assert_eq!(Packet::decode(&bytes).unwrap(), Some((p, bytes.len())));
    }

    #[test]
    fn smb_messages(from in "[A-Za-z]{1,15}", to in "[A-Za-z]{1,15}", text in proptest::collection::vec(1u8..=255, 0..128), group: u16) {
        for m in [smb::send_start(from.as_bytes(), to.as_bytes()), smb::send_text(group, &text), smb::send_end(group), smb::send_single(from.as_bytes(), to.as_bytes(), &text)] {
            prop_assert_eq!(Smb::decode(&m.encode()).unwrap(), m);
        }
        let single = Smb::decode(&smb::send_single(from.as_bytes(), to.as_bytes(), &text).encode()).unwrap();
        let (f, t, x) = smb::parse_names(&single).unwrap();
        prop_assert_eq!((f, t, x), (from.into_bytes(), to.into_bytes(), Some(text)));
    }

    #[test]
    fn name_service(id: u16, n in name(), ip: [u8; 4], group: bool) {
        for p in [
            nbns::Packet::name_query(id, n, group),
            nbns::Packet::registration(id, n, Ipv4Addr::from(ip), group),
            nbns::Packet::query_response(&nbns::Packet::name_query(id, n, true), n, Ipv4Addr::from(ip), group),
        ] {
            prop_assert_eq!(nbns::Packet::decode(&p.encode()).unwrap(), p);
        }
    }

    #[test]
    fn sealed(from in "[A-Z]{1,15}", to in "[A-Z]{1,15}", time: i32, text in ".{0,500}", key: [u8; 32]) {
        let key = SealKey::from_bytes(&key).unwrap();
        let m = Sealed::new(&from, &to, i64::from(time), "warning", &text);
        prop_assert_eq!(seal::open(&key, &seal::seal(&key, &m)).unwrap(), m);
    }

    #[test]
    fn rpc_messages_in_either_byte_order_and_any_fragmenting(
        from in proptest::collection::vec(1u8..=255, 0..16),
        to in proptest::collection::vec(1u8..=255, 0..16),
        text in proptest::collection::vec(1u8..=255, 0..5000),
        big: bool,
        frag in 8usize..2000,
        order: u64,
    ) {
        let drep = if big { rpc::Drep::BIG } else { rpc::Drep::LITTLE };
        let m = rpc::SendMessage { from, to, text };
        let mut pdus = rpc::request(rpc::Call::fresh(), &m.encode(drep), frag);
        for p in &mut pdus {
            p.header.drep = drep;
            prop_assert_eq!(&rpc::Pdu::decode(&p.encode()).unwrap(), &*p);
        }
        // Any arrival order makes the one message, judged once.
        let n = pdus.len();
        pdus.rotate_left((order % n as u64) as usize);
        let limits = rpc::ServerLimits { max_call_bytes: 1 << 20, max_fragments: 1024, ..Default::default() };
        let mut server = rpc::Server::new(limits, 0);
        let now = std::time::Instant::now();
        let mut judged = Vec::new();
        for p in &pdus {
            let o = server.receive(&p.encode(), std::net::Ipv4Addr::LOCALHOST.into(), true, now, |_| 0);
            judged.extend(o.judged.map(|(i, _)| i.message));
        }
        prop_assert_eq!(judged, vec![m]);
    }

    #[test]
    fn rpc_server_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), allowed: bool) {
        let mut server = rpc::Server::new(rpc::ServerLimits::default(), 0);
        let o = server.receive(&bytes, std::net::Ipv4Addr::LOCALHOST.into(), allowed, std::time::Instant::now(), |_| 0);
        prop_assert!(o.reply.is_none_or(|r| r.len() <= bytes.len()));
    }
}
