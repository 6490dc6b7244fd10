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
  std::string where;  // "runs.csv row 17", "run 42": named in error messages
};

// Law column -> CSV header. Keys: N, NT, D, C, E, K, G, loss. N and loss are required, and one
// of D (tokens) or C (compute; D = C / (6 N)). Unmapped NT defaults to N; E, K, G to 1.
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
  Expression compiled() const;
  std::vector<std::string> params() const;  // fitted parameter names
  std::size_t grid_size() const;            // number of starting points
};

std::string_view law_catalogue_toml();  // configs/laws.toml, embedded at build time
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
enum class Holdout { none, largest_compute };
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
  int holdout_budgets = 1;         // how many of the largest compute budgets to hold out
  double budget_tolerance = 0.25;  // a gap of more than 25% in compute starts a new budget
  std::size_t max_starts = 200000;
  // Called (serialised) with "grid" / "polish" / "bootstrap" / "holdout" and done/total counts.
  std::function<void(std::string_view stage, std::size_t done, std::size_t total)> progress;
};

struct Interval {
  double lo = 0, hi = 0;  // percentile interval at FitOptions::confidence
  double sd = 0;
};
struct HoldoutResult {
  std::string method;  // "largest-compute"
  int budgets = 0;
  double min_compute = 0;  // held-out runs have C >= this
  std::size_t n_train = 0, n_test = 0;
  double rmsle = 0;       // on the held-out runs
  double mean_error = 0;  // mean(log L_hat - log L) on them: > 0 means the law over-predicts
  std::map<std::string, double> params;  // reported, fitted without the held-out runs
};
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
// Rescales the shape's counts to n_active exactly, so costs are smooth in N.
Footprint footprint(double n_active, int64_t experts, int64_t top_k, const ShapeFn& shape);

struct ServingCost {
  bool feasible = false;  // false: the weights fit on no G <= max_gpus
  int gpus = 0;           // G per replica
  int64_t batch = 0;
  double tokens_per_second = 0;  // per replica
  double usd_per_million_tokens = 0;
  double weights_gb = 0;
  double kv_gb = 0;
  int min_gpus = 0;  // fewest GPUs the weights fit in
};
ServingCost serving_cost(const Footprint& model, const ServingDemand& demand);
double training_cost_usd(double compute, const Hardware& hw);

struct RecommendOptions {
  double budget = 0;  // C = 6 N D
  std::vector<int64_t> experts{1, 4, 8, 16, 32};
  int64_t top_k = 1;
  double granularity = 1;
  ShapeFn shape = default_shape;
  std::optional<ServingDemand> serving;        // set: inference-aware mode
  std::optional<double> target_loss;           // inference-aware; default: best loss at budget
  double min_params = 1e3, max_params = 1e14;  // search bracket for N_active
};
struct Choice {
  int64_t experts = 1;
  bool feasible = true;  // false: this E cannot reach the target loss (or serve) in the bracket
  double n_active = 0, n_total = 0, tokens = 0, compute = 0, loss = 0;
  // Inference-aware mode only:
  double loss_optimal_n_active = 0;  // N that reaches the same loss with the least compute
  double overtrain_ratio = 0;        // loss_optimal_n_active / n_active (> 1: smaller)
  double train_usd = 0, serve_usd = 0, total_usd = 0;
  ServingCost serving;
};
struct Recommendation {
  std::string law;
  double budget = 0;
  std::vector<Choice> loss_optimal;  // per expert count: lowest loss at the budget
  std::size_t best_loss = 0;         // index into loss_optimal
  bool inference_aware = false;
  double target_loss = 0;
  std::optional<ServingDemand> serving;
  std::vector<Choice> cost_optimal;  // per expert count: cheapest to reach target_loss
  std::size_t best_cost = 0;         // index into cost_optimal
};
// Throws if the law does not depend on N and on D (or C), or the budget is not positive.
Recommendation recommend(const FitResult& fit, const RecommendOptions& options);
std::string to_json(const Recommendation& r);

// The N_active minimising fit's loss at budget C for one expert count (1-D search over log N).
Choice loss_optimal_choice(const FitResult& fit, double budget, int64_t experts,
                           const RecommendOptions& options);

}  // namespace moescale::fitting

// ---------------------------------------------------------------- noise and comparisons
// Plain statistics over final losses (fitting/analysis.cpp), for the report.
namespace moescale::fitting {

// Run-to-run noise from replicates: the pooled standard deviation of log loss,
// sqrt(Σ_sets Σ (log L − mean)² / Σ_sets (n − 1)), over sets of runs of one point
// (same shape and tokens, different seeds). Sets of one run add nothing.
struct ReplicateNoise {
  double sd_log_loss = std::numeric_limits<double>::quiet_NaN();  // NaN: no replicates
  std::size_t sets = 0, runs = 0, dof = 0;                         // sets with >= 2 runs
};
ReplicateNoise replicate_noise(const std::vector<std::vector<double>>& loss_sets);

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
                                        const std::vector<double>& losses_b,
                                        double sd_log_loss, int resamples = 2000,
                                        double confidence = 0.95, uint64_t seed = 1);

}  // namespace moescale::fitting
