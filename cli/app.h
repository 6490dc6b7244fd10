// Parsing and error reporting shared by the two programs, moescale and
// moescale-train: results on stdout, `error: ...` on stderr, exit 0 on success,
// 1 on errors, 2 on usage errors, a subcommand's own status otherwise.
#pragma once

#include <CLI/CLI.hpp>

namespace moescale::cli {

int run_app(CLI::App& app, int argc, char** argv);

}  // namespace moescale::cli
