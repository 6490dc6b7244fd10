// The recommender: closed-form Chinchilla optimum and the inference cost model.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

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
  EXPECT_EQ(r.best, 4u);
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
  o.mode = InferenceMode::total_cost;
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
  // Total-cost mode lets compute grow past the budget, and says so on each such choice.
  bool any_over = false;
  for (const Choice& c : r.cost_optimal) {
    EXPECT_EQ(c.over_budget, c.compute > o.budget * (1 + 1e-9)) << c.experts;
    any_over = any_over || c.over_budget;
  }
  EXPECT_TRUE(any_over);
  EXPECT_THAT(to_json(r), HasSubstr("\"over_budget\":true"));
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

// Yun et al.'s question: at a fixed budget, the cheapest-serving model reaching the reference
// loss. Larger E has slack in loss there, spent on a smaller model trained on more tokens.
TEST(BudgetMode, LargeExpertCountsShrinkAndNeverExceedTheBudget) {
  RecommendOptions o;
  o.budget = 1e22;
  o.experts = {1, 4, 8, 16, 32};
  o.serving = ServingDemand{};
  o.serving->tokens = 1e12;
  const Recommendation r = recommend(moe_law(), o);
  ASSERT_TRUE(r.inference_aware);
  EXPECT_EQ(r.mode, InferenceMode::budget);
  ASSERT_TRUE(r.reference_experts.has_value());
  ASSERT_TRUE(r.best_cost.has_value());
  ASSERT_EQ(r.cost_optimal.size(), r.loss_optimal.size());
  std::size_t ref = 0;
  for (std::size_t i = 0; i < r.loss_optimal.size(); ++i)
    if (r.loss_optimal[i].experts == *r.reference_experts) ref = i;
  EXPECT_DOUBLE_EQ(r.target_loss, r.loss_optimal[ref].loss);
  for (std::size_t i = 0; i < r.cost_optimal.size(); ++i) {
    const Choice& c = r.cost_optimal[i];
    const Choice& opt = r.loss_optimal[i];
    if (!c.feasible) {
      EXPECT_GT(opt.loss, r.target_loss) << c.experts;  // only E that cannot reach it
      continue;
    }
    EXPECT_LE(c.compute, o.budget * (1 + 1e-9)) << c.experts;
    EXPECT_NEAR(c.compute, o.budget, 1e-9 * o.budget) << c.experts;
    EXPECT_LE(c.loss, r.target_loss * (1 + 1e-9)) << c.experts;
    EXPECT_FALSE(c.over_budget);
    EXPECT_NEAR(c.loss_optimal_n_active, opt.n_active, 1e-9 * opt.n_active);
    EXPECT_GE(c.overtrain_ratio, 1 - 1e-6) << c.experts;
    // Never dearer to serve than the loss-optimal model of the same E (up to the recommender's
    // interpolation of shapes between sizes, a few percent).
    const ServingCost at_opt =
        serving_cost(footprint(opt.n_active, opt.experts, 1, default_shape), *o.serving);
    EXPECT_LE(c.serving.usd_per_million_tokens, at_opt.usd_per_million_tokens * 1.2);
    // The reference E has no slack: its loss-optimal model is the only one reaching the target.
    if (c.experts == *r.reference_experts) {
      EXPECT_NEAR(c.n_active, opt.n_active, 1e-3 * opt.n_active);
    }
  }
  const Choice& e32 = r.cost_optimal.back();
  ASSERT_EQ(e32.experts, 32);
  ASSERT_TRUE(e32.feasible);
  EXPECT_GT(e32.overtrain_ratio, 1.5);  // much smaller than its loss-optimal model...
  EXPECT_GT(e32.tokens, r.loss_optimal.back().tokens * 1.5);  // ...trained on more tokens
  // More experts, more slack: the shrink grows with E among the MoE counts above the reference.
  EXPECT_GT(e32.overtrain_ratio, r.cost_optimal[r.cost_optimal.size() - 2].overtrain_ratio);
  const Choice& best = r.cost_optimal[*r.best_cost];
  for (const Choice& c : r.cost_optimal) {
    if (c.feasible) {
      EXPECT_LE(best.serving.usd_per_million_tokens, c.serving.usd_per_million_tokens);
    }
  }
  const std::string json = to_json(r);
  EXPECT_THAT(json, HasSubstr("\"mode\":\"budget\""));
  EXPECT_THAT(json, HasSubstr("\"smaller_than_loss_optimal\""));
  EXPECT_THAT(json, HasSubstr("\"reference_experts\""));
}

TEST(BudgetMode, ServingCostCapGivesTheBestLossUnderIt) {
  RecommendOptions o;
  o.budget = 1e22;
  o.experts = {1, 8, 32};
  o.serving = ServingDemand{};
  o.mode = InferenceMode::budget;
  // The cap: half what the loss-optimal 32-expert model costs to serve.
  RecommendOptions loss_only = o;
  loss_only.serving.reset();
  const Recommendation plain = recommend(moe_law(), loss_only);
  const Choice& opt32 = plain.loss_optimal.back();
  const double cap = 0.5 * serving_cost(footprint(opt32.n_active, 32, 1, default_shape), *o.serving)
                               .usd_per_million_tokens;
  o.max_serve_cost = cap;
  const Recommendation r = recommend(moe_law(), o);
  ASSERT_TRUE(r.best_cost.has_value());
  for (std::size_t i = 0; i < r.cost_optimal.size(); ++i) {
    const Choice& c = r.cost_optimal[i];
    if (!c.feasible) continue;
    EXPECT_LE(c.serving.usd_per_million_tokens, cap * (1 + 1e-9));
    EXPECT_NEAR(c.compute, o.budget, 1e-9 * o.budget);
    EXPECT_GE(c.loss, r.loss_optimal[i].loss * (1 - 1e-12));
  }
  const Choice& c32 = r.cost_optimal.back();
  ASSERT_TRUE(c32.feasible);
  EXPECT_LT(c32.n_active, opt32.n_active);  // the cap binds: a smaller model
  for (const Choice& c : r.cost_optimal) {
    if (c.feasible) {
      EXPECT_LE(r.cost_optimal[*r.best_cost].loss, c.loss);
    }
  }
  EXPECT_THAT(to_json(r), HasSubstr("\"max_serve_cost\""));
  o.mode = InferenceMode::total_cost;
  EXPECT_THROW(recommend(moe_law(), o), std::invalid_argument);
}

TEST(Recommend, LawWithoutExpertsGivesOneRowAndSaysWhy) {
  RecommendOptions o;
  o.budget = 1e21;
  const Recommendation r = recommend(chinchilla(), o);
  ASSERT_EQ(r.loss_optimal.size(), 1u);
  EXPECT_EQ(r.loss_optimal[0].experts, 1);
  EXPECT_THAT(r.note, HasSubstr("no expert term"));
  const std::string json = to_json(r);
  EXPECT_THAT(json, HasSubstr("\"note\""));
  // The best loss is a real loss, not an index.
  EXPECT_THAT(json, HasSubstr(fmt::format("\"best_loss\":{}",
                                          nlohmann::json(r.loss_optimal[0].loss).dump())));
}

TEST(Recommend, OptimumAtTheEdgeOfTheRangeIsFlagged) {
  RecommendOptions o;
  o.budget = 1e21;
  o.experts = {1};
  o.min_params = 1e11;  // above the optimum (about 1e10 at this budget)
  Recommendation r = recommend(chinchilla(), o);
  EXPECT_EQ(r.loss_optimal[0].edge, Edge::lower);
  EXPECT_THAT(to_json(r), HasSubstr("\"edge\":\"lower\""));
  o.min_params = 1e3;
  o.max_params = 1e8;
  r = recommend(chinchilla(), o);
  EXPECT_EQ(r.loss_optimal[0].edge, Edge::upper);
  o.max_params = 1e14;
  r = recommend(chinchilla(), o);
  EXPECT_EQ(r.loss_optimal[0].edge, Edge::none);
  EXPECT_THAT(to_json(r), HasSubstr("\"edge\":null"));
}

std::vector<Observation> epoch_chinchilla() {
  const auto all =
      read_observations_csv(MOESCALE_SHARED_DIR "/data/chinchilla_epoch_svg_extracted.csv",
                            {{"N", "Model Size"}, {"C", "Training FLOP"}, {"loss", "loss"}});
  return exclude_top_loss(all, 5);
}

TEST(Intervals, BracketThePointEstimatesOnEpochChinchilla) {
  FitOptions fo;
  fo.bootstrap = 50;
  const FitResult fit = with_bootstrap(chinchilla(), epoch_chinchilla(), fo);
  ASSERT_GE(fit.bootstrap_samples.size(), 45u);
  EXPECT_EQ(fit.fitted, chinchilla().fitted);  // the point estimate is kept
  for (double budget : {1e21, 5.76e23}) {
    RecommendOptions o;
    o.budget = budget;
    const Recommendation r = recommend(fit, o);
    ASSERT_EQ(r.loss_optimal.size(), 1u);
    const Choice& c = r.loss_optimal[0];
    ASSERT_TRUE(c.n_active_ci && c.tokens_ci && c.loss_ci && c.p_best);
    EXPECT_LT(c.n_active_ci->lo, c.n_active) << budget;
    EXPECT_GT(c.n_active_ci->hi, c.n_active) << budget;
    EXPECT_LT(c.tokens_ci->lo, c.tokens) << budget;
    EXPECT_GT(c.tokens_ci->hi, c.tokens) << budget;
    EXPECT_LT(c.loss_ci->lo, c.loss) << budget;
    EXPECT_GT(c.loss_ci->hi, c.loss) << budget;
    EXPECT_LT(c.n_active_ci->hi / c.n_active_ci->lo, 10) << budget;  // informative, not wild
    EXPECT_DOUBLE_EQ(*c.p_best, 1);
    ASSERT_TRUE(r.compute_waste.has_value());
    EXPECT_GE(*r.compute_waste, 0);
    EXPECT_LT(*r.compute_waste, 0.1);  // a well-determined optimum wastes little
    EXPECT_GT(*r.compute_waste, 0);
    EXPECT_EQ(r.bootstrap, static_cast<int>(fit.bootstrap_samples.size()));
    const auto j = nlohmann::json::parse(to_json(r));
    EXPECT_EQ(j["loss_optimal"][0]["n_active_ci"].size(), 2u);
    EXPECT_EQ(j["loss_optimal"][0]["tokens_ci"].size(), 2u);
    EXPECT_EQ(j["loss_optimal"][0]["loss_ci"].size(), 2u);
    EXPECT_TRUE(j.contains("compute_waste"));
  }
}

TEST(Intervals, BootstrapOnTheFlyForCustomLaws) {
  FitResult fit = chinchilla();
  fit.law = "custom";  // not in the catalogue: the law is rebuilt from its expression
  EXPECT_EQ(law_of(fit).expression, fit.expression);
  EXPECT_EQ(law_of(chinchilla()).grid.size(), builtin_law("chinchilla").grid.size());
  FitOptions fo;
  fo.bootstrap = 6;
  const FitResult with = with_bootstrap(fit, epoch_chinchilla(), fo);
  EXPECT_GE(with.bootstrap_samples.size(), 5u);
  EXPECT_EQ(with.fitted, fit.fitted);
  fit.fitted.erase("alpha");
  EXPECT_THROW(with_bootstrap(fit, epoch_chinchilla(), fo), std::invalid_argument);
}

TEST(Intervals, PBestSumsToOneAcrossExpertCounts) {
  FitResult fit = moe_law();
  // A hand-made ensemble: the B/Ehat^beta term's exponent varies, which moves which E wins,
  // and the data exponent, which moves N*.
  for (double beta : {0.0, 0.02, 0.05, 0.3, 0.5, 0.7}) {
    auto sample = fit.fitted;
    sample["beta"] = beta;
    sample["gamma"] = 0.26 + beta / 10;
    fit.bootstrap_samples.push_back(sample);
  }
  RecommendOptions o;
  o.budget = 1e21;
  const Recommendation r = recommend(fit, o);
  double sum = 0;
  for (const Choice& c : r.loss_optimal) {
    ASSERT_TRUE(c.p_best.has_value());
    sum += *c.p_best;
  }
  EXPECT_NEAR(sum, 1, 1e-12);
  EXPECT_GT(*r.loss_optimal.back().p_best, 0.5);
  EXPECT_LT(*r.loss_optimal.back().p_best, 1);
  // The recommended N differs from each bootstrap fit's own optimum: some compute is wasted.
  EXPECT_GT(*r.compute_waste, 0);
}

TEST(CostModel, KvCacheAtAverageOccupancyAndSweepShape) {
  ServingDemand demand;
  const Footprint f = footprint(7e9, 8, 2, default_shape);
  const ServingCost s = serving_cost(f, demand);
  ASSERT_TRUE(s.feasible);
  const double occupancy = demand.prompt_tokens + demand.output_tokens / 2.0;
  EXPECT_NEAR(s.kv_gb, s.batch * f.kv_bytes_per_token * occupancy / 1e9, 1e-9);
  // MoE in every other layer holds fewer expert weights than MoE in every layer.
  const Footprint every = footprint(2e9, 16, 2, serving_shape_like(Router::topk, 1));
  const Footprint half = footprint(2e9, 16, 2, serving_shape_like(Router::topk, 2));
  EXPECT_LT(half.n_total, every.n_total);
  EXPECT_GT(half.n_total, half.n_active);
  // RMoE's GRU router adds parameters; E = 1 is dense whatever the router.
  const Footprint rmoe = footprint(2e9, 16, 2, serving_shape_like(Router::rmoe, 1));
  EXPECT_GT(rmoe.n_total, 0);
  const Footprint dense = footprint(2e9, 1, 1, serving_shape_like(Router::rmoe, 1));
  EXPECT_NEAR(dense.n_total, dense.n_active, 1e-6 * dense.n_active);
}

TEST(Simulate, LawParametersAndNoise) {
  const Law& law = builtin_law("chinchilla");
  const auto p = law_parameters(law, {"E=1.69", "A=406.4", "B=410.7", "alpha=0.34", "beta=0.28"});
  EXPECT_NEAR(p.at("a"), std::log(406.4), 1e-12);
  EXPECT_NEAR(p.at("e"), std::log(1.69), 1e-12);
  EXPECT_DOUBLE_EQ(p.at("alpha"), 0.34);
  EXPECT_THROW(law_parameters(law, {"E=1.69"}), std::invalid_argument);  // missing ones
  EXPECT_THAT([&] { law_parameters(law, {"Q=1"}); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("no parameter Q")));
  const Expression expr = law.compiled();
  std::vector<double> x;
  for (const auto& name : expr.params()) x.push_back(p.at(name));
  Observation o{1e8, 1e8, 2e9, 1, 1, 1, 0, ""};
  const double clean = expr.evaluate(x, o);
  EXPECT_DOUBLE_EQ(simulated_loss(expr, x, o, 0, 1, "run"), clean);
  EXPECT_DOUBLE_EQ(simulated_loss(expr, x, o, 0.01, 7, "run"),
                   simulated_loss(expr, x, o, 0.01, 7, "run"));  // reproducible
  double sum = 0, sum2 = 0;
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    const double r =
        std::log(simulated_loss(expr, x, o, 0.01, 3, "run" + std::to_string(i)) / clean);
    sum += r, sum2 += r * r;
  }
  EXPECT_NEAR(sum / n, 0, 0.001);
  EXPECT_NEAR(std::sqrt(sum2 / n), 0.01, 0.001);
}

}  // namespace
}  // namespace moescale::fitting
