#include "tests/integration/cli_test.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

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

const std::string kDclm = MOESCALE_SHARED_DIR "/data/marin_dclm_isoflops.csv";
const std::string kChinchillaIsoflops = MOESCALE_SHARED_DIR "/data/chinchilla_isoflops.csv";

TEST_F(CliTest, DclmDrawsNoEdgeMinimumWithOrWithoutItsBudgetColumn) {
  for (const std::string budget : {"", " --map budget=budget"}) {
    const std::string sweep = budget.empty() ? "no_label" : "label";
    ASSERT_EQ(run("import --csv " + kDclm + " --sweep " + sweep +
                  " --map N=params --map D=tokens --map loss=loss" + budget)
                  .status,
              0);
    const Result fit = run("fit --sweep " + sweep + " --law chinchilla --quiet --json");
    ASSERT_EQ(fit.status, 0) << fit.err;
    EXPECT_EQ(fit.err.find("edge_minimum"), std::string::npos) << sweep << ": " << fit.err;
    for (const auto& d : json::parse(fit.out)["diagnostics"])
      EXPECT_NE(d["code"], "edge_minimum") << sweep;
  }
}

TEST_F(CliTest, ApproachTwoGivesAAndBAndRecommendAnswersFromIt) {
  ASSERT_EQ(run("import --csv " + kChinchillaIsoflops +
                " --sweep c --map N=params --map D=tokens --map loss=loss --map budget=budget")
                .status,
            0);
  const Result fit = run("fit --sweep c --approach 2 --bootstrap 50 --json");
  ASSERT_EQ(fit.status, 0) << fit.err;
  const json j = json::parse(fit.out);
  EXPECT_GE(j["a"].get<double>(), 0.47);
  EXPECT_LE(j["a"].get<double>(), 0.52);
  EXPECT_LT(j["a_interval"]["lo"].get<double>(), j["a"].get<double>());
  EXPECT_NEAR(j["a"].get<double>() + j["b"].get<double>(), 1, 1e-9);
  EXPECT_TRUE(j["b_interval"].is_object());
  const Result rec =
      run("recommend --fit " + std::to_string(j["fit_id"].get<int>()) + " --budget 1e22 --json");
  ASSERT_EQ(rec.status, 0) << rec.err;
  const json r = json::parse(rec.out);
  EXPECT_EQ(r["law"], "approach2");
  EXPECT_GT(r["loss_optimal"][0]["n_active"].get<double>(), 1e9);
}

// Cells of a row: an aligned table's (two spaces or more apart) or a Markdown one's.
std::vector<std::string> cells(const std::string& line, bool markdown) {
  std::vector<std::string> out;
  if (markdown) {
    std::stringstream in(line.substr(1));
    std::string cell;
    while (std::getline(in, cell, '|')) {
      const auto a = cell.find_first_not_of(' '), b = cell.find_last_not_of(' ');
      out.push_back(a == std::string::npos ? "" : cell.substr(a, b - a + 1));
    }
    return out;
  }
  size_t i = 0;
  if (line.rfind("*", 0) != 0) out.push_back("");  // the empty "best" cell
  while (i < line.size()) {
    const size_t end = line.find("  ", i);
    out.push_back(line.substr(i, end - i));
    if (end == std::string::npos) break;
    i = line.find_first_not_of(' ', end);
  }
  return out;
}

TEST_F(CliTest, ReportOnAnImportedSweepHasBothApproachesTheRolloutAndRecommendsAsRecommendDoes) {
  ASSERT_EQ(run("import --csv " + kDclm +
                " --sweep dclm --map N=params --map D=tokens --map loss=loss --map budget=budget")
                .status,
            0);
  const Result fit = run("fit --sweep dclm --bootstrap 20 --holdout rollout --quiet --json");
  ASSERT_EQ(fit.status, 0) << fit.err;
  EXPECT_EQ(json::parse(fit.out)["rollout"].size(), 5u);  // predicts budgets 3 to 7
  ASSERT_EQ(run("fit --sweep dclm --approach 2 --bootstrap 20 --quiet").status, 0);
  const Result report = run("report --sweep dclm --out r --budget 1e21 --quiet");
  ASSERT_EQ(report.status, 0) << report.err;
  const std::string md = read(dir_ / "r" / "report.md");
  for (const char* part : {"## Approach 2 beside approach 3", "implies a = β/(α+β)", "## Rollout",
                           "## IsoFLOP curves", "isoflop.png"})
    EXPECT_NE(md.find(part), std::string::npos) << part;
  const Result rec = run("recommend --fit 1 --budget 1e21 --experts 1");
  ASSERT_EQ(rec.status, 0) << rec.err;
  std::string rec_row, md_row;
  std::stringstream rs(rec.out), ms(md);
  for (std::string line; std::getline(rs, line);)
    if (line.rfind("*", 0) == 0) rec_row = line;
  const std::string command = "`moescale recommend --fit 1 --budget 1e+21 --experts 1`";
  const auto at = md.find(command);
  ASSERT_NE(at, std::string::npos) << md;
  ms.seekg(static_cast<std::streamoff>(at));
  for (std::string line; std::getline(ms, line);)
    if (line.rfind("| * |", 0) == 0) {
      md_row = line;
      break;
    }
  ASSERT_FALSE(rec_row.empty()) << rec.out;
  ASSERT_FALSE(md_row.empty()) << md;
  EXPECT_EQ(cells(rec_row, false), cells(md_row, true)) << rec_row << "\n" << md_row;
}

}  // namespace
}  // namespace moescale::testing
