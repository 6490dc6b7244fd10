// Learning-rate tuning: lr* per anchor, the lr law across anchors, and the recipe check.
#include "fitting/tuning.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <stdexcept>

#include "fitting/diagnostics.h"
#include "planner/stable_random.h"

namespace moescale::fitting {

namespace {

// One rate of an anchor's grid: log lr, the seed-mean log loss and the seeds behind it.
struct RatePoint {
  double lr = 0, x = 0, y = 0;  // x = log lr
  int n = 0;
};

std::vector<RatePoint> rate_points(const LrAnchor& a) {
  std::map<double, std::vector<double>> by_rate;
  for (auto [lr, loss] : a.trials) {
    // A diverged run is a trial at +inf: its rate is too high, and still part of the grid.
    if (!(lr > 0) || !(loss > 0) || std::isnan(loss))
      throw std::invalid_argument(
          fmt::format("{}: a trial at lr {:g} has loss {:g}; only finished runs with a positive "
                      "loss can be tuned on",
                      a.label, lr, loss));
    by_rate[lr].push_back(std::log(loss));
  }
  std::vector<RatePoint> out;
  for (const auto& [lr, logs] : by_rate) {
    double mean = 0;
    for (double y : logs) mean += y / static_cast<double>(logs.size());
    out.push_back({lr, std::log(lr), mean, static_cast<int>(logs.size())});
  }
  return out;
}

std::size_t lowest(const std::vector<RatePoint>& p) {
  return static_cast<std::size_t>(
      std::min_element(p.begin(), p.end(),
                       [](const RatePoint& a, const RatePoint& b) { return a.y < b.y; }) -
      p.begin());
}

// The window a parabola is fitted to: the lowest point and up to two finite neighbours on
// each side. Three points leave no residual, so one noisy run moved lr* by the whole grid
// step; five average that out while staying near the minimum, where a parabola in log lr
// describes the curve.
struct Window {
  std::size_t lo = 0, hi = 0;  // inclusive
};

Window window(const std::vector<RatePoint>& p, std::size_t i) {
  Window w{i, i};
  for (int step = 0; step < 2; ++step) {
    if (w.lo > 0 && std::isfinite(p[w.lo - 1].y)) --w.lo;
    if (w.hi + 1 < p.size() && std::isfinite(p[w.hi + 1].y)) ++w.hi;
  }
  return w;
}

// y = c0 + c1 x + c2 x^2 by least squares, each rate weighted by its seeds; x centred on the
// lowest point for a well-conditioned solve.
struct Quadratic {
  double x0 = 0, c0 = 0, c1 = 0, c2 = 0;
  double at(double x) const { return c0 + c1 * (x - x0) + c2 * (x - x0) * (x - x0); }
};

Quadratic least_squares(const std::vector<RatePoint>& p, Window w, double x0) {
  double s[5] = {0, 0, 0, 0, 0}, t[3] = {0, 0, 0};
  for (std::size_t k = w.lo; k <= w.hi; ++k) {
    const double x = p[k].x - x0, wt = p[k].n;
    double xp = 1;
    for (int j = 0; j < 5; ++j, xp *= x) {
      s[j] += wt * xp;
      if (j < 3) t[j] += wt * xp * p[k].y;
    }
  }
  // The 3x3 normal equations [s0 s1 s2; s1 s2 s3; s2 s3 s4] c = t, by Cramer's rule.
  auto det = [](double a, double b, double c, double d, double e, double f, double g, double h,
                double i) { return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g); };
  const double m = det(s[0], s[1], s[2], s[1], s[2], s[3], s[2], s[3], s[4]);
  Quadratic q{x0};
  q.c0 = det(t[0], s[1], s[2], t[1], s[2], s[3], t[2], s[3], s[4]) / m;
  q.c1 = det(s[0], t[0], s[2], s[1], t[1], s[3], s[2], t[2], s[4]) / m;
  q.c2 = det(s[0], s[1], t[0], s[1], s[2], t[1], s[2], s[3], t[2]) / m;
  return q;
}

bool inside(const std::vector<RatePoint>& p, std::size_t i) {
  return i > 0 && i + 1 < p.size() && std::isfinite(p[i - 1].y) && std::isfinite(p[i + 1].y);
}

// The parabola fitted around the lowest point, sampled across its window, as (lr, loss).
std::vector<std::pair<double, double>> parabola(const std::vector<RatePoint>& p) {
  const std::size_t i = lowest(p);
  if (!inside(p, i)) return {};
  const Window w = window(p, i);
  const Quadratic q = least_squares(p, w, p[i].x);
  if (!(q.c2 > 0)) return {};
  std::vector<std::pair<double, double>> out;
  for (int k = 0; k <= 20; ++k) {
    const double x = p[w.lo].x + (p[w.hi].x - p[w.lo].x) * k / 20.0;
    out.push_back({std::exp(x), std::exp(q.at(x))});
  }
  return out;
}

// log lr* from the rates: at an edge the edge itself (the optimum is beyond the grid, and a
// vertex there would be extrapolated); inside, the vertex of the parabola fitted around the
// lowest point, kept between the lowest point's neighbours (a vertex further out is a
// noise-driven extrapolation of a flat curve).
double log_optimum(const std::vector<RatePoint>& p) {
  const std::size_t i = lowest(p);
  if (i == 0 || i + 1 == p.size()) return p[i].x;
  if (!inside(p, i)) return p[i].x;  // a diverged neighbour
  const Quadratic q = least_squares(p, window(p, i), p[i].x);
  if (!(q.c2 > 0)) return p[i].x;  // ties: a flat bottom
  return std::clamp(q.x0 - q.c1 / (2 * q.c2), p[i - 1].x, p[i + 1].x);
}

}  // namespace

LrOptimum lr_optimum(const LrAnchor& anchor, const LrTuningOptions& o) {
  const std::vector<RatePoint> points = rate_points(anchor);
  if (points.size() < 3)
    throw std::invalid_argument(
        fmt::format("{}: {} distinct learning rates finished; lr* needs at least 3 (the tuning "
                    "grid has 5-7: train the rest)",
                    anchor.label, points.size()));
  LrOptimum out;
  out.anchor = anchor;
  for (const RatePoint& p : points) out.curve.push_back({p.lr, std::exp(p.y)});
  const std::size_t best = lowest(points);
  out.best_tried = points[best].lr;
  out.best_loss = std::exp(points[best].y);
  out.at_edge = best == 0 || best + 1 == points.size();
  const double x = log_optimum(points);
  out.lr = x == points[best].x ? points[best].lr : std::exp(x);
  out.fitted = parabola(points);
  if (o.bootstrap < 2) return out;
  // Each anchor draws its own noise: shared draws would move every lr* together and make the
  // law's exponents look certain.
  std::seed_seq seq{o.seed, static_cast<uint64_t>(anchor.n_active),
                    static_cast<uint64_t>(anchor.tokens), static_cast<uint64_t>(anchor.experts),
                    fnv1a(anchor.group)};
  std::mt19937_64 rng(seq);
  std::normal_distribution<double> z;
  for (int b = 0; b < o.bootstrap; ++b) {
    std::vector<RatePoint> drawn = points;
    for (RatePoint& p : drawn) p.y += o.noise / std::sqrt(static_cast<double>(p.n)) * z(rng);
    out.samples.push_back(std::exp(log_optimum(drawn)));
  }
  if (!out.at_edge) out.interval = percentile_interval(out.samples, o.confidence);
  return out;
}

namespace {

bool spans(const std::vector<LrOptimum>& a, double LrAnchor::*field, double factor) {
  double lo = INFINITY, hi = 0;
  for (const LrOptimum& o : a) lo = std::min(lo, o.anchor.*field), hi = std::max(hi, o.anchor.*field);
  return hi > factor * lo;
}

// Anchors of one budget have D = C/(6N): log D is a function of log N.
bool one_budget(const std::vector<LrOptimum>& a) {
  double lo = INFINITY, hi = 0;
  for (const LrOptimum& o : a) {
    const double c = o.anchor.n_active * o.anchor.tokens;
    lo = std::min(lo, c), hi = std::max(hi, c);
  }
  return hi < 1.5 * lo;
}

Observation lr_observation(const LrOptimum& o, double lr) {
  Observation x;
  x.n_active = x.n_total = o.anchor.n_active;
  x.tokens = o.anchor.tokens;
  x.experts = o.anchor.experts;
  x.loss = lr;
  x.where = o.anchor.label;
  return x;
}

Law lr_law_of(const std::vector<std::string>& terms) {
  std::string expr = "exp(a)";  // no term left: one rate for the group, the anchors' mean
  for (const std::string& t : terms) expr += t == "N" ? " * N^b" : t == "D" ? " * D^c" : " * E^e";
  Law law = custom_law(expr, "lr");
  law.title = "peak learning rate: log lr* = a + b log N + c log D + e log E";
  for (ParamGrid& g : law.grid) g.values = g.name == "a" ? std::vector<double>{-10, -5, 0}
                                                         : std::vector<double>{-1, -0.5, 0, 0.5};
  return law;
}

FitOptions lr_fit_options() {
  FitOptions f;
  f.delta = 10;  // least squares in log lr: the papers' fit, and lr* noise is ~30%, not 0.1%
  f.threads = 1;
  return f;
}

}  // namespace

namespace {

const char* exponent_of(const std::string& term) {
  return term == "N" ? "b" : term == "D" ? "c" : "e";
}

// The law in `terms` over the anchors' lr*, with intervals from refits to each bootstrap draw
// of every anchor's lr*.
FitResult fit_terms(const std::vector<LrOptimum>& anchors, const std::vector<std::string>& terms,
                    const LrTuningOptions& o) {
  const Law law = lr_law_of(terms);
  std::vector<Observation> xs;
  for (const LrOptimum& a : anchors) xs.push_back(lr_observation(a, a.lr));
  FitResult fit = fit_law(law, xs, lr_fit_options());
  const std::size_t draws = anchors.front().samples.size();
  std::map<std::string, std::vector<double>> values;
  for (std::size_t b = 0; b < draws; ++b) {
    std::vector<Observation> drawn;
    for (const LrOptimum& a : anchors) drawn.push_back(lr_observation(a, a.samples.at(b)));
    const FitResult f = fit_law(law, drawn, lr_fit_options());
    fit.bootstrap_samples.push_back(f.fitted);
    for (const auto& [name, v] : f.params) values[name].push_back(v);
  }
  if (draws >= 2) {
    fit.bootstrap = static_cast<int>(draws);
    fit.confidence = o.confidence;
    for (const auto& [name, v] : values) fit.intervals[name] = percentile_interval(v, o.confidence);
  }
  // Of diagnose()'s checks only those about the parameters mean anything for a law of rates.
  std::vector<Diagnostic> kept;
  for (const Diagnostic& d : diagnose(fit, xs))
    if (d.code == "param_at_bound" || d.code == "unidentified" || d.code == "degenerate")
      kept.push_back(d);
  fit.diagnostics = kept;
  return fit;
}

// An exponent whose interval spans more than this is not determined by the anchors: with it, the
// law would hand runs outside the anchors' range rates set by noise (measured on the embedded
// default: N and D exponents of +0.55 and +0.93 with intervals 1.7 wide, from single seeds).
constexpr double kMaxExponentSpan = 1.0;

}  // namespace

LrLaw fit_lr_law(const std::vector<LrOptimum>& all, const LrTuningOptions& o) {
  LrLaw out;
  for (const LrOptimum& a : all)
    if (!a.at_edge) out.anchors.push_back(a);
  if (!all.empty()) out.group = all.front().anchor.group;
  if (out.anchors.size() < 2)
    throw std::invalid_argument(fmt::format(
        "group {}: {} anchor{} with lr* inside {} grid, and even one rate for the group needs two; "
        "widen the grids (lr_edge says which way) or add anchors",
        out.group, out.anchors.size(), out.anchors.size() == 1 ? "" : "s",
        out.anchors.size() == 1 ? "its" : "their"));
  std::vector<std::string> terms{"N"};
  if (one_budget(out.anchors) || !spans(out.anchors, &LrAnchor::tokens, 1.05))
    out.dropped.push_back("D (the anchors share one budget, where D = C/6N moves with N: tune a "
                          "second budget to tell them apart)");
  else
    terms.push_back("D");
  if (spans(out.anchors, &LrAnchor::experts, 1.0))
    terms.push_back("E");
  else
    out.dropped.push_back("E (one expert count)");
  auto drop = [&](const std::string& term, const std::string& why) {
    terms.erase(std::find(terms.begin(), terms.end(), term));
    out.dropped.push_back(term + " (" + why + ")");
  };
  for (const char* t : {"D", "E", "N"})
    if (out.anchors.size() < terms.size() + 2 && std::count(terms.begin(), terms.end(), t))
      drop(t, fmt::format("{} anchors with lr* inside their grids are too few for it",
                          out.anchors.size()));
  out.fit = fit_terms(out.anchors, terms, o);
  for (bool dropped = true; dropped;) {
    dropped = false;
    for (const char* t : {"D", "E", "N"}) {
      const auto it = out.fit.intervals.find(exponent_of(t));
      if (!std::count(terms.begin(), terms.end(), t) || it == out.fit.intervals.end() ||
          it->second.hi - it->second.lo <= kMaxExponentSpan)
        continue;
      drop(t, fmt::format("its exponent's interval [{:.3g}, {:.3g}] spans more than {:g}: the "
                          "anchors do not determine it; more seeds or anchors would",
                          it->second.lo, it->second.hi, kMaxExponentSpan));
      out.fit = fit_terms(out.anchors, terms, o);
      dropped = true;
      break;
    }
  }
  out.n_min = INFINITY;
  for (const LrOptimum& a : out.anchors)
    out.n_min = std::min(out.n_min, a.anchor.n_active),
    out.n_max = std::max(out.n_max, a.anchor.n_active);
  for (const Diagnostic& d : lr_diagnostics(all)) out.fit.diagnostics.push_back(d);
  return out;
}

double lr_law_rate(const FitResult& law, double n_active, double tokens, double experts) {
  auto param = [&](const char* name) {
    const auto it = law.fitted.find(name);
    return it == law.fitted.end() ? 0.0 : it->second;
  };
  return std::exp(param("a")) * std::pow(n_active, param("b")) * std::pow(tokens, param("c")) *
         std::pow(experts, param("e"));
}

std::vector<Diagnostic> lr_diagnostics(const std::vector<LrOptimum>& optima) {
  std::vector<std::string> low, high;
  for (const LrOptimum& o : optima) {
    if (!o.at_edge) continue;
    (o.best_tried == o.curve.front().first ? low : high).push_back(o.anchor.label);
  }
  std::vector<Diagnostic> out;
  auto add = [&](const std::vector<std::string>& labels, const char* end, const char* move) {
    if (labels.empty()) return;
    out.push_back({"lr_edge",
                   fmt::format("the lowest loss of {} anchor{} ({}) is at the {} rate of its grid: "
                               "lr* lies beyond it and was left out of the law; {}",
                               labels.size(), labels.size() == 1 ? "" : "s",
                               fmt::join(labels, "; "), end, move)});
  };
  add(low, "smallest", "add smaller rates ([tune] rates or rate_factors)");
  add(high, "largest", "add larger rates ([tune] rates or rate_factors)");
  return out;
}

std::vector<RecipeVerdict> recipe_check(const std::vector<RecipePoint>& points, double noise) {
  auto mean_log = [](const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m += std::log(x) / static_cast<double>(v.size());
    return m;
  };
  auto mean = [](const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m += x / static_cast<double>(v.size());
    return m;
  };
  std::vector<RecipeVerdict> out;
  for (const RecipePoint& p : points) {
    if (p.own.empty()) continue;
    for (const auto& [factor, losses] : p.neighbours) {
      if (losses.empty()) continue;
      RecipeVerdict v{.label = p.label, .factor = factor, .own_lr = p.own_lr};
      v.own_mean = mean(p.own);
      v.neighbour_mean = mean(losses);
      v.difference = v.neighbour_mean - v.own_mean;
      v.sd = noise * std::sqrt(1.0 / static_cast<double>(losses.size()) +
                               1.0 / static_cast<double>(p.own.size()));
      v.untuned = mean_log(losses) - mean_log(p.own) < -2 * v.sd;
      out.push_back(v);
    }
  }
  return out;
}

std::vector<Diagnostic> recipe_diagnostics(const std::vector<RecipeVerdict>& verdicts) {
  std::vector<std::string> bad;
  for (const RecipeVerdict& v : verdicts)
    if (v.untuned)
      bad.push_back(fmt::format("{} at x{:.3g} its rate ({:+.4f} nats)", v.label, v.factor,
                                v.difference));
  if (bad.empty()) return {};
  return {{"recipe_untuned",
           fmt::format("{} point{} train{} better at another learning rate than the sweep gave "
                       "{} (by more than twice the run-to-run noise): {}; the fit reads biased "
                       "losses. Tune the rule (plan --tune, fit --law lr, lr_rule = \"fit\") and "
                       "train the sweep again",
                       bad.size(), bad.size() == 1 ? "" : "s", bad.size() == 1 ? "s" : "",
                       bad.size() == 1 ? "it" : "them", fmt::join(bad, "; "))}};
}

}  // namespace moescale::fitting
