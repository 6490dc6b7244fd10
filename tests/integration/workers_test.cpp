// Training under crashes and concurrency (issue 10 §1, issue 12 §1): checkpoints of
// another store or data set are not resumed, a dead worker's run is taken back at
// once, a live one is never stolen, --workers splits the cores. Small but real runs.
#include <signal.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "tests/integration/cli_test.h"

namespace moescale::testing {
namespace {
using nlohmann::json;
using namespace std::chrono_literals;

class TrainTest : public CliTest {
 protected:
  // Starts `moescale ARGS` in the background; its stderr goes to LOG.
  pid_t start(const std::string& args, const std::string& log) const {
    const std::string cmd = "cd '" + dir_.string() + "' && MOESCALE_DB= " MOESCALE_BINARY " " +
                            args + " >/dev/null 2>'" + log + "' & echo $!";
    FILE* p = popen(cmd.c_str(), "r");
    pid_t pid = 0;
    if (fscanf(p, "%d", &pid) != 1) pid = 0;
    pclose(p);
    return pid;
  }

  static bool gone(pid_t pid) { return kill(pid, 0) != 0; }

  static void wait_gone(pid_t pid) {
    for (int i = 0; i < 600 && !gone(pid); ++i) std::this_thread::sleep_for(100ms);
  }

  // Waits until run `id` is running under `pid`; returns false after 60 s.
  bool wait_running(int id, pid_t pid) const {
    for (int i = 0; i < 600; ++i) {
      const json runs = json::parse(run("runs --json").out);
      for (const json& r : runs)
        if (r["id"] == id && r["status"] == "running" && r["owner"]["pid"] == pid) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

  json runs() const { return json::parse(run("runs --json").out); }
};

TEST_F(TrainTest, ACheckpointOfAnotherStoreOrDataSetIsNeverResumed) {
  prepare_markov();
  write("s.toml", tiny_sweep("[1e5]"));
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const Result first = run("train --sweep w --max-runs 1 -q");
  ASSERT_EQ(first.status, 0) << first.err;
  auto done_run = [&] {
    for (const json& r : runs())
      if (r["status"] == "done") return r;
    return json();
  };
  const json done = done_run();
  ASSERT_FALSE(done.is_null());

  // A new store, new data in the same folder, the same plan: same keys, same folders.
  std::filesystem::remove(dir_ / "moescale.db");
  std::filesystem::remove_all(dir_ / "markov");
  prepare_markov("order=1,vocab=16,branching=1,tokens=100000");
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const Result second = run("train --sweep w --max-runs 1 -q");
  ASSERT_EQ(second.status, 0) << second.err;
  EXPECT_NE(second.err.find("ignored"), std::string::npos) << second.err;
  const json again = done_run();
  ASSERT_FALSE(again.is_null());
  ASSERT_EQ(again["key"], done["key"]);
  // Deterministic data (one successor per token) is learnt far better than the old loss.
  EXPECT_LT(again["final_loss"].get<double>(), done["final_loss"].get<double>() - 0.2);
}

TEST_F(TrainTest, ADeadWorkersRunIsTakenBackAtOnceAndShownStale) {
  prepare_markov();
  write("s.toml", tiny_sweep("[3e7]", "", "[1]"));
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const pid_t first = start("train --sweep w --threads 1", "first.log");
  ASSERT_TRUE(wait_running(1, first));
  kill(first, SIGKILL);
  wait_gone(first);
  const Result listed = run("runs");
  EXPECT_NE(listed.out.find("STALE"), std::string::npos) << listed.out;
  EXPECT_NE(listed.err.find("STALE"), std::string::npos) << listed.err;
  EXPECT_TRUE(runs()[0]["stale"].get<bool>());
  // No 10-minute wait: the next train takes it at once, then hands it back on SIGTERM.
  const pid_t second = start("train --sweep w --threads 1", "second.log");
  EXPECT_TRUE(wait_running(1, second));
  kill(second, SIGTERM);
  wait_gone(second);
  EXPECT_EQ(runs()[0]["status"], "planned");
  const std::string log = read(dir_ / "second.log");
  EXPECT_NE(log.find("interrupted"), std::string::npos) << log;
  EXPECT_NE(log.find("stopped before them"), std::string::npos) << log;
}

TEST_F(TrainTest, ALiveRunIsNotStolenEvenWithSparseLogging) {
  prepare_markov();
  write("s.toml",
        tiny_sweep("[3e7, 1e5]", "log_interval = 100000000\neval_interval = 100000000\n", "[1]"));
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const json planned = runs();
  const int long_run = planned[0]["tokens"] > planned[1]["tokens"] ? planned[0]["id"].get<int>()
                                                                   : planned[1]["id"].get<int>();
  const pid_t owner =
      start("train --sweep w --threads 1 --run " + std::to_string(long_run) + " --stale-after 5",
            "owner.log");
  ASSERT_TRUE(wait_running(long_run, owner));
  std::this_thread::sleep_for(7s);  // past the heartbeat limit, and no metric written
  ASSERT_FALSE(gone(owner)) << read(dir_ / "owner.log");
  const Result steal = run("train --sweep w --stale-after 5 --run " + std::to_string(long_run));
  EXPECT_EQ(steal.status, 1);
  EXPECT_NE(steal.err.find("is running under"), std::string::npos) << steal.err;
  // A second worker on this host takes its share of the cores and leaves the live run alone.
  ASSERT_FALSE(gone(owner)) << read(dir_ / "owner.log");
  const Result other = run("train --sweep w --stale-after 5 -q");
  EXPECT_EQ(other.status, 0) << other.err;
  EXPECT_NE(other.err.find("1 other training process of this store is running on this host"),
            std::string::npos)
      << other.err;
  EXPECT_NE(other.err.find("1 running in other processes"), std::string::npos) << other.err;
  for (const json& r : runs())
    EXPECT_EQ(r["status"], r["id"] == long_run ? "running" : "done") << r.dump();
  kill(owner, SIGTERM);
  wait_gone(owner);
  for (const json& r : runs())
    if (r["id"] == long_run) {
      EXPECT_EQ(r["status"], "planned");
    }
}

TEST_F(TrainTest, WorkersTrainEveryRunOnceSplittingTheCores) {
  prepare_markov();
  write("s.toml", tiny_sweep("[1e5, 2e5]"));
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const Result r = run("train --sweep w --workers 2 -q");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("starting 2 workers"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("sweep: 6ND FLOP/s"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("% of sgemm peak"), std::string::npos) << r.err;
  std::set<int64_t> owners;
  for (const json& run_row : runs()) {
    EXPECT_EQ(run_row["status"], "done");
    owners.insert(run_row["owner"]["pid"].get<int64_t>());
  }
  EXPECT_EQ(owners.size(), 2u);
  EXPECT_EQ(run("train --sweep w --workers 2 --max-runs 1").status, 2);
}

TEST_F(TrainTest, TrainSaysWhatItLeftAndWhy) {
  prepare_markov();
  write("s.toml", tiny_sweep("[1e5]"));
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const Result r = run("train --sweep w --max-runs 1 -q");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("1 done, 1 planned (--max-runs reached)"), std::string::npos) << r.err;
  const Result nothing = run("train --sweep w --run 1");
  EXPECT_EQ(nothing.status, 1);
  EXPECT_NE(nothing.err.find("already done"), std::string::npos) << nothing.err;
}

}  // namespace
}  // namespace moescale::testing
