// Finding and starting moescale-train.
#include "cli/trainer_process.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "cli/process.h"

namespace moescale::cli {
namespace fs = std::filesystem;

namespace {
constexpr const char* kTrainerName = "moescale-train";

fs::path this_executable() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error(fmt::format("cannot read /proc/self/exe: {}", ec.message()));
  return self;
}
}  // namespace

std::string trainer_path() {
  const fs::path self = this_executable();
  const fs::path trainer = self.parent_path() / kTrainerName;
  if (access(trainer.c_str(), X_OK) != 0)
    throw std::runtime_error(fmt::format(
        "the trainer program {} is missing: training lives in {} next to {}; build it with "
        "`cmake --build BUILD_DIR --target {}` (or scripts/build.sh)",
        trainer.string(), kTrainerName, self.filename().string(), kTrainerName));
  return trainer.string();
}

void exec_trainer(char** argv) {
  const std::string path = trainer_path();
  execv(path.c_str(), argv);
  throw std::runtime_error(fmt::format("cannot start {}: {}", path, std::strerror(errno)));
}

std::string run_trainer(const std::vector<std::string>& args) {
  std::vector<std::string> argv{trainer_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  // Its stderr is the user's: the trainer's own message says what went wrong.
  ProcessOptions own_stderr;
  own_stderr.capture_stderr = false;
  const ProcessResult run = run_process(argv, own_stderr);
  if (run.status != 0)
    throw std::runtime_error(fmt::format("{} {} failed (see its message above)", argv.front(),
                                         args.empty() ? "" : args.front()));
  return run.out;
}

}  // namespace moescale::cli
