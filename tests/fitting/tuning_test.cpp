// lr* per anchor, the lr law across anchors, lr_edge and recipe_untuned.
#include "fitting/tuning.h"

#include <gtest/gtest.h>

#include <cmath>

namespace moescale::fitting {
namespace {

// Loss with a minimum in log lr at lr_star: L = L0 · exp(w (log lr - log lr*)^2).
LrAnchor parabola_anchor(double lr_star, const std::vector<double>& rates, double n = 1e3,
                         double d = 1e6, double e = 1, std::string group = "dense") {
  LrAnchor a;
  a.group = std::move(group);
  a.label = "anchor";
  a.n_active = n, a.tokens = d, a.experts = e;
  for (double lr : rates)
    a.trials.push_back({lr, 2.0 * std::exp(0.02 * std::pow(std::log(lr / lr_star), 2))});
  return a;
}

const std::vector<double> kRates{1e-3, 3e-3, 1e-2, 3e-2, 1e-1};

TEST(LrOptimum, FindsTheVertexBetweenTheGridsRates) {
  LrTuningOptions o;
  o.noise = 1e-4;
  const LrOptimum opt = lr_optimum(parabola_anchor(5e-3, kRates), o);
  EXPECT_FALSE(opt.at_edge);
  EXPECT_NEAR(std::log(opt.lr), std::log(5e-3), 1e-6);  // a parabola in log lr is exact
  EXPECT_EQ(opt.best_tried, 3e-3);
  ASSERT_TRUE(opt.interval.has_value());
  EXPECT_LT(opt.interval->lo, 5e-3);
  EXPECT_GT(opt.interval->hi, 5e-3);
  EXPECT_LT(opt.interval->hi / opt.interval->lo, 1.5);
  // More noise, a wider interval.
  o.noise = 0.02;
  const LrOptimum noisy = lr_optimum(parabola_anchor(5e-3, kRates), o);
  EXPECT_GT(noisy.interval->hi / noisy.interval->lo, opt.interval->hi / opt.interval->lo);
}

TEST(LrOptimum, AnOptimumBeyondTheGridIsAtTheEdgeAndDrawsLrEdge) {
  const LrOptimum high = lr_optimum(parabola_anchor(0.5, kRates), {});
  EXPECT_TRUE(high.at_edge);
  EXPECT_EQ(high.lr, 1e-1);
  EXPECT_FALSE(high.interval.has_value());
  const LrOptimum inside = lr_optimum(parabola_anchor(1e-2, kRates), {});
  EXPECT_TRUE(lr_diagnostics({inside}).empty());
  const auto d = lr_diagnostics({inside, high});
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].code, "lr_edge");
  EXPECT_NE(d[0].message.find("largest"), std::string::npos);
}

TEST(LrOptimum, ADivergedRateBoundsTheOptimumFromAbove) {
  LrAnchor a = parabola_anchor(0.5, kRates);
  a.trials.back().second = INFINITY;  // 1e-1 diverged
  const LrOptimum opt = lr_optimum(a, {});
  EXPECT_FALSE(opt.at_edge);  // the grid's end is the diverged rate
  EXPECT_EQ(opt.lr, 3e-2);
}

// One run 0.02 too high beside a flat minimum: through three points it moved lr* a quarter of
// a grid step (0.255 of log 2); fitted to five rates, an eighth (0.122).
TEST(LrOptimum, OneNoisyNeighbourMovesLrStarLittle) {
  const std::vector<double> rates{2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2, 8e-2};
  LrAnchor a;
  a.group = "dense", a.label = "anchor", a.n_active = 1e3, a.tokens = 1e6;
  for (double lr : rates)
    a.trials.push_back({lr, 2.0 * std::exp(0.02 * std::pow(std::log(lr / 1e-2), 2))});
  a.trials[1].second *= std::exp(0.02);  // 5e-3 unluckily high: the vertex leans to 2e-2
  const LrOptimum opt = lr_optimum(a, {});
  EXPECT_EQ(opt.best_tried, 1e-2);
  EXPECT_LT(std::abs(std::log(opt.lr / 1e-2)), 0.15 * std::log(2.0));
  EXPECT_GT(opt.lr, 1e-2);  // still leaning the way the noise pushed it
  ASSERT_FALSE(opt.fitted.empty());
  EXPECT_NEAR(opt.fitted.front().first, 2.5e-3, 1e-12);  // fitted across two rates either side
  EXPECT_NEAR(opt.fitted.back().first, 4e-2, 1e-12);
}

TEST(LrOptimum, NeedsThreeRates) {
  EXPECT_THROW(lr_optimum(parabola_anchor(1e-2, {1e-3, 1e-2}), {}), std::invalid_argument);
}

// lr* = 0.5 N^-0.6 D^0.2 at anchors of two budgets.
std::vector<LrOptimum> law_anchors(bool two_budgets) {
  LrTuningOptions o;
  o.noise = 1e-3;
  std::vector<LrOptimum> out;
  for (double c : two_budgets ? std::vector<double>{1e10, 1e11} : std::vector<double>{1e10})
    for (double n : {1e3, 3e3, 1e4}) {
      const double d = c / (6 * n);
      const double star = 0.5 * std::pow(n, -0.6) * std::pow(d, 0.2);
      std::vector<double> rates;
      for (int i = -3; i <= 3; ++i) rates.push_back(star * std::pow(2.2, i) * 1.1);
      out.push_back(lr_optimum(parabola_anchor(star, rates, n, d), o));
    }
  return out;
}

TEST(LrLaw, RecoversTheExponentsFromTwoBudgets) {
  LrTuningOptions o;
  const LrLaw law = fit_lr_law(law_anchors(true), o);
  EXPECT_TRUE(law.dropped.size() == 1) << "E only";
  EXPECT_NEAR(law.fit.fitted.at("b"), -0.6, 0.02);
  EXPECT_NEAR(law.fit.fitted.at("c"), 0.2, 0.02);
  EXPECT_NEAR(lr_law_rate(law.fit, 2e3, 1e6, 1), 0.5 * std::pow(2e3, -0.6) * std::pow(1e6, 0.2),
              0.05 * 0.5 * std::pow(2e3, -0.6) * std::pow(1e6, 0.2));
  ASSERT_TRUE(law.fit.intervals.count("b"));
  EXPECT_LT(law.fit.intervals.at("b").lo, law.fit.fitted.at("b"));
  EXPECT_GT(law.fit.intervals.at("b").hi, law.fit.fitted.at("b"));
  EXPECT_EQ(law.n_min, 1e3);
  EXPECT_EQ(law.n_max, 1e4);
}

TEST(LrLaw, OneBudgetCannotTellNFromDAndSaysSo) {
  const LrLaw law = fit_lr_law(law_anchors(false), {});
  EXPECT_EQ(law.fit.fitted.count("c"), 0u);
  ASSERT_EQ(law.dropped.size(), 2u);
  EXPECT_NE(law.dropped[0].find("one budget"), std::string::npos);
  // At one budget D = C/6N, so lr* = 0.5 N^-0.6 (C/6N)^0.2 moves as N^-0.8.
  EXPECT_NEAR(law.fit.fitted.at("b"), -0.8, 0.02);
}

TEST(LrLaw, EdgeAnchorsAreLeftOutAndTooFewDropTermsUntilNoneIsAnError) {
  std::vector<LrOptimum> anchors = law_anchors(false);
  anchors[0].at_edge = true;
  const LrLaw one = fit_lr_law(anchors, {});  // two anchors: one rate for the group
  EXPECT_EQ(one.fit.fitted.count("b"), 0u);
  EXPECT_NEAR(lr_law_rate(one.fit, 1, 1, 1), std::sqrt(anchors[1].lr * anchors[2].lr),
              1e-3 * anchors[2].lr);
  anchors[1].at_edge = true;
  EXPECT_THROW(fit_lr_law(anchors, {}), std::invalid_argument);
}

TEST(LrLaw, AnExponentTheNoiseLeavesOpenIsDropped) {
  LrTuningOptions o;
  o.noise = 0.05;  // lr* of each anchor now uncertain by a factor of about 2
  std::vector<LrOptimum> anchors;
  for (double n : {1e3, 1.2e3, 1.5e3}) {  // a narrow range of N: its exponent stays open
    std::vector<double> rates;
    for (int i = -3; i <= 3; ++i) rates.push_back(1e-2 * std::pow(2.0, i));
    anchors.push_back(lr_optimum(parabola_anchor(1e-2, rates, n, 1e10 / (6 * n)), o));
  }
  const LrLaw law = fit_lr_law(anchors, o);
  EXPECT_EQ(law.fit.fitted.count("b"), 0u);
  ASSERT_FALSE(law.dropped.empty());
  EXPECT_NE(law.dropped.back().find("do not determine it"), std::string::npos);
}

TEST(RecipeCheck, ANeighbourBetterBeyondTheNoiseIsUntuned) {
  RecipePoint p{.label = "dense N=3K", .own_lr = 3e-3, .own = {2.26, 2.27}, .neighbours = {}};
  p.neighbours[3] = {2.14, 2.15};     // 0.12 nats better: untuned
  p.neighbours[1 / 3.] = {2.38, 2.39};
  const auto v = recipe_check({p}, 0.017);
  ASSERT_EQ(v.size(), 2u);
  int untuned = 0;
  for (const RecipeVerdict& x : v) untuned += x.untuned;
  EXPECT_EQ(untuned, 1);
  const auto d = recipe_diagnostics(v);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].code, "recipe_untuned");
  EXPECT_NE(d[0].message.find("dense N=3K at x3"), std::string::npos);
  // Within the noise: not flagged.
  p.neighbours[3] = {2.255, 2.265};
  EXPECT_TRUE(recipe_diagnostics(recipe_check({p}, 0.017)).empty());
}

}  // namespace
}  // namespace moescale::fitting
