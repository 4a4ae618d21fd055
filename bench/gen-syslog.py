#!/usr/bin/python3
"""Generates the log-scanning benchmark's input: a syslog-style file and the
same patterns for every tool compared (alerter/grep, swatchdog, fail2ban).

    python3 bench/gen-syslog.py OUTDIR [LINES]

Deterministic (fixed seed). About 1% of lines match the single pattern and
about 5% match one of the 50.
"""
import os
import random
import sys

out = sys.argv[1]
lines = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
os.makedirs(out, exist_ok=True)
rnd = random.Random(20261126)

# 50 kinds of trouble: (program, message with one variable token, the
# regex for that token). The first is the single-pattern case.
TROUBLE = [("sshd", "Failed password for {user} from {ip} port 22 ssh2", r"Failed password for [^ ]+ from ([0-9.]+)")]
PROGRAMS = ["kernel", "postfix/smtpd", "nginx", "dovecot", "named", "ntpd", "smartd", "mdadm", "nfsd", "cupsd"]
MESSAGES = [
    ("I/O error on device {dev}, sector {num}", r"I/O error on device ([a-z0-9]+)"),
    ("connection refused from {ip}", r"connection refused from ([0-9.]+)"),
    ("out of memory: killed process {num}", r"out of memory: killed process ([0-9]+)"),
    ("authentication failure for {user}", r"authentication failure for ([^ ]+)"),
    ("temperature {num} above threshold", r"temperature ([0-9]+) above threshold"),
]
for p in PROGRAMS:
    for m, r in MESSAGES:
        if len(TROUBLE) < 50:
            TROUBLE.append((p, m, r))
TROUBLE = TROUBLE[:50]
NORMAL = [
    ("CRON", "(root) CMD (run-parts /etc/cron.hourly)"),
    ("systemd", "Started Session {num} of user {user}."),
    ("sshd", "Accepted publickey for {user} from {ip} port 51234 ssh2"),
    ("postfix/qmgr", "{hex}: removed"),
    ("nginx", "GET /index.html HTTP/1.1 200 {num}"),
    ("dhclient", "DHCPACK of {ip} from 10.0.0.1"),
    ("kernel", "audit: type=1400 audit({num}.123:{num}): apparmor=\"ALLOWED\""),
]
USERS = ["root", "admin", "alice", "bob", "oracle", "test", "guest", "www-data"]


def fill(msg):
    return msg.format(
        user=rnd.choice(USERS),
        ip="%d.%d.%d.%d" % (rnd.randrange(1, 255), rnd.randrange(256), rnd.randrange(256), rnd.randrange(1, 255)),
        dev=rnd.choice(["sda", "sdb1", "nvme0n1", "md0"]),
        num=rnd.randrange(100000),
        hex="%010X" % rnd.randrange(1 << 40),
    )


def pattern(prog, regex):
    return prog.replace("/", "/") + r"\[[0-9]+\]: " + regex


with open(os.path.join(out, "syslog.log"), "w") as f:
    for i in range(lines):
        r = rnd.random()
        if r < 0.01:
            prog, msg, _ = TROUBLE[0]
        elif r < 0.05:
            prog, msg, _ = TROUBLE[rnd.randrange(1, len(TROUBLE))]
        else:
            prog, msg = rnd.choice(NORMAL)
        t = i * 86400 // lines
        f.write("Nov 26 %02d:%02d:%02d host%d %s[%d]: %s\n" % (t // 3600, t // 60 % 60, t % 60, rnd.randrange(20), prog, rnd.randrange(1, 65536), fill(msg)))

for n in (1, 50):
    pats = [pattern(p, r) for p, _, r in TROUBLE[:n]]
    with open(os.path.join(out, "patterns-%d.txt" % n), "w") as f:
        f.write("".join(p + "\n" for p in pats))
    # fail2ban wants a failure-id group: the same capture, marked as one.
    with open(os.path.join(out, "fail2ban-%d.conf" % n), "w") as f:
        f2b = [p.replace("(", "<F-ID>", 1).replace(")", "</F-ID>", 1) if "(" in p else p for p in pats]
        f.write("[Definition]\nfailregex = " + "\n            ".join(f2b) + "\n")
    with open(os.path.join(out, "swatch-%d.conf" % n), "w") as f:
        for p in pats:
            f.write("watchfor /%s/\n  echo normal\n" % p.replace("/", "\\/"))
