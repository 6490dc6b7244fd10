// moescale submit: train a sweep on a Slurm cluster as a job array. Each array
// task runs `moescale train`, which claims runs from the store until none are
// left, so N tasks share the sweep however long its runs are.
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/process.h"
#include "cli/trainer_process.h"
#include "db/db.h"
#include "trainer/trainer.h"

namespace moescale::cli {
namespace {
namespace fs = std::filesystem;

// Seconds before the time limit at which Slurm sends SIGTERM: enough for the
// trainer to finish its step and write a checkpoint of a large model.
constexpr int kSignalLeadSeconds = 120;

struct SubmitArgs {
  std::string db, sweep, partition, time, device, data, checkpoints;
  std::vector<std::string> sbatch_options;
  int array = 0, gpus_per_task = 0, cpus_per_task = 0;
  bool requeue = false, retry_failed = false, dry_run = false, json = false, verbose = false;
};

// postgresql://USER:PASSWORD@HOST/… (or password=…): the script would hold the password.
bool url_has_password(const std::string& store) {
  return location_for_messages(store) != store;
}

// Single-quoted for sh: safe for any path or name.
std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// An #SBATCH value: sbatch splits directives at spaces unless the value is in double quotes.
std::string directive_value(const std::string& v) {
  return v.find_first_of(" \t") == std::string::npos ? v : "\"" + v + "\"";
}

// Runs left for the array: planned ones, running ones (their owner may be gone,
// or may hand them back) and, with --retry-failed, failed ones.
int runs_left(const Database& db, const SubmitArgs& a, std::set<std::string>& data_dirs) {
  int left = 0;
  for (const RunRecord& r : db.runs(a.sweep, std::nullopt)) {
    const bool todo = r.status == RunStatus::planned || r.status == RunStatus::running ||
                      (a.retry_failed && r.status == RunStatus::failed);
    if (!todo) continue;
    ++left;
    data_dirs.insert(a.data.empty() ? r.plan.spec.data_dir : a.data);
  }
  return left;
}

// Where the script and the task logs go: a slurm/ folder next to the store, or
// in the current folder for a server store.
fs::path slurm_folder(const std::string& store) {
  return (is_server_location(store) ? fs::current_path() : fs::absolute(store).parent_path()) /
         "slurm";
}

std::string sbatch_script(const SubmitArgs& a, const std::string& store, const fs::path& folder) {
  const std::string moescale = fs::read_symlink("/proc/self/exe").string();
  std::string s = fmt::format(
      "#!/bin/bash\n"
      "# Written by `moescale submit`: trains sweep '{0}' as a Slurm job array. Each task\n"
      "# claims planned runs from the store and trains them until none are left. Slurm's\n"
      "# SIGTERM (scancel, preemption, or {1} s before the time limit) makes it checkpoint\n"
      "# its run and hand it back to the store, where a later task or `moescale train`\n"
      "# resumes it.\n"
      "#SBATCH --job-name={2}\n"
      "#SBATCH --array=0-{3}\n"
      "#SBATCH --ntasks=1\n"
      "#SBATCH --output={4}\n"
      "#SBATCH --chdir={5}\n"
      "#SBATCH --signal=B:TERM@{1}\n"
      "#SBATCH --{6}requeue\n",
      a.sweep, kSignalLeadSeconds, "moescale-" + a.sweep, a.array - 1,
      directive_value((folder / fmt::format("{}-%A_%a.log", a.sweep)).string()),
      directive_value(fs::current_path().string()), a.requeue ? "" : "no-");
  if (a.cpus_per_task > 0) s += fmt::format("#SBATCH --cpus-per-task={}\n", a.cpus_per_task);
  if (a.gpus_per_task > 0) s += fmt::format("#SBATCH --gpus-per-task={}\n", a.gpus_per_task);
  if (!a.partition.empty()) s += fmt::format("#SBATCH --partition={}\n", a.partition);
  if (!a.time.empty()) s += fmt::format("#SBATCH --time={}\n", a.time);
  for (const std::string& option : a.sbatch_options) s += fmt::format("#SBATCH {}\n", option);
  s += "\n# One trainer thread per CPU Slurm gave the task.\n"
       "threads=\"${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}\"\n"
       "# exec: the trainer is the batch shell, so Slurm's signals reach it directly.\n";
  s += fmt::format("exec {} train --sweep {} --db {} --threads \"$threads\"", quote(moescale),
                   quote(a.sweep), quote(store));
  if (!a.device.empty()) s += " --device " + quote(a.device);
  if (!a.data.empty()) s += " --data " + quote(fs::absolute(a.data).string());
  // A server store has no folder of its own: keep the checkpoints where the tasks start.
  const std::string checkpoints = !a.checkpoints.empty() ? fs::absolute(a.checkpoints).string()
                                  : is_server_location(store)
                                      ? (fs::current_path() / "checkpoints").string()
                                      : "";
  if (!checkpoints.empty()) s += " --checkpoints " + quote(checkpoints);
  if (a.retry_failed) s += " --retry-failed";
  return s + "\n";
}

// Writes the script under a new name in `folder` (temp name, then rename).
fs::path save_script(const std::string& script, const std::string& sweep, const fs::path& folder,
                     bool secret) {
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec)
    throw std::runtime_error(fmt::format(
        "cannot create {} for the sbatch script and the tasks' logs: {}; make the folder of the "
        "store writable and remove any file named slurm there",
        folder.string(), ec.message()));
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &utc);
  fs::path path = folder / fmt::format("{}-{}.sbatch", sweep, stamp);
  for (int n = 2; fs::exists(path); ++n)
    path = folder / fmt::format("{}-{}-{}.sbatch", sweep, stamp, n);
  const fs::path tmp = path.string() + fmt::format(".tmp.{}", getpid());
  {
    std::ofstream out(tmp, std::ios::binary);
    if (secret) fs::permissions(tmp, fs::perms::owner_read | fs::perms::owner_write);
    out << script;
    if (!out.flush())
      throw std::runtime_error(
          fmt::format("cannot write {}: check the folder is writable", tmp.string()));
  }
  fs::rename(tmp, path);
  return path;
}

// The program's full path when it is on PATH, else empty.
std::string find_on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    const fs::path candidate = fs::path(dirs.substr(start, end - start)) / program;
    if (end > start && access(candidate.c_str(), X_OK) == 0) return candidate.string();
    start = end + 1;
  }
  return "";
}

std::string trimmed(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.erase(0, 1);
  return s;
}

// "123" from `sbatch --parsable`, which prints "JOBID" or "JOBID;CLUSTER".
std::string submit_script(const fs::path& script) {
  const std::string sbatch = find_on_path("sbatch");
  const ProcessResult c = run_process({sbatch, "--parsable", script.string()});
  const std::string id = trimmed(c.out.substr(0, c.out.find(';')));
  if (c.status != 0 || id.empty() || id.find_first_not_of("0123456789") != std::string::npos)
    throw std::runtime_error(fmt::format(
        "sbatch refused {} (exit status {}): {}; fix the options or the cluster and submit again "
        "(the script is kept: `sbatch {}` submits it as is)",
        script.string(), c.status, trimmed(c.err.empty() ? c.out : c.err), script.string()));
  return id;
}

// Seconds in a Slurm time limit (0 for UNLIMITED), or empty when it is not one of
// Slurm's forms.
std::optional<long> time_limit_seconds(const std::string& text) {
  if (text == "UNLIMITED" || text == "INFINITE") return 0;
  const size_t dash = text.find('-');
  const bool days = dash != std::string::npos;
  std::vector<long> fields;
  for (size_t start = days ? dash + 1 : 0;;) {
    const size_t end = std::min(text.find(':', start), text.size());
    const std::string field = text.substr(start, end - start);
    if (field.empty() || field.size() > 6 ||
        field.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
    fields.push_back(std::stol(field));
    if (end == text.size()) break;
    start = end + 1;
  }
  const std::string day_text = days ? text.substr(0, dash) : "0";
  if (fields.size() > 3 || day_text.empty() || day_text.size() > 4 ||
      day_text.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  // Without days the first field is minutes unless all three are given; with days, hours.
  static const long kUnits[2][3][3] = {{{60}, {60, 1}, {3600, 60, 1}},
                                       {{3600}, {3600, 60}, {3600, 60, 1}}};
  long seconds = std::stol(day_text) * 86400;
  for (size_t i = 0; i < fields.size(); ++i)
    seconds += fields[i] * kUnits[days][fields.size() - 1][i];
  return seconds;
}

void check_options(const SubmitArgs& a) {
  if (a.array < 1) throw CLI::ValidationError("--array", "must be at least 1");
  if (a.cpus_per_task < 0) throw CLI::ValidationError("--cpus-per-task", "must be positive");
  if (a.gpus_per_task < 0) throw CLI::ValidationError("--gpus-per-task", "must be positive");
  if (!a.time.empty() && !time_limit_seconds(a.time))
    throw CLI::ValidationError(
        "--time",
        "use one of Slurm's forms: MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS, "
        "DAYS-HOURS, DAYS-HOURS:MINUTES, DAYS-HOURS:MINUTES:SECONDS or UNLIMITED");
  for (const std::string& option : a.sbatch_options)
    if (option.rfind("--", 0) != 0 || option.find('\n') != std::string::npos)
      throw CLI::ValidationError("--sbatch", "takes one sbatch option, e.g. --sbatch=--account=ml");
}

// Warnings for data the tasks will not find and for a store only one host can share.
void warn_before_submitting(const SubmitArgs& a, const std::string& store, int left,
                            const std::set<std::string>& data_dirs) {
  for (const std::string& dir : data_dirs) {
    try {
      read_data_meta(dir);
    } catch (const std::exception& e) {
      fmt::print(stderr, "warning: the tasks will run in {} and may not find their data: {}\n",
                 fs::current_path().string(), e.what());
    }
  }
  if (url_has_password(store))
    fmt::print(stderr,
               "warning: the store URL holds a password, and the script (readable only by you) "
               "holds the URL; a ~/.pgpass file or PGPASSWORD keeps it out of both\n");
  if (!is_server_location(store))
    fmt::print(stderr,
               "warning: the store {} is a SQLite file: every task must run on this host or on "
               "a filesystem where SQLite's locks work (not NFS); for many machines use a "
               "PostgreSQL store (--db postgresql://… or MOESCALE_DB)\n",
               store);
  if (const auto limit = a.time.empty() ? std::nullopt : time_limit_seconds(a.time);
      limit && *limit > 0 && *limit <= 2 * kSignalLeadSeconds)
    fmt::print(stderr,
               "warning: --time {} leaves little training: each task is asked to stop {} s "
               "before its limit\n",
               a.time, kSignalLeadSeconds);
  if (a.array > left)
    fmt::print(stderr, "warning: {} tasks for {} run{} left: {} will find nothing to train\n",
               a.array, left, left == 1 ? "" : "s", a.array - left);
}

void run_submit(const SubmitArgs& a) {
  check_options(a);
  const std::string named = default_database_path(a.db);
  const std::string store = is_server_location(named) ? named : fs::absolute(named).string();
  std::set<std::string> data_dirs;
  int left = 0;
  {
    Database db(store, Database::Mode::read_only);
    db.sweep(a.sweep);  // a clear error for an unknown sweep
    left = runs_left(db, a, data_dirs);
  }
  if (left == 0)
    throw std::runtime_error(fmt::format(
        "sweep '{}' has no runs left to train{}; `moescale runs --sweep {}` lists them", a.sweep,
        a.retry_failed ? "" : " (failed runs are trained again with --retry-failed)", a.sweep));
  trainer_path();  // the tasks exec moescale-train: fail here, not in every task
  if (!a.dry_run && find_on_path("sbatch").empty())
    throw std::runtime_error(
        "sbatch not found on PATH: submitting needs Slurm's client commands on this machine "
        "(Debian: slurm-client); --dry-run writes and prints the script without submitting");
  warn_before_submitting(a, store, left, data_dirs);
  const fs::path folder = slurm_folder(store);
  const std::string script = sbatch_script(a, store, folder);
  const fs::path path = save_script(script, a.sweep, folder, url_has_password(store));
  if (a.dry_run) {
    // The file, readable only by its owner, keeps what the tasks need; a terminal, a log
    // or a pasted output must not show the password.
    const std::string shown = redact_location(script, store);
    if (a.json)
      fmt::print(
          "{}\n",
          nlohmann::json{
              {"script", path.string()}, {"text", shown}, {"tasks", a.array}, {"runs_left", left}}
              .dump());
    else
      fmt::print("{}", shown);
    fmt::print(stderr,
               "dry run: script written to {}, nothing submitted (`sbatch {}` submits it)\n",
               path.string(), path.string());
    return;
  }
  const std::string job = submit_script(path);
  const std::string logs = (folder / fmt::format("{}-{}_*.log", a.sweep, job)).string();
  if (a.json)
    fmt::print("{}\n", nlohmann::json{{"job_id", job},
                                      {"script", path.string()},
                                      {"logs", logs},
                                      {"tasks", a.array},
                                      {"runs_left", left}}
                           .dump());
  else
    fmt::print("{}\n", job);
  if (!a.verbose) return;
  // The store as the user named it, without a URL's password.
  const std::string db_flag =
      a.db.empty() ? "" : " --db " + (url_has_password(store) ? "URL" : quote(a.db));
  fmt::print(stderr,
             "submitted job {} ({} task{}) for sweep '{}', {} run{} left; logs: {}; follow with "
             "`squeue -j {}` and `moescale runs --sweep {}{}`\n",
             job, a.array, a.array == 1 ? "" : "s", a.sweep, left, left == 1 ? "" : "s", logs, job,
             a.sweep, db_flag);
}

}  // namespace

void add_submit_command(CLI::App& app) {
  auto args = std::make_shared<SubmitArgs>();
  CLI::App* cmd = app.add_subcommand(
      "submit",
      "Train a sweep on a Slurm cluster: submits a job array whose tasks each run `moescale "
      "train`, claiming runs until none are left. The sbatch script is kept in slurm/ next to "
      "the store, with the tasks' logs. Slurm's SIGTERM (scancel, preemption, "
      "the time limit near) checkpoints a task's run and hands it back. Prints the job id.");
  cmd->add_option("--sweep", args->sweep, "sweep to train")->required();
  cmd->add_option("--array", args->array, "number of array tasks (runs trained at once)")
      ->required();
  cmd->add_option("--partition", args->partition, "Slurm partition");
  cmd->add_option("--gpus-per-task", args->gpus_per_task, "GPUs per task");
  cmd->add_option("--cpus-per-task", args->cpus_per_task,
                  "CPUs per task; the trainer uses that many threads");
  cmd->add_option("--time", args->time,
                  "time limit per task (MINUTES, HH:MM:SS, D-HH:MM:SS); SIGTERM comes 120 s "
                  "before it");
  cmd->add_flag("--requeue", args->requeue,
                "let Slurm requeue a task that is preempted or whose node fails");
  cmd->add_option("--device", args->device, "training device (default: the trainer's auto)");
  cmd->add_option("--data", args->data, "token folder, instead of the one the sweep names");
  cmd->add_option("--checkpoints", args->checkpoints,
                  "checkpoint folder every task can reach (default: checkpoints/ next to the "
                  "database)");
  cmd->add_option("--sbatch", args->sbatch_options,
                  "extra sbatch option for the script, e.g. --sbatch=--account=ml (repeatable)");
  cmd->add_flag("--retry-failed", args->retry_failed, "also train runs that failed before");
  cmd->add_flag("--dry-run", args->dry_run, "write and print the script, submit nothing");
  add_db_option(cmd, args->db);
  cmd->add_flag("--json", args->json, "print the job id and script path as JSON");
  cmd->add_flag("-v,--verbose", args->verbose,
                "also say on stderr where the tasks' logs go and how to follow the job");
  cmd->callback([args] { run_submit(*args); });
}

}  // namespace moescale::cli
