// One function per subcommand: each adds its subcommand to the app. The
// subcommand's callback does the work and throws on errors (main prints them).
// `train` is built into moescale-train, the others into moescale (cli/main.cpp).
#pragma once

#include <CLI/CLI.hpp>

namespace moescale::cli {

void add_model_command(CLI::App& app);
void add_plan_command(CLI::App& app);
void add_runs_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_import_command(CLI::App& app);
void add_fit_command(CLI::App& app);
void add_recommend_command(CLI::App& app);
void add_report_command(CLI::App& app);
void add_data_command(CLI::App& app);
void add_laws_command(CLI::App& app);
void add_version_command(CLI::App& app);
void add_simulate_command(CLI::App& app);
void add_rm_command(CLI::App& app);
void add_db_command(CLI::App& app);
void add_submit_command(CLI::App& app);

}  // namespace moescale::cli
