#!/usr/bin/env bash
# How fast the daemon is ready, reloaded and stopped, as systemd sees it:
# `alerter run` on its embedded default config (disks and the auth log; the
# state in a temporary directory), NOTIFY_SOCKET pointing at a socket this
# script reads, as systemd's own. For each of RUNS starts it times
#
#   start:  exec to READY=1 (sources run, API answers, store open)
#   reload: SIGHUP to READY=1 after RELOADING=1 (a full config load)
#   stop:   SIGTERM to the exit (STOPPING=1 first)
#
#   cargo build --release -p alerter && bash bench/service-ready.sh
#
# Environment: RUNS=15, ALERTER=path/to/alerter (default $CARGO_TARGET_DIR
# or target/, release), KEEP=1 (keep the temp dir).
#
# Output: a markdown table (median, min, max per step) on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-15}

. bench/lib.sh
need_alerter
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -gt 0 ]] || die "RUNS is a whole number"
bench_setup service-ready
: > "$dir/auth.log"

ALERTER="$ALERTER" DIR="$dir" RUNS="$RUNS" python3 - << 'PY'
import os, signal, socket, statistics, subprocess, time

alerter, d, runs = os.environ["ALERTER"], os.environ["DIR"], int(os.environ["RUNS"])
path = os.path.join(d, "notify.sock")
env = dict(os.environ, NOTIFY_SOCKET=path, ALERTER_LOG="warn",
           STATE_DIRECTORY=os.path.join(d, "state"), ALERTER_AUTH_LOG=os.path.join(d, "auth.log"))

def wait_for(sock, line, deadline=30.0):
    sock.settimeout(deadline)
    while True:
        if line in sock.recv(4096).decode().splitlines():
            return time.monotonic()

steps = {"start": [], "reload": [], "stop": []}
for _ in range(runs):
    if os.path.exists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    t0 = time.monotonic()
    p = subprocess.Popen([alerter, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    steps["start"].append(wait_for(s, "READY=1") - t0)
    t0 = time.monotonic()
    p.send_signal(signal.SIGHUP)
    wait_for(s, "RELOADING=1")
    steps["reload"].append(wait_for(s, "READY=1") - t0)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    wait_for(s, "STOPPING=1")
    p.wait(timeout=30)
    steps["stop"].append(time.monotonic() - t0)
    s.close()

print("| step | median | min | max |")
print("| --- | --- | --- | --- |")
for name, ts in steps.items():
    ms = [t * 1000 for t in ts]
    print(f"| {name} | {statistics.median(ms):.0f} ms | {min(ms):.0f} ms | {max(ms):.0f} ms |")
PY
