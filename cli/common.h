// Small output helpers shared by the subcommands: aligned tables and
// human-readable numbers. No maths here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moescale::cli {

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
  std::string render() const;  // right-aligns cells that look numeric

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace moescale::cli
