#!/usr/bin/env bash
# What an idle daemon costs: `alerter run` on its embedded default config
# (the README's first command: this machine's disks, checked every minute,
# and the auth log), its state in a temporary directory ($STATE_DIRECTORY)
# and the auth log a file of its own ($ALERTER_AUTH_LOG), nothing happening.
# After WARMUP s (start-up, the first disk check), it reads the daemon's
# memory and CPU time over MEASURE s: resident set (VmRSS), peak (VmHWM),
# CPU (user + system clock ticks of every thread) and context switches of
# every thread (each one a wake-up; an idle daemon should hardly wake).
#
#   cargo build --release -p alerter && bash bench/idle.sh
#
# Environment: WARMUP=10 MEASURE=60 (s) ALERTER=path/to/alerter (default
# $CARGO_TARGET_DIR or target/, release) KEEP=1 (keep the temp dir).
#
# Output: a markdown table row on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

WARMUP=${WARMUP:-10}
MEASURE=${MEASURE:-60}

. bench/lib.sh
need_alerter
[[ "$WARMUP" =~ ^[0-9]+$ && "$MEASURE" =~ ^[0-9]+$ && "$MEASURE" -gt 0 ]] || die "WARMUP and MEASURE are whole seconds"

bench_setup idle
: > "$dir/auth.log"
STATE_DIRECTORY="$dir/state" ALERTER_AUTH_LOG="$dir/auth.log" "$ALERTER" run > "$dir/out.jsonl" 2> "$dir/daemon.log" &
pid=$!
pids+=("$pid")

# CPU clock ticks (user + system) of the whole process.
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
# Context switches (voluntary + involuntary) of all its threads.
switches() {
  cat /proc/"$pid"/task/*/status 2> /dev/null \
    | awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ {n += $2} END {print n + 0}'
}
kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }

for _ in $(seq 1 300); do
  grep -q "alerter started" "$dir/daemon.log" 2> /dev/null && break
  kill -0 "$pid" 2> /dev/null || { cat "$dir/daemon.log" >&2; die "alerter exited at start"; }
  sleep 0.1
done
grep -q "alerter started" "$dir/daemon.log" || die "alerter did not start within 30 s"
say "started; idle for ${WARMUP}s, then measuring for ${MEASURE}s"
sleep "$WARMUP"
t0=$(ticks)
s0=$(switches)
sleep "$MEASURE"
t1=$(ticks)
s1=$(switches)
kill -0 "$pid" 2> /dev/null || die "alerter exited while idle"
hz=$(getconf CLK_TCK)
threads=$(ls "/proc/$pid/task" | wc -l)
rss=$(kib VmRSS)
hwm=$(kib VmHWM)

echo "| state | threads | RSS (MiB) | peak RSS (MiB) | CPU over ${MEASURE} s | CPU share | wake-ups/s |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
awk -v t="$((t1 - t0))" -v hz="$hz" -v m="$MEASURE" -v s="$((s1 - s0))" -v th="$threads" -v rss="$rss" -v hwm="$hwm" 'BEGIN {
  printf "| idle, embedded default config | %d | %.1f | %.1f | %d ms | %.3f %% | %.1f |\n",
    th, rss / 1024, hwm / 1024, t * 1000 / hz, t / hz / m * 100, s / m
}'
