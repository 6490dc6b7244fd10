// Sweep config reader: any TOML either parses and plans, or throws
// std::invalid_argument. Accepted configs are planned (capped, so quick).
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>

#include "planner/planner.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto config = moescale::parse_sweep_config(text, "fuzz.toml");
    // Keep each input fast: the full plan of a capped config may still take seconds.
    size_t points = config.design == moescale::Design::isoflop
                        ? config.budgets.size() * config.points_per_budget
                        : config.sizes.size() * config.token_counts.size();
    if (points * config.experts.size() * config.routers.size() > 64) return 0;
    for (const auto& run : moescale::plan_sweep(config)) {
      (void)run.spec.steps();
      (void)moescale::run_spec_from_json(moescale::to_json(run.spec));
    }
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
