// moescale submit without a cluster (issue 12 §2): the sbatch script it writes,
// how it calls sbatch (a stand-in sbatch on PATH), and its errors. The real
// Slurm run is in slurm_test.cpp.
#include <sys/stat.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "tests/integration/cli_test.h"

namespace moescale::testing {
namespace {
namespace fs = std::filesystem;

// Sets PATH for the commands a test runs, and puts it back afterwards.
class PathFor {
 public:
  explicit PathFor(const std::string& path) : old_(std::getenv("PATH") ? std::getenv("PATH") : "") {
    setenv("PATH", path.c_str(), 1);
  }
  ~PathFor() { setenv("PATH", old_.c_str(), 1); }

 private:
  std::string old_;
};

class SubmitTest : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    write("s.toml", tiny_sweep("[1e5]"));
    ASSERT_EQ(run("plan --config s.toml").status, 0);
  }

  // An sbatch that records its arguments and answers as `body` says.
  std::string fake_sbatch(const std::string& body) const {
    fs::create_directories(dir_ / "bin");
    const std::string path =
        write("bin/sbatch",
              "#!/bin/sh\necho \"$@\" > '" + (dir_ / "sbatch-args").string() + "'\n" + body + "\n");
    chmod(path.c_str(), 0755);
    return (dir_ / "bin").string() + ":" + std::getenv("PATH");
  }

  std::vector<fs::path> scripts() const {
    std::vector<fs::path> out;
    if (fs::exists(dir_ / "slurm"))
      for (const auto& e : fs::directory_iterator(dir_ / "slurm"))
        if (e.path().extension() == ".sbatch") out.push_back(e.path());
    return out;
  }
};

TEST_F(SubmitTest, DryRunWritesAndPrintsTheScriptWithTheTasksCommand) {
  const Result r =
      run("submit --sweep w --array 3 --cpus-per-task 2 --gpus-per-task 1 --partition gpu "
          "--time 1:30:00 --sbatch=--account=ml --dry-run");
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string store = fs::canonical(dir_ / "moescale.db").string();
  const std::string program = fs::canonical(MOESCALE_BINARY).string();
  EXPECT_EQ(r.out.rfind("#!/bin/bash\n", 0), 0u) << r.out;
  for (const std::string& line : std::vector<std::string>{
           "#SBATCH --array=0-2\n", "#SBATCH --cpus-per-task=2\n", "#SBATCH --gpus-per-task=1\n",
           "#SBATCH --partition=gpu\n", "#SBATCH --time=1:30:00\n", "#SBATCH --account=ml\n",
           "#SBATCH --no-requeue\n", "#SBATCH --signal=B:TERM@120\n",
           "#SBATCH --chdir=" + fs::canonical(dir_).string() + "\n",
           "#SBATCH --output=" + fs::canonical(dir_).string() + "/slurm/w-%A_%a.log\n",
           "exec '" + program + "' train --sweep 'w' --db '" + store +
               "' --threads \"$threads\"\n"})
    EXPECT_NE(r.out.find(line), std::string::npos) << line << " not in\n" << r.out;
  EXPECT_NE(r.out.find("SLURM_CPUS_PER_TASK"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("is a SQLite file"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("nothing submitted"), std::string::npos) << r.err;
  const auto written = scripts();
  ASSERT_EQ(written.size(), 1u);
  EXPECT_EQ(read(written[0]), r.out);

  const Result again = run("submit --sweep w --array 1 --requeue --dry-run");
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_NE(again.out.find("#SBATCH --requeue\n"), std::string::npos) << again.out;
  EXPECT_EQ(again.out.find("--cpus-per-task"), std::string::npos) << again.out;
  EXPECT_EQ(scripts().size(), 2u);  // a new script, the first one kept
  EXPECT_EQ(again.err.find("will find nothing"), std::string::npos) << again.err;
  EXPECT_EQ(again.err.find("leaves little training"), std::string::npos) << again.err;

  const Result short_limit = run("submit --sweep w --array 2 --time 2:30 --dry-run");
  ASSERT_EQ(short_limit.status, 0) << short_limit.err;
  EXPECT_NE(short_limit.err.find("--time 2:30 leaves little training"), std::string::npos)
      << short_limit.err;
}

TEST_F(SubmitTest, SubmitsWithSbatchAndPrintsOnlyTheJobId) {
  const PathFor path(fake_sbatch("echo '4242;cluster'"));
  const Result r = run("submit --sweep w --array 4 -v");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "4242\n");
  EXPECT_NE(r.err.find("submitted job 4242 (4 tasks)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("4 tasks for 2 runs left: 2 will find nothing"), std::string::npos) << r.err;
  const auto written = scripts();
  ASSERT_EQ(written.size(), 1u);
  EXPECT_EQ(read(dir_ / "sbatch-args"), "--parsable " + written[0].string() + "\n");

  const Result j = run("submit --sweep w --array 2 --json");
  ASSERT_EQ(j.status, 0) << j.err;
  const auto parsed = nlohmann::json::parse(j.out);
  EXPECT_EQ(parsed["job_id"], "4242");
  EXPECT_EQ(parsed["runs_left"], 2);
  EXPECT_TRUE(fs::exists(parsed["script"].get<std::string>()));
  EXPECT_EQ(parsed["logs"], fs::canonical(dir_).string() + "/slurm/w-4242_*.log");
  EXPECT_EQ(j.err.find("submitted"), std::string::npos) << j.err;
}

TEST_F(SubmitTest, SbatchFailureIsReportedWithItsMessage) {
  const PathFor path(
      fake_sbatch("echo 'sbatch: error: invalid partition specified: nope' >&2\n"
                  "exit 1"));
  const Result r = run("submit --sweep w --array 2 --partition nope");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("error: sbatch refused"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("invalid partition specified: nope"), std::string::npos) << r.err;
}

TEST_F(SubmitTest, ClearErrorsBeforeAnythingIsSubmitted) {
  {
    const PathFor path(dir_.string() + "/no-such-folder");
    const Result r = run("submit --sweep w --array 2");
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("sbatch not found on PATH"), std::string::npos) << r.err;
    EXPECT_TRUE(scripts().empty());
  }
  const PathFor path(fake_sbatch("echo 1"));
  const Result unknown = run("submit --sweep nope --array 2");
  EXPECT_EQ(unknown.status, 1);
  EXPECT_NE(unknown.err.find("nope"), std::string::npos) << unknown.err;
  EXPECT_EQ(run("submit --sweep w --array 0").status, 2);
  EXPECT_EQ(run("submit --sweep w --array 2 --time soon").status, 2);
  EXPECT_EQ(run("submit --sweep w --array 2 --time 1:2:3:4").status, 2);
  EXPECT_EQ(run("submit --sweep w").status, 2);

  ASSERT_EQ(run("simulate --sweep w --law chinchilla --param E=1.69 --param A=406.4 --param "
                "B=410.7 --param alpha=0.34 --param beta=0.28")
                .status,
            0);
  const Result none = run("submit --sweep w --array 2");
  EXPECT_EQ(none.status, 1);
  EXPECT_NE(none.err.find("no runs left to train"), std::string::npos) << none.err;
  EXPECT_TRUE(scripts().empty());
  EXPECT_FALSE(fs::exists(dir_ / "sbatch-args"));
}

}  // namespace
}  // namespace moescale::testing
