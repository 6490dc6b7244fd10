#include "cli/app.h"

#include <fmt/format.h>

#include <cstdio>
#include <exception>

namespace moescale::cli {

int run_app(CLI::App& app, int argc, char** argv) {
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

}  // namespace moescale::cli
