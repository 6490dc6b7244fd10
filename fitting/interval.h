// The one percentile interval of the fitting module: bootstrap intervals everywhere are these.
#pragma once

#include <vector>

#include "fitting/fitting.h"

namespace moescale::fitting {
// Percentile interval at `confidence` (linear interpolation between order statistics) and the
// standard deviation of `values`; needs at least two values.
Interval percentile_interval(std::vector<double> values, double confidence);
}  // namespace moescale::fitting
