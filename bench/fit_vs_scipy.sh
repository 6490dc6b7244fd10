#!/usr/bin/env bash
# moescale's Chinchilla fit (Ceres, 2 threads) against Besiroglu et al.'s method (scipy
# L-BFGS-B, one core): same 240 points, same objective, same 4,500-point grid. moescale
# solves E, A and B inside each evaluation (variable projection), so of that grid only the
# 5 x 5 alpha x beta points are starts for it; scipy runs all 4,500. Builds
# bench/fit_bench (Release) in its own folder, runs both, judges both optima with one
# objective function (each side evaluates the other's parameters), and ends with
# "speedup: X" = scipy seconds / moescale seconds, or "speedup: 0" when moescale's optimum is
# worse than scipy's.
#   BUILD_DIR (default build, the main build), PYTHON (default .venv/bin/python), CSV
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
python=${PYTHON:-$root/.venv/bin/python}
csv=${CSV:-$(cd "$root/.." && pwd)/shared/data/chinchilla_epoch_svg_extracted.csv}
[[ -f $csv ]] || { echo "error: no data at $csv; set CSV=path/to/chinchilla_epoch_svg_extracted.csv" >&2; exit 1; }
[[ -x $python ]] || { echo "error: no Python at $python; run scripts/setup.sh or set PYTHON" >&2; exit 1; }

echo "building fit_bench in $build ..." >&2
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target fit_bench -j2 >/dev/null

echo "moescale: the grid's 25 (alpha, beta) starts on 2 threads ..." >&2
cpp=$("$build/bench/fit_bench" "$csv" --threads 2 --repeat 3 2>/dev/null)
echo "scipy: 4,500 L-BFGS-B starts on one core (about a minute) ..." >&2
one_core=(env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1)
command -v taskset >/dev/null && one_core+=(taskset -c 0)
py=$("${one_core[@]}" "$python" "$root/bench/fit_reference.py" "$csv")

vec() { "$python" -c 'import json,sys; f=json.loads(sys.argv[1])["fitted"]; print(",".join(repr(f[k]) for k in ("e","a","alpha","b","beta")))' "$1"; }
cpp_x=$(vec "$cpp")
py_x=$(vec "$py")
cpp_at_py=$("$build/bench/fit_bench" "$csv" --repeat 1 --other "$py_x" 2>/dev/null)
py_at_cpp=$("$python" "$root/bench/fit_reference.py" "$csv" --evaluate "$cpp_x")

"$python" - "$cpp" "$py" "$cpp_at_py" "$py_at_cpp" <<'PY'
import json, sys
cpp, py, cpp_at_py, py_at_cpp = (json.loads(a) for a in sys.argv[1:])
def params(r):
    p = r["params"]
    return "E={:.4f} A={:.1f} B={:.1f} alpha={:.4f} beta={:.4f}".format(
        p["E"], p["A"], p["B"], p["alpha"], p["beta"])
print(f"moescale: {cpp['seconds']:.3f} s ({cpp['threads']} threads, best of 3), "
      f"{cpp['starts']} starts, {params(cpp)}")
print(f"scipy:    {py['seconds']:.3f} s (1 core), {py['starts']} starts, {params(py)}")
# Each optimum judged by both implementations of the objective.
ours_cpp, theirs_cpp = cpp["objective"], cpp_at_py["other_objective"]
ours_py, theirs_py = py_at_cpp["objective"], py["objective"]
print(f"objective, moescale's function: moescale {ours_cpp:.12g}, scipy {theirs_cpp:.12g}")
print(f"objective, scipy's function:    moescale {ours_py:.12g}, scipy {theirs_py:.12g}")
tolerance = 1e-9 + 1e-6 * abs(theirs_py)
if ours_py <= theirs_py + tolerance:
    print(f"speedup: {py['seconds'] / cpp['seconds']:.1f}")
else:
    print(f"moescale's optimum is worse than scipy's by {ours_py - theirs_py:.3g} "
          f"(tolerance {tolerance:.3g}): no speedup counted")
    print("speedup: 0")
PY
