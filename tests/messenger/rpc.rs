//! The RPC form (NetrSendMessage over DCE/RPC connectionless, UDP 135):
//! dissected by tshark, between `alerter send --rpc` and `alerter listen
//! --rpc` in namespaces of one LAN, with requests built by hand in shapes
//! our sender never makes (tests/fixtures/rpc_peer.py), and under a rain
//! of malformed PDUs.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::util::netns::{Lan, Netns, Proc, until};
use super::{LONG, alerter_bin, listen, listener_proc, messages, send_out, tshark_fields};

/// `alerter listen --rpc` as WS0 on the first host, taking the RPC form
/// from `allow` (and, with `open`, without a rate limit).
fn rpc_listener(lan: &Lan, allow: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["--name", "WS0", "--workgroup", "TESTWG", "--rpc", "--rpc-allow", allow];
    args.extend_from_slice(extra);
    let l = listen(&lan.hosts[0], &args);
    until(LONG, "UDP 135 and 137", || lan.hosts[0].udp_bound(135) && lan.hosts[0].udp_bound(137));
    l
}

fn peer_script() -> String {
    super::util::repo().join("tests/fixtures/rpc_peer.py").display().to_string()
}

/// Runs rpc_peer.py in `ns`; its JSON lines.
fn rpc_peer(ns: &Netns, args: &[&str]) -> Vec<Value> {
    let out = ns.cmd("/usr/bin/python3").arg(peer_script()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "rpc_peer.py {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn texts(l: &Proc) -> Vec<String> {
    messages(l).iter().map(|m| m["text"].as_str().unwrap().to_string()).collect()
}

fn capture(ns: &Netns, dir: &Path, filter: &str) -> (Proc, std::path::PathBuf) {
    let pcap = dir.join("rpc.pcapng");
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let cap = Proc::spawn({
        let mut c = ns.cmd("tshark");
        c.args(["-i", "eth0", "-f", filter, "-w"]).arg(&pcap);
        c
    });
    until(LONG, "tshark to start capturing", || cap.stderr().contains("Capture started"));
    (cap, pcap)
}

#[test]
fn tshark_dissects_alerter_s_rpc_requests_as_messenger_netr_send_message() {
    let lan = Lan::new(2);
    let listener = rpc_listener(&lan, "10.77.0.0/24", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (cap, pcap) = capture(&lan.hosts[1], dir.path(), "udp port 135");
    let long: String = "Maintenance of the file server tonight; save your work. ".chars().cycle().take(4000).collect();
    for text in ["Disk /var is 91% full", long.as_str()] {
        let (code, out, err) = send_out(&lan.hosts[1], &["--rpc", "--from", "ALERTER", "WS0", text], None);
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("delivered to WS0 at 10.77.0.1:135"), "{out}");
    }
    until(LONG, "both messages shown", || texts(&listener).len() == 2);
    until(LONG, "the frames in the capture", || {
        tshark_fields(&pcap, &["messenger.message"]).iter().filter(|l| !l.is_empty()).count() == 2
    });
    drop(cap);
    // Every datagram: CL DCE/RPC (version 4) of the msgsvc interface, opnum 0.
    let all = tshark_fields(
        &pcap,
        &["dcerpc.ver", "dcerpc.pkt_type", "dcerpc.dg_if_id", "dcerpc.opnum", "dcerpc.dg_frag_num", "dcerpc.dg_flags1"],
    );
    let requests: Vec<Vec<&str>> =
        all.iter().map(|l| l.split('|').collect::<Vec<_>>()).filter(|r| r[1] == "0").collect();
    assert_eq!(requests.len(), 4, "one request, then three fragments: {all:#?}");
    for r in &requests {
        assert_eq!((r[0], r[2], r[3]), ("4", "5a7b91f8-ff00-11d0-a9b2-00c04fb6e6fc", "0"), "{r:?}");
    }
    let frags: Vec<&str> = requests[1..].iter().map(|r| r[4]).collect();
    assert_eq!(frags, ["0", "1", "2"]);
    // The three strings, the long one reassembled from its fragments.
    let rows = tshark_fields(&pcap, &["messenger.server", "messenger.client", "messenger.message"]);
    let rows: Vec<&String> = rows.iter().filter(|l| l.contains("ALERTER")).collect();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[0], "ALERTER|WS0|Disk /var is 91% full");
    assert_eq!(*rows[1], format!("ALERTER|WS0|{}", long.trim_end()), "the text as sent (trailing blanks trimmed)");
    // Each answered with success, as a response tshark reads.
    let verbose = Command::new("tshark").arg("-r").arg(&pcap).arg("-Y").arg("messenger").output().unwrap();
    let summary = String::from_utf8_lossy(&verbose.stdout);
    assert_eq!(summary.matches("NetrSendMessage request").count(), 2, "{summary}");
    assert_eq!(summary.matches("NetrSendMessage response").count(), 2, "{summary}");
    let rc = tshark_fields(&pcap, &["messenger.rc"]);
    assert_eq!(rc.iter().filter(|l| !l.is_empty()).collect::<Vec<_>>(), ["0x00000000", "0x00000000"], "{rc:?}");
    let all = Command::new("tshark").arg("-r").arg(&pcap).arg("-V").output().unwrap();
    assert!(!String::from_utf8_lossy(&all.stdout).to_lowercase().contains("malformed"));
}

#[test]
fn alerter_send_rpc_reaches_alerter_listen_rpc_and_a_refused_sender_fails() {
    let lan = Lan::new(3);
    // Only host 1 may use the RPC form; host 2 is on the LAN but not allowed.
    let history = tempfile::tempdir().unwrap();
    let file = history.path().join("messages.jsonl");
    let mut c = lan.hosts[0].cmd(alerter_bin());
    c.args(["listen", "--json", "--no-desktop", "--name", "WS0", "--workgroup", "TESTWG"])
        .args(["--rpc", "--rpc-allow", "10.77.0.2", "--history"])
        .arg(&file);
    let listener = listener_proc(c);
    until(LONG, "UDP 135", || lan.hosts[0].udp_bound(135) && lan.hosts[0].udp_bound(137));

    // By name (found by a broadcast name query), and by address (its name asked by node status).
    let (code, out, err) = send_out(&lan.hosts[1], &["--rpc", "--from", "OPS", "ws0", "by name"], None);
    assert_eq!((code, out.trim()), (Some(0), "1 delivered: ws0: delivered to ws0 at 10.77.0.1:135"), "{err}");
    let (code, out, err) = send_out(&lan.hosts[1], &["--rpc", "--from", "OPS", "10.77.0.1", "by address"], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("delivered to WS0 at 10.77.0.1:135"), "{out}");
    // Escapes from a peer are text, never acted on (as in the other forms).
    let hostile = "esc \x1b]0;pwned\x07 \x1b[2J done";
    let (code, _, err) = send_out(&lan.hosts[1], &["--rpc", "--from", "OPS", "WS0", hostile], None);
    assert_eq!(code, Some(0), "{err}");
    // From a config: the RPC form chosen for this host alone (the port
    // spelled out as the default).
    let conf = history.path().join("alerter.yaml");
    std::fs::write(
        &conf,
        "alerter:\n  name: OPS\n  workgroup: TESTWG\ntransports:\n  popup:\n    type: messenger\n    dns: false\n    forms:\n      WS0: rpc\n    rpc_port: 135\n",
    )
    .unwrap();
    let (code, out, err) = send_out(&lan.hosts[1], &["-c", conf.to_str().unwrap(), "WS0", "by config"], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("at 10.77.0.1:135"), "the RPC form, not a session on 139: {out}");

    // Host 2 is refused: an error reply, and a non-zero exit.
    let (code, _, err) = send_out(&lan.hosts[2], &["--rpc", "--from", "MALLORY", "WS0", "let me in"], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refused the message"), "{err}");

    until(LONG, "four messages", || texts(&listener).len() == 4);
    let got = messages(&listener);
    assert_eq!(texts(&listener), ["by name", "by address", hostile, "by config"]);
    let raw = listener.stdout();
    assert!(!raw.chars().any(|c| c.is_control() && c != '\n'), "{raw:?}");
    for m in &got {
        assert_eq!((m["form"].as_str(), m["from"].as_str()), (Some("rpc"), Some("OPS")), "{m}");
    }
    until(LONG, "the refusal logged", || {
        listener.stderr().contains("RPC message from 10.77.0.3 refused: not in an allowed network")
    });
    // Kept in the history like any popup.
    let kept = std::fs::read_to_string(&file).unwrap();
    let kept: Vec<Value> = kept.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(kept.iter().filter(|v| v["form"] == "rpc").count(), 4, "{kept:#?}");
    assert!(!kept.iter().any(|v| v.to_string().contains("let me in")));
}

#[test]
fn hand_built_requests_alerter_never_sends_are_understood() {
    let lan = Lan::new(2);
    let listener = rpc_listener(&lan, "10.77.0.0/24", &[]);
    let cases = rpc_peer(&lan.hosts[1], &["fixtures", "10.77.0.1", "135"]);
    let by_case = |name: &str| cases.iter().find(|c| c["case"] == name).unwrap_or_else(|| panic!("{name}: {cases:#?}"));
    let reply = |name: &str| {
        let r = &by_case(name)["reply"];
        (r["ptype"].as_u64().unwrap(), r["status"].as_u64())
    };
    const RESPONSE: u64 = 2;
    const NOCALL: u64 = 5;
    const REJECT: u64 = 6;
    assert_eq!(reply("big-endian"), (RESPONSE, Some(0)));
    assert_eq!(reply("out-of-order"), (RESPONSE, Some(0)));
    assert_eq!(reply("big-endian-reversed"), (RESPONSE, Some(0)));
    assert_eq!(reply("ping-unknown"), (NOCALL, None));
    assert_eq!(reply("duplicate-first"), (RESPONSE, Some(0)));
    assert_eq!(reply("duplicate-again"), (RESPONSE, Some(0)));
    assert_eq!(reply("ping-answered"), (NOCALL, None));
    assert_eq!(reply("opnum-1"), (REJECT, Some(0x1c01_0002)));
    const FACK: u64 = 9;
    let facks: Vec<(u64, u64, u64)> = by_case("facks")["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["ptype"].as_u64().unwrap(), r["fragnum"].as_u64().unwrap(), r["serial"].as_u64().unwrap_or(99)))
        .collect();
    assert_eq!(facks, [(FACK, 0, 0), (FACK, 1, 1), (RESPONSE, 0, 99)], "a fack per fragment asking, then the answer");
    for r in by_case("facks")["replies"].as_array().unwrap() {
        assert!(r["bytes"].as_u64() <= by_case("facks")["smallest_sent"].as_u64(), "{r}");
    }
    assert_eq!(reply("wrong-name"), (RESPONSE, Some(2273)));
    // No reply longer than the smallest datagram it answered.
    for c in &cases {
        assert!(c["reply"]["bytes"].as_u64() <= c["smallest_sent"].as_u64(), "{c}");
    }
    let window = format!("window {}", "w".repeat(250));
    until(LONG, "the last one shown", || texts(&listener).contains(&window));
    let got = messages(&listener);
    let shown: Vec<(&str, &str)> =
        got.iter().map(|m| (m["from"].as_str().unwrap(), m["text"].as_str().unwrap())).collect();
    let out_of_order = format!("out of order: {}", "0123456789".repeat(30));
    let reversed = format!("reversed {}", "abcdefgh".repeat(20));
    assert_eq!(
        shown,
        [
            ("OLDSUN", "big-endian hello"),
            ("OLDNT", out_of_order.as_str()),
            ("OLDSUN", reversed.as_str()),
            ("OLDNT", "duplicate once"),
            ("OLDXP", window.as_str()),
        ],
        "each once, whole, in order"
    );
}

#[test]
fn ten_thousand_malformed_pdus_leave_the_rpc_listener_serving() {
    let lan = Lan::new(2);
    // No rate limit: every PDU reaches the parser.
    let listener = rpc_listener(&lan, "10.77.0.0/24", &["--peer-messages", "0", "--peer-bytes", "0"]);
    let out = rpc_peer(&lan.hosts[1], &["malformed", "10.77.0.1", "135", "10000"]);
    assert_eq!(out[0]["sent"], 10000);
    assert_eq!((out[0]["reply"]["ptype"].as_u64(), out[0]["reply"]["status"].as_u64()), (Some(2), Some(0)));
    until(LONG, "the message after the storm", || texts(&listener).iter().any(|t| t == "still here"));
    // And alerter's own sender is still served.
    let (code, _, err) = send_out(&lan.hosts[1], &["--rpc", "--from", "OPS", "WS0", "after"], None);
    assert_eq!(code, Some(0), "{err}");
    until(LONG, "alerter's message", || texts(&listener).iter().any(|t| t == "after"));
    // The good request may have been retransmitted (the storm can make the
    // kernel drop it); the repeats were answered, not shown again.
    assert_eq!(texts(&listener).iter().filter(|t| *t == "still here").count(), 1);
    // What was shown are the mutants still whole, valid requests to WS0
    // (trailing bytes, a flipped letter), never more than a good one holds.
    for m in messages(&listener) {
        assert_eq!((m["form"].as_str(), m["to"].as_str().map(str::to_uppercase)), (Some("rpc"), Some("WS0".into())));
        assert!(m["text"].as_str().unwrap().chars().count() <= 300, "{m}");
    }
}
