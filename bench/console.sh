#!/usr/bin/env bash
# The web console's overview with 10,000 firing alerts: how long the
# daemon takes to answer it (server time, as its Server-Timing header
# says, and the whole request as curl sees it), next to what Alertmanager
# (the tool admins use today) takes to answer its UI's call for the same
# 10,000 alerts (`GET /api/v2/alerts/groups`, which its web UI draws from).
#
# The daemon: 20 rules (by the label `team`), each alert to the `log`
# transport; 10,000 events posted in batches of 1,000, then the overview
# (page 1 and the last page, 50 alerts each, grouped by rule, with the
# counts of all 20 rules) and its live part fetched REQS times each by a
# logged-in session. Alertmanager: one node, the same 10,000 alerts posted,
# its groups fetched REQS times.
#
#   cargo build --release -p alerter && bash bench/console.sh
#
# Environment: ALERTS=10000 REQS=50 ALERTER=path/to/alerter KEEP=1.
# Needs: curl, python3, prometheus-alertmanager (for the comparison).
set -euo pipefail
cd "$(dirname "$0")/.."

ALERTS=${ALERTS:-10000}
REQS=${REQS:-50}
. bench/lib.sh
need_alerter
command -v curl > /dev/null || die "apt-get install -y curl"
command -v python3 > /dev/null || die "apt-get install -y python3"

bench_setup console
API=$(free_port)
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/ops.token"
chmod 600 "$dir/ops.token"
TOKEN=$(cat "$dir/ops.token")
{
  cat <<YAML
alerter:
  name: BENCH
  state_dir: $dir/state
api:
  socket: $dir/api.sock
  listen: 127.0.0.1:$API
  metrics_listen: "off"
  tokens:
    ops: { file: $dir/ops.token, scope: operate }
transports:
  log: { type: log, path: $dir/notifications.jsonl }
rules:
YAML
  for r in $(seq -w 0 19); do
    printf '  - name: team-%s-disks\n    match: { source: api, labels: { team: t%s } }\n    repeat_interval: 1d\n    notify: [{ workgroup: true, via: [log] }]\n' "$r" "$r"
  done
} > "$dir/alerter.yaml"
"$ALERTER" check -c "$dir/alerter.yaml" > /dev/null
"$ALERTER" run -c "$dir/alerter.yaml" 2> "$dir/daemon.log" &
pids+=("$!")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$API/login" > /dev/null && break; sleep 0.1; done

say "posting $ALERTS firing alerts"
python3 - "$API" "$TOKEN" "$ALERTS" <<'PY'
import json, sys, urllib.request
api, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sev = ["warning", "critical", "info"]
for start in range(0, n, 1000):
    batch = [{"severity": sev[i % 3], "summary": f"Disk /srv/{i} on host-{i % 500} is 97% full",
              "host": f"host-{i % 500}", "labels": {"team": f"t{i % 20:02d}", "mount": f"/srv/{i}"}}
             for i in range(start, min(n, start + 1000))]
    req = urllib.request.Request(f"http://127.0.0.1:{api}/api/v1/events", data=json.dumps(batch).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=60).read()
PY
for _ in $(seq 1 600); do
  firing=$(curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$API/api/v1/status" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["alerts"]["firing"])')
  [ "$firing" -ge "$ALERTS" ] && break
  sleep 0.1
done
[ "$firing" -ge "$ALERTS" ] || die "only $firing alerts firing"

# Log in as a browser does.
jar="$dir/cookies"
csrf=$(curl -sf -c "$jar" "http://127.0.0.1:$API/login" | sed -n 's/.*name="csrf" value="\([0-9a-f]*\)".*/\1/p')
curl -sf -b "$jar" -c "$jar" -o /dev/null "http://127.0.0.1:$API/login" \
  --data-urlencode "token=$TOKEN" --data-urlencode "csrf=$csrf" --data-urlencode "next=/"
grep -q alerter_session "$jar" || die "the login failed"

measure() { # label path
  local label=$1 path=$2 i
  for i in $(seq 1 "$REQS"); do
    curl -s -b "$jar" -o "$dir/page.html" -D "$dir/headers" -w '%{time_total}\n' "http://127.0.0.1:$API$path" > "$dir/total"
    grep -q "$ALERTS" "$dir/page.html" || die "$path does not show $ALERTS alerts"
    server=$(sed -n 's/^server-timing: render;dur=\([0-9.]*\).*/\1/p' "$dir/headers" | tr -d '\r')
    echo "$server $(cat "$dir/total")"
  done > "$dir/$label.times"
  python3 - "$label" "$dir/$label.times" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[2]) if l.strip()]
server = sorted(float(a) for a, _ in rows)
total = sorted(float(b) * 1000 for _, b in rows)
p = lambda v, q: v[min(len(v) - 1, int(q * len(v)))]
print(f"{sys.argv[1]:<28} server median {statistics.median(server):6.1f} ms  p95 {p(server, .95):6.1f} ms  max {server[-1]:6.1f} ms"
      f" | request median {statistics.median(total):6.1f} ms  p95 {p(total, .95):6.1f} ms")
PY
}
pages=$(( (ALERTS + 49) / 50 ))
echo "alerter $("$ALERTER" --version | cut -d' ' -f2), $ALERTS firing alerts under 20 rules, $REQS requests each:"
measure "overview, page 1" "/"
measure "overview, last page" "/?page=$pages"
measure "live part (no 304)" "/live"
shown=$(grep -o '<li class="alert ' "$dir/page.html" | wc -l)
[ "$shown" -eq 50 ] || die "the live part shows $shown alerts, not a page of 50"
rss=$(ps -o rss= -p "${pids[0]}")
echo "daemon RSS with $ALERTS alerts: $((rss / 1024)) MiB"

if command -v prometheus-alertmanager > /dev/null; then
  W=$(free_port)
  printf 'route: { receiver: none, group_by: [team] }\nreceivers: [ { name: none } ]\n' > "$dir/am.yml"
  am_single "$dir/am.yml" "$W"
  python3 - "$W" "$ALERTS" <<'PY'
import json, sys, urllib.request
w, n = sys.argv[1], int(sys.argv[2])
for start in range(0, n, 1000):
    batch = [{"labels": {"alertname": f"team-t{i % 20:02d}-disks", "team": f"t{i % 20:02d}",
                         "instance": f"host-{i % 500}", "mount": f"/srv/{i}"},
              "annotations": {"summary": f"Disk /srv/{i} on host-{i % 500} is 97% full"}}
             for i in range(start, min(n, start + 1000))]
    req = urllib.request.Request(f"http://127.0.0.1:{w}/api/v2/alerts", data=json.dumps(batch).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=60).read()
PY
  for i in $(seq 1 "$REQS"); do
    curl -s -o "$dir/groups.json" -w '0 %{time_total}\n' "http://127.0.0.1:$W/api/v2/alerts/groups"
  done > "$dir/am.times"
  n=$(python3 -c 'import json,sys; print(sum(len(g["alerts"]) for g in json.load(open(sys.argv[1]))))' "$dir/groups.json")
  [ "$n" -ge "$ALERTS" ] || die "Alertmanager holds $n alerts"
  python3 - "$dir/am.times" <<'PY'
import statistics, sys
total = sorted(float(l.split()[1]) * 1000 for l in open(sys.argv[1]) if l.strip())
p = lambda v, q: v[min(len(v) - 1, int(q * len(v)))]
print(f"{'Alertmanager 0.25 groups':<28} (all alerts, JSON; its UI renders them in the browser afterwards)"
      f" | request median {statistics.median(total):6.1f} ms  p95 {p(total, .95):6.1f} ms")
PY
fi
