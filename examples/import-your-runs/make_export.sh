#!/usr/bin/env bash
# Writes wandb_export.csv: every 8th run of Epoch's extraction of the Chinchilla
# data (../chinchilla-refit), laid out the way a run tracker exports runs: its own
# column names, a run name with a comma (quoted), extra columns moescale ignores,
# and tokens instead of FLOPs (D = C / (6 N)).
set -euo pipefail
cd "$(dirname "$0")"
awk -F, 'NR == 1 {
  print "Name,State,Runtime,config.lr,config.model.n_params_nonembed,summary/train/tokens_seen,summary/eval/loss (final)"
  next
}
(NR - 2) % 8 == 0 {
  n = $4; c = $5
  printf "\"chinchilla, run %d\",finished,%d,%.1e,%.0f,%.0f,%s\n", NR - 1, 3600 + NR * 17, 2e-4, n, c / (6 * n), $7
}' ../chinchilla-refit/chinchilla_epoch_svg_extracted.csv > wandb_export.csv
