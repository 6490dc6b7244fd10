#!/usr/bin/env bash
# Faults a cluster produces, measured: a small sweep is trained through each class of
# fault and compared with the same sweep trained without one. One line per class:
#   checkpoint corruption  8 faults: runs 2, lost 0, duplicated 0, wrong 0
# faults: how many were made; lost: runs not done at the end; duplicated: metric rows
# twice or past a run's last step; wrong: final loss not the uninterrupted run's (to
# 6 decimals). Classes:
#  - checkpoint corruption: train stopped (SIGTERM) mid-run, its checkpoint.pt damaged
#    (exponent bit, mantissa bit, NaN, truncated to 20000 and 0 bytes, random bytes, a
#    folder in its place, a byte of data.pkl), then trained on;
#  - disk full: the checkpoints' and then the database's file system filled (a small
#    tmpfs; needs root), train ends with an error, space is freed, trained on;
#  - server frozen: the PostgreSQL store stopped (SIGSTOP) for 40 s mid-sweep;
#  - server restarted: the PostgreSQL server restarted twice mid-sweep.
# A class that cannot run here (no root for tmpfs, no PostgreSQL server) says so.
# Exits non-zero unless every class that ran has 0 lost, 0 duplicated and 0 wrong.
# Usage: bench/fault_test.sh. MOESCALE_BINARY: the program (default build/moescale).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${MOESCALE_BINARY:-$root/build/moescale}
[ -x "$bin" ] || { echo "error: $bin not found; build first (scripts/build.sh)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/moescale-faults.XXXXXX")
pg_bin="" pg_dir="" mounted=""
cleanup() {
  [ -n "$mounted" ] && umount -l "$mounted" 2>/dev/null || true
  if [ -n "$pg_dir" ]; then
    kill -CONT $(pg_pids) 2>/dev/null || true
    as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
export MOESCALE_DB=
status=0

cat > sweep.toml <<'TOML'
[sweep]
name = "f"
design = "grid"
sizes = [2e3]
tokens = [2e5]
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
"$bin" data prepare -q --source synthetic:markov:order=1,vocab=16,branching=3,tokens=200000 \
  --out markov >/dev/null
"$bin" plan --config sweep.toml --db reference.db >/dev/null
"$bin" train --sweep f --db reference.db --threads 1 --checkpoints ref-ckpt -q 2>reference.log

# Prints "runs N, lost L, duplicated D, wrong W" for a SQLite store; fails unless all 0.
judge() {  # judge STORE [REFERENCE]
  python3 - "$1" "${2:-reference.db}" <<'PY'
import sqlite3, sys
ref = dict(sqlite3.connect(sys.argv[2]).execute("SELECT key, final_loss FROM runs"))
db = sqlite3.connect(sys.argv[1])
runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
lost = db.execute("SELECT count(*) FROM runs WHERE status != 'done'").fetchone()[0]
dup = db.execute("SELECT count(*) FROM (SELECT run_id, step, split FROM metrics "
                 "GROUP BY 1, 2, 3 HAVING count(*) > 1)").fetchone()[0]
dup += db.execute("SELECT count(*) FROM metrics m JOIN runs r ON r.id = m.run_id "
                  "WHERE m.step > r.steps_done").fetchone()[0]
wrong = sum(1 for k, l in db.execute("SELECT key, final_loss FROM runs WHERE status = 'done'")
            if l is None or abs(l - ref[k]) >= 5e-7)
print(f"runs {runs}, lost {lost}, duplicated {dup}, wrong {wrong}")
sys.exit(0 if lost == dup == wrong == 0 else 1)
PY
}

# The run the train process PID holds in the SQLite store DB once it has a checkpoint
# past step 25 ("" if the process ends first).
checkpointed_run() {
  python3 - "$1" "$2" <<'PY' || true
import os, sqlite3, sys, time
pid, path = int(sys.argv[1]), sys.argv[2]
for _ in range(600):
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        row = db.execute("SELECT key FROM runs WHERE status='running' AND owner_pid=?",
                         (pid,)).fetchone()
        if row:
            ckpt = f"ckpt/f/{row[0]}/checkpoint.prev.pt"
            if os.path.exists(ckpt):
                print(row[0])
                break
    except sqlite3.Error:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        break
    time.sleep(0.1)
PY
}

damage() {  # damage KIND FILE
  python3 - "$1" "$2" <<'PY'
import os, random, shutil, struct, sys
kind, path = sys.argv[1], sys.argv[2]
b = bytearray(open(path, "rb").read())
def members():  # from the central directory: local headers leave sizes to a descriptor
    at = b.find(b"PK\x01\x02")
    while at >= 0 and at + 46 <= len(b):
        size, = struct.unpack_from("<I", b, at + 24)
        n, = struct.unpack_from("<H", b, at + 28)
        local, = struct.unpack_from("<I", b, at + 42)
        ln, lm = struct.unpack_from("<HH", b, local + 26)
        yield b[at + 46:at + 46 + n].decode("latin1"), local + 30 + ln + lm, size
        at = b.find(b"PK\x01\x02", at + 4)
tensor = max((x for x in members() if "/data/" in x[0]), key=lambda x: x[2])
value = tensor[1] + 28
bits, = struct.unpack_from("<I", b, value)
if kind == "exponent": struct.pack_into("<I", b, value, bits ^ (1 << 29))
elif kind == "mantissa": struct.pack_into("<I", b, value, bits ^ 1)
elif kind == "nan": struct.pack_into("<I", b, value, 0x7fc00000)
elif kind == "trunc20000": del b[20000:]
elif kind == "trunc0": del b[:]
elif kind == "random": b = bytearray(random.Random(7).randbytes(len(b)))
elif kind == "pickle":
    name, at, size = next(x for x in members() if x[0].endswith("data.pkl"))
    b[at + size // 2] ^= 0x5a
if kind == "directory":
    os.remove(path); os.makedirs(os.path.join(path, "inside"))
else:
    open(path, "wb").write(b)
PY
}

report() {  # report CLASS FAULTS STORE [REFERENCE [NOTE]]
  local line
  if line=$(judge "$3" "${4:-reference.db}"); then :; else status=1; fi
  printf '%-24s %2s faults: %s%s\n' "$1" "$2" "$line" "${5:-}"
}

# ---- checkpoint corruption ---------------------------------------------------
"$bin" plan --config sweep.toml --db ck.db >/dev/null
faults=0
for kind in exponent mantissa nan trunc20000 trunc0 random directory pickle; do
  "$bin" train --sweep f --db ck.db --threads 1 --checkpoints ckpt -q 2>>ck.log &
  pid=$!
  key=$(checkpointed_run "$pid" ck.db)
  if [ -n "$key" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    if [ -e "ckpt/f/$key/checkpoint.pt" ]; then
      damage "$kind" "ckpt/f/$key/checkpoint.pt"
      faults=$((faults + 1))
    fi
  else
    wait "$pid" 2>/dev/null || true
  fi
done
"$bin" train --sweep f --db ck.db --threads 1 --checkpoints ckpt -q 2>>ck.log || true
report "checkpoint corruption" "$faults" ck.db

# ---- disk full ---------------------------------------------------------------
mkdir -p small
if mount -t tmpfs -o size=4m tmpfs small 2>/dev/null; then
  mounted=$work/small
  ckpt_bytes=$(find ref-ckpt -name checkpoint.pt -printf '%s\n' | sort -n | tail -1)
  fill() {  # fill BYTES_TO_LEAVE
    local free
    free=$(($(stat -f -c '%a * %S' small)))
    fallocate -l $((free - $1)) small/filler
  }
  faults=0
  "$bin" plan --config sweep.toml --db df.db >/dev/null
  fill $((ckpt_bytes + ckpt_bytes / 2))
  if ! "$bin" train --sweep f --db df.db --threads 1 --checkpoints small/ckpt -q 2>>df.log; then
    faults=$((faults + 1))
  fi
  rm -f small/filler
  "$bin" train --sweep f --db df.db --threads 1 --checkpoints small/ckpt -q 2>>df.log || true
  rm -rf small/ckpt
  "$bin" plan --config sweep.toml --db small/df.db >/dev/null
  fill $((48 * 1024))
  if ! "$bin" train --sweep f --db small/df.db --threads 1 --checkpoints ckpt-df -q \
    2>>df.log; then
    faults=$((faults + 1))
  fi
  rm -f small/filler
  "$bin" train --sweep f --db small/df.db --threads 1 --checkpoints ckpt-df -q 2>>df.log || true
  "$bin" db copy --from small/df.db --to df-db.db >/dev/null
  line=$(judge df.db) || status=1
  line2=$(judge df-db.db) || status=1
  printf '%-24s %2s faults: %s (checkpoints full); %s (database full)\n' "disk full" "$faults" \
    "$line" "$line2"
  umount -l small && mounted=""
else
  printf '%-24s skipped: cannot mount a tmpfs here (needs root)\n' "disk full"
fi

# ---- PostgreSQL: frozen, restarted ------------------------------------------
as_pg() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
pg_pids() {
  local main
  main=$(head -1 "$pg_dir/data/postmaster.pid" 2>/dev/null) || return 0
  echo "$main" $(pgrep -P "$main" || true)
}
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] && { [ "$(id -u)" != 0 ] || id postgres >/dev/null 2>&1; }; then
  pg_dir=$(mktemp -d /tmp/moescale-faults-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres "$pg_dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  as_pg "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U moescale --no-sync >/dev/null
  as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
    -o "-p $port -k $pg_dir -c listen_addresses='' -c fsync=off" start >/dev/null
  url() { echo "postgresql://moescale@/$1?host=$pg_dir&port=$port"; }
  as_pg "$pg_bin/psql" -h "$pg_dir" -p "$port" -U moescale -d postgres -q \
    -c "CREATE DATABASE frozen" -c "CREATE DATABASE restarted"

  # Runs long enough (about 15 s each) for the faults to hit them mid-training.
  sed 's/^tokens = \[2e5\]/tokens = [3e6]/' sweep.toml > sweep-pg.toml
  "$bin" plan --config sweep-pg.toml --db reference-pg.db >/dev/null
  "$bin" train --sweep f --db reference-pg.db --threads 1 --checkpoints ref-pg-ckpt -q \
    2>reference-pg.log
  "$bin" plan --config sweep-pg.toml --db "$(url frozen)" >/dev/null
  "$bin" train --sweep f --db "$(url frozen)" --threads 1 --checkpoints ckpt-frozen -q \
    2>frozen.log &
  pid=$!
  sleep 4
  kill -STOP $(pg_pids)
  sleep 40
  kill -CONT $(pg_pids)
  wait "$pid" || true
  "$bin" db copy --from "$(url frozen)" --to frozen.db >/dev/null
  report "server frozen" 1 frozen.db reference-pg.db \
    " (train retried the store $(grep -c 'trying again' frozen.log || true) times)"

  "$bin" plan --config sweep-pg.toml --db "$(url restarted)" >/dev/null
  "$bin" train --sweep f --db "$(url restarted)" --threads 1 --checkpoints ckpt-restarted -q \
    2>restarted.log &
  pid=$!
  for _ in 1 2; do
    sleep 4
    as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w restart >/dev/null
  done
  wait "$pid" || true
  "$bin" db copy --from "$(url restarted)" --to restarted.db >/dev/null
  report "server restarted" 2 restarted.db reference-pg.db \
    " (train retried the store $(grep -c 'trying again' restarted.log || true) times)"
else
  printf '%-24s skipped: no PostgreSQL server binaries (apt-get install postgresql)\n' \
    "server frozen"
  printf '%-24s skipped: no PostgreSQL server binaries\n' "server restarted"
fi
exit "$status"
