#!/usr/bin/env bash
# The Autobahn TestSuite's server cases over TLS. kosoku has no TLS of its
# own, so an independent TLS client relays for it: socat (OpenSSL) accepts
# kosoku's plain connections and opens a verified TLS connection to
# `roomcast echo --tls-cert --tls-key` for each. Every selected case is
# checked against expected-server.json.
#
# AUTOBAHN_TLS_CASES selects cases (kosoku -i globs); the default covers
# sections 1-10 (there is no 8) and the first compression section of 12 and 13 (a couple of
# minutes); "all" runs all 517.
set -euo pipefail
cd "$(dirname "$0")"
source ./setup.sh
if ! command -v socat >/dev/null; then
  sudo_=""
  [ "$(id -u)" -ne 0 ] && sudo_=sudo
  $sudo_ apt-get update
  $sudo_ apt-get install -y --no-install-recommends socat
fi
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
  for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null && return
    sleep 0.1
  done
}
tls_port=$(free_port)
plain_port=$(free_port)
out=reports/tls
rm -rf "$out"
mkdir -p "$out"

# A throwaway self-signed certificate (not a CA: rustls-based clients refuse
# a CA certificate as a server's own).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -addext "basicConstraints=critical,CA:FALSE" \
  -keyout "$out/key.pem" -out "$out/cert.pem" 2>"$out/openssl.log"

# The same flags as run.sh, plus TLS.
RUST_LOG=warn "$root/target/release/roomcast" echo --listen "127.0.0.1:$tls_port" \
  --tls-cert "$out/cert.pem" --tls-key "$out/key.pem" \
  --max-message-size $((64 * 1024 * 1024)) --ping-interval 0 --deflate-threshold 0 \
  --max-connections-per-ip 0 --handshake-rate-per-ip 0 >"$out/server.log" 2>&1 &
server=$!
# socat verifies the certificate against it (and 127.0.0.1 against its SAN).
socat TCP-LISTEN:"$plain_port",bind=127.0.0.1,fork,reuseaddr,nodelay \
  OPENSSL:127.0.0.1:"$tls_port",cafile="$out/cert.pem",nodelay 2>"$out/socat.log" &
relay=$!
trap 'kill $relay $server 2>/dev/null || true' EXIT
wait_port "$tls_port"
wait_port "$plain_port"

cases=${AUTOBAHN_TLS_CASES:-"1.* 2.* 3.* 4.* 5.* 6.* 7.* 9.* 10.* 12.1.* 13.1.*"}
select=()
args=()
if [ "$cases" != all ]; then
  select=(--select "$cases")
  for c in $cases; do args+=(-i "$c"); done
fi
parallel=${AUTOBAHN_PARALLEL:-2}
echo "autobahn: server cases over TLS (${cases}) via socat 127.0.0.1:$plain_port -> roomcast echo wss://127.0.0.1:$tls_port (-p $parallel)"
started=$SECONDS
"$venv/bin/kosoku" -m fuzzingclient "127.0.0.1:$plain_port" -p "$parallel" "${args[@]}" \
  -o "$out/server" >"$out/kosoku.log" 2>&1 || true
tail -n 2 "$out/kosoku.log"

# As in run.sh: cases that did not pass run again alone (kosoku's ~20 s
# limit per case); a real failure fails again.
retry=$(python3 check.py "${select[@]}" --failed expected-server.json "$out/server/index.json")
if [ -n "$retry" ]; then
  echo "autobahn: re-running alone: $retry"
  args=()
  for c in $retry; do args+=(-i "$c"); done
  "$venv/bin/kosoku" -m fuzzingclient "127.0.0.1:$plain_port" -p 1 "${args[@]}" \
    -o "$out/server-retry" >"$out/kosoku-retry.log" 2>&1 || true
  python3 check.py --merge "$out/server/index.json" "$out/server-retry/index.json"
fi
echo "autobahn: TLS run took $((SECONDS - started)) s"
python3 check.py "${select[@]}" expected-server.json "$out/server/index.json"
