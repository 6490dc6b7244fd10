#include "cli/common.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>

namespace moescale::cli {

void add_db_option(CLI::App* cmd, std::string& path) {
  cmd->add_option("--db", path,
                  "store: a SQLite file, or a PostgreSQL server as "
                  "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
      ->default_str("$MOESCALE_DB or moescale.db");
}

std::string fit_group_name(const std::string& router, double experts) {
  return fmt::format("router={},E={:g}", router, experts);
}

nlohmann::json planned_run_json(const PlannedRun& r) {
  const ModelShape& s = r.spec.shape;
  return {{"key", r.spec.key()},
          {"router", to_string(s.router)},
          {"experts", s.experts},
          {"top_k", s.top_k},
          {"d_model", s.d_model},
          {"layers", s.n_layers},
          {"heads", s.n_heads},
          {"ffn", s.ffn_hidden},
          {"active_params", r.params.active},
          {"total_params", r.params.total},
          {"router_params", r.params.router},
          {"seed", r.spec.train.seed},
          {"tokens", r.spec.tokens},
          {"steps", r.spec.steps()},
          {"budget", r.budget},
          {"compute_6n", r.compute_6n},
          {"compute", r.compute_full},
          {"est_seconds", r.est_seconds},
          {"lr", r.spec.train.lr},
          {"lr_rule", r.spec.train.lr_rule},
          {"recipe_probe", r.spec.train.recipe_probe},
          {"batch_size", r.spec.train.batch_size},
          // Every training setting of the run, as its spec stores them.
          {"train", nlohmann::json::parse(to_json(r.spec)).at("train")}};
}

std::string human_count(double n) {
  const char* suffix[] = {"", "K", "M", "B", "T"};
  int i = 0;
  while (std::abs(n) >= 1000 && i < 4) n /= 1000, ++i;
  return i == 0 ? fmt::format("{:.0f}", n) : fmt::format("{:.3g}{}", n, suffix[i]);
}

std::string sci(double x) {
  return fmt::format("{:.3g}", x);
}

std::string human_duration(double seconds) {
  if (!std::isfinite(seconds)) return "?";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) return fmt::format("{}h {:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m {:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

namespace {
bool numeric(const std::string& cell) {
  return !cell.empty() && (std::isdigit(static_cast<unsigned char>(cell[0])) ||
                           (cell.size() > 1 && (cell[0] == '-' || cell[0] == '+') &&
                            std::isdigit(static_cast<unsigned char>(cell[1]))));
}
}  // namespace

std::string Table::render() const {
  std::vector<size_t> width(header_.size());
  for (size_t c = 0; c < header_.size(); ++c) width[c] = header_[c].size();
  for (const auto& row : rows_)
    for (size_t c = 0; c < row.size() && c < width.size(); ++c)
      width[c] = std::max(width[c], row[c].size());
  auto line = [&](const std::vector<std::string>& row, bool header) {
    std::string out;
    for (size_t c = 0; c < width.size(); ++c) {
      const std::string& cell = c < row.size() ? row[c] : std::string();
      const bool right = !header && numeric(cell);
      out += right ? fmt::format("{:>{}}", cell, width[c]) : fmt::format("{:<{}}", cell, width[c]);
      out += c + 1 < width.size() ? "  " : "";
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(header_, true);
  for (const auto& row : rows_) out += line(row, false);
  return out;
}

std::string Table::render_markdown() const {
  auto line = [&](const std::vector<std::string>& row) {
    std::string out = "|";
    for (size_t c = 0; c < header_.size(); ++c) out += " " + (c < row.size() ? row[c] : "") + " |";
    return out + "\n";
  };
  std::string out = line(header_) + "|";
  for (size_t c = 0; c < header_.size(); ++c) out += "---|";
  out += "\n";
  for (const auto& row : rows_) out += line(row);
  return out;
}

}  // namespace moescale::cli
