#!/usr/bin/env bash
# One message to N recipients (default 500): `alerter send @everyone` versus
# a shell loop of `smbclient -M`, on loopback inside a network namespace of
# its own (needs root, iproute2 and smbclient). The recipients are one
# `alerter listen` bound to N loopback ports, with names from a static map.
#
#   cargo build --release && sudo bash bench/messenger-fanout.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${N:-500}
RUNS=${RUNS:-5}
MSG="The file server goes down at 18:00 for the weekly backup. Save your work."
need_alerter
bench_setup fanout
bench_netns

{
  echo "alerter: { name: BENCH, state_dir: $dir/state }"
  echo "transports:"
  echo "  popup:"
  echo "    type: messenger"
  echo "    dns: false"
  echo "    hosts:"
  for i in $(seq 0 $((N - 1))); do echo "      R$i: 127.0.0.1:$((20000 + i))"; done
  echo "subscribers:"
  for i in $(seq 0 $((N - 1))); do echo "  r$i: { machine: R$i }"; done
  echo "groups:"
  echo "  everyone:"
  echo "    members: [$(seq -s, -f 'r%g' 0 $((N - 1)))]"
} > "$dir/alerter.yaml"
smbclient_conf ADMINPC

ports=()
for i in $(seq 0 $((N - 1))); do ports+=(-p $((20000 + i))); done
# Every recipient is on one address here, as no LAN has them: the
# per-address limits a listener sets for hostile peers are lifted.
ip netns exec "$ns" "$ALERTER" listen --name BENCH --bind 127.0.0.1 "${ports[@]}" --datagram-port 0 --name-port 0 \
  --max-per-peer "$N" --max-connections "$N" --peer-messages 0 --peer-bytes 0 --json --no-desktop --history /dev/null > "$dir/received.jsonl" 2> "$dir/listen.log" &
pids+=("$!")
for _ in $(seq 1 200); do
  listening=$(ip netns exec "$ns" awk '$4 == "0A"' /proc/net/tcp | wc -l)
  [ "$listening" -ge "$N" ] && break
  sleep 0.05
done

received() { grep -c '"text"' "$dir/received.jsonl" || true; }
now() { date +%s.%N; }

alerter_times=()
for run in $(seq 1 "$RUNS"); do
  before=$(received)
  t0=$(now)
  ip netns exec "$ns" "$ALERTER" send -c "$dir/alerter.yaml" @everyone "$MSG"
  t1=$(now)
  for _ in $(seq 1 100); do [ "$(received)" -ge $((before + N)) ] && break; sleep 0.02; done
  got=$(( $(received) - before ))
  [ "$got" -eq "$N" ] || { echo "alerter send run $run: $got of $N recipients reached" >&2; exit 1; }
  alerter_times+=("$(echo "$t1 - $t0" | bc -l)")
done

before=$(received)
t0=$(now)
ip netns exec "$ns" bash -c "
  for i in \$(seq 0 $((N - 1))); do
    printf '%s' '$MSG' | smbclient -s '$client_conf' -M R\$i -I 127.0.0.1 -p \$((20000 + i)) -U admin -N > /dev/null 2>&1
  done"
t1=$(now)
for _ in $(seq 1 100); do [ "$(received)" -ge $((before + N)) ] && break; sleep 0.02; done
got=$(( $(received) - before ))
[ "$got" -eq "$N" ] || { echo "smbclient loop: $got of $N recipients reached" >&2; exit 1; }
smb=$(echo "$t1 - $t0" | bc -l)

median=$(printf '%s\n' "${alerter_times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
printf '\nOne message to %d recipients on loopback (every recipient reached in every run):\n' "$N"
printf '  alerter send @everyone      median %.3f s of %d runs (%s)\n' "$median" "$RUNS" "$(printf '%.3f ' "${alerter_times[@]}")"
printf '  shell loop of smbclient -M  %.3f s\n' "$smb"
printf '  speed-up                    %.0fx\n' "$(echo "$smb / $median" | bc -l)"
