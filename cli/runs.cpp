// moescale runs: list the runs of the database with their status.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "db/db.h"

namespace moescale::cli {
namespace {

struct RunsArgs {
  std::string db, sweep, status;
  double stale_after = 600;
  bool json = false;
};

nlohmann::json run_json(const RunRecord& r, double stale_after) {
  nlohmann::json j = planned_run_json(r.plan);
  j.update({{"id", r.id},
            {"sweep", r.sweep},
            {"key", r.key},
            {"status", to_string(r.status)},
            {"steps_done", r.steps_done},
            {"worker", r.worker},
            {"owner",
             {{"host", r.owner_host},
              {"pid", r.owner_pid},
              {"slurm", r.owner_job},
              {"threads", r.owner_threads}}},
            {"stale", r.stale(stale_after)},
            {"source", r.source},
            {"started_at", r.started_at},
            {"finished_at", r.finished_at},
            {"error", r.error}});
  j["final_loss"] = r.final_loss ? nlohmann::json(*r.final_loss) : nlohmann::json();
  j["wall_seconds"] = r.wall_seconds ? nlohmann::json(*r.wall_seconds) : nlohmann::json();
  j["heartbeat_age_s"] = r.heartbeat_age ? nlohmann::json(*r.heartbeat_age) : nlohmann::json();
  return j;
}

// "running" with its owner, or "running, STALE (...)" when the owner is gone or silent.
std::string status_cell(const RunRecord& r, double stale_after) {
  if (r.status != RunStatus::running) return to_string(r.status);
  const std::string beat = r.heartbeat_age ? human_duration(*r.heartbeat_age) : "never";
  if (r.stale(stale_after)) return fmt::format("running, STALE (heartbeat {} ago)", beat);
  return "running";
}

// The rate, and the factor of a recipe-check neighbour.
std::string lr_cell(const TrainSettings& t) {
  if (t.recipe_probe == 1) return fmt::format("{:.3g}", t.lr);
  return fmt::format("{:.3g} (x{:.3g})", t.lr, t.recipe_probe);
}

void run_runs(const RunsArgs& a) {
  Database db(default_database_path(a.db), Database::Mode::read_only);
  std::optional<std::string> sweep;
  if (!a.sweep.empty()) sweep = a.sweep;
  std::optional<RunStatus> status;
  if (!a.status.empty()) status = parse_run_status(a.status);
  const std::vector<RunRecord> runs = db.runs(sweep, status);
  if (a.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const RunRecord& r : runs) j.push_back(run_json(r, a.stale_after));
    fmt::print("{}\n", j.dump(2));
    return;
  }
  const bool any_running = std::any_of(
      runs.begin(), runs.end(), [](const RunRecord& r) { return r.status == RunStatus::running; });
  std::vector<std::string> header{"id",     "sweep", "status", "source", "router",
                                  "E",      "N_active", "tokens", "C=6ND", "lr",
                                  "steps",  "val loss", "time"};
  if (any_running) header.push_back("owner");
  Table t(header);
  int stale = 0;
  for (const RunRecord& r : runs) {
    const ModelShape& s = r.plan.spec.shape;
    stale += r.stale(a.stale_after);
    std::vector<std::string> row{std::to_string(r.id),
                                 r.sweep,
                                 status_cell(r, a.stale_after),
                                 r.status == RunStatus::done ? r.source : "",
                                 to_string(s.router),
                                 std::to_string(s.experts),
                                 human_count(static_cast<double>(r.plan.params.active)),
                                 human_count(static_cast<double>(r.plan.spec.tokens)),
                                 sci(r.plan.compute_6n),
                                 lr_cell(r.plan.spec.train),
                                 fmt::format("{}/{}", r.steps_done, r.plan.spec.steps()),
                                 r.final_loss ? fmt::format("{:.4f}", *r.final_loss) : "-",
                                 r.wall_seconds ? human_duration(*r.wall_seconds)
                                                : "~" + human_duration(r.plan.est_seconds)};
    if (any_running) row.push_back(r.status == RunStatus::running ? r.worker : "");
    t.add(std::move(row));
  }
  if (t.empty())
    fmt::print(stderr, "no runs{}\n", sweep ? " in sweep " + *sweep : "");
  else
    fmt::print("{}", t.render());
  if (stale > 0)
    fmt::print(stderr,
               "{} running run{} STALE: the worker is gone or silent for over {:g} s; the next "
               "`moescale train` takes {} over\n",
               stale, stale == 1 ? " is" : "s are", a.stale_after, stale == 1 ? "it" : "them");
}

}  // namespace

void add_runs_command(CLI::App& app) {
  auto args = std::make_shared<RunsArgs>();
  CLI::App* cmd = app.add_subcommand("runs", "List planned and finished runs.");
  add_db_option(cmd, args->db);
  cmd->add_option("--sweep", args->sweep, "only this sweep");
  cmd->add_option("--status", args->status, "only runs with this status")
      ->check(CLI::IsMember({"planned", "running", "done", "failed", "diverged"}));
  cmd->add_option("--stale-after", args->stale_after,
                  "seconds without a heartbeat after which a running run is shown as stale")
      ->default_val(600);
  cmd->add_flag("--json", args->json, "print JSON");
  cmd->callback([args] { run_runs(*args); });
}

}  // namespace moescale::cli
