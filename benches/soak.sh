#!/usr/bin/env bash
# roomcast bench soak against a fresh server (docs/reliability.md):
#
#   bash benches/soak.sh [SECONDS=60] [extra `roomcast bench soak` flags]
#
# Starts `roomcast serve` (release build, 2 workers, its own SQLite file in a
# scratch directory, short heartbeat and handshake timeouts so half-open
# peers and slowloris are answered within the run), runs the soak against
# it with --server-pid, then stops the server with SIGTERM and checks that it
# exits within its --shutdown-timeout. Exit status: the soak's (non-zero on
# any loss, duplicate, leak or missing answer), or 1 if the shutdown fails.
# Environment: SOAK_OUT (directory for the chart, samples and logs; default
# a scratch directory, removed on success), SOAK_WORKERS (2).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
workers="${SOAK_WORKERS:-2}"
out="${SOAK_OUT:-}"
scratch="$(mktemp -d)"
keep_scratch=0
if [ -z "$out" ]; then
    out="$scratch"
else
    mkdir -p "$out"
fi

cargo build --release --quiet --bin roomcast
bin="target/release/roomcast"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

"$bin" serve --listen "127.0.0.1:$port" --store "sqlite:$scratch/soak.db" --workers "$workers" \
    --handshake-timeout 3 --ping-interval 5 --pong-timeout 5 --shutdown-timeout 10 \
    >"$out/server.log" 2>&1 &
pid=$!
cleanup() {
    kill -KILL "$pid" 2>/dev/null || true
    if [ "$keep_scratch" = 0 ]; then rm -rf "$scratch"; fi
}
trap cleanup EXIT

for _ in $(seq 100); do
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
done

status=0
"$bin" bench soak --url "ws://127.0.0.1:$port/ws" --duration "$seconds" --server-pid "$pid" \
    --handshake-timeout 3 --chart "$out/soak.svg" --samples "$out/samples.json" "$@" \
    | tee "$out/soak.txt" || status=$?

# SIGTERM: a graceful exit within --shutdown-timeout.
kill -TERM "$pid"
started=$SECONDS
while kill -0 "$pid" 2>/dev/null; do
    if [ $((SECONDS - started)) -gt 12 ]; then
        echo "soak: the server did not exit within its shutdown timeout after SIGTERM" >&2
        status=1
        break
    fi
    sleep 0.1
done
if wait "$pid"; then
    echo "soak: server exited cleanly $((SECONDS - started)) s after SIGTERM"
else
    echo "soak: server exited with status $? after SIGTERM" >&2
    status=1
fi

if [ "$status" != 0 ]; then
    keep_scratch=1
    echo "soak FAILED; server log and results kept in $out" >&2
    tail -n 30 "$out/server.log" >&2 || true
fi
exit "$status"
