// moescale recommend: from a stored fit, how many experts, parameters and tokens, with
// bootstrap intervals, and (with serving demand) the inference-aware choice.
#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/fit_data.h"
#include "db/db.h"
#include "fitting/fitting.h"

namespace moescale::cli {
namespace {

struct RecommendArgs {
  std::string db, hardware = "h100", mode;
  static constexpr int64_t kNotGiven = std::numeric_limits<int64_t>::min();
  int64_t top_k = kNotGiven;  // kNotGiven: the sweep's
  int64_t fit_id = 0, prompt_tokens = 1024, output_tokens = 256, reference_experts = 0;
  double budget = 0, serve_tokens = 0, target_loss = 0, max_serve_cost = 0, confidence = 0.95;
  int bootstrap = 100, max_gpus = 64;
  std::vector<int64_t> experts{1, 4, 8, 16, 32};
  std::vector<std::string> overrides;
  bool json = false, quiet = false;
};

// Expert counts and top-k within plan's limits, and k at most every MoE choice's E: past
// them the accounting overflows (N_total fell as E grew, and 2^63 - 1 experts gave -nan).
void check_counts(const std::vector<int64_t>& experts, int64_t top_k, bool top_k_given) {
  if (experts.empty()) throw std::invalid_argument("--experts needs at least one expert count");
  for (const int64_t e : experts)
    if (e < 1 || e > limits::kMaxExperts)
      throw std::invalid_argument(fmt::format(
          "--experts {} is out of range: each count must be from 1 to {} (plan's limit)", e,
          limits::kMaxExperts));
  if (top_k < 1 || top_k > limits::kMaxExperts)
    throw std::invalid_argument(
        fmt::format("--top-k {} is out of range: experts per token must be from 1 to {}", top_k,
                    limits::kMaxExperts));
  for (const int64_t e : experts)
    if (e > 1 && top_k > e)
      throw std::invalid_argument(fmt::format(
          "{} {} is more than the {} experts of --experts {}: a token cannot use more experts "
          "than there are; give --top-k at most {}{}",
          top_k_given ? "--top-k" : "the sweep's top_k", top_k, e, e, e,
          top_k_given ? "" : " (or pass --top-k)"));
}

fitting::RecommendOptions options_of(const RecommendArgs& a, const std::optional<SweepShape>& s) {
  if (!(a.budget > 0) || a.budget > limits::kMaxBudget)
    throw std::invalid_argument(fmt::format(
        "--budget {:g} is outside what a law can be asked about: give positive FLOPs up to {:g} "
        "(plan's limit), e.g. 1e21",
        a.budget, limits::kMaxBudget));
  fitting::RecommendOptions o;
  o.budget = a.budget;
  o.experts = a.experts;
  const bool top_k_given = a.top_k != RecommendArgs::kNotGiven;
  o.top_k = top_k_given ? a.top_k : s ? s->top_k : 2;
  check_counts(o.experts, o.top_k, top_k_given);
  if (s) o.shape = serving_shape_like(s->router, s->moe_every);
  o.confidence = a.confidence;
  if (a.target_loss > 0) o.target_loss = a.target_loss;
  if (a.reference_experts > 0) o.reference_experts = a.reference_experts;
  if (a.max_serve_cost > 0) o.max_serve_cost = a.max_serve_cost;
  const bool serving = a.serve_tokens > 0 || a.max_serve_cost > 0 || !a.mode.empty();
  if (serving) {
    ServingDemand d;
    d.tokens = a.serve_tokens;
    d.prompt_tokens = a.prompt_tokens;
    d.output_tokens = a.output_tokens;
    d.max_gpus = a.max_gpus;
    d.hardware = hardware_preset(a.hardware);
    for (const std::string& o : a.overrides) apply_hardware_override(d.hardware, o);
    o.serving = d;
    o.mode = a.mode == "total-cost" ? fitting::InferenceMode::total_cost
                                    : fitting::InferenceMode::budget;
  }
  return o;
}

void print_loss_optimal(const fitting::Recommendation& r, const fitting::RecommendOptions& o) {
  const bool ci = r.bootstrap > 0;
  bool edge = false;
  for (const fitting::Choice& c : r.loss_optimal) edge = edge || c.edge != fitting::Edge::none;
  const Table t = loss_optimal_table(r);
  fmt::print("loss-optimal at C = {} FLOPs (law {}):\n{}", sci(r.budget), r.law, t.render());
  if (ci)
    fmt::print("[low, high]: {:.0f}% intervals over {} bootstrap fits{}\n", 100 * r.confidence,
               r.bootstrap,
               r.loss_optimal[0].p_best
                   ? "; p_best: share of them in which that E has the lowest loss"
                   : "");
  if (edge)
    fmt::print(
        "edge: the loss keeps falling up to the end of the search range [{}, {}] of "
        "N_active, so that row is no optimum; the law does not bracket one at this "
        "budget (widen the sweep's sizes, or distrust the fit here)\n",
        human_count(o.min_params), human_count(std::min(o.max_params, r.budget / 6)));
  if (!r.note.empty()) fmt::print("note: {}\n", r.note);
  if (r.compute_waste)
    fmt::print(
        "compute waste: {:.2f}% of the budget, averaged over the bootstrap fits (the extra "
        "compute the starred (E, N) needs to reach each fit's own best loss){}\n",
        100 * *r.compute_waste,
        r.waste_unreachable && *r.waste_unreachable > 0
            ? fmt::format("; in {:.0f}% of the fits it cannot reach it at all",
                          100 * *r.waste_unreachable)
            : "");
}

std::string smaller_text(const fitting::Choice& c) {
  if (!(c.overtrain_ratio > 0)) return "-";
  return fmt::format("{:.2f}x ({:.0f}%)", c.overtrain_ratio, 100 * (1 - 1 / c.overtrain_ratio));
}

void print_budget_mode(const fitting::Recommendation& r) {
  const auto& hw = r.serving->hardware;
  if (r.max_serve_cost)
    fmt::print(
        "\nbudget mode: best loss at C = {} FLOPs serving under ${:.4g} per million tokens "
        "on {}:\n",
        sci(r.budget), *r.max_serve_cost, hw.name);
  else
    fmt::print("\nbudget mode: cheapest to serve at C = {} FLOPs reaching loss {:.4f}{}, on {}:\n",
               sci(r.budget), r.target_loss,
               r.reference_experts
                   ? fmt::format(" (the loss-optimal E = {}, cheapest loss-optimal model to serve)",
                                 *r.reference_experts)
                   : "",
               hw.name);
  Table t({"", "E", "N_active", "N_total", "tokens", "C=6ND", "loss", "smaller than loss-opt",
           "GPUs", "$/M tok", "serve $"});
  for (size_t i = 0; i < r.cost_optimal.size(); ++i) {
    const fitting::Choice& c = r.cost_optimal[i];
    if (!c.feasible) {
      t.add({"", std::to_string(c.experts),
             r.max_serve_cost ? "over the serving cap" : "cannot reach the loss at this budget"});
      continue;
    }
    t.add({r.best_cost == i ? "*" : "", std::to_string(c.experts), human_count(c.n_active),
           human_count(c.n_total), human_count(c.tokens), sci(c.compute),
           fmt::format("{:.4f}", c.loss), smaller_text(c), std::to_string(c.serving.gpus),
           fmt::format("{:.4f}", c.serving.usd_per_million_tokens), human_count(c.serve_usd)});
  }
  fmt::print("{}", t.render());
  fmt::print(
      "'smaller than loss-opt': that E's loss-optimal N_active at this budget over the "
      "chosen one; compute is the budget on every line\n");
}

void print_total_cost_mode(const fitting::Recommendation& r) {
  const auto& hw = r.serving->hardware;
  fmt::print(
      "\ntotal-cost mode: cheapest way to reach loss {:.4f}, serving {} tokens on {} "
      "(${:.2f}/GPU-hour); compute may exceed the budget:\n",
      r.target_loss, human_count(r.serving->tokens), hw.name, hw.usd_per_hour);
  Table t({"", "E", "N_active", "N_total", "tokens", "C=6ND", "smaller by", "GPUs", "$/M tok",
           "train $", "serve $", "total $"});
  for (size_t i = 0; i < r.cost_optimal.size(); ++i) {
    const fitting::Choice& c = r.cost_optimal[i];
    if (!c.feasible) {
      t.add({"", std::to_string(c.experts), "unreachable"});
      continue;
    }
    t.add({r.best_cost == i ? "*" : "", std::to_string(c.experts), human_count(c.n_active),
           human_count(c.n_total), human_count(c.tokens),
           sci(c.compute) + (c.over_budget ? " OVER BUDGET" : ""), smaller_text(c),
           std::to_string(c.serving.gpus), fmt::format("{:.4f}", c.serving.usd_per_million_tokens),
           human_count(c.train_usd), human_count(c.serve_usd), human_count(c.total_usd)});
  }
  fmt::print("{}", t.render());
  fmt::print(
      "'smaller by': loss-optimal N_active for that loss over the chosen one; OVER BUDGET: "
      "more compute than --budget {}\n",
      sci(r.budget));
}

void run_recommend(const RecommendArgs& a) {
  Database db(default_database_path(a.db), Database::Mode::must_exist);
  const FitRecord record = db.fit(a.fit_id);
  const auto shape = sweep_shape(db, record);
  const fitting::RecommendOptions options = options_of(a, shape);
  const fitting::Recommendation r =
      fitting::is_approach2_json(record.result)
          ? fitting::recommend_approach2(fitting::approach2_from_json(record.result), a.budget,
                                         a.confidence)
          : fitting::recommend(fit_with_bootstrap(db, record, a.bootstrap, a.confidence, a.quiet),
                               options);
  if (a.json) {
    fmt::print("{}\n", fitting::to_json(r));
    return;
  }
  fmt::print("fit {} of sweep '{}' ({}), group {}\n", record.id, record.sweep, record.law,
             record.group);
  print_loss_optimal(r, options);
  if (!r.inference_aware) return;
  if (r.mode == fitting::InferenceMode::budget)
    print_budget_mode(r);
  else
    print_total_cost_mode(r);
}

}  // namespace

void add_recommend_command(CLI::App& app) {
  auto a = std::make_shared<RecommendArgs>();
  CLI::App* cmd = app.add_subcommand(
      "recommend",
      "Recommend expert count, N_active and tokens for a training budget from a stored fit, "
      "with bootstrap intervals.\n"
      "With --serve-tokens or --max-serve-cost, also count serving cost (all experts' weights "
      "in GPU memory, KV cache in the rest, roofline throughput): --mode budget (default) keeps "
      "the training budget and picks the cheapest model to serve at the reference loss, or the "
      "best loss under a serving cost cap; --mode total-cost minimises training + serving "
      "dollars at a target loss, compute free to grow.");
  cmd->add_option("--fit", a->fit_id, "fit id (printed by `moescale fit`)")->required();
  cmd->add_option("--budget", a->budget, "training compute C = 6·N·D in FLOPs")->required();
  cmd->add_option("--experts", a->experts, "expert counts to compare")
      ->delimiter(',')
      ->default_str("1,4,8,16,32");
  cmd->add_option("--top-k", a->top_k, "experts per token of the MoE choices")
      ->default_str("the sweep's, else 2");
  cmd->add_option("--bootstrap", a->bootstrap,
                  "resamples to refit for intervals when the fit has no bootstrap sets (0: none)")
      ->default_val(100);
  cmd->add_option("--confidence", a->confidence, "level of the intervals")->default_val(0.95);
  cmd->add_option("--mode", a->mode, "budget or total-cost (implies serving)")
      ->check(CLI::IsMember({"budget", "total-cost"}))
      ->default_str("budget when serving is counted");
  cmd->add_option("--serve-tokens", a->serve_tokens, "tokens to serve over the model's life");
  cmd->add_option("--max-serve-cost", a->max_serve_cost,
                  "budget mode: best loss serving under this many USD per million tokens");
  cmd->add_option("--target-loss", a->target_loss,
                  "loss to reach (budget mode: default the loss-optimal loss of the E cheapest "
                  "to serve; total-cost: the budget's best)");
  cmd->add_option("--reference-experts", a->reference_experts,
                  "budget mode: the E whose loss-optimal loss is the target");
  cmd->add_option("--hardware", a->hardware, "GPU preset: h100, a100, h200")->default_val("h100");
  cmd->add_option("--hw", a->overrides,
                  "override a hardware figure: memory_gb=, bandwidth_tbs=, "
                  "bf16_tflops=, usd_per_hour=, serve_mfu=, train_mfu=");
  cmd->add_option("--prompt-tokens", a->prompt_tokens, "prompt tokens per request")
      ->default_val(1024);
  cmd->add_option("--output-tokens", a->output_tokens, "generated tokens per request")
      ->default_val(256);
  cmd->add_option("--max-gpus", a->max_gpus, "GPUs per serving replica at most")->default_val(64);
  add_db_option(cmd, a->db);
  cmd->add_flag("--json", a->json, "print JSON");
  cmd->add_flag("-q,--quiet", a->quiet, "no progress");
  cmd->callback([a] { run_recommend(*a); });
}

}  // namespace moescale::cli
