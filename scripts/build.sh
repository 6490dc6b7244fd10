#!/usr/bin/env bash
# Set up (idempotent), then configure and build moescale (Release, all cores)
# into build/: build/moescale and, next to it, build/moescale-train (the trainer,
# the only program that loads LibTorch). Where the CUDA toolkit is installed
# (/usr/local/cuda/bin/nvcc, $CUDA_HOME/bin/nvcc or nvcc on the PATH) the trainer
# is built able to train on CUDA GPUs; no GPU is needed to build it, and without
# one it trains on CPU. MOESCALE_CUDA=0 or 1 overrides the detection;
# MOESCALE_CMAKE_ARGS passes more options to CMake. Arguments name targets to
# build instead of everything (scripts/example.sh builds only the two programs).
# Usage: scripts/build.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${MOESCALE_SKIP_SETUP:-}" ] || bash scripts/setup.sh

cuda_toolkit() {
  [ -x /usr/local/cuda/bin/nvcc ] || { [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; } ||
    command -v nvcc >/dev/null
}
cuda=${MOESCALE_CUDA:-}
if [ -z "$cuda" ]; then
  if cuda_toolkit; then cuda=1; else cuda=0; fi
fi
cuda_flag=-DMOESCALE_CUDA=OFF
[ "$cuda" = 1 ] && cuda_flag=-DMOESCALE_CUDA=ON

generator=()
command -v ninja >/dev/null && [ ! -f build/Makefile ] && generator=(-G Ninja)
# shellcheck disable=SC2086
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$cuda_flag" \
  ${MOESCALE_CMAKE_ARGS:-} >/dev/null
targets=()
[ $# -gt 0 ] && targets=(--target "$@")
cmake --build build -j "$(nproc)" "${targets[@]}"
