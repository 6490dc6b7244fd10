// Sweep designs: IsoFLOP (Chinchilla approach 2) and grid.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

#include "planner/planner.h"

namespace moescale {
namespace {

// Whole steps only: the trainer cannot train a fraction of a batch.
int64_t snap_tokens(double tokens, const ModelShape& shape, const TrainSettings& train) {
  const double per_step = static_cast<double>(train.tokens_per_step(shape.seq_len));
  return static_cast<int64_t>(std::max(1.0, std::round(tokens / per_step)) * per_step);
}

// One base shape per (experts, router); E = 1 is the dense baseline, once.
std::vector<ModelShape> routed_bases(const SweepConfig& c) {
  std::vector<ModelShape> bases;
  for (int64_t e : c.experts) {
    ModelShape base = c.base;
    base.experts = e;
    if (e == 1) {
      base.router = Router::dense;
      base.top_k = 1;
      bases.push_back(base);
      continue;
    }
    for (Router r : c.routers) {
      if (r == Router::dense) continue;
      base.router = r;
      bases.push_back(base);
    }
  }
  return bases;
}

std::vector<double> isoflop_sizes(const SweepConfig& c, double budget) {
  const double optimum = std::sqrt(budget / (6.0 * c.tokens_per_param));
  std::vector<double> sizes;
  for (int64_t i = 0; i < c.points_per_budget; ++i) {
    const double t = c.points_per_budget == 1 ? 0.0 : 2.0 * i / (c.points_per_budget - 1) - 1.0;
    sizes.push_back(optimum * std::pow(c.span, t));
  }
  return sizes;
}

// The budgets whose points get extra seeds: those named, or the middle one.
std::set<double> replicated_budgets(const SweepConfig& c) {
  if (c.replicates <= 1 || c.budgets.empty()) return {};
  if (!c.replicate_budgets.empty()) return {c.replicate_budgets.begin(), c.replicate_budgets.end()};
  std::vector<double> sorted = c.budgets;
  std::sort(sorted.begin(), sorted.end());
  return {sorted[(sorted.size() - 1) / 2]};
}

}  // namespace

PlannedRun plan_run(const RunSpec& spec, double device_flops, double budget) {
  PlannedRun p;
  p.spec = spec;
  p.spec.shape = spec.shape.resolved();
  p.params = count_params(p.spec.shape);
  const double tokens = static_cast<double>(spec.tokens);
  p.compute_6n = training_compute(static_cast<double>(p.params.active), tokens);
  p.compute_full = flops_per_token(p.spec.shape) * tokens;
  p.est_seconds = p.compute_full / device_flops;
  p.budget = budget;
  return p;
}

std::vector<PlannedRun> plan_sweep(const SweepConfig& c) {
  std::vector<PlannedRun> runs;
  std::set<std::string> keys;
  const std::set<double> replicated = replicated_budgets(c);
  auto add = [&](const ModelShape& shape, double tokens, double budget) {
    const bool replicate = c.design == Design::grid || replicated.count(budget) > 0;
    for (int64_t r = 0; r < (replicate ? c.replicates : 1); ++r) {
      RunSpec spec{shape, c.train, snap_tokens(tokens, shape, c.train), c.data_dir};
      spec.train.seed = c.train.seed + static_cast<uint64_t>(r);  // a new key per seed
      if (!keys.insert(spec.key()).second) continue;
      runs.push_back(plan_run(spec, c.device_flops, budget));
      runs.back().replicate = r;
    }
  };
  for (const ModelShape& base : routed_bases(c)) {
    if (c.design == Design::isoflop) {
      for (double budget : c.budgets)
        for (double n : isoflop_sizes(c, budget)) {
          const ModelShape shape = shape_for_active_params(n, base, c.rules);
          const double active = static_cast<double>(count_params(shape).active);
          add(shape, tokens_for_compute(budget, active), budget);
        }
    } else {
      for (double n : c.sizes)
        for (double d : c.token_counts) add(shape_for_active_params(n, base, c.rules), d, 0);
    }
  }
  double total = 0;
  for (const PlannedRun& r : runs) total += r.compute_6n;
  if (c.max_total_compute > 0 && total > c.max_total_compute)
    throw std::invalid_argument(fmt::format(
        "sweep '{}' needs {:.3g} FLOPs, over max_total_compute = {:.3g} in {}; lower the "
        "budgets or points_per_budget, or raise the limit",
        c.name, total, c.max_total_compute, c.source_path));
  return runs;
}

}  // namespace moescale
