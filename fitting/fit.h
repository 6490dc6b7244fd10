// Fitting a law: robust multi-start Huber fits with variable projection, bootstrap intervals,
// holdouts, and the run-to-run noise of replicates that a fit is judged against.
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

#include "fitting/law.h"

namespace moescale::fitting {

// ---------------------------------------------------------------- fitting
// largest_compute: fit without the largest budgets, test on them once. rollout: fit on the k
// smallest budgets and predict the next, for every k from 2 (3 for laws of more than 5
// parameters), as ladder studies and law-discovery benchmarks score a law.
enum class Holdout { none, largest_compute, rollout };
inline constexpr int kMaxBootstrap = 100000;  // resamples; more is a typo, not a wish
struct FitOptions {
  double delta = 1e-3;  // Huber threshold on log residuals
  int threads = 2;
  // Every start runs at most max_iterations Levenberg-Marquardt steps; the best `polish`
  // distinct results then run to convergence (at most polish_iterations steps). Which basin a
  // start is in shows long before its last digits settle, so running every start to full
  // convergence would mostly refine losers (the reference fit is the same either way).
  int max_iterations = 10;
  int polish = 10;
  int polish_iterations = 1000;
  int bootstrap = 0;  // resamples; 0: no intervals
  double confidence = 0.95;
  uint64_t seed = 1;
  Holdout holdout = Holdout::none;
  int holdout_budgets = 1;  // how many of the largest compute budgets (group_budgets) to hold out
  std::size_t max_starts = 200000;
  // Called (serialised) with "grid" / "polish" / "bootstrap" / "holdout" and done/total counts.
  std::function<void(std::string_view stage, std::size_t done, std::size_t total)> progress;
};

struct Interval {
  double lo = 0, hi = 0;  // percentile interval at FitOptions::confidence
  double sd = 0;
};
// The one way moescale turns samples (bootstrap fits, resamples) into an interval: the
// (1 - confidence) / 2 and (1 + confidence) / 2 percentiles, interpolated linearly between order
// statistics, and the sample standard deviation. Needs two samples or more.
Interval percentile_interval(std::vector<double> samples, double confidence);
struct HoldoutResult {
  std::string method;  // "largest-compute"
  int budgets = 0;
  double min_compute = 0;  // held-out runs have C >= this
  std::size_t n_train = 0, n_test = 0;
  double rmsle = 0;       // on the held-out runs
  double mean_error = 0;  // mean(log L_hat - log L) on them: > 0 means the law over-predicts
  std::map<std::string, double> params;  // reported, fitted without the held-out runs
};
// One step of a rollout: fitted on the `budgets_fitted` smallest budgets, tested on the next.
struct RolloutStep {
  std::size_t budgets_fitted = 0;
  double compute = 0;  // of the predicted budget
  std::size_t n_train = 0, n_test = 0;
  double rmsle = 0, mean_error = 0;  // on the predicted budget's runs
  // The law's loss-optimal loss and N at that budget against its best run's (NaN: the law has
  // no optimum there).
  double predicted_best_loss = 0, observed_best_loss = 0;
  double predicted_n_opt = 0, observed_n_opt = 0;
};
// A reason to doubt a fit, e.g. {"edge_minimum", "E=8: the lowest loss of 3 of 4 budgets is at
// the smallest model; add smaller models"}.
struct Diagnostic {
  std::string code;
  std::string message;
};

// The pooled run-to-run noise of replicates (replicate_noise below).
struct ReplicateNoise {
  double sd_log_loss = std::numeric_limits<double>::quiet_NaN();  // NaN: no replicates
  std::size_t sets = 0, runs = 0, dof = 0;                        // sets with >= 2 runs
  bool measured() const { return dof > 0; }
};
// A training seed moves log loss by about 0.1-1% (measured here: 0.3%); replicates that spread
// by more than this are not seeds but different measurements under one name (Llama 3's two loss
// columns imported as one give 72%), and are no noise to judge a fit against.
inline constexpr double kMaxSeedNoise = 0.05;
bool explained_by_seeds(const ReplicateNoise& noise);  // true also when unmeasured

struct FitResult {
  std::string law;
  std::string expression;
  std::vector<std::pair<std::string, std::string>> definitions;
  std::vector<ReportedParam> reported;
  std::map<std::string, double> fitted;  // the parameters of `expression`
  std::map<std::string, double> params;  // reported (e.g. E, A, B, alpha, beta)
  double objective = 0;                  // sum of Huber_delta(log L_hat - log L)
  double rmsle = 0;
  double delta = 0;
  std::size_t n_points = 0;
  std::size_t starts = 0;     // starting points run
  std::size_t converged = 0;  // of which converged within max_iterations (few: see FitOptions)
  int bootstrap = 0;
  double confidence = 0;
  std::map<std::string, Interval> intervals;  // reported params, when bootstrap > 0
  // The fitted parameters (as in `fitted`) of each bootstrap resample, for intervals on
  // anything derived from the law (predictions, optima).
  std::vector<std::map<std::string, double>> bootstrap_samples;
  std::optional<HoldoutResult> holdout;
  std::vector<RolloutStep> rollout;  // Holdout::rollout
  // The bounds the fit kept each fitted parameter in (only bounded ones).
  std::map<std::string, std::pair<double, double>> bounds;
  std::vector<Diagnostic> diagnostics;  // from diagnose(), at the time of the fit
  // The run-to-run noise of the fitted observations' replicates: what the RMSLE is judged
  // against (lack_of_fit) and what plan --next expects a new run's loss to carry.
  ReplicateNoise noise;
  double seconds = 0;

  double predict(const Observation& x) const;  // compiles on each call: cache for loops
  Expression compiled() const;
  std::vector<double> fitted_vector() const;  // in compiled().params() order
};
std::string to_json(const FitResult& result);
FitResult fit_result_from_json(std::string_view json);  // throws on bad input

// Standard Huber: r^2/2 for |r| <= delta, delta (|r| - delta/2) beyond.
double huber(double r, double delta);
double huber_objective(const Expression& law, std::span<const double> params,
                       const std::vector<Observation>& observations, double delta);
FitResult fit_law(const Law& law, const std::vector<Observation>& observations,
                  const FitOptions& options = {});


// The law a fit was made with: the catalogue law of that name (bounds kept) or its expression.
Law law_of(const FitResult& fit);
// Adds bootstrap parameter sets to a fit that has none: `options.bootstrap` resamples of the
// observations, each refitted from the fit's own optimum (no grid search).
FitResult with_bootstrap(const FitResult& fit, const std::vector<Observation>& observations,
                         const FitOptions& options);


// ---------------------------------------------------------------- noise and comparisons
// Plain statistics over final losses (fitting/analysis.cpp), for the report.
// Run-to-run noise from replicates: the pooled standard deviation of log loss,
// sqrt(Σ_sets Σ (log L − mean)² / Σ_sets (n − 1)), over sets of runs of one point
// (same shape and tokens, different seeds). Sets of one run add nothing.
ReplicateNoise replicate_noise(const std::vector<std::vector<double>>& loss_sets);
// The losses of observations at one point (N_active, N_total, D, E, k): replicate seeds.
std::vector<std::vector<double>> replicate_sets(const std::vector<Observation>& observations);

// best(b) − best(a) of two sets of final losses at one budget (< 0: b is better), with
// a bootstrap percentile interval. With sd_log_loss > 0 each resample perturbs every
// run's log loss by N(0, sd²) (the measured run-to-run noise); otherwise it resamples
// each set's runs with replacement.
struct BestLossDifference {
  double best_a = 0, best_b = 0, difference = 0;
  double lo = std::numeric_limits<double>::quiet_NaN(), hi = lo;
  double confidence = 0.95;
  bool parametric = false;  // true: from the noise
};
BestLossDifference best_loss_difference(const std::vector<double>& losses_a,
                                        const std::vector<double>& losses_b, double sd_log_loss,
                                        int resamples = 2000, double confidence = 0.95,
                                        uint64_t seed = 1);

}  // namespace moescale::fitting
