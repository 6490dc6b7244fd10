// The design study of plan --next over 10 seeds (issue 13's acceptance check; label slow):
// a known Chinchilla truth with 1% noise, a poor starting sweep (minima at the edges), 3
// rounds of plan --next + simulate + fit against the same compute spent on one more IsoFLOP
// budget. bench/next_runs_study prints the figures.
#include <gtest/gtest.h>

#include <cmath>

#include "fitting/fitting.h"

namespace moescale::fitting {
namespace {

DesignStudyOptions study(uint64_t seed) {
  DesignStudyOptions o;
  o.truth = {{"e", std::log(1.69)},
             {"a", std::log(406.4)},
             {"b", std::log(410.7)},
             {"alpha", 0.34},
             {"beta", 0.28}};
  o.sweep.name = "poor";
  o.sweep.budgets = {1e17, 1e18, 1e19};
  o.sweep.points_per_budget = 4;
  o.sweep.span = 3;
  o.sweep.tokens_per_param = 1000;  // sizes below every budget's optimum
  o.bootstrap = 30;
  o.grid = {"e=0,0.5,1", "a=3:9:3", "b=3:9:3", "alpha=0.2,0.5", "beta=0.2,0.5"};
  o.seed = seed;
  return o;
}

TEST(DesignStudySlow, NextBeatsUniformOverTenSeeds) {
  const int seeds = 10;
  double log_ratio[3] = {}, error[3] = {};
  for (int s = 1; s <= seeds; ++s) {
    const DesignStudyResult r = run_design_study(study(static_cast<uint64_t>(s)));
    const DesignArm* arms[3] = {&r.next, &r.uniform, &r.uniform_centred};
    for (int k = 0; k < 3; ++k) {
      log_ratio[k] += std::log(arms[k]->interval_ratio) / seeds;
      error[k] += arms[k]->log_error / seeds;
    }
  }
  std::printf("interval x%.3g (next) vs x%.3g, x%.3g (uniform); |log error| %.4f vs %.4f, %.4f\n",
              std::exp(log_ratio[0]), std::exp(log_ratio[1]), std::exp(log_ratio[2]), error[0],
              error[1], error[2]);
  EXPECT_LT(log_ratio[0], log_ratio[1]);
  EXPECT_LT(log_ratio[0], log_ratio[2]);
  EXPECT_LT(error[0], error[1]);
  EXPECT_LT(error[0], error[2]);
}

}  // namespace
}  // namespace moescale::fitting
