// The main program (moescale) loads no LibTorch; training runs in the sibling
// program moescale-train, found next to this one (see cli/main.cpp).
#pragma once

#include <string>
#include <vector>

namespace moescale::cli {

// The moescale-train next to this executable; throws, saying how to build it, if absent.
std::string trainer_path();

// Replaces this process with moescale-train, passing argv on unchanged (the git way).
[[noreturn]] void exec_trainer(char** argv);

// Runs moescale-train with `args` and returns its stdout; throws if it fails.
std::string run_trainer(const std::vector<std::string>& args);

}  // namespace moescale::cli
