// plan --next's choice of runs, and its design study against a known Chinchilla truth.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "fitting/fitting.h"

namespace moescale::fitting {
namespace {

// Hoffmann et al.'s Chinchilla fit as the truth.
std::map<std::string, double> truth() {
  return {{"e", std::log(1.69)},
          {"a", std::log(406.4)},
          {"b", std::log(410.7)},
          {"alpha", 0.34},
          {"beta", 0.28}};
}

// A poor sweep: every budget's sizes lie below its optimum (1000 tokens per parameter).
SweepConfig poor_sweep() {
  SweepConfig c;
  c.name = "poor";
  c.budgets = {1e17, 1e18, 1e19};
  c.points_per_budget = 4;
  c.span = 3;
  c.tokens_per_param = 1000;
  return c;
}

Law small_grid_chinchilla() {
  Law law = builtin_law("chinchilla");
  for (const char* g : {"e=0,0.5,1", "a=3:9:3", "b=3:9:3", "alpha=0.2,0.5", "beta=0.2,0.5"})
    set_grid(law, g);
  return law;
}

struct Simulated {
  std::vector<Observation> observations;
  std::vector<std::string> keys;
};

Simulated simulate(const std::vector<PlannedRun>& runs, uint64_t seed) {
  const Law& law = builtin_law("chinchilla");
  const Expression expr = law.compiled();
  std::vector<double> x;
  for (const auto& p : expr.params()) x.push_back(truth().at(p));
  Simulated s;
  for (const PlannedRun& r : runs) {
    Observation o{static_cast<double>(r.params.active),
                  static_cast<double>(r.params.total),
                  static_cast<double>(r.spec.tokens),
                  1,
                  1,
                  1,
                  0,
                  r.spec.key()};
    o.loss = simulated_loss(expr, x, o, 0.01, seed, o.where);
    s.observations.push_back(o);
    s.keys.push_back(o.where);
  }
  return s;
}

TEST(NextRuns, ProposesRealShapesWithinTheAllowanceThatShrinkTheInterval) {
  const SweepConfig sweep = poor_sweep();
  const auto runs = plan_sweep(sweep);
  const Simulated data = simulate(runs, 1);
  FitOptions fo;
  fo.bootstrap = 20;
  const FitResult fit = fit_law(small_grid_chinchilla(), data.observations, fo);
  NextRunsOptions o;
  o.target_budget = 1e21;
  o.allowance = 2e19;
  o.max_runs = 3;
  const NextRunsPlan plan = propose_next_runs(fit, data.observations, sweep, data.keys, o);
  ASSERT_FALSE(plan.runs.empty());
  EXPECT_LE(plan.runs.size(), 3u);
  EXPECT_LE(plan.compute, o.allowance);
  EXPECT_GT(plan.candidates, plan.runs.size());
  EXPECT_LT(plan.sd_end, plan.sd_start);
  std::set<std::string> existing(data.keys.begin(), data.keys.end()), seen;
  double previous = plan.sd_start;
  for (const ProposedRun& p : plan.runs) {
    const std::string key = p.run.spec.key();
    EXPECT_FALSE(existing.count(key)) << key;
    EXPECT_TRUE(seen.insert(key).second) << key;
    // A real shape, accounted by the planner, in whole steps.
    EXPECT_EQ(p.run.params.active, count_params(p.run.spec.shape).active);
    EXPECT_EQ(p.run.spec.tokens % sweep.train.tokens_per_step(p.run.spec.shape.seq_len), 0);
    EXPECT_NEAR(p.run.compute_6n / p.run.budget, 1, 0.2);
    EXPECT_NEAR(p.sd_before, previous, 1e-12);
    EXPECT_LT(p.sd_after, p.sd_before);
    EXPECT_GT(p.shrink_per_flop, 0);
    EXPECT_GT(p.prediction_sd, 0);
    EXPECT_THAT(p.why, ::testing::HasSubstr("narrower"));
    previous = p.sd_after;
  }
  // The poor sweep never tried sizes near the optimum: the picks go above its sizes.
  double largest = 0;
  for (const PlannedRun& r : runs) largest = std::max(largest, double(r.params.active));
  bool above = false;
  for (const ProposedRun& p : plan.runs) above = above || p.run.params.active > largest;
  EXPECT_TRUE(above);

  // Run-to-run noise measured from replicates, when larger than the RMSLE, is what a new run's
  // loss carries: each run then tells less, and the same allowance narrows the interval less.
  FitResult noisy = fit;
  noisy.noise = {10 * fit.rmsle, 5, 10, 5};
  EXPECT_GT(propose_next_runs(noisy, data.observations, sweep, data.keys, o).sd_end, plan.sd_end);

  o.allowance = 1;  // nothing affordable
  EXPECT_TRUE(propose_next_runs(fit, data.observations, sweep, data.keys, o).runs.empty());
  FitResult bare = fit;
  bare.bootstrap_samples.clear();
  EXPECT_THROW(propose_next_runs(bare, data.observations, sweep, data.keys, o),
               std::invalid_argument);
}

DesignStudyOptions study(uint64_t seed, int bootstrap) {
  DesignStudyOptions o;
  o.truth = truth();
  o.sweep = poor_sweep();
  o.bootstrap = bootstrap;
  o.grid = {"e=0,0.5,1", "a=3:9:3", "b=3:9:3", "alpha=0.2,0.5", "beta=0.2,0.5"};
  o.seed = seed;
  return o;
}

// The interval half of the acceptance check, on 3 seeds and small bootstraps: plan
// --next shrinks the N* interval at 100x the largest budget more than the same compute spent
// on one more IsoFLOP budget. That is what it optimises, and it wins on nearly every seed.
// Landing closer to the true N* is a claim about the mean only (plan --next has the smallest
// error on about 3 seeds in 10, and a much smaller mean): 3 seeds cannot check it, and a change
// of the simulated noise alone flipped it, so design_study_test (label slow) checks it over
// 10 seeds, and bench/next_runs_study prints the figures.
TEST(DesignStudy, NextNarrowsTheIntervalMoreThanUniformFast) {
  const int seeds = 3;
  double log_ratio[3] = {};
  for (int s = 1; s <= seeds; ++s) {
    const DesignStudyResult r = run_design_study(study(static_cast<uint64_t>(s), 12));
    EXPECT_NEAR(r.next.compute, r.uniform.compute, 0.25 * r.next.compute) << s;
    const DesignArm* arms[3] = {&r.next, &r.uniform, &r.uniform_centred};
    for (int k = 0; k < 3; ++k) log_ratio[k] += std::log(arms[k]->interval_ratio) / seeds;
  }
  EXPECT_LT(log_ratio[0], log_ratio[1]);
  EXPECT_LT(log_ratio[0], log_ratio[2]);
}

}  // namespace
}  // namespace moescale::fitting
