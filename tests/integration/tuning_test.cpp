// The tuning workflow from the command line, on losses with a known best rate per run: plan
// --tune, fit --law lr, plan with lr_rule = "fit", runs --json, and the recipe check. Losses are
// written into the store as simulated results (no training), so the test is fast and exact.
#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "db/db.h"
#include "tests/integration/cli_test.h"

namespace moescale::testing {
namespace {
using nlohmann::json;

const char* kSweep = R"([sweep]
name = "lr"
budgets = [1e9, 1e10]
points_per_budget = 4
span = 3.0
tokens_per_param = 100
experts = [1, 4]
routers = ["topk"]
replicates = 2
replicate_budgets = [1e10]
[model]
vocab = 256
seq_len = 64
top_k = 2
head_dim = 16
width_step = 4
ffn_multiple = 8
aspect_ratio = 16
[train]
batch_size = 4
lr_rule = "fit"
lr_fit = "lr-tune"
[tune]
budgets = [1e9, 1e10]
anchors = [3, 3]
rates = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
)";

// The truth: lr* = 0.5 N^-0.5 D^0.1 (topk: half that); loss grows as the square of log lr / lr*.
double best_rate(double n, double d, int64_t experts) {
  return (experts == 1 ? 0.5 : 0.25) * std::pow(n, -0.5) * std::pow(d, 0.1);
}
double loss_at(const json& run, double lr) {
  const double n = run["active_params"], d = run["tokens"];
  const double base = 1.7 + 400 / std::pow(n, 0.34) + 400 / std::pow(d, 0.28);
  return base * std::exp(0.02 * std::pow(std::log(lr / best_rate(n, d, run["experts"])), 2));
}

class TuningTest : public CliTest {
 protected:
  // Every planned run of the sweep done, its loss from the truth at its rate (times `factor`
  // for the recipe neighbours at x3, to plant an untuned point).
  void simulate(const std::string& sweep, double probe_gain = 1) {
    std::vector<std::pair<int64_t, double>> losses;
    for (const json& r : json::parse(run("runs --json --sweep " + sweep, store()).out)) {
      if (r["status"] != "planned") continue;
      double loss = loss_at(r, r["lr"]);
      if (r["recipe_probe"].get<double>() > 1) loss *= probe_gain;
      // Seeds differ a little, as trained runs do.
      loss *= 1 + 0.002 * (r["seed"].get<int>() == 1 ? 1 : -1);
      losses.push_back({r["id"], loss});
    }
    Database db(store(), Database::Mode::must_exist);
    db.record_simulated(sweep, losses);
  }
  std::string store() const { return (dir_ / "m.db").string(); }
};

TEST_F(TuningTest, TheFittedLawGivesEveryRunItsRateAndTheRecipeCheckSaysWhenItIsOff) {
  write("lr.toml", kSweep);
  // The main sweep cannot be planned before its tuning stage has been fitted.
  Result r = run("plan --config lr.toml", store());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("plan --config lr.toml --tune"), std::string::npos) << r.err;

  r = run("plan --config lr.toml --tune --json", store());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["runs"].size(), 2u * 6 * 6);  // 2 groups x 6 anchors x 6 rates
  simulate("lr-tune");
  r = run("fit --sweep lr-tune --law lr --bootstrap 50 --json", store());
  ASSERT_EQ(r.status, 0) << r.err;
  const json fit = json::parse(r.out);
  ASSERT_EQ(fit["laws"].size(), 2u);
  for (const json& law : fit["laws"]) {
    // The truth's exponents are recovered, with intervals around them.
    EXPECT_NEAR(law["params"]["b"].get<double>(), -0.5, 0.05) << law["group"];
    EXPECT_NEAR(law["params"]["c"].get<double>(), 0.1, 0.05) << law["group"];
    EXPECT_LT(law["intervals"]["b"]["lo"].get<double>(), -0.5);
  }
  for (const json& a : fit["anchors"]) EXPECT_FALSE(a["at_edge"].get<bool>()) << a["label"];

  r = run("plan --config lr.toml", store());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("lr_rule \"fit\" (lr fits"), std::string::npos) << r.out;
  const json runs = json::parse(run("runs --json --sweep lr", store()).out);
  ASSERT_GT(runs.size(), 10u);
  for (const json& run : runs) {
    EXPECT_EQ(run["lr_rule"], "fit");
    EXPECT_EQ(run["train"]["lr"], run["lr"]);
    EXPECT_EQ(run["batch_size"], 4);
    const double want = best_rate(run["active_params"], run["tokens"], run["experts"]);
    EXPECT_NEAR(std::log(run["lr"].get<double>() / want), 0, 0.1) << run["key"];
  }
  simulate("lr");

  // Tuned: the neighbours at x3 and x1/3 are worse, and no recipe_untuned fires.
  r = run("plan --recipe-check 2 --sweep lr --json", store());
  ASSERT_EQ(r.status, 0) << r.err;
  const json check = json::parse(r.out);
  int probes = 0;
  for (const json& p : check["runs"]) probes += p["recipe_probe"].get<double>() != 1;
  EXPECT_EQ(probes, 2 * 2 * 2);  // 2 points x 2 factors x 2 seeds
  simulate("lr");
  r = run("fit --sweep lr --law chinchilla --strict --quiet", store());
  EXPECT_EQ(r.err.find("recipe_untuned"), std::string::npos) << r.err;
  // The report shows the rule, the tuning sweep's law and curves, and the recipe check.
  ASSERT_EQ(run("fit --sweep lr --law chinchilla --per-group --quiet", store()).status, 0);
  r = run("report --sweep lr --out rep --quiet", store());
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string md = read(dir_ / "rep" / "report.md");
  EXPECT_NE(md.find("## Learning rates"), std::string::npos);
  EXPECT_NE(md.find("lr_rule \"fit\""), std::string::npos);
  EXPECT_NE(md.find("### Tuning sweep `lr-tune`"), std::string::npos);
  EXPECT_NE(md.find("| router=topk |"), std::string::npos);
  EXPECT_NE(md.find("(tuning.png)"), std::string::npos);
  EXPECT_NE(md.find("| x3 |"), std::string::npos) << "the recipe-check table";
  // Neighbours are not fit data: the fit has the sweep's own points only.
  const json chin = json::parse(run("fit --sweep lr --law chinchilla --json --quiet", store()).out);
  EXPECT_EQ(chin["n_points"].get<size_t>(), runs.size());
}

TEST_F(TuningTest, ANeighbourThatBeatsTheSweepsRateDrawsRecipeUntuned) {
  std::string text = kSweep;
  const std::string rule = "lr_rule = \"fit\"\nlr_fit = \"lr-tune\"";
  text.replace(text.find(rule), rule.size(), "lr = 1e-3");
  write("lr.toml", text);
  ASSERT_EQ(run("plan --config lr.toml", store()).status, 0);
  simulate("lr");
  ASSERT_EQ(run("plan --recipe-check 2 --sweep lr", store()).status, 0);
  simulate("lr");  // at a fixed 1e-3, far below lr*, x3 is much better
  const Result r = run("fit --sweep lr --law chinchilla --strict --quiet", store());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("[recipe_untuned]"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("at x3 its rate"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moescale::testing
