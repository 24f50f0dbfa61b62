#!/usr/bin/env bash
# Side-by-side benchmark: roomcast against tokio-tungstenite, fastwebsockets,
# node ws, uWebSockets.js and native uWebSockets (benches/peers/), driven by
# `roomcast bench`.
#
#   bash benches/compare.sh            # full run (26 minutes or more: four rounds; it waits for a quiet machine)
#   bash benches/compare.sh --quick    # short runs (about 4 minutes)
#   bash benches/compare.sh --no-build # reuse what is built
#
# Environment: BENCH_WARMUP, BENCH_DURATION, BENCH_HOLD (seconds),
# BENCH_SERVERS / BENCH_SCENARIOS (names to keep; ';'-separated when a
# scenario name has a comma), BENCH_MORE=1 (issue 17's extra rows),
# BENCH_BASELINE (an older roomcast binary, run as roomcast-baseline),
# BENCH_IDLE (idle connections in total), BENCH_ROUNDS, BENCH_QUIET_WAIT.
# See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
  esac
done

if [ "$build" = 1 ]; then
  echo "# building roomcast and the Rust peers (release)"
  cargo build --release --quiet --bin roomcast
  for peer in tokio-tungstenite fastwebsockets; do
    cargo build --release --quiet --manifest-path "benches/peers/$peer/Cargo.toml"
  done
  echo "# building native uWebSockets (C++)"
  bash benches/peers/uwebsockets-native/build.sh >/dev/null
  echo "# installing the Node.js peers"
  for peer in node-ws uwebsockets-js; do
    (cd "benches/peers/$peer" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
  done
fi

# The unofficial uWebSockets.js build must load as a native addon here; the
# peer refuses the package's pure-JS fallback rather than measure it.
node -e "require('./benches/peers/uwebsockets-js/node_modules/@trufflesuite/uws-js-unofficial/binaries/uws_' + process.platform + '_' + process.arch + '_' + process.versions.modules + '.node')" \
  || echo "# WARNING: the uWebSockets.js native addon does not load here; its runs will fail" >&2

exec python3 benches/compare.py "$@"
