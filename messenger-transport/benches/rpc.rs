//! What the RPC form costs in-process: building a request, and the
//! receiving side's work per datagram (a one-PDU request, a 4 KB message
//! in three fragments arriving out of order, a duplicate answered from
//! memory, and malformed bytes dropped).
//!
//!   cargo bench -p messenger-transport --bench rpc

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use messenger_transport::rpc::{self, Call, Drep, SendMessage, Server, ServerLimits};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

fn message(len: usize) -> SendMessage {
    SendMessage { from: b"ALERTER".to_vec(), to: b"WS0".to_vec(), text: vec![b'x'; len] }
}

fn requests(n: usize, len: usize, fragment: usize) -> Vec<Vec<Vec<u8>>> {
    let body = message(len).encode(Drep::LITTLE);
    (0..n).map(|_| rpc::request(Call::fresh(), &body, fragment).iter().map(rpc::Pdu::encode).collect()).collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rpc");
    g.bench_function("build a 200-byte request", |b| {
        let body = message(200);
        b.iter(|| rpc::request(Call::fresh(), &body.encode(Drep::LITTLE), rpc::MAX_FRAGMENT_BODY)[0].encode())
    });
    let now = Instant::now();
    let single = requests(8192, 200, rpc::MAX_FRAGMENT_BODY);
    g.bench_function("receive a one-PDU request", |b| {
        let mut s = Server::new(ServerLimits::default(), 0);
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) % single.len();
            s.receive(&single[k][0], PEER, true, now, |_| 0).reply
        })
    });
    let long = requests(8192, 4000, rpc::MAX_FRAGMENT_BODY);
    g.bench_function("reassemble 4 KB from 3 fragments out of order", |b| {
        let mut s = Server::new(ServerLimits::default(), 0);
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) % long.len();
            let p = &long[k];
            for i in [2, 0, 1] {
                s.receive(&p[i], PEER, true, now, |_| 0);
            }
        })
    });
    g.bench_function("answer a duplicate from memory", |b| {
        let mut s = Server::new(ServerLimits::default(), 0);
        s.receive(&single[0][0], PEER, true, now, |_| 0);
        b.iter(|| s.receive(&single[0][0], PEER, true, now, |_| 0).reply)
    });
    let noise: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    g.bench_function("drop 200 bytes of noise", |b| {
        let mut s = Server::new(ServerLimits::default(), 0);
        b.iter(|| s.receive(&noise, PEER, true, now, |_| 0).problem)
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
