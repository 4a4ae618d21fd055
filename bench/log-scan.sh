#!/usr/bin/env bash
# Scanning a 1,000,000-line syslog-style file with 1 pattern and with 50,
# side by side: alerter's log matcher (`alerter scan -c`), LC_ALL=C grep -cE,
# swatchdog --examine and fail2ban-regex, on the same file and patterns,
# each pinned to one core. Checks that every tool counts the same matches.
#
#   cargo build --release && bash bench/log-scan.sh          # LINES=1000000 RUNS=5
#
# Needs: grep, swatch, fail2ban, python3 (apt-get install swatch fail2ban).
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${LINES:-1000000}
RUNS=${RUNS:-5}
ALERTER=${ALERTER:-target/release/alerter}
DIR=${DIR:-target/log-bench}
[ -x "$ALERTER" ] || { echo "build first: cargo build --release" >&2; exit 1; }
if [ ! -f "$DIR/syslog.log" ] || [ "$(wc -l < "$DIR/syslog.log")" != "$LINES" ]; then
  python3 bench/gen-syslog.py "$DIR" "$LINES"
fi
DIR=$(cd "$DIR" && pwd)
FILE=$DIR/syslog.log
PIN="taskset -c 0"
cat "$FILE" > /dev/null   # in the page cache for everyone

# Median wall time of RUNS runs of a command (seconds); the last run's
# output goes to $DIR/out (command substitution runs in a subshell).
median() {
  local times=()
  for _ in $(seq "$RUNS"); do
    local s e
    s=$(date +%s.%N)
    "$@" > "$DIR/out"
    e=$(date +%s.%N)
    times+=("$(echo "$e - $s" | bc -l)")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
once() { RUNS=1 median "$@"; }
rate() { echo "$LINES / $1 / 1000000" | bc -l | xargs printf '%.1f'; }

echo "| patterns | tool | time | million lines/s | matching lines |"
echo "| --- | --- | --- | --- | --- |"
for n in 1 50; do
  PATS=$DIR/patterns-$n.txt
  t=$(median $PIN "$ALERTER" scan -c -f "$PATS" "$FILE"); OUT=$(cat "$DIR/out"); a_count=$OUT; a_time=$t
  echo "| $n | alerter scan | $(printf '%.3f' "$t") s | $(rate "$t") | $OUT |"
  t=$(median env LC_ALL=C $PIN grep -cEf "$PATS" "$FILE"); OUT=$(cat "$DIR/out"); g_count=$OUT; g_time=$t
  echo "| $n | LC_ALL=C grep -cE | $(printf '%.3f' "$t") s | $(rate "$t") | $OUT |"
  t=$(once sh -c "$PIN swatchdog --config-file=$DIR/swatch-$n.conf --examine=$FILE 2>/dev/null | grep -c '^[A-Z][a-z][a-z] '"); OUT=$(cat "$DIR/out"); s_count=$OUT
  echo "| $n | swatchdog --examine | $(printf '%.3f' "$t") s | $(rate "$t") | $OUT |"
  t=$(once sh -c "$PIN fail2ban-regex $FILE $DIR/fail2ban-$n.conf 2>&1 | sed -n 's/^Lines: .* \([0-9]*\) matched.*/\1/p'"); OUT=$(cat "$DIR/out"); f_count=$OUT
  echo "| $n | fail2ban-regex | $(printf '%.3f' "$t") s | $(rate "$t") | $OUT |"
  if [ "$a_count" != "$g_count" ] || [ "$a_count" != "$s_count" ] || [ "$a_count" != "$f_count" ]; then
    echo "MISMATCH with $n patterns: alerter $a_count, grep $g_count, swatchdog $s_count, fail2ban $f_count" >&2
    exit 1
  fi
  echo "| $n | alerter vs grep | $(echo "$a_time / $g_time" | bc -l | xargs printf '%.2f')x the time | | |"
done
