// The command line on a PostgreSQL store: --db and MOESCALE_DB choose it, and
// `moescale db copy` moves a real store (planned, simulated, fitted with a
// bootstrap, imported) SQLite -> PostgreSQL -> SQLite with every table unchanged.
#include <fstream>
#include <iterator>
#include <filesystem>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include "db/db.h"
#include "tests/db/postgres_server.h"
#include "tests/integration/cli_test.h"

namespace moescale {
namespace {
namespace fs = std::filesystem;
using testing::PostgresServer;
using testing::Result;

class PostgreSQLCliTest : public testing::CliTest {
 protected:
  void SetUp() override {
    if (!PostgresServer::get()) GTEST_SKIP() << PostgresServer::why_not();
    CliTest::SetUp();
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
};

// The embedded example at one fixed rate: its own rule reads a tuning sweep's fits from the
// store, and these tests are about the store.
std::string fixed_rate_example() {
  std::ifstream in(MOESCALE_SOURCE_DIR "/configs/tiny-cpu.toml");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string rule = "lr_rule = \"fit\"\nlr_fit = \"tiny-cpu-tune\"";
  text.replace(text.find(rule), rule.size(), "lr = 3e-3");
  const std::string path = (std::filesystem::temp_directory_path() / "moescale_tiny_cpu_fixed.toml").string();
  std::ofstream(path) << text;
  return path;
}

void expect_same_rows(const std::string& a, const std::string& b) {
  const Database da(a, Database::Mode::read_only), db(b, Database::Mode::read_only);
  EXPECT_EQ(da.store_identity(), db.store_identity());
  for (const std::string& table : Database::table_names())
    EXPECT_EQ(da.table_rows(table), db.table_rows(table)) << table << ": " << a << " vs " << b;
}

TEST_F(PostgreSQLCliTest, DbCopyMovesAStoreToPostgresAndBackUnchanged) {
  const std::string source = MOESCALE_SOURCE_DIR;
  const std::string a = path("a.db");
  ASSERT_EQ(run("plan --config " + fixed_rate_example() + " --db a.db").status, 0);
  ASSERT_EQ(run("simulate --sweep tiny-cpu --law chinchilla --param E=1.69 A=406.4 B=410.7 "
                "alpha=0.34 beta=0.28 --db a.db")
                .status,
            0);
  ASSERT_EQ(run("fit --sweep tiny-cpu --law chinchilla --bootstrap 20 --quiet --db a.db").status,
            0);
  ASSERT_EQ(run("import --csv " + source +
                "/examples/import-your-runs/wandb_export.csv --sweep my-runs --map "
                "N=config.model.n_params_nonembed --map D=summary/train/tokens_seen --map "
                "'loss=summary/eval/loss (final)' --db a.db")
                .status,
            0);

  const std::string url = PostgresServer::get()->create_database("cli_copy");
  const Result to_server = run("db copy --from a.db --to '" + url + "' --json");
  ASSERT_EQ(to_server.status, 0) << to_server.err;
  const std::size_t runs = Database(a, Database::Mode::read_only).table_rows("runs").size();
  EXPECT_GT(runs, 0u);
  EXPECT_NE(to_server.out.find("\"runs\": " + std::to_string(runs) + ","), std::string::npos)
      << to_server.out;
  EXPECT_NE(to_server.out.find("\"fits\": 1,"), std::string::npos) << to_server.out;
  EXPECT_EQ(to_server.out.find("\"observations\": 0"), std::string::npos) << to_server.out;
  expect_same_rows(a, url);

  // A second copy would mix two stores: refused, and the server store is unchanged.
  const Result again = run("db copy --from a.db --to '" + url + "'");
  EXPECT_EQ(again.status, 1);
  EXPECT_NE(again.err.find("error: "), std::string::npos) << again.err;
  EXPECT_NE(again.err.find("empty store"), std::string::npos) << again.err;
  expect_same_rows(a, url);

  // MOESCALE_DB names the server; --db wins over it.
  const Result listed = run("runs --sweep tiny-cpu --json", url);
  ASSERT_EQ(listed.status, 0) << listed.err;
  EXPECT_NE(listed.out.find("\"status\": \"done\""), std::string::npos);
  const Result flag_wins = run("runs --sweep tiny-cpu --db a.db", "postgresql://nobody@/none");
  EXPECT_EQ(flag_wins.status, 0) << flag_wins.err;
  const Result fit = run("fit --sweep tiny-cpu --law chinchilla --quiet", url);
  EXPECT_EQ(fit.status, 0) << fit.err;

  const Result back = run("db copy --to b.db", url);
  ASSERT_EQ(back.status, 0) << back.err;
  for (const auto& entry : fs::directory_iterator(dir_))  // no temp file left behind
    EXPECT_EQ(entry.path().string().find(".copy-"), std::string::npos) << entry.path();
  expect_same_rows(url, path("b.db"));
  const Result refused = run("db copy --from '" + url + "' --to b.db");
  EXPECT_EQ(refused.status, 1) << refused.out;
}

// A frozen server (SIGSTOP) is noticed by the client: a read-only command ends with a
// clear error within 30 s instead of waiting forever.
TEST_F(PostgreSQLCliTest, AFrozenServerEndsAReadOnlyCommandWithinThirtySeconds) {
  const std::string url = PostgresServer::get()->create_database("cli_frozen");
  ASSERT_EQ(run("plan --config " + fixed_rate_example() + " --db '" + url + "'")
                .status,
            0);
  PostgresServer::get()->signal_all(SIGSTOP);
  struct Thaw {
    ~Thaw() { PostgresServer::get()->signal_all(SIGCONT); }
  } thaw;
  const auto start = std::chrono::steady_clock::now();
  const Result r = run("runs --db '" + url + "'");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(r.status, 0);
  EXPECT_LT(seconds, 30.0);
  EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("PostgreSQL"), std::string::npos) << r.err;
}

// `submit --dry-run` prints its script with the password masked; the file, readable by
// its owner only, keeps what the tasks need.
TEST_F(PostgreSQLCliTest, SubmitDryRunKeepsThePasswordOffTheTerminal) {
  std::string url = PostgresServer::get()->create_database("cli_secret");
  url.replace(url.find("moescale@"), 9, "moescale:Secr3tPW@");  // trust: not checked, but sent
  ASSERT_EQ(run("plan --config " + fixed_rate_example() + " --db '" + url + "'")
                .status,
            0);
  const Result r = run("submit --sweep tiny-cpu --array 2 --dry-run --db '" + url + "'");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.find("Secr3tPW"), std::string::npos) << r.out;
  EXPECT_EQ(r.err.find("Secr3tPW"), std::string::npos) << r.err;
  const auto at = r.err.find("script written to ");
  ASSERT_NE(at, std::string::npos) << r.err;
  const std::string script = r.err.substr(at + 18, r.err.find(',', at) - at - 18);
  EXPECT_NE(read(script).find("Secr3tPW"), std::string::npos) << "the job needs it";
  EXPECT_EQ(fs::status(script).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
}

// Backends killed by pg_terminate_backend and a server restart in the middle of a sweep
// cost no run: train tries the store again (--db-retry) and every run ends done, once.
TEST_F(PostgreSQLCliTest, TrainSurvivesKilledConnectionsAndAServerRestart) {
  prepare_markov();
  write("s.toml", testing::tiny_sweep("[1.5e6]", "log_interval = 5\n"));
  const std::string url = PostgresServer::get()->create_database("cli_restart");
  ASSERT_EQ(run("plan --config s.toml --db '" + url + "'").status, 0);
  Result trained;
  std::thread train([&] { trained = run("train --sweep w --threads 1 -q --db '" + url + "'"); });
  std::this_thread::sleep_for(std::chrono::seconds(2));
  for (int i = 0; i < 3; ++i) {
    PostgresServer::get()->exec("postgres",
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                                "datname = 'cli_restart' AND pid <> pg_backend_pid()");
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
  }
  PostgresServer::get()->restart();
  train.join();
  EXPECT_EQ(trained.status, 0) << trained.err;
  EXPECT_NE(trained.err.find("trying again"), std::string::npos)
      << "the faults must have hit the train: " << trained.err;
  const Database db(url, Database::Mode::read_only);
  for (const RunRecord& r : db.runs("w", std::nullopt)) {
    EXPECT_EQ(to_string(r.status), "done") << r.id << ": " << r.error;
    std::set<std::pair<int64_t, std::string>> seen;
    for (const MetricRecord& m : db.metrics(r.id))
      EXPECT_TRUE(seen.insert({m.step, m.split}).second) << "metric row twice: " << m.step;
  }
}

}  // namespace
}  // namespace moescale
