#!/usr/bin/env bash
# Builds moescale with CUDA and runs its tests on a lent GPU machine, in one
# call; with --bench, then runs bench/gpu_mfu.sh. That machine has the CUDA
# toolkit, CMake, ninja, a C++ compiler and a CUDA torch (python3) but none of the
# Debian -dev packages and no network: scripts/gpu-prepare.sh, run beforehand on
# a Debian 12 machine with network, puts them as .deb files in .gpu/debs, carried
# along. Here they are unpacked with `dpkg -x` into .gpu/root, which CMake
# searches instead of the system (CMAKE_FIND_ROOT_PATH, ONLY), and the programs
# find their libraries there through RPATH (old-style, so that it covers the
# libraries' own dependencies too). The build goes to build-gpu/.
#
# Environment: MOESCALE_PYTHON (default: python3 on the PATH, the one with torch).
set -euo pipefail
cd "$(dirname "$0")/.."

bench=0
[ "${1:-}" = --bench ] && bench=1
ROOT="$PWD/.gpu/root"
LIB="$ROOT/usr/lib/x86_64-linux-gnu"
if ! ls .gpu/debs/*.deb >/dev/null 2>&1; then
  echo "error: no .gpu/debs: run scripts/gpu-prepare.sh on a Debian 12 machine first and" \
    "carry .gpu" >&2
  exit 1
fi

unpack() {
  [ -f "$ROOT/.unpacked" ] && [ "$ROOT/.unpacked" -nt .gpu/debs/PACKAGES ] && return 0
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  local deb
  for deb in .gpu/debs/*.deb; do dpkg -x "$deb" "$ROOT"; done
  # The links dpkg's update-alternatives would have made for BLAS and LAPACK.
  local name dir
  for name in libblas.so.3 liblapack.so.3 libblas.so liblapack.so; do
    [ -e "$LIB/$name" ] && continue
    for dir in openblas-pthread blas lapack atlas; do
      if [ -e "$LIB/$dir/$name" ]; then
        ln -sf "$dir/$name" "$LIB/$name"
        break
      fi
    done
  done
  # CMake package files name the install prefix /usr (Ceres names BLAS and LAPACK by
  # absolute path): point them all at the unpacked tree, or they send the build to
  # the system's /usr.
  find "$ROOT/usr/lib" "$ROOT/usr/share" -name '*.cmake' -path '*cmake*' -print0 |
    xargs -0 sed -i -e "s|\"/usr/|\"$ROOT/usr/|g" -e "s|;/usr/|;$ROOT/usr/|g" \
      -e "s|\"/usr\"|\"$ROOT/usr\"|g"
  touch "$ROOT/.unpacked"
}

unpack
python=${MOESCALE_PYTHON:-$(command -v python3)}
echo "gpu-build: $(nvcc --version 2>/dev/null | tail -1 || echo 'no nvcc'); torch from $python" >&2
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || true

cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOESCALE_CUDA=ON \
  -DMOESCALE_PYTHON="$python" \
  -DCMAKE_FIND_ROOT_PATH="$ROOT" -DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=ONLY \
  -DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY -DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY \
  "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--disable-new-dtags -Wl,-rpath,$LIB:$LIB/openblas-pthread" \
  ${MOESCALE_CMAKE_ARGS:-} >/dev/null
cmake --build build-gpu -j"$(nproc)"
build-gpu/moescale version
ctest --test-dir build-gpu --output-on-failure -j"$(nproc)"
if [ "$bench" = 1 ]; then BUILD_DIR=build-gpu bench/gpu_mfu.sh; fi
