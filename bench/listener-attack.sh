#!/usr/bin/env bash
# `alerter listen` under a connection flood: 2,000 TCP connections to port
# 139 held open with NetBIOS keep-alives (each opened with a session request,
# reopened at once when closed), from 1 or 200 source addresses, in a network
# namespace of its own. Meanwhile a legitimate `smbclient -M` from another
# address sends a message every second; the script reports how long each took
# to reach the listener's output, and the listener's peak RSS (VmHWM) and CPU
# time over the attack.
#
#   cargo build --release -p alerter && sudo bash bench/listener-attack.sh
#
# Environment: SECONDS_=20 (attack length) CONNECTIONS=2000 SOURCES="1 200"
# NOFILE= (an open-file limit for the listener, e.g. 64) ALERTER=path/to/alerter
# KEEP=1. Needs root, iproute2, python3, smbclient.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
ALERTER=${ALERTER:-${CARGO_TARGET_DIR:-target}/release/alerter}
[ -x "$ALERTER" ] || die "no $ALERTER: cargo build --release -p alerter"
LENGTH=${SECONDS_:-20}
CONNECTIONS=${CONNECTIONS:-2000}
bench_setup listener-attack
ns="alt-attack-$$"
ip netns add "$ns"
trap 'ip netns del "$ns" 2> /dev/null; bench_cleanup' EXIT
ip -n "$ns" link set lo up
printf '[global]\nnetbios name = ALICE\n' > "$dir/smb.conf"
ticks=$(getconf CLK_TCK)

for sources in ${SOURCES:-1 200}; do
  limit=""
  [ -n "${NOFILE:-}" ] && limit="ulimit -n $NOFILE;"
  ip netns exec "$ns" sh -c "$limit exec \"\$0\" listen --json --no-desktop --history /dev/null --name BOB --name-port 0" "$ALERTER" \
    > "$dir/listen.out" 2> "$dir/listen.err" &
  shpid=$!
  pids+=("$shpid")
  for _ in $(seq 1 100); do grep -q listening "$dir/listen.err" 2> /dev/null && break; sleep 0.1; done
  lpid=$shpid
  stat0=$(awk '{print $14+$15}' "/proc/$lpid/stat")
  ip netns exec "$ns" python3 tests/fixtures/hold_connections.py --connections "$CONNECTIONS" --sources "$sources" --called BOB \
    > "$dir/attack.out" 2>&1 &
  apid=$!
  pids+=("$apid")
  for _ in $(seq 1 600); do grep -q ready "$dir/attack.out" && break; sleep 0.1; done
  worst=0
  lat=()
  for i in $(seq 1 "$LENGTH"); do
    t0=$(date +%s%N)
    echo "legit $sources $i" | ip netns exec "$ns" smbclient -s "$dir/smb.conf" -M BOB -I 127.0.0.1 -U alice -N > /dev/null 2>&1 || true
    while ! grep -q "\"legit $sources $i" "$dir/listen.out"; do
      sleep 0.01
      [ $(( ($(date +%s%N) - t0) / 1000000 )) -gt 10000 ] && break
    done
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    lat+=("$ms")
    [ "$ms" -gt "$worst" ] && worst=$ms
    sleep 1
  done
  stat1=$(awk '{print $14+$15}' "/proc/$lpid/stat")
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$lpid/status")
  attack=$(tail -1 "$dir/attack.out")
  kill "$apid" "$lpid" 2> /dev/null || true
  wait "$apid" "$lpid" 2> /dev/null || true
  cpu=$(echo "scale=2; ($stat1 - $stat0) / $ticks" | bc)
  delivered=$(grep -c '"legit ' "$dir/listen.out" || true)
  echo "sources=$sources connections=$CONNECTIONS nofile=${NOFILE:-default} seconds=$LENGTH delivered=$delivered/$LENGTH" \
    "latency_ms=[${lat[*]}] worst_ms=$worst listener_peak_rss_kib=$hwm listener_cpu_s=$cpu attacker=$attack"
done
