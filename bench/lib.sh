# Shared by the benchmark scripts: messages, a temporary directory and the
# clean-up of the children they start. Source it after `cd` to the repo:
#
#   . bench/lib.sh
#   bench_setup storm        # sets $dir, traps EXIT/INT/TERM
#   pids+=("$!")             # each child to stop at exit
#
# At exit every pid in $pids gets SIGTERM, then SIGKILL after 5 s; $dir is
# removed unless KEEP=1.

BENCH_NAME=$(basename "$0")
die() { echo "$BENCH_NAME: $*" >&2; exit 1; }
say() { echo "$BENCH_NAME: $*" >&2; }

bench_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2> /dev/null || true
  done
  [ -n "${ns:-}" ] && ip netns del "$ns" 2> /dev/null
  if [ "${KEEP:-0}" = 1 ]; then say "kept $dir"; else rm -rf "$dir"; fi
  exit "$rc"
}

# Makes $dir (/tmp/alerter-$1.XXXXXX), empties $pids and sets the traps.
bench_setup() {
  say "load average before the run: $(cut -d" " -f1-3 /proc/loadavg) (the numbers mean little on a busy machine)"
  dir=$(mktemp -d "/tmp/alerter-$1.XXXXXX")
  pids=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# The alerter binary to measure, in $ALERTER: as given, else the release
# build in $CARGO_TARGET_DIR or target/.
need_alerter() {
  ALERTER=${ALERTER:-${CARGO_TARGET_DIR:-$PWD/target}/release/alerter}
  [ -x "$ALERTER" ] || die "no alerter binary at $ALERTER (cargo build --release -p alerter, or set ALERTER=)"
}

# A network namespace of our own with loopback up, in $ns (removed at
# exit by bench_cleanup), for benchmarks that need ports 135-139.
bench_netns() {
  ns=alerter-bench-$$
  ip netns add "$ns"
  ip -n "$ns" link set lo up
}

# An smb.conf for smbclient with NetBIOS name $1 and its state in
# $dir/client; its path in $client_conf.
smbclient_conf() {
  mkdir -p "$dir/client"/{private,lock,state,cache}
  client_conf=$dir/client.conf
  cat > "$client_conf" <<CONF
[global]
   netbios name = $1
   private dir = $dir/client/private
   lock directory = $dir/client/lock
   state directory = $dir/client/state
   cache directory = $dir/client/cache
CONF
}

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts a two-node Alertmanager cluster (Debian's prometheus-alertmanager)
# on loopback: config file $1, web and gossip ports of node 1 ($2, $3) and
# node 2 ($4, $5); storage and logs in $dir. Waits until both nodes say the
# cluster is ready, or dies.
am_cluster() {
  local config=$1 w1=$2 c1=$3 w2=$4 c2=$5 i web gossip peer
  for i in 1 2; do
    if [ "$i" = 1 ]; then web=$w1 gossip=$c1 peer=$c2; else web=$w2 gossip=$c2 peer=$c1; fi
    mkdir -p "$dir/am$i"
    prometheus-alertmanager --config.file="$config" --storage.path="$dir/am$i" \
      --web.listen-address="127.0.0.1:$web" --cluster.listen-address="127.0.0.1:$gossip" \
      --cluster.advertise-address="127.0.0.1:$gossip" --cluster.peer="127.0.0.1:$peer" \
      --cluster.peer-timeout=2s 2> "$dir/am$i.log" &
    pids+=("$!")
  done
  python3 - "$w1" "$w2" <<'PY' || die "the Alertmanager cluster did not settle (see $dir/am1.log)"
import json, sys, time, urllib.request
deadline = time.time() + 60
while time.time() < deadline:
    try:
        states = [json.load(urllib.request.urlopen(f"http://127.0.0.1:{p}/api/v2/status", timeout=2))["cluster"]
                  for p in sys.argv[1:]]
        ok = all(c["status"] == "ready" and len(c["peers"]) == 2 for c in states)
    except Exception:
        ok = False
    if ok:
        sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
PY
}

# Starts one Alertmanager node (no cluster) on loopback: config file $1,
# web port $2, storage in $dir/am, log in $dir/am.log. Waits until it is
# ready.
am_single() {
  local config=$1 port=$2
  mkdir -p "$dir/am"
  prometheus-alertmanager --config.file="$config" --storage.path="$dir/am" \
    --web.listen-address="127.0.0.1:$port" --cluster.listen-address= 2> "$dir/am.log" &
  pids+=("$!")
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/-/ready" > /dev/null && return 0; sleep 0.1; done
  die "Alertmanager did not get ready (see $dir/am.log)"
}
