// Small helpers shared by the subcommands: aligned tables, human-readable
// numbers, the --db option, names and JSON that several commands must agree on.
// No maths here.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "planner/planner.h"

namespace moescale::cli {

// --db PATH or URL; empty means $MOESCALE_DB or moescale.db (default_database_path).
void add_db_option(CLI::App* cmd, std::string& path);

// The group a `fit --per-group` fit is stored under, e.g. "router=topk,E=4";
// `report` finds each group's fit by this name.
std::string fit_group_name(const std::string& router, double experts);

// A planned run's shape, accounting and training settings, as `plan --json` and `runs --json`
// print it.
nlohmann::json planned_run_json(const PlannedRun& r);

// "1.23M", "45.6K", "7.1B": parameter and token counts for people.
std::string human_count(double n);
// "3.2e+15": FLOPs.
std::string sci(double x);
// "1h 02m", "3m 12s", "45s".
std::string human_duration(double seconds);

class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  bool empty() const { return rows_.empty(); }
  std::string render() const;           // right-aligns cells that look numeric
  std::string render_markdown() const;  // the same cells as a Markdown table

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace moescale::cli
