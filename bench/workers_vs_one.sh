#!/usr/bin/env bash
# Parallel workers against one process: trains the same runs of the worked
# example (configs/tiny-cpu.toml, cut to the budgets given) once with one
# `train` process using every core and once with `train --workers N`, and prints
# both wall times and their ratio. The last line is `speedup: X`, one process's
# time over the workers' (1 or more: the workers are at least as fast in total).
# The two sweeps alternate ROUNDS times and each keeps its best time, so other
# load on the machine slows both alike.
# Usage: bench/workers_vs_one.sh [WORKERS] [BUDGETS] (default 4 and "1e10, 3e10").
# Environment: ROUNDS (default 1), MOESCALE_BINARY (default build/moescale).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
workers=${1:-4}
budgets=${2:-1e10, 3e10}
rounds=${ROUNDS:-1}
bin=${MOESCALE_BINARY:-$root/build/moescale}
[ -x "$bin" ] || { echo "error: $bin not found; build first (scripts/build.sh)" >&2; exit 1; }
data=$root/data/gcide
[ -f "$data/meta.json" ] || "$bin" data prepare -q --source gcide --out "$data"
work=$(mktemp -d "${TMPDIR:-/tmp}/moescale-workers.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
export MOESCALE_DB=

# The example's sweep, cut to BUDGETS (replicates stay on the budgets that remain).
# One fixed rate: the example's own rule needs its tuning sweep's fits, and this bench times workers.
sed -e "s/^budgets = .*/budgets = [$budgets]/" -e "s/^lr_rule = .*/lr = 3e-3/" -e "/^lr_fit = /d" \
  "$root/configs/tiny-cpu.toml" > sweep.toml

# Seconds to train the whole sweep from scratch with the given train options.
train_seconds() {
  rm -rf db.db* ckpt
  "$bin" plan --config sweep.toml --db db.db >/dev/null
  local start end
  start=$(date +%s.%N)
  "$bin" train --sweep tiny-cpu --db db.db --data "$data" --checkpoints ckpt -q "$@" 2>>train.log
  end=$(date +%s.%N)
  left=$("$bin" runs --db db.db --json | python3 -c \
    'import json,sys; print(sum(r["status"] != "done" for r in json.load(sys.stdin)))')
  [ "$left" -eq 0 ] || { echo "error: $left runs not done, see $work/train.log" >&2; exit 1; }
  python3 -c "print(round($end - $start, 2))"
}

runs=$("$bin" plan --config sweep.toml --dry-run --json | python3 -c \
  'import json,sys; print(len(json.load(sys.stdin)["runs"]))')
echo "sweep: configs/tiny-cpu.toml with budgets [$budgets], $runs runs, $(nproc) cores" >&2
best_one="" best_many=""
for _ in $(seq "$rounds"); do
  one=$(train_seconds)
  many=$(train_seconds --workers "$workers")
  echo "one process: ${one} s, $workers workers: ${many} s" >&2
  best_one=$(python3 -c "print(min(x for x in [$one, ${best_one:-$one}]))")
  best_many=$(python3 -c "print(min(x for x in [$many, ${best_many:-$many}]))")
done
echo "best: one process ${best_one} s, $workers workers ${best_many} s"
python3 -c "print(f'speedup: {$best_one / $best_many:.2f}')"
