// moescale db copy: move a whole store between SQLite and PostgreSQL, either way.
#include "db/db.h"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"

namespace moescale::cli {
namespace {
namespace fs = std::filesystem;

struct CopyArgs {
  std::string from, to;
  bool json = false;
};

using Copied = std::vector<std::pair<std::string, int64_t>>;

// A new SQLite file is written under a temp name and renamed when complete, so a
// failed copy leaves no half store behind; an existing (empty) file or a server
// database takes the copy in one transaction.
Copied copy_to(const Database& source, const std::string& to) {
  std::error_code ec;
  if (is_server_location(to) || (fs::exists(to, ec) && fs::file_size(to, ec) > 0)) {
    Database destination(to, Database::Mode::create_if_missing);
    return source.copy_into(destination);
  }
  const std::string temp = fmt::format("{}.copy-{}.tmp", to, getpid());
  auto remove_temp = [&] {
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) fs::remove(temp + suffix, ec);
  };
  try {
    Copied copied;
    {
      Database destination(temp, Database::Mode::create_if_missing);
      copied = source.copy_into(destination);
    }
    if (fs::exists(to, ec) && fs::file_size(to, ec) > 0)
      throw std::runtime_error(fmt::format("{} appeared while copying; nothing was copied", to));
    fs::rename(temp, to);
    return copied;
  } catch (...) {
    remove_temp();
    throw;
  }
}

void run_copy(const CopyArgs& a) {
  const std::string from = default_database_path(a.from);
  if (from == a.to)
    throw std::runtime_error(fmt::format("--from and --to both name {}; name another --to",
                                         location_for_messages(from)));
  const Database source(from, Database::Mode::read_only);
  const Copied copied = copy_to(source, a.to);
  if (a.json) {
    nlohmann::json tables = nlohmann::json::object();
    for (const auto& [table, rows] : copied) tables[table] = rows;
    fmt::print("{}\n", nlohmann::json{{"from", source.display_name()},
                                      {"to", location_for_messages(a.to)},
                                      {"store", source.store_identity()},
                                      {"rows", tables}}
                           .dump(2));
    return;
  }
  Table t({"table", "rows"});
  for (const auto& [table, rows] : copied) t.add({table, std::to_string(rows)});
  fmt::print("{}copied store {} from {} to {}\n", t.render(), source.store_identity(),
             source.display_name(), location_for_messages(a.to));
}

}  // namespace

void add_db_command(CLI::App& app) {
  auto args = std::make_shared<CopyArgs>();
  CLI::App* cmd = app.add_subcommand("db", "Manage the store itself.");
  cmd->require_subcommand(1);
  CLI::App* copy = cmd->add_subcommand(
      "copy",
      "Copy a whole store, ids and identity included, into an empty one: SQLite to PostgreSQL "
      "or back (e.g. --from moescale.db --to postgresql://me@db-host/sweeps).");
  copy->add_option("--from", args->from, "the store to copy (a SQLite file or postgresql:// URL)")
      ->default_str("$MOESCALE_DB or moescale.db");
  copy->add_option("--to", args->to,
                   "where to copy it: a new SQLite file, or an empty PostgreSQL database")
      ->required();
  copy->add_flag("--json", args->json, "print the rows copied per table as JSON");
  copy->callback([args] { run_copy(*args); });
}

}  // namespace moescale::cli
