// The report's learning-rate section: the rule the sweep's runs were trained with, the
// tuning plot and lr law of its tuning sweep, and the recipe check of its own points.
#pragma once

#include <string>
#include <vector>

#include "cli/plot.h"
#include "db/db.h"

namespace moescale::cli {

struct LrReport {
  std::vector<Figure> figures;  // "tuning" when the sweep's rule came from a tuning sweep
  std::string markdown;         // the section, figures referenced by name
};
LrReport lr_report(const Database& db, const std::string& sweep);

}  // namespace moescale::cli
