// Answers from fits: the loss-optimal (and inference-aware) choice of E, N and D at a budget,
// Hoffmann et al.'s approach 2, and the runs that would narrow an answer most.
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

#include "fitting/fit.h"
#include "planner/serving.h"

namespace moescale::fitting {

// ---------------------------------------------------------------- recommending
// budget: Yun et al.'s question at a fixed training budget C (6 N D = C, never more):
//   (a) the cheapest-serving (E, N) reaching the target loss, by default the loss of the
//       cheapest-to-serve loss-optimal choice (or of --reference-experts); larger E have slack
//       in loss there, which a smaller, over-trained model spends;
//   (b) with max_serve_cost, the lowest loss whose serving cost stays under the cap.
// total_cost: Sardana et al.'s: fixed target loss, least training + serving dollars; the
//   compute may exceed the budget (each such choice is flagged).
enum class InferenceMode { budget, total_cost };
std::string to_string(InferenceMode mode);

struct RecommendOptions {
  double budget = 0;  // C = 6 N D
  std::vector<int64_t> experts{1, 4, 8, 16, 32};
  int64_t top_k = 1;
  double granularity = 1;
  ShapeFn shape = default_shape;
  std::optional<ServingDemand> serving;  // set: inference-aware mode
  InferenceMode mode = InferenceMode::budget;
  std::optional<double> target_loss;           // budget (a) and total-cost
  std::optional<int64_t> reference_experts;    // budget (a): target = this E's loss-optimal loss
  std::optional<double> max_serve_cost;        // budget (b): USD per million served tokens
  double min_params = 1e3, max_params = 1e14;  // search bracket for N_active
  double confidence = 0.95;                    // of the bootstrap intervals
};

// Where a loss-optimal N landed in [min_params, min(max_params, C / 6)].
enum class Edge { none, lower, upper };

struct Choice {
  int64_t experts = 1;
  bool feasible = true;  // false: this E cannot reach the target loss (or serve) in the bracket
  double n_active = 0, n_total = 0, tokens = 0, compute = 0, loss = 0;
  Edge edge = Edge::none;  // loss-optimal: at an edge of the search range, not an optimum
  // Loss-optimal with bootstrap parameter sets: intervals at RecommendOptions::confidence and
  // the share of bootstrap fits in which this E has the lowest loss.
  std::optional<Interval> n_active_ci, tokens_ci, loss_ci;
  std::optional<double> p_best;
  // Inference-aware modes only:
  double loss_optimal_n_active = 0;  // budget: E's loss-optimal N at C; total-cost: the N
                                     // reaching the same loss with the least compute
  double overtrain_ratio = 0;        // loss_optimal_n_active / n_active (> 1: smaller)
  bool over_budget = false;          // total-cost: compute > budget
  double train_usd = 0, serve_usd = 0, total_usd = 0;
  ServingCost serving;
};
struct Recommendation {
  std::string law;
  double budget = 0;
  std::string note;                  // e.g. why there is one row only
  std::vector<Choice> loss_optimal;  // per expert count: lowest loss at the budget
  std::size_t best = 0;              // index into loss_optimal (lowest loss)
  int bootstrap = 0;                 // bootstrap parameter sets behind the intervals
  double confidence = 0;
  // Mean over bootstrap fits of the extra compute the recommended (E, N) needs to reach
  // that fit's own optimal loss at the budget, as a share of the budget; fits in which it
  // cannot reach that loss at all are counted in waste_unreachable (a share too).
  std::optional<double> compute_waste, waste_unreachable;
  bool inference_aware = false;
  InferenceMode mode = InferenceMode::budget;
  double target_loss = 0;                    // budget (a), total-cost
  std::optional<int64_t> reference_experts;  // budget (a): whose loss set the target
  std::optional<double> max_serve_cost;      // budget (b)
  std::optional<ServingDemand> serving;
  std::vector<Choice> cost_optimal;      // per expert count: the mode's choice
  std::optional<std::size_t> best_cost;  // index into cost_optimal; empty: none feasible
};
// Uses fit.bootstrap_samples for intervals when it has any. Throws if the law does not depend
// on N and on D (or C), or the budget is not positive. A law without an E term gives one row.
Recommendation recommend(const FitResult& fit, const RecommendOptions& options);
std::string to_json(const Recommendation& r);

// The N_active minimising fit's loss at budget C for one expert count (1-D search over log N).
Choice loss_optimal_choice(const FitResult& fit, double budget, int64_t experts,
                           const RecommendOptions& options);


// ---------------------------------------------------------------- approach 2
// Hoffmann et al.'s approach 2, beside the law fits (approach 3): per IsoFLOP budget
// (group_budgets), a least-squares parabola of loss in log N and its minimum N*; then
// log N* = log k + a log C through the minima, D* = C / (6 N*) so b = 1 - a. It assumes every
// budget's curve is a parabola near its minimum and the sizes are centred on it: off-centre
// sampling and grid width shift a (Open-Athena's scaling-law-analysis). A budget whose
// parabola opens downward or whose minimum lies outside its sizes is flagged and left out.
struct Approach2Options {
  int bootstrap = 200;  // resamples of each budget's runs; 0: no intervals
  double confidence = 0.95;
  uint64_t seed = 1;
};
struct BudgetMinimum {
  double compute = 0;
  std::size_t runs = 0;
  double n_opt = std::numeric_limits<double>::quiet_NaN();  // NaN: the parabola opens downward
  double tokens_opt = std::numeric_limits<double>::quiet_NaN();
  double loss = std::numeric_limits<double>::quiet_NaN();  // the parabola's, at n_opt
  std::optional<Interval> n_ci;  // over the resamples in which the budget is usable
  double n_min = 0, n_max = 0;   // sampled sizes
  bool opens_downward = false, outside_range = false;
  bool used = false;  // in the line through the minima
};
struct Approach2Fit {
  std::vector<BudgetMinimum> minima;  // ascending compute
  double a = 0, b = 0, log_k = 0;     // N* = exp(log_k) C^a
  std::optional<Interval> a_ci, b_ci;
  std::size_t n_points = 0, budgets_used = 0;
  int bootstrap = 0;
  double confidence = 0.95;
  std::vector<std::pair<double, double>> samples;  // (log_k, a) of each resample
  std::vector<Diagnostic> diagnostics;             // downward_parabola, minimum_outside_range
  double n_opt(double compute) const;
};
// Throws when the observations hold more than one model family or fewer than two usable
// budgets.
Approach2Fit fit_approach2(const std::vector<Observation>& observations,
                           const Approach2Options& options = {});
std::string to_json(const Approach2Fit& fit);  // "method": "approach2"
Approach2Fit approach2_from_json(std::string_view json);
bool is_approach2_json(std::string_view json);
// N* and D* at the budget with intervals over the resamples; the loss is NaN (approach 2 fits
// no loss law).
Recommendation recommend_approach2(const Approach2Fit& fit, double budget,
                                   double confidence = 0.95);


// ---------------------------------------------------------------- choosing the next runs
// Which new runs of a sweep would most shrink the interval on log N* (per expert count) at a
// target budget, per FLOP. Bootstrap fits stand in for the uncertainty on the parameters: the
// spread of their predictions at a candidate, and its covariance with their N*, give the
// expected shrinkage of var(log N*) once that run's loss (with the fit's residual noise) is
// known (a linear-Gaussian update, as in an ensemble Kalman filter). Runs are picked
// greedily by expected shrinkage per FLOP, updating the covariance after each pick.
struct NextRunsOptions {
  double target_budget = 0;  // C at which N* should be sure
  double allowance = 0;      // total 6 N D of the proposed runs
  int max_runs = 5;
  std::vector<int64_t> experts;  // default: those in the observations
  Router router = Router::topk;  // of the MoE runs
  double noise = 0;  // log-loss noise; 0: the larger of the fit's RMSLE and its measured noise
  double min_params = 1e3, max_params = 1e14;
};
struct ProposedRun {
  PlannedRun run;
  int64_t experts = 1;
  double predicted_loss = 0;
  double prediction_sd = 0;            // of log loss over the bootstrap fits
  double sd_before = 0, sd_after = 0;  // of log N* at the target (summed over E as variance)
  double shrink_per_flop = 0;          // (var before - var after) / (6 N D)
  std::string why;
};
struct NextRunsPlan {
  std::vector<ProposedRun> runs;
  double sd_start = 0, sd_end = 0;  // sqrt(sum over E of var log N*) at the target
  double compute = 0;               // of the proposed runs
  std::size_t candidates = 0;
};
// `config` is the sweep's own (shapes snap to its rules, tokens to whole steps); candidates
// whose key is in `existing_keys` are skipped. Needs fit.bootstrap_samples (>= 2).
NextRunsPlan propose_next_runs(const FitResult& fit, const std::vector<Observation>& observations,
                               const SweepConfig& config,
                               const std::vector<std::string>& existing_keys,
                               const NextRunsOptions& options);

// The design study of plan --next: a known truth, a poor starting sweep, `rounds` rounds of
// propose + simulate + refit against the same compute spent as one more IsoFLOP budget.
struct DesignStudyOptions {
  std::map<std::string, double> truth;  // chinchilla's fitted parameters (e, a, b, alpha, beta)
  SweepConfig sweep;                    // the starting sweep (isoflop)
  double noise = 0.01;
  int rounds = 3;
  double allowance_per_round = 0;  // 0: a third of the starting sweep's compute
  int max_runs = 4;
  int bootstrap = 30;
  std::vector<std::string> grid;  // set_grid specs for a faster fit (empty: the catalogue's)
  double target_factor = 100;     // target budget = this x the largest starting budget
  uint64_t seed = 1;
};
struct DesignArm {
  std::string name;
  double compute = 0;         // added on top of the starting sweep
  double interval_ratio = 0;  // hi / lo of the N* interval at the target
  double log_error = 0;       // |log(N* estimate / true N*)|
};
struct DesignStudyResult {
  double true_n_opt = 0, target_budget = 0;
  DesignArm start, next, uniform, uniform_centred;
};
DesignStudyResult run_design_study(const DesignStudyOptions& options);

}  // namespace moescale::fitting
