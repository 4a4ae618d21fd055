//! The log matcher in process: 100,000 syslog-style lines in memory,
//! scanned with 1 pattern and with 50.
//!
//!     cargo bench -p alerter-plugin-log --bench matcher
//!
//! The whole-program comparison with grep, swatchdog and fail2ban-regex is
//! bench/log-scan.sh.

use alerter_plugin_log::matcher::Matcher;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PROGRAMS: [&str; 10] =
    ["kernel", "postfix/smtpd", "nginx", "dovecot", "named", "ntpd", "smartd", "mdadm", "nfsd", "cupsd"];
const MESSAGES: [(&str, &str); 5] = [
    ("I/O error on device sda, sector 12", r"I/O error on device ([a-z0-9]+)"),
    ("connection refused from 10.1.2.3", r"connection refused from ([0-9.]+)"),
    ("out of memory: killed process 4242", r"out of memory: killed process ([0-9]+)"),
    ("authentication failure for alice", r"authentication failure for ([^ ]+)"),
    ("temperature 71 above threshold", r"temperature ([0-9]+) above threshold"),
];

fn patterns() -> Vec<String> {
    let mut p = vec![r"sshd\[[0-9]+\]: Failed password for [^ ]+ from ([0-9.]+)".to_string()];
    for prog in PROGRAMS {
        for (_, re) in MESSAGES {
            if p.len() < 50 {
                p.push(format!(r"{prog}\[[0-9]+\]: {re}"));
            }
        }
    }
    p
}

fn lines(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seed = 1u64;
    for i in 0..n {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let r = (seed >> 33) % 100;
        let body = match r {
            0 => "sshd[411]: Failed password for root from 10.0.0.1 port 22 ssh2".to_string(),
            1..=4 => {
                let (m, _) = MESSAGES[(seed >> 40) as usize % 5];
                format!("{}[77]: {m}", PROGRAMS[(seed >> 44) as usize % 10])
            }
            _ => format!("systemd[1]: Started Session {i} of user alice."),
        };
        out.extend_from_slice(format!("Nov 26 10:00:00 host{} {body}\n", i % 20).as_bytes());
    }
    out
}

fn bench(c: &mut Criterion) {
    let buf = lines(100_000);
    let all = patterns();
    let mut g = c.benchmark_group("log_matcher");
    g.throughput(Throughput::Elements(100_000));
    for n in [1, 50] {
        let pats: Vec<&str> = all[..n].iter().map(String::as_str).collect();
        let m = Matcher::new(&pats, &[]).unwrap();
        g.bench_function(format!("{n}_patterns"), |b| b.iter(|| m.scan(&buf, |_| {})));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
