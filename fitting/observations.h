// Observations (one finished run each, from the store or a CSV) and the IsoFLOP budgets they
// fall into.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "planner/planner.h"

namespace moescale::fitting {

// ---------------------------------------------------------------- observations
// One finished run. Every value must be finite and positive.
struct Observation {
  double n_active = 0;     // N: non-embedding parameters a token touches
  double n_total = 0;      // NT: all non-embedding parameters (0: same as N)
  double tokens = 0;       // D
  double experts = 1;      // E
  double top_k = 1;        // K
  double granularity = 1;  // G
  double loss = 0;
  std::string where;     // "runs.csv row 17", "run 42": named in error messages
  int64_t steps = 0;     // optimiser steps of a trained run; 0: not known (imported rows)
  double budget = 0;     // the IsoFLOP budget the run was meant for (C); 0: not stated
  std::string router{};  // "topk", "rmoe", "hash", "dense"; "" for imported rows
};

// Law column -> CSV header. Keys: N, NT, D, C, E, K, G, loss, budget. N and loss are required,
// and one of D (tokens) or C (compute; D = C / (6 N)). Unmapped NT defaults to N; E, K, G to 1;
// budget (the run's intended IsoFLOP budget) to not stated.
using ColumnMapping = std::map<std::string, std::string>;

// All or nothing: the first bad row throws "<source> row R: <column> "<text>" is not a number"
// (R counts lines, header = 1). Quoted fields ("a,b", "say ""hi""") are handled.
std::vector<Observation> read_observations_csv(const std::string& path,
                                               const ColumnMapping& mapping);
std::vector<Observation> parse_observations_csv(std::string_view text, const ColumnMapping& mapping,
                                                const std::string& source);
// Drops the k observations with the highest loss (Besiroglu et al. drop 5 of Chinchilla's).
std::vector<Observation> exclude_top_loss(std::vector<Observation> observations, std::size_t k);
// Throws naming the first observation with a non-finite or non-positive value.
void validate_observations(const std::vector<Observation>& observations);

// ---------------------------------------------------------------- budgets
// One IsoFLOP budget of a sweep: the observations meant for one compute budget.
struct Budget {
  double compute = 0;             // the stated budget, or the geometric mean of its runs' 6ND
  bool stated = false;            // from the runs' own budget (planned, or import --map budget=)
  std::vector<std::size_t> rows;  // indices into the observations
};
// The one rule that says which runs share a budget (diagnostics, holdout, plan --next and
// report all use it). Runs that state a budget are grouped by it. The others are grouped by
// 6ND: sorted, neighbours joined closest first while the gap is at most 25%, the budget spans
// at most a factor 2, and it does not get two runs of one model (same router, E, K, G and N)
// with different token counts, which an IsoFLOP budget never holds. That recovers budgets whose
// runs sit anywhere in 0.93-1.35 times their budget (Marin's DCLM sweep) from 6ND alone.
// Sorted by compute.
std::vector<Budget> group_budgets(const std::vector<Observation>& observations);
// "E=8", "E=8,K=2", "rmoe,E=8": the model family an observation belongs to (router, E, K, G).
std::string family_of(const Observation& o);

}  // namespace moescale::fitting
