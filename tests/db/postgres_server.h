// A throwaway PostgreSQL server for tests: Debian's server binaries, initdb in a
// temp dir (owned by the postgres user when running as root), a free port, a Unix
// socket only. Started once per test process on first use and stopped at exit; a
// watchdog process stops it and removes the dir even if the test process dies.
#pragma once

#include <memory>
#include <string>

namespace moescale::testing {

class PostgresServer {
 public:
  // The process's server, started on the first call; nullptr when it cannot run
  // here (no server binaries, no postgres user), with the reason in why_not().
  static PostgresServer* get();
  static const std::string& why_not();

  // A new, empty database (dropped first if a previous run left it); its URL.
  std::string create_database(const std::string& name);
  // Runs SQL in one of its databases, as the superuser; throws on error.
  void exec(const std::string& database, const std::string& sql);
  std::string url(const std::string& database) const;
  // Sends `sig` to the server and all its processes (SIGSTOP freezes it, SIGCONT thaws).
  void signal_all(int sig);
  // Stops the server (fast: clients are disconnected) and starts it again, same port.
  void restart();

  ~PostgresServer();

 private:
  PostgresServer() = default;
  void start();
  void stop();
  std::string bin_, dir_;
  int port_ = 0;
  bool as_root_ = false;
  bool running_ = false;
};

}  // namespace moescale::testing
