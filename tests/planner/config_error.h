// What parse_sweep_config says about a config, for tests that check its messages.
#pragma once

#include <stdexcept>
#include <string>

#include "planner/planner.h"

namespace moescale {

// The message of the std::invalid_argument the config draws; "" when it parses.
inline std::string config_error(const std::string& text) {
  try {
    parse_sweep_config(text, "cfg.toml");
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

}  // namespace moescale
