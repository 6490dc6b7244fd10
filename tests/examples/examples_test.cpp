// The examples in examples/, each run the way its README paragraph says, made quick:
// sweeps as dry-run plans, fits on subsets without bootstrap.
#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "tests/integration/cli_test.h"

namespace moescale::testing {
namespace {

const std::string kExamples = MOESCALE_SOURCE_DIR "/examples";

std::string fmt_days(double days) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f days", days);
  return buf;
}

// One IsoFLOP point: group, size and tokens (replicates share it; seeds differ).
std::string point_of(const nlohmann::json& run) {
  return run["router"].get<std::string>() + std::to_string(run["experts"].get<int>()) + "/" +
         std::to_string(run["active_params"].get<int64_t>()) + "/" +
         std::to_string(run["tokens"].get<int64_t>());
}

class Examples : public CliTest {
 protected:
  // Runs an example's script with this build's program and a database in the test folder.
  Result script(const std::string& name, const std::string& env = "") const {
    return run_shell("MOESCALE=" MOESCALE_BINARY " OUT='" + dir_.string() + "' " + env + " bash " +
                     kExamples + "/" + name + "/run.sh");
  }

  nlohmann::json dry_run(const std::string& config) const {
    const Result r = run("plan --config " + config + " --dry-run --json");
    EXPECT_EQ(r.status, 0) << r.err;
    return nlohmann::json::parse(r.out);
  }
};

TEST_F(Examples, QuickstartIsTheExampleScriptAndItsSweepHoldsUp) {
  EXPECT_NE(read(kExamples + "/quickstart/run.sh").find("scripts/example.sh"), std::string::npos);
  const std::string config = MOESCALE_SOURCE_DIR "/configs/tiny-cpu.toml";
  // The tuning stage plans without a store: six rates at four anchors of each of three groups.
  const Result tune = run("plan --config " + config + " --tune --dry-run --json");
  ASSERT_EQ(tune.status, 0) << tune.err;
  const auto tuning = nlohmann::json::parse(tune.out);
  EXPECT_EQ(tuning["runs"].size(), 3u * 4 * 6);
  for (const auto& run : tuning["runs"]) EXPECT_GE(run["steps"].get<int64_t>(), 300);
  // The sweep takes its rates from the tuning stage's law, and says how to get one.
  const Result untuned = run("plan --config " + config + " --dry-run", "none.db");
  EXPECT_NE(untuned.status, 0);
  EXPECT_NE(untuned.err.find("--tune"), std::string::npos) << untuned.err;
  // Its shapes and tokens do not depend on the rate: plan them at a fixed one.
  std::string text = read(config);
  const std::string rule = "lr_rule = \"fit\"\nlr_fit = \"tiny-cpu-tune\"";
  ASSERT_NE(text.find(rule), std::string::npos);
  text.replace(text.find(rule), rule.size(), "lr = 1e-2");
  const auto plan = dry_run(write("tiny-cpu-fixed.toml", text));
  std::set<double> budgets;
  std::map<std::string, std::set<uint64_t>> seeds;  // point -> seeds
  for (const auto& run : plan["runs"]) {
    EXPECT_GE(run["steps"].get<int64_t>(), 300) << run["key"];
    budgets.insert(run["budget"].get<double>());
    seeds[point_of(run)].insert(run["seed"].get<uint64_t>());
    if (run["router"] == "rmoe") {  // the router must not be most of the model
      EXPECT_LT(run["router_params"].get<double>(), run["active_params"].get<double>() / 3);
    }
  }
  ASSERT_EQ(budgets.size(), 3u);
  const double middle = *std::next(budgets.begin());
  for (const auto& run : plan["runs"]) {
    const std::string point = point_of(run);
    EXPECT_EQ(seeds[point].size(), run["budget"].get<double>() == middle ? 2u : 1u) << point;
  }
  EXPECT_GT(plan["est_seconds"].get<double>(), 0);
}

TEST_F(Examples, ChinchillaRefitImportsFitsAndRecommendsOnASubset) {
  const Result r = script("chinchilla-refit", "ROWS=4 BOOTSTRAP=0");
  ASSERT_EQ(r.status, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("imported 62 rows"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("law chinchilla"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("loss-optimal at C = 5.76e+23"), std::string::npos) << r.out;
  const std::string source = read(kExamples + "/README.md");
  EXPECT_NE(source.find("Besiroglu"), std::string::npos) << "the README states the data's source";
}

TEST_F(Examples, InferenceAwareRecommendsWithServingCost) {
  const Result r = script("inference-aware", "SERVE_TOKENS=1e12");
  ASSERT_EQ(r.status, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("law ludziejewski2025"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("budget mode: cheapest to serve at C = 1e+21"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("smaller than loss-opt"), std::string::npos) << r.out;
}

TEST_F(Examples, ImportYourRunsMapsATrackersColumnNames) {
  const Result r = script("import-your-runs");
  ASSERT_EQ(r.status, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("imported 30 rows"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("law chinchilla"), std::string::npos) << r.out;
  // Without --map the tracker's names are not moescale's: a clear error, nothing imported.
  const Result bad = run("import --csv " + kExamples + "/import-your-runs/wandb_export.csv " +
                         "--sweep x --map N=N --map D=D --map loss=loss --db t.db");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("config.model.n_params_nonembed"), std::string::npos) << bad.err;
}

TEST_F(Examples, GpuSweepIsSizedForOneH100) {
  const auto plan = dry_run(kExamples + "/gpu-sweep.toml");
  std::set<std::string> routers;
  std::set<double> budgets;
  double lo = 1e30, hi = 0;
  int64_t max_experts = 0;
  for (const auto& run : plan["runs"]) {
    routers.insert(run["router"].get<std::string>());
    budgets.insert(run["budget"].get<double>());
    lo = std::min(lo, run["active_params"].get<double>());
    hi = std::max(hi, run["active_params"].get<double>());
    max_experts = std::max(max_experts, run["experts"].get<int64_t>());
  }
  EXPECT_EQ(routers, (std::set<std::string>{"dense", "topk", "rmoe"}));
  EXPECT_EQ(budgets, (std::set<double>{1e17, 1e18, 1e19}));
  EXPECT_EQ(max_experts, 32);
  EXPECT_GT(lo, 10e6);
  EXPECT_LT(hi, 450e6);
  // The README quotes the planner's estimate; keep them in step.
  const double days = plan["est_seconds"].get<double>() / 86400;
  EXPECT_NE(read(kExamples + "/README.md").find(fmt_days(days)), std::string::npos)
      << "examples/README.md should quote " << fmt_days(days);
}

}  // namespace
}  // namespace moescale::testing
