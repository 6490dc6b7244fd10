// moescale import: bring runs logged elsewhere (CSV) into the database.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "db/db.h"
#include "fitting/fitting.h"

namespace moescale::cli {
namespace {

struct ImportArgs {
  std::string csv, sweep, db;
  std::vector<std::string> maps;
  bool json = false, append = false;
};

fitting::ColumnMapping parse_mapping(const std::vector<std::string>& maps) {
  fitting::ColumnMapping mapping;
  for (const std::string& m : maps) {
    const auto eq = m.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == m.size())
      throw std::invalid_argument(
          fmt::format("--map \"{}\": expected COLUMN=HEADER, e.g. --map N=\"Model Size\"", m));
    mapping[m.substr(0, eq)] = m.substr(eq + 1);
  }
  return mapping;
}

void run_import(const ImportArgs& a) {
  // Validate every row before touching the database: all or nothing.
  const fitting::ColumnMapping mapping = parse_mapping(a.maps);
  const auto observations = fitting::read_observations_csv(a.csv, mapping);
  const auto noise = fitting::replicate_noise(fitting::replicate_sets(observations));
  if (!fitting::explained_by_seeds(noise))
    fmt::print(
        stderr,
        "warning: {} points of {} appear more than once, and column \"{}\" (mapped to "
        "loss) gives them losses that spread by {:.3g} (sd of log loss), far more than a "
        "training seed explains (under {:g}): does it hold two measurements of each run? "
        "Map one loss column, or the column that tells the runs apart [replicates_disagree]\n",
        noise.sets, a.csv, mapping.at("loss"), noise.sd_log_loss, fitting::kMaxSeedNoise);
  std::vector<ObservationRecord> rows;
  for (const fitting::Observation& o : observations)
    rows.push_back({o.n_active, o.n_total > 0 ? o.n_total : o.n_active, o.tokens, o.experts,
                    o.top_k, o.granularity, o.loss, "", o.where, "imported", 0, o.budget});
  const std::string path = default_database_path(a.db);
  Database db(path, Database::Mode::create_if_missing);
  const auto saved = db.import_observations(a.sweep, a.csv, rows, a.append);
  if (a.json) {
    fmt::print("{}\n", nlohmann::json{{"sweep", a.sweep},
                                      {"rows", rows.size()},
                                      {"already_there", saved.already_there},
                                      {"db", location_for_messages(path)}}
                           .dump(2));
    return;
  }
  fmt::print("imported {} rows from {} into sweep '{}' ({})\n", rows.size(), a.csv, a.sweep,
             location_for_messages(path));
  if (saved.already_there > 0)
    fmt::print(stderr, "note: {} of them equal rows the sweep already held (--append)\n",
               saved.already_there);
}

}  // namespace

void add_import_command(CLI::App& app) {
  auto args = std::make_shared<ImportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "import",
      "Import runs logged elsewhere from a CSV file, so laws can be fitted to them.\n"
      "Every row is checked first; a bad row imports nothing.");
  cmd->add_option("--csv", args->csv, "CSV file with a header row")->required();
  cmd->add_option("--sweep", args->sweep, "name to import under (a new or imported sweep)")
      ->required();
  cmd->add_option("--map", args->maps,
                  "COLUMN=HEADER: which CSV column holds N (active params), NT (total), D "
                  "(tokens) or C (compute, D = C/(6N)), E, K, G, loss and budget (the IsoFLOP "
                  "budget each run was meant for, which groups runs into budgets as you meant "
                  "them); N, loss and D or C are required")
      ->required();
  add_db_option(cmd, args->db);
  cmd->add_flag("--append", args->append,
                "add the rows even if the sweep already holds equal ones (by default importing "
                "the same rows twice is refused)");
  cmd->add_flag("--json", args->json, "print JSON");
  cmd->callback([args] { run_import(*args); });
}

}  // namespace moescale::cli
