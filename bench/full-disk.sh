#!/usr/bin/env bash
# What does the daemon cost while its disk is full?
#
# The state directory is a 2 MB tmpfs this script mounts. One `log` source
# follows a file; its lines go out through the `log` transport to a
# JSON-lines file (outside the tmpfs). After one line has gone all the way
# through, the tmpfs is filled to the last byte and matching lines are
# appended, 20 at a time, until a commit fails (the SQLite log can have
# room left in blocks it already has). For DURATION seconds the script then
# reads the daemon's CPU time (utime + stime of every thread, from
# /proc/PID/stat) and counts the lines and bytes it logs. Then the filler
# is removed, and the script waits until each line appended has been
# delivered, and checks that each was delivered exactly once.
#
#   cargo build --release -p alerter && sudo bash bench/full-disk.sh
#
# Environment: DURATION=30 (s) ALERTER=path/to/alerter (default
# $CARGO_TARGET_DIR or target/, release) KEEP=1 (keep the temp dir).
#
# Needs: root (mount), bash, python3 (apt-get install -y python3).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30}

. bench/lib.sh
need_alerter
[ "$(id -u)" = 0 ] || die "run as root: it mounts a tmpfs for the state directory"
command -v python3 > /dev/null || die "python3 is missing (apt-get install -y python3)"
[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -gt 0 ] || die "DURATION must be a positive whole number"

bench_setup fulldisk
mkdir "$dir/state"
mount -t tmpfs -o size=2m,mode=0700 tmpfs "$dir/state"
# Unmounted before bench_cleanup removes $dir (the daemon is stopped first).
full_disk_cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2> /dev/null || true
  done
  pids=()
  umount "$dir/state" 2> /dev/null || true
  (exit "$rc")
  bench_cleanup
}
trap full_disk_cleanup EXIT

: > "$dir/app.log"
cat > "$dir/alerter.yaml" << YAML
alerter:
  name: FULLDISK
  state_dir: $dir/state
sources:
  app:
    type: log
    paths: [$dir/app.log]
    patterns:
      - { name: error, regex: 'ERROR (?P<n>[0-9]+)', severity: warning }
transports:
  out: { type: log, path: $dir/out.jsonl }
subscribers:
  ops: { name: Operations }
rules:
  - { name: app, match: { source: app }, notify: [{ subscribers: [ops], via: [out] }] }
  - { name: alerter-itself, match: { source: alerter }, notify: [{ subscribers: [ops], via: [out] }] }
YAML
"$ALERTER" check -c "$dir/alerter.yaml" > "$dir/check.log" 2>&1 || { cat "$dir/check.log" >&2; die "alerter check failed"; }

ALERTER_LOG=info "$ALERTER" run -c "$dir/alerter.yaml" > "$dir/daemon.out" 2> "$dir/daemon.log" &
apid=$!
pids+=("$apid")
wait_until() { # seconds, description, command...
  local secs=$1 what=$2
  shift 2
  for _ in $(seq 1 $((secs * 10))); do
    "$@" && return 0
    kill -0 "$apid" 2> /dev/null || { tail -20 "$dir/daemon.log" >&2; die "alerter exited while waiting for $what"; }
    sleep 0.1
  done
  tail -20 "$dir/daemon.log" >&2
  die "no $what within $secs s"
}
wait_until 30 "start" grep -q "following 1 files" "$dir/daemon.log"
echo "2026-12-02T00:00:00 app[1]: ERROR 0 before the disk filled" >> "$dir/app.log"
wait_until 30 "first notification" grep -q "ERROR 0" "$dir/out.jsonl"

dd if=/dev/zero of="$dir/state/filler" bs=4k 2> /dev/null || true
say "state directory full: $(df -k --output=avail "$dir/state" | tail -1 | tr -d ' ') KiB free"
n=0
while ! grep -q "cannot save state" "$dir/daemon.log"; do
  [ "$n" -lt 20000 ] || die "20,000 lines committed on a full disk?"
  for i in $(seq $((n + 1)) $((n + 20))); do
    echo "2026-12-02T00:00:00 app[1]: ERROR $i while the disk is full" >> "$dir/app.log"
  done
  n=$((n + 20))
  sleep 0.5
done
say "a commit failed after $n lines on the full disk"

ticks() { awk '{print $14 + $15}' "/proc/$apid/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
l0=$(wc -l < "$dir/daemon.log")
b0=$(wc -c < "$dir/daemon.log")
say "measuring for $DURATION s while the disk stays full"
sleep "$DURATION"
t1=$(ticks)
l1=$(wc -l < "$dir/daemon.log")
b1=$(wc -c < "$dir/daemon.log")

rm -f "$dir/state/filler"
say "space freed; waiting for the $n lines"
delivered() {
  python3 - "$dir/out.jsonl" "$n" << 'PY'
import json, re, sys
want = int(sys.argv[2])
seen = {}
for line in open(sys.argv[1]):
    try:
        n = json.loads(line)
    except ValueError:
        continue
    for a in n.get("alerts", []):
        m = re.search(r"ERROR (\d+) while the disk is full", a.get("summary", "") + " " + a.get("details", ""))
        if m:
            seen[int(m.group(1))] = seen.get(int(m.group(1)), 0) + 1
missing = [i for i in range(1, want + 1) if i not in seen]
twice = [i for i, c in seen.items() if c > 1]
print(f"{want - len(missing)} {len(twice)}")
sys.exit(0 if not missing else 1)
PY
}
wait_until 120 "delivery of all $n lines" delivered > /dev/null
# store_recovered follows once the store has worked for 10 s.
wait_until 60 "store_recovered" grep -q "saves its state again" "$dir/out.jsonl"
kill -TERM "$apid"
wait "$apid" || true
read -r got twice < <(delivered)
# Both carry the label event=store_failing; told apart by their text.
failing=$(grep -c "cannot save its state" "$dir/out.jsonl" || true)
recovered=$(grep -c "saves its state again" "$dir/out.jsonl" || true)

cpu=$(python3 -c "print(f'{($t1 - $t0) / $hz / $DURATION * 100:.2f}')")
echo
echo "| while full for | daemon CPU | log lines written | log bytes written | delivered after space returned | delivered twice | store_failing / store_recovered notifications |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
echo "| $DURATION s | $cpu % of one core ($((t1 - t0)) ticks) | $((l1 - l0)) | $((b1 - b0)) | $got of $n | $twice | $failing / $recovered |"
say "what the daemon logged about the store:"
grep -E "cannot save state|works again|store" "$dir/daemon.log" | sed 's/^/    /' | head -10 >&2
