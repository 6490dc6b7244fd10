// Runs the moescale program in a fresh temporary folder and captures its
// output and exit status.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace moescale::testing {

struct Result {
  int status = -1;
  std::string out, err;
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           (std::string("moescale_cli_") + info->test_suite_name() + "_" + info->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  // moescale ARGS in the test folder, with MOESCALE_DB set to `store` (empty: the default).
  Result run(const std::string& args, const std::string& store = "") const {
    return run_shell("MOESCALE_DB='" + store + "' " MOESCALE_BINARY " " + args);
  }

  // A shell command line run in the test folder: its stdout, stderr and exit status.
  Result run_shell(const std::string& command_line) const {
    const std::string err_file = (dir_ / "stderr.txt").string();
    const std::string cmd =
        "cd '" + dir_.string() + "' && " + command_line + " 2>'" + err_file + "'";
    Result r;
    FILE* pipe = popen(cmd.c_str(), "r");
    std::array<char, 4096> buf{};
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
    const int status = pclose(pipe);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.err = read(err_file);
    return r;
  }

  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }

  static std::string read(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // Token data for tiny_sweep: a small Markov chain in ./markov.
  void prepare_markov(const std::string& chain = "order=1,vocab=16,branching=3,tokens=100000") {
    const Result r = run("data prepare -q --source synthetic:markov:" + chain + " --out markov");
    ASSERT_EQ(r.status, 0) << r.err;
  }

  std::filesystem::path dir_;
};

// A grid sweep "w" of 2K-parameter models on ./markov: runs of a few seconds at 1e5 tokens.
// `extra_train` (lines ending in a newline) goes under [train].
inline std::string tiny_sweep(const std::string& tokens, const std::string& extra_train = "",
                              const std::string& experts = "[1, 4]") {
  return R"([sweep]
name = "w"
design = "grid"
sizes = [2e3]
tokens = )" +
         tokens + R"(
experts = )" +
         experts + R"(
routers = ["topk"]
[model]
vocab = 16
seq_len = 32
top_k = 2
head_dim = 8
aspect_ratio = 16
router_dim = 8
[train]
batch_size = 8
lr = 1e-2
eval_batches = 2
)" + extra_train +
         R"([data]
dir = "markov"
)";
}

}  // namespace moescale::testing
