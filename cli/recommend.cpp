// moescale recommend: from a stored fit, how many experts, parameters and tokens.
#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/common.h"
#include "db/db.h"
#include "fitting/fitting.h"

namespace moescale::cli {
namespace {

struct RecommendArgs {
  std::string db, hardware = "h100";
  int64_t fit_id = 0, top_k = 2, prompt_tokens = 1024, output_tokens = 256;
  double budget = 0, serve_tokens = 0, target_loss = 0;
  std::vector<int64_t> experts{1, 4, 8, 16, 32};
  std::vector<std::string> overrides;
  bool json = false;
};

fitting::RecommendOptions options_of(const RecommendArgs& a) {
  if (!(a.budget > 0))
    throw std::invalid_argument("--budget must be a positive number of FLOPs, e.g. 1e21");
  fitting::RecommendOptions o;
  o.budget = a.budget;
  o.experts = a.experts;
  o.top_k = a.top_k;
  if (a.target_loss > 0) o.target_loss = a.target_loss;
  if (a.serve_tokens > 0) {
    fitting::ServingDemand d;
    d.tokens = a.serve_tokens;
    d.prompt_tokens = a.prompt_tokens;
    d.output_tokens = a.output_tokens;
    d.hardware = fitting::hardware_preset(a.hardware);
    for (const std::string& o : a.overrides) fitting::apply_hardware_override(d.hardware, o);
    o.serving = d;
  }
  return o;
}

void print_loss_optimal(const fitting::Recommendation& r) {
  Table t({"", "E", "N_active", "N_total", "tokens", "tokens/param", "loss"});
  for (size_t i = 0; i < r.loss_optimal.size(); ++i) {
    const fitting::Choice& c = r.loss_optimal[i];
    t.add({i == r.best_loss ? "*" : "", std::to_string(c.experts), human_count(c.n_active),
           human_count(c.n_total), human_count(c.tokens),
           fmt::format("{:.1f}", c.tokens / c.n_active), fmt::format("{:.4f}", c.loss)});
  }
  fmt::print("loss-optimal at C = {} FLOPs (law {}):\n{}", sci(r.budget), r.law, t.render());
}

void print_cost_optimal(const fitting::Recommendation& r) {
  const auto& hw = r.serving->hardware;
  fmt::print("\ncheapest way to reach loss {:.4f}, serving {} tokens on {} (${:.2f}/GPU-hour):\n",
             r.target_loss, human_count(r.serving->tokens), hw.name, hw.usd_per_hour);
  Table t({"", "E", "N_active", "N_total", "tokens", "C=6ND", "smaller by", "GPUs", "$/M tok",
           "train $", "serve $", "total $"});
  for (size_t i = 0; i < r.cost_optimal.size(); ++i) {
    const fitting::Choice& c = r.cost_optimal[i];
    if (!c.feasible) {
      t.add({"", std::to_string(c.experts), "unreachable"});
      continue;
    }
    t.add({i == r.best_cost ? "*" : "", std::to_string(c.experts), human_count(c.n_active),
           human_count(c.n_total), human_count(c.tokens), sci(c.compute),
           fmt::format("{:.2f}x", c.overtrain_ratio), std::to_string(c.serving.gpus),
           fmt::format("{:.4f}", c.serving.usd_per_million_tokens), human_count(c.train_usd),
           human_count(c.serve_usd), human_count(c.total_usd)});
  }
  fmt::print("{}", t.render());
  fmt::print("'smaller by': loss-optimal N_active for that loss over the chosen one\n");
}

void run_recommend(const RecommendArgs& a) {
  Database db(default_database_path(a.db), Database::Mode::must_exist);
  const FitRecord record = db.fit(a.fit_id);
  const fitting::FitResult fit = fitting::fit_result_from_json(record.result);
  const fitting::Recommendation r = fitting::recommend(fit, options_of(a));
  if (a.json) {
    fmt::print("{}\n", fitting::to_json(r));
    return;
  }
  fmt::print("fit {} of sweep '{}' ({}), group {}\n", record.id, record.sweep, record.law,
             record.group);
  print_loss_optimal(r);
  if (r.inference_aware) print_cost_optimal(r);
}

}  // namespace

void add_recommend_command(CLI::App& app) {
  auto a = std::make_shared<RecommendArgs>();
  CLI::App* cmd = app.add_subcommand(
      "recommend",
      "Recommend expert count, N_active and tokens for a training budget from a stored fit.\n"
      "With --serve-tokens, also count serving cost (all experts' weights in GPU memory, KV "
      "cache in the rest, roofline throughput) and pick the cheapest way to the target loss.");
  cmd->add_option("--fit", a->fit_id, "fit id (printed by `moescale fit`)")->required();
  cmd->add_option("--budget", a->budget, "training compute C = 6·N·D in FLOPs")->required();
  cmd->add_option("--experts", a->experts, "expert counts to compare")
      ->delimiter(',')
      ->default_str("1,4,8,16,32");
  cmd->add_option("--top-k", a->top_k, "experts per token of the MoE choices")->default_val(2);
  cmd->add_option("--serve-tokens", a->serve_tokens, "tokens to serve over the model's life");
  cmd->add_option("--target-loss", a->target_loss, "loss to reach (default: the budget's best)");
  cmd->add_option("--hardware", a->hardware, "GPU preset: h100, a100, h200")->default_val("h100");
  cmd->add_option("--hw", a->overrides,
                  "override a hardware figure: memory_gb=, bandwidth_tbs=, "
                  "bf16_tflops=, usd_per_hour=, serve_mfu=, train_mfu=");
  cmd->add_option("--prompt-tokens", a->prompt_tokens, "prompt tokens per request")
      ->default_val(1024);
  cmd->add_option("--output-tokens", a->output_tokens, "generated tokens per request")
      ->default_val(256);
  add_db_option(cmd, a->db);
  cmd->add_flag("--json", a->json, "print JSON");
  cmd->callback([a] { run_recommend(*a); });
}

}  // namespace moescale::cli
