#!/usr/bin/env bash
# /metrics read by a real Prometheus text parser (the prometheus-client
# package's, pinned in requirements.txt, in a local venv), after traffic
# that exercises every histogram and disconnect reason; and the Grafana
# dashboard checked against what /metrics exposes. Called by .ci/test.sh.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
venv=.venv
stamp="$venv/requirements.sha256"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt
    echo "$want" >"$stamp"
fi
(cd "$root" && cargo build --release --quiet --bin roomcast)
ROOMCAST_BIN="${CARGO_TARGET_DIR:-$root/target}/release/roomcast" \
    DASHBOARD="$root/docs/grafana-dashboard.json" "$venv/bin/python" check.py
