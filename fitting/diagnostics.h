// What makes a fit doubtful, checked on the fit and its observations.
#pragma once

#include <vector>

#include "fitting/fit.h"

namespace moescale::fitting {

// ---------------------------------------------------------------- diagnostics
// Everything that makes a fit doubtful, checked on the fit and the observations it was fitted
// to (fit_law fills FitResult::diagnostics with it). Codes: edge_minimum (an IsoFLOP budget's
// lowest loss is at its smallest or largest model), param_at_bound, unidentified (bootstrap
// interval over a factor 100 for a scale, or a near-singular Jacobian), degenerate (a term
// vanishes), systematic_residual (a group's or budget's mean log residual over twice the
// RMSLE), short_runs (trained runs under 300 steps), extrapolation (holdout RMSLE over 2%),
// lack_of_fit (RMSLE over twice the run-to-run noise measured from replicates),
// replicates_disagree (replicates spread more than a seed explains: kMaxSeedNoise).
std::vector<Diagnostic> diagnose(const FitResult& fit,
                                 const std::vector<Observation>& observations);
// Only the checks on the data's design (edge_minimum): no fit needed.
std::vector<Diagnostic> diagnose_design(const std::vector<Observation>& observations);
// Residuals log L_hat - log L of a fit, one per observation.
std::vector<double> log_residuals(const FitResult& fit,
                                  const std::vector<Observation>& observations);

}  // namespace moescale::fitting
