// fit --law lr: the learning-rate law of a tuning sweep (cli/fit.cpp hands it over).
#pragma once

#include <string>

namespace moescale::cli {

struct LrFitArgs {
  std::string db, sweep;
  int bootstrap = 200;
  double noise = 0.015;  // assumed sd of log loss when the tuning sweep has no replicate seeds
  bool json = false, strict = false;
};
void run_lr_fit(const LrFitArgs& args);

}  // namespace moescale::cli
