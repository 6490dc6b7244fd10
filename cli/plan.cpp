// moescale plan: turn a sweep config into planned runs in the database.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "db/db.h"
#include "planner/planner.h"

namespace moescale::cli {
namespace {

struct PlanArgs {
  std::string config, db;
  bool dry_run = false, json = false;
};

std::string plan_table(const std::vector<PlannedRun>& runs) {
  Table t({"budget", "router", "E", "k", "d", "L", "N_active", "N_total", "tokens", "steps",
           "C=6ND", "est. time"});
  for (const PlannedRun& r : runs) {
    const ModelShape& s = r.spec.shape;
    t.add({r.budget > 0 ? sci(r.budget) : "-", to_string(s.router), std::to_string(s.experts),
           std::to_string(s.top_k), std::to_string(s.d_model), std::to_string(s.n_layers),
           human_count(static_cast<double>(r.params.active)),
           human_count(static_cast<double>(r.params.total)),
           human_count(static_cast<double>(r.spec.tokens)), std::to_string(r.spec.steps()),
           sci(r.compute_6n), human_duration(r.est_seconds)});
  }
  return t.render();
}

void run_plan(const PlanArgs& a) {
  // Plan completely before touching the database: a bad config writes nothing.
  const SweepConfig config = load_sweep_config(a.config);
  const std::vector<PlannedRun> runs = plan_sweep(config);
  double compute = 0, seconds = 0;
  for (const PlannedRun& r : runs) compute += r.compute_6n, seconds += r.est_seconds;

  Database::PlanSaved saved;
  std::string db_path;
  if (!a.dry_run) {
    db_path = default_database_path(a.db);
    Database db(db_path, Database::Mode::create_if_missing);
    saved = db.save_plan(config, runs);
  }
  if (a.json) {
    nlohmann::json j{{"sweep", config.name},
                     {"runs", nlohmann::json::array()},
                     {"total_compute_6n", compute},
                     {"est_seconds", seconds},
                     {"dry_run", a.dry_run},
                     {"added", saved.added},
                     {"already_planned", saved.existing}};
    for (const PlannedRun& r : runs) j["runs"].push_back(planned_run_json(r));
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("{}", plan_table(runs));
  fmt::print("\nsweep '{}': {} runs, total compute {} FLOPs (6·N·D), estimated {} at {} FLOP/s\n",
             config.name, runs.size(), sci(compute), human_duration(seconds),
             sci(config.device_flops));
  if (a.dry_run)
    fmt::print("dry run: nothing written\n");
  else
    fmt::print("{} new runs, {} already planned, in {}\n", saved.added, saved.existing, db_path);
}

}  // namespace

void add_plan_command(CLI::App& app) {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plan", "Plan a sweep from a TOML config and record its runs in the database.");
  cmd->add_option("--config", args->config, "sweep config (see configs/)")->required();
  add_db_option(cmd, args->db);
  cmd->add_flag("--dry-run", args->dry_run, "print the plan, write nothing");
  cmd->add_flag("--json", args->json, "print JSON");
  cmd->callback([args] { run_plan(*args); });
}

}  // namespace moescale::cli
