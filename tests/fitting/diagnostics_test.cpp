// Diagnostics: clean data draw none; each kind of doubtful fit draws its code.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "fitting/fitting.h"

namespace moescale::fitting {
namespace {

std::vector<std::string> codes(const std::vector<Diagnostic>& ds) {
  std::vector<std::string> out;
  for (const auto& d : ds) out.push_back(d.code);
  return out;
}

std::string messages(const std::vector<Diagnostic>& ds) {
  std::string out;
  for (const auto& d : ds) out += d.code + ": " + d.message + "\n";
  return out;
}

double chinchilla_truth(double n, double d) {
  return 1.8 + 480 / std::pow(n, 0.34) + 2100 / std::pow(d, 0.37);
}

// IsoFLOP profiles: at each budget, model sizes from `low` to `high` times the loss-optimal N
// (found numerically on a fine grid), 0.3% noise.
std::vector<Observation> isoflop(double low, double high, uint64_t seed = 3) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0, 0.003);
  std::vector<Observation> obs;
  for (double c : {1e18, 3e18, 1e19, 3e19, 1e20}) {
    double best_n = 0, best = INFINITY;
    for (double ln = std::log(1e6); ln < std::log(1e11); ln += 0.01) {
      const double n = std::exp(ln), loss = chinchilla_truth(n, c / (6 * n));
      if (loss < best) best = loss, best_n = n;
    }
    for (int i = 0; i < 7; ++i) {
      const double n = best_n * low * std::pow(high / low, i / 6.0);
      const double d = c / (6 * n);
      obs.push_back({.n_active = n,
                     .tokens = d,
                     .loss = chinchilla_truth(n, d) * std::exp(noise(rng)),
                     .where = ""});
    }
  }
  return obs;
}

TEST(Diagnostics, EpochChinchillaIsClean) {
  const auto obs = exclude_top_loss(
      read_observations_csv(MOESCALE_SHARED_DIR "/data/chinchilla_epoch_svg_extracted.csv",
                            {{"N", "Model Size"}, {"C", "Training FLOP"}, {"loss", "loss"}}),
      5);
  const FitResult r = fit_law(builtin_law("chinchilla"), obs);
  EXPECT_TRUE(r.diagnostics.empty()) << messages(r.diagnostics);
  // Stored with the fit and read back.
  EXPECT_TRUE(fit_result_from_json(to_json(r)).diagnostics.empty());
}

TEST(Diagnostics, WellBracketedIsoflopIsClean) {
  const FitResult r = fit_law(builtin_law("chinchilla"), isoflop(0.25, 4));
  EXPECT_TRUE(r.diagnostics.empty()) << messages(r.diagnostics);
}

TEST(Diagnostics, EdgeMinimumSaysWhichWay) {
  // Every model is at least twice the optimum: the lowest loss is at the smallest one.
  const auto d = diagnose_design(isoflop(2, 16));
  ASSERT_EQ(codes(d), std::vector<std::string>{"edge_minimum"});
  EXPECT_THAT(d[0].message, ::testing::HasSubstr("5 of 5 IsoFLOP budgets"));
  EXPECT_THAT(d[0].message, ::testing::HasSubstr("add smaller models"));
  EXPECT_THAT(diagnose_design(isoflop(1.0 / 16, 0.5))[0].message,
              ::testing::HasSubstr("add larger models"));
}

TEST(Diagnostics, RolloutPredictsEveryNextBudget) {
  FitOptions o;
  o.holdout = Holdout::rollout;
  const FitResult r = fit_law(builtin_law("chinchilla"), isoflop(0.25, 4), o);
  ASSERT_EQ(r.rollout.size(), 3u);  // fitted on 2, 3 and 4 of the 5 budgets
  for (std::size_t k = 0; k < r.rollout.size(); ++k) {
    const RolloutStep& st = r.rollout[k];
    EXPECT_EQ(st.budgets_fitted, k + 2);
    EXPECT_EQ(st.n_test, 7u);
    EXPECT_EQ(st.n_train, 7 * (k + 2));
    EXPECT_LT(st.rmsle, 0.02);
    EXPECT_NEAR(st.predicted_best_loss, st.observed_best_loss, 0.02 * st.observed_best_loss);
    EXPECT_NEAR(std::log(st.predicted_n_opt / st.observed_n_opt), 0, std::log(2.0));
  }
  const FitResult back = fit_result_from_json(to_json(r));
  ASSERT_EQ(back.rollout.size(), 3u);
  EXPECT_EQ(back.rollout[2].rmsle, r.rollout[2].rmsle);
  // Too few budgets to roll out is an error that says what to do.
  auto two = isoflop(0.25, 4);
  two.resize(14);
  EXPECT_THROW(fit_law(builtin_law("chinchilla"), two, o), std::invalid_argument);
}

TEST(Diagnostics, ReplicatesThatDisagreeFarMoreThanASeedAreNotNoise) {
  auto obs = isoflop(0.25, 4);
  const std::size_t n = obs.size();
  for (std::size_t i = 0; i < n; ++i) {  // a second "loss column" 70% higher, as one
    Observation o = obs[i];
    o.loss *= 1.7;
    obs.push_back(o);
  }
  const FitResult r = fit_law(builtin_law("chinchilla"), obs);
  EXPECT_FALSE(r.noise.measured());
  EXPECT_THAT(codes(r.diagnostics), ::testing::Contains("replicates_disagree"));
  EXPECT_THAT(codes(r.diagnostics), ::testing::Not(::testing::Contains("lack_of_fit")));
}

TEST(Diagnostics, BoundsDegenerateShortRunsAndJson) {
  auto obs = isoflop(0.25, 4);
  Law law = builtin_law("chinchilla");
  set_bounds(law, "alpha=0.5:0.6");  // the truth, 0.34, is outside
  set_grid(law, "alpha=0.5,0.6");
  for (auto& o : obs) o.steps = 5000;
  obs[0].steps = 120;
  const FitResult r = fit_law(law, obs);
  const auto c = codes(r.diagnostics);
  EXPECT_THAT(c, ::testing::Contains("param_at_bound"));
  EXPECT_THAT(c, ::testing::Contains("short_runs"));
  EXPECT_THAT(messages(r.diagnostics), ::testing::HasSubstr("1 of 35 runs"));
  const FitResult back = fit_result_from_json(to_json(r));
  EXPECT_EQ(codes(back.diagnostics), c);
  EXPECT_EQ(back.bounds.at("alpha"), (std::pair<double, double>{0.5, 0.6}));

  // Data with no irreducible term: the fit drops E.
  std::vector<Observation> no_floor;
  for (double n : {1e7, 3e7, 1e8, 3e8})
    for (double dd : {1e9, 3e9, 1e10, 3e10})
      no_floor.push_back({.n_active = n,
                          .tokens = dd,
                          .loss = 480 / std::pow(n, 0.34) + 2100 / std::pow(dd, 0.37),
                          .where = ""});
  EXPECT_THAT(codes(fit_law(builtin_law("chinchilla"), no_floor).diagnostics),
              ::testing::Contains("degenerate"));
}

TEST(Diagnostics, Extrapolation) {
  // A law without the D term on data that has one: the held-out largest budget misses.
  FitOptions options;
  options.holdout = Holdout::largest_compute;
  const FitResult r = fit_law(custom_law("E0 + exp(a)/N^alpha"), isoflop(0.1, 10), options);
  EXPECT_THAT(codes(r.diagnostics), ::testing::Contains("extrapolation"))
      << messages(r.diagnostics);
}

TEST(Diagnostics, SystematicResidual) {
  // A few runs of another group (E = 8) 10% below the law that ignores E.
  auto obs = isoflop(0.25, 4);
  for (int i = 0; i < 4; ++i) {
    Observation o = obs[static_cast<std::size_t>(7 * i + 3)];
    o.experts = 8;
    o.loss *= 0.9;
    obs.push_back(o);
  }
  const FitResult r = fit_law(builtin_law("chinchilla"), obs);
  EXPECT_THAT(messages(r.diagnostics),
              ::testing::HasSubstr("systematic_residual: group E=8: the law over-predicts"));
}

// The middle budget's 7 points trained again: the same point with fresh 0.3% noise.
std::vector<Observation> with_replicates(std::vector<Observation> obs) {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> noise(0, 0.003);
  for (std::size_t i = 14; i < 21; ++i) {
    Observation o = obs[i];
    o.loss = chinchilla_truth(o.n_active, o.tokens) * std::exp(noise(rng));
    obs.push_back(o);
  }
  return obs;
}

// The fit carries the run-to-run noise its replicates measure (stored with it), and judges its
// RMSLE against it: the right law fits within the noise, a law without the data term cannot.
TEST(Diagnostics, LackOfFitIsJudgedAgainstTheReplicateNoise) {
  const auto obs = with_replicates(isoflop(0.25, 4));
  const FitResult right = fit_law(builtin_law("chinchilla"), obs);
  ASSERT_TRUE(right.noise.measured());
  EXPECT_EQ(right.noise.sets, 7u);
  EXPECT_EQ(right.noise.runs, 14u);
  EXPECT_EQ(right.noise.dof, 7u);
  EXPECT_GT(right.noise.sd_log_loss, 0.0015);
  EXPECT_LT(right.noise.sd_log_loss, 0.005);
  EXPECT_EQ(messages(right.diagnostics), "");
  const FitResult stored = fit_result_from_json(to_json(right));
  EXPECT_DOUBLE_EQ(stored.noise.sd_log_loss, right.noise.sd_log_loss);
  EXPECT_EQ(stored.noise.dof, 7u);

  const FitResult wrong = fit_law(custom_law("E0 + exp(a)/N^alpha"), obs);
  EXPECT_GT(wrong.rmsle, 2 * wrong.noise.sd_log_loss);
  EXPECT_THAT(messages(wrong.diagnostics), ::testing::HasSubstr("lack_of_fit: the law misses"));

  // Without replicates the noise is unmeasured and nothing is judged against it.
  const FitResult alone = fit_law(custom_law("E0 + exp(a)/N^alpha"), isoflop(0.25, 4));
  EXPECT_FALSE(alone.noise.measured());
  EXPECT_THAT(codes(alone.diagnostics), ::testing::Not(::testing::Contains("lack_of_fit")));
  EXPECT_FALSE(fit_result_from_json(to_json(alone)).noise.measured());
}

}  // namespace
}  // namespace moescale::fitting
