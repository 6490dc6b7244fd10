// moescale-train: the training half of moescale, the only program that loads
// LibTorch (see cli/main.cpp). `moescale train ...` runs it with its own
// arguments; `torch-info` (hidden) is how `moescale version` learns about
// LibTorch.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/app.h"
#include "cli/commands.h"
#include "trainer/runtime.h"

namespace {

nlohmann::ordered_json torch_info_json() {
  const moescale::TorchRuntime r = moescale::torch_runtime();
  std::vector<std::string> archs;
  std::istringstream words(r.cuda_archs);
  for (std::string arch; words >> arch;) archs.push_back(arch);
  return {{"torch", r.torch},
          {"cuda_compiled", r.cuda_compiled},
          {"cuda_archs", archs},
          {"cuda_devices", r.cuda_devices},
          {"blas", r.blas}};
}

void add_torch_info_command(CLI::App& app) {
  CLI::App* cmd =
      app.add_subcommand("torch-info", "LibTorch facts as JSON, for `moescale version`");
  cmd->group("");  // hidden: people run `moescale version`
  cmd->callback([] { std::puts(torch_info_json().dump().c_str()); });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moescale train: train the planned runs of a sweep (run as `moescale train`)."};
  app.name("moescale");
  app.require_subcommand(1);
  moescale::cli::add_train_command(app);
  add_torch_info_command(app);
  return moescale::cli::run_app(app, argc, argv);
}
