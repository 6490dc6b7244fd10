// moescale submit on a real Slurm (issue 12 §2): munged, slurmctld and slurmd
// started from a temp dir as a one-node cluster of this host, a sweep trained
// by a job array, and a task cancelled mid-run whose run a later task resumes
// from its checkpoint to the loss of an uninterrupted run. Skipped, saying
// why, where the Slurm or munge programs are absent or we are not root.
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include "db/db.h"
#include "tests/integration/cli_test.h"
#include "tests/temp_dir.h"

namespace moescale::testing {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string find_program(const std::string& name) {
  const char* env = std::getenv("PATH");
  std::string dirs = std::string(env ? env : "") + ":/usr/sbin:/sbin:/usr/bin";
  size_t start = 0;
  while (start < dirs.size()) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    const fs::path p = fs::path(dirs.substr(start, end - start)) / name;
    if (end > start && access(p.c_str(), X_OK) == 0) return p.string();
    start = end + 1;
  }
  return "";
}

// stdout of a shell command.
std::string shell(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

int free_port() {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  close(s);
  return ntohs(a.sin_port);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

template <class Pred>
bool wait_for(Pred done, std::chrono::seconds limit) {
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(250ms);
  }
  return done();
}

// A one-node Slurm cluster (this host, its CPUs) with its own munged, ports and
// state in a temp dir. The destructor cancels its jobs and stops the daemons;
// the kernel stops them should the test process be killed.
class LocalSlurm {
 public:
  // What is missing to start a cluster here, or "".
  static std::string missing() {
    for (const char* p : {"munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo"})
      if (find_program(p).empty())
        return fmt::format("{} not found (Debian: apt-get install slurm-wlm munge)", p);
    if (geteuid() != 0) return "slurmd must run as root to start jobs; run the test as root";
    return "";
  }

  LocalSlurm() : dir_("moescale-slurm") {
    const std::string d = dir_.str();
    std::ofstream key(d + "/munge.key", std::ios::binary);
    std::ifstream random("/dev/urandom", std::ios::binary);
    std::string bytes(1024, '\0');
    random.read(bytes.data(), 1024);
    key << bytes;
    key.close();
    fs::permissions(d + "/munge.key", fs::perms::owner_read | fs::perms::owner_write);
    fs::create_directories(d + "/state");
    fs::create_directories(d + "/spool");
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    std::string node = host;
    node = node.substr(0, node.find('.'));
    std::ofstream(conf()) << fmt::format(
        "ClusterName=moescaletest\nSlurmctldHost={0}\n"
        "AuthType=auth/munge\nAuthInfo=socket={1}/munge.sock\nCryptoType=crypto/munge\n"
        "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSelectType=select/cons_tres\n"
        "SelectTypeParameters=CR_CPU\nMpiDefault=none\nReturnToService=2\n"
        "SlurmUser=root\nSlurmdUser=root\nSlurmctldPort={2}\nSlurmdPort={3}\n"
        "StateSaveLocation={1}/state\nSlurmdSpoolDir={1}/spool\n"
        "SlurmctldPidFile={1}/slurmctld.pid\nSlurmdPidFile={1}/slurmd.pid\n"
        "SlurmctldLogFile={1}/slurmctld.log\nSlurmdLogFile={1}/slurmd.log\n"
        "JobCompType=jobcomp/none\nKillWait=30\n"
        "NodeName={0} CPUs={4} RealMemory=1000 State=UNKNOWN\n"
        "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
        node, d, free_port(), free_port(), std::thread::hardware_concurrency());
    setenv("SLURM_CONF", conf().c_str(), 1);
    start("munged",
          {"--foreground", "--key-file=" + d + "/munge.key", "--socket=" + d + "/munge.sock",
           "--pid-file=" + d + "/munged.pid", "--log-file=" + d + "/munged.log",
           "--seed-file=" + d + "/munge.seed", "--force"});
    start("slurmctld", {"-D", "-f", conf()});
    start("slurmd", {"-D", "-f", conf()});
    if (!wait_for([] { return shell("sinfo -h -o %t 2>/dev/null").find("idle") == 0; }, 30s))
      failure_ = "the node did not become idle within 30 s:\n" + logs();
  }

  ~LocalSlurm() {
    shell("scancel --user=root 2>/dev/null");
    wait_for([] { return shell("squeue -h 2>/dev/null").empty(); }, 40s);
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) stop(*it);
    unsetenv("SLURM_CONF");
  }

  // Why the cluster did not start, or "".
  const std::string& failure() const { return failure_; }
  std::string conf() const { return dir_.str("slurm.conf"); }
  std::string logs() const {
    std::string out;
    for (const char* f : {"munged.log", "slurmctld.log", "slurmd.log"})
      out += fmt::format("--- {}\n{}", f, slurp(dir_.path() / f));
    return out;
  }

  // True while any task of the job is pending or running.
  static bool active(const std::string& job) {
    return !shell(fmt::format("squeue -h -j {} 2>/dev/null", job)).empty();
  }

 private:
  // Runs the daemon in the foreground as our child, so that we reap it, and
  // asks the kernel to stop it should this process die before the destructor
  // runs. Ready once it has written its pid file.
  void start(const std::string& daemon, std::vector<std::string> args) {
    if (!failure_.empty()) return;
    args.insert(args.begin(), find_program(daemon));
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string out = dir_.str(daemon + ".out");
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(1);  // the test died before prctl
      const int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      execv(argv[0], argv.data());
      _exit(127);
    }
    if (pid < 0) {
      failure_ = "cannot fork to start " + daemon;
      return;
    }
    const fs::path pid_file = dir_.path() / (daemon + ".pid");
    bool exited = false;
    wait_for(
        [&] { return fs::exists(pid_file) || (exited = waitpid(pid, nullptr, WNOHANG) == pid); },
        10s);
    if (!exited) children_.push_back(pid);
    if (exited || !fs::exists(pid_file))
      failure_ = fmt::format("{} did not start ({}):\n{}", daemon, args[0], slurp(out) + logs());
  }

  static void stop(pid_t pid) {
    kill(pid, SIGTERM);
    if (!wait_for([&] { return waitpid(pid, nullptr, WNOHANG) != 0; }, 10s)) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }

  TempDir dir_;
  std::string failure_;
  std::vector<pid_t> children_;  // in start order
};

class SlurmTest : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    if (const std::string why = LocalSlurm::missing(); !why.empty())
      GTEST_SKIP() << "no Slurm to test on: " << why;
    slurm_ = std::make_unique<LocalSlurm>();
    ASSERT_EQ(slurm_->failure(), "");
    prepare_markov();
  }
  void TearDown() override {
    slurm_.reset();
    CliTest::TearDown();
  }

  // Submits and returns the job id.
  std::string submit(const std::string& args) {
    const Result r = run("submit --sweep w --cpus-per-task 1 " + args);
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find("is a SQLite file"), std::string::npos) << r.err;
    std::string id = r.out;
    while (!id.empty() && id.back() == '\n') id.pop_back();
    EXPECT_TRUE(!id.empty() && id.find_first_not_of("0123456789") == std::string::npos) << r.out;
    return id;
  }

  // Waits (at most `limit`) until no task of the job is left in the queue.
  ::testing::AssertionResult finished(const std::string& job, std::chrono::seconds limit) {
    if (wait_for([&] { return !LocalSlurm::active(job); }, limit))
      return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "job " << job << " still queued after " << limit.count() << " s:\n"
           << shell("squeue") << task_logs(job) << slurm_->logs();
  }

  std::string task_logs(const std::string& job) const {
    std::string out;
    if (fs::exists(dir_ / "slurm"))
      for (const auto& e : fs::directory_iterator(dir_ / "slurm"))
        if (e.path().filename().string().find("-" + job + "_") != std::string::npos)
          out += "--- " + e.path().filename().string() + "\n" + read(e.path());
    return out;
  }

  std::vector<RunRecord> runs(const std::string& store = "moescale.db") const {
    return Database((dir_ / store).string(), Database::Mode::read_only).runs("w", std::nullopt);
  }

  std::unique_ptr<LocalSlurm> slurm_;
};

TEST_F(SlurmTest, AnArrayOfTwoTasksTrainsEveryRunOnce) {
  write("s.toml", tiny_sweep("[1e5, 2e5]", "log_interval = 20\n", "[1, 4]"));
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const std::string job = submit("--array 2");
  ASSERT_TRUE(finished(job, 90s));
  const std::string logs = task_logs(job);
  for (const RunRecord& r : runs()) {
    EXPECT_EQ(r.status, RunStatus::done) << r.key << "\n" << logs;
    EXPECT_EQ(r.claim_generation, 1) << r.key << " was claimed more than once";
    EXPECT_TRUE(r.owner_job == job + "_0" || r.owner_job == job + "_1") << r.owner_job;
    EXPECT_EQ(r.owner_threads, 1) << "a task of 1 CPU trains with 1 thread";
    // Trained once: every logged step appears once.
    std::set<int64_t> steps;
    const auto metrics =
        Database((dir_ / "moescale.db").string(), Database::Mode::read_only).metrics(r.id, "train");
    for (const MetricRecord& m : metrics) EXPECT_TRUE(steps.insert(m.step).second) << m.step;
    EXPECT_FALSE(metrics.empty());
  }
  // Both tasks stopped when nothing was left, and they trained 4 runs between them.
  int trained = 0;
  for (const std::string task : {"_0", "_1"}) {
    const std::string log = read(dir_ / "slurm" / ("w-" + job + task + ".log"));
    std::smatch m;
    ASSERT_TRUE(std::regex_search(log, m, std::regex(R"(\ntrained (\d+) run)"))) << log;
    trained += std::stoi(m[1]);
    EXPECT_NE(log.find("sweep 'w': "), std::string::npos) << log;
    EXPECT_EQ(log.find("error"), std::string::npos) << log;
  }
  EXPECT_EQ(trained, 4) << logs;
}

TEST_F(SlurmTest, ACancelledTaskHandsItsRunBackAndALaterOneResumesIt) {
  const std::string config = tiny_sweep("[1e6]", "log_interval = 20\n", "[1]");
  write("s.toml", config);
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  ASSERT_EQ(run("plan --config s.toml --db reference.db").status, 0);
  // The uninterrupted reference, trained meanwhile by a plain train with one thread.
  const std::string reference_cmd =
      "cd '" + dir_.string() +
      "' && " MOESCALE_BINARY
      " train --sweep w --db reference.db --threads 1 --checkpoints ref-ckpt -q 2>reference.log";
  std::thread reference([&] { std::system(reference_cmd.c_str()); });
  struct Join {  // on every way out of the test
    std::thread& t;
    ~Join() {
      if (t.joinable()) t.join();
    }
  } join{reference};

  const std::string first = submit("--array 1");
  const int64_t steps = runs()[0].plan.spec.steps();
  // Cancel it a good way in, and check the owner Slurm sees while it runs.
  int64_t reached = 0;
  ASSERT_TRUE(wait_for(
      [&] {
        const RunRecord r = runs()[0];
        if (r.status != RunStatus::running) return false;
        EXPECT_EQ(r.owner_job, first + "_0");
        const auto m = Database((dir_ / "moescale.db").string(), Database::Mode::read_only)
                           .metrics(r.id, "train");
        reached = m.empty() ? 0 : m.back().step;
        return reached >= steps / 10;
      },
      60s))
      << task_logs(first);
  ASSERT_LT(reached, steps) << "the run is too short to be cancelled in the middle";
  shell("scancel " + first);
  ASSERT_TRUE(finished(first, 40s));
  const RunRecord released = runs()[0];
  const std::string first_log = task_logs(first);
  EXPECT_EQ(released.status, RunStatus::planned) << first_log;
  EXPECT_GE(released.steps_done, reached) << first_log;
  EXPECT_LT(released.steps_done, steps) << first_log;
  EXPECT_EQ(released.owner_job, "");
  EXPECT_NE(first_log.find("interrupted at step"), std::string::npos) << first_log;
  EXPECT_NE(first_log.find("checkpoint kept"), std::string::npos) << first_log;

  const std::string second = submit("--array 1");
  ASSERT_TRUE(finished(second, 90s));
  const std::string second_log = task_logs(second);
  const RunRecord done = runs()[0];
  ASSERT_EQ(done.status, RunStatus::done) << second_log;
  EXPECT_EQ(done.owner_job, second + "_0");
  EXPECT_EQ(done.claim_generation, 2);
  // It went on from the checkpoint: its first progress line is past where the first stopped.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(second_log, m, std::regex(R"(step (\d+)/)"))) << second_log;
  EXPECT_GT(std::stoll(m[1]), released.steps_done) << second_log;

  reference.join();
  const auto ref = runs("reference.db");
  ASSERT_EQ(ref[0].status, RunStatus::done) << read(dir_ / "reference.log");
  ASSERT_TRUE(done.final_loss && ref[0].final_loss);
  EXPECT_NEAR(*done.final_loss, *ref[0].final_loss, 1e-6);
}

// The script asks for SIGTERM 120 s before the time limit: with a 1-minute limit
// Slurm sends it at its first time-limit check (within 30 s), so the task hands its
// run back before the limit itself kills anything.
TEST_F(SlurmTest, TheTimeLimitWarningHandsTheRunBackBeforeTheLimit) {
  write("s.toml", tiny_sweep("[1e7]", "log_interval = 20\n", "[1]"));
  ASSERT_EQ(run("plan --config s.toml").status, 0);
  const auto start = Clock::now();
  const std::string job = submit("--array 1 --time 1 --requeue");
  ASSERT_TRUE(finished(job, 75s));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const std::string log = task_logs(job);
  const RunRecord r = runs()[0];
  EXPECT_EQ(r.status, RunStatus::planned) << log;
  EXPECT_GT(r.steps_done, 0) << log;
  EXPECT_NE(log.find("interrupted at step"), std::string::npos) << log;
  EXPECT_EQ(log.find("DUE TO TIME LIMIT"), std::string::npos) << log;
  EXPECT_LT(seconds, 55) << log;
}

}  // namespace
}  // namespace moescale::testing
