// Faults a cluster produces, from the command line, fast (no training): shell syntax in
// the paths a user gives, passwords in store locations, absurd numbers.
#include <fmt/format.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "tests/integration/cli_test.h"

namespace moescale::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

const char* kSweep = R"([sweep]
name = "sim"
budgets = [1e17, 1e18, 1e19]
points_per_budget = 4
span = 3.0
tokens_per_param = 1000
experts = [1]
[model]
vocab = 256
seq_len = 128
)";

const char* kTruth =
    "--law chinchilla --param E=1.69 --param A=406.4 --param B=410.7 --param alpha=0.34 "
    "--param beta=0.28";

// Files under `dir` whose name holds "MARKER": what a `touch MARKER…` run by a shell made.
std::vector<std::string> markers(const fs::path& dir) {
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find("MARKER") == 0) found.push_back(e.path().string());
  return found;
}

// moescale never hands a path to a shell: `$(…)`, backticks and `$VAR` in --out, --db and
// data folders are names like any other (report's figures were drawn through `sh -c`).
TEST_F(CliTest, ShellSyntaxInPathsIsTakenLiterally) {
  write("s.toml", kSweep);
  for (const std::string weird :
       {"$(touch MARKER1)", "`touch MARKER2`", "$HOME", "a;touch MARKER3"}) {
    SCOPED_TRACE(weird);
    const std::string db = "s " + weird + ".db", data = "d " + weird, out = "rep " + weird;
    const Result prep =
        run(fmt::format("data prepare -q --source synthetic:markov:tokens=20000 --out '{}'", data));
    ASSERT_EQ(prep.status, 0) << prep.err;
    EXPECT_TRUE(fs::exists(dir_ / data / "meta.json"));
    ASSERT_EQ(run(fmt::format("plan --config s.toml --db '{}'", db)).status, 0);
    EXPECT_TRUE(fs::exists(dir_ / db));
    const Result sim = run(fmt::format("simulate --sweep sim --db '{}' {}", db, kTruth));
    ASSERT_EQ(sim.status, 0) << sim.err;
    const Result report = run(fmt::format("report --sweep sim --db '{}' --out '{}'", db, out));
    EXPECT_EQ(report.status, 0) << report.err;
    EXPECT_TRUE(fs::exists(dir_ / out / "report.md")) << "written where the user asked";
    EXPECT_TRUE(fs::exists(dir_ / out / "isoflop.png"));
  }
  EXPECT_TRUE(markers(dir_).empty()) << markers(dir_).front();
}

// A password never reaches a message: not from a malformed URL (libpq repeats it), not
// with an unencoded '@' in it, not from libpq key=value text taken as a file name.
TEST_F(CliTest, PasswordsStaySecret) {
  write("s.toml", kSweep);
  const char* kSecret = "Secr3tPW";
  for (const std::string url :
       {"postgresql://u:Secr3tPW@[::1/db", "postgresql://u:Secr3t%zzPW@localhost/db",
        "postgresql://u:Secr3tPW@localhost:1/db?sslmode=bogus",
        "postgresql://u:Secr@3tPW@localhost:1/db",
        "postgres://u@localhost:1/db?password=Secr3tPW&x=1"}) {
    SCOPED_TRACE(url);
    const Result r = run("runs --db '" + url + "'");
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
    for (const std::string part : {"Secr3t", "3tPW", "Secr@"})
      EXPECT_EQ(r.err.find(part), std::string::npos) << r.err;
  }
  const Result at = run("runs --db 'postgresql://u:Secr@3tPW@localhost:1/db'");
  EXPECT_NE(at.err.find("%40"), std::string::npos) << "says how to write it: " << at.err;

  const Result text =
      run(fmt::format("plan --config s.toml --db 'host=/tmp password={} dbname=x'", kSecret));
  EXPECT_NE(text.status, 0);
  EXPECT_NE(text.err.find("postgresql://"), std::string::npos) << "says which forms: " << text.err;
  EXPECT_EQ(text.err.find(kSecret), std::string::npos) << text.err;
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find(kSecret), std::string::npos)
        << "no file named after the password: " << e.path();
  const Result scheme = run("plan --config s.toml --db 'mysql://u:Secr3tPW@h/db'");
  EXPECT_NE(scheme.status, 0);
  EXPECT_EQ(scheme.err.find(kSecret), std::string::npos) << scheme.err;
  EXPECT_FALSE(fs::exists(dir_ / "mysql:"));
}

// Counts and budgets are range-checked where they enter, against plan's limits.
TEST_F(CliTest, AbsurdNumbersAreRefusedOrFormatted) {
  write("s.toml", kSweep);
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  ASSERT_EQ(run(fmt::format("simulate --sweep sim {}", kTruth)).status, 0);
  const Result fit =
      run("fit --sweep sim --grid e=0,1 --grid a=3:9:3 --grid b=3:9:3 --grid alpha=0.3 "
          "--grid beta=0.3 --json -q");
  ASSERT_EQ(fit.status, 0) << fit.err;
  const int64_t id = json::parse(fit.out)["fit_id"];
  const std::string rec = fmt::format("recommend --fit {} --bootstrap 0 ", id);
  for (const std::string flags :
       {"--budget 1e21 --experts 131072", "--budget 1e21 --experts 1,9223372036854775807",
        "--budget 1e21 --experts 9223372036854775808", "--budget 1e21 --experts 0",
        "--budget 1e21 --top-k 0", "--budget 1e21 --top-k -1",
        "--budget 1e21 --experts 1,4 --top-k 5", "--budget 1e308", "--budget inf",
        "--budget nan"}) {
    SCOPED_TRACE(flags);
    const Result r = run(rec + flags);
    EXPECT_NE(r.status, 0) << r.out;
    EXPECT_TRUE(r.out.find("nan") == std::string::npos) << r.out;
    EXPECT_NE(r.err.find("error"), std::string::npos) << r.err;
  }
  const Result big = run(rec + "--budget 1e29 --experts 1");
  ASSERT_EQ(big.status, 0) << big.err;
  EXPECT_EQ(big.out.find("0000000000"), std::string::npos) << "no 20-digit figures: " << big.out;
  const Result next =
      run(fmt::format("plan --next --fit {} --budget 1e308 --allowance 1e19 --dry-run", id));
  EXPECT_NE(next.status, 0) << next.out;
  EXPECT_NE(next.err.find("1e+30"), std::string::npos) << next.err;
}

}  // namespace
}  // namespace moescale::testing
