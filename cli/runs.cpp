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
  bool json = false;
};

nlohmann::json run_json(const RunRecord& r) {
  nlohmann::json j = planned_run_json(r.plan);
  j.update({{"id", r.id},
            {"sweep", r.sweep},
            {"key", r.key},
            {"status", to_string(r.status)},
            {"source", r.source},
            {"steps_done", r.steps_done},
            {"worker", r.worker},
            {"started_at", r.started_at},
            {"finished_at", r.finished_at},
            {"error", r.error}});
  j["final_loss"] = r.final_loss ? nlohmann::json(*r.final_loss) : nlohmann::json();
  j["wall_seconds"] = r.wall_seconds ? nlohmann::json(*r.wall_seconds) : nlohmann::json();
  return j;
}

void run_runs(const RunsArgs& a) {
  Database db(default_database_path(a.db), Database::Mode::must_exist);
  std::optional<std::string> sweep;
  if (!a.sweep.empty()) sweep = a.sweep;
  std::optional<RunStatus> status;
  if (!a.status.empty()) status = parse_run_status(a.status);
  const std::vector<RunRecord> runs = db.runs(sweep, status);
  if (a.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const RunRecord& r : runs) j.push_back(run_json(r));
    fmt::print("{}\n", j.dump(2));
    return;
  }
  Table t({"id", "sweep", "status", "source", "router", "E", "N_active", "tokens", "C=6ND", "steps",
           "val loss", "time"});
  for (const RunRecord& r : runs) {
    const ModelShape& s = r.plan.spec.shape;
    t.add({std::to_string(r.id), r.sweep, to_string(r.status),
           r.status == RunStatus::done ? r.source : "", to_string(s.router),
           std::to_string(s.experts), human_count(static_cast<double>(r.plan.params.active)),
           human_count(static_cast<double>(r.plan.spec.tokens)), sci(r.plan.compute_6n),
           fmt::format("{}/{}", r.steps_done, r.plan.spec.steps()),
           r.final_loss ? fmt::format("{:.4f}", *r.final_loss) : "-",
           r.wall_seconds ? human_duration(*r.wall_seconds)
                          : "~" + human_duration(r.plan.est_seconds)});
  }
  if (t.empty())
    fmt::print(stderr, "no runs{}\n", sweep ? " in sweep " + *sweep : "");
  else
    fmt::print("{}", t.render());
}

}  // namespace

void add_runs_command(CLI::App& app) {
  auto args = std::make_shared<RunsArgs>();
  CLI::App* cmd = app.add_subcommand("runs", "List planned and finished runs.");
  add_db_option(cmd, args->db);
  cmd->add_option("--sweep", args->sweep, "only this sweep");
  cmd->add_option("--status", args->status, "only runs with this status")
      ->check(CLI::IsMember({"planned", "running", "done", "failed", "diverged"}));
  cmd->add_flag("--json", args->json, "print JSON");
  cmd->callback([args] { run_runs(*args); });
}

}  // namespace moescale::cli
