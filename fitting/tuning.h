// moescale tuning: the learning rate each run should train at, read from a tuning sweep (a grid
// of rates at a few anchor points), and the recipe check of any sweep (neighbours at x3 and
// x1/3 of a point's own rate). Plain C++ over final losses: no torch, no SQL.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fitting/fit.h"

namespace moescale::fitting {

// One anchor of a tuning sweep: the final losses at every rate tried (seeds as separate trials).
struct LrAnchor {
  std::string group;  // the router whose law it feeds: "dense" (E = 1), "topk", "rmoe", "hash"
  std::string label;  // for tables and messages
  double n_active = 0, tokens = 0, experts = 1;
  std::vector<std::pair<double, double>> trials;  // (lr, final loss)
};

struct LrOptimum {
  LrAnchor anchor;
  // lr*: the vertex of the parabola in log lr (loss in log) fitted by least squares to the
  // lowest rate and up to two rates either side, kept between the lowest rate's neighbours;
  // or the best rate tried when that is at an end of the grid.
  double lr = 0;
  std::optional<Interval> interval;  // bootstrap percentile interval; empty at an edge
  std::vector<double> samples;       // lr* of each bootstrap resample
  double best_tried = 0, best_loss = 0;
  std::vector<std::pair<double, double>> curve;  // (lr, seed-mean loss), by rate
  // The parabola lr* is read from, across the rates it was fitted to (empty at an edge).
  std::vector<std::pair<double, double>> fitted;
  bool at_edge = false;
};

struct LrTuningOptions {
  int bootstrap = 200;
  double confidence = 0.95;
  uint64_t seed = 1;
  // sd of log loss each resample perturbs a run by: the tuning sweep's measured replicate
  // noise where it has seeds, else an assumed one (the CLI says which).
  double noise = 0.015;
};

// Throws if the anchor has fewer than three distinct rates.
LrOptimum lr_optimum(const LrAnchor& anchor, const LrTuningOptions& options);

// log lr* = a + b log N + c log D + e log E over one group's anchors, least squares in log lr
// (fit_law with a large Huber threshold), with intervals from refits of the anchors' bootstrap
// lr*. Terms the anchors cannot tell apart are left out and named in `dropped`: D where every
// anchor has one budget (there D = C/6N, so N and D are one direction), E where it has one
// value. Anchors at an edge of the grid are left out (lr_edge says so).
struct LrLaw {
  std::string group;
  FitResult fit;                      // law "lr"; parameters a, b, c, e as kept
  std::vector<std::string> dropped;   // "D", "E" with why
  std::vector<LrOptimum> anchors;     // those fitted
  double n_min = 0, n_max = 0;        // N_active range of the fitted anchors
};
LrLaw fit_lr_law(const std::vector<LrOptimum>& anchors, const LrTuningOptions& options);
// The fitted rate of one run under the law.
double lr_law_rate(const FitResult& law, double n_active, double tokens, double experts);

// lr_edge: an anchor's lowest loss is at the smallest or largest rate of its grid.
std::vector<Diagnostic> lr_diagnostics(const std::vector<LrOptimum>& optima);

// A point of a sweep with its recipe-check neighbours: final losses at the point's own rate
// (seeds) and at factor x that rate.
struct RecipePoint {
  std::string label;
  double own_lr = 0;
  std::vector<double> own;                          // final losses, one per seed
  std::map<double, std::vector<double>> neighbours;  // factor -> final losses
};
struct RecipeVerdict {
  std::string label;
  double factor = 0, own_lr = 0;
  double own_mean = 0, neighbour_mean = 0;  // seed means of the final loss
  double difference = 0;                    // neighbour - own, nats (< 0: the neighbour is better)
  double sd = 0;                            // of the difference of seed-mean log losses
  bool untuned = false;  // the neighbour is better by more than twice that sd
};
// `noise` is the sweep's run-to-run sd of log loss.
std::vector<RecipeVerdict> recipe_check(const std::vector<RecipePoint>& points, double noise);
// recipe_untuned, one for all verdicts that say so (empty when none does).
std::vector<Diagnostic> recipe_diagnostics(const std::vector<RecipeVerdict>& verdicts);

}  // namespace moescale::fitting
