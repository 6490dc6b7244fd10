#!/usr/bin/env bash
# Refit the Chinchilla law to Epoch's extraction of Hoffmann et al.'s runs, then
# recommend for a budget with bootstrap intervals.
#   MOESCALE  the program (default: build/moescale of this checkout)
#   OUT       folder for the database (default: out/chinchilla-refit)
#   ROWS      use only every n-th row of the data (default 1: all; the test uses more)
#   BOOTSTRAP resamples for the intervals (default 100)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
m="${MOESCALE:-$here/../../build/moescale}"
out="${OUT:-$here/../../out/chinchilla-refit}"
mkdir -p "$out"
export MOESCALE_DB="$out/moescale.db"
csv="$here/chinchilla_epoch_svg_extracted.csv"
if [ "${ROWS:-1}" != 1 ]; then
  awk -v n="$ROWS" 'NR == 1 || (NR - 2) % n == 0' "$csv" > "$out/subset.csv"
  csv="$out/subset.csv"
fi
# Tokens are not a column: D = C / (6 N) from the training FLOPs.
"$m" import --csv "$csv" --sweep chinchilla \
  --map N="Model Size" --map C="Training FLOP" --map loss=loss
# Besiroglu et al. drop the 5 highest losses before fitting.
"$m" fit --sweep chinchilla --law chinchilla --exclude-top-loss 5 \
  --bootstrap "${BOOTSTRAP:-100}" --quiet | tee "$out/fit.txt"
fit=$(awk '/^fit /{print $2; exit}' "$out/fit.txt")
"$m" recommend --fit "$fit" --budget 5.76e23 --experts 1
