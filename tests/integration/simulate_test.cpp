// simulate, recommend with intervals and plan --next from the command line, on a small dense
// sweep with a known Chinchilla truth.
#include <fmt/format.h>

#include <iterator>
#include <sstream>

#include <nlohmann/json.hpp>

#include "db/db.h"
#include "tests/integration/cli_test.h"

namespace moescale::testing {
namespace {
using nlohmann::json;

std::string sweep_toml(const std::string& name) {
  return fmt::format(R"([sweep]
name = "{}"
budgets = [1e17, 1e18, 1e19]
points_per_budget = 4
span = 3.0
tokens_per_param = 1000
experts = [1]
[model]
vocab = 256
seq_len = 128
)",
                     name);
}

const char* kTruth =
    "--law chinchilla --param E=1.69 --param A=406.4 --param B=410.7 --param alpha=0.34 "
    "--param beta=0.28";
const char* kGrid =
    "--grid e=0,0.5,1 --grid a=3:9:3 --grid b=3:9:3 --grid alpha=0.2,0.5 --grid beta=0.2,0.5";

TEST_F(CliTest, SimulateRecommendWithIntervalsAndPlanNext) {
  write("s.toml", sweep_toml("sim"));
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const Result sim =
      run(fmt::format("simulate --sweep sim {} --noise 0.01 --seed 3 --json", kTruth));
  ASSERT_EQ(sim.status, 0) << sim.err;
  const size_t planned = json::parse(sim.out)["runs"].size();
  EXPECT_EQ(planned, 12u);
  for (const json& r : json::parse(run("runs --json").out)) {
    EXPECT_EQ(r["status"], "done");
    EXPECT_EQ(r["source"], "simulated");
  }
  // The table's header names every column its rows fill.
  const std::string table = run("runs").out;
  EXPECT_NE(table.find("simulated"), std::string::npos);
  std::istringstream lines(table);
  std::string header, row;
  std::getline(lines, header);
  std::getline(lines, row);
  const auto words = [](const std::string& line) {
    std::istringstream in(line);
    return static_cast<int>(std::distance(std::istream_iterator<std::string>(in),
                                          std::istream_iterator<std::string>()));
  };
  EXPECT_NE(header.find("source"), std::string::npos) << header;
  // "val loss" is two words in the header; the dense router's row has every cell filled.
  EXPECT_EQ(words(header) - 1, words(row)) << header << "\n" << row;

  const Result fit = run(fmt::format("fit --sweep sim {} --bootstrap 20 --json -q", kGrid));
  ASSERT_EQ(fit.status, 0) << fit.err;
  const int64_t fit_id = json::parse(fit.out)["fit_id"];

  const Result rec = run(fmt::format("recommend --fit {} --budget 1e21 --json", fit_id));
  ASSERT_EQ(rec.status, 0) << rec.err;
  const json r = json::parse(rec.out);
  ASSERT_EQ(r["loss_optimal"].size(), 1u);  // chinchilla has no E term
  EXPECT_TRUE(r.contains("note"));
  const json& c = r["loss_optimal"][0];
  for (const char* key : {"n_active_ci", "tokens_ci", "loss_ci"}) {
    ASSERT_EQ(c[key].size(), 2u) << key;
    EXPECT_LE(c[key][0].get<double>(), c[key][1].get<double>()) << key;
  }
  EXPECT_DOUBLE_EQ(c["p_best"].get<double>(), 1.0);
  EXPECT_GE(r["compute_waste"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(r["best_loss"].get<double>(), c["loss"].get<double>());
  const Result text = run(fmt::format("recommend --fit {} --budget 1e21", fit_id));
  EXPECT_NE(text.out.find("p_best"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("compute waste"), std::string::npos) << text.out;

  // Budget mode never spends more than the budget.
  const Result served =
      run(fmt::format("recommend --fit {} --budget 1e21 --serve-tokens 1e12 --json", fit_id));
  ASSERT_EQ(served.status, 0) << served.err;
  const json s = json::parse(served.out);
  EXPECT_EQ(s["mode"], "budget");
  for (const json& choice : s["cost_optimal"]) {
    if (choice["feasible"]) {
      EXPECT_LE(choice["compute"].get<double>(), 1e21 * (1 + 1e-9));
    }
  }

  const Result next = run(fmt::format(
      "plan --next --fit {} --budget 1e21 --allowance 2e19 --max-runs 3 --json", fit_id));
  ASSERT_EQ(next.status, 0) << next.err;
  const json n = json::parse(next.out);
  ASSERT_GE(n["runs"].size(), 1u);
  EXPECT_LE(n["runs"].size(), 3u);
  EXPECT_LE(n["compute_6n"].get<double>(), 2e19);
  EXPECT_LT(n["sd_log_n_opt_after"].get<double>(), n["sd_log_n_opt_before"].get<double>());
  for (const json& p : n["runs"]) EXPECT_FALSE(p["why"].get<std::string>().empty());
  EXPECT_EQ(json::parse(run("runs --status planned --json").out).size(), n["runs"].size());
  const Result text_next = run(fmt::format(
      "plan --next --fit {} --budget 1e21 --allowance 2e19 --max-runs 2 --dry-run", fit_id));
  ASSERT_EQ(text_next.status, 0) << text_next.err;
  EXPECT_NE(text_next.out.find("narrower"), std::string::npos) << text_next.out;
  EXPECT_NE(text_next.out.find("dry run"), std::string::npos);

  ASSERT_EQ(run(fmt::format("simulate --sweep sim {}", kTruth)).status, 0);
  EXPECT_TRUE(json::parse(run("runs --status planned --json").out).empty());

  // A fit without bootstrap sets: recommend refits resamples on the fly.
  const Result bare = run(fmt::format("fit --sweep sim {} --json -q", kGrid));
  ASSERT_EQ(bare.status, 0) << bare.err;
  const int64_t bare_id = json::parse(bare.out)["fit_id"];
  const Result refit =
      run(fmt::format("recommend --fit {} --budget 1e21 --bootstrap 10 --json", bare_id));
  ASSERT_EQ(refit.status, 0) << refit.err;
  EXPECT_NE(refit.err.find("refitting 10 resamples"), std::string::npos) << refit.err;
  EXPECT_EQ(json::parse(refit.out)["loss_optimal"][0]["n_active_ci"].size(), 2u);
}

TEST_F(CliTest, SimulatedAndTrainedResultsNeverMix) {
  write("s.toml", sweep_toml("mix"));
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const std::string db_path = (dir_ / "moescale.db").string();
  {
    Database db(db_path, Database::Mode::must_exist);
    const auto claimed = db.claim_run("mix", RunOwner::this_process());
    ASSERT_TRUE(claimed);
    db.finish_run(claimed->claim(), RunStatus::done, 3.0, 1.0, 1, "");
  }
  const Result sim = run(fmt::format("simulate --sweep mix {}", kTruth));
  EXPECT_EQ(sim.status, 1);
  EXPECT_NE(sim.err.find("holds trained results"), std::string::npos) << sim.err;
  {
    // Written behind simulate's back, the mix is still refused when fitting.
    Database db(db_path, Database::Mode::must_exist);
    const auto planned = db.runs("mix", RunStatus::planned);
    ASSERT_FALSE(planned.empty());
    db.record_simulated("mix", {{planned[0].id, 3.1}});
    EXPECT_EQ(db.run(planned[0].id).source, "simulated");
    EXPECT_THROW(db.observations("mix"), std::runtime_error);
    // All or nothing: one bad id leaves every run as it was.
    EXPECT_THROW(db.record_simulated("mix", {{planned[1].id, 3.0}, {planned[0].id, 3.0}}),
                 std::runtime_error);
    EXPECT_EQ(db.run(planned[1].id).status, RunStatus::planned);
  }
  const Result fit = run("fit --sweep mix -q");
  EXPECT_EQ(fit.status, 1);
  EXPECT_NE(fit.err.find("mixes trained and simulated"), std::string::npos) << fit.err;
}

TEST_F(CliTest, SimulateAndPlanNextErrors) {
  write("s.toml", sweep_toml("err"));
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const Result missing = run("simulate --sweep err --law chinchilla --param E=1.69");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err.find("needs a value"), std::string::npos) << missing.err;
  EXPECT_EQ(run("plan --next --fit 1").status, 2);
  EXPECT_EQ(run("plan").status, 2);
  EXPECT_EQ(run("recommend --fit 1 --budget 1e21 --mode cheapest").status, 2);
}

}  // namespace
}  // namespace moescale::testing
