#!/usr/bin/env bash
# Runs the Autobahn TestSuite (through kosoku, which executes the suite's own
# case files) against `roomcast echo`, then checks every case against
# expected-server.json: any case that is not as expected fails the run.
set -euo pipefail
cd "$(dirname "$0")"
source ./setup.sh
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -rf reports
mkdir -p reports

# Messages up to 16 MiB (9.x); pings off so they never interleave with cases.
# Per-address limits off: the suite opens hundreds of connections from one
# address in seconds (the ping-rate limit stays at its default).
# --deflate-threshold 0 compresses every message: kosoku 0.1.0's compression
# cases (12.x, 13.x) break on an uncompressed message in a compressed
# session, which RFC 7692 allows (see docs/deflate.md).
RUST_LOG=warn "$root/target/release/roomcast" echo --listen "127.0.0.1:$port" \
  --max-message-size $((64 * 1024 * 1024)) --ping-interval 0 --deflate-threshold 0 \
  --max-connections-per-ip 0 --handshake-rate-per-ip 0 >reports/server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done

parallel=${AUTOBAHN_PARALLEL:-2}
echo "autobahn: all server cases against roomcast echo on 127.0.0.1:$port (-p $parallel)"
"$venv/bin/kosoku" -m fuzzingclient "127.0.0.1:$port" -p "$parallel" \
  -o reports/server >reports/kosoku-server.log 2>&1 || true
tail -n 2 reports/kosoku-server.log

# kosoku gives up on a case after ~20 s whatever the case allows; long
# compression cases can hit that on a loaded 2-core machine. Cases that did
# not pass are run again one at a time; a real failure fails again.
retry=$(python3 check.py --failed expected-server.json reports/server/index.json)
if [ -n "$retry" ]; then
  echo "autobahn: re-running alone: $retry"
  args=()
  for c in $retry; do args+=(-i "$c"); done
  "$venv/bin/kosoku" -m fuzzingclient "127.0.0.1:$port" -p 1 "${args[@]}" \
    -o reports/server-retry >reports/kosoku-server-retry.log 2>&1 || true
  python3 check.py --merge reports/server/index.json reports/server-retry/index.json
fi

python3 check.py expected-server.json reports/server/index.json

# The same server cases over TLS (a selection; tls.sh says which).
if [ -f tls.sh ]; then
  bash tls.sh
fi

if [ -f client.sh ]; then
  bash client.sh
fi
