#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "planner/planner.h"

namespace moescale {
namespace {

SweepConfig isoflop_config() {
  SweepConfig c;
  c.name = "isoflop-test";
  c.budgets = {1e11, 1e12};
  c.points_per_budget = 5;
  c.span = 4;
  c.experts = {1, 4};
  c.routers = {Router::topk, Router::rmoe};
  c.base.top_k = 2;
  c.base.router_dim = 16;
  c.train.batch_size = 4;
  return c;
}

TEST(IsoFlop, PlansEachBudgetExpertCountAndRouterWithDenseOnce) {
  const auto runs = plan_sweep(isoflop_config());
  std::set<std::string> groups, keys;
  for (const PlannedRun& r : runs) {
    groups.insert(fmt::format("{}{}", to_string(r.spec.shape.router), r.spec.shape.experts));
    keys.insert(r.spec.key());
  }
  EXPECT_EQ(groups, (std::set<std::string>{"dense1", "topk4", "rmoe4"}));
  EXPECT_EQ(keys.size(), runs.size());
  EXPECT_LE(runs.size(), 2u * 5u * 3u);
  EXPECT_GE(runs.size(), 2u * 3u * 3u);  // snapping may merge neighbours, not most
}

TEST(IsoFlop, EachRunSpendsItsBudgetAndSizesSpanAroundTheOptimum) {
  SweepConfig c = isoflop_config();
  c.budgets = {1e12, 1e13};  // below ~10K parameters shapes are too coarse to snap closely
  for (const PlannedRun& r : plan_sweep(c)) {
    // D is snapped to whole steps of batch·seq_len tokens.
    const double step_tokens = c.train.batch_size * c.base.seq_len;
    const double slack = 6.0 * r.params.active * step_tokens / 2;
    EXPECT_NEAR(r.compute_6n, r.budget, slack + 1e-9 * r.budget);
    EXPECT_EQ(r.spec.tokens % static_cast<int64_t>(step_tokens), 0);
    const double optimum = std::sqrt(r.budget / (6.0 * c.tokens_per_param));
    EXPECT_LT(std::abs(std::log(r.params.active / optimum)), std::log(c.span * 1.6));
    EXPECT_GT(r.est_seconds, 0);
    EXPECT_GT(r.compute_full, r.compute_6n);
  }
}

// With optimum_exponent a, the prior N* is tokens_per_param's at the smallest budget and
// grows as C^a from there: 0.5 is the constant ratio, 0.75 moves the larger budgets' sizes
// up by (C/C_min)^0.25.
TEST(IsoFlop, TheOptimumExponentMovesTheLargerBudgetsSizes) {
  SweepConfig c = isoflop_config();
  c.budgets = {1e12, 1e14};
  c.points_per_budget = 3;
  c.span = 2;
  auto middle_sizes = [&] {
    std::map<double, std::vector<double>> sizes;  // budget -> N_active of the dense runs
    for (const PlannedRun& r : plan_sweep(c))
      if (r.spec.shape.experts == 1) sizes[r.budget].push_back(double(r.params.active));
    std::map<double, double> middle;
    for (auto& [budget, n] : sizes) {
      std::sort(n.begin(), n.end());
      middle[budget] = n[n.size() / 2];
    }
    return middle;
  };
  const auto constant = middle_sizes();
  c.optimum_exponent = 0.75;
  const auto steeper = middle_sizes();
  for (double budget : c.budgets) {
    const double prior = std::sqrt(budget / (6.0 * c.tokens_per_param));  // at 0.5
    EXPECT_LT(std::abs(std::log(constant.at(budget) / prior)), std::log(1.3)) << budget;
  }
  EXPECT_NEAR(steeper.at(1e12) / constant.at(1e12), 1, 0.05);
  EXPECT_NEAR(std::log(steeper.at(1e14) / constant.at(1e14)), std::log(std::pow(100, 0.25)), 0.3);
}

// Small models snap to few shapes. The embedded example once planned RMoE at 3e10 FLOPs as
// 1.62K, 1.62K, 3.12K, 5.9K, 8.61K: the two smallest sizes merged, the range lost its low end,
// and the lowest loss sat at the edge. Merged points now look outward, so every group's sizes
// reach within a factor 1.5 of both ends of its span.
TEST(IsoFlop, MergedSmallShapesSpreadToTheEndsOfTheSpan) {
  SweepConfig c = load_sweep_config(MOESCALE_SOURCE_DIR "/configs/tiny-cpu.toml");
  c.lr_rule = LrRule{};  // its fitted rule needs a store; the shapes do not depend on the rate
  std::map<std::string, std::pair<double, double>> range;  // group and budget -> smallest, largest
  std::map<std::string, double> budget_of;
  for (const PlannedRun& r : plan_sweep(c)) {
    const std::string g =
        fmt::format("{}{} at {:g}", to_string(r.spec.shape.router), r.spec.shape.experts, r.budget);
    const double n = static_cast<double>(r.params.active);
    auto [it, fresh] = range.emplace(g, std::make_pair(n, n));
    it->second = {std::min(it->second.first, n), std::max(it->second.second, n)};
    budget_of[g] = r.budget;
  }
  ASSERT_EQ(range.size(), 9u);
  for (const auto& [g, r] : range) {
    const double budget = budget_of.at(g);
    const double smallest = *std::min_element(c.budgets.begin(), c.budgets.end());
    const double centre = std::sqrt(smallest / (6.0 * c.tokens_per_param)) *
                          std::pow(budget / smallest, c.optimum_exponent);
    EXPECT_LE(r.first, 1.5 * centre / c.span) << g;
    EXPECT_GE(r.second, centre * c.span / 1.5) << g;
  }
}

TEST(IsoFlop, SnappedDuplicatesAreDropped) {
  SweepConfig c = isoflop_config();
  c.points_per_budget = 40;  // far more sizes than distinct shapes in the span
  c.span = 1.5;
  const auto runs = plan_sweep(c);
  std::set<std::string> keys;
  for (const auto& r : runs) EXPECT_TRUE(keys.insert(r.spec.key()).second);
  EXPECT_LT(runs.size(), 2u * 40u * 3u);
}

TEST(IsoFlop, ReplicatesTrainTheMiddleBudgetsPointsWithDistinctSeeds) {
  SweepConfig c = isoflop_config();
  c.budgets = {1e11, 1e12, 1e13};
  const auto single = plan_sweep(c);
  c.replicates = 2;
  const auto runs = plan_sweep(c);
  std::map<std::string, std::set<uint64_t>> seeds;  // the point without its seed -> seeds
  std::set<std::string> keys;
  for (const PlannedRun& r : runs) {
    RunSpec point = r.spec;
    point.train.seed = 0;
    seeds[to_json(point)].insert(r.spec.train.seed);
    EXPECT_TRUE(keys.insert(r.spec.key()).second) << "replicates need distinct keys";
    EXPECT_EQ(r.spec.train.seed, c.train.seed + static_cast<uint64_t>(r.replicate));
    if (r.replicate > 0) {
      EXPECT_EQ(r.budget, 1e12) << "only the middle budget";
    }
  }
  size_t middle = 0;
  for (const PlannedRun& r : single) middle += r.budget == 1e12;
  EXPECT_GT(middle, 0u);
  EXPECT_EQ(runs.size(), single.size() + middle);
  for (const auto& [point, s] : seeds) EXPECT_LE(s.size(), 2u);

  c.replicate_budgets = {1e11, 1e13};
  size_t outer = 0, extra = 0;
  for (const PlannedRun& r : single) outer += r.budget != 1e12;
  for (const PlannedRun& r : plan_sweep(c)) extra += r.replicate > 0;
  EXPECT_EQ(extra, outer);
}

TEST(Grid, IsTheProductOfSizesTokensExpertsAndRouters) {
  SweepConfig c = isoflop_config();
  c.design = Design::grid;
  c.sizes = {2e4, 2e5};
  c.token_counts = {1e6, 4e6, 1.6e7};
  const auto runs = plan_sweep(c);
  EXPECT_EQ(runs.size(), 2u * 3u * 3u);
}

TEST(Plan, RefusesASweepOverTheTotalBudget) {
  SweepConfig c = isoflop_config();
  c.max_total_compute = 1e12;
  EXPECT_THROW(
      {
        try {
          plan_sweep(c);
        } catch (const std::invalid_argument& e) {
          EXPECT_NE(std::string(e.what()).find("max_total_compute"), std::string::npos);
          throw;
        }
      },
      std::invalid_argument);
}

TEST(RunSpec, JsonRoundTripKeepsTheKey) {
  for (const PlannedRun& r : plan_sweep(isoflop_config())) {
    const RunSpec back = run_spec_from_json(to_json(r.spec));
    EXPECT_EQ(back.key(), r.spec.key());
    EXPECT_EQ(to_json(back), to_json(r.spec));
  }
  RunSpec a = plan_sweep(isoflop_config()).front().spec, b = a;
  b.train.lr *= 2;
  EXPECT_NE(a.key(), b.key());
  b = a;
  b.shape.renormalize = !a.shape.renormalizes();
  EXPECT_NE(a.key(), b.key());
  EXPECT_EQ(run_spec_from_json(to_json(b)).shape.renormalizes(), b.shape.renormalizes());
  EXPECT_THROW(run_spec_from_json("{\"shape\": 3}"), std::invalid_argument);
}

TEST(RunSpec, SpecsStoredBeforeFinalEvalKeepTheirEvaluation) {
  const RunSpec planned = plan_sweep(isoflop_config()).front().spec;
  EXPECT_FALSE(planned.train.val_windows_per_seed);
  EXPECT_EQ(planned.train.final_eval_batches, 64);
  nlohmann::json old = nlohmann::json::parse(to_json(planned));
  old["train"].erase("final_eval_batches");
  old["train"].erase("val_windows_per_seed");
  const RunSpec back = run_spec_from_json(old.dump());
  EXPECT_TRUE(back.train.val_windows_per_seed) << "windows drawn from the run's seed, as trained";
  EXPECT_EQ(back.train.final_eval_batches, back.train.eval_batches);
  EXPECT_NE(back.key(), planned.key());
}

}  // namespace
}  // namespace moescale
