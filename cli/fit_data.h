// What recommend and plan --next need of a stored fit beyond its JSON: the observations it was
// fitted on (as well as the store can tell) and, when it has none, bootstrap parameter sets.
#pragma once

#include <cstddef>
#include <functional>
#include <string_view>
#include <optional>
#include <vector>

#include "cli/common.h"
#include "db/db.h"
#include "fitting/fitting.h"

namespace moescale::cli {

// Progress on stderr for a fitting stage that takes more than a second: done/total, the
// seconds spent and about how many are left (fit, and the bootstrap refits of recommend and
// plan --next).
std::function<void(std::string_view, size_t, size_t)> progress_printer();

// A catalogue law by name, or a user's expression (anything with an operator or a space).
fitting::Law law_named(const std::string& text);

// A trained or imported point as the fitting module sees it. A run's loss is its final
// validation loss (0 while it has none).
fitting::Observation observation_of(const ObservationRecord& o);
fitting::Observation observation_of(const RunRecord& r);

// The sweep's observations in the fit's group ("all", or e.g. "router=topk,E=4").
std::vector<fitting::Observation> fit_observations(const Database& db, const FitRecord& record);

// The fit as stored; when it has no bootstrap sets and bootstrap > 0, refits that many
// resamples from its optimum (progress on stderr unless quiet).
fitting::FitResult fit_with_bootstrap(const Database& db, const FitRecord& record, int bootstrap,
                                      double confidence, bool quiet);

// The sweep's serving shape: its router (the fit group's, else the first MoE router of the
// config), MoE spacing and top-k. Empty for imported sweeps: the defaults apply.
struct SweepShape {
  Router router = Router::topk;
  int64_t moe_every = 1, top_k = 2;
};
std::optional<SweepShape> sweep_shape(const Database& db, const FitRecord& record);

// The loss-optimal table `recommend` prints, which `report` copies cell for cell.
Table loss_optimal_table(const fitting::Recommendation& r);
// An approach 2 fit's minima per budget, as `fit --approach 2` prints them and `report` copies.
Table approach2_table(const fitting::Approach2Fit& fit);
// A fit's --holdout rollout steps, as `fit` prints them and `report` copies them.
Table rollout_table(const fitting::FitResult& fit);
// One line per fitted parameter, "  name  value  [lo, hi] (95%)", as every fit prints them.
std::string parameter_lines(const fitting::FitResult& fit);

}  // namespace moescale::cli
