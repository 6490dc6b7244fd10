// moescale fitting: scaling-law expressions, robust multi-start fits with Ceres, bootstrap
// intervals and held-out error, CSV import of runs, and the recommender (loss-optimal and
// inference-aware). Plain C++: no torch, no SQL. Every error is a std::exception whose message
// says what is wrong, where (row, column, parameter) and, where it helps, how to fix it.
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

// ---------------------------------------------------------------- expressions
// Grammar: sum := product (('+'|'-') product)*; product := unary (('*'|'/') unary)*;
// unary := '-' unary | power; power := atom ('^' unary)?  (right-associative, binds tighter
// than unary minus on its left: -x^2 = -(x^2)); atom := number | name | name '(' sum ')' |
// '(' sum ')'. Functions: log, exp. Columns: N, NT, D, E, K, G, C (= 6 N D); any other name
// is a parameter. Definitions (name = expression) are inlined where their name appears.
class Program;
class Expression {
 public:
  // Throws std::invalid_argument: `law "E0 + (a": expected ')' at column 8`.
  static Expression parse(std::string_view text, std::string_view what = "law",
                          const std::vector<std::pair<std::string, std::string>>& defs = {});
  const std::string& text() const { return text_; }
  const std::vector<std::string>& params() const;  // in order of first appearance
  std::vector<std::string> columns() const;        // the columns it reads
  bool uses(std::string_view column) const;
  std::string to_string() const;  // fully parenthesised, definitions inlined
  // params are in params() order.
  double evaluate(std::span<const double> params, const Observation& x) const;
  // Value, and d value / d params by forward-mode automatic differentiation (Ceres Jets).
  double gradient(std::span<const double> params, const Observation& x,
                  std::span<double> grad) const;
  const Program& program() const { return *program_; }

 private:
  std::string text_;
  std::string canonical_;
  std::shared_ptr<const Program> program_;
};
inline constexpr int kMaxParams = 16;  // Jet size limit of the fitter

// ---------------------------------------------------------------- laws
struct ParamGrid {
  std::string name;
  std::vector<double> values;  // starting values
  // The fit stays within [lower, upper]: exponents of these laws are positive by their
  // meaning, and small noisy sweeps otherwise drift to nonsense such as negative alpha.
  double lower = -std::numeric_limits<double>::infinity();
  double upper = std::numeric_limits<double>::infinity();
};
struct ReportedParam {
  std::string name;        // e.g. "E"
  std::string expression;  // over fitted parameters, e.g. "exp(e)"
};
struct Law {
  std::string name;
  std::string title;    // one line
  std::string formula;  // as in the paper, for people
  std::string source;   // citation
  std::string expression;
  std::vector<std::pair<std::string, std::string>> definitions;
  std::vector<ParamGrid> grid;          // one per fitted parameter, expression order
  std::vector<ReportedParam> reported;  // what results show; defaults to the fitted ones
  // The paper's values of the fitted parameters, where it gives them (else empty).
  std::map<std::string, double> published;
  Expression compiled() const;
  std::vector<std::string> params() const;  // fitted parameter names
  // Number of starting points: the grid product over the parameters the fit searches (not the
  // linear ones, which it solves in each evaluation).
  std::size_t grid_size() const;
};

// The reported parameters (e.g. A = exp(a)) at the given fitted ones.
std::map<std::string, double> reported_values(const std::vector<ReportedParam>& reported,
                                              const std::map<std::string, double>& fitted);
std::vector<Law> parse_law_catalogue(std::string_view toml_text, const std::string& source);
const std::vector<Law>& builtin_laws();
const Law& builtin_law(std::string_view name);  // throws listing the known names
// A user law; each parameter starts from {0, 0.5, 1} unless set_grid says otherwise.
Law custom_law(std::string_view expression, std::string name = "custom");
// "alpha=0:2:0.5" (from:to:step, inclusive) or "alpha=0.1,0.3,1"; throws on unknown names.
void set_grid(Law& law, std::string_view spec);
// "alpha=0:3" (either end may be empty): the fit keeps alpha in [0, 3].
void set_bounds(Law& law, std::string_view spec, const std::string& where = "--bound");

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

// ---------------------------------------------------------------- recommending
// A GPU for serving and training. Presets: h100, a100, h200 (list prices are rough
// assumptions: override them).
struct Hardware {
  std::string name;
  double memory_gb = 80;
  double bandwidth_tbs = 3.35;  // HBM TB/s
  double bf16_tflops = 989;     // dense peak
  double usd_per_hour = 2.5;
  double memory_usable = 0.9;  // share of memory for weights + KV (rest: activations, runtime)
  double serve_mfu = 0.5;      // achieved share of peak in compute-bound serving
  double train_mfu = 0.4;      // achieved share of peak in training
};
Hardware hardware_preset(std::string_view name);  // throws listing the presets
// "memory_gb=141", "usd_per_hour=3.1", ... (the Hardware field names).
void apply_hardware_override(Hardware& hw, std::string_view assignment);

struct ServingDemand {
  double tokens = 0;             // T: tokens to generate over the model's life
  int64_t prompt_tokens = 1024;  // per request
  int64_t output_tokens = 256;   // per request
  int64_t max_batch = 256;       // concurrent sequences per replica
  int max_gpus = 64;             // per replica
  Hardware hardware = hardware_preset("h100");
};

// What serving needs to know about a model.
struct Footprint {
  double n_active = 0, n_total = 0, n_embedding = 0;
  double experts = 1, top_k = 1;
  double kv_bytes_per_token = 0;  // 2 (K,V) * n_layers * n_kv_heads * head_dim * 2 bytes
};
// Turns N_active and E into a real shape (N_total, KV size). Default: the planner's
// shape_for_active_params with default_serving_rules() and a 32k vocabulary.
using ShapeFn = std::function<ModelShape(double n_active, int64_t experts, int64_t top_k)>;
ShapeRules default_serving_rules();
ModelShape default_shape(double n_active, int64_t experts, int64_t top_k);
// The serving shape of a fitted sweep: its router and MoE spacing (every moe_every-th FFN is
// an MoE layer), at serving scale (default_serving_rules, 32k vocabulary). E = 1 is dense.
ShapeFn serving_shape_like(Router router, int64_t moe_every);
// Rescales the shape's counts to n_active exactly, so costs are smooth in N.
Footprint footprint(double n_active, int64_t experts, int64_t top_k, const ShapeFn& shape);

struct ServingCost {
  bool feasible = false;  // false: the weights fit on no G <= max_gpus
  int gpus = 0;           // G per replica
  int64_t batch = 0;
  double tokens_per_second = 0;  // per replica
  double usd_per_million_tokens = 0;
  double weights_gb = 0;
  double kv_gb = 0;  // at average occupancy, p + o/2 tokens per request
  int min_gpus = 0;  // fewest GPUs the weights fit in
};
ServingCost serving_cost(const Footprint& model, const ServingDemand& demand);
double training_cost_usd(double compute, const Hardware& hw);

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

// The law a fit was made with: the catalogue law of that name (bounds kept) or its expression.
Law law_of(const FitResult& fit);
// Adds bootstrap parameter sets to a fit that has none: `options.bootstrap` resamples of the
// observations, each refitted from the fit's own optimum (no grid search).
FitResult with_bootstrap(const FitResult& fit, const std::vector<Observation>& observations,
                         const FitOptions& options);

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

// ---------------------------------------------------------------- simulating
// Parameter values for a law from "name=value" assignments. Names are the law's fitted
// parameters, or reported ones defined as exp(x) or as x (chinchilla: E=1.69 A=406.4 ...).
std::map<std::string, double> law_parameters(const Law& law,
                                             const std::vector<std::string>& assignments);
// Draws loss = L(x) * exp(noise * z), z standard normal, from a generator seeded by
// (seed, key): the same run keeps its loss when other runs are added to the sweep.
double simulated_loss(const Expression& law, std::span<const double> params, const Observation& x,
                      double noise, uint64_t seed, std::string_view key);

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

// ---------------------------------------------------------------- noise and comparisons
// Plain statistics over final losses (fitting/analysis.cpp), for the report.
namespace moescale::fitting {

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
