#include "tests/db/postgres_server.h"

#include <stdexcept>

#ifndef MOESCALE_POSTGRESQL

namespace moescale::testing {
// A build without libpq has no PostgreSQL store to test.
PostgresServer* PostgresServer::get() {
  return nullptr;
}
const std::string& PostgresServer::why_not() {
  static const std::string why =
      "moescale was built without libpq (apt-get install libpq-dev): PostgreSQL cases skipped";
  return why;
}
std::string PostgresServer::create_database(const std::string&) {
  throw std::logic_error("no PostgreSQL server");
}
void PostgresServer::exec(const std::string&, const std::string&) {
  throw std::logic_error("no PostgreSQL server");
}
PostgresServer::~PostgresServer() = default;
}  // namespace moescale::testing

#else

#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace moescale::testing {
namespace {
namespace fs = std::filesystem;

std::string g_why_not;

// The newest /usr/lib/postgresql/N/bin with initdb, or $MOESCALE_PG_BINDIR.
std::string find_server_binaries() {
  if (const char* dir = std::getenv("MOESCALE_PG_BINDIR"); dir && *dir)
    return fs::exists(fs::path(dir) / "initdb") ? dir : "";
  std::string best;
  int best_version = -1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const fs::path bin = entry.path() / "bin";
    const int version = std::atoi(entry.path().filename().c_str());
    if (fs::exists(bin / "initdb") && fs::exists(bin / "pg_ctl") && version > best_version)
      best = bin.string(), best_version = version;
  }
  return best;
}

int free_port() {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (s < 0 || bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (s >= 0) close(s);
    return 54321;
  }
  close(s);
  return ntohs(a.sin_port);
}

// Runs argv (as the postgres user when root), output appended to `log`; its exit status.
int run(const std::vector<std::string>& argv, bool as_root, const std::string& log) {
  std::vector<std::string> full;
  if (as_root) full = {"runuser", "-u", "postgres", "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
    std::vector<char*> args;
    for (auto& a : full) args.push_back(a.data());
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string tail_of(const std::string& path) {
  std::ifstream in(path);
  std::string all((std::istreambuf_iterator<char>(in)), {});
  return all.size() > 2000 ? all.substr(all.size() - 2000) : all;
}

// A child that waits for this process to end (its pipe closes, however we die) and
// then stops the server and removes its dir. The write end is close-on-exec, so the
// server processes do not hold it.
void start_watchdog(const std::string& pg_ctl, const std::string& data, const std::string& dir,
                    bool as_root) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return;
  const pid_t pid = fork();
  if (pid == 0) {
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    setsid();
    // Not holding the test's output open: ctest waits for that to close.
    if (const int null = open("/dev/null", O_RDWR); null >= 0)
      dup2(null, 0), dup2(null, 1), dup2(null, 2);
    close(fds[1]);
    char byte;
    while (read(fds[0], &byte, 1) != 0 && errno == EINTR) {
    }
    if (fs::exists(data + "/postmaster.pid"))
      run({pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"}, as_root, "/dev/null");
    std::error_code ec;
    fs::remove_all(dir, ec);
    _exit(0);
  }
  close(fds[0]);
  // fds[1] stays open, unused, until this process ends.
}

std::mutex g_mutex;
std::unique_ptr<PostgresServer> g_server;
bool g_tried = false;

struct Conn {
  PGconn* c;
  ~Conn() { PQfinish(c); }
};

}  // namespace

PostgresServer* PostgresServer::get() {
  std::lock_guard lock(g_mutex);
  if (g_tried) return g_server.get();
  g_tried = true;
  std::unique_ptr<PostgresServer> s(new PostgresServer);
  try {
    s->start();
    g_server = std::move(s);
    std::atexit([] { g_server.reset(); });
  } catch (const std::exception& e) {
    g_why_not = e.what();
  }
  return g_server.get();
}

const std::string& PostgresServer::why_not() {
  return g_why_not;
}

void PostgresServer::start() {
  bin_ = find_server_binaries();
  if (bin_.empty())
    throw std::runtime_error(
        "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb; "
        "apt-get install postgresql, or set MOESCALE_PG_BINDIR): PostgreSQL cases skipped");
  as_root_ = geteuid() == 0;
  const passwd* pg = as_root_ ? getpwnam("postgres") : nullptr;
  if (as_root_ && !pg)
    throw std::runtime_error(
        "running as root and there is no postgres user to run the server as (the postgresql "
        "package creates it): PostgreSQL cases skipped");
  char tmpl[] = "/tmp/moescale-pg-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("cannot make a temp dir for PostgreSQL");
  dir_ = tmpl;
  if (as_root_ && chown(dir_.c_str(), pg->pw_uid, pg->pw_gid) != 0)
    throw std::runtime_error("cannot give " + dir_ + " to the postgres user");
  // setup.log takes the commands' output (opened by this process), server.log the
  // server's (written by the postgres user).
  const std::string data = dir_ + "/data", log = dir_ + "/setup.log",
                    server_log = dir_ + "/server.log";
  start_watchdog(bin_ + "/pg_ctl", data, dir_, as_root_);
  if (run({bin_ + "/initdb", "-D", data, "-A", "trust", "-U", "moescale", "-E", "UTF8",
           "--locale=C", "--no-sync"},
          as_root_, log) != 0)
    throw std::runtime_error("initdb failed: " + tail_of(log));
  port_ = free_port();
  // Durability is not what the tests check: no fsync makes creating databases fast.
  const std::string options = "-p " + std::to_string(port_) + " -k " + dir_ +
                              " -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
                              "-c full_page_writes=off -c max_connections=60";
  if (run({bin_ + "/pg_ctl", "-D", data, "-o", options, "-l", server_log, "-w", "-t", "60",
           "start"},
          as_root_, log) != 0)
    throw std::runtime_error("the PostgreSQL server did not start: " + tail_of(log) +
                             tail_of(server_log));
  running_ = true;
}

void PostgresServer::stop() {
  if (running_)
    run({bin_ + "/pg_ctl", "-D", dir_ + "/data", "-m", "fast", "-w", "stop"}, as_root_,
        "/dev/null");
  running_ = false;
  std::error_code ec;
  if (!dir_.empty()) fs::remove_all(dir_, ec);
}

PostgresServer::~PostgresServer() {
  stop();
}

void PostgresServer::signal_all(int sig) {
  std::ifstream pid_file(dir_ + "/data/postmaster.pid");
  pid_t postmaster = 0;
  if (!(pid_file >> postmaster) || postmaster <= 0)
    throw std::runtime_error("no postmaster.pid in " + dir_ + "/data");
  for (const auto& e : fs::directory_iterator("/proc")) {
    const pid_t pid = std::atoi(e.path().filename().c_str());
    if (pid <= 0) continue;
    std::ifstream stat(e.path() / "stat");
    std::string all((std::istreambuf_iterator<char>(stat)), {});
    const auto close_paren = all.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream rest(all.substr(close_paren + 2));
    char state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == postmaster) kill(pid, sig);
  }
  kill(postmaster, sig);
}

void PostgresServer::restart() {
  const std::string log = dir_ + "/setup.log";
  if (run({bin_ + "/pg_ctl", "-D", dir_ + "/data", "-m", "fast", "-w", "-t", "60", "restart"},
          as_root_, log) != 0)
    throw std::runtime_error("the PostgreSQL server did not restart: " + tail_of(log));
}

std::string PostgresServer::url(const std::string& database) const {
  return "postgresql://moescale@/" + database + "?host=" + dir_ + "&port=" + std::to_string(port_);
}

void PostgresServer::exec(const std::string& database, const std::string& sql) {
  Conn c{PQconnectdb(url(database).c_str())};
  if (PQstatus(c.c) != CONNECTION_OK)
    throw std::runtime_error(std::string("cannot connect: ") + PQerrorMessage(c.c));
  PQsetNoticeProcessor(
      c.c, [](void*, const char*) {}, nullptr);
  PGresult* r = PQexec(c.c, sql.c_str());
  const auto status = PQresultStatus(r);
  const std::string message = PQresultErrorMessage(r);
  PQclear(r);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
    throw std::runtime_error(sql + ": " + message);
}

std::string PostgresServer::create_database(const std::string& name) {
  exec("postgres", "DROP DATABASE IF EXISTS \"" + name + "\"");
  exec("postgres", "CREATE DATABASE \"" + name + "\" TEMPLATE template0");
  return url(name);
}

}  // namespace moescale::testing

#endif  // MOESCALE_POSTGRESQL
