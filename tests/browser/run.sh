#!/usr/bin/env bash
# The browser tests: Playwright (Python, pinned in requirements.txt, in a
# local venv) driving Debian's Chromium against the real roomcast binary.
# Called by .ci/test.sh; runs alone too: bash tests/browser/run.sh [pytest args]
#
# Playwright never downloads a browser here: the tests launch
# /usr/bin/chromium (override with CHROMIUM=...). Screenshots of the page
# land in tests/browser/screenshots/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)

# Debian packages, only when missing (as in .ci/test.sh).
missing=()
for p in chromium openssl python3 python3-venv; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo_=""
    [ "$(id -u)" -ne 0 ] && sudo_=sudo
    $sudo_ apt-get update
    $sudo_ apt-get install -y --no-install-recommends "${missing[@]}"
fi

# The venv, rebuilt when requirements.txt changes.
venv=.venv
stamp="$venv/requirements.sha256"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt
    echo "$want" >"$stamp"
fi
# Playwright's Python package talks to its own bundled Node driver; make
# sure that runs on this machine before blaming the tests.
"$venv/bin/python" -m playwright --version

(cd "$root" && cargo build --release --quiet)
export ROOMCAST_BIN="${CARGO_TARGET_DIR:-$root/target}/release/roomcast"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
"$CHROMIUM" --version

exec "$venv/bin/python" -m pytest -p no:cacheprovider -v "$@"
