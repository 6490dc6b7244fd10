// moescale: plan, train, fit and recommend Mixture-of-Experts scaling sweeps.
//
// Two programs, so that only training pays for LibTorch. Loading LibTorch
// (and, in a CUDA build, the CUDA libraries) costs 0.3 s to several seconds at
// every start, while planning, fitting and querying need none of it:
//  - moescale (this program) links no LibTorch and starts in milliseconds;
//  - moescale-train (cli/train_main.cpp), installed next to it, holds the
//    trainer. `moescale train ...` replaces this process with it (execv, the
//    way git runs git-foo), passing the same arguments, so signals, exit
//    status and output are the trainer's own. `moescale version` asks it, in a
//    child process, what LibTorch offers (CUDA, visible GPUs, BLAS).
// The build puts both in the same folder (cli/CMakeLists.txt).
#include <fmt/format.h>

#include <cstring>
#include <exception>

#include "cli/app.h"
#include "cli/commands.h"
#include "cli/trainer_process.h"

namespace {

// Listed here for --help; the trainer program parses its options.
void add_train_entry(CLI::App& app) {
  app.add_subcommand("train",
                     "Train the planned runs of a sweep, one at a time, recording metrics in the "
                     "database (see `moescale train --help`).");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "train") == 0) {
    try {
      moescale::cli::exec_trainer(argv);
    } catch (const std::exception& e) {
      fmt::print(stderr, "error: {}\n", e.what());
      return 1;
    }
  }
  CLI::App app{
      "moescale: plan compute-budgeted MoE scaling sweeps, train them, fit scaling laws and "
      "recommend how many experts, parameters and tokens to use.\n"
      "Results go to stdout (--json for machines), progress to stderr."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "moescale " MOESCALE_VERSION);
  using namespace moescale::cli;
  add_model_command(app);
  add_plan_command(app);
  add_runs_command(app);
  add_train_entry(app);
  add_submit_command(app);
  add_import_command(app);
  add_fit_command(app);
  add_recommend_command(app);
  add_report_command(app);
  add_data_command(app);
  add_laws_command(app);
  add_rm_command(app);
  add_db_command(app);
  add_simulate_command(app);
  add_version_command(app);
  return run_app(app, argc, argv);
}
