// moescale train: claim planned runs one at a time, train them, record metrics.
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "db/db.h"
#include "trainer/trainer.h"

namespace moescale::cli {
namespace {

std::atomic<bool> g_stop{false};

// First Ctrl-C: finish the step, checkpoint, hand the run back. Second: default.
void on_signal(int sig) {
  g_stop = true;
  std::signal(sig, SIG_DFL);
}

struct TrainArgs {
  std::string db, sweep, device = "auto", data, checkpoints;
  int64_t run_id = 0;
  int max_runs = 0, threads = 0;
  bool quiet = false, retry_failed = false;
};

// Progress for one run, with an ETA for the run and for what is left of the sweep.
struct SweepProgress {
  int index = 0, total = 0;
  double remaining_estimate = 0;  // est. seconds of the runs after this one
};

// Connects the trainer's MetricSink to the database and prints progress.
class DatabaseSink : public MetricSink {
 public:
  DatabaseSink(Database& db, const RunRecord& run, SweepProgress progress, bool quiet)
      : db_(db), run_(run), progress_(progress), quiet_(quiet) {}

  void train_step(const TrainStepMetrics& m) override {
    nlohmann::json load = m.expert_load;
    db_.record_metric({run_.id, m.step, m.tokens, "train", m.loss, m.lr, m.aux_loss, m.tokens_per_s,
                       std::nullopt, m.elapsed_s, m.expert_load.empty() ? "" : load.dump()});
    if (!quiet_) print(m);
  }

  void eval(const EvalMetrics& m) override {
    std::optional<double> bpb;
    if (std::isfinite(m.bits_per_byte)) bpb = m.bits_per_byte;
    db_.record_metric({run_.id, m.step, m.tokens, "val", m.loss, std::nullopt, std::nullopt,
                       std::nullopt, bpb, std::nullopt, ""});
    last_val_ = m.loss;
  }

 private:
  void print(const TrainStepMetrics& m) const {
    const int64_t steps = run_.plan.spec.steps();
    const double done = static_cast<double>(m.step) / static_cast<double>(steps);
    const double run_eta = done > 0 ? m.elapsed_s * (1 - done) / done : NAN;
    // Scale the planner's estimate of the rest by how this run compares to its own.
    const double pace = done > 0 ? m.elapsed_s / (done * run_.plan.est_seconds) : 1.0;
    const double sweep_eta = run_eta + progress_.remaining_estimate * pace;
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
  double last_val_ = NAN;
};

std::string worker_name() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return fmt::format("{}:{}", host, getpid());
}

std::string checkpoint_dir(const TrainArgs& a, const std::string& db_path, const RunRecord& r) {
  namespace fs = std::filesystem;
  const fs::path root = a.checkpoints.empty() ? fs::absolute(db_path).parent_path() / "checkpoints"
                                              : fs::path(a.checkpoints);
  return (root / r.sweep / r.key).string();
}

SweepProgress sweep_progress(const Database& db, const std::string& sweep) {
  SweepProgress p;
  const auto all = db.runs(sweep, std::nullopt);
  p.total = static_cast<int>(all.size());
  int finished = 0;
  for (const RunRecord& r : all) {
    if (r.status == RunStatus::planned) p.remaining_estimate += r.plan.est_seconds;
    if (r.status != RunStatus::planned && r.status != RunStatus::running) ++finished;
  }
  p.index = finished + 1;
  return p;
}

// Trains one claimed run to an end state. Returns false when interrupted.
bool train_claimed(Database& db, RunRecord run, const TrainArgs& a) {
  if (!a.data.empty()) run.plan.spec.data_dir = a.data;
  try {
    read_data_meta(run.plan.spec.data_dir);  // a setup problem, not the run's fault
  } catch (...) {
    db.release_run(run.id, run.steps_done);
    throw;
  }
  DatabaseSink sink(db, run, sweep_progress(db, run.sweep), a.quiet);
  TrainOptions options;
  options.device = a.device;
  options.checkpoint_dir = checkpoint_dir(a, db.path(), run);
  options.stop = &g_stop;
  options.threads = a.threads;
  TrainResult result;
  try {
    result = train_run(run.plan.spec, options, sink);
  } catch (const std::exception& e) {
    // Stop here: an error that hit one run most likely hits the next ones too.
    db.finish_run(run.id, RunStatus::failed, std::nullopt, 0, run.steps_done, e.what());
    throw std::runtime_error(fmt::format(
        "run #{} failed: {}; it is marked failed (retry with `moescale train --sweep {} "
        "--retry-failed`)",
        run.id, e.what(), run.sweep));
  }
  switch (result.outcome) {
    case TrainOutcome::done:
      db.finish_run(run.id, RunStatus::done, result.final_val_loss, result.wall_seconds,
                    result.steps, "");
      if (!a.quiet)
        fmt::print(stderr, "run #{} done: val loss {:.4f} in {}\n", run.id, result.final_val_loss,
                   human_duration(result.wall_seconds));
      return true;
    case TrainOutcome::diverged:
      db.finish_run(run.id, RunStatus::diverged, std::nullopt, result.wall_seconds, result.steps,
                    result.message);
      fmt::print(stderr, "run #{} diverged: {}\n", run.id, result.message);
      return true;
    case TrainOutcome::interrupted:
      db.release_run(run.id, result.steps);
      fmt::print(stderr, "run #{} interrupted at step {}; checkpoint kept, back to planned\n",
                 run.id, result.steps);
      return false;
  }
  return true;
}

int run_train(const TrainArgs& a) {
  Database db(default_database_path(a.db), Database::Mode::must_exist);
  db.sweep(a.sweep);         // a clear error for an unknown sweep
  resolve_device(a.device);  // and for a device this build or machine lacks
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  const std::string worker = worker_name();
  std::optional<int64_t> only;
  if (a.run_id > 0) only = a.run_id;
  int trained = 0;
  while (a.max_runs == 0 || trained < a.max_runs) {
    auto run = db.claim_run(a.sweep, worker, only, 600, a.retry_failed);
    if (!run) break;
    if (!train_claimed(db, *run, a)) return 130;
    ++trained;
    if (only) break;
  }
  if (trained == 0 && only)
    throw std::runtime_error(
        fmt::format("run {} of sweep '{}' is not planned (see `moescale runs --sweep {}`)", *only,
                    a.sweep, a.sweep));
  if (!a.quiet) fmt::print(stderr, "trained {} run{}\n", trained, trained == 1 ? "" : "s");
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train the planned runs of a sweep, one at a time, recording metrics in the database.\n"
      "Several processes may train the same sweep: each claims its own runs. Ctrl-C stops after "
      "a checkpoint and hands the run back; a later `train` resumes it.");
  cmd->add_option("--sweep", args->sweep, "sweep to train")->required();
  cmd->add_option("--run", args->run_id, "train only this run id");
  cmd->add_option("--device", args->device, "auto, cpu, cuda or cuda:N")->default_val("auto");
  cmd->add_option("--max-runs", args->max_runs, "stop after this many runs (0: all)")
      ->default_val(0);
  cmd->add_option("--data", args->data, "token folder, instead of the one the sweep names");
  cmd->add_option("--checkpoints", args->checkpoints, "checkpoint folder")
      ->default_str("checkpoints/ next to the database");
  cmd->add_option("--threads", args->threads, "CPU threads (0: all cores)")->default_val(0);
  add_db_option(cmd, args->db);
  cmd->add_flag("--retry-failed", args->retry_failed, "also train runs that failed before");
  cmd->add_flag("-q,--quiet", args->quiet, "no progress lines");
  cmd->callback([args] {
    const int status = run_train(*args);
    if (status != 0) throw CLI::RuntimeError(status);
  });
}

}  // namespace moescale::cli
