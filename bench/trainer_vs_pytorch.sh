#!/usr/bin/env bash
# Trains the same MoE transformer with moescale's LibTorch trainer and with a
# PyTorch reference (bench/trainer_reference.py, same torch from .venv, same
# shapes, hyper-parameters and thread count) on CPU, and prints tokens/s of
# each, their ratio and moescale's model FLOP/s as a fraction of the machine's
# measured sgemm rate. The last line is `ratio: X`, the smallest ratio of
# moescale's tokens/s over the reference's across the shapes.
#
# Each side runs REPEATS times, alternating, and keeps its best run: other jobs
# on the machine only ever slow a run down.
#
# Environment: BUILD_DIR (default build, the main build), THREADS (default: all cores),
# STEPS (default 20), WARMUP (untimed steps, default 3), REPEATS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
THREADS=${THREADS:-$(nproc)}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-3}
REPEATS=${REPEATS:-3}
PY=.venv/bin/python
[ -x "$PY" ] || { echo "error: no .venv: run scripts/setup.sh" >&2; exit 1; }

echo "building moescale and trainer_bench (Release) in $BUILD_DIR" >&2
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" --target moescale trainer_bench -j"$(nproc)" >/dev/null

DATA="$BUILD_DIR/bench-data/trainer"
if [ ! -f "$DATA/meta.json" ]; then
  if [ -f /usr/share/dictd/gcide.dict.dz ]; then SOURCE=gcide; else SOURCE="synthetic:markov:vocab=256"; fi
  "$BUILD_DIR/moescale" data prepare --source "$SOURCE" --out "$DATA" --max-tokens 4000000 >/dev/null
fi

COMMON=(--data "$DATA" --seq-len 128 --batch 16 --steps "$STEPS" --warmup-steps "$WARMUP"
        --threads "$THREADS")
SHAPES=(
  "small|--d-model 64 --layers 2 --heads 4 --experts 4 --top-k 2 --router topk"
  "medium|--d-model 256 --layers 4 --heads 8 --experts 8 --top-k 2 --router rmoe"
)

min_ratio=""
for entry in "${SHAPES[@]}"; do
  name=${entry%%|*}
  read -r -a shape <<<"${entry#*|}"
  echo "shape $name: ${shape[*]}, seq 128, batch 16, $THREADS threads, $STEPS steps" \
    "($WARMUP untimed), best of $REPEATS"
  ours=() ref=()
  for _ in $(seq "$REPEATS"); do
    ours+=("$("$BUILD_DIR/bench/trainer_bench" "${COMMON[@]}" "${shape[@]}")")
    ref+=("$("$PY" bench/trainer_reference.py "${COMMON[@]}" "${shape[@]}")")
  done
  line=$("$PY" - "$(printf '%s\n' "${ours[@]}")" "$(printf '%s\n' "${ref[@]}")" <<'PY'
import json, sys
def best(lines):
    runs = [json.loads(l) for l in lines.splitlines() if l.strip()]
    return max(runs, key=lambda r: r["tokens_per_s"])
ours, ref = best(sys.argv[1]), best(sys.argv[2])
ratio = ours["tokens_per_s"] / ref["tokens_per_s"]
print(f"  moescale  {ours['tokens_per_s']:12.0f} tokens/s  ({ours['params']} parameters, loss {ours['final_loss']:.3f})")
print(f"  pytorch   {ref['tokens_per_s']:12.0f} tokens/s  ({ref['params']} parameters, loss {ref['final_loss']:.3f})")
print(f"  ratio     {ratio:12.3f}")
print(f"  moescale model FLOP/s {ours['model_flops_per_s']:.3g} = {100 * ours['fraction_of_sgemm']:.1f}% "
      f"of sgemm ({ours['sgemm_flops_per_s']:.3g} FLOP/s, 1024^2 float matmul)")
print(f"RATIO {ratio:.6f}")
PY
)
  echo "$line" | grep -v '^RATIO'
  r=$(echo "$line" | sed -n 's/^RATIO //p')
  if [ -z "$min_ratio" ] || "$PY" -c "import sys; sys.exit(0 if $r < $min_ratio else 1)"; then
    min_ratio=$r
  fi
done
printf 'ratio: %.3f\n' "$min_ratio"
