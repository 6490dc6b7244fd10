// The command line on a PostgreSQL store: --db and MOESCALE_DB choose it, and
// `moescale db copy` moves a real store (planned, simulated, fitted with a
// bootstrap, imported) SQLite -> PostgreSQL -> SQLite with every table unchanged.
#include <gtest/gtest.h>

#include <filesystem>

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

void expect_same_rows(const std::string& a, const std::string& b) {
  const Database da(a, Database::Mode::read_only), db(b, Database::Mode::read_only);
  EXPECT_EQ(da.store_identity(), db.store_identity());
  for (const std::string& table : Database::table_names())
    EXPECT_EQ(da.table_rows(table), db.table_rows(table)) << table << ": " << a << " vs " << b;
}

TEST_F(PostgreSQLCliTest, DbCopyMovesAStoreToPostgresAndBackUnchanged) {
  const std::string source = MOESCALE_SOURCE_DIR;
  const std::string a = path("a.db");
  ASSERT_EQ(run("plan --config " + source + "/configs/tiny-cpu.toml --db a.db").status, 0);
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

}  // namespace
}  // namespace moescale
