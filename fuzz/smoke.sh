#!/usr/bin/env bash
# A short fuzzing pass for CI: replays the committed regression inputs, then
# runs every target for FUZZ_SECONDS (default 20) from its seeds. Fails on
# any crash, panic, sanitizer report, leak or timeout.
#
# Targets: handshake, frame, connection, inflate, http_api, resp (the
# Redis engine's RESP3 parser), commands (the room protocol's JSON
# commands), defer_accept (the one unsafe module's socket option);
# `cargo fuzz list` finds them all.
#
#   bash fuzz/smoke.sh                      # all targets, 20 s each
#   FUZZ_SECONDS=5 FUZZ_TARGETS="frame" bash fuzz/smoke.sh
#
# Needs cargo-fuzz (installed here if missing). cargo-fuzz builds with
# nightly-only flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them.
set -euo pipefail

cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

seconds=${FUZZ_SECONDS:-20}
# Per-input time limit: anything slower is reported as a hang.
input_timeout=${FUZZ_INPUT_TIMEOUT:-10}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/smoke.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets=${FUZZ_TARGETS:-$(cargo fuzz list)}

echo "fuzz/smoke.sh: building targets: $(echo $targets)"
cargo fuzz build

failed=()
for target in $targets; do
    regressions=fuzz/regressions/$target
    if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
        echo "--- $target: replaying $(ls "$regressions" | wc -l) regression input(s)"
        if ! cargo fuzz run "$target" "$regressions" -- -runs=0 -timeout="$input_timeout"; then
            failed+=("$target (regression)")
            continue
        fi
    fi
    echo "--- $target: fuzzing for ${seconds}s"
    mkdir -p "fuzz/corpus/$target"
    dirs=("fuzz/corpus/$target")
    [ -d "fuzz/seeds/$target" ] && dirs+=("fuzz/seeds/$target")
    if ! cargo fuzz run "$target" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout="$input_timeout" -print_final_stats=1; then
        failed+=("$target")
        echo "!!! $target failed; the input is in fuzz/artifacts/$target/"
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/smoke.sh: FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzz/smoke.sh: all targets passed"
