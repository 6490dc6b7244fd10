// The whole pipeline, small: data, plan, train, fit, recommend, report.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "tests/integration/cli_test.h"

namespace moescale::testing {
namespace {
using nlohmann::json;

const char* kSweep = R"([sweep]
name = "pipe"
budgets = [4e8, 1.2e9, 3.6e9]
points_per_budget = 3
span = 2.5
experts = [1, 4]
routers = ["topk", "rmoe"]
[model]
vocab = 16
seq_len = 32
top_k = 2
router_dim = 8
head_dim = 8
aspect_ratio = 16
[train]
batch_size = 8
lr = 1e-2
eval_batches = 2
[data]
dir = "markov"
)";

TEST_F(CliTest, PipelineFromDataToReport) {
  write("s.toml", kSweep);
  const Result data =
      run("data prepare --source synthetic:markov:order=1,vocab=16,branching=3,tokens=400000 "
          "--out markov");
  ASSERT_EQ(data.status, 0) << data.err;
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const size_t planned = json::parse(run("runs --json").out).size();
  ASSERT_GE(planned, 12u);

  const Result train = run("train --sweep pipe --max-runs 2 --quiet");
  ASSERT_EQ(train.status, 0) << train.err;
  EXPECT_EQ(json::parse(run("runs --status done --json").out).size(), 2u);
  const Result rest = run("train --sweep pipe");
  ASSERT_EQ(rest.status, 0) << rest.err;
  EXPECT_NE(rest.err.find("ETA"), std::string::npos);  // progress goes to stderr
  const json runs = json::parse(run("runs --json").out);
  for (const json& r : runs) {
    EXPECT_EQ(r["status"], "done") << r.dump();
    EXPECT_LT(r["final_loss"].get<double>(), std::log(16.0));  // learnt something
  }
  // Resuming finds nothing left to train.
  EXPECT_NE(run("train --sweep pipe").err.find("trained 0 runs"), std::string::npos);

  const Result fit = run("fit --sweep pipe --law chinchilla --per-group --bootstrap 12 --json -q");
  ASSERT_EQ(fit.status, 0) << fit.err;
  const json fits = json::parse(fit.out);
  ASSERT_EQ(fits.size(), 3u);  // dense, topk E=4, rmoe E=4
  for (const json& f : fits) {
    EXPECT_GE(f["n_points"], 7);
    EXPECT_GT(f["params"]["alpha"].get<double>(), 0);
  }
  const Result rec = run(fmt::format("recommend --fit {} --budget 1e10 --experts 1,4 --json",
                                     fits[1]["fit_id"].get<int>()));
  ASSERT_EQ(rec.status, 0) << rec.err;
  // Chinchilla has no E term: one row, and a note saying why.
  EXPECT_EQ(json::parse(rec.out)["loss_optimal"].size(), 1u);
  EXPECT_TRUE(json::parse(rec.out).contains("note"));

  const Result report = run("report --sweep pipe --out rep");
  ASSERT_EQ(report.status, 0) << report.err;
  for (const char* f : {"report.md", "isoflop.png", "isoflop.svg", "frontier.png", "curves.png",
                        "expert_load.png", "routers.png"})
    EXPECT_GT(std::filesystem::file_size(dir_ / "rep" / f), 1000u) << f;
  const std::string md = read(dir_ / "rep" / "report.md");
  for (const char* s : {"![", "isoflop.png", "**Best**: ", "| * |", "rmoe − topk", "| done |"})
    EXPECT_NE(md.find(s), std::string::npos) << s;
}

}  // namespace
}  // namespace moescale::testing
