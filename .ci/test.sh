#!/usr/bin/env bash
# The project's test command: formatting, lints, docs, unit/integration
# tests, Autobahn conformance (when present), the browser tests (Chromium,
# about 16 s; the first run adds ~30 s for its venv) and a short fuzzing pass.
# Runs from any directory. On 2 cores with warm build caches it took 15 min,
# 12.5 of them Autobahn; from cold add the builds, installing cargo-fuzz
# (~2 min) and the sanitizer build of the fuzz targets (~4 min).
#
# Environment:
#   FUZZ_SECONDS  seconds per fuzz target (default 20, see fuzz/smoke.sh)
#   SOAK_SECONDS  length of the soak run (default 60, see benches/soak.sh)
set -euo pipefail

cd "$(dirname "$0")/.."
start=$SECONDS

section() {
    printf '\n==== %s ==== (%ds elapsed)\n' "$*" $((SECONDS - start))
}

section "Debian packages"
# Installed only if missing. Rust itself (with clippy and rustfmt) is
# expected on PATH; autobahn/run.sh makes a Python venv for its client.
packages=()
[ -f autobahn/run.sh ] && packages+=(python3 python3-venv)
# autobahn/tls.sh: socat relays the TLS cases, openssl makes their certificate.
[ -f autobahn/tls.sh ] && packages+=(socat openssl)
# tests/browser: Debian's Chromium, driven by Playwright from a venv.
[ -f tests/browser/run.sh ] && packages+=(chromium openssl python3 python3-venv)
# tests/redis_*.rs start their own redis-server processes (Debian's, 7.0 on
# bookworm; any Redis 6 or newer will do).
[ -f tests/redis_nodes.rs ] && packages+=(redis-server)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo_=""
    [ "$(id -u)" -ne 0 ] && sudo_=sudo
    $sudo_ apt-get update
    $sudo_ apt-get install -y --no-install-recommends "${missing[@]}"
else
    echo "nothing to install"
fi

section "rustfmt"
cargo fmt --all -- --check
# The fuzz crate is its own workspace, so `--all` above does not reach it
# (and `--all` there would reach the main crate again through its path).
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

section "clippy"
cargo clippy --all-targets -- -D warnings

section "rustdoc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

section "tests (debug)"
cargo test --all-targets

if [ -f autobahn/run.sh ]; then
    section "Autobahn TestSuite"
    bash autobahn/run.sh
else
    section "Autobahn TestSuite: skipped (autobahn/run.sh not present)"
fi

section "browser tests (Chromium + Playwright)"
bash tests/browser/run.sh

section "/metrics through a Prometheus parser, and the Grafana dashboard"
bash tests/metrics/run.sh

section "soak (${SOAK_SECONDS:-60} s: members, churn, crowds, hostile clients, faults, leaks)"
bash benches/soak.sh "${SOAK_SECONDS:-60}"

section "fuzz smoke"
bash fuzz/smoke.sh

section "all passed in $((SECONDS - start))s"
