// group_budgets: budgets as the user meant them, from a stated budget or from 6ND alone.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "fitting/fitting.h"

namespace moescale::fitting {
namespace {

const std::string kDclm = MOESCALE_SHARED_DIR "/data/marin_dclm_isoflops.csv";
const std::string kChinchilla = MOESCALE_SHARED_DIR "/data/chinchilla_isoflops.csv";

std::vector<Observation> read(const std::string& path, bool with_budget) {
  ColumnMapping m{{"N", "params"}, {"D", "tokens"}, {"loss", "loss"}};
  if (with_budget) m["budget"] = "budget";
  return read_observations_csv(path, m);
}

// Each budget found from 6ND holds the runs of exactly one stated budget, and every stated
// budget is found.
void expect_recovers_stated_budgets(const std::string& path, std::size_t count) {
  const auto stated = read(path, true);
  const auto unstated = read(path, false);
  const auto budgets = group_budgets(unstated);
  ASSERT_EQ(budgets.size(), count);
  std::set<double> seen;
  for (const Budget& b : budgets) {
    EXPECT_FALSE(b.stated);
    std::set<double> labels;
    for (std::size_t r : b.rows) labels.insert(stated[r].budget);
    ASSERT_EQ(labels.size(), 1u) << "a budget found at C = " << b.compute << " mixes budgets";
    seen.insert(*labels.begin());
    EXPECT_NEAR(std::log(b.compute / *labels.begin()), 0, std::log(1.35));
  }
  EXPECT_EQ(seen.size(), count);
}

TEST(Budgets, StatedBudgetsGroupTheRuns) {
  const auto obs = read(kDclm, true);
  const auto budgets = group_budgets(obs);
  ASSERT_EQ(budgets.size(), 7u);
  std::vector<double> computes;
  std::size_t rows = 0;
  for (const Budget& b : budgets) {
    EXPECT_TRUE(b.stated);
    computes.push_back(b.compute);
    rows += b.rows.size();
    for (std::size_t r : b.rows) EXPECT_EQ(obs[r].budget, b.compute);
  }
  EXPECT_EQ(computes, (std::vector<double>{3e18, 9e18, 1.8e19, 3e19, 9e19, 1.8e20, 3e20}));
  EXPECT_EQ(rows, obs.size());
}

// Marin's runs sit at 0.93-1.35 times their budget in 6ND: neighbouring budgets overlap in gap
// size with the spread inside one (a 2% or 25% rule on 6ND splits or merges them).
TEST(Budgets, DclmBudgetsAreRecoveredFrom6NDAlone) {
  expect_recovers_stated_budgets(kDclm, 7);
}

TEST(Budgets, ChinchillaBudgetsAreRecoveredFrom6NDAlone) {
  expect_recovers_stated_budgets(kChinchilla, 9);
}

TEST(Budgets, DclmDrawsNoEdgeMinimumWithOrWithoutItsBudgetColumn) {
  for (bool with_budget : {true, false}) {
    const auto d = diagnose_design(read(kDclm, with_budget));
    EXPECT_TRUE(d.empty()) << (with_budget ? "with" : "without")
                           << " the budget column: " << (d.empty() ? "" : d[0].message);
  }
}

TEST(Budgets, OneModelTrainedTwiceAsLongIsTwoBudgets) {
  // Same model at 1x and 1.2x the tokens: 6ND 20% apart, close enough to join, but an IsoFLOP
  // budget never holds one model twice with different token counts.
  std::vector<Observation> obs;
  for (double d : {1e9, 1.2e9}) obs.push_back({.n_active = 1e8, .tokens = d, .loss = 3, .where = ""});
  EXPECT_EQ(group_budgets(obs).size(), 2u);
  // Replicates (the same model and tokens) share a budget, and other families do not clash.
  obs = {{.n_active = 1e8, .tokens = 1e9, .loss = 3, .where = ""},
         {.n_active = 1e8, .tokens = 1e9, .loss = 3.01, .where = ""},
         {.n_active = 1e8, .tokens = 1.1e9, .experts = 8, .loss = 2.9, .where = ""}};
  EXPECT_EQ(group_budgets(obs).size(), 1u);
}

TEST(Budgets, FarApartComputeIsNotOneBudget) {
  std::vector<Observation> obs;
  for (int i = 0; i < 20; ++i)  // a chain of 10% steps spans far more than a factor 2
    obs.push_back(
        {.n_active = 1e7 * (i + 1), .tokens = 1e9 * std::pow(1.1, i) / (i + 1), .loss = 3, .where = ""});
  for (const Budget& b : group_budgets(obs)) {
    double lo = INFINITY, hi = 0;
    for (std::size_t r : b.rows) {
      const double c = training_compute(obs[r].n_active, obs[r].tokens);
      lo = std::min(lo, c), hi = std::max(hi, c);
    }
    EXPECT_LE(hi / lo, 2.0);
  }
}

}  // namespace
}  // namespace moescale::fitting
