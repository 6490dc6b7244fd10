#!/usr/bin/env bash
# Writes runs.csv: 75 MoE runs whose loss follows the joint MoE law of Ludziejewski
# et al. 2025 (arXiv 2502.05172, eq. 6, Table 3 coefficients, with E in place of
# the saturated Ê), times a deterministic ±0.3% jitter standing in for run noise.
# They are generated, not trained: the example is about what the recommender does
# with a law that has an expert term, not about this law's values.
set -euo pipefail
cd "$(dirname "$0")"
awk 'BEGIN {
  print "N,D,E,loss"
  split("1 4 8 16 32", es, " "); split("5e7 1e8 2e8 4e8 8e8", ns, " "); split("2e9 8e9 3.2e10", ds, " ")
  i = 0
  for (a = 1; a <= 5; ++a) for (b = 1; b <= 5; ++b) for (c = 1; c <= 3; ++c) {
    E = es[a]; N = ns[b]; D = ds[c]; lE = log(E)
    L = 1.3637 + 35.91 * E^-0.2285 * N^(-0.1889 + 0.0098 * lE) \
               + 35.98 * E^0.5529 * D^(-0.1775 - 0.0259 * lE)
    jitter = 0.003 * sin(12.9898 * ++i)
    printf "%.0f,%.0f,%d,%.5f\n", N, D, E, L * (1 + jitter)
  }
}' > runs.csv
