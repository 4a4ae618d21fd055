#!/usr/bin/env bash
# Does a critical alert get through while the daemon is flooded?
#
# One daemon, two `log` sources on two files in one directory (as syslog and
# auth.log share /var/log): a storm file, whose every line is a distinct
# one-shot event sent by the `log` transport to a JSON-lines file, and a
# critical file, whose lines are popped up by the `messenger` transport on
# an `alerter listen` on loopback (a high port, no root needed; the machine
# BOB is mapped to 127.0.0.1:PORT by the transport's `hosts`).
#
# Probes: PROBES critical lines, spaced evenly over DURATION seconds, each
# with a unique id and the (wall clock) time it was appended. A probe's
# latency is from that time to the `time` the listener stamped on the popup
# when it received it (both the same machine's clock). Two phases on the
# same daemon: calm (the probes alone) first, then the storm (the probes
# while a generator appends RATE distinct matching lines/s to the storm file
# for DURATION seconds). Reported per phase: p50/p90/p99/max over the probes,
# probes that never arrived (within WAIT s after the phase), and the storm
# notifications written during the DURATION seconds.
#
#   CARGO_TARGET_DIR=... cargo build --release -p alerter && bash bench/critical-latency.sh
#
# Environment: RATE=10000 (storm lines/s) DURATION=30 (s) PROBES=100 WAIT=120
# (s, for probes still on their way after a phase) ALERTER=path/to/alerter
# (default $CARGO_TARGET_DIR or target/, release) KEEP=1 (keep the temp dir).
#
# Needs: bash, python3 (apt-get install -y python3).
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-10000}
DURATION=${DURATION:-30}
PROBES=${PROBES:-100}
WAIT=${WAIT:-120}

. bench/lib.sh
need_alerter
command -v python3 > /dev/null || die "python3 is missing (apt-get install -y python3)"
for v in RATE DURATION PROBES WAIT; do [[ "${!v}" =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || die "$v must be a positive whole number"; done

bench_setup latency

cat > "$dir/drive.py" <<'PY'
"""One phase: PROBES critical lines evenly over DURATION s, with (storm) or
without (calm, warmup) a generator appending RATE distinct storm lines/s.
Then waits up to WAIT s for the probes still missing, and writes the
latencies (listener's receive time minus the time in the line) as JSON."""
import datetime, json, os, re, sys, threading, time
(mode, storm_log, crit_log, received, storm_out, daemon_pid, rate, duration, probes, wait,
 result) = sys.argv[1:]
rate, duration, probes, wait = int(rate), float(duration), int(probes), float(wait)
daemon_pid = int(daemon_pid)

def lines_in(path):
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 22), b""))
    except FileNotFoundError:
        return 0

TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")
def epoch(rfc3339):
    m = TIME.match(rfc3339)
    base = datetime.datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return base.timestamp() + (float("0." + m.group(2)) if m.group(2) else 0.0)

PROBE = re.compile(r"PROBE (" + re.escape(mode) + r"-\d+)")
seen = {}           # probe id -> listener's receive time (epoch s)
offset = 0
def scan():
    global offset
    try:
        with open(received, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return
    end = data.rfind(b"\n") + 1
    offset += end
    for line in data[:end].splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        p = PROBE.search(m.get("text", ""))
        if p and p.group(1) not in seen:
            seen[p.group(1)] = epoch(m["time"])

stop = threading.Event()
storm_written = 0
def storm():
    global storm_written
    fd = os.open(storm_log, os.O_WRONLY | os.O_APPEND)
    start = time.monotonic()
    while not stop.is_set():
        due = min(int((time.monotonic() - start) * rate), int(duration * rate))
        if due > storm_written:
            buf = "".join(f"2026-11-26T12:00:00 web{i % 7}[{1000 + i % 97}]: STORM {i:09d} request failed: upstream timed out\n"
                          for i in range(storm_written, due)).encode()
            os.write(fd, buf)
            storm_written = due
        time.sleep(0.005)
    os.close(fd)

storm_before = lines_in(storm_out)
gen = None
if mode == "storm":
    gen = threading.Thread(target=storm, daemon=True)
    gen.start()
t0 = time.monotonic()
sent = {}
fd = os.open(crit_log, os.O_WRONLY | os.O_APPEND)
for k in range(probes):
    target = t0 + (k + 0.5) * duration / probes
    while (d := target - time.monotonic()) > 0:
        time.sleep(min(d, 0.05))
    pid = f"{mode}-{k:04d}"
    now = time.time()
    os.write(fd, f"2026-11-26T12:00:00 ups[7]: PROBE {pid} sent={now:.6f} power supply failed\n".encode())
    sent[pid] = now
os.close(fd)
while time.monotonic() < t0 + duration:
    time.sleep(0.01)
stop.set()
if gen:
    gen.join()
storm_during = lines_in(storm_out) - storm_before
scan()
deadline = time.monotonic() + wait
while len(seen) < probes and time.monotonic() < deadline:
    time.sleep(0.05)
    scan()
    try:
        os.kill(daemon_pid, 0)
    except OSError:
        print("  the daemon is gone", file=sys.stderr)
        break
lat = sorted((seen[p] - sent[p]) * 1000 for p in sent if p in seen)
json.dump({"mode": mode, "probes": probes, "arrived": len(lat), "latencies_ms": lat,
           "storm_written": storm_written, "storm_delivered_during": storm_during,
           "storm_delivered_after_wait": lines_in(storm_out) - storm_before},
          open(result, "w"))
PY

cat > "$dir/row.py" <<'PY'
import json, math, sys
d = json.load(open(sys.argv[1]))
lat = d["latencies_ms"]
def pct(q):
    return f"{lat[max(0, math.ceil(q * len(lat)) - 1)]:.1f}" if lat else "n/a"
storm = "—" if d["mode"] == "calm" else f'{d["storm_written"]:,}'
during = "—" if d["mode"] == "calm" else f'{d["storm_delivered_during"]:,}'
print(f'| {d["mode"]} | {d["arrived"]} of {d["probes"]} | {pct(.5)} | {pct(.9)} | {pct(.99)} | '
      f'{(f"{lat[-1]:.1f}" if lat else "n/a")} | {storm} | {during} |')
PY

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
: > "$dir/storm.log"
: > "$dir/critical.log"
cat > "$dir/alerter.yaml" <<YAML
alerter:
  name: LATBENCH
  state_dir: $dir/state
sources:
  storm:
    type: log
    paths: [$dir/storm.log]
    patterns:
      - name: storm
        regex: 'STORM (?P<n>[0-9]+) '
        severity: warning
        summary: "storm line {n}"
  critical:
    type: log
    paths: [$dir/critical.log]
    patterns:
      - name: probe
        regex: 'PROBE (?P<probe>[a-z]+-[0-9]+) sent=(?P<sent>[0-9.]+)'
        severity: critical
        summary: "PROBE {probe} sent={sent}"
transports:
  out: { type: log, path: $dir/storm.jsonl }
  self: { type: log, path: $dir/self.jsonl }
  popup:
    type: messenger
    dns: false
    hosts: { BOB: "127.0.0.1:$port" }
subscribers:
  ops: { name: Operations }
  bob: { name: Bob, machine: BOB }
rules:
  - name: alerter-itself
    match: { source: alerter }
    notify: [{ subscribers: [ops], via: [self] }]
  - name: critical
    match: { source: critical }
    # Every probe is measured: none may be folded by bob's popup budget
    # (criticals count against it, up to twice the budget, see docs/budgets.md).
    budget: exempt
    notify: [{ subscribers: [bob], via: [popup] }]
  - name: storm
    match: { source: storm }
    notify: [{ subscribers: [ops], via: [out] }]
YAML
"$ALERTER" check -c "$dir/alerter.yaml" > "$dir/check.log" 2>&1 || { cat "$dir/check.log" >&2; die "alerter check failed"; }

"$ALERTER" listen --name BOB --bind 127.0.0.1 -p "$port" --datagram-port 0 --name-port 0 \
  --json --no-desktop --history "$dir/history.jsonl" > "$dir/received.jsonl" 2> "$dir/listen.log" &
lpid=$!
pids+=("$lpid")
hex=$(printf '%04X' "$port")
for _ in $(seq 1 100); do
  awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p' /proc/net/tcp | grep -q . && break
  kill -0 "$lpid" 2> /dev/null || { cat "$dir/listen.log" >&2; die "alerter listen exited at start"; }
  sleep 0.1
done

ALERTER_LOG=${ALERTER_LOG:-info} "$ALERTER" run -c "$dir/alerter.yaml" > "$dir/daemon.out" 2> "$dir/daemon.log" &
apid=$!
pids+=("$apid")
for _ in $(seq 1 300); do
  [ "$(grep -c 'following 1 files' "$dir/daemon.log" || true)" -ge 2 ] && break
  kill -0 "$apid" 2> /dev/null || { cat "$dir/daemon.log" >&2; die "alerter exited at start"; }
  sleep 0.1
done
[ "$(grep -c 'following 1 files' "$dir/daemon.log" || true)" -ge 2 ] || { tail -20 "$dir/daemon.log" >&2; die "alerter does not follow both files after 30 s"; }

drive() { python3 "$dir/drive.py" "$1" "$dir/storm.log" "$dir/critical.log" "$dir/received.jsonl" "$dir/storm.jsonl" "$apid" "$RATE" "$2" "$3" "$4" "$dir/$1.json"; }
say "alerter $("$ALERTER" --version 2>/dev/null | awk '{print $2}'): warming up (3 probes)"
drive warmup 1 3 30
[ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["arrived"])' "$dir/warmup.json")" = 3 ] \
  || { tail -20 "$dir/daemon.log" "$dir/listen.log" >&2; die "the warm-up probes did not pop up"; }
say "calm: $PROBES probes over ${DURATION}s"
drive calm "$DURATION" "$PROBES" "$WAIT"
say "storm: $PROBES probes over ${DURATION}s while $RATE storm lines/s are appended"
drive storm "$DURATION" "$PROBES" "$WAIT"
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$apid/status" 2> /dev/null || echo 0)

echo
echo "| phase | probes popped up | p50 ms | p90 ms | p99 ms | max ms | storm lines appended | storm notifications written in those ${DURATION} s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
python3 "$dir/row.py" "$dir/calm.json"
python3 "$dir/row.py" "$dir/storm.json"
python3 - "$dir/storm.json" "$hwm" "$WAIT" >&2 <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f'\nstorm notifications written by the end of the storm phase (up to {sys.argv[3]} s more waiting for probes): '
      f'{d["storm_delivered_after_wait"]:,} of {d["storm_written"]:,}; daemon peak RSS {int(sys.argv[2]) / 1024:.1f} MiB')
PY
errors=$(grep -cE ' (WARN|ERROR) ' "$dir/daemon.log" || true)
if [ "$errors" -gt 0 ]; then
  say "alerter logged $errors warnings/errors; the first few:"
  grep -E ' (WARN|ERROR) ' "$dir/daemon.log" | head -5 >&2
fi
if [ -s "$dir/self.jsonl" ]; then
  say "alerter's own events:"
  python3 -c 'import json,sys; [print("   ", json.loads(l)["title"], file=sys.stderr) for l in open(sys.argv[1])]' "$dir/self.jsonl"
fi
