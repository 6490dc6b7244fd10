// The recommender: closed-form Chinchilla optimum and the inference cost model.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "fitting/fitting.h"

namespace moescale::fitting {
namespace {

using ::testing::HasSubstr;

FitResult fitted(const std::string& name, const std::map<std::string, double>& values) {
  const Law& law = builtin_law(name);
  FitResult r;
  r.law = law.name;
  r.expression = law.expression;
  r.definitions = law.definitions;
  r.reported = law.reported;
  r.fitted = values;
  return r;
}

constexpr double kE = 1.8172, kA = 477.8, kB = 2143, kAlpha = 0.3473, kBeta = 0.3672;

FitResult chinchilla() {
  return fitted("chinchilla", {{"e", std::log(kE)},
                               {"a", std::log(kA)},
                               {"b", std::log(kB)},
                               {"alpha", kAlpha},
                               {"beta", kBeta}});
}

// A MoE law where experts help: yun2024 with a strong B/Ehat^beta term.
FitResult moe_law() {
  return fitted("yun2024", {{"a", std::log(400.0)},
                            {"alpha", 0.34},
                            {"b", std::log(0.4)},
                            {"beta", 0.5},
                            {"c", std::log(1800.0)},
                            {"gamma", 0.28},
                            {"F", 1.5},
                            {"d", 0.0},
                            {"E_start", 2},
                            {"u", std::log(98.0)}});
}

TEST(Recommend, ChinchillaMatchesClosedForm) {
  for (double budget : {1e19, 5.76e23, 1e26}) {
    RecommendOptions o;
    o.budget = budget;
    o.experts = {1};
    o.max_params = 1e16;
    const Recommendation r = recommend(chinchilla(), o);
    ASSERT_EQ(r.loss_optimal.size(), 1u);
    const double g = std::pow(kAlpha * kA / (kBeta * kB), 1 / (kAlpha + kBeta));
    const double n_opt = g * std::pow(budget / 6, kBeta / (kAlpha + kBeta));
    const Choice& c = r.loss_optimal[0];
    EXPECT_NEAR(c.n_active, n_opt, 1e-4 * n_opt) << budget;
    EXPECT_NEAR(c.tokens, budget / (6 * n_opt), 1e-4 * budget / (6 * n_opt));
    EXPECT_NEAR(c.compute, budget, 1e-9 * budget);
    EXPECT_NEAR(c.loss, kE + kA / std::pow(n_opt, kAlpha) + kB / std::pow(c.tokens, kBeta), 1e-7);
  }
}

TEST(Recommend, MoreExpertsLowerLossAtBudget) {
  RecommendOptions o;
  o.budget = 1e21;
  const Recommendation r = recommend(moe_law(), o);
  ASSERT_EQ(r.loss_optimal.size(), 5u);
  for (std::size_t i = 1; i < r.loss_optimal.size(); ++i) {
    EXPECT_LT(r.loss_optimal[i].loss, r.loss_optimal[i - 1].loss);
    EXPECT_GT(r.loss_optimal[i].n_total, r.loss_optimal[i].n_active);
  }
  EXPECT_EQ(r.best_loss, 4u);
  EXPECT_FALSE(r.inference_aware);
  EXPECT_THAT(to_json(r), HasSubstr("\"loss_optimal\""));
}

TEST(Recommend, RejectsLawsWithoutTokens) {
  RecommendOptions o;
  o.budget = 1e21;
  EXPECT_THAT(
      [&] {
        recommend(fitted("clark2022", {{"a", -0.1},
                                       {"b", -0.1},
                                       {"c", 0.01},
                                       {"d", 2},
                                       {"E_start", 2},
                                       {"u", std::log(98.0)}}),
                  o);
      },
      ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("does not depend on both")));
  o.budget = -1;
  EXPECT_THROW(recommend(chinchilla(), o), std::invalid_argument);
}

TEST(CostModel, MoreExpertsNeedMoreMemoryAndGpus) {
  ServingDemand demand;
  const Footprint dense = footprint(2e9, 1, 1, default_shape);
  const Footprint moe = footprint(2e9, 32, 1, default_shape);
  EXPECT_DOUBLE_EQ(dense.n_active, moe.n_active);
  EXPECT_NEAR(dense.n_total, dense.n_active, 1e-6 * dense.n_active);
  EXPECT_GT(moe.n_total, 10 * moe.n_active);
  const ServingCost a = serving_cost(dense, demand), b = serving_cost(moe, demand);
  ASSERT_TRUE(a.feasible && b.feasible);
  EXPECT_GT(b.weights_gb, 10 * a.weights_gb);
  EXPECT_GT(b.min_gpus, a.min_gpus);
  EXPECT_GE(b.gpus, b.min_gpus);
  EXPECT_GT(b.usd_per_million_tokens, a.usd_per_million_tokens);
  // The KV cache shares memory with the weights: a bigger model leaves room for fewer sequences.
  EXPECT_LE(b.kv_gb + b.weights_gb, b.gpus * demand.hardware.memory_gb);
}

TEST(CostModel, SmallerModelsAreCheaperToServe) {
  ServingDemand demand;
  double last = 0;
  for (double n : {1e8, 1e9, 1e10, 7e10}) {
    const ServingCost s = serving_cost(footprint(n, 8, 2, default_shape), demand);
    ASSERT_TRUE(s.feasible) << n;
    EXPECT_GT(s.usd_per_million_tokens, last) << n;
    last = s.usd_per_million_tokens;
  }
  ServingDemand tiny = demand;
  tiny.max_gpus = 1;
  EXPECT_FALSE(serving_cost(footprint(2e11, 64, 2, default_shape), tiny).feasible);
  demand.hardware = hardware_preset("a100");
  EXPECT_GT(serving_cost(footprint(1e9, 8, 2, default_shape), demand).usd_per_million_tokens, 0);
}

TEST(CostModel, ServingDemandShrinksTheModelAtEqualLoss) {
  RecommendOptions o;
  o.budget = 1e22;
  o.experts = {1, 8, 32};
  o.serving = ServingDemand{};
  o.serving->tokens = 0;
  const Recommendation base = recommend(moe_law(), o);
  o.serving->tokens = 1e13;
  const Recommendation r = recommend(moe_law(), o);
  ASSERT_TRUE(r.inference_aware);
  EXPECT_DOUBLE_EQ(r.target_loss, base.target_loss);
  for (std::size_t i = 0; i < r.cost_optimal.size(); ++i) {
    const Choice& c0 = base.cost_optimal[i];
    const Choice& c = r.cost_optimal[i];
    ASSERT_TRUE(c.feasible && c0.feasible);
    // Without serving, the cheapest model is the loss-optimal one.
    EXPECT_NEAR(c0.overtrain_ratio, 1, 0.05);
    // With serving, a smaller model trained on more tokens reaches the same loss for less.
    EXPECT_GT(c.overtrain_ratio, 1.2) << c.experts;
    EXPECT_GT(c.tokens, c0.tokens);
    EXPECT_NEAR(c.loss, r.target_loss, 1e-9);
    const double serve0 =
        serving_cost(footprint(c0.n_active, c0.experts, 1, default_shape), *o.serving)
            .usd_per_million_tokens *
        1e13 / 1e6;
    EXPECT_LT(c.total_usd, c0.train_usd + serve0);
    EXPECT_LT(c.serving.usd_per_million_tokens, c0.serving.usd_per_million_tokens);
  }
  EXPECT_THAT(to_json(r), HasSubstr("\"overtrain_ratio\""));
}

TEST(CostModel, HardwarePresetsAndOverrides) {
  Hardware h = hardware_preset("h200");
  EXPECT_DOUBLE_EQ(h.memory_gb, 141);
  apply_hardware_override(h, "usd_per_hour=4.25");
  EXPECT_DOUBLE_EQ(h.usd_per_hour, 4.25);
  EXPECT_THROW(apply_hardware_override(h, "speed=3"), std::invalid_argument);
  EXPECT_THROW(apply_hardware_override(h, "memory_gb=-3"), std::invalid_argument);
  EXPECT_THAT([] { hardware_preset("tpu"); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("presets: h100")));
  EXPECT_NEAR(training_cost_usd(989e12 * 0.4 * 3600, hardware_preset("h100")), 2.5, 1e-9);
}

}  // namespace
}  // namespace moescale::fitting
