#!/usr/bin/env bash
# Writes wandb_export.csv: every 8th run of Epoch's extraction of the Chinchilla
# data (../chinchilla-refit), laid out the way a run tracker exports runs: its own
# column names, a run name with a comma (quoted), extra columns moescale ignores,
# and tokens instead of FLOPs (D = C / (6 N)). The 5 highest losses are left out,
# as Besiroglu et al. leave them out of their fit.
set -euo pipefail
cd "$(dirname "$0")"
data=../chinchilla-refit/chinchilla_epoch_svg_extracted.csv
cutoff=$(tail -n +2 "$data" | cut -d, -f7 | sort -g | tail -5 | head -1)
awk -F, -v cutoff="$cutoff" 'NR == 1 {
  print "Name,State,Runtime,config.lr,config.model.n_params_nonembed,summary/train/tokens_seen,summary/eval/loss (final)"
  next
}
(NR - 2) % 8 == 0 && $7 + 0 < cutoff + 0 {
  n = $4; c = $5
  printf "\"chinchilla, run %d\",finished,%d,%.1e,%.0f,%.0f,%s\n", NR - 1, 3600 + NR * 17, 2e-4, n, c / (6 * n), $7
}' "$data" > wandb_export.csv
