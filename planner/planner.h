// moescale planner: model shapes, parameter and FLOP accounting, sweep designs.
// Plain C++ (no torch, no SQL). Every other module takes its counts from here.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moescale {

// The largest values a sweep config may hold (plan refuses more). Commands that take the
// same quantities as flags check them against these, so that every count is
// range-checked where it enters, against one set of limits.
namespace limits {
inline constexpr double kMaxBudget = 1e30;  // FLOPs
inline constexpr int64_t kMaxExperts = int64_t{1} << 16;
}  // namespace limits

enum class Router { dense, topk, rmoe, hash };
std::string to_string(Router r);
Router parse_router(std::string_view name);  // throws on an unknown name

// A decoder-only transformer (pre-RMSNorm, rotary, SwiGLU). Every moe_every-th
// FFN (layers moe_every-1, 2*moe_every-1, ...) is an MoE layer of `experts`.
struct ModelShape {
  int64_t vocab = 256;
  int64_t seq_len = 128;
  int64_t d_model = 64;
  int64_t n_layers = 2;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 0;  // 0: same as n_heads
  int64_t head_dim = 0;    // 0: d_model / n_heads
  int64_t ffn_hidden = 0;  // per expert; 0: 8/3 d_model rounded up to 32
  int64_t experts = 1;
  int64_t top_k = 1;
  int64_t moe_every = 1;
  Router router = Router::dense;
  int64_t router_dim = 128;  // p, RMoE only
  bool tied_embeddings = true;
  // Gate weights renormalised over the k chosen experts; unset: only for k >= 2.
  // Top-1 without it scales the expert output by the router probability (Switch
  // Transformer), the only way the router gets a gradient from the task.
  std::optional<bool> renormalize;
  bool renormalizes() const { return renormalize.value_or(top_k >= 2); }

  // Fills the 0 defaults in; throws std::invalid_argument naming the field.
  ModelShape resolved() const;
  bool is_moe_layer(int64_t layer) const;
  int64_t moe_layers() const;
};

// `active` is the N of C = 6·N·D: it counts a parameter once per use by a token,
// so RMoE's GRU cell, shared by all MoE layers, counts once per MoE layer there
// and once in `total` (what is stored).
struct ParamCount {
  int64_t embedding = 0;  // token embedding (+ output head when untied)
  int64_t active = 0;     // non-embedding parameters one token uses, per use
  int64_t total = 0;      // non-embedding parameters stored, all experts
  int64_t router = 0;     // router parameters one token uses, per use (part of active)
  int64_t all() const { return total + embedding; }
  int64_t all_active() const { return active + embedding; }
};

ParamCount count_params(const ModelShape& shape);

// Training FLOPs per token: the law convention 6*N_active, and the count with
// attention scores and the output head (for time estimates and MFU).
double flops_per_token_6n(const ModelShape& shape);
double flops_per_token(const ModelShape& shape);
// C = 6 * N * D, the compute axis of every law.
double training_compute(double n_active, double tokens);
double tokens_for_compute(double compute, double n_active);

// How the planner turns a target N_active into a real shape.
struct ShapeRules {
  double aspect_ratio = 32;   // d_model / n_layers
  int64_t head_dim = 16;      // with width_step: the widest head, narrower where d is
  int64_t width_step = 0;     // d_model a multiple of this (0: of head_dim * kv_group)
  int64_t kv_group = 1;       // n_heads / n_kv_heads
  int64_t ffn_multiple = 32;  // ffn = 8/3 d rounded to this
  int64_t min_layers = 1;
  int64_t max_layers = 128;
};
// The real shape whose N_active is closest (in log) to target; `base` gives
// vocab, seq_len, experts, routing and embeddings.
ModelShape shape_for_active_params(double target, const ModelShape& base, const ShapeRules& rules);

struct TrainSettings {
  int64_t batch_size = 16;  // sequences per step
  double lr = 3e-3;
  double min_lr_ratio = 0.1;
  double warmup_fraction = 0.05;
  double weight_decay = 0.1;
  double grad_clip = 1.0;
  double aux_loss_weight = 0.01;
  double z_loss_weight = 0.0;
  int64_t eval_interval = 0;        // steps; 0: about 10 evals per run
  int64_t eval_batches = 8;         // batches per evaluation during training
  int64_t final_eval_batches = 64;  // the final loss, the one fits use: a larger sample
  // Specs stored before shared windows drew validation windows from the run's seed, so
  // replicates were scored on different text; they keep that when resumed.
  bool val_windows_per_seed = false;
  int64_t log_interval = 10;
  int64_t checkpoint_interval = 0;  // steps; 0: at evals, at most every 30 s, and at the end
  uint64_t seed = 1;
  // Where `lr` came from: the sweep's rule ("fixed", "power", a preset, "fit"), recorded per run.
  std::string lr_rule = "fixed";
  // A recipe-check neighbour trains at recipe_probe x its point's own rate (1: not a probe).
  // Probes measure the recipe; they are never fit data.
  double recipe_probe = 1;
  int64_t tokens_per_step(int64_t seq_len) const { return batch_size * seq_len; }
};

// One point of a sweep: everything the trainer needs, and the accounting.
struct RunSpec {
  ModelShape shape;
  TrainSettings train;
  int64_t tokens = 0;
  std::string data_dir;  // token folder the run trains on
  int64_t steps() const;
  std::string key() const;  // stable identity within a sweep
};
std::string to_json(const RunSpec& spec);
RunSpec run_spec_from_json(std::string_view json);  // throws on bad input

struct PlannedRun {
  RunSpec spec;
  ParamCount params;
  double compute_6n = 0;    // 6 * N_active * D
  double compute_full = 0;  // with attention and head
  double est_seconds = 0;
  double budget = 0;      // the isoflop budget it belongs to (0 for grid)
  int64_t replicate = 0;  // 0, or the r-th extra seed (train.seed + r) of the same point
};

// ---- learning-rate rules
// lr = lr_ref · (N/n_ref)^n_exponent · (D/d_ref)^d_exponent · E^e_exponent, in a run's own
// N_active, tokens D and experts E. Every exponent 0 is a fixed rate.
struct LrPowerLaw {
  double lr_ref = 3e-3;
  double n_ref = 1, d_ref = 1;
  double n_exponent = 0, d_exponent = 0, e_exponent = 0;
  double rate(double n_active, double tokens, double experts) const;
};
// Where a sweep's runs get their peak learning rate. "fixed" and "power" come from the
// config's keys, a preset from its paper (lr_presets), "fit" from a tuning sweep's fitted
// law (per router; the CLI loads it from the store).
struct LrRule {
  std::string name = "fixed";
  std::string source;  // the paper, or the fits it was read from
  LrPowerLaw law;      // for every router without an entry in per_router
  std::map<std::string, LrPowerLaw> per_router;  // by router name ("dense" for E = 1)
  // The N_active range the law was fitted on (fit only): outside it the rate is extrapolated.
  std::map<std::string, std::pair<double, double>> fitted_range;
  double rate(const ModelShape& shape, double n_active, double tokens) const;
};
struct LrPreset {
  LrRule rule;
  std::string formula;  // as the paper prints it
  std::string notes;    // what N, D and C mean there
};
const std::vector<LrPreset>& lr_presets();
const LrPreset& lr_preset(std::string_view name);  // throws listing the presets

// The tuning stage: a grid of learning rates at a few anchor points of the sweep's own
// design, for every group (experts, router). Its runs form the sweep `<name>-tune`.
struct LrTuning {
  std::vector<double> budgets;       // isoflop budgets to take anchors from; empty: the smallest
  std::vector<int64_t> anchors{3};   // points per budget (the ends and evenly between), one
                                     // value for every budget or one per budget
  std::vector<double> rate_factors;  // times each anchor's rate under the sweep's rule
  std::vector<double> rates;         // absolute rates (instead of rate_factors)
  int64_t seeds = 1;                 // seeds per (anchor, rate)
};

enum class Design { isoflop, grid };

struct SweepConfig {
  std::string name;
  std::string source_path;  // for error messages
  std::string text;         // the TOML as read
  Design design = Design::isoflop;
  std::vector<double> budgets;    // isoflop
  int64_t points_per_budget = 5;  // isoflop
  double span = 4.0;              // isoflop: sizes in [N*/span, N*·span]
  double tokens_per_param = 20;   // isoflop prior optimum D/N at the smallest budget
  // isoflop: the prior N* grows as C^optimum_exponent from the smallest budget; 0.5 keeps
  // tokens_per_param at every budget (Chinchilla). Small models' optima grow faster.
  double optimum_exponent = 0.5;
  // Seeds per replicated point (run-to-run noise), and the budgets whose points are
  // replicated (isoflop; empty: the middle budget). Grid sweeps replicate every point.
  int64_t replicates = 1;
  std::vector<double> replicate_budgets;
  std::vector<double> sizes;         // grid: target N_active
  std::vector<double> token_counts;  // grid
  std::vector<int64_t> experts{1};
  std::vector<Router> routers{Router::topk};
  double max_total_compute = 0;  // 0: no limit
  double device_flops = 2e9;     // achieved FLOP/s, for time estimates
  ModelShape base;
  ShapeRules rules;
  TrainSettings train;
  LrRule lr_rule;
  std::string lr_fit;  // lr_rule = "fit": the tuning sweep whose fitted law gives the rates
  LrTuning tuning;
  bool is_tuning = false;  // the tuning stage's sweep: plan_sweep plans the grid of rates
  std::string data_dir = "data/gcide";
};

// Parses and checks a sweep config; errors name the key and the file.
SweepConfig parse_sweep_config(std::string_view toml_text, const std::string& source);
SweepConfig load_sweep_config(const std::string& path);

// The runs of the design, deduplicated after snapping; throws if the sweep's
// total compute exceeds max_total_compute.
std::vector<PlannedRun> plan_sweep(const SweepConfig& config);
PlannedRun plan_run(const RunSpec& spec, double device_flops, double budget = 0);
// A run of the sweep at this shape and token count: tokens snapped to whole steps, the
// config's training settings, and the rate its lr rule gives (recorded in the spec).
RunSpec sweep_run_spec(const SweepConfig& config, const ModelShape& shape, double tokens);
// The tuning stage of a sweep: the config of `<name>-tune`, whose plan_sweep is the grid of
// rates at the anchors.
SweepConfig lr_tuning_config(const SweepConfig& config);
std::string lr_tuning_sweep_name(const std::string& sweep);

}  // namespace moescale
