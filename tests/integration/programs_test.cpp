// The two programs (cli/main.cpp): moescale loads no LibTorch and hands `train`
// to moescale-train; `version` reports what the trainer's LibTorch offers; a CUDA
// build on a machine without a GPU refuses `--device cuda` before touching a run.
#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>

#include "tests/integration/cli_test.h"

namespace moescale::testing {
namespace {
using nlohmann::json;

const char* kSweep = R"([sweep]
name = "t"
budgets = [1e10]
points_per_budget = 2
experts = [1, 4]
[model]
top_k = 2
)";

std::string shell_output(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  pclose(pipe);
  return out;
}

TEST_F(CliTest, MainProgramLinksNoLibTorch) {
  const std::string libs = shell_output("ldd " MOESCALE_BINARY);
  ASSERT_NE(libs.find("libc.so"), std::string::npos) << libs;
  EXPECT_EQ(libs.find("libtorch"), std::string::npos) << libs;
  EXPECT_EQ(libs.find("libc10"), std::string::npos) << libs;
  EXPECT_EQ(libs.find("cuda"), std::string::npos) << libs;
}

TEST_F(CliTest, TrainIsHandedToTheTrainerProgram) {
  const Result help = run("--help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("train "), std::string::npos) << help.out;
  const Result train_help = run("train --help");
  EXPECT_EQ(train_help.status, 0) << train_help.err;
  EXPECT_NE(train_help.out.find("--sweep"), std::string::npos) << train_help.out;
  EXPECT_NE(train_help.out.find("--device"), std::string::npos) << train_help.out;
  EXPECT_EQ(run("train --no-such-flag").status, 2);  // the trainer's usage errors too
}

TEST_F(CliTest, VersionDescribesTheTrainersLibTorch) {
  const Result r = run("version --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j.at("version"), MOESCALE_VERSION);
  EXPECT_EQ(j.at("torch").get<std::string>().rfind("2.", 0), 0u) << j;
  EXPECT_EQ(j.at("cuda_compiled").get<bool>(), MOESCALE_CUDA_BUILD != 0) << j;
  EXPECT_EQ(j.at("cuda_archs").empty(), MOESCALE_CUDA_BUILD == 0) << j;
  EXPECT_GE(j.at("cuda_devices").get<int>(), 0);
  EXPECT_FALSE(j.at("blas").get<std::string>().empty());
  const Result text = run("version");
  EXPECT_EQ(text.status, 0);
  EXPECT_NE(text.out.find("cuda_compiled"), std::string::npos) << text.out;
  EXPECT_EQ(run("--version").out, "moescale " MOESCALE_VERSION "\n");
}

TEST_F(CliTest, CudaWithoutAGpuIsAClearErrorAndTouchesNoRun) {
  const json info = json::parse(run("version --json").out);
  if (info.at("cuda_devices").get<int>() > 0) GTEST_SKIP() << "a GPU is visible here";
  write("s.toml", kSweep);
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const Result r = run("train --sweep t --device cuda");
  EXPECT_EQ(r.status, 1);
  const char* expected = MOESCALE_CUDA_BUILD ? "error: no CUDA device visible (--device cuda"
                                             : "error: device cuda: this build has no CUDA";
  EXPECT_EQ(r.err.rfind(expected, 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  const json planned = json::parse(run("runs --status planned --json").out);
  EXPECT_EQ(planned.size(), json::parse(run("runs --json").out).size());
  EXPECT_FALSE(std::filesystem::exists(dir_ / "checkpoints"));
}

}  // namespace
}  // namespace moescale::testing
