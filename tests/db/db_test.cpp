#include "db/db.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace moescale {
namespace {
namespace fs = std::filesystem;

class DbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("moescale_db_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name = "m.db") const { return (dir_ / name).string(); }

  static SweepConfig config(const std::string& name = "s") {
    SweepConfig c;
    c.name = name;
    c.text = "[sweep]\nname = \"" + name + "\"\n";
    c.budgets = {1e11, 1e12};
    c.points_per_budget = 3;
    c.experts = {1, 4};
    c.routers = {Router::topk};
    c.base.top_k = 2;
    return c;
  }

  static std::string bytes(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

  static void raw_exec(const std::string& p, const char* sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(p.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    sqlite3_close(db);
  }

  fs::path dir_;
};

TEST_F(DbTest, PlanningTwiceDoesNotDuplicateRuns) {
  Database db(path(), Database::Mode::create_if_missing);
  EXPECT_EQ(db.schema_version(), Database::kSchemaVersion);
  const auto runs = plan_sweep(config());
  const auto first = db.save_plan(config(), runs);
  EXPECT_EQ(first.added, static_cast<int>(runs.size()));
  const auto second = db.save_plan(config(), runs);
  EXPECT_EQ(second.added, 0);
  EXPECT_EQ(second.existing, static_cast<int>(runs.size()));
  EXPECT_EQ(db.runs("s", std::nullopt).size(), runs.size());
  const RunRecord r = db.runs("s", RunStatus::planned).front();
  EXPECT_EQ(r.plan.spec.key(), r.key);
  EXPECT_EQ(r.plan.params.active, count_params(r.plan.spec.shape).active);
}

TEST_F(DbTest, MustExistRefusesAMissingFileAndCreatesNothing) {
  EXPECT_THROW(Database(path(), Database::Mode::must_exist), std::runtime_error);
  EXPECT_FALSE(fs::exists(path()));
}

TEST_F(DbTest, RefusesFilesThatAreNotOursAndLeavesThemUntouched) {
  const std::string text = path("notes.db");
  std::ofstream(text) << "just some text, not a database\n";
  const std::string foreign = path("other.db");
  raw_exec(foreign, "CREATE TABLE people(name TEXT); INSERT INTO people VALUES('ada');");
  const std::string newer = path("newer.db");
  { Database(newer, Database::Mode::create_if_missing); }
  raw_exec(newer, "PRAGMA user_version = 99;");
  for (const std::string& p : {text, foreign, newer}) {
    const std::string before = bytes(p);
    try {
      Database db(p, Database::Mode::create_if_missing);
      ADD_FAILURE() << p << " was accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
    EXPECT_EQ(bytes(p), before) << p;
  }
}

TEST_F(DbTest, MigratesAnOlderSchemaForward) {
  {
    Database db(path(), Database::Mode::create_if_missing);
    db.save_plan(config(), plan_sweep(config()));
  }
  // What a schema-1 file looks like: no observations, no fits, no runs.source.
  raw_exec(path(),
           "DROP TABLE fits; DROP TABLE observations; ALTER TABLE runs DROP COLUMN source; "
           "PRAGMA user_version = 1;");
  Database db(path(), Database::Mode::must_exist);
  EXPECT_EQ(db.schema_version(), Database::kSchemaVersion);
  EXPECT_FALSE(db.runs("s", std::nullopt).empty());
  EXPECT_GT(db.save_fit("s", "chinchilla", "all", "{}"), 0);
}

TEST_F(DbTest, ClaimsEachRunOnceAndReclaimsStaleOnes) {
  Database db(path(), Database::Mode::create_if_missing);
  const size_t n = db.save_plan(config(), plan_sweep(config())).added;
  std::set<int64_t> claimed;
  for (size_t i = 0; i < n; ++i) {
    auto r = db.claim_run("s", i % 2 ? "a" : "b");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, RunStatus::running);
    EXPECT_TRUE(claimed.insert(r->id).second);
  }
  EXPECT_FALSE(db.claim_run("s", "a"));
  // A worker that stopped sending heartbeats loses its run.
  EXPECT_TRUE(db.claim_run("s", "c", *claimed.begin(), -1.0));
  // Failed runs come back only when asked for.
  const int64_t id = *claimed.rbegin();
  db.finish_run(id, RunStatus::failed, std::nullopt, 0, 0, "boom");
  EXPECT_FALSE(db.claim_run("s", "a", id));
  const auto retried = db.claim_run("s", "a", id, 600, true);
  ASSERT_TRUE(retried);
  EXPECT_EQ(retried->status, RunStatus::running);
  EXPECT_EQ(retried->error, "");
}

TEST_F(DbTest, MetricsFinishAndRelease) {
  Database db(path(), Database::Mode::create_if_missing);
  db.save_plan(config(), plan_sweep(config()));
  const RunRecord r = *db.claim_run("s", "w");
  db.record_metric(
      {r.id, 10, 1000, "train", 3.5, 1e-3, 0.01, 5e4, std::nullopt, 1.0, "[[0.5,0.5]]"});
  db.record_metric({r.id, 10, 1000, "train", 3.25, 1e-3, 0.01, 5e4, std::nullopt, 1.0, ""});
  db.record_metric(
      {r.id, 10, 1000, "val", 3.4, std::nullopt, std::nullopt, std::nullopt, 4.9, 1.0, ""});
  const auto m = db.metrics(r.id);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_DOUBLE_EQ(db.metrics(r.id, "train").front().loss, 3.25);  // replaced, not duplicated
  db.release_run(r.id, 10);
  EXPECT_EQ(db.run(r.id).status, RunStatus::planned);
  EXPECT_EQ(db.run(r.id).steps_done, 10);
  db.claim_run("s", "w", r.id);
  db.finish_run(r.id, RunStatus::done, 3.3, 12.5, 20, "");
  const RunRecord done = db.run(r.id);
  EXPECT_EQ(done.status, RunStatus::done);
  EXPECT_DOUBLE_EQ(*done.final_loss, 3.3);
  const auto obs = db.observations("s");
  ASSERT_EQ(obs.size(), 1u);
  EXPECT_DOUBLE_EQ(obs[0].loss, 3.3);
  EXPECT_DOUBLE_EQ(obs[0].n_active, static_cast<double>(done.plan.params.active));
}

TEST_F(DbTest, ImportsAllOrNothingAndKeepsKindsApart) {
  Database db(path(), Database::Mode::create_if_missing);
  db.save_plan(config(), plan_sweep(config()));
  std::vector<ObservationRecord> rows{{1e6, 1e6, 2e7, 1, 1, 1, 3.0, "", "row 2"},
                                      {4e6, 4e6, 8e7, 1, 1, 1, 2.7, "", "row 3"}};
  EXPECT_THROW(db.import_observations("s", "x.csv", rows), std::runtime_error);
  const int64_t id = db.import_observations("ext", "x.csv", rows);
  EXPECT_EQ(id, db.sweep("ext").id);
  EXPECT_EQ(db.observations("ext").size(), 2u);
  EXPECT_THROW(db.save_plan(config("ext"), plan_sweep(config("ext"))), std::runtime_error);
  EXPECT_EQ(db.runs("ext", std::nullopt).size(), 0u);
  EXPECT_THROW(db.sweep("nope"), std::runtime_error);
}

TEST_F(DbTest, FitsAreStoredAndFound) {
  Database db(path(), Database::Mode::create_if_missing);
  db.save_plan(config(), plan_sweep(config()));
  const int64_t id = db.save_fit("s", "chinchilla", "router=topk,E=4", "{\"a\":1}");
  EXPECT_EQ(db.fit(id).result, "{\"a\":1}");
  EXPECT_EQ(db.fits("s").size(), 1u);
  EXPECT_THROW(db.fit(id + 1), std::runtime_error);
  EXPECT_EQ(parse_run_status("diverged"), RunStatus::diverged);
  EXPECT_THROW(parse_run_status("lost"), std::invalid_argument);
}

}  // namespace
}  // namespace moescale
