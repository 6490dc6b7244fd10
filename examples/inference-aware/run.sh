#!/usr/bin/env bash
# Fit a law with an expert-count term, then ask what to train when serving counts:
# the loss-optimal choice per expert count, and the cheapest way to reach that loss
# when the model will serve SERVE_TOKENS tokens on H100s.
#   MOESCALE, OUT as in the other examples; SERVE_TOKENS (default 1e12)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
m="${MOESCALE:-$here/../../build/moescale}"
out="${OUT:-$here/../../out/inference-aware}"
mkdir -p "$out"
export MOESCALE_DB="$out/moescale.db"
"$m" import --csv "$here/runs.csv" --sweep moe-law --map N=N --map D=D --map E=E --map loss=loss
"$m" fit --sweep moe-law --law ludziejewski2025 --quiet | tee "$out/fit.txt"
fit=$(awk '/^fit /{print $2; exit}' "$out/fit.txt")
"$m" recommend --fit "$fit" --budget 1e21 --experts 1,4,8,16,32 --top-k 2 \
  --serve-tokens "${SERVE_TOKENS:-1e12}"
