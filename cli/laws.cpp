// moescale laws: the built-in scaling laws (configs/laws.toml, compiled in).
#include <fmt/format.h>

#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "fitting/fitting.h"

namespace moescale::cli {
namespace {

std::string grid_text(const fitting::ParamGrid& g) {
  std::string values;
  for (double v : g.values) values += (values.empty() ? "" : ", ") + fmt::format("{:g}", v);
  std::string bounds;
  if (std::isfinite(g.lower) || std::isfinite(g.upper))
    bounds = fmt::format(" (kept in [{:g}, {:g}])", g.lower, g.upper);
  return fmt::format("{} in {{{}}}{}", g.name, values, bounds);
}

nlohmann::json law_json(const fitting::Law& law) {
  nlohmann::json j = {{"name", law.name},
                      {"title", law.title},
                      {"formula", law.formula},
                      {"source", law.source},
                      {"expression", law.expression},
                      {"columns", law.compiled().columns()},
                      {"grid_size", law.grid_size()}};
  j["definitions"] = nlohmann::json::object();
  for (const auto& [name, body] : law.definitions) j["definitions"][name] = body;
  j["grid"] = nlohmann::json::object();
  j["bounds"] = nlohmann::json::object();
  for (const auto& g : law.grid) {
    j["grid"][g.name] = g.values;
    if (std::isfinite(g.lower) || std::isfinite(g.upper))  // JSON has no infinity: null
      j["bounds"][g.name] = {std::isfinite(g.lower) ? nlohmann::json(g.lower) : nlohmann::json(),
                             std::isfinite(g.upper) ? nlohmann::json(g.upper) : nlohmann::json()};
  }
  j["params"] = nlohmann::json::array();
  for (const auto& r : law.reported)
    j["params"].push_back({{"name", r.name}, {"value", r.expression}});
  // The paper's coefficients, as reported parameters (null: the paper gives none).
  j["published"] = law.published.empty()
                       ? nlohmann::json()
                       : nlohmann::json(fitting::reported_values(law.reported, law.published));
  return j;
}

void print_law(const fitting::Law& law) {
  fmt::print("{}  {}\n", law.name, law.title);
  fmt::print("  formula     {}\n", law.formula);
  fmt::print("  fitted as   {}\n", law.expression);
  for (const auto& [name, body] : law.definitions)
    fmt::print("    where     {} = {}\n", name, body);
  std::string reported;
  for (const auto& r : law.reported)
    reported += (reported.empty() ? "" : ", ") +
                (r.name == r.expression ? r.name : fmt::format("{} = {}", r.name, r.expression));
  fmt::print("  reports     {}\n", reported);
  std::string grid;
  for (const auto& g : law.grid) grid += (grid.empty() ? "" : "; ") + grid_text(g);
  fmt::print("  grid        {} starting points: {}\n", law.grid_size(), grid);
  if (!law.published.empty()) {
    const auto values = fitting::reported_values(law.reported, law.published);
    std::string published;
    for (const auto& r : law.reported)  // in the law's order, not alphabetical
      published +=
          (published.empty() ? "" : ", ") + fmt::format("{} = {:.6g}", r.name, values.at(r.name));
    fmt::print("  published   {}\n", published);
  }
  fmt::print("  source      {}\n\n", law.source);
}

}  // namespace

void add_laws_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "laws",
      "List the built-in scaling laws: formula, fitted expression, parameters and starting grid. "
      "Use a name with `fit --law`, or pass your own expression there.");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "Print JSON (an array of laws) instead of text");
  cmd->callback([json] {
    const auto& laws = fitting::builtin_laws();
    if (*json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& law : laws) out.push_back(law_json(law));
      fmt::print("{}\n", out.dump(2));
      return;
    }
    for (const auto& law : laws) print_law(law);
    fmt::print(
        "Columns: N active params, NT total params, D tokens, E experts, K top-k, "
        "G granularity, C = 6 N D. Any other name in a --law expression is a parameter.\n");
  });
}

}  // namespace moescale::cli
