// moescale train: claim planned runs one at a time, train them, record metrics.
// With --workers N it starts N copies of itself, each with its share of the cores.
#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>
#include <thread>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/process.h"
#include "db/db.h"
#include "planner/stable_random.h"
#include "trainer/trainer.h"

namespace moescale::cli {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_stop{false};
std::atomic<bool> g_worker_child{false};
// The stop flag of the run being trained, so that a signal reaches it at once.
std::atomic<std::atomic<bool>*> g_run_stop{nullptr};
static_assert(std::atomic<std::atomic<bool>*>::is_always_lock_free);

// First Ctrl-C: finish the step, checkpoint, hand the run back. Second: default.
// A worker started by --workers keeps its handler: its parent forwards the
// signal once, and Slurm may signal it as well.
void on_signal(int sig) {
  g_stop = true;
  if (std::atomic<bool>* run = g_run_stop.load()) run->store(true);
  if (!g_worker_child) std::signal(sig, SIG_DFL);
}

struct TrainArgs {
  std::string db, sweep, device = "auto", data, checkpoints;
  int64_t run_id = 0;
  int max_runs = 0, threads = 0, workers = 1;
  double stale_after = 600;
  double db_retry = 120;  // seconds to keep trying a lost server connection
  bool quiet = false, retry_failed = false;
  std::string summary_file;  // internal: a --workers child reports here
};

// What one process trained, for the sweep's throughput line.
struct Tally {
  int trained = 0;
  double flops_6nd = 0;  // 6 * N_active * tokens trained by this command
};

// Progress for one run, with an ETA for the run and for what is left of the sweep.
struct SweepProgress {
  int index = 0, total = 0;
  double remaining_estimate = 0;  // est. seconds of the runs after this one
  // Wall time over the planner's estimate of the sweep's finished runs (NaN: none yet), and
  // how many runs are training now: the rest is shared among them.
  double finished_pace = std::numeric_limits<double>::quiet_NaN();
  int training = 1;
};

// The first line of a message, trimmed: a store keeps one actionable line, never a
// library's stack trace.
std::string one_line(const std::string& message) {
  std::string line = message.substr(0, message.find('\n'));
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
  return line;
}

// A store call that survives a lost server connection (a restarted server, a killed
// backend): tried again, 1, 2, 4 … 30 s apart, for up to `limit` seconds. Claims fence
// every write, so a write tried again never lands twice or for a run taken over since.
template <class F>
auto with_retry(double limit, F&& call) -> decltype(call()) {
  const auto start = Clock::now();
  double wait = 1;
  while (true) {
    try {
      return call();
    } catch (const ConnectionLost& e) {
      const double spent = std::chrono::duration<double>(Clock::now() - start).count();
      if (g_stop || spent + wait > limit) throw;
      fmt::print(stderr, "warning: {}; trying again in {:g} s (for up to {:g} s: --db-retry)\n",
                 one_line(e.what()), wait, limit);
      for (double slept = 0; slept < wait && !g_stop; slept += 0.1)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      wait = std::min(2 * wait, 30.0);
    }
  }
}

// Connects the trainer's MetricSink to the database and prints progress. Every
// write is fenced by the claim: a run taken over by another worker throws LostClaim.
class DatabaseSink : public MetricSink {
 public:
  DatabaseSink(Database& db, const RunRecord& run, SweepProgress progress, bool quiet,
               double db_retry)
      : db_(db), run_(run), progress_(progress), quiet_(quiet), db_retry_(db_retry) {}

  void train_step(const TrainStepMetrics& m) override {
    nlohmann::json load = m.expert_load;
    const MetricRecord record{run_.id,
                              m.step,
                              m.tokens,
                              "train",
                              m.loss,
                              m.lr,
                              m.aux_loss,
                              m.tokens_per_s,
                              std::nullopt,
                              m.elapsed_s,
                              m.expert_load.empty() ? "" : load.dump()};
    with_retry(db_retry_, [&] { db_.record_metric(run_.claim(), record); });
    if (!quiet_) print(m);
  }

  void eval(const EvalMetrics& m) override {
    std::optional<double> bpb;
    if (std::isfinite(m.bits_per_byte)) bpb = m.bits_per_byte;
    const MetricRecord record{
        run_.id,      m.step,       m.tokens, "val",        m.loss, std::nullopt,
        std::nullopt, std::nullopt, bpb,      std::nullopt, ""};
    with_retry(db_retry_, [&] { db_.record_metric(run_.claim(), record); });
    last_val_ = m.loss;
  }

  void checkpoint(int64_t step) override { checkpointed_ = step; }
  int64_t checkpointed() const { return checkpointed_; }  // 0: none written by this process

 private:
  void print(const TrainStepMetrics& m) const {
    const int64_t steps = run_.plan.spec.steps();
    const double done = static_cast<double>(m.step) / static_cast<double>(steps);
    const double run_eta = done > 0 ? m.elapsed_s * (1 - done) / done : NAN;
    // Scale the planner's estimate of the rest by how the finished runs compared to theirs
    // (before any finished, by this run's, which its start-up inflates), shared among the
    // runs training now.
    const double pace = std::isfinite(progress_.finished_pace) ? progress_.finished_pace
                        : done > 0 ? m.elapsed_s / (done * run_.plan.est_seconds)
                                   : 1.0;
    const double sweep_eta = run_eta + progress_.remaining_estimate * pace / progress_.training;
    const ModelShape& s = run_.plan.spec.shape;
    fmt::print(stderr,
               "run {}/{} #{} {} E{} N={}: step {}/{} loss {:.4f}{} {} tok/s, ETA run {}, "
               "sweep {}\n",
               progress_.index, progress_.total, run_.id, to_string(s.router), s.experts,
               human_count(static_cast<double>(run_.plan.params.active)), m.step, steps, m.loss,
               std::isfinite(last_val_) ? fmt::format(" (val {:.4f})", last_val_) : "",
               human_count(m.tokens_per_s), human_duration(run_eta), human_duration(sweep_eta));
  }

  Database& db_;
  const RunRecord& run_;
  SweepProgress progress_;
  bool quiet_;
  double db_retry_;
  double last_val_ = NAN;
  int64_t checkpointed_ = 0;
};

// Keeps a claimed run's heartbeat fresh on a timer, whatever the logging
// interval, on its own connection (SQLite handles are not shared between
// threads). It owns the trainer's stop flag, which a signal or the discovery
// that the run was claimed by someone else sets.
class HeartbeatThread {
 public:
  HeartbeatThread(const std::string& db_path, Claim claim, double stale_after)
      : interval_(std::clamp(stale_after / 4, 0.2, 30.0)) {
    g_run_stop = &stop_;
    if (g_stop) stop_ = true;  // a signal that came before the flag was published
    thread_ = std::thread([this, db_path, claim] { loop(db_path, claim); });
  }
  ~HeartbeatThread() {
    g_run_stop = nullptr;
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  const std::atomic<bool>* stop_flag() const { return &stop_; }
  bool lost() const { return lost_; }
  const std::string& why() const { return why_; }  // read only after lost()

 private:
  void loop(const std::string& db_path, Claim claim) {
    std::unique_ptr<Database> db;
    std::unique_lock lock(mutex_);
    while (!done_) {
      // A whole interval asleep: waking often steals time from the trainer's
      // threads on a busy machine.
      wake_.wait_for(lock, std::chrono::duration<double>(interval_));
      if (done_ || lost_) continue;
      try {
        if (!db) db = std::make_unique<Database>(db_path, Database::Mode::must_exist);
        db->heartbeat(claim);
      } catch (const LostClaim& e) {
        why_ = e.what();
        lost_ = true;
        stop_ = true;
      } catch (const std::exception&) {
        // A busy or briefly unreadable store: try again at the next beat.
      }
    }
  }

  double interval_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool done_ = false;
  std::atomic<bool> stop_{false}, lost_{false};
  std::string why_;
  std::thread thread_;
};

int available_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// The threads this process trains with: --threads if given, else all cores, or
// its share of them when other training processes of this store run on this host.
int choose_threads(const TrainArgs& a, Database& db, const RunOwner& me, int processes) {
  if (a.threads > 0) return a.threads;
  const int cores = available_cores();
  const Database::HostWorkers others = db.active_workers(me.host, me.pid);
  if (others.processes == 0) return std::max(1, cores / processes);
  const int share = std::max(1, cores / (others.processes + processes));
  fmt::print(stderr,
             "{} other training process{} of this store {} running on this host: using {} of {} "
             "cores{} (--threads N to choose)\n",
             others.processes, others.processes == 1 ? "" : "es",
             others.processes == 1 ? "is" : "are", share * processes, cores,
             processes > 1 ? fmt::format(", {} per worker", share) : "");
  return share;
}

// ---- checkpoint identity -----------------------------------------------------

// Size and a hash of meta.json and of sampled blocks of the token files: cheap
// for gigabyte files, and different whenever other data is prepared there.
std::string data_fingerprint(const std::string& dir) {
  uint64_t h = fnv1a("moescale-data");
  std::string sizes;
  for (const char* name : {"meta.json", "train.bin", "val.bin"}) {
    const fs::path p = fs::path(dir) / name;
    std::error_code ec;
    const auto size = fs::file_size(p, ec);
    if (ec) continue;
    sizes += fmt::format("{}{}", sizes.empty() ? "" : "+", size);
    std::ifstream in(p, std::ios::binary);
    constexpr std::uintmax_t kBlock = 1 << 16;
    const int blocks = name == std::string("meta.json") || size <= 8 * kBlock ? 1 : 8;
    std::string buf;
    for (int b = 0; b < blocks; ++b) {
      const std::uintmax_t at = blocks == 1 ? 0 : (size - kBlock) * b / (blocks - 1);
      buf.resize(blocks == 1 ? size : kBlock);
      in.seekg(static_cast<std::streamoff>(at));
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      h = fnv1a(std::string_view(buf.data(), static_cast<size_t>(in.gcount())), h);
    }
  }
  return fmt::format("{}:{:016x}", sizes, h);
}

std::string checkpoint_identity(const Database& db, const RunRecord& run) {
  return fmt::format("store={} run={} spec={:016x} data={}", db.store_identity(), run.id,
                     fnv1a(to_json(run.plan.spec)), data_fingerprint(run.plan.spec.data_dir));
}

// Sweep names are checked when planned; older stores may hold any name, so map
// anything outside [A-Za-z0-9._-] (and dot-only names) to a name that cannot
// leave the checkpoint folder.
std::string safe_folder_name(const std::string& name) {
  std::string out;
  for (char c : name)
    out +=
        (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  if (out == name && out.find_first_not_of('.') != std::string::npos) return out;
  return fmt::format("{}-{:08x}", out, fnv1a(name) & 0xffffffffu);
}

std::string checkpoint_dir(const TrainArgs& a, const std::string& db_path, const RunRecord& r) {
  // A server store has no folder: its workers share the one they start in.
  const fs::path beside = is_server_location(db_path)
                              ? fs::absolute("checkpoints")
                              : fs::absolute(db_path).parent_path() / "checkpoints";
  const fs::path root = a.checkpoints.empty() ? beside : fs::path(a.checkpoints);
  return (root / safe_folder_name(r.sweep) / safe_folder_name(r.key)).string();
}

SweepProgress sweep_progress(const Database& db, const std::string& sweep) {
  SweepProgress p;
  const auto all = db.runs(sweep, std::nullopt);
  p.total = static_cast<int>(all.size());
  int finished = 0, training = 0;
  double finished_estimate = 0, finished_wall = 0;
  for (const RunRecord& r : all) {
    if (r.status == RunStatus::planned) p.remaining_estimate += r.plan.est_seconds;
    if (r.status == RunStatus::running) ++training;
    if (r.status != RunStatus::planned && r.status != RunStatus::running) ++finished;
    if (r.status == RunStatus::done && r.wall_seconds && r.plan.est_seconds > 0)
      finished_estimate += r.plan.est_seconds, finished_wall += *r.wall_seconds;
  }
  p.index = finished + 1;
  p.training = std::max(1, training);
  if (finished_estimate > 0 && finished_wall > 0)
    p.finished_pace = finished_wall / finished_estimate;
  return p;
}

// Checks every data folder the sweep's unfinished runs need before any run is
// claimed: a setup problem must not touch a run's status or heartbeat.
void check_data_before_claiming(const Database& db, const TrainArgs& a) {
  if (!a.data.empty()) {
    read_data_meta(a.data);
    return;
  }
  std::set<std::string> dirs;
  for (const RunRecord& r : db.runs(a.sweep, std::nullopt))
    if (r.status == RunStatus::planned || r.status == RunStatus::running ||
        (a.retry_failed && r.status == RunStatus::failed))
      if (a.run_id == 0 || r.id == a.run_id) dirs.insert(r.plan.spec.data_dir);
  for (const std::string& dir : dirs) read_data_meta(dir);
}

enum class Ended { finished, interrupted, lost };

bool is_no_space(const std::exception& e) {
  const auto* system = dynamic_cast<const std::system_error*>(&e);
  return system && (system->code() == std::errc::no_space_on_device ||
                    system->code() == std::errc::file_too_large);
}

// A full disk or a store that stopped answering is the machine's fault, not the run's:
// the run goes back to planned with the progress of its last good checkpoint, and the
// command ends with the cause.
[[noreturn]] void hand_back(Database& db, const RunRecord& run, int64_t checkpointed,
                            const std::string& why, bool no_space) {
  const int64_t steps = std::max(run.steps_done, checkpointed);
  std::string state = "it is back to planned with its last good checkpoint";
  try {
    db.release_run(run.claim(), steps);
  } catch (const std::exception& e) {
    // Most likely the store is on the full disk too, or the server is still away: the
    // run's owner, this process, is gone when the next train looks, so that train takes
    // the run over at once (on this host; elsewhere after --stale-after).
    state = fmt::format("it could not be handed back ({}) and is taken over by the next train",
                        one_line(e.what()));
  }
  if (no_space)
    throw std::runtime_error(
        fmt::format("no space left on device: run #{}: {}; {}: free space there (or train with "
                    "--checkpoints or --db on another file system) and train again",
                    run.id, why, state));
  throw std::runtime_error(fmt::format("run #{}: {}; {}", run.id, why, state));
}

// Trains one claimed run to an end state.
Ended train_claimed(Database& db, RunRecord run, const TrainArgs& a, int threads, Tally& tally) {
  if (!a.data.empty()) run.plan.spec.data_dir = a.data;
  try {
    read_data_meta(run.plan.spec.data_dir);  // a setup problem, not the run's fault
  } catch (...) {
    db.release_run(run.claim(), run.steps_done);
    throw;
  }
  DatabaseSink sink(db, run, with_retry(a.db_retry, [&] { return sweep_progress(db, run.sweep); }),
                    a.quiet, a.db_retry);
  TrainOptions options;
  options.device = a.device;
  options.checkpoint_dir = checkpoint_dir(a, db.path(), run);
  options.threads = threads;
  options.identity = checkpoint_identity(db, run);
  TrainResult result;
  bool lost = false;
  std::string lost_why;
  try {
    HeartbeatThread heartbeat(db.path(), run.claim(), a.stale_after);
    options.stop = heartbeat.stop_flag();
    try {
      result = train_run(run.plan.spec, options, sink);
    } catch (const LostClaim& e) {
      lost = true, lost_why = e.what();
    }
    if (heartbeat.lost()) lost = true, lost_why = heartbeat.why();
  } catch (const std::exception& e) {
    // Stop here: an error that hit one run most likely hits the next ones too.
    const std::string why = one_line(e.what());
    if (is_no_space(e)) hand_back(db, run, sink.checkpointed(), why, true);
    if (dynamic_cast<const ConnectionLost*>(&e))
      hand_back(db, run, sink.checkpointed(), why, false);
    try {
      db.finish_run(run.claim(), RunStatus::failed, std::nullopt, 0, run.steps_done, why);
    } catch (const LostClaim&) {
      lost = true;
    }
    if (!lost)
      throw std::runtime_error(fmt::format(
          "run #{} failed: {}; it is marked failed (retry with `moescale train --sweep {} "
          "--retry-failed`)",
          run.id, why, run.sweep));
  }
  for (const std::string& note : result.notes) fmt::print(stderr, "run #{}: {}\n", run.id, note);
  const int64_t trained_steps = std::max<int64_t>(0, result.steps - result.resumed_from);
  tally.flops_6nd +=
      6.0 * static_cast<double>(run.plan.params.active) * static_cast<double>(trained_steps) *
      static_cast<double>(run.plan.spec.train.tokens_per_step(run.plan.spec.shape.seq_len));
  try {
    if (lost) throw LostClaim(lost_why);
    switch (result.outcome) {
      case TrainOutcome::done:
        with_retry(a.db_retry, [&] {
          db.finish_run(run.claim(), RunStatus::done, result.final_val_loss, result.wall_seconds,
                        result.steps, "");
        });
        ++tally.trained;
        if (!a.quiet)
          fmt::print(stderr, "run #{} done: val loss {:.4f} in {}\n", run.id, result.final_val_loss,
                     human_duration(result.wall_seconds));
        return Ended::finished;
      case TrainOutcome::diverged:
        with_retry(a.db_retry, [&] {
          db.finish_run(run.claim(), RunStatus::diverged, std::nullopt, result.wall_seconds,
                        result.steps, result.message);
        });
        ++tally.trained;
        fmt::print(stderr, "run #{} diverged: {}\n", run.id, result.message);
        return Ended::finished;
      case TrainOutcome::interrupted:
        with_retry(a.db_retry, [&] { db.release_run(run.claim(), result.steps); });
        fmt::print(stderr, "run #{} interrupted at step {}; checkpoint kept, back to planned\n",
                   run.id, result.steps);
        return Ended::interrupted;
    }
  } catch (const LostClaim& e) {
    fmt::print(stderr, "run #{} stopped: {}; left to its new owner\n", run.id, e.what());
    return Ended::lost;
  }
  return Ended::finished;
}

std::string age(const RunRecord& r) {
  return r.heartbeat_age ? human_duration(*r.heartbeat_age) + " ago" : "never";
}

// Why a --run ID could not be claimed, and what to do about it.
std::string why_not_claimable(const RunRecord& r, const TrainArgs& a) {
  switch (r.status) {
    case RunStatus::running:
      return fmt::format(
          "run {} is running under {} (heartbeat {}); it is taken over once that process is gone "
          "(same host) or silent for --stale-after {:g} s",
          r.id, r.worker, age(r), a.stale_after);
    case RunStatus::failed:
      return fmt::format("run {} failed ({}); train it again with --retry-failed", r.id, r.error);
    default:
      return fmt::format("run {} is already {}; `moescale runs --sweep {}` lists the runs", r.id,
                         to_string(r.status), r.sweep);
  }
}

// The last word of a train: which runs it did not finish, and why.
void report_left(const Database& db, const TrainArgs& a, bool stopped) {
  int done = 0, planned = 0, failed = 0, diverged = 0;
  std::vector<std::string> running, stale;
  for (const RunRecord& r : db.runs(a.sweep, std::nullopt)) {
    switch (r.status) {
      case RunStatus::done: ++done; break;
      case RunStatus::planned: ++planned; break;
      case RunStatus::failed: ++failed; break;
      case RunStatus::diverged: ++diverged; break;
      case RunStatus::running:
        (r.stale(a.stale_after) ? stale : running)
            .push_back(fmt::format("#{} ({}, heartbeat {})", r.id, r.worker, age(r)));
        break;
    }
  }
  fmt::print(stderr, "sweep '{}': {} done", a.sweep, done);
  if (planned > 0)
    fmt::print(stderr, ", {} planned ({})", planned,
               stopped          ? "stopped before them"
               : a.max_runs > 0 ? "--max-runs reached"
               : a.run_id > 0   ? "only --run was asked for"
                                : "not claimable now");
  if (!running.empty())
    fmt::print(stderr, ", {} running in other processes: {}", running.size(),
               fmt::join(running, ", "));
  if (!stale.empty())
    fmt::print(stderr,
               ", {} held by workers that are gone or silent (the next train takes them over): {}",
               stale.size(), fmt::join(stale, ", "));
  if (failed > 0) fmt::print(stderr, ", {} failed (train again with --retry-failed)", failed);
  if (diverged > 0) fmt::print(stderr, ", {} diverged (kept out of fits)", diverged);
  fmt::print(stderr, "\n");
}

// "sweep: 6ND FLOP/s X, Y% of sgemm peak", the peak measured now on the same device.
void report_throughput(const Tally& tally, double seconds, const TrainArgs& a) {
  if (tally.flops_6nd <= 0 || seconds <= 0) return;
  const double achieved = tally.flops_6nd / seconds;
  std::string peak;
  try {
    const double sgemm = measure_sgemm_flops(a.device, 0);
    peak = fmt::format(", {:.3g}% of sgemm peak ({} FLOP/s on {})", 100 * achieved / sgemm,
                       sci(sgemm), resolve_device(a.device));
  } catch (const std::exception& e) {
    peak = fmt::format(" (no sgemm peak: {})", e.what());
  }
  fmt::print(stderr, "sweep: 6ND FLOP/s {}{}, over {} of training\n", sci(achieved), peak,
             human_duration(seconds));
}

// One process claiming runs until none is left. Returns its exit status.
int train_loop(const TrainArgs& a, Tally& tally) {
  Database db(default_database_path(a.db), Database::Mode::must_exist);
  db.sweep(a.sweep);         // a clear error for an unknown sweep
  resolve_device(a.device);  // and for a device this build or machine lacks
  check_data_before_claiming(db, a);
  RunOwner me = RunOwner::this_process();
  const int threads = choose_threads(a, db, me, 1);
  me.threads = threads;
  std::optional<int64_t> only;
  if (a.run_id > 0) only = a.run_id;
  int claimed = 0;
  while (a.max_runs == 0 || claimed < a.max_runs) {
    if (g_stop) return 130;
    auto run = with_retry(
        a.db_retry, [&] { return db.claim_run(a.sweep, me, only, a.stale_after, a.retry_failed); });
    if (!run) break;
    ++claimed;
    if (train_claimed(db, *run, a, threads, tally) == Ended::interrupted) return 130;
    if (only) break;
  }
  if (claimed == 0 && only) {
    const RunRecord r = db.run(*only);
    if (r.sweep != a.sweep)
      throw std::runtime_error(
          fmt::format("run {} belongs to sweep '{}', not '{}'", *only, r.sweep, a.sweep));
    throw std::runtime_error(why_not_claimable(r, a));
  }
  return 0;
}

// --workers N: N copies of this program, each claiming runs with its share of the
// cores. Separate processes rather than threads: torch's intra-op thread pool and
// the BLAS thread count are process-wide, so two runs in one process would fight
// over one pool; a process also keeps one run's crash from ending the others.
int run_workers(const TrainArgs& a, Tally& tally) {
  if (a.run_id > 0 || a.max_runs > 0)
    throw CLI::ValidationError("--workers", "cannot be combined with --run or --max-runs");
  int per_worker = a.threads;
  {
    Database db(default_database_path(a.db), Database::Mode::must_exist);
    db.sweep(a.sweep);
    resolve_device(a.device);
    check_data_before_claiming(db, a);
    if (per_worker == 0) {
      TrainArgs total = a;
      per_worker = choose_threads(total, db, RunOwner::this_process(), a.workers);
    }
  }
  fmt::print(stderr, "starting {} workers with {} thread{} each\n", a.workers, per_worker,
             per_worker == 1 ? "" : "s");
  const fs::path self = fs::read_symlink("/proc/self/exe");
  const fs::path summaries =
      fs::temp_directory_path() / fmt::format("moescale-workers-{}", getpid());
  fs::create_directories(summaries);
  std::vector<pid_t> children;
  for (int w = 0; w < a.workers; ++w) {
    std::vector<std::string> args = {self.string(),      "train",
                                     "--sweep",          a.sweep,
                                     "--device",         a.device,
                                     "--threads",        std::to_string(per_worker),
                                     "--stale-after",    fmt::format("{}", a.stale_after),
                                     "--db-retry",       fmt::format("{}", a.db_retry),
                                     "--worker-summary", (summaries / std::to_string(w)).string()};
    if (!a.db.empty()) args.insert(args.end(), {"--db", a.db});
    if (!a.data.empty()) args.insert(args.end(), {"--data", a.data});
    if (!a.checkpoints.empty()) args.insert(args.end(), {"--checkpoints", a.checkpoints});
    if (a.retry_failed) args.push_back("--retry-failed");
    if (a.quiet) args.push_back("--quiet");
    // Its own process group: Ctrl-C reaches the parent only, which forwards one SIGTERM.
    ProcessOptions own_group;
    own_group.own_process_group = true;
    children.push_back(start_process(args, own_group));
  }
  int status_out = 0;
  bool forwarded = false;
  size_t left = children.size();
  while (left > 0) {
    if (g_stop && !forwarded) {
      for (pid_t c : children) kill(c, SIGTERM);
      forwarded = true;
    }
    int status = 0;
    const pid_t done = waitpid(-1, &status, WNOHANG);
    if (done <= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    --left;
    const int code = exit_status(status);
    if (code != 0 && status_out == 0) status_out = code == 130 ? 130 : 1;
  }
  for (int w = 0; w < a.workers; ++w) {
    std::ifstream in(summaries / std::to_string(w));
    if (!in) continue;
    try {
      const auto j = nlohmann::json::parse(in);
      tally.trained += j.at("trained").get<int>();
      tally.flops_6nd += j.at("flops_6nd").get<double>();
    } catch (const std::exception&) {
    }
  }
  fs::remove_all(summaries);
  if (status_out == 1) fmt::print(stderr, "a worker stopped with an error (see above)\n");
  return status_out;
}

int run_train(const TrainArgs& a) {
  if (a.workers < 1) throw CLI::ValidationError("--workers", "must be at least 1");
  if (!(a.stale_after > 0)) throw CLI::ValidationError("--stale-after", "must be positive");
  g_worker_child = !a.summary_file.empty();
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  Tally tally;
  const auto start = Clock::now();
  int status = 0;
  try {
    status = a.workers > 1 ? run_workers(a, tally) : train_loop(a, tally);
  } catch (...) {
    if (!a.summary_file.empty()) std::ofstream(a.summary_file) << R"({"trained":0,"flops_6nd":0})";
    throw;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!a.summary_file.empty()) {
    std::ofstream(a.summary_file) << nlohmann::json{
        {"trained", tally.trained},
        {"flops_6nd", tally.flops_6nd}}.dump();
    return status;
  }
  if (!a.quiet)
    fmt::print(stderr, "trained {} run{}\n", tally.trained, tally.trained == 1 ? "" : "s");
  Database db(default_database_path(a.db), Database::Mode::read_only);
  report_left(db, a, status != 0);
  if (status == 0) report_throughput(tally, seconds, a);  // a stopped train exits at once
  return status;
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train the planned runs of a sweep, recording metrics in the database.\n"
      "Several processes may train the same sweep: each claims its own runs, and one started "
      "while others run on this host takes its share of the cores. Ctrl-C stops after a "
      "checkpoint and hands the run back; a later `train` resumes it.");
  cmd->add_option("--sweep", args->sweep, "sweep to train")->required();
  cmd->add_option("--run", args->run_id, "train only this run id");
  cmd->add_option("--device", args->device, "auto, cpu, cuda or cuda:N")->default_val("auto");
  cmd->add_option("--max-runs", args->max_runs, "stop after this many runs (0: all)")
      ->default_val(0);
  cmd->add_option("--workers", args->workers,
                  "train this many runs at once, in as many processes, splitting the cores")
      ->default_val(1);
  cmd->add_option("--data", args->data, "token folder, instead of the one the sweep names");
  cmd->add_option("--checkpoints", args->checkpoints, "checkpoint folder")
      ->default_str("checkpoints/ next to the database (in the working folder for a server)");
  cmd->add_option("--threads", args->threads,
                  "CPU threads per process (0: all cores, or a share of them when other "
                  "workers of this store train on this host)")
      ->default_val(0);
  cmd->add_option("--stale-after", args->stale_after,
                  "seconds without a heartbeat after which another host's running run is taken "
                  "over (a dead process on this host is taken over at once)")
      ->default_val(600);
  cmd->add_option("--db-retry", args->db_retry,
                  "seconds to keep trying when the connection to a PostgreSQL store is lost (a "
                  "server restart), before the run is handed back and train ends")
      ->default_val(120);
  cmd->add_option("--worker-summary", args->summary_file)->group("");  // internal, --workers
  add_db_option(cmd, args->db);
  cmd->add_flag("--retry-failed", args->retry_failed, "also train runs that failed before");
  cmd->add_flag("-q,--quiet", args->quiet, "no progress lines");
  cmd->callback([args] {
    const int status = run_train(*args);
    if (status != 0) throw CLI::RuntimeError(status);
  });
}

}  // namespace moescale::cli
