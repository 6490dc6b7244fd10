#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (address + undefined sanitizers) into
# build-fuzz/ and runs each for SECONDS (default 60), in turn, on the corpus in
# tests/fuzz/corpus/ (new inputs are added there). Crashing inputs are written to
# build-fuzz/findings/. Usage: bench/fuzz.sh [SECONDS] [TARGET...]   (law csv config)
# The normal build does not need clang; this bench does (apt-get install clang).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(law csv config)
command -v clang++ >/dev/null || { echo "error: clang++ not found; install clang (apt-get install clang)" >&2; exit 1; }
generator=()
command -v ninja >/dev/null && [ ! -f build-fuzz/Makefile ] && generator=(-G Ninja)
cmake -S tests/fuzz -B build-fuzz "${generator[@]}" -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]/#/fuzz_}"
mkdir -p build-fuzz/findings
status=0
for t in "${targets[@]}"; do
  corpus=tests/fuzz/corpus/$t
  mkdir -p "$corpus"
  echo "== fuzz_$t for ${seconds}s (corpus $corpus: $(ls "$corpus" | wc -l) inputs)" >&2
  # -max_len keeps inputs small enough to run fast; deep nesting still fits.
  if ! build-fuzz/fuzz_$t "$corpus" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
      -rss_limit_mb=2048 -artifact_prefix="build-fuzz/findings/${t}-" -print_final_stats=1 \
      2> "build-fuzz/fuzz_$t.log"; then
    echo "fuzz_$t: FOUND A CRASH, see build-fuzz/fuzz_$t.log and build-fuzz/findings/" >&2
    tail -n 40 "build-fuzz/fuzz_$t.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "build-fuzz/fuzz_$t.log" | tail -n 2 >&2
  fi
done
exit $status
