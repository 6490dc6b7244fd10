#!/usr/bin/env bash
# Build, then run every test. MOESCALE_SKIP_SLOW=1 skips the tests labelled
# slow (end-to-end runs); CI runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
args=(--test-dir build --output-on-failure -j "$(nproc)")
[ -n "${MOESCALE_SKIP_SLOW:-}" ] && args+=(-LE slow)
ctest "${args[@]}"
