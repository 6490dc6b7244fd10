#include "cli/tuning_data.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "cli/common.h"

namespace moescale::cli {
namespace {

// A run's point without its recipe: the same shape, tokens and settings at any rate and seed.
std::string point_key(const RunSpec& spec) {
  RunSpec s = spec;
  s.train.lr = 0;
  s.train.seed = 0;
  s.train.recipe_probe = 1;
  s.train.lr_rule = "";
  return to_json(s);
}

std::string replicate_key(const RunSpec& spec) {
  RunSpec s = spec;
  s.train.seed = 0;
  return to_json(s);
}

// "dense", "topk E=8": a point's router and expert count.
std::string point_group(const ModelShape& s) {
  return s.experts == 1 ? "dense" : fmt::format("{} E={}", to_string(s.router), s.experts);
}

std::string point_label(const RunRecord& r) {
  return fmt::format("{} N={} D={}", point_group(r.plan.spec.shape),
                     human_count(static_cast<double>(r.plan.params.active)),
                     human_count(static_cast<double>(r.plan.spec.tokens)));
}

bool finished(const RunRecord& r) {
  return (r.status == RunStatus::done && r.final_loss) || r.status == RunStatus::diverged;
}

}  // namespace

std::string lr_group(const ModelShape& shape) {
  return shape.experts == 1 ? "dense" : to_string(shape.router);
}

std::string lr_fit_group(const std::string& group) { return "router=" + group; }

std::vector<fitting::LrAnchor> lr_anchors(const Database& db, const std::string& sweep) {
  std::map<std::string, fitting::LrAnchor> anchors;
  for (const RunRecord& r : db.runs(sweep, std::nullopt)) {
    if (!finished(r) || r.plan.spec.train.recipe_probe != 1) continue;
    fitting::LrAnchor& a = anchors[point_key(r.plan.spec)];
    a.group = lr_group(r.plan.spec.shape);
    a.label = point_label(r);
    a.n_active = static_cast<double>(r.plan.params.active);
    a.tokens = static_cast<double>(r.plan.spec.tokens);
    a.experts = static_cast<double>(r.plan.spec.shape.experts);
    a.trials.push_back({r.plan.spec.train.lr, r.status == RunStatus::diverged
                                                  ? std::numeric_limits<double>::infinity()
                                                  : *r.final_loss});
  }
  std::vector<fitting::LrAnchor> out;
  for (auto& [key, a] : anchors) out.push_back(std::move(a));
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::tie(a.group, a.tokens, a.n_active) < std::tie(b.group, b.tokens, b.n_active);
  });
  return out;
}

fitting::ReplicateNoise sweep_noise(const Database& db, const std::string& sweep) {
  std::map<std::string, std::vector<double>> sets;
  for (const RunRecord& r : db.runs(sweep, RunStatus::done))
    if (r.final_loss && r.plan.spec.train.recipe_probe == 1)
      sets[replicate_key(r.plan.spec)].push_back(*r.final_loss);
  std::vector<std::vector<double>> losses;
  for (auto& [key, v] : sets) losses.push_back(std::move(v));
  return fitting::replicate_noise(losses);
}

namespace {
std::string how_to_tune(const SweepConfig& config) {
  return fmt::format(
      "tune first: moescale plan --config {} --tune; moescale train --sweep {}; moescale fit "
      "--sweep {} --law lr",
      config.source_path, config.lr_fit, config.lr_fit);
}
}  // namespace

void resolve_lr_rule(const std::string& location, SweepConfig& config) {
  if (config.lr_rule.name != "fit") return;
  std::optional<Database> db;
  try {
    db.emplace(location, Database::Mode::read_only);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(fmt::format("lr_rule = \"fit\" in {} reads its law from the store: "
                                         "{}; {}",
                                         config.source_path, e.what(), how_to_tune(config)));
  }
  resolve_lr_rule(*db, config);
}

void resolve_lr_rule(const Database& db, SweepConfig& config) {
  if (config.lr_rule.name != "fit") return;
  const std::string how = how_to_tune(config);
  if (!db.find_sweep(config.lr_fit))
    throw std::runtime_error(fmt::format("lr_fit = \"{}\" in {}: no such sweep in {}; {}",
                                         config.lr_fit, config.source_path, db.display_name(),
                                         how));
  std::map<std::string, FitRecord> latest;
  for (const FitRecord& f : db.fits(config.lr_fit))
    if (f.law == "lr") latest[f.group] = f;
  if (latest.empty())
    throw std::runtime_error(fmt::format("lr_fit = \"{}\" in {}: the sweep has no lr fit; {}",
                                         config.lr_fit, config.source_path, how));
  std::vector<std::string> ids;
  for (const auto& [group, record] : latest) {
    const fitting::FitResult fit = fitting::fit_result_from_json(record.result);
    auto param = [&](const char* name) {
      const auto it = fit.fitted.find(name);
      return it == fit.fitted.end() ? 0.0 : it->second;
    };
    const std::string router = group.substr(group.find('=') + 1);
    config.lr_rule.per_router[router] = {.lr_ref = std::exp(param("a")),
                                         .n_exponent = param("b"),
                                         .d_exponent = param("c"),
                                         .e_exponent = param("e")};
    ids.push_back(std::to_string(record.id));
  }
  for (const fitting::LrAnchor& a : lr_anchors(db, config.lr_fit)) {
    auto [it, fresh] = config.lr_rule.fitted_range.try_emplace(a.group, a.n_active, a.n_active);
    it->second.first = std::min(it->second.first, a.n_active);
    it->second.second = std::max(it->second.second, a.n_active);
  }
  config.lr_rule.source =
      fmt::format("lr fit{} {} of sweep '{}'", ids.size() == 1 ? "" : "s", fmt::join(ids, ", "),
                  config.lr_fit);
}

std::vector<fitting::RecipePoint> recipe_points(const Database& db, const std::string& sweep) {
  std::map<std::string, fitting::RecipePoint> points;
  for (const RunRecord& r : db.runs(sweep, RunStatus::done)) {
    if (!r.final_loss) continue;
    fitting::RecipePoint& p = points[point_key(r.plan.spec)];
    const double probe = r.plan.spec.train.recipe_probe;
    if (probe == 1) {
      p.label = point_label(r);
      p.own_lr = r.plan.spec.train.lr;
      p.own.push_back(*r.final_loss);
    } else {
      p.neighbours[probe].push_back(*r.final_loss);
    }
  }
  std::vector<fitting::RecipePoint> out;
  for (auto& [key, p] : points)
    if (!p.neighbours.empty() && !p.own.empty()) out.push_back(std::move(p));
  return out;
}

namespace {

struct CheckPoint {
  std::vector<RunRecord> runs;  // the point's own runs (seeds)
  double mean_loss = 0, n_active = 0;
};

// One group's points at its largest budget, in the order the check takes them.
std::vector<CheckPoint> check_order(std::map<std::string, CheckPoint> points) {
  std::vector<CheckPoint> by_loss;
  for (auto& [key, p] : points) by_loss.push_back(std::move(p));
  std::sort(by_loss.begin(), by_loss.end(),
            [](const auto& a, const auto& b) { return a.mean_loss < b.mean_loss; });
  if (by_loss.size() < 2) return by_loss;
  const auto smallest = std::min_element(by_loss.begin(), by_loss.end(), [](const auto& a,
                                                                            const auto& b) {
    return a.n_active < b.n_active;
  });
  if (smallest != by_loss.begin()) std::rotate(by_loss.begin() + 1, smallest, smallest + 1);
  return by_loss;
}

}  // namespace

std::vector<PlannedRun> recipe_check_runs(const Database& db, const std::string& sweep,
                                          const SweepConfig& config, int count, double factor,
                                          int seeds) {
  // group -> budget -> point -> its runs
  std::map<std::string, std::map<double, std::map<std::string, CheckPoint>>> groups;
  for (const RunRecord& r : db.runs(sweep, RunStatus::done)) {
    if (!r.final_loss || r.plan.spec.train.recipe_probe != 1) continue;
    const ModelShape& s = r.plan.spec.shape;
    CheckPoint& p = groups[point_group(s)][r.plan.budget][point_key(r.plan.spec)];
    p.runs.push_back(r);
    p.n_active = static_cast<double>(r.plan.params.active);
  }
  if (groups.empty())
    throw std::runtime_error(fmt::format(
        "sweep '{}' has no finished runs to check; train it first (moescale train --sweep {})",
        sweep, sweep));
  std::vector<std::vector<CheckPoint>> orders;
  for (auto& [group, budgets] : groups) {
    auto& largest = budgets.rbegin()->second;
    for (auto& [key, p] : largest) {
      for (const RunRecord& r : p.runs) p.mean_loss += *r.final_loss / p.runs.size();
    }
    orders.push_back(check_order(largest));
  }
  std::vector<CheckPoint> chosen;
  for (size_t i = 0; chosen.size() < static_cast<size_t>(count); ++i) {
    bool any = false;
    for (const auto& order : orders)
      if (i < order.size() && chosen.size() < static_cast<size_t>(count))
        chosen.push_back(order[i]), any = true;
    if (!any) break;
  }
  std::vector<PlannedRun> out;
  for (const CheckPoint& p : chosen) {
    const RunRecord& first = p.runs.front();
    std::set<uint64_t> have;
    for (const RunRecord& r : p.runs) have.insert(r.plan.spec.train.seed);
    for (int s = 0; s < seeds; ++s) {
      RunSpec spec = first.plan.spec;
      spec.train.seed = config.train.seed + static_cast<uint64_t>(s);
      if (!have.count(spec.train.seed)) {
        out.push_back(plan_run(spec, config.device_flops, first.plan.budget));
        out.back().replicate = s;
      }
      for (double f : {factor, 1 / factor}) {
        RunSpec probe = spec;
        probe.train.lr = spec.train.lr * f;
        probe.train.recipe_probe = f;
        out.push_back(plan_run(probe, config.device_flops, first.plan.budget));
        out.back().replicate = s;
      }
    }
  }
  return out;
}

}  // namespace moescale::cli
