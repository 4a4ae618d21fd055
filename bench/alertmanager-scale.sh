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
GW=$(free_port); GWM=$(free_port); W1=$(free_port); C1=$(free_port); W2=$(free_port); C2=$(free_port)
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
am_cluster "$dir/am.yml" "$W1" "$C1" "$W2" "$C2"
for _ in $(seq 1 300); do [ "$(metric)" -ge 0 ] && break; sleep 0.1; done
[ "$(metric)" -ge 0 ] || die "the gateway does not answer (see $dir/gw/stderr)"
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
