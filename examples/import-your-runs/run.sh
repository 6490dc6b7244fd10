#!/usr/bin/env bash
# Import a run tracker's CSV export whose column names are the tracker's, not
# moescale's, with --map COLUMN=HEADER; extra columns are ignored. Then fit and
# recommend as for runs trained here.
#   MOESCALE, OUT as in the other examples
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
m="${MOESCALE:-$here/../../build/moescale}"
out="${OUT:-$here/../../out/import-your-runs}"
mkdir -p "$out"
export MOESCALE_DB="$out/moescale.db"
"$m" import --csv "$here/wandb_export.csv" --sweep my-runs \
  --map N=config.model.n_params_nonembed \
  --map D="summary/train/tokens_seen" \
  --map loss="summary/eval/loss (final)"
"$m" fit --sweep my-runs --law chinchilla --quiet | tee "$out/fit.txt"
fit=$(awk '/^fit /{print $2; exit}' "$out/fit.txt")
"$m" recommend --fit "$fit" --budget 1e21 --experts 1
