#!/usr/bin/env bash
# User-space instructions and system calls per message, for before/after
# comparisons of the server's hot paths on a busy machine: valgrind's
# callgrind counts instructions (the same count whatever else the machine
# does), strace counts system calls. Kernel time is not in the instruction
# count; compare system calls for that.
#
#   bash benches/instructions.sh echo -c 100 -s 32 -d 16
#   bash benches/instructions.sh echo -c 100 -s 16384 -d 4 --binary
#   bash benches/instructions.sh broadcast -n 1000 -p 4 -w 8 -s 64
#   bash benches/instructions.sh connect -n 5000 --connect-concurrency 128
#
# `connect` counts per handshake: the whole run (connects, a second of
# holding, the closes), divided by the connections it opened.
#
# Environment: ROOMCAST (the binary, default target/release/roomcast),
# SECONDS_MEASURED (default 6).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,17p' "$0"; exit 2; }
scenario=$1
shift
bin=${ROOMCAST:-target/release/roomcast}
secs=${SECONDS_MEASURED:-6}
out=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$out"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
no_limits=(--max-connections-per-ip 0 --handshake-rate-per-ip 0)
case "$scenario" in
  broadcast) server=(serve --store memory --rate 1e9 --burst 1e9 "${no_limits[@]}"); path=/pubsub/bench ;;
  *) server=(echo "${no_limits[@]}"); path=/ ;;
esac
stats() { python3 -c "import json,sys,urllib.request; print(json.load(urllib.request.urlopen('http://127.0.0.1:$port/stats' if '$scenario'=='broadcast' else 'http://127.0.0.1:$port/'))['$1'])"; }

# One run under callgrind (instructions), one native under strace (calls).
measure() {
  local mode=$1
  shift
  if [ "$mode" = callgrind ]; then
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" --dump-instr=no \
      "$bin" "${server[@]}" --workers 1 --listen "127.0.0.1:$port" >"$out/server.log" 2>&1 &
  else
    "$bin" "${server[@]}" --workers 1 --listen "127.0.0.1:$port" >"$out/server.log" 2>&1 &
  fi
  pid=$!
  for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  local m0 m1
  if [ "$scenario" = connect ]; then
    # Every handshake of the run is counted: zeroed before it starts.
    m0=$(stats connections_total)
    [ "$mode" = callgrind ] && callgrind_control -z "$pid" >/dev/null
    if [ "$mode" = native ]; then
      strace -c -f -p "$pid" -o "$out/strace.txt" 2>/dev/null &
      local st=$!
      sleep 0.5
    fi
    "$bin" bench connect "$@" --url "ws://127.0.0.1:$port$path" --hold 1 --connect-timeout 300 \
      >"$out/bench.txt" 2>&1 || true
    m1=$(stats connections_total)
    if [ "$mode" = callgrind ]; then
      callgrind_control -d "$pid" >/dev/null
    else
      kill -INT "$st"; wait "$st" 2>/dev/null || true
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo $((m1 - m0))
    return
  fi
  # Load for warmup + measured time; counting starts after the warmup.
  "$bin" bench "$scenario" "$@" --url "ws://127.0.0.1:$port$path" --warmup 4 --duration "$secs" \
    --connect-timeout 120 >"$out/bench.txt" 2>&1 &
  local bench=$!
  sleep 6
  if [ "$mode" = callgrind ]; then
    callgrind_control -z "$pid" >/dev/null
    m0=$(stats messages_out); sleep "$secs"; m1=$(stats messages_out)
    callgrind_control -d "$pid" >/dev/null
    ir=$(grep -h '^summary:' "$out"/cg.*.1 | awk '{print $2}' | head -1)
  else
    strace -c -f -p "$pid" -o "$out/strace.txt" 2>/dev/null &
    local st=$!
    m0=$(stats messages_out); sleep "$secs"; m1=$(stats messages_out)
    kill -INT "$st"; wait "$st" 2>/dev/null || true
  fi
  wait "$bench" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo $((m1 - m0))
}
stats() { python3 -c "import json,urllib.request; u='http://127.0.0.1:$port/' + ('stats' if '$scenario'=='broadcast' else ''); print(json.load(urllib.request.urlopen(u))['$1'])"; }

m_cg=$(measure callgrind "$@")
ir=$(grep -h '^summary:' "$out"/cg.*.1 | awk '{print $2}' | head -1)
m_st=$(measure native "$@")
echo "scenario: $scenario $*"
unit="message out"
[ "$scenario" = connect ] && unit=handshake
awk -v ir="$ir" -v m="$m_cg" -v u="$unit" 'BEGIN { printf "instructions per %s: %.0f (%d under callgrind)\n", u, ir / m, m }'
awk -v m="$m_st" -v u="$unit" '$NF=="total" {printf "system calls per %s: %.3f (%d calls, %d units)\n", u, $(NF-2)/m, $(NF-2), m}
  $1 ~ /^[0-9.]+$/ && NF>=5 {printf "  %-16s %.3f per %s\n", $NF, $4/m, u}' "$out/strace.txt"
