#!/usr/bin/env bash
# From a log line on an agent to the popup the gateway's receiver shows,
# through a two-node Alertmanager cluster.
#
# Agent: an alerter with a `log` source on a file; its rule sends every
# matching line to the `alertmanager` transport (both nodes) and, as the
# baseline, straight to a popup on BOB. Cluster: Debian's
# prometheus-alertmanager 0.25, two nodes on loopback, every alert a group
# of its own (`group_by: ['...']`) with `group_wait: 0s`, routed to the
# gateway. Gateway: an alerter with an `alertmanager` source whose rule
# pops each alert up on CAROL. Receivers: two `alerter listen` (BOB, CAROL)
# printing JSON with the time each popup arrived.
#
# PROBES lines, spread evenly over DURATION seconds, each with its id and
# the time it was written; a probe's latency is from that time to the
# receiver's stamp (the same machine's clock). Reported: median, p90, p99
# and max, direct (agent → popup) and through the cluster (agent →
# Alertmanager → gateway → popup).
#
#   cargo build --release -p alerter && bash bench/alertmanager-latency.sh
#
# Environment: PROBES=200 DURATION=40 ALERTER=path/to/alerter KEEP=1.
# Needs: prometheus-alertmanager, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

PROBES=${PROBES:-200}
DURATION=${DURATION:-40}
. bench/lib.sh
need_alerter
command -v prometheus-alertmanager > /dev/null || die "apt-get install -y prometheus-alertmanager"
command -v python3 > /dev/null || die "apt-get install -y python3"

bench_setup am-latency
GW=$(free_port); W1=$(free_port); C1=$(free_port); W2=$(free_port); C2=$(free_port); BOB=$(free_port); CAROL=$(free_port)

mkdir -p "$dir/gw" "$dir/agent"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/gw/hook.token"
chmod 600 "$dir/gw/hook.token"
: > "$dir/agent/app.log"
cat > "$dir/gw/alerter.yaml" <<EOF
alerter: { name: GATEWAY, state_dir: $dir/gw/state }
api:
  socket: $dir/gw/api.sock
  listen: 127.0.0.1:$GW
  metrics_listen: "off"
  tokens: { alertmanager: { file: $dir/gw/hook.token, scope: ingest } }
sources:
  am: { type: alertmanager }
transports:
  popup: { type: messenger, dns: false, hosts: { CAROL: "127.0.0.1:$CAROL" } }
subscribers:
  carol: { machine: CAROL }
rules:
  - name: from-alertmanager
    match: { source: am }
    budget: exempt
    notify: [{ subscribers: [carol], via: [popup] }]
EOF
cat > "$dir/agent/alerter.yaml" <<EOF
alerter: { name: AGENT1, state_dir: $dir/agent/state }
api: { socket: $dir/agent/api.sock, metrics_listen: "off" }
sources:
  app:
    type: log
    paths: [$dir/agent/app.log]
    patterns:
      - name: probe
        regex: 'PROBE (?P<probe>[0-9]+) sent=(?P<sent>[0-9.]+)'
        severity: critical
        summary: "PROBE {probe} sent={sent}"
transports:
  am: { type: alertmanager, urls: ["http://127.0.0.1:$W1", "http://127.0.0.1:$W2"] }
  popup: { type: messenger, dns: false, hosts: { BOB: "127.0.0.1:$BOB" } }
subscribers:
  bob: { machine: BOB }
rules:
  - name: probes
    match: { source: app }
    budget: exempt
    notify: [{ subscribers: [bob], via: [am, popup] }]
EOF
cat > "$dir/am.yml" <<EOF
route:
  receiver: gateway
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: gateway
    webhook_configs:
      - url: http://127.0.0.1:$GW/api/v1/alertmanager/am
        send_resolved: false
        http_config: { authorization: { credentials_file: $dir/gw/hook.token } }
EOF
for f in "$dir/gw/alerter.yaml" "$dir/agent/alerter.yaml"; do
  "$ALERTER" check -c "$f" > "$dir/check.log" 2>&1 || { cat "$dir/check.log" >&2; die "alerter check $f failed"; }
done

for who in BOB CAROL; do
  p=${!who}
  "$ALERTER" listen --name "$who" --bind 127.0.0.1 -p "$p" --datagram-port 0 --name-port 0 \
    --json --no-desktop --history /dev/null > "$dir/$who.jsonl" 2> "$dir/$who.log" &
  pids+=("$!")
done
"$ALERTER" run -c "$dir/gw/alerter.yaml" 2> "$dir/gw/stderr" &
pids+=("$!")
"$ALERTER" run -c "$dir/agent/alerter.yaml" 2> "$dir/agent/stderr" &
pids+=("$!")
for _ in $(seq 1 600); do
  grep -q "alerter started" "$dir/gw/stderr" && grep -q "alerter started" "$dir/agent/stderr" && break
  sleep 0.1
done
am_cluster "$dir/am.yml" "$W1" "$C1" "$W2" "$C2"
say "cluster settled, daemons up; $PROBES probes over $DURATION s"

python3 - "$dir/agent/app.log" "$dir/BOB.jsonl" "$dir/CAROL.jsonl" "$PROBES" "$DURATION" <<'PY'
import datetime, json, math, os, re, sys, time
log, bob, carol, probes, duration = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")
def epoch(s):
    m = TIME.match(s)
    base = datetime.datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return base.timestamp() + (float("0." + m.group(2)) if m.group(2) else 0.0)
PROBE = re.compile(r"PROBE (\d+) sent=")
def seen(path):
    out = {}
    for line in open(path, errors="replace"):
        try:
            m = json.loads(line)
        except ValueError:
            continue
        p = PROBE.search(m.get("text", ""))
        if p and p.group(1) not in out:
            out[p.group(1)] = epoch(m["time"])
    return out
sent = {}
fd = os.open(log, os.O_WRONLY | os.O_APPEND)
t0 = time.monotonic()
for k in range(probes):
    while (d := t0 + (k + 0.5) * duration / probes - time.monotonic()) > 0:
        time.sleep(min(d, 0.05))
    now = time.time()
    os.write(fd, f"PROBE {k:05d} sent={now:.6f} upstream timed out\n".encode())
    sent[f"{k:05d}"] = now
os.close(fd)
deadline = time.monotonic() + 60
while time.monotonic() < deadline and (len(seen(bob)) < probes or len(seen(carol)) < probes):
    time.sleep(0.2)
def row(name, got):
    lat = sorted((got[p] - sent[p]) * 1000 for p in sent if p in got)
    pct = lambda q: f"{lat[max(0, math.ceil(q * len(lat)) - 1)]:.1f}" if lat else "n/a"
    print(f"| {name} | {len(lat)} of {probes} | {pct(.5)} | {pct(.9)} | {pct(.99)} | {lat[-1] if lat else float('nan'):.1f} |")
print("| path | arrived | median ms | p90 ms | p99 ms | max ms |")
print("| --- | --- | --- | --- | --- | --- |")
row("agent → popup (direct)", seen(bob))
row("agent → Alertmanager cluster → gateway → popup", seen(carol))
PY
