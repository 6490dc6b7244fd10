// moescale rm: remove a sweep (with its runs, metrics, observations and fits) or a fit.
#include <fmt/format.h>
#include <unistd.h>

#include <iostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "db/db.h"

namespace moescale::cli {
namespace {

struct RmArgs {
  std::string db, sweep;
  int64_t fit = 0;
  bool yes = false;
};

// Asks on the terminal; without one (a script, a pipe) only --yes removes anything.
void confirm(const std::string& what, bool yes) {
  if (yes) return;
  if (!isatty(STDIN_FILENO))
    throw std::runtime_error(fmt::format(
        "not removing {} without confirmation: stdin is not a terminal; pass --yes", what));
  fmt::print(stderr, "remove {}? This cannot be undone. [y/N] ", what);
  std::string answer;
  std::getline(std::cin, answer);
  if (answer != "y" && answer != "Y" && answer != "yes")
    throw std::runtime_error(fmt::format("{} kept: not confirmed", what));
}

void remove_sweep(const RmArgs& a) {
  Database db(default_database_path(a.db), Database::Mode::must_exist);
  const SweepRecord sweep = db.sweep(a.sweep);
  int running = 0, runs = 0, fits = static_cast<int>(db.fits(a.sweep).size());
  try {
    for (const RunRecord& r : db.runs(a.sweep, std::nullopt)) {
      ++runs;
      running += r.status == RunStatus::running && !r.stale(600);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "warning: {}\n", e.what());  // a broken sweep can still be removed
  }
  if (running > 0)
    fmt::print(stderr, "warning: {} run{} of sweep '{}' {} being trained right now\n", running,
               running == 1 ? "" : "s", a.sweep, running == 1 ? "is" : "are");
  confirm(fmt::format("{} sweep '{}' ({} runs, {} fits) from {}", sweep.kind, a.sweep,
                      runs > 0 ? std::to_string(runs) : "its", fits, db.display_name()),
          a.yes);
  const auto removed = db.remove_sweep(a.sweep);
  fmt::print("removed sweep '{}': {} runs, {} imported rows, {} fits\n", a.sweep, removed.runs,
             removed.observations, removed.fits);
}

void remove_fit(const RmArgs& a) {
  Database db(default_database_path(a.db), Database::Mode::must_exist);
  const FitRecord fit = db.fit(a.fit);
  confirm(fmt::format("fit {} ({} on sweep '{}', group {})", fit.id, fit.law, fit.sweep, fit.group),
          a.yes);
  db.remove_fit(a.fit);
  fmt::print("removed fit {}\n", a.fit);
}

}  // namespace

void add_rm_command(CLI::App& app) {
  auto args = std::make_shared<RmArgs>();
  CLI::App* cmd =
      app.add_subcommand("rm",
                         "Remove a sweep (its runs, metrics, imported rows and fits) or one fit.\n"
                         "Asks for confirmation unless --yes is given.");
  cmd->require_subcommand(1);
  CLI::App* sweep = cmd->add_subcommand("sweep", "remove a sweep and everything in it");
  sweep->add_option("NAME", args->sweep, "sweep name")->required();
  CLI::App* fit = cmd->add_subcommand("fit", "remove one fit");
  fit->add_option("ID", args->fit, "fit id (as `moescale fit` printed it)")->required();
  for (CLI::App* sub : {sweep, fit}) {
    add_db_option(sub, args->db);
    sub->add_flag("-y,--yes", args->yes, "do not ask");
  }
  sweep->callback([args] { remove_sweep(*args); });
  fit->callback([args] { remove_fit(*args); });
}

}  // namespace moescale::cli
