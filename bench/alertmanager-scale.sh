#!/usr/bin/env bash
# Many agents, one Alertmanager cluster, one gateway: does every alert
# arrive, how fast, and what does the gateway cost?
#
# A two-node Alertmanager cluster (Debian's prometheus-alertmanager 0.25)
# on loopback routes everything to one alerter gateway (an `alertmanager`
# source; a rule sends each alert to the `log` transport). One process
# (alerter-core's example `simulate_agents`) plays AGENTS agents: each an
# `alertmanager` transport of its own, sending ALERTS new alerts for its
# host `agent-N` to both nodes, all agents at once. Alertmanager groups by
# instance (group_wait 1s, so an agent's alerts travel together).
#
# Reported: the push (every alert taken by the cluster: seconds, alerts/s),
# the end to end (from the first push until the gateway has taken every
# alert: seconds, alerts/s, webhook notifications received), every alert
# firing on the gateway exactly once, and the gateway's peak RSS.
#
#   cargo build --release -p alerter && cargo build --release -p alerter-core --example simulate_agents
#   bash bench/alertmanager-scale.sh
#
# Environment: AGENTS=500 ALERTS=10 ALERTER=path/to/alerter KEEP=1.
# Needs: prometheus-alertmanager, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

AGENTS=${AGENTS:-500}
ALERTS=${ALERTS:-10}
. bench/lib.sh
need_alerter
SIM=${SIM:-$(dirname "$ALERTER")/examples/simulate_agents}
[ -x "$SIM" ] || die "no $SIM (cargo build --release -p alerter-core --example simulate_agents)"
command -v prometheus-alertmanager > /dev/null || die "apt-get install -y prometheus-alertmanager"
command -v python3 > /dev/null || die "apt-get install -y python3"

bench_setup am-scale
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GW=$(port); GWM=$(port); W1=$(port); C1=$(port); W2=$(port); C2=$(port)
total=$((AGENTS * ALERTS))

mkdir -p "$dir/gw"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/gw/hook.token"
chmod 600 "$dir/gw/hook.token"
cat > "$dir/gw/alerter.yaml" <<EOF
alerter: { name: GATEWAY, state_dir: $dir/gw/state }
api:
  socket: $dir/gw/api.sock
  listen: 127.0.0.1:$GW
  metrics_listen: 127.0.0.1:$GWM
  tokens: { alertmanager: { file: $dir/gw/hook.token, scope: ingest } }
sources:
  am: { type: alertmanager }
transports:
  out: { type: log, path: $dir/gw/notifications.jsonl }
subscribers:
  ops: {}
rules:
  - name: from-alertmanager
    match: { source: am }
    group_by: [instance]
    group_interval: 1s
    notify: [{ subscribers: [ops], via: [out] }]
EOF
cat > "$dir/am.yml" <<EOF
route:
  receiver: gateway
  group_by: [instance]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
receivers:
  - name: gateway
    webhook_configs:
      - url: http://127.0.0.1:$GW/api/v1/alertmanager/am
        max_alerts: 100
        http_config: { authorization: { credentials_file: $dir/gw/hook.token } }
EOF

"$ALERTER" run -c "$dir/gw/alerter.yaml" 2> "$dir/gw/stderr" &
gw_pid=$!
pids+=("$gw_pid")
for i in 1 2; do
  if [ $i = 1 ]; then web=$W1 gossip=$C1 peer=$C2; else web=$W2 gossip=$C2 peer=$C1; fi
  mkdir -p "$dir/am$i"
  prometheus-alertmanager --config.file="$dir/am.yml" --storage.path="$dir/am$i" \
    --web.listen-address=127.0.0.1:$web --cluster.listen-address=127.0.0.1:$gossip \
    --cluster.advertise-address=127.0.0.1:$gossip --cluster.peer=127.0.0.1:$peer \
    --cluster.peer-timeout=2s 2> "$dir/am$i.log" &
  pids+=("$!")
done

metric() { # the gateway's events from Alertmanager, summed
  python3 - "$GWM" <<'PY'
import sys, urllib.request
try:
    text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
except Exception:
    print(-1); sys.exit()
print(sum(int(float(l.rsplit(" ", 1)[1])) for l in text.splitlines()
          if l.startswith("alerter_events_total{") and 'source="am"' in l))
PY
}
settled() {
  python3 - "$1" <<'PY'
import json, sys, urllib.request
try:
    s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/v2/status", timeout=2))
    ok = s["cluster"]["status"] == "ready" and len(s["cluster"]["peers"]) == 2
except Exception:
    ok = False
sys.exit(0 if ok else 1)
PY
}
for _ in $(seq 1 600); do settled "$W1" && settled "$W2" && [ "$(metric)" -ge 0 ] && break; sleep 0.1; done
settled "$W1" && settled "$W2" || die "the Alertmanager cluster did not settle"
say "cluster settled, gateway up; $AGENTS agents × $ALERTS alerts = $total alerts"

t0=$(date +%s.%N)
push=$("$SIM" "$AGENTS" "$ALERTS" "http://127.0.0.1:$W1" "http://127.0.0.1:$W2" 2> "$dir/sim.err")
echo "push: $push"
peak=0
while :; do
  n=$(metric)
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$gw_pid/status")
  [ "$rss" -gt "$peak" ] && peak=$rss
  [ "$n" -ge "$total" ] && break
  elapsed=$(echo "$(date +%s.%N) - $t0" | bc)
  [ "$(echo "$elapsed > 300" | bc)" = 1 ] && die "only $n of $total alerts reached the gateway in 300 s"
  sleep 0.05
done
t1=$(date +%s.%N)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$gw_pid/status")
firing=$("$ALERTER" alerts -c "$dir/gw/alerter.yaml" --json -n 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
python3 - "$push" "$t0" "$t1" "$total" "$firing" "$peak" "$hwm" <<'PY'
import json, sys
push, t0, t1, total, firing, peak, hwm = sys.argv[1:]
p = json.loads(push)
e2e = float(t1) - float(t0)
print(f"push:        {p['taken']} taken, {p['failed']} failed in {p['seconds']:.2f} s = {p['taken']/p['seconds']:,.0f} alerts/s")
print(f"end to end:  {total} alerts at the gateway in {e2e:.2f} s = {int(total)/e2e:,.0f} alerts/s")
print(f"gateway:     {firing} alerts firing (exactly once each: {int(firing) == int(total)}), "
      f"RSS peak {int(peak)/1024:.1f} MiB sampled, VmHWM {int(hwm)/1024:.1f} MiB")
PY
