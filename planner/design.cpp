// Sweep designs: IsoFLOP (Chinchilla approach 2) and grid.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

#include "planner/planner.h"

namespace moescale {
namespace {

// Limits that keep a plan quick to make and its counts inside int64.
constexpr size_t kMaxPlannedPoints = 20000;
constexpr double kMaxRunTokens = 1e18;

// Whole steps only: the trainer cannot train a fraction of a batch.
int64_t snap_tokens(double tokens, const ModelShape& shape, const TrainSettings& train,
                    const SweepConfig& c) {
  const double per_step = static_cast<double>(train.tokens_per_step(shape.seq_len));
  const double snapped = std::max(1.0, std::round(tokens / per_step)) * per_step;
  if (!(snapped <= kMaxRunTokens))
    throw std::invalid_argument(fmt::format(
        "sweep '{}' in {}: a run of {} active parameters would train on {:.3g} tokens, over the "
        "limit of {:.0e}; lower the budgets or tokens",
        c.name, c.source_path, count_params(shape).active, snapped, kMaxRunTokens));
  return static_cast<int64_t>(snapped);
}

// shape_for_active_params falls back to a default model when no shape fits the
// rules; that must be an error, not a dense model in place of the one asked for.
ModelShape snapped_shape(double target, const ModelShape& base, const SweepConfig& c) {
  const ModelShape shape = shape_for_active_params(target, base, c.rules);
  const bool fits = shape.experts == base.experts && shape.router == base.router &&
                    (c.rules.width_step > 0 ? shape.head_dim <= c.rules.head_dim
                                            : shape.head_dim == c.rules.head_dim) &&
                    shape.n_heads == shape.n_kv_heads * c.rules.kv_group &&
                    shape.n_layers >= c.rules.min_layers && shape.n_layers <= c.rules.max_layers &&
                    (base.experts == 1 || shape.moe_layers() > 0);
  if (!fits)
    throw std::invalid_argument(fmt::format(
        "sweep '{}' in {}: no model shape with {} experts fits the [model] rules (head_dim {}, "
        "kv_group {}, layers {}..{}, moe_every {}); loosen them",
        c.name, c.source_path, base.experts, c.rules.head_dim, c.rules.kv_group, c.rules.min_layers,
        c.rules.max_layers, base.moe_every));
  return shape;
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

// The prior optimum N*: sqrt(C/(6·tokens_per_param)) at the smallest budget, growing as
// C^optimum_exponent from there, so tokens per parameter fall with C when the exponent is
// above 0.5.
double prior_optimum(const SweepConfig& c, double budget) {
  const double smallest = *std::min_element(c.budgets.begin(), c.budgets.end());
  return std::sqrt(smallest / (6.0 * c.tokens_per_param)) *
         std::pow(budget / smallest, c.optimum_exponent);
}

std::vector<double> isoflop_sizes(const SweepConfig& c, double budget) {
  const double optimum = prior_optimum(c, budget);
  std::vector<double> sizes;
  for (int64_t i = 0; i < c.points_per_budget; ++i) {
    const double t = c.points_per_budget == 1 ? 0.0 : 2.0 * i / (c.points_per_budget - 1) - 1.0;
    sizes.push_back(optimum * std::pow(c.span, t));
  }
  return sizes;
}

// The shapes of a budget's sizes. Small models snap to few shapes, so neighbouring sizes
// can land on one shape, or on two a few percent apart, and the budget would cover less
// than its span (a minimum at the edge of the narrower range is no bracket). A point less
// than half a grid step from its neighbour nearer the centre looks outward for a shape at
// least that far, up to half a grid step past its own size; if there is none it stays, and a
// duplicate is dropped later.
std::vector<ModelShape> isoflop_shapes(const SweepConfig& c, const ModelShape& base,
                                       double budget) {
  const std::vector<double> sizes = isoflop_sizes(c, budget);
  std::vector<ModelShape> shapes;
  for (double n : sizes) shapes.push_back(snapped_shape(n, base, c));
  if (sizes.size() < 2) return shapes;
  const double grid_step = sizes[1] / sizes[0];
  auto log_active = [](const ModelShape& s) {
    return std::log(static_cast<double>(count_params(s).active));
  };
  auto spread = [&](std::size_t i, std::size_t inner, double direction) {
    const double apart = 0.5 * std::log(grid_step),
                 limit = sizes[i] * std::pow(grid_step, 0.5 * direction);
    for (double t = sizes[i]; direction * (limit - t) >= 0; t *= std::pow(1.05, direction)) {
      const ModelShape s = snapped_shape(t, base, c);
      if (direction * (log_active(s) - log_active(shapes[inner])) >= apart) {
        shapes[i] = s;
        return;
      }
    }
  };
  const std::size_t mid = sizes.size() / 2;
  for (std::size_t i = mid; i-- > 0;) spread(i, i + 1, -1);
  for (std::size_t i = mid + 1; i < sizes.size(); ++i) spread(i, i - 1, +1);
  return shapes;
}

// The budgets whose points get extra seeds: those named, or the middle one.
std::set<double> replicated_budgets(const SweepConfig& c) {
  if (c.replicates <= 1 || c.budgets.empty()) return {};
  if (!c.replicate_budgets.empty()) return {c.replicate_budgets.begin(), c.replicate_budgets.end()};
  std::vector<double> sorted = c.budgets;
  std::sort(sorted.begin(), sorted.end());
  return {sorted[(sorted.size() - 1) / 2]};
}

// Every point (shape, tokens, budget) of one group of the isoflop or grid design.
template <typename Add>
void plan_group(const SweepConfig& c, const ModelShape& base, Add&& add) {
  if (c.design == Design::isoflop) {
    for (double budget : c.budgets)
      for (const ModelShape& shape : isoflop_shapes(c, base, budget)) {
        const double active = static_cast<double>(count_params(shape).active);
        add(shape, tokens_for_compute(budget, active), budget);
      }
  } else {
    for (double n : c.sizes)
      for (double d : c.token_counts) add(snapped_shape(n, base, c), d, 0);
  }
}

// `count` of the points, the ends first and the rest evenly between (one: the middle).
template <typename T>
std::vector<T> spread_pick(const std::vector<T>& points, int64_t count) {
  const auto n = static_cast<int64_t>(points.size());
  if (count >= n) return points;
  if (count == 1) return {points[static_cast<size_t>(n / 2)]};
  std::vector<T> out;
  for (int64_t i = 0; i < count; ++i)
    out.push_back(points[static_cast<size_t>(std::llround(double(i) * (n - 1) / (count - 1)))]);
  return out;
}

struct Anchor {
  ModelShape shape;
  double tokens = 0, budget = 0;
};

// The anchors of one group: per tuning budget (isoflop) or at the smallest token count (grid),
// `anchors` of the design's sizes, ends and middle.
std::vector<Anchor> tuning_anchors(const SweepConfig& c, const ModelShape& base) {
  const LrTuning& t = c.tuning;
  std::vector<Anchor> out;
  if (c.design == Design::grid) {
    std::vector<double> sizes = c.sizes;
    std::sort(sizes.begin(), sizes.end());
    const double tokens = *std::min_element(c.token_counts.begin(), c.token_counts.end());
    for (double n : spread_pick(sizes, t.anchors.front()))
      out.push_back({snapped_shape(n, base, c), tokens, 0});
    return out;
  }
  const std::vector<double> budgets =
      t.budgets.empty() ? std::vector<double>{*std::min_element(c.budgets.begin(), c.budgets.end())}
                        : t.budgets;
  for (size_t b = 0; b < budgets.size(); ++b) {
    const int64_t count = t.anchors.size() == 1 ? t.anchors.front() : t.anchors[b];
    for (const ModelShape& shape : spread_pick(isoflop_shapes(c, base, budgets[b]), count))
      out.push_back({shape, tokens_for_compute(budgets[b],
                                               static_cast<double>(count_params(shape).active)),
                     budgets[b]});
  }
  return out;
}

// The grid of rates at every anchor of every group, `seeds` seeds each.
std::vector<PlannedRun> plan_lr_tuning(const SweepConfig& c) {
  std::vector<PlannedRun> runs;
  std::set<std::string> keys;
  for (const ModelShape& base : routed_bases(c))
    for (const Anchor& a : tuning_anchors(c, base)) {
      const RunSpec centre = sweep_run_spec(c, a.shape, a.tokens);
      std::vector<double> rates = c.tuning.rates;
      for (double f : c.tuning.rate_factors) rates.push_back(centre.train.lr * f);
      for (double lr : rates)
        for (int64_t r = 0; r < c.tuning.seeds; ++r) {
          RunSpec spec = centre;
          spec.train.lr = lr;
          spec.train.lr_rule = "tuning";
          spec.train.seed = c.train.seed + static_cast<uint64_t>(r);
          if (!keys.insert(spec.key()).second) continue;
          runs.push_back(plan_run(spec, c.device_flops, a.budget));
          runs.back().replicate = r;
        }
    }
  return runs;
}

}  // namespace

RunSpec sweep_run_spec(const SweepConfig& c, const ModelShape& shape, double tokens) {
  RunSpec spec{shape, c.train, snap_tokens(tokens, shape, c.train, c), c.data_dir};
  const double active = static_cast<double>(count_params(shape.resolved()).active);
  spec.train.lr = c.lr_rule.rate(shape, active, static_cast<double>(spec.tokens));
  spec.train.lr_rule = c.lr_rule.name;
  if (!(spec.train.lr > 0) || !(spec.train.lr <= 1e3))
    throw std::invalid_argument(fmt::format(
        "sweep '{}' in {}: lr_rule \"{}\" gives a run of {} active parameters and {} tokens the "
        "rate {:g}; check the rule's coefficients",
        c.name, c.source_path, c.lr_rule.name, active, spec.tokens, spec.train.lr));
  return spec;
}

SweepConfig lr_tuning_config(const SweepConfig& config) {
  if (config.is_tuning)
    throw std::invalid_argument(fmt::format("sweep '{}' is a tuning sweep already", config.name));
  SweepConfig c = config;
  c.name = lr_tuning_sweep_name(config.name);
  c.is_tuning = true;
  // Absolute rates need no rule; rate_factors centre on the sweep's own.
  if (!c.tuning.rates.empty()) c.lr_rule = LrRule{};
  return c;
}

// A bound on the parameter count in floating point, so that shapes whose counts
// would overflow int64 are refused before count_params multiplies them.
double parameter_bound(const ModelShape& s) {
  const double d = static_cast<double>(s.d_model),
               width = static_cast<double>(s.n_heads) * s.head_dim;
  const double ffn = s.ffn_hidden > 0 ? static_cast<double>(s.ffn_hidden) : 3.0 * d;
  const double layer = 4.0 * d * width + 3.0 * d * ffn * static_cast<double>(s.experts) +
                       d * (static_cast<double>(s.experts) + static_cast<double>(s.router_dim)) +
                       6.0 * static_cast<double>(s.router_dim) * static_cast<double>(s.router_dim);
  return static_cast<double>(s.n_layers) * layer + 2.0 * static_cast<double>(s.vocab) * d;
}

PlannedRun plan_run(const RunSpec& spec, double device_flops, double budget) {
  constexpr double kMaxParams = 1e18;
  if (!(parameter_bound(spec.shape.resolved()) < kMaxParams))
    throw std::invalid_argument(
        fmt::format("a model of d_model {}, {} layers and {} experts would have more than {:.0e} "
                    "parameters; choose a smaller shape",
                    spec.shape.d_model, spec.shape.n_layers, spec.shape.experts, kMaxParams));
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
  const size_t rates = c.is_tuning ? c.tuning.rates.size() + c.tuning.rate_factors.size() : 1;
  const size_t points = rates * routed_bases(c).size() *
                        (c.design == Design::isoflop ? c.budgets.size() * c.points_per_budget
                                                     : c.sizes.size() * c.token_counts.size()) *
                        static_cast<size_t>(std::max<int64_t>(1, c.is_tuning ? c.tuning.seeds : c.replicates));
  if (points > kMaxPlannedPoints)
    throw std::invalid_argument(fmt::format(
        "sweep '{}' in {} asks for {} runs, over the limit of {}; use fewer budgets, points, "
        "sizes, tokens, experts, routers or replicates",
        c.name, c.source_path, points, kMaxPlannedPoints));
  const std::set<double> replicated = replicated_budgets(c);
  auto add = [&](const ModelShape& shape, double tokens, double budget) {
    const bool replicate = c.design == Design::grid || replicated.count(budget) > 0;
    for (int64_t r = 0; r < (replicate ? c.replicates : 1); ++r) {
      RunSpec spec = sweep_run_spec(c, shape, tokens);
      spec.train.seed = c.train.seed + static_cast<uint64_t>(r);  // a new key per seed
      if (!keys.insert(spec.key()).second) continue;
      runs.push_back(plan_run(spec, c.device_flops, budget));
      runs.back().replicate = r;
    }
  };
  if (c.is_tuning) {
    runs = plan_lr_tuning(c);
  } else {
    for (const ModelShape& base : routed_bases(c)) plan_group(c, base, add);
  }
  if (runs.empty())
    throw std::invalid_argument(fmt::format(
        "sweep '{}' in {} plans no runs; check experts and routers", c.name, c.source_path));
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
