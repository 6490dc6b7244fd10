// Run-to-run noise and the best-loss comparison (fitting/analysis.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "fitting/fitting.h"

namespace moescale::fitting {
namespace {

TEST(ReplicateNoise, PoolsTheVarianceOfLogLossOverSets) {
  // Set 1: log losses ±0.01 around log 2; set 2: ±0.02 around log 3; a single run adds nothing.
  const std::vector<std::vector<double>> sets{
      {2 * std::exp(0.01), 2 * std::exp(-0.01)}, {3 * std::exp(0.02), 3 * std::exp(-0.02)}, {5.0}};
  const ReplicateNoise n = replicate_noise(sets);
  EXPECT_EQ(n.sets, 2u);
  EXPECT_EQ(n.runs, 4u);
  EXPECT_EQ(n.dof, 2u);
  // (2·0.01² + 2·0.02²) / 2 = 0.0005
  EXPECT_NEAR(n.sd_log_loss, std::sqrt(0.0005), 1e-12);
  EXPECT_TRUE(std::isnan(replicate_noise({{2.0}, {3.0}}).sd_log_loss));
  EXPECT_THROW(replicate_noise({{2.0, -1.0}}), std::invalid_argument);
}

TEST(ReplicateNoise, RecoversTheNoiseOfSimulatedSeeds) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> noise(0, 0.02);
  std::vector<std::vector<double>> sets;
  for (int p = 0; p < 400; ++p)
    sets.push_back({2.5 * std::exp(noise(rng)), 2.5 * std::exp(noise(rng))});
  EXPECT_NEAR(replicate_noise(sets).sd_log_loss, 0.02, 0.002);
}

TEST(BestLossDifference, IntervalExcludesZeroOnlyWhenTheGapExceedsTheNoise) {
  const std::vector<double> dense{2.60, 2.52, 2.50, 2.55}, moe{2.45, 2.40, 2.42, 2.50};
  const BestLossDifference clear = best_loss_difference(dense, moe, 0.005, 4000);
  EXPECT_DOUBLE_EQ(clear.best_a, 2.50);
  EXPECT_DOUBLE_EQ(clear.best_b, 2.40);
  EXPECT_NEAR(clear.difference, -0.10, 1e-12);
  EXPECT_TRUE(clear.parametric);
  EXPECT_LT(clear.lo, clear.difference);
  EXPECT_LT(clear.hi, 0) << "a 0.10 gap is far outside 0.5% noise";

  const BestLossDifference noisy = best_loss_difference(dense, moe, 0.05, 4000);
  EXPECT_LT(noisy.lo, 0);
  EXPECT_GT(noisy.hi, 0) << "5% noise swamps a 4% gap";
  EXPECT_GT(noisy.hi - noisy.lo, clear.hi - clear.lo);
}

TEST(BestLossDifference, WithoutNoiseResamplesRunsAndIsReproducible) {
  const std::vector<double> a{2.6, 2.5, 2.7}, b{2.4, 2.6, 2.5};
  const BestLossDifference r1 = best_loss_difference(a, b, NAN, 1000, 0.9, 7);
  const BestLossDifference r2 = best_loss_difference(a, b, NAN, 1000, 0.9, 7);
  EXPECT_FALSE(r1.parametric);
  EXPECT_DOUBLE_EQ(r1.lo, r2.lo);
  EXPECT_DOUBLE_EQ(r1.hi, r2.hi);
  // Resampled bests are runs of the sets: the difference lies between the extremes.
  EXPECT_GE(r1.lo, 2.4 - 2.7 - 1e-12);
  EXPECT_LE(r1.hi, 2.6 - 2.5 + 1e-12);
  EXPECT_THROW(best_loss_difference({}, b, 0.01), std::invalid_argument);
}

}  // namespace
}  // namespace moescale::fitting
