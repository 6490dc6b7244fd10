#!/usr/bin/env python3
"""Reference for bench/fit_vs_scipy.sh: the Chinchilla fit of Besiroglu et al. (2024) with
scipy. L-BFGS-B (finite-difference gradients, as in their code) from each of the 4,500 grid
points, objective sum of Huber_1e-3(log L_hat - log L), L_hat = exp(e) + exp(a)/N^alpha +
exp(b)/D^beta, on the 240 points left after dropping the 5 highest losses; D = C / (6 N).

usage: fit_reference.py CSV                      fit, print JSON (seconds, objective, params)
       fit_reference.py CSV --evaluate e,a,alpha,b,beta   print this objective at a point
"""
import argparse
import csv
import itertools
import json
import time

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber

DELTA = 1e-3


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    n = np.array([float(r["Model Size"]) for r in rows])
    c = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = np.argsort(-loss, kind="stable")[5:]  # drop the 5 highest losses
    keep.sort()
    n, c, loss = n[keep], c[keep], loss[keep]
    return np.log(n), np.log(c / (6 * n)), np.log(loss)


def objective(x, log_n, log_d, log_loss):
    e, a, alpha, b, beta = x
    # Far-off starts overflow; L-BFGS-B backs off from the resulting inf, as in the original.
    # log(exp(e) + exp(a - alpha log N) + exp(b - beta log D)), as Besiroglu et al. write it
    pred = np.log(np.exp(e) + np.exp(a - alpha * log_n) + np.exp(b - beta * log_d))
    return float(np.sum(huber(DELTA, pred - log_loss)))


def main():
    np.seterr(over="ignore", invalid="ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("csv")
    parser.add_argument("--evaluate", help="e,a,alpha,b,beta")
    args = parser.parse_args()
    data = load(args.csv)
    if args.evaluate:
        x = [float(v) for v in args.evaluate.split(",")]
        print(json.dumps({"objective": objective(x, *data)}))
        return
    grid = itertools.product(np.arange(-1, 1.01, 0.5), np.arange(0, 25.1, 5),
                             np.arange(0, 2.01, 0.5), np.arange(0, 25.1, 5),
                             np.arange(0, 2.01, 0.5))  # e, a, alpha, b, beta
    t0 = time.perf_counter()
    best, starts = None, 0
    for x0 in grid:
        starts += 1
        r = minimize(objective, np.array(x0), args=data, method="L-BFGS-B")
        if np.isfinite(r.fun) and (best is None or r.fun < best.fun):
            best = r
    seconds = time.perf_counter() - t0
    e, a, alpha, b, beta = best.x
    print(json.dumps({
        "seconds": seconds, "starts": starts, "objective": objective(best.x, *data),
        "fitted": {"e": e, "a": a, "alpha": alpha, "b": b, "beta": beta},
        "params": {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": alpha, "beta": beta},
    }))


if __name__ == "__main__":
    main()
