// Processes started with posix_spawn: argv arrays, no shell.
#include "cli/process.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

extern char** environ;

namespace moescale::cli {
namespace {

// posix_spawn's file actions and attributes, released on every path.
class SpawnSetup {
 public:
  explicit SpawnSetup(const ProcessOptions& options) {
    posix_spawn_file_actions_init(&actions_);
    posix_spawnattr_init(&attr_);
    if (!options.working_dir.empty())
      posix_spawn_file_actions_addchdir_np(&actions_, options.working_dir.c_str());
    if (options.own_process_group) {
      posix_spawnattr_setpgroup(&attr_, 0);
      posix_spawnattr_setflags(&attr_, POSIX_SPAWN_SETPGROUP);
    }
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions_);
    posix_spawnattr_destroy(&attr_);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
  posix_spawn_file_actions_t* actions() { return &actions_; }

  pid_t spawn(const std::vector<std::string>& args) {
    if (args.empty()) throw std::invalid_argument("no program to start");
    std::vector<char*> argv;
    for (const auto& s : args) argv.push_back(const_cast<char*>(s.c_str()));
    argv.push_back(nullptr);
    pid_t pid = 0;
    const int rc = posix_spawnp(&pid, argv[0], &actions_, &attr_, argv.data(), environ);
    if (rc != 0)
      throw std::runtime_error(fmt::format("cannot start {}: {}", args[0], std::strerror(rc)));
    return pid;
  }

 private:
  posix_spawn_file_actions_t actions_;
  posix_spawnattr_t attr_;
};

// Reads every open descriptor until all are closed (together, so that neither pipe fills up).
void drain(std::vector<int> fds, std::vector<std::string*> into) {
  std::vector<pollfd> polled;
  for (int fd : fds) polled.push_back({fd, POLLIN, 0});
  size_t open_fds = polled.size();
  while (open_fds > 0) {
    if (poll(polled.data(), polled.size(), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (size_t i = 0; i < polled.size(); ++i) {
      if (polled[i].fd < 0 || !(polled[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      const ssize_t n = read(polled[i].fd, buf, sizeof buf);
      if (n > 0) into[i]->append(buf, static_cast<size_t>(n));
      if (n == 0 || (n < 0 && errno != EINTR)) polled[i].fd = -1, --open_fds;
    }
  }
}

}  // namespace

int exit_status(int wait_status) {
  return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
}

ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& options) {
  int out_fds[2], err_fds[2] = {-1, -1};
  if (pipe2(out_fds, O_CLOEXEC) != 0 || (options.capture_stderr && pipe2(err_fds, O_CLOEXEC) != 0))
    throw std::runtime_error("cannot create pipes to run " + argv.at(0));
  ProcessResult result;
  pid_t pid = 0;
  try {
    SpawnSetup setup(options);
    posix_spawn_file_actions_adddup2(setup.actions(), out_fds[1], STDOUT_FILENO);
    if (options.capture_stderr)
      posix_spawn_file_actions_adddup2(setup.actions(), err_fds[1], STDERR_FILENO);
    pid = setup.spawn(argv);
  } catch (...) {
    for (int fd : {out_fds[0], out_fds[1], err_fds[0], err_fds[1]})
      if (fd >= 0) close(fd);
    throw;
  }
  close(out_fds[1]);
  if (options.capture_stderr) {
    close(err_fds[1]);
    drain({out_fds[0], err_fds[0]}, {&result.out, &result.err});
    close(err_fds[0]);
  } else {
    drain({out_fds[0]}, {&result.out});
  }
  close(out_fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.status = exit_status(status);
  return result;
}

pid_t start_process(const std::vector<std::string>& argv, const ProcessOptions& options) {
  SpawnSetup setup(options);
  return setup.spawn(argv);
}

}  // namespace moescale::cli
