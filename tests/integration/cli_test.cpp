#include "tests/integration/cli_test.h"

#include <nlohmann/json.hpp>
#include <set>

namespace moescale::testing {
namespace {
using nlohmann::json;

const char* kSweep = R"([sweep]
name = "t"
budgets = [1e10, 3e10]
points_per_budget = 3
experts = [1, 4]
routers = ["topk", "rmoe"]
[model]
top_k = 2
router_dim = 16
)";

TEST_F(CliTest, ModelReportsMixtralCounts) {
  const Result r =
      run("model --vocab 32000 --seq-len 4096 --d-model 4096 --layers 32 --heads 32 --kv-heads 8 "
          "--ffn 14336 --experts 8 --top-k 2 --untied --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["all_params"], 46702792704);
  EXPECT_EQ(j["all_active_params"], 12879925248);
  EXPECT_EQ(j["total_params"].get<int64_t>() + j["embedding_params"].get<int64_t>(), 46702792704);
  EXPECT_DOUBLE_EQ(j["flops_per_token_6n"].get<double>(), 6.0 * j["active_params"].get<double>());
  EXPECT_GT(j["flops_per_token"].get<double>(), j["flops_per_token_6n"].get<double>());
}

TEST_F(CliTest, ModelRejectsImpossibleShapes) {
  const Result r = run("model --vocab 256 --seq-len 64 --d-model 100 --layers 2 --heads 3");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err.rfind("error: --d-model", 0), 0u) << r.err;
  EXPECT_TRUE(r.out.empty());
  EXPECT_EQ(run("model --vocab 256").status, 2);  // missing required flags: usage error
  EXPECT_EQ(run("model --help").status, 0);
}

TEST_F(CliTest, PlanTwiceAddsNothingAndRunsListsThem) {
  write("s.toml", kSweep);
  const Result first = run("plan --config s.toml --json");
  ASSERT_EQ(first.status, 0) << first.err;
  const json plan = json::parse(first.out);
  const size_t n = plan["runs"].size();
  EXPECT_GT(n, 6u);
  EXPECT_EQ(plan["added"], n);
  const json again = json::parse(run("plan --config s.toml --json").out);
  EXPECT_EQ(again["added"], 0);
  EXPECT_EQ(again["already_planned"], n);
  const Result runs = run("runs --sweep t --status planned --json");
  ASSERT_EQ(runs.status, 0) << runs.err;
  EXPECT_EQ(json::parse(runs.out).size(), n);
  const Result table = run("runs");
  EXPECT_NE(table.out.find("planned"), std::string::npos);
}

TEST_F(CliTest, FailedPlanLeavesTheDatabaseAsItWas) {
  write("s.toml", kSweep);
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const std::string before = read(dir_ / "moescale.db");
  std::string over = kSweep;
  over += "";
  write("bad.toml", std::string(kSweep).replace(0, 7, "[sweep]\nmax_total_compute = 1e9"));
  const Result r = run("plan --config bad.toml");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("max_total_compute"), std::string::npos) << r.err;
  write("typo.toml", std::string(kSweep) + "[train]\nbatchsize = 3\n");
  EXPECT_NE(run("plan --config typo.toml").err.find("train.batchsize"), std::string::npos);
  EXPECT_EQ(read(dir_ / "moescale.db"), before);
}

TEST_F(CliTest, DryRunAndBadConfigsCreateNoDatabase) {
  write("s.toml", kSweep);
  EXPECT_EQ(run("plan --config s.toml --dry-run").status, 0);
  EXPECT_EQ(run("plan --config missing.toml").status, 1);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "moescale.db"));
  const Result r = run("runs");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no moescale database"), std::string::npos) << r.err;
}

TEST_F(CliTest, TrainOnAMissingDeviceOrDataChangesNoRun) {
  write("s.toml", kSweep);
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const Result device = run("train --sweep t --device cuda:3");
  EXPECT_EQ(device.status, 1);
  // "error: device cuda:3: this build has no CUDA ..." or, in a CUDA build on a machine
  // without a GPU, "error: no CUDA device visible (--device cuda:3, ...)".
  EXPECT_EQ(device.err.rfind("error: ", 0), 0u) << device.err;
  EXPECT_NE(device.err.find("cuda:3"), std::string::npos) << device.err;
  const Result data = run("train --sweep t");  // the sweep's data folder does not exist
  EXPECT_EQ(data.status, 1);
  EXPECT_NE(data.err.find("moescale data prepare"), std::string::npos) << data.err;
  EXPECT_EQ(json::parse(run("runs --status planned --json").out).size(),
            json::parse(run("runs --json").out).size());
  EXPECT_NE(run("train --sweep nope").err.find("no sweep named 'nope'"), std::string::npos);
}

TEST_F(CliTest, ForeignDatabaseIsRefused) {
  write("s.toml", kSweep);
  const std::string path = write("notes.db", "not a database at all\n");
  const Result r = run("plan --config s.toml --db notes.db");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("not a moescale database"), std::string::npos) << r.err;
  EXPECT_EQ(read(path), "not a database at all\n");
}

// The worked example as issue 8 found it (configs/tiny-cpu.toml at 2537c3b: 80 tokens per
// parameter, E in {1, 4, 8}), its dense and top-k runs trained by this trainer and exported to
// tests/data: most budgets' lowest loss sits at the smallest model and the per-group fits
// cannot pin E, A or B. The fit must say both, and --strict must refuse it.
TEST_F(CliTest, TheOldWorkedExampleDrawsEdgeMinimumAndUnidentified) {
  const std::string csv = MOESCALE_SOURCE_DIR "/tests/data/example-2537c3b-topk.csv";
  ASSERT_EQ(run("import --csv " + csv +
                " --sweep old --map N=n_active NT=n_total D=tokens E=experts K=top_k "
                "loss=val_loss")
                .status,
            0);
  const Result fit = run("fit --sweep old --law chinchilla --per-group --bootstrap 20 --json");
  ASSERT_EQ(fit.status, 0) << fit.err;
  std::set<std::string> codes;
  for (const auto& group : json::parse(fit.out))
    for (const auto& d : group["diagnostics"]) codes.insert(d["code"].get<std::string>());
  EXPECT_TRUE(codes.count("edge_minimum")) << fit.err;
  EXPECT_TRUE(codes.count("unidentified")) << fit.err;
  EXPECT_NE(fit.err.find("is at the smallest model"), std::string::npos) << fit.err;
  EXPECT_NE(fit.err.find("add smaller models [edge_minimum]"), std::string::npos) << fit.err;
  EXPECT_EQ(run("fit --sweep old --law chinchilla --per-group --strict --quiet").status, 1);
}

}  // namespace
}  // namespace moescale::testing
