#!/usr/bin/env bash
# Model FLOPs utilisation of moescale's trainer on one GPU: trains a MoE of about
# 125M active non-embedding parameters (d_model 768, 12 layers, 12 heads, E = 8
# experts of 1792 hidden units, top-2, GPT-2's padded vocabulary 50304, sequences
# of 1024, batch 16) for 200 steps with each router (topk and rmoe), on
# synthetic Markov tokens, through train_run (the code `moescale train` runs:
# bf16 autocast, fused AdamW, flash attention, grouped-GEMM experts).
#
# MFU = tokens/s x FLOPs per token / the GPU's dense bf16 peak, with FLOPs per
# token as DESIGN.md counts them for MFU: 6·N_active + 12·n_layers·d_model·seq_len,
# plus the output head. Tokens/s is timed over the steps after the first 20.
# Prints one line per router, then `mfu: X`, the lower of the two.
#
# Environment: BUILD_DIR (default build), STEPS (200), BATCH (16), DEVICE (cuda),
# PEAK_TFLOPS (overrides the peak table, for GPUs not in it).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
STEPS=${STEPS:-200}
BATCH=${BATCH:-16}
DEVICE=${DEVICE:-cuda}

# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, from NVIDIA's data sheets.
peak_tflops() {
  case "$1" in
    *H200*) echo 989.4 ;;
    *H100*PCIe*) echo 756 ;;
    *H100*NVL*) echo 835 ;;
    *H100* | *GH200*) echo 989.4 ;;
    *A100*) echo 312 ;;
    *) echo "" ;;
  esac
}

if ! command -v nvidia-smi >/dev/null || ! gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1) || [ -z "$gpu" ]; then
  echo "error: no NVIDIA GPU visible (nvidia-smi finds none): bench/gpu_mfu.sh measures GPU" \
    "training; run it on a machine with a GPU and a CUDA build (scripts/build.sh where nvcc is)" >&2
  exit 1
fi
peak=${PEAK_TFLOPS:-$(peak_tflops "$gpu")}
if [ -z "$peak" ]; then
  echo "error: no bf16 peak known for '$gpu': set PEAK_TFLOPS (dense bf16, TFLOP/s)" >&2
  exit 1
fi

if [ ! -x "$BUILD_DIR/bench/trainer_mfu" ]; then
  echo "building trainer_mfu in $BUILD_DIR" >&2
  cmake --build "$BUILD_DIR" --target moescale trainer_mfu -j"$(nproc)" >/dev/null
fi
cuda=$("$BUILD_DIR/moescale" version --json | grep -o '"cuda_compiled": *[a-z]*' | grep -o '[a-z]*$')
if [ "$cuda" != true ]; then
  echo "error: $BUILD_DIR was built without CUDA: rebuild with scripts/build.sh where nvcc is" >&2
  exit 1
fi

DATA="$BUILD_DIR/bench-data/gpu-markov"
if [ ! -f "$DATA/meta.json" ]; then
  echo "preparing synthetic tokens in $DATA" >&2
  "$BUILD_DIR/moescale" data prepare -q \
    --source "synthetic:markov:order=1,vocab=50304,branching=8,tokens=8000000" --out "$DATA" >/dev/null
fi

echo "GPU: $gpu, dense bf16 peak $peak TFLOP/s; $STEPS steps of $BATCH x 1024 tokens"
min_mfu=""
for router in topk rmoe; do
  json=$("$BUILD_DIR/bench/trainer_mfu" --data "$DATA" --device "$DEVICE" --router "$router" \
    --steps "$STEPS" --batch "$BATCH")
  line=$(python3 - "$json" "$peak" "$router" <<'PY'
import json, sys
r, peak, router = json.loads(sys.argv[1]), float(sys.argv[2]) * 1e12, sys.argv[3]
mfu = r["tokens_per_s"] * r["flops_per_token"] / peak
print(f"{router}: {r['tokens_per_s']:.0f} tokens/s, {r['flops_per_token'] / 1e6:.0f} MFLOP/token, "
      f"N_active {r['n_active'] / 1e6:.1f}M (total {r['n_total'] / 1e6:.1f}M + "
      f"{r['n_embedding'] / 1e6:.1f}M embedding), loss {r['final_loss']:.3f}, MFU {mfu:.3f}")
print(f"{mfu:.4f}")
PY
)
  echo "${line%$'\n'*}"
  mfu=${line##*$'\n'}
  if [ -z "$min_mfu" ] || python3 -c "import sys; sys.exit(0 if $mfu < $min_mfu else 1)"; then
    min_mfu=$mfu
  fi
done
echo "mfu: $min_mfu"
