// Finding and starting moescale-train.
#include "cli/trainer_process.h"

#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

extern char** environ;

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
  const std::string path = trainer_path();
  std::vector<char*> argv{const_cast<char*>(path.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("cannot create a pipe to the trainer");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, path.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  std::string out;
  if (rc == 0) {
    char buf[4096];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
      if (n > 0) out.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  if (rc != 0)
    throw std::runtime_error(fmt::format("cannot start {}: {}", path, std::strerror(rc)));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error(fmt::format("{} {} failed (see its message above)", path,
                                         args.empty() ? "" : args.front()));
  return out;
}

}  // namespace moescale::cli
