#!/usr/bin/env bash
# One popup, N times (default 200), in each of the three wire forms:
# `alerter send` by session (TCP 139), datagram (UDP 138) and RPC (UDP 135),
# beside `smbclient -M`, the tool admins use for the session form today, all
# to one `alerter listen --rpc` on loopback in a network namespace of its
# own (needs root, iproute2 and smbclient). Prints the wall time per
# message and checks that the listener showed every confirmed one.
#
#   cargo build --release && sudo bash bench/messenger-forms.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${N:-200}
MSG="The file server goes down at 18:00 for the weekly backup. Save your work."
need_alerter
bench_setup forms
bench_netns
smbclient_conf ADMINPC

ip netns exec "$ns" "$ALERTER" listen --name WS0 --bind 127.0.0.1 --name-port 0 --rpc --rpc-allow 127.0.0.0/8 \
  --peer-messages 0 --peer-bytes 0 --json --no-desktop --history /dev/null > "$dir/received.jsonl" 2> "$dir/listen.log" &
pids+=("$!")
for _ in $(seq 1 200); do
  ip netns exec "$ns" ss -Hlun 'sport = :135' | grep -q . && ip netns exec "$ns" ss -Hltn 'sport = :139' | grep -q . && break
  sleep 0.05
done

run() { # label, command...
  local label=$1; shift
  local before; before=$(wc -l < "$dir/received.jsonl")
  local t0; t0=$(date +%s.%N)
  for _ in $(seq 1 "$N"); do "$@" > /dev/null 2>&1 <<< "$MSG" || { echo "$label: a send failed" >&2; exit 1; }; done
  local t1; t1=$(date +%s.%N)
  sleep 0.5
  local shown=$(( $(wc -l < "$dir/received.jsonl") - before ))
  awk -v l="$label" -v a="$t0" -v b="$t1" -v n="$N" -v s="$shown" \
    'BEGIN { printf "%-42s %7.2f ms per message  (%d of %d shown)\n", l, (b - a) * 1000 / n, s, n }'
}

nsx() { ip netns exec "$ns" "$@"; }
run "alerter send (session, TCP 139)"       nsx "$ALERTER" send -q -I 127.0.0.1 --from ADMIN WS0
run "alerter send --datagram (UDP 138)"    nsx "$ALERTER" send -q -I 127.0.0.1 --from ADMIN --datagram WS0
run "alerter send --rpc (UDP 135)"         nsx "$ALERTER" send -q -I 127.0.0.1 --from ADMIN --rpc WS0
run "smbclient -M (session, TCP 139)"      nsx smbclient -s "$client_conf" -M WS0 -I 127.0.0.1 -N
