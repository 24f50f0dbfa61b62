#!/usr/bin/env bash
# Where does roomcast spend its time in one benchmark scenario? Starts the
# server pinned to core 1, samples it with `perf record` (or, without perf,
# runs it under `valgrind --tool=callgrind`, much slower) while
# `roomcast bench` loads it from core 0, then prints the top entries.
#
#   bash benches/profile.sh echo -c 100 -s 20          # against `roomcast echo`
#   bash benches/profile.sh broadcast -n 1000 -p 4     # against `roomcast serve` /pubsub/bench
#
# Environment: PROFILE_SECONDS (default 5), PROFILE_TOP (default 25).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,9p' "$0"; exit 2; }
scenario=$1
shift
secs=${PROFILE_SECONDS:-5}
top=${PROFILE_TOP:-25}
bin=target/release/roomcast
out=target/bench-compare/profile
mkdir -p "$out"
# The release binary keeps its symbol table (only debug info is stripped),
# which is all `perf report --sort symbol` needs.
cargo build --release --quiet --bin roomcast
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Per-address limits off: all the load comes from one loopback address.
no_limits="--max-connections-per-ip 0 --handshake-rate-per-ip 0"
case "$scenario" in
  broadcast) server=(serve --rate 1e9 --burst 1e9 $no_limits); path=/pubsub/bench ;;
  *) server=(echo $no_limits); path=/ ;;
esac

if command -v perf >/dev/null && perf record -q -o /dev/null -- true 2>/dev/null; then
  taskset -c 1 "$bin" "${server[@]}" --listen "127.0.0.1:$port" >"$out/server.log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  sleep 0.5
  taskset -c 0 "$bin" bench "$scenario" "$@" --url "ws://127.0.0.1:$port$path" --warmup 1 \
    --duration "$secs" --server-pid "$pid" >"$out/bench.txt" &
  bench=$!
  sleep 1
  perf record -q -F 2999 -g -p "$pid" -o "$out/perf.data" -- sleep "$secs" 2>/dev/null
  wait "$bench"
  tail -n +2 "$out/bench.txt" | grep -v '^{'
  perf report -i "$out/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | awk '{printf "%8s  %s %s\n", $1, $2, $3}' >"$out/symbols.txt"
  awk '{sub("%", "", $1); if ($2 == "[k]") k += $1; else u += $1}
       END {printf "# server time: %.0f%% kernel, %.0f%% user space\n", k, u}' "$out/symbols.txt"
  echo "# top $top symbols by self time (server process, kernel included):"
  head -n "$top" "$out/symbols.txt"
  echo "# top $top user-space symbols:"
  grep -F '[.]' "$out/symbols.txt" | head -n "$top"
else
  taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
    "$bin" "${server[@]}" --listen "127.0.0.1:$port" >"$out/server.log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  sleep 3
  taskset -c 0 "$bin" bench "$scenario" "$@" --url "ws://127.0.0.1:$port$path" --warmup 1 \
    --duration "$secs" | grep -v '^{'
  kill -INT "$pid"
  wait "$pid" || true
  callgrind_annotate "$out/callgrind.out" 2>/dev/null | head -n $((top + 20))
fi
