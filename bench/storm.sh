#!/usr/bin/env bash
# An alert storm through the whole daemon, and the same storm posted to
# Prometheus Alertmanager.
#
# alerter: a `log` source follows a file, one rule sends every matching line
# (a one-shot event; every line distinct, so nothing is deduplicated) to a
# `log` transport writing JSON lines. Once the daemon follows the file, N
# distinct matching lines are appended in one go, and the script polls the
# output's line count every POLL seconds until all N notifications are
# there (or TIMEOUT). Then it checks exactly-once: every notification id
# once, every input line in exactly one notification.
#
# Alertmanager (Debian's prometheus-alertmanager, no clustering, a route with
# group_by: ['...'] and group_wait: 0s so that every alert is its own group,
# as every line is its own notification in alerter, and a receiver with no
# integrations): the same N alerts, distinct labels each, POSTed to
# /api/v2/alerts in batches of BATCH by CONCURRENCY clients, timed until
# GET /api/v2/alerts?active=true lists all N (or as many as it gets to).
# Alertmanager keeps alerts in memory only: its storage directory holds the
# notification log and silences, so its state bytes say little.
#
#   CARGO_TARGET_DIR=... cargo build --release -p alerter && bash bench/storm.sh
#
# Environment: N=100000 TIMEOUT=600 (s, per tool) POLL=0.1 (s) BATCH=100
# CONCURRENCY=4 ALERTER=path/to/alerter (default $CARGO_TARGET_DIR or
# target/, release) ALERTMANAGER=prometheus-alertmanager SKIP_ALERTMANAGER=1
# KEEP=1 (keep the temp dir: config, daemon log, samples, outputs).
#
# Needs: bash, python3, coreutils (du), prometheus-alertmanager
# (apt-get install -y python3 prometheus-alertmanager).
#
# Output: progress on stderr, then a markdown table on stdout, one row per
# tool (rates in notifications/s; peak RSS is VmHWM in MiB; the Alertmanager
# row's count is alerts accepted and listed, not notifications sent).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-100000}
TIMEOUT=${TIMEOUT:-600}
POLL=${POLL:-0.1}
BATCH=${BATCH:-100}
CONCURRENCY=${CONCURRENCY:-4}
ALERTMANAGER=${ALERTMANAGER:-prometheus-alertmanager}
SKIP_ALERTMANAGER=${SKIP_ALERTMANAGER:-0}

. bench/lib.sh
need_alerter
command -v python3 > /dev/null || die "python3 is missing (apt-get install -y python3)"
command -v du > /dev/null || die "du is missing (coreutils)"
if [ "$SKIP_ALERTMANAGER" != 1 ]; then
  command -v "$ALERTMANAGER" > /dev/null \
    || die "$ALERTMANAGER is missing (apt-get install -y prometheus-alertmanager, or SKIP_ALERTMANAGER=1)"
fi
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 5 ] || die "N must be a number of at least 5"

bench_setup storm

# Stops a child with SIGTERM and waits (at most $2 s) for it to exit.
stop() {
  local pid=$1 limit=${2:-60}
  kill -TERM "$pid" 2> /dev/null || return 0
  for _ in $(seq 1 $((limit * 10))); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2> /dev/null; then
    say "pid $pid did not stop within ${limit}s; killing it"
    kill -KILL "$pid" 2> /dev/null || true
  fi
  wait "$pid" 2> /dev/null || true
}
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2> /dev/null || echo 0; }

# ---------------------------------------------------------------- helpers --
cat > "$dir/drive_alerter.py" <<'PY'
"""Appends the prepared lines to the followed file in one go, then polls the
output's line count every POLL s until N lines, TIMEOUT or the daemon's end.
Writes [(t, count), ...] (t from the start of the append) as JSON."""
import json, os, sys, time
lines, log, out, pid, n, timeout, poll, samples_path = sys.argv[1:]
pid, n, timeout, poll = int(pid), int(n), float(timeout), float(poll)
data = open(lines, "rb").read()
count, offset, fd = 0, 0, None
def alive():
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
def lines_so_far():
    global count, offset, fd
    if fd is None:
        try:
            fd = os.open(out, os.O_RDONLY)
        except FileNotFoundError:
            return 0
    while True:
        chunk = os.pread(fd, 1 << 22, offset)
        if not chunk:
            return count
        offset += len(chunk)
        count += chunk.count(b"\n")
t0 = time.monotonic()
w = os.open(log, os.O_WRONLY | os.O_APPEND)
view = memoryview(data)
while view:
    view = view[os.write(w, view):]
os.close(w)
appended = time.monotonic() - t0
samples = [(0.0, 0)]
next_report = 10.0
while True:
    c = lines_so_far()
    t = time.monotonic() - t0
    samples.append((round(t, 4), c))
    if c >= n:
        break
    if t > timeout:
        print(f"  alerter: timeout after {timeout:.0f}s with {c} of {n}", file=sys.stderr)
        break
    if not alive():
        print(f"  alerter: the daemon is gone, {c} of {n}", file=sys.stderr)
        break
    if t >= next_report:
        print(f"  alerter: {t:6.1f}s {c:>8} notifications", file=sys.stderr)
        next_report += 10.0
    time.sleep(poll)
json.dump({"appended_s": appended, "samples": samples}, open(samples_path, "w"))
PY

cat > "$dir/rates.py" <<'PY'
"""Rates from (t, count) samples: overall, first fifth, last fifth, and a
per-tenth breakdown on stderr. Prints: seconds got rate first last."""
import json, sys
samples_path, n, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
d = json.load(open(samples_path))
s = d["samples"]
got = s[-1][1]
def t_at(k):
    # When the k-th notification was written: between the sample before and
    # the first that saw it, interpolated (the first sample to see it is up
    # to POLL s late, a bias of up to 10 % on a fifth of a 5 s run).
    for (t0, c0), (t, c) in zip(s, s[1:]):
        if c >= k:
            return t0 + (t - t0) * (k - c0) / (c - c0) if c > c0 else t
    return None
fifth = n // 5
t1, t4, tn = t_at(fifth), t_at(n - fifth), t_at(n)
seconds = tn if tn is not None else s[-1][0]
if "done_s" in d:  # Alertmanager: until the GET lists them, not the last POST
    seconds, got = d["done_s"], d["listed"]
rate = (min(got, n) / seconds) if seconds > 0 else 0
first = f"{fifth / t1:.0f}" if t1 else "n/a"
if tn is None or t4 is None:
    last = "n/a"
elif tn > t4:
    last = f"{fifth / (tn - t4):.0f}"
else:  # within one poll interval
    last = "n/a (within one poll)"
prev_t, prev_k = 0.0, 0
for i in range(1, 11):
    k = n * i // 10
    t = t_at(k)
    if t is None:
        print(f"  {label}: tenth {i:2}: not reached", file=sys.stderr)
        break
    r = (k - prev_k) / (t - prev_t) if t > prev_t else float("inf")
    print(f"  {label}: tenth {i:2}: {k:>8} at {t:8.2f}s  ({r:,.0f}/s in this tenth)", file=sys.stderr)
    prev_t, prev_k = t, k
print(f"{seconds:.2f} {got} {rate:.0f} {first} {last}")
PY

cat > "$dir/check_alerter.py" <<'PY'
"""Exactly-once over the log transport's output: every notification id once,
every input line (label n) in exactly one notification, N distinct lines."""
import collections, json, sys
out, n = sys.argv[1], int(sys.argv[2])
ids, lines, bad, total = collections.Counter(), collections.Counter(), 0, 0
for raw in open(out, "rb"):
    total += 1
    try:
        note = json.loads(raw)
    except ValueError:
        bad += 1
        continue
    ids[note["id"]] += 1
    for a in note.get("alerts", []):
        lines[a.get("labels", {}).get("n")] += 1
dup_ids = sum(1 for c in ids.values() if c > 1)
dup_lines = sum(1 for c in lines.values() if c > 1)
ok = bad == 0 and dup_ids == 0 and dup_lines == 0 and len(lines) == n and total == n
print(f"  alerter: {total} notification lines, {len(ids)} distinct ids ({dup_ids} repeated), "
      f"{len(lines)} distinct input lines of {n} ({dup_lines} in more than one notification), "
      f"{bad} unparsable lines", file=sys.stderr)
print("yes" if ok else "no")
PY

cat > "$dir/drive_am.py" <<'PY'
"""Posts N alerts with distinct labels to Alertmanager's API v2 in batches,
CONCURRENCY clients at once, then GETs the active alerts until all N are
listed (or TIMEOUT). Writes samples (t, alerts accepted) and the result."""
import concurrent.futures, http.client, json, sys, threading, time
port, n, batch, conc, timeout, out = sys.argv[1:]
port, n, batch, conc, timeout = int(port), int(n), int(batch), int(conc), float(timeout)
now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
bodies = []
for start in range(0, n, batch):
    alerts = [{"labels": {"alertname": "StormLine", "instance": "bench", "n": f"{i:07d}"},
               "annotations": {"summary": f"storm line {i}"}, "startsAt": now}
              for i in range(start, min(n, start + batch))]
    bodies.append((len(alerts), json.dumps(alerts).encode()))
local = threading.local()
lock = threading.Lock()
accepted, samples, errors = 0, [(0.0, 0)], []
def post(item):
    global accepted
    k, body = item
    for attempt in range(3):
        try:
            if not hasattr(local, "c"):
                local.c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            local.c.request("POST", "/api/v2/alerts", body, {"Content-Type": "application/json"})
            r = local.c.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")
            break
        except Exception as e:  # reconnect and retry
            local.__dict__.pop("c", None)
            if attempt == 2:
                with lock:
                    errors.append(str(e))
                return
    with lock:
        accepted += k
        samples.append((round(time.monotonic() - t0, 4), accepted))
t0 = time.monotonic()
with concurrent.futures.ThreadPoolExecutor(conc) as pool:
    list(pool.map(post, bodies))
posted = time.monotonic() - t0
print(f"  alertmanager: {accepted} alerts accepted in {posted:.2f}s ({len(errors)} failed batches)", file=sys.stderr)
listed, distinct, once = 0, 0, False
while True:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    c.request("GET", "/api/v2/alerts?active=true")
    r = c.getresponse()
    got = json.loads(r.read())
    t = time.monotonic() - t0
    mine = [a["labels"].get("n") for a in got if a["labels"].get("alertname") == "StormLine"]
    listed, distinct = len(mine), len(set(mine))
    print(f"  alertmanager: {t:6.1f}s GET lists {listed} ({distinct} distinct)", file=sys.stderr)
    if listed >= n or t > timeout:
        break
    time.sleep(1)
done = time.monotonic() - t0
once = listed == n and distinct == n and not errors
json.dump({"samples": sorted(samples), "posted_s": posted, "done_s": done,
           "listed": listed, "distinct": distinct, "errors": errors[:5], "once": once},
          open(out, "w"))
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

rows=()
header="| tool | N | seconds | notifications/s | first-fifth rate | last-fifth rate | peak RSS (MiB) | state bytes/notification | exactly-once |"

# ---------------------------------------------------------------- alerter --
say "$("$ALERTER" --version 2>/dev/null || echo 'alerter ?') ($ALERTER), N=$N"
mkdir -p "$dir/a"
: > "$dir/a/storm.log"
cat > "$dir/a/alerter.yaml" <<YAML
alerter:
  name: STORMBENCH
  state_dir: $dir/a/state
sources:
  storm:
    type: log
    paths: [$dir/a/storm.log]
    patterns:
      - name: storm
        regex: 'STORM (?P<n>[0-9]+) '
        severity: warning
        summary: "storm line {n}"
transports:
  out: { type: log, path: $dir/a/notifications.jsonl }
  self: { type: log, path: $dir/a/self.jsonl }
subscribers:
  ops: { name: Operations }
rules:
  - name: alerter-itself
    match: { source: alerter }
    notify: [{ subscribers: [ops], via: [self] }]
  - name: storm
    match: { source: storm }
    notify: [{ subscribers: [ops], via: [out] }]
YAML
"$ALERTER" check -c "$dir/a/alerter.yaml" > "$dir/a/check.log" 2>&1 || { cat "$dir/a/check.log" >&2; die "alerter check failed"; }
python3 - "$dir/a/lines.txt" "$N" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(n):
        f.write(f"2026-11-26T12:00:00 web{i % 7}[{1000 + i % 97}]: STORM {i:07d} request failed: upstream timed out\n")
PY

ALERTER_LOG=info "$ALERTER" run -c "$dir/a/alerter.yaml" > "$dir/a/daemon.out" 2> "$dir/a/daemon.log" &
apid=$!
pids+=("$apid")
for _ in $(seq 1 300); do
  grep -q "following 1 files" "$dir/a/daemon.log" 2> /dev/null && break
  kill -0 "$apid" 2> /dev/null || { cat "$dir/a/daemon.log" >&2; die "alerter exited at start"; }
  sleep 0.1
done
grep -q "following 1 files" "$dir/a/daemon.log" || { tail -20 "$dir/a/daemon.log" >&2; die "alerter is not following the file after 30 s"; }
say "alerter is following the file; appending $N lines"

python3 "$dir/drive_alerter.py" "$dir/a/lines.txt" "$dir/a/storm.log" "$dir/a/notifications.jsonl" \
  "$apid" "$N" "$TIMEOUT" "$POLL" "$dir/a/samples.json"
a_hwm=$(hwm_kib "$apid")
a_du_running=$(du -sb "$dir/a/state" | cut -f1)
read -r a_sec a_got a_rate a_first a_last < <(python3 "$dir/rates.py" "$dir/a/samples.json" "$N" alerter)
stop "$apid" 120
a_du=$(du -sb "$dir/a/state" | cut -f1)
a_once=$(python3 "$dir/check_alerter.py" "$dir/a/notifications.jsonl" "$N")
a_final=$(wc -l < "$dir/a/notifications.jsonl")
say "alerter: state dir $a_du_running bytes while running (with the SQLite WAL), $a_du after a clean stop; $a_final notifications after the stop"
errors=$(grep -cE ' (WARN|ERROR) ' "$dir/a/daemon.log" || true)
if [ "$errors" -gt 0 ]; then
  say "alerter logged $errors warnings/errors; the first few:"
  grep -E ' (WARN|ERROR) ' "$dir/a/daemon.log" | head -5 >&2
fi
if [ -s "$dir/a/self.jsonl" ]; then
  say "alerter's own events:"
  python3 -c 'import json,sys; [print("   ", json.loads(l)["title"], file=sys.stderr) for l in open(sys.argv[1])]' "$dir/a/self.jsonl"
fi
a_label=$a_sec
[ "$a_got" -ge "$N" ] || a_label="$a_sec (timeout: $a_got of $N)"
rows+=("| alerter $("$ALERTER" --version 2>/dev/null | awk '{print $2}') | $N | $a_label | $a_rate | $a_first | $a_last | $(awk -v k="$a_hwm" 'BEGIN{printf "%.1f", k/1024}') | $(awk -v b="$a_du" -v n="$a_final" 'BEGIN{printf "%.0f", (n > 0 ? b/n : 0)}') | $a_once |")

# ----------------------------------------------------------- alertmanager --
if [ "$SKIP_ALERTMANAGER" != 1 ]; then
  mkdir -p "$dir/am/data"
  cat > "$dir/am/alertmanager.yml" <<YAML
route:
  receiver: blackhole
  group_by: ['...']
  group_wait: 0s
  group_interval: 5m
  repeat_interval: 4h
receivers:
  - name: blackhole
YAML
  port=$(free_port)
  am_version=$("$ALERTMANAGER" --version 2>&1 | awk 'NR==1 {print $3}')
  say "alertmanager $am_version on 127.0.0.1:$port, N=$N"
  "$ALERTMANAGER" --config.file="$dir/am/alertmanager.yml" --storage.path="$dir/am/data" \
    --web.listen-address="127.0.0.1:$port" --cluster.listen-address= > "$dir/am/am.log" 2>&1 &
  mpid=$!
  pids+=("$mpid")
  for _ in $(seq 1 300); do
    python3 -c 'import sys,urllib.request; urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/-/ready", timeout=1)' "$port" 2> /dev/null && break
    kill -0 "$mpid" 2> /dev/null || { cat "$dir/am/am.log" >&2; die "alertmanager exited at start"; }
    sleep 0.1
  done
  python3 "$dir/drive_am.py" "$port" "$N" "$BATCH" "$CONCURRENCY" "$TIMEOUT" "$dir/am/result.json"
  m_hwm=$(hwm_kib "$mpid")
  read -r m_sec m_got m_rate m_first m_last < <(python3 "$dir/rates.py" "$dir/am/result.json" "$N" alertmanager)
  stop "$mpid" 60
  m_du=$(du -sb "$dir/am/data" | cut -f1)
  m_once=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("yes" if d["once"] else "no"); [print("  alertmanager error:", e, file=sys.stderr) for e in d["errors"]]' "$dir/am/result.json")
  m_listed=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listed"])' "$dir/am/result.json")
  errors=$(grep -c 'level=error' "$dir/am/am.log" || true)
  [ "$errors" -eq 0 ] || { say "alertmanager logged $errors errors; the first few:"; grep 'level=error' "$dir/am/am.log" | head -5 >&2; }
  m_label=$m_sec
  [ "$m_listed" -ge "$N" ] || m_label="$m_sec (timeout: $m_listed of $N)"
  rows+=("| alertmanager $am_version | $N | $m_label | $m_rate | $m_first | $m_last | $(awk -v k="$m_hwm" 'BEGIN{printf "%.1f", k/1024}') | $(awk -v b="$m_du" -v n="$N" 'BEGIN{printf "%.0f", b/n}') | $m_once |")
fi

echo
echo "$header"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
