// Hostile inputs: every one ends with a one-line error (or the right result)
// and leaves no database behind. Regression tests for issue 10 §2-§5.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "tests/integration/cli_test.h"

namespace moescale::testing {
namespace {
using nlohmann::json;

const std::string kBase = R"([sweep]
name = "t"
budgets = [1e10, 3e10]
points_per_budget = 3
experts = [1, 4]
routers = ["topk"]
[model]
top_k = 2
router_dim = 16
[train]
batch_size = 8
)";

// Replaces `key = ...` in kBase, or adds the line to `section`.
std::string config_with(const std::string& section, const std::string& line) {
  std::string text = kBase;
  const std::string key = line.substr(0, line.find(' '));
  const auto at = text.find("\n" + key + " = ");
  if (at != std::string::npos) {
    const auto end = text.find('\n', at + 1);
    return text.replace(at + 1, end - at - 1, line);
  }
  const auto header = text.find("[" + section + "]\n");
  return text.insert(header + section.size() + 3, line + "\n");
}

bool one_error_line(const Result& r) {
  return r.err.rfind("error: ", 0) == 0 && r.err.find('\n') == r.err.size() - 1 &&
         r.err.size() < 1000;
}

struct Poison {
  std::string section, line, expect;
};

TEST_F(CliTest, PoisonedConfigsAreRefusedWithOneLineAndNothingWritten) {
  const std::vector<Poison> cases = {
      {"train", "batch_size = 4611686018427387904", "at most"},
      {"train", "batch_size = 16777216", "tokens per step"},
      {"sweep", "points_per_budget = 100000000", "at most 1000"},
      {"train", "lr = inf", "finite"},
      {"train", "lr = nan", "finite"},
      {"sweep", "budgets = [inf]", "finite"},
      {"sweep", "budgets = [1e300]", "at most 1e+30"},
      {"sweep", "experts = [9223372036854775807]", "at most 65536"},
      {"model", "min_layers = 10\nmax_layers = 4", "exceeds max_layers"},
      {"model", "kv_group = 1000", "at most 512"},
      {"model", "moe_every = 200\nmax_layers = 128", "exceeds max_layers"},
      {"model", "head_dim = 1000000000", "at most 4096"},
      {"sweep", "routers = [\"dense\"]", "needs a router that routes"},
      {"sweep", "name = \"../../x\"", "safe folder name"},
      {"sweep", "name = \"/abs/path\"", "safe folder name"},
      {"sweep", "name = \".hidden\"", "safe folder name"},
  };
  for (const Poison& p : cases) {
    write("bad.toml", config_with(p.section, p.line));
    for (const char* mode : {" --dry-run", ""}) {
      const Result r = run(std::string("plan --config bad.toml") + mode);
      EXPECT_EQ(r.status, 1) << p.line << mode << "\n" << r.err;
      EXPECT_TRUE(one_error_line(r)) << p.line << ": " << r.err;
      EXPECT_NE(r.err.find(p.expect), std::string::npos) << p.line << ": " << r.err;
    }
    EXPECT_FALSE(std::filesystem::exists(dir_ / "moescale.db")) << p.line;
  }
}

TEST_F(CliTest, ShapesThatCannotBeSnappedAreErrorsNotDenseModels) {
  // 12 layers at least, yet the tiny budget wants a model far smaller: the closest
  // shape within the rules is still the answer.
  write("ok.toml", config_with("model", "min_layers = 12"));
  const Result ok = run("plan --config ok.toml --dry-run --json");
  ASSERT_EQ(ok.status, 0) << ok.err;
  for (const json& r : json::parse(ok.out)["runs"]) EXPECT_GE(r["layers"].get<int>(), 12);
  // Even one layer is twice as deep as the aspect ratio allows: no shape at all.
  write("none.toml", config_with("model", "head_dim = 64\naspect_ratio = 1\nmax_layers = 1"));
  const Result none = run("plan --config none.toml --dry-run");
  EXPECT_EQ(none.status, 1);
  EXPECT_TRUE(one_error_line(none)) << none.err;
  EXPECT_NE(none.err.find("no model shape with"), std::string::npos) << none.err;
}

TEST_F(CliTest, ImportRefusesRowsWithoutUsableTokensAndCutsEchoedFields) {
  write("zero.csv", "N,C,loss\n1e300,1e-300,3\n");
  write("inf.csv", "N,C,loss\n1e-300,1e300,3\n");
  for (const char* f : {"zero.csv", "inf.csv"}) {
    const Result r =
        run(fmt::format("import --csv {} --sweep x --map N=N --map C=C --map loss=loss", f));
    EXPECT_EQ(r.status, 1) << f;
    EXPECT_NE(r.err.find("D = C / (6 N)"), std::string::npos) << r.err;
  }
  write("big.csv", "N,D,loss\n1e6,2e7," + std::string(10'000'000, '7') + "x\n");
  const Result big = run("import --csv big.csv --sweep x --map N=N --map D=D --map loss=loss");
  EXPECT_EQ(big.status, 1);
  EXPECT_TRUE(one_error_line(big)) << big.err.size();
  const Result zero = run("import --csv /dev/zero --sweep x --map N=N --map D=D --map loss=loss");
  EXPECT_EQ(zero.status, 1);
  EXPECT_NE(zero.err.find("not a CSV"), std::string::npos) << zero.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "moescale.db"));
}

TEST_F(CliTest, ImportReadsBareCrAndBomFilesAndRefusesASecondImport) {
  write("cr.csv", "\xEF\xBB\xBFN,D,loss\r1e6,2e7,3.0\r4e6,8e7,2.7\r");
  const std::string args = "--sweep x --map N=N --map D=D --map loss=loss --json";
  const Result first = run("import --csv cr.csv " + args);
  ASSERT_EQ(first.status, 0) << first.err;
  EXPECT_EQ(json::parse(first.out)["rows"], 2);
  const Result again = run("import --csv cr.csv " + args);
  EXPECT_EQ(again.status, 1);
  EXPECT_NE(again.err.find("--append"), std::string::npos) << again.err;
  const Result appended = run("import --csv cr.csv --append " + args);
  ASSERT_EQ(appended.status, 0) << appended.err;
  EXPECT_EQ(json::parse(appended.out)["already_there"], 2);
}

TEST_F(CliTest, RmAsksUnlessYesAndRefusesWithoutATerminal) {
  write("s.toml", kBase);
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const Result refused = run("rm sweep t < /dev/null");
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.err.find("--yes"), std::string::npos) << refused.err;
  EXPECT_FALSE(json::parse(run("runs --json").out).empty());
  const Result removed = run("rm sweep t --yes");
  ASSERT_EQ(removed.status, 0) << removed.err;
  EXPECT_NE(removed.out.find("removed sweep 't'"), std::string::npos);
  EXPECT_TRUE(json::parse(run("runs --json").out).empty());
  EXPECT_EQ(run("rm sweep t --yes").status, 1);
  EXPECT_EQ(run("rm fit 7 --yes").status, 1);
  EXPECT_EQ(run("rm").status, 2);
}

TEST_F(CliTest, TrainOnMissingDataTouchesNoHeartbeat) {
  write("s.toml", kBase);
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const Result r = run("train --sweep t --data /nonexistent");
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(one_error_line(r)) << r.err;
  for (const json& run_row : json::parse(run("runs --json").out)) {
    EXPECT_EQ(run_row["status"], "planned");
    EXPECT_TRUE(run_row["heartbeat_age_s"].is_null()) << run_row.dump();
    EXPECT_EQ(run_row["started_at"], "");
  }
}

TEST_F(CliTest, MarkovChainsTooLargeForMemorySaySo) {
  const Result ok =
      run("data prepare -q --source synthetic:markov:order=1,vocab=65536,branching=3,tokens=1000 "
          "--out m");
  EXPECT_EQ(ok.status, 0) << ok.err;
  const Result r = run(
      "data prepare --source synthetic:markov:vocab=65536,branching=65536,tokens=1000 --out m2");
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(one_error_line(r)) << r.err;
  EXPECT_NE(r.err.find("over the limit of 5e7"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moescale::testing
