#include "db/db.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

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

  // An owner on another host: never provably dead, only its heartbeat counts.
  static RunOwner remote(const std::string& name) {
    RunOwner o;
    o.host = "elsewhere-" + name;
    o.pid = 1;
    return o;
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
  // What a schema-1 file looks like: no observations, no fits.
  raw_exec(path(),
           "DROP TABLE fits; DROP TABLE observations; DROP TABLE store; DROP INDEX runs_by_owner; "
           "ALTER TABLE runs DROP COLUMN claim; ALTER TABLE runs DROP COLUMN owner_host; "
           "ALTER TABLE runs DROP COLUMN owner_pid; ALTER TABLE runs DROP COLUMN owner_job; "
           "ALTER TABLE runs DROP COLUMN owner_threads; ALTER TABLE runs DROP COLUMN source; "
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
    auto r = db.claim_run("s", remote(i % 2 ? "a" : "b"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, RunStatus::running);
    EXPECT_TRUE(claimed.insert(r->id).second);
  }
  EXPECT_FALSE(db.claim_run("s", remote("a")));
  // A worker that stopped sending heartbeats loses its run.
  EXPECT_TRUE(db.claim_run("s", remote("c"), *claimed.begin(), -1.0));
  // Failed runs come back only when asked for.
  const int64_t id = *claimed.rbegin();
  db.finish_run(db.run(id).claim(), RunStatus::failed, std::nullopt, 0, 0, "boom");
  EXPECT_FALSE(db.claim_run("s", remote("a"), id));
  const auto retried = db.claim_run("s", remote("a"), id, 600, true);
  ASSERT_TRUE(retried);
  EXPECT_EQ(retried->status, RunStatus::running);
  EXPECT_EQ(retried->error, "");
}

TEST_F(DbTest, MetricsFinishAndRelease) {
  Database db(path(), Database::Mode::create_if_missing);
  db.save_plan(config(), plan_sweep(config()));
  const RunRecord r = *db.claim_run("s", remote("w"));
  db.record_metric(
      r.claim(), {r.id, 10, 1000, "train", 3.5, 1e-3, 0.01, 5e4, std::nullopt, 1.0, "[[0.5,0.5]]"});
  db.record_metric(r.claim(),
                   {r.id, 10, 1000, "train", 3.25, 1e-3, 0.01, 5e4, std::nullopt, 1.0, ""});
  db.record_metric(r.claim(), {r.id, 10, 1000, "val", 3.4, std::nullopt, std::nullopt, std::nullopt,
                               4.9, 1.0, ""});
  const auto m = db.metrics(r.id);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_DOUBLE_EQ(db.metrics(r.id, "train").front().loss, 3.25);  // replaced, not duplicated
  db.release_run(r.claim(), 10);
  EXPECT_EQ(db.run(r.id).status, RunStatus::planned);
  EXPECT_EQ(db.run(r.id).steps_done, 10);
  const RunRecord again = *db.claim_run("s", remote("w"), r.id);
  db.finish_run(again.claim(), RunStatus::done, 3.3, 12.5, 20, "");
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
  const int64_t id = db.import_observations("ext", "x.csv", rows).sweep_id;
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

namespace moescale {
namespace {

class DbRobustTest : public DbTest {};

TEST_F(DbRobustTest, EveryStoreHasItsOwnIdentity) {
  std::string first, second;
  {
    Database db(path("a.db"), Database::Mode::create_if_missing);
    first = db.store_identity();
  }
  EXPECT_EQ(first.size(), 32u);
  EXPECT_EQ(Database(path("a.db"), Database::Mode::must_exist).store_identity(), first);
  second = Database(path("b.db"), Database::Mode::create_if_missing).store_identity();
  EXPECT_NE(first, second);
}

TEST_F(DbRobustTest, WritesOfAnOwnerWhoseRunWasClaimedAgainAreRefused) {
  Database db(path(), Database::Mode::create_if_missing);
  db.save_plan(config(), plan_sweep(config()));
  const RunRecord mine = *db.claim_run("s", remote("a"));
  const MetricRecord m{mine.id, 10, 1000, "train", 3.5, 1e-3, 0.01, 5e4, std::nullopt, 1.0, ""};
  db.record_metric(mine.claim(), m);
  // Another worker decides the run is stale and takes it.
  const RunRecord theirs = *db.claim_run("s", remote("b"), mine.id, -1.0);
  EXPECT_EQ(theirs.claim_generation, mine.claim_generation + 1);
  MetricRecord late = m;
  late.step = 20;
  EXPECT_THROW(db.record_metric(mine.claim(), late), LostClaim);
  EXPECT_THROW(db.heartbeat(mine.claim()), LostClaim);
  EXPECT_THROW(db.finish_run(mine.claim(), RunStatus::done, 3.0, 1, 20, ""), LostClaim);
  EXPECT_THROW(db.release_run(mine.claim(), 20), LostClaim);
  EXPECT_EQ(db.metrics(mine.id).size(), 1u);  // nothing of the old owner's was written
  EXPECT_EQ(db.run(mine.id).status, RunStatus::running);
  EXPECT_EQ(db.run(mine.id).owner_host, "elsewhere-b");
  db.record_metric(theirs.claim(), late);
  db.finish_run(theirs.claim(), RunStatus::done, 3.0, 1, 20, "");
  // A finished run takes no more writes, even from its last owner.
  EXPECT_THROW(db.record_metric(theirs.claim(), m), LostClaim);
  EXPECT_EQ(db.run(mine.id).status, RunStatus::done);
}

TEST_F(DbRobustTest, RunsOfADeadOwnerOnThisHostAreTakenBackAtOnce) {
  Database db(path(), Database::Mode::create_if_missing);
  db.save_plan(config(), plan_sweep(config()));
  // A child that exits at once: its pid is certainly gone after waitpid.
  const pid_t child = fork();
  if (child == 0) _exit(0);
  int status = 0;
  waitpid(child, &status, 0);
  RunOwner dead = RunOwner::this_process();
  dead.pid = child;
  const RunRecord held = *db.claim_run("s", dead);
  EXPECT_TRUE(owner_provably_dead(dead.host, child));
  EXPECT_TRUE(db.run(held.id).stale(1e9));
  // The heartbeat is fresh, yet the run comes back, with the reason.
  const auto taken = db.claim_run("s", RunOwner::this_process(), held.id, 1e9);
  ASSERT_TRUE(taken);
  EXPECT_EQ(taken->owner_pid, getpid());
  // A live owner on this host keeps its run until its heartbeat goes stale.
  EXPECT_FALSE(owner_provably_dead(dead.host, getpid()));
  EXPECT_FALSE(db.claim_run("s", remote("x"), held.id, 1e9));
  EXPECT_FALSE(db.run(held.id).stale(1e9));
  EXPECT_TRUE(db.run(held.id).stale(-1));
  const auto workers = db.active_workers(dead.host, 0);
  EXPECT_EQ(workers.processes, 1);
  EXPECT_EQ(db.active_workers(dead.host, getpid()).processes, 0);
}

TEST_F(DbRobustTest, OwnerRecordsSlurmJobAndTask) {
  setenv("SLURM_JOB_ID", "4242", 1);
  setenv("SLURM_ARRAY_TASK_ID", "3", 1);
  unsetenv("SLURM_ARRAY_JOB_ID");
  const RunOwner o = RunOwner::this_process(2);
  unsetenv("SLURM_JOB_ID");
  unsetenv("SLURM_ARRAY_TASK_ID");
  EXPECT_EQ(o.job, "4242_3");
  EXPECT_NE(o.label().find("slurm 4242_3"), std::string::npos);
  Database db(path(), Database::Mode::create_if_missing);
  db.save_plan(config(), plan_sweep(config()));
  const RunRecord r = *db.claim_run("s", o);
  EXPECT_EQ(r.owner_job, "4242_3");
  EXPECT_EQ(r.owner_threads, 2);
  EXPECT_EQ(r.source, "trained");
  EXPECT_TRUE(r.heartbeat_age.has_value());
}

TEST_F(DbRobustTest, ImportingTheSameRowsTwiceIsRefusedUnlessAppending) {
  Database db(path(), Database::Mode::create_if_missing);
  std::vector<ObservationRecord> rows{{1e6, 1e6, 2e7, 1, 1, 1, 3.0, "", "row 2"},
                                      {4e6, 4e6, 8e7, 1, 1, 1, 2.7, "", "row 3"}};
  EXPECT_EQ(db.import_observations("ext", "x.csv", rows).added, 2);
  try {
    db.import_observations("ext", "copy.csv", rows);
    ADD_FAILURE() << "a second import was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("--append"), std::string::npos) << e.what();
  }
  EXPECT_EQ(db.observations("ext").size(), 2u);
  const auto appended = db.import_observations("ext", "x.csv", rows, true);
  EXPECT_EQ(appended.already_there, 2);
  EXPECT_EQ(db.observations("ext").size(), 4u);
}

TEST_F(DbRobustTest, RemovesSweepsWithEverythingInThemAndFits) {
  Database db(path(), Database::Mode::create_if_missing);
  const size_t n = db.save_plan(config(), plan_sweep(config())).added;
  const RunRecord r = *db.claim_run("s", remote("a"));
  db.record_metric(r.claim(), {r.id, 1, 10, "train", 3, 1e-3, 0, 1, std::nullopt, 1, ""});
  const int64_t fit = db.save_fit("s", "chinchilla", "all", "{}");
  db.save_fit("s", "chinchilla", "all", "{}");
  db.remove_fit(fit);
  EXPECT_THROW(db.fit(fit), std::runtime_error);
  EXPECT_THROW(db.remove_fit(fit), std::runtime_error);
  const auto removed = db.remove_sweep("s");
  EXPECT_EQ(removed.runs, static_cast<int>(n));
  EXPECT_EQ(removed.fits, 1);
  EXPECT_FALSE(db.find_sweep("s"));
  EXPECT_TRUE(db.metrics(r.id).empty());
  EXPECT_THROW(db.remove_sweep("s"), std::runtime_error);
}

TEST_F(DbRobustTest, ADatabaseInAReadOnlyFolderCanBeRead) {
  if (geteuid() == 0) GTEST_SKIP() << "root writes to read-only folders";
  const fs::path folder = dir_ / "ro";
  fs::create_directories(folder);
  const std::string file = (folder / "m.db").string();
  {
    Database db(file, Database::Mode::create_if_missing);
    db.save_plan(config(), plan_sweep(config()));
  }
  fs::permissions(folder, fs::perms::owner_read | fs::perms::owner_exec);
  size_t runs = 0;
  try {
    Database db(file, Database::Mode::read_only);
    runs = db.runs("s", std::nullopt).size();
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
  fs::permissions(folder, fs::perms::owner_all);
  EXPECT_GT(runs, 0u);
}

TEST_F(DbRobustTest, MigratesASchemaTwoFileAndGivesItAnIdentity) {
  {
    Database db(path(), Database::Mode::create_if_missing);
    db.save_plan(config(), plan_sweep(config()));
  }
  raw_exec(path(),
           "DROP TABLE store; DROP INDEX runs_by_owner; DROP INDEX observations_by_hash; "
           "ALTER TABLE runs DROP COLUMN claim; ALTER TABLE runs DROP COLUMN owner_host; "
           "ALTER TABLE runs DROP COLUMN owner_pid; ALTER TABLE runs DROP COLUMN owner_job; "
           "ALTER TABLE runs DROP COLUMN owner_threads; ALTER TABLE runs DROP COLUMN source; "
           "ALTER TABLE observations DROP COLUMN row_hash; PRAGMA user_version = 2;");
  Database db(path(), Database::Mode::read_only);
  EXPECT_EQ(db.schema_version(), 3);
  EXPECT_EQ(db.store_identity().size(), 32u);
  EXPECT_EQ(db.runs("s", RunStatus::planned).front().source, "trained");
}

}  // namespace
}  // namespace moescale
