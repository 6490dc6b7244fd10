// What recommend and plan --next need of a stored fit beyond its JSON: the observations it was
// fitted on (as well as the store can tell) and, when it has none, bootstrap parameter sets.
#pragma once

#include <cstddef>
#include <functional>
#include <string_view>
#include <vector>

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

}  // namespace moescale::cli
