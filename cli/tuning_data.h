// What the tuning stage and the recipe check need from the store: a tuning sweep's runs as
// anchors, a sweep's recipe-check points, the fitted lr rule a config names, and the
// neighbours `plan --recipe-check` adds.
#pragma once

#include <string>
#include <vector>

#include "db/db.h"
#include "fitting/tuning.h"
#include "planner/planner.h"

namespace moescale::cli {

// The router name an lr law is fitted and looked up under: "dense" for E = 1.
std::string lr_group(const ModelShape& shape);
// "router=topk": the group an lr fit is stored under.
std::string lr_fit_group(const std::string& group);

// The finished runs of a tuning sweep, one anchor per (shape, tokens), its rates as trials.
std::vector<fitting::LrAnchor> lr_anchors(const Database& db, const std::string& sweep);
// The run-to-run noise of a sweep's replicate seeds (trained at the sweep's own rates).
fitting::ReplicateNoise sweep_noise(const Database& db, const std::string& sweep);

// lr_rule = "fit": the latest lr fit of every router of config.lr_fit becomes the rule (and the
// N range it was fitted on). Throws, saying how to tune, when the sweep or its fits are missing.
void resolve_lr_rule(const Database& db, SweepConfig& config);
// The same, opening the store at `location` (read only) only when the rule needs it.
void resolve_lr_rule(const std::string& location, SweepConfig& config);

// Every point of the sweep that has recipe-check neighbours, with its own and their losses.
std::vector<fitting::RecipePoint> recipe_points(const Database& db, const std::string& sweep);

// plan --recipe-check: x factor and x 1/factor neighbours of `count` finished points (each
// group's lowest-loss point at its largest budget first, then its smallest model there, then
// the points next to the minimum), each at `seeds` seeds, and the seeds the points lack.
std::vector<PlannedRun> recipe_check_runs(const Database& db, const std::string& sweep,
                                          const SweepConfig& config, int count, double factor,
                                          int seeds);

}  // namespace moescale::cli
