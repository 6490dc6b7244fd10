// Starting other programs (sbatch, moescale-train, training workers, gnuplot): one
// helper, with an argv array and no shell in between, so that a `$(…)`, a backtick or a
// `$VAR` in a path the user gave is passed on as it is, never run or expanded.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace moescale::cli {

struct ProcessOptions {
  std::string working_dir;         // empty: this process's
  bool capture_stderr = true;      // false: the child writes to this process's stderr
  bool own_process_group = false;  // a terminal's Ctrl-C then reaches only this process
};

struct ProcessResult {
  int status = -1;  // the exit status, or 128 + the signal that ended it
  std::string out, err;
};

// Runs argv[0] (found on PATH when it has no '/') with argv, waits for it and returns
// its status and captured output. Throws only when it cannot be started.
ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& options = {});

// Starts argv[0] sharing this process's outputs and returns its pid without waiting;
// wait_process reaps it.
pid_t start_process(const std::vector<std::string>& argv, const ProcessOptions& options = {});
// The exit status (or 128 + signal) of a waitpid status.
int exit_status(int wait_status);

}  // namespace moescale::cli
