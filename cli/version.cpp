// moescale version: this build and the LibTorch its trainer runs on.
#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/trainer_process.h"

namespace moescale::cli {
namespace {

std::string text(const nlohmann::ordered_json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_array()) {
    std::string out;
    for (const auto& v : value) out += (out.empty() ? "" : " ") + text(v);
    return out.empty() ? "-" : out;
  }
  return value.dump();
}

}  // namespace

void add_version_command(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "version",
      "Show this build: moescale's version, the LibTorch the trainer uses, whether it can train "
      "on CUDA, the GPUs visible now and the CPU BLAS (asks moescale-train, so it loads "
      "LibTorch; `--version` does not).");
  cmd->add_flag("--json", *json, "one JSON object");
  cmd->callback([json] {
    nlohmann::ordered_json info = {{"version", MOESCALE_VERSION}};
    info.update(nlohmann::ordered_json::parse(run_trainer({"torch-info"})));
    if (*json) {
      fmt::print("{}\n", info.dump(2));
      return;
    }
    for (const auto& [key, value] : info.items()) fmt::print("{:<14} {}\n", key, text(value));
  });
}

}  // namespace moescale::cli
