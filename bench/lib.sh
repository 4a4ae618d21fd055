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
