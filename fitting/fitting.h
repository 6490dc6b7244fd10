// moescale fitting: scaling-law expressions, robust multi-start fits with Ceres, bootstrap
// intervals and held-out error, CSV import of runs, diagnostics and the recommender. Plain
// C++: no torch, no SQL. Every error is a std::exception whose message says what is wrong,
// where (row, column, parameter) and, where it helps, how to fix it. One header per concern:
//   observations.h  runs as observations, CSV import, IsoFLOP budgets
//   law.h           expressions, the law catalogue, simulated losses
//   fit.h           fit_law, intervals, holdouts, run-to-run noise
//   diagnostics.h   why not to trust a fit
//   recommend.h     recommend, approach 2, plan --next's proposals
//   tuning.h        learning-rate tuning (lr*, the lr law, the recipe check)
// The serving-cost model is the planner's (planner/serving.h). This header includes them all.
#pragma once

#include "fitting/diagnostics.h"
#include "fitting/fit.h"
#include "fitting/law.h"
#include "fitting/observations.h"
#include "fitting/recommend.h"
#include "fitting/tuning.h"
