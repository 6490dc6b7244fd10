// moescale: plan, train, fit and recommend Mixture-of-Experts scaling sweeps.
#include <fmt/format.h>

#include <cstdio>
#include <exception>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{
      "moescale: plan compute-budgeted MoE scaling sweeps, train them, fit scaling laws and "
      "recommend how many experts, parameters and tokens to use.\n"
      "Results go to stdout (--json for machines), progress to stderr."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "moescale 0.1.0");
  using namespace moescale::cli;
  add_model_command(app);
  add_plan_command(app);
  add_runs_command(app);
  add_train_command(app);
  add_import_command(app);
  add_fit_command(app);
  add_recommend_command(app);
  add_report_command(app);
  add_data_command(app);
  add_laws_command(app);
  add_rm_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();  // a subcommand's own status, already explained on stderr
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; usage errors exit 2, like ripgrep and getopt tools.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
