#!/usr/bin/env bash
# The control API with 10,000 firing alerts.
#
# One daemon whose rule takes every event of source `bench`; 10,000
# distinct condition events are posted through the API (`POST
# /api/v1/events`, batches of 1,000), so 10,000 alerts fire. Then:
#   - `alerter alerts` (the first page, 100 alerts) and `alerter status`,
#     RUNS times each, timed as an admin sees them: the whole command, from
#     start to exit (process start, connect, answer, printing);
#   - `GET /api/v1/status` alone, REQUESTS times over the Unix socket with
#     curl (`time_total`: the request and its answer, no process start);
#   - the same on Alertmanager 0.25 holding the same 10,000 alerts, when it
#     is installed (`apt-get install prometheus-alertmanager`): `amtool
#     alert query` (all alerts: amtool has no pages) and `GET /api/v2/status`.
# Reported: p50, p99 and max in milliseconds.
#
#   cargo build --release -p alerter && bash bench/api.sh
#
# Environment: ALERTS=10000 RUNS=50 REQUESTS=1000 ALERTER=path/to/alerter
# (default $CARGO_TARGET_DIR or target/, release) KEEP=1 (keep the temp dir).
#
# Needs: bash, python3, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ALERTS=${ALERTS:-10000}
RUNS=${RUNS:-50}
REQUESTS=${REQUESTS:-1000}
ALERTER=${ALERTER:-${CARGO_TARGET_DIR:-target}/release/alerter}
[ -x "$ALERTER" ] || die "no $ALERTER; build it: cargo build --release -p alerter"
command -v curl > /dev/null || die "needs curl"

bench_setup api
cat > "$dir/alerter.yaml" <<EOF
alerter: { name: BENCH, state_dir: $dir/state }
api: { socket: $dir/api.sock, metrics_listen: "off" }
transports:
  out: { type: log, path: $dir/out.jsonl }
rules:
  - name: bench
    match: { source: bench }
    notify: [{ workgroup: true, via: [out] }]
EOF
"$ALERTER" run -c "$dir/alerter.yaml" 2> "$dir/daemon.log" &
pids+=("$!")
for _ in $(seq 1 100); do [ -S "$dir/api.sock" ] && break; sleep 0.1; done
[ -S "$dir/api.sock" ] || die "the daemon did not start: $(cat "$dir/daemon.log")"

# The events, as JSON batches.
python3 - "$dir" "$ALERTS" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
for b in range(0, n, 1000):
    batch = [{"source": "bench", "severity": "critical" if i % 10 == 0 else "warning",
              "summary": f"service {i} is down", "labels": {"service": f"svc{i:05}", "team": f"t{i % 7}"}}
             for i in range(b, min(n, b + 1000))]
    open(f"{d}/batch-{b // 1000:03}.json", "w").write(json.dumps(batch))
PY
for f in "$dir"/batch-*.json; do
  curl -sf --unix-socket "$dir/api.sock" -H 'Content-Type: application/json' --data-binary "@$f" \
    http://localhost/api/v1/events > /dev/null || die "posting $f failed"
done
for _ in $(seq 1 300); do
  firing=$("$ALERTER" status --socket "$dir/api.sock" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["alerts"]["firing"])')
  [ "$firing" -ge "$ALERTS" ] && break
  sleep 0.2
done
say "$firing alerts firing"

# p50 p99 max of the numbers (milliseconds) on standard input.
stats() { python3 -c '
import sys
v = sorted(float(x) for x in sys.stdin.read().split())
q = lambda p: v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
print(f"p50 {q(0.5):7.2f} ms   p99 {q(0.99):7.2f} ms   max {v[-1]:7.2f} ms   ({len(v)} runs)")'; }

# Runs a command RUNS times; prints each wall time in ms.
timed() {
  for _ in $(seq 1 "$RUNS"); do
    local t0 t1
    t0=$(date +%s%N)
    "$@" > /dev/null
    t1=$(date +%s%N)
    echo "scale=3; ($t1 - $t0) / 1000000" | bc
  done
}

echo "alerter alerts (first page of 100):  $(timed "$ALERTER" alerts --socket "$dir/api.sock" | stats)"
echo "alerter status:                      $(timed "$ALERTER" status --socket "$dir/api.sock" | stats)"
echo "GET /api/v1/status (curl, socket):   $(for _ in $(seq 1 "$REQUESTS"); do
  curl -s -o /dev/null -w '%{time_total}\n' --unix-socket "$dir/api.sock" http://localhost/api/v1/status
done | awk '{ print $1 * 1000 }' | stats)"

# Alertmanager with the same alerts, if it is here.
if command -v prometheus-alertmanager > /dev/null && command -v amtool > /dev/null; then
  port=$(free_port)
  cat > "$dir/am.yml" <<EOF
route: { receiver: none }
receivers: [{ name: none }]
EOF
  am_single "$dir/am.yml" "$port"
  python3 - "$dir" "$ALERTS" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
for b in range(0, n, 1000):
    batch = [{"labels": {"alertname": "bench", "service": f"svc{i:05}", "team": f"t{i % 7}",
                         "severity": "critical" if i % 10 == 0 else "warning"},
              "annotations": {"summary": f"service {i} is down"}} for i in range(b, min(n, b + 1000))]
    open(f"{d}/am-{b // 1000:03}.json", "w").write(json.dumps(batch))
PY
  for f in "$dir"/am-*.json; do
    curl -sf -H 'Content-Type: application/json' --data-binary "@$f" "http://127.0.0.1:$port/api/v2/alerts" > /dev/null
  done
  echo "amtool alert query (all, no pages):  $(timed amtool --alertmanager.url="http://127.0.0.1:$port" alert query | stats)"
  echo "GET /api/v2/status (curl, TCP):      $(for _ in $(seq 1 "$REQUESTS"); do
    curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/api/v2/status"
  done | awk '{ print $1 * 1000 }' | stats)"
else
  say "Alertmanager is not installed (apt-get install prometheus-alertmanager): no comparison"
fi
