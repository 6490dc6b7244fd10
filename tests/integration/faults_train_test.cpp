// Faults a cluster produces, while training: a full file system under the checkpoints
// and under the database (a small tmpfs mounted by the test; skipped, saying why, where
// it cannot mount one).
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "tests/integration/cli_test.h"

namespace moescale::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

// 78 steps, checkpoints every 20.
const std::string kTrain = "checkpoint_interval = 20\nlog_interval = 20\n";

class FullDisk : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    small_ = dir_ / "small";
    fs::create_directories(small_);
    if (::mount("tmpfs", small_.c_str(), "tmpfs", 0, "size=4m") != 0)
      GTEST_SKIP() << "cannot mount a tmpfs at " << small_ << " (" << std::strerror(errno)
                   << "): the full-disk tests need root or CAP_SYS_ADMIN";
    mounted_ = true;
  }
  void TearDown() override {
    if (mounted_) ::umount2(small_.c_str(), MNT_DETACH);
    CliTest::TearDown();
  }

  // Fills the tmpfs until `leave` bytes are free.
  void fill(uint64_t leave) const {
    struct statvfs st {};
    ASSERT_EQ(statvfs(small_.c_str(), &st), 0);
    const uint64_t free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
    ASSERT_GT(free_bytes, leave);
    const int fd = ::open((small_ / "filler").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(posix_fallocate(fd, 0, static_cast<off_t>(free_bytes - leave)), 0);
    ::close(fd);
  }
  void free_space() const { fs::remove(small_ / "filler"); }

  std::vector<std::string> temp_files() const {
    std::vector<std::string> found;
    for (const auto& e : fs::recursive_directory_iterator(dir_))
      if (e.path().filename().string().find(".tmp.") != std::string::npos)
        found.push_back(e.path().string());
    return found;
  }

  json only_run(const std::string& db) const {
    const json runs = json::parse(run("runs --json --db '" + db + "'").out);
    EXPECT_EQ(runs.size(), 1u);
    return runs.at(0);
  }

  // The uninterrupted run's final loss, and the size of its checkpoint.
  std::pair<double, uint64_t> reference() const {
    EXPECT_EQ(run("plan --config s.toml --db ref.db").status, 0);
    const Result r = run("train --sweep w --db ref.db --threads 1 --checkpoints ref-ckpt -q");
    EXPECT_EQ(r.status, 0) << r.err;
    uint64_t size = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir_ / "ref-ckpt"))
      if (e.path().filename() == "checkpoint.pt") size = fs::file_size(e.path());
    return {only_run("ref.db")["final_loss"].get<double>(), size};
  }

  fs::path small_;
  bool mounted_ = false;
};

TEST_F(FullDisk, UnderTheCheckpointsHandsTheRunBackAndResumesToTheSameLoss) {
  prepare_markov();
  write("s.toml", tiny_sweep("[2e4]", kTrain, "[1]"));
  const auto [loss, checkpoint_bytes] = reference();
  ASSERT_GT(checkpoint_bytes, 0u);
  ASSERT_EQ(run("plan --config s.toml --db a.db").status, 0);
  // Room for one checkpoint and half of the next.
  fill(checkpoint_bytes + checkpoint_bytes / 2);
  const Result full = run("train --sweep w --db a.db --threads 1 --checkpoints small/ckpt -q");
  EXPECT_EQ(full.status, 1) << full.err;
  EXPECT_NE(full.err.find("error: no space left on device"), std::string::npos) << full.err;
  EXPECT_EQ(full.err.find("Abort"), std::string::npos) << full.err;
  const json r = only_run("a.db");
  EXPECT_EQ(r["status"], "planned") << "handed back, not left running nor failed";
  EXPECT_EQ(r["steps_done"], 20) << "the last good checkpoint's step";
  EXPECT_TRUE(temp_files().empty()) << temp_files().front();

  free_space();
  const Result again = run("train --sweep w --db a.db --threads 1 --checkpoints small/ckpt -q");
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_EQ(only_run("a.db")["status"], "done");
  EXPECT_EQ(only_run("a.db")["final_loss"].get<double>(), loss);
  EXPECT_TRUE(temp_files().empty()) << temp_files().front();
}

TEST_F(FullDisk, UnderTheDatabaseEndsWithAClearErrorAndLosesNoRun) {
  prepare_markov();
  write("s.toml", tiny_sweep("[2e4]", "checkpoint_interval = 20\nlog_interval = 1\n", "[1]"));
  const auto [loss, checkpoint_bytes] = reference();
  ASSERT_EQ(run("plan --config s.toml --db small/a.db").status, 0);
  // Room for a few pages of the write-ahead log: the claim fits, the metrics do not.
  fill(48 * 1024);
  const Result full = run("train --sweep w --db small/a.db --threads 1 --checkpoints ckpt -q");
  EXPECT_EQ(full.status, 1) << full.err;
  EXPECT_NE(full.err.find("error: no space left on device"), std::string::npos) << full.err;
  EXPECT_EQ(std::count(full.err.begin(), full.err.end(), '\n'), 1) << full.err;

  free_space();
  const json r = only_run("small/a.db");
  EXPECT_NE(r["status"], "failed") << "a full disk is not the run's fault";
  const Result again = run("train --sweep w --db small/a.db --threads 1 --checkpoints ckpt -q");
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_EQ(only_run("small/a.db")["status"], "done");
  EXPECT_EQ(only_run("small/a.db")["final_loss"].get<double>(), loss);
}

// The --workers processes get --db, --checkpoints and --data as argv entries, never through
// a shell: `$(…)`, backticks and `$VAR` in them are names.
TEST_F(CliTest, ShellSyntaxInTrainPathsIsTakenLiterally) {
  const std::string data = "d $(touch MARKER1)", db = "s `touch MARKER2`.db", ckpt = "ck $HOME";
  ASSERT_EQ(run("data prepare -q --source synthetic:markov:order=1,vocab=16,branching=3,"
                "tokens=100000 --out '" +
                data + "'")
                .status,
            0);
  write("s.toml", tiny_sweep("[2e4]"));
  ASSERT_EQ(run("plan --config s.toml --db '" + db + "'").status, 0);
  const Result r = run("train --sweep w --workers 2 --threads 1 -q --db '" + db +
                       "' --checkpoints '" + ckpt + "' --data '" + data + "'");
  ASSERT_EQ(r.status, 0) << r.err;
  for (const json& run : json::parse(this->run("runs --json --db '" + db + "'").out))
    EXPECT_EQ(run["status"], "done");
  EXPECT_TRUE(fs::exists(dir_ / ckpt / "w")) << "checkpoints where the user asked";
  for (const auto& e : fs::recursive_directory_iterator(dir_))
    EXPECT_NE(e.path().filename().string().rfind("MARKER", 0), 0u) << e.path();
}

}  // namespace
}  // namespace moescale::testing
