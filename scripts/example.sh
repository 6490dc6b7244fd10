#!/usr/bin/env bash
# The main job on the embedded default: set up, build, prepare the GCIDE
# corpus, tune the learning rate (a grid of rates at a few anchor points, and the
# law lr*(N, D) they imply), plan configs/tiny-cpu.toml with that law, train every
# run on the CPU, fit the laws, recommend for 10x the largest budget, propose the
# next runs (dry run) and write the report to out/report.
# Re-running resumes: finished runs are not trained again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh moescale moescale-train >/dev/null
export MOESCALE_DB="${MOESCALE_DB:-out/moescale.db}"
mkdir -p out
m=build/moescale
config=configs/tiny-cpu.toml
sweep=tiny-cpu

[ -f data/gcide/meta.json ] || $m data prepare --source gcide --out data/gcide
# The tuning stage: sweep tiny-cpu-tune, then lr* per anchor and the lr law per router.
$m plan --config "$config" --tune >/dev/null
$m train --sweep "$sweep-tune" --workers 2   # one run per core: narrow models use one thread best
$m fit --sweep "$sweep-tune" --law lr
echo
# The sweep, every run at the rate its router's lr law gives it.
$m plan --config "$config" >/dev/null
$m train --sweep "$sweep" --workers 2
$m runs --sweep "$sweep"

echo
$m fit --sweep "$sweep" --law chinchilla --per-group --bootstrap 50 --quiet
$m fit --sweep "$sweep" --law yun2024 --router topk --holdout largest-compute --bootstrap 50 --quiet |
  tee out/moe_fit.txt
moe_fit=$(awk '/^fit /{print $2; exit}' out/moe_fit.txt)

largest=$($m plan --config "$config" --dry-run --json |
  .venv/bin/python -c 'import json,sys; print(max(r["budget"] for r in json.load(sys.stdin)["runs"]))')
budget=$(.venv/bin/python -c "print(10 * $largest)")
echo
$m recommend --fit "$moe_fit" --budget "$budget" --experts 1,4,8
echo
# The runs that would shrink the N* interval at that budget most, for a tenth of it (shown,
# not recorded: drop --dry-run to plan them, then train and fit again).
$m plan --next --fit "$moe_fit" --budget "$budget" --allowance "$largest" --max-runs 4 --dry-run
$m report --sweep "$sweep" --out out/report --budget "$budget"
