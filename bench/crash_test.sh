#!/usr/bin/env bash
# Crash safety, measured: trains a small sweep while killing `moescale train` at
# random moments (SIGKILL, and SIGTERM every third time) while a run trains, then lets it finish and
# compares with the same sweep trained without interruption.
# Prints: kills, corrupt (integrity_check failures), duplicated (metric rows or
# runs trained twice), lost (runs not done at the end), resumed-equal (kills that
# caught a run mid-way, counted per kill, whose run still ended with the
# uninterrupted final loss, to 6 decimals). When every run is done the sweep is
# planned again from scratch, so KILLS kills always happen. Exits non-zero unless
# 0 corrupt, 0 duplicated, 0 lost and all equal.
# Usage: bench/crash_test.sh [KILLS] (default 30). MOESCALE_BINARY: the program
# (default build/moescale).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kills=${1:-30}
bin=${MOESCALE_BINARY:-$root/build/moescale}
[ -x "$bin" ] || { echo "error: $bin not found; build first (scripts/build.sh)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/moescale-crash.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

cat > sweep.toml <<'TOML'
[sweep]
name = "crash"
design = "grid"
sizes = [2e3, 6e3]
tokens = [5e5]
experts = [1, 4]
routers = ["topk"]
[model]
vocab = 16
seq_len = 32
top_k = 2
head_dim = 8
aspect_ratio = 16
router_dim = 8
[train]
batch_size = 8
lr = 1e-2
eval_batches = 2
checkpoint_interval = 25
log_interval = 25
[data]
dir = "markov"
TOML
export MOESCALE_DB=
"$bin" data prepare -q --source synthetic:markov:order=1,vocab=16,branching=3,tokens=200000 \
  --out markov >/dev/null
"$bin" plan --config sweep.toml --db crash.db >/dev/null
"$bin" plan --config sweep.toml --db reference.db >/dev/null
runs=$("$bin" runs --db crash.db --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')

# The uninterrupted reference.
"$bin" train --sweep crash --db reference.db --threads 1 --checkpoints ref-ckpt -q 2>reference.log

# The run the train process PID holds now ("" when none); with "wait", waits up to 60 s
# for it to hold one.
held_run() {
  python3 - "$1" "${2:-}" <<'PY' || true
import sqlite3, sys, time
for _ in range(600 if sys.argv[2] == "wait" else 1):
    try:
        db = sqlite3.connect("file:crash.db?mode=ro", uri=True, timeout=10)
        row = db.execute("SELECT id FROM runs WHERE status='running' AND owner_pid=?",
                         (int(sys.argv[1]),)).fetchone()
        if row:
            print(row[0])
            break
    except sqlite3.Error:
        pass
    if sys.argv[2] == "wait":
        time.sleep(0.1)
PY
}

# Kill at random moments while a run trains.
: > interrupted.txt
killed=0
round=0
while [ "$killed" -lt "$kills" ]; do
  "$bin" train --sweep crash --db crash.db --threads 1 --checkpoints ckpt -q 2>>train.log &
  pid=$!
  # Kill while a run is training: wait until this process holds one, a random bit more,
  # and kill only if it still holds one then (not between two runs).
  caught=""
  while [ -z "$caught" ] && kill -0 "$pid" 2>/dev/null; do
    held_run "$pid" wait >/dev/null
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.1, 2.0), 2))')"
    caught=$(held_run "$pid")
  done
  if [ -n "$caught" ] && kill -0 "$pid" 2>/dev/null; then
    if [ $((killed % 3)) -eq 2 ]; then kill -TERM "$pid"; else kill -KILL "$pid"; fi
    echo "$killed $round $caught" >> interrupted.txt  # one line per kill: kill, round, run
    killed=$((killed + 1))
  fi
  wait "$pid" 2>/dev/null || true  # finished by itself when it was not alive to kill
  # Once everything is done, killing more proves nothing: plan it again from scratch.
  left=$("$bin" runs --db crash.db --json | python3 -c 'import json,sys; print(sum(r["status"]!="done" for r in json.load(sys.stdin)))')
  if [ "$left" -eq 0 ] && [ "$killed" -lt "$kills" ]; then
    cp crash.db "done-$round.db"
    python3 - "$round" <<'PY'
import sqlite3, sys, json
db = sqlite3.connect("crash.db")
finals = {i: l for i, l in db.execute("SELECT id, final_loss FROM runs")}
json.dump(finals, open(f"finals-{sys.argv[1]}.json", "w"))
db.execute("DELETE FROM metrics")
db.execute("UPDATE runs SET status='planned', final_loss=NULL, steps_done=0, worker='', heartbeat=''")
db.commit()
PY
    rm -rf ckpt
    round=$((round + 1))
  fi
done
# Finish what is left, as a user would after the last crash.
"$bin" train --sweep crash --db crash.db --threads 1 --checkpoints ckpt -q 2>>train.log

python3 - "$killed" "$runs" "$round" <<'PY'
import glob, json, sqlite3, sys
kills, runs, last = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ref = {i: l for i, l in sqlite3.connect("reference.db").execute("SELECT id, final_loss FROM runs")}
db = sqlite3.connect("crash.db")
corrupt = 0 if db.execute("PRAGMA integrity_check").fetchone()[0] == "ok" else 1
for old in glob.glob("done-*.db"):
    corrupt += sqlite3.connect(old).execute("PRAGMA integrity_check").fetchone()[0] != "ok"
duplicated = db.execute(
    "SELECT count(*) FROM (SELECT run_id, step, split FROM metrics GROUP BY 1, 2, 3 HAVING count(*) > 1)"
).fetchone()[0]
# A run whose val metrics do not reach its last step twice is fine; one with two
# 'done' finishes would have a finished_at before its last metric: not possible
# with fencing, so count metric steps past the run's total instead.
duplicated += db.execute(
    "SELECT count(*) FROM metrics m JOIN runs r ON r.id = m.run_id WHERE m.step > r.steps_done"
).fetchone()[0]
lost = db.execute("SELECT count(*) FROM runs WHERE status != 'done'").fetchone()[0]
finals = {last: dict(db.execute("SELECT id, final_loss FROM runs"))}
for r in range(last):
    finals[r] = {int(i): l for i, l in json.load(open(f"finals-{r}.json")).items()}
interrupted = [tuple(map(int, line.split())) for line in open("interrupted.txt") if line.strip()]
resumed = equal = 0
for _, r, i in interrupted:
    loss = finals[r].get(i)
    resumed += 1
    equal += loss is not None and abs(loss - ref[i]) < 5e-7
print(f"kills {kills}, corrupt {corrupt}, duplicated {duplicated}, lost {lost}, "
      f"resumed-equal {equal}/{resumed} ({runs} runs per round)")
sys.exit(0 if corrupt == 0 and duplicated == 0 and lost == 0 and equal == resumed else 1)
PY
