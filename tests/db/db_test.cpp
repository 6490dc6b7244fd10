#include "db/db.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "tests/db/postgres_server.h"

namespace moescale {
namespace {
namespace fs = std::filesystem;
using testing::PostgresServer;

enum class Backend { sqlite, postgresql };
void PrintTo(Backend b, std::ostream* os) {
  *os << (b == Backend::sqlite ? "SQLite" : "PostgreSQL");
}

// What every store test needs: a temp dir, sweep configs, owners, and fresh store
// locations of one backend.
class StoreFixture {
 protected:
  void make_dir() {
    dir_ = fs::temp_directory_path() /
           ("moescale_db_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            test_name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  static std::string test_name() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    return std::string(info->test_suite_name()) + "_" + info->name();
  }
  std::string path(const std::string& name = "m.db") const { return (dir_ / name).string(); }

  // A new, empty store location: a path in the temp dir, or a new database.
  std::string location(Backend b, const std::string& name = "m.db") const {
    if (b == Backend::sqlite) return path(name);
    std::string db = "t_" + test_name() + "_" + name;
    for (char& c : db) c = std::isalnum(static_cast<unsigned char>(c)) ? std::tolower(c) : '_';
    // Database names stop at 63 bytes: keep the distinct end.
    if (db.size() > 63) db = db.substr(db.size() - 63);
    return PostgresServer::get()->create_database(db);
  }

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

// SQLite-only cases: files, headers, migrations of old files, folder permissions.
class DbTest : public StoreFixture, public ::testing::Test {
 protected:
  void SetUp() override { make_dir(); }
  void TearDown() override { fs::remove_all(dir_); }
};

// The cases every backend must pass, run once per backend. The PostgreSQL ones
// use the test process's own server (postgres_server.h), skipped when absent.
class StoreTest : public StoreFixture, public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam() == Backend::postgresql && !PostgresServer::get())
      GTEST_SKIP() << PostgresServer::why_not();
    make_dir();
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string location(const std::string& name = "m.db") const {
    return StoreFixture::location(GetParam(), name);
  }
};

std::string backend_name(const ::testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::sqlite ? "sqlite" : "postgresql";
}
INSTANTIATE_TEST_SUITE_P(SQLite, StoreTest, ::testing::Values(Backend::sqlite), backend_name);
INSTANTIATE_TEST_SUITE_P(PostgreSQL, StoreTest, ::testing::Values(Backend::postgresql),
                         backend_name);

TEST_P(StoreTest, PlanningTwiceDoesNotDuplicateRuns) {
  Database db(location(), Database::Mode::create_if_missing);
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

TEST_P(StoreTest, ClaimsEachRunOnceAndReclaimsStaleOnes) {
  Database db(location(), Database::Mode::create_if_missing);
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

TEST_P(StoreTest, MetricsFinishAndRelease) {
  Database db(location(), Database::Mode::create_if_missing);
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
  EXPECT_DOUBLE_EQ(obs[0].budget, done.plan.budget);  // a planned run states its budget
}

TEST_P(StoreTest, ImportsAllOrNothingAndKeepsKindsApart) {
  Database db(location(), Database::Mode::create_if_missing);
  db.save_plan(config(), plan_sweep(config()));
  std::vector<ObservationRecord> rows{{1e6, 1e6, 2e7, 1, 1, 1, 3.0, "", "row 2"},
                                      {4e6, 4e6, 8e7, 1, 1, 1, 2.7, "", "row 3"}};
  rows[1].budget = 2e15;  // import --map budget=COLUMN
  EXPECT_THROW(db.import_observations("s", "x.csv", rows), std::runtime_error);
  const int64_t id = db.import_observations("ext", "x.csv", rows).sweep_id;
  EXPECT_EQ(id, db.sweep("ext").id);
  const auto back = db.observations("ext");
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].budget, 0);
  EXPECT_EQ(back[1].budget, 2e15);
  EXPECT_THROW(db.save_plan(config("ext"), plan_sweep(config("ext"))), std::runtime_error);
  EXPECT_EQ(db.runs("ext", std::nullopt).size(), 0u);
  EXPECT_THROW(db.sweep("nope"), std::runtime_error);
}

TEST_P(StoreTest, FitsAreStoredAndFound) {
  Database db(location(), Database::Mode::create_if_missing);
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

TEST_P(StoreTest, EveryStoreHasItsOwnIdentity) {
  const std::string a = location("a.db"), b = location("b.db");
  std::string first, second;
  {
    Database db(a, Database::Mode::create_if_missing);
    first = db.store_identity();
  }
  EXPECT_EQ(first.size(), 32u);
  EXPECT_EQ(first.find_first_not_of("0123456789abcdef"), std::string::npos) << first;
  EXPECT_EQ(Database(a, Database::Mode::must_exist).store_identity(), first);
  second = Database(b, Database::Mode::create_if_missing).store_identity();
  EXPECT_NE(first, second);
}

TEST_P(StoreTest, WritesOfAnOwnerWhoseRunWasClaimedAgainAreRefused) {
  Database db(location(), Database::Mode::create_if_missing);
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

TEST_P(StoreTest, RunsOfADeadOwnerOnThisHostAreTakenBackAtOnce) {
  Database db(location(), Database::Mode::create_if_missing);
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

TEST_P(StoreTest, OwnerRecordsSlurmJobAndTask) {
  setenv("SLURM_JOB_ID", "4242", 1);
  setenv("SLURM_ARRAY_TASK_ID", "3", 1);
  unsetenv("SLURM_ARRAY_JOB_ID");
  const RunOwner o = RunOwner::this_process(2);
  unsetenv("SLURM_JOB_ID");
  unsetenv("SLURM_ARRAY_TASK_ID");
  EXPECT_EQ(o.job, "4242_3");
  EXPECT_NE(o.label().find("slurm 4242_3"), std::string::npos);
  Database db(location(), Database::Mode::create_if_missing);
  db.save_plan(config(), plan_sweep(config()));
  const RunRecord r = *db.claim_run("s", o);
  EXPECT_EQ(r.owner_job, "4242_3");
  EXPECT_EQ(r.owner_threads, 2);
  EXPECT_EQ(r.source, "trained");
  EXPECT_TRUE(r.heartbeat_age.has_value());
}

TEST_P(StoreTest, ImportingTheSameRowsTwiceIsRefusedUnlessAppending) {
  Database db(location(), Database::Mode::create_if_missing);
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

TEST_P(StoreTest, RemovesSweepsWithEverythingInThemAndFits) {
  Database db(location(), Database::Mode::create_if_missing);
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
           "ALTER TABLE observations DROP COLUMN row_hash; "
           "ALTER TABLE observations DROP COLUMN budget; PRAGMA user_version = 2;");
  Database db(path(), Database::Mode::read_only);
  EXPECT_EQ(db.schema_version(), Database::kSchemaVersion);
  EXPECT_EQ(db.store_identity().size(), 32u);
  EXPECT_EQ(db.runs("s", RunStatus::planned).front().source, "trained");
}

TEST_P(StoreTest, MustExistRefusesAnEmptyStoreAndCreatesNothing) {
  const std::string where = location();
  try {
    Database db(where, Database::Mode::must_exist);
    ADD_FAILURE() << "an empty store was opened";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("plan a sweep first"), std::string::npos) << e.what();
  }
  // Nothing was created by looking: it is still refused.
  EXPECT_THROW(Database(where, Database::Mode::read_only), std::runtime_error);
  if (GetParam() == Backend::sqlite) {
    EXPECT_FALSE(fs::exists(where));
  }
}

TEST_P(StoreTest, ReadOnlyOpenReadsAndRefusesWrites) {
  const std::string where = location();
  Database(where, Database::Mode::create_if_missing).save_plan(config(), plan_sweep(config()));
  Database db(where, Database::Mode::read_only);
  EXPECT_FALSE(db.runs("s", std::nullopt).empty());
  EXPECT_THROW(db.save_fit("s", "chinchilla", "all", "{}"), std::runtime_error);
  EXPECT_TRUE(Database(where, Database::Mode::must_exist).fits("s").empty());
}

// Many workers, one store: every run is claimed exactly once, each at its first
// generation, however the claims interleave.
TEST_P(StoreTest, ConcurrentClaimersNeverShareARun) {
  const std::string where = location();
  SweepConfig c = config();
  c.budgets = {1e11, 1e12, 1e13};
  c.points_per_budget = 4;
  c.experts = {1, 2, 4, 8};
  const size_t planned =
      Database(where, Database::Mode::create_if_missing).save_plan(c, plan_sweep(c)).added;
  ASSERT_GE(planned, 30u);
  constexpr int kWorkers = 6;
  std::vector<std::vector<RunRecord>> claimed(kWorkers);
  std::vector<std::string> errors(kWorkers);
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w)
    workers.emplace_back([&, w] {
      try {
        Database db(where, Database::Mode::must_exist);
        const RunOwner me = remote("w" + std::to_string(w));
        while (auto r = db.claim_run("s", me)) {
          claimed[w].push_back(*r);
          db.heartbeat(r->claim());  // its claim holds: nobody else took the run
        }
      } catch (const std::exception& e) {
        errors[w] = e.what();
      }
    });
  for (auto& t : workers) t.join();
  std::set<int64_t> ids;
  size_t total = 0;
  for (int w = 0; w < kWorkers; ++w) {
    EXPECT_EQ(errors[w], "") << "worker " << w;
    for (const RunRecord& r : claimed[w]) {
      EXPECT_TRUE(ids.insert(r.id).second) << "run " << r.id << " claimed twice";
      EXPECT_EQ(r.claim_generation, 1) << "run " << r.id;
      EXPECT_EQ(r.owner_host, "elsewhere-w" + std::to_string(w));
      ++total;
    }
  }
  EXPECT_EQ(total, planned);
  EXPECT_EQ(ids.size(), planned);
  EXPECT_TRUE(Database(where, Database::Mode::must_exist).runs("s", RunStatus::planned).empty());
}

// Something of everything a store holds: planned, running, done, failed and
// simulated runs, metrics with and without optional values, imports, fits with a
// bootstrap set, and a gap in the ids where a fit was removed.
void fill(Database& db) {
  SweepConfig c;
  c.name = "s";
  c.text = "[sweep]\nname = \"s\" # ünïcode\n";
  c.budgets = {1e11, 1e12};
  c.points_per_budget = 3;
  c.experts = {1, 4};
  c.routers = {Router::topk};
  c.base.top_k = 2;
  db.save_plan(c, plan_sweep(c));
  RunOwner o;
  o.host = "node-7";
  o.pid = 4242;
  o.job = "99_1";
  o.threads = 3;
  const RunRecord a = *db.claim_run("s", o);
  db.record_metric(a.claim(), {a.id, 10, 1000, "train", 3.141592653589793, 1e-3, 0.1 + 0.2, 5e4,
                               std::nullopt, 1.0 / 3, "[[0.25,0.75]]"});
  db.record_metric(a.claim(), {a.id, 10, 1000, "val", 3.3, std::nullopt, std::nullopt, std::nullopt,
                               4.9, 2.5e-310, ""});
  db.finish_run(a.claim(), RunStatus::done, 2.718281828459045, 12.5, 20, "");
  const RunRecord b = *db.claim_run("s", o);
  db.record_metric(b.claim(), {b.id, 5, 500, "train", 4.0, 1e-4, 0, 1e5, std::nullopt, 0.5, ""});
  db.finish_run(b.claim(), RunStatus::failed, std::nullopt, 1, 5, "out of memory: 'quoted'");
  db.claim_run("s", o);  // left running
  SweepConfig sim = c;
  sim.name = "sim";
  db.save_plan(sim, plan_sweep(sim));
  const auto sim_runs = db.runs("sim", RunStatus::planned);
  db.record_simulated("sim", {{sim_runs[0].id, 2.5}, {sim_runs[1].id, 2.25}});
  db.import_observations(
      "ext", "x.csv",
      {{1e6, 1e6, 2e7, 1, 1, 1, 3.0, "", "row 2"}, {4e6, 8e6, 8e7, 8, 2, 0.5, 2.7, "", "row 3"}});
  const int64_t gone = db.save_fit("s", "chinchilla", "all", "{}");
  db.save_fit("s", "chinchilla", "router=topk,E=4",
              R"({"params":{"E":1.69,"A":406.4},"bootstrap":[[1.7,400.1],[1.68,410.2]]})");
  db.remove_fit(gone);
  db.save_fit("ext", "kaplan", "all", R"({"params":{"L":2.0}})");
}

// Every table of both stores, row for row.
void expect_same_rows(const Database& a, const Database& b) {
  EXPECT_EQ(a.store_identity(), b.store_identity());
  for (const std::string& table : Database::table_names()) {
    const auto ra = a.table_rows(table), rb = b.table_rows(table);
    EXPECT_EQ(ra, rb) << table << " differs between " << a.display_name() << " and "
                      << b.display_name();
  }
}

TEST_P(StoreTest, CopyRefusesANonEmptyDestination) {
  const std::string from = location("from"), to = location("to");
  Database source(from, Database::Mode::create_if_missing);
  fill(source);
  Database destination(to, Database::Mode::create_if_missing);
  destination.save_plan(config("other"), plan_sweep(config("other")));
  const auto before = destination.table_rows("runs");
  try {
    source.copy_into(destination);
    ADD_FAILURE() << "copied into a store that holds a sweep";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("empty store"), std::string::npos) << e.what();
  }
  EXPECT_EQ(destination.table_rows("runs"), before);
  EXPECT_THROW(source.copy_into(source), std::runtime_error);
}

// PostgreSQL-only cases: what a server database may hold that a file cannot.
class PostgreSQLStoreTest : public StoreFixture, public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PostgresServer::get()) GTEST_SKIP() << PostgresServer::why_not();
    make_dir();
  }
  void TearDown() override { fs::remove_all(dir_); }
  static std::string database_of(const std::string& url) {
    return url.substr(url.find("@/") + 2, url.find('?') - url.find("@/") - 2);
  }
};

TEST_F(PostgreSQLStoreTest, RefusesADatabaseOfAnotherProgramOrANewerSchema) {
  PostgresServer& server = *PostgresServer::get();
  const std::string foreign = location(Backend::postgresql, "foreign");
  server.exec(database_of(foreign),
              "CREATE TABLE people(name TEXT); INSERT INTO people VALUES('ada')");
  try {
    Database db(foreign, Database::Mode::create_if_missing);
    ADD_FAILURE() << "a foreign database was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("another program"), std::string::npos) << e.what();
  }
  EXPECT_THROW(server.exec(database_of(foreign), "SELECT * FROM store"), std::runtime_error);

  const std::string newer = location(Backend::postgresql, "newer");
  { Database(newer, Database::Mode::create_if_missing); }
  server.exec(database_of(newer), "UPDATE moescale_schema SET version = 99");
  try {
    Database db(newer, Database::Mode::must_exist);
    ADD_FAILURE() << "a newer schema was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("newer moescale"), std::string::npos) << e.what();
  }
}

TEST_F(PostgreSQLStoreTest, ABadUrlSaysWhatToFixAndHidesThePassword) {
  const std::string url =
      "postgresql://someone:s3cret@/nowhere?host=" + path("no-socket-here") + "&port=1";
  try {
    Database db(url, Database::Mode::must_exist);
    ADD_FAILURE() << "connected to nothing";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cannot connect"), std::string::npos) << m;
    EXPECT_NE(m.find("postgresql://USER"), std::string::npos) << m;
    EXPECT_EQ(m.find("s3cret"), std::string::npos) << m;
  }
  EXPECT_TRUE(is_server_location("postgres://h/db"));
  EXPECT_FALSE(is_server_location("postgresql.db"));
}

TEST_F(PostgreSQLStoreTest, ANewStoreIsCreatedOnceUnderConcurrentOpens) {
  const std::string where = location(Backend::postgresql);
  std::vector<std::string> identities(4), errors(4);
  std::vector<std::thread> openers;
  for (int i = 0; i < 4; ++i)
    openers.emplace_back([&, i] {
      try {
        identities[i] = Database(where, Database::Mode::create_if_missing).store_identity();
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : openers) t.join();
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(errors[i], "");
    EXPECT_EQ(identities[i], identities[0]);
  }
}

// db copy, SQLite -> PostgreSQL -> SQLite: every table equal at each hop, and the
// copies go on working (new ids after the copied ones).
TEST_F(PostgreSQLStoreTest, CopyRoundTripsSqlitePostgresSqliteRowForRow) {
  Database original(path("original.db"), Database::Mode::create_if_missing);
  fill(original);
  const std::string url = location(Backend::postgresql, "copy");
  Database server(url, Database::Mode::create_if_missing);
  const auto copied = original.copy_into(server);
  expect_same_rows(original, server);
  ASSERT_EQ(copied.size(), Database::table_names().size());
  for (const auto& [table, rows] : copied)
    EXPECT_EQ(rows, static_cast<int64_t>(original.table_rows(table).size())) << table;

  Database back(path("back.db"), Database::Mode::create_if_missing);
  server.copy_into(back);
  expect_same_rows(original, back);
  EXPECT_EQ(bytes(path("back.db")).substr(0, 15), "SQLite format 3");

  // The typed views agree too, and new rows take new ids on both sides.
  EXPECT_EQ(server.fits("s").back().result, original.fits("s").back().result);
  EXPECT_EQ(server.observations("ext").size(), 2u);
  const int64_t max_fit = original.fits(std::nullopt).back().id;
  EXPECT_GT(server.save_fit("s", "chinchilla", "all", "{}"), max_fit);
  EXPECT_GT(back.save_fit("s", "chinchilla", "all", "{}"), max_fit);
  const RunRecord running = server.runs("s", RunStatus::running).front();
  EXPECT_THROW(server.heartbeat({running.id, running.claim_generation + 1}), LostClaim);
  server.heartbeat(running.claim());
}

}  // namespace
}  // namespace moescale
