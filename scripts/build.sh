#!/usr/bin/env bash
# Set up (idempotent), then configure and build moescale (Release, all cores)
# into build/. The program is build/moescale.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
generator=()
command -v ninja >/dev/null && [ ! -f build/Makefile ] && generator=(-G Ninja)
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release ${MOESCALE_CMAKE_ARGS:-} >/dev/null
cmake --build build -j "$(nproc)"
