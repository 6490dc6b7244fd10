// Hoffmann et al.'s approach 2: a parabola in log N through each IsoFLOP budget's losses, its
// minimum N*(C), then log N* = log k + a log C through the minima. Bootstrap: each budget's runs
// are resampled within the budget, and the whole procedure is repeated.
#include <fmt/format.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <stdexcept>

#include "fitting/fitting.h"

namespace moescale::fitting {
namespace {

struct Parabola {
  bool ok = false;         // three distinct sizes or more, and a finite solution
  bool downward = false;   // curvature <= 0: no minimum
  double log_n_opt = NAN;  // vertex
  double loss = NAN;       // at the vertex
};

// Least squares loss = c0 + c1 x + c2 x^2, x = log N (centred for conditioning).
Parabola parabola(const std::vector<double>& x, const std::vector<double>& loss) {
  Parabola p;
  if (std::set<double>(x.begin(), x.end()).size() < 3) return p;
  double centre = 0;
  for (double v : x) centre += v / static_cast<double>(x.size());
  Eigen::MatrixXd A(static_cast<Eigen::Index>(x.size()), 3);
  Eigen::VectorXd y(static_cast<Eigen::Index>(x.size()));
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double u = x[i] - centre;
    A.row(static_cast<Eigen::Index>(i)) << 1, u, u * u;
    y[static_cast<Eigen::Index>(i)] = loss[i];
  }
  const Eigen::Vector3d c = A.colPivHouseholderQr().solve(y);
  if (!c.allFinite()) return p;
  p.ok = true;
  p.downward = !(c[2] > 0);
  if (p.downward) return p;
  const double u = -c[1] / (2 * c[2]);
  p.log_n_opt = centre + u;
  p.loss = c[0] + c[1] * u + c[2] * u * u;
  return p;
}

// log N* = intercept + slope log C by least squares; false with fewer than two budgets.
bool line(const std::vector<double>& log_c, const std::vector<double>& log_n, double& intercept,
          double& slope) {
  const std::size_t n = log_c.size();
  if (n < 2) return false;
  double mx = 0, my = 0;
  for (std::size_t i = 0; i < n; ++i) mx += log_c[i] / n, my += log_n[i] / n;
  double sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < n; ++i)
    sxx += (log_c[i] - mx) * (log_c[i] - mx), sxy += (log_c[i] - mx) * (log_n[i] - my);
  if (!(sxx > 0)) return false;
  slope = sxy / sxx;
  intercept = my - slope * mx;
  return std::isfinite(slope) && std::isfinite(intercept);
}

struct Curve {
  double compute = 0;
  std::vector<double> log_n, loss;
};

std::vector<Curve> curves_of(const std::vector<Observation>& obs) {
  std::set<std::string> families;
  for (const Observation& o : obs) families.insert(family_of(o));
  if (families.size() > 1)
    throw std::invalid_argument(fmt::format(
        "approach 2 reads one model family's IsoFLOP curves, and these runs hold {} ({}, ...); "
        "fit each on its own (fit --per-group, or --experts E)",
        families.size(), *families.begin()));
  std::vector<Curve> out;
  for (const Budget& b : group_budgets(obs)) {
    Curve c{b.compute, {}, {}};
    for (std::size_t r : b.rows)
      c.log_n.push_back(std::log(obs[r].n_active)), c.loss.push_back(obs[r].loss);
    out.push_back(std::move(c));
  }
  return out;
}

// The minima of every curve and the line through the usable ones (slope NaN: no line).
struct Pass {
  std::vector<Parabola> parabolas;
  std::vector<bool> used;
  double log_k = NAN, a = NAN;
};

Pass run_pass(const std::vector<Curve>& curves) {
  Pass p;
  std::vector<double> log_c, log_n;
  for (const Curve& c : curves) {
    const Parabola q = parabola(c.log_n, c.loss);
    const auto [lo, hi] = std::minmax_element(c.log_n.begin(), c.log_n.end());
    const bool use = q.ok && !q.downward && q.log_n_opt >= *lo && q.log_n_opt <= *hi;
    p.parabolas.push_back(q);
    p.used.push_back(use);
    if (use) log_c.push_back(std::log(c.compute)), log_n.push_back(q.log_n_opt);
  }
  double k = NAN, a = NAN;
  if (line(log_c, log_n, k, a)) p.log_k = k, p.a = a;
  return p;
}

}  // namespace

Approach2Fit fit_approach2(const std::vector<Observation>& observations,
                           const Approach2Options& options) {
  validate_observations(observations);
  if (options.bootstrap < 0 || options.bootstrap > kMaxBootstrap)
    throw std::invalid_argument(
        fmt::format("--bootstrap {} must be in [0, {}]", options.bootstrap, kMaxBootstrap));
  const std::vector<Curve> curves = curves_of(observations);
  const Pass main = run_pass(curves);
  Approach2Fit fit;
  fit.bootstrap = options.bootstrap;
  fit.confidence = options.confidence;
  fit.n_points = observations.size();
  std::size_t used = 0;
  for (std::size_t i = 0; i < curves.size(); ++i) {
    const Curve& c = curves[i];
    const Parabola& q = main.parabolas[i];
    BudgetMinimum m;
    m.compute = c.compute;
    m.runs = c.log_n.size();
    m.n_min = std::exp(*std::min_element(c.log_n.begin(), c.log_n.end()));
    m.n_max = std::exp(*std::max_element(c.log_n.begin(), c.log_n.end()));
    m.opens_downward = q.ok && q.downward;
    m.used = main.used[i];
    if (q.ok && !q.downward) {
      m.n_opt = std::exp(q.log_n_opt);
      m.tokens_opt = tokens_for_compute(c.compute, m.n_opt);
      m.loss = q.loss;
      m.outside_range = !m.used;
    }
    used += m.used;
    fit.minima.push_back(m);
  }
  for (const BudgetMinimum& m : fit.minima) {
    if (m.runs < 3) continue;
    if (m.opens_downward)
      fit.diagnostics.push_back(
          {"downward_parabola",
           fmt::format("the parabola through budget C = {:.3g} ({} runs) opens downward: its "
                       "losses have no minimum in log N, so it is left out of a and b; add "
                       "sizes on both sides of its best run",
                       m.compute, m.runs)});
    else if (m.outside_range)
      fit.diagnostics.push_back(
          {"minimum_outside_range",
           fmt::format("budget C = {:.3g}: its parabola's minimum N = {:.3g} lies outside the "
                       "sampled sizes [{:.3g}, {:.3g}], an extrapolation, so it is left out of a "
                       "and b; add {} models",
                       m.compute, m.n_opt, m.n_min, m.n_max,
                       m.n_opt < m.n_min ? "smaller" : "larger")});
  }
  if (!std::isfinite(main.a))
    throw std::runtime_error(fmt::format(
        "approach 2 needs the minima of at least 2 IsoFLOP budgets (3 sizes or more each, "
        "minimum inside the sampled sizes), and these {} runs give {} of {} budgets; add sizes "
        "or budgets, or fit approach 3 (the default)",
        observations.size(), used, curves.size()));
  fit.a = main.a;
  fit.log_k = main.log_k;
  fit.b = 1 - fit.a;  // D* = C / (6 N*)
  fit.budgets_used = used;

  // Bootstrap: resample each budget's runs within the budget.
  std::vector<std::vector<double>> n_samples(curves.size());
  std::vector<double> a_samples;
  for (int s = 0; s < options.bootstrap; ++s) {
    std::mt19937_64 rng(options.seed * 1000003 + static_cast<uint64_t>(s));
    std::vector<Curve> resampled = curves;
    for (std::size_t i = 0; i < curves.size(); ++i) {
      std::uniform_int_distribution<std::size_t> pick(0, curves[i].log_n.size() - 1);
      for (std::size_t j = 0; j < curves[i].log_n.size(); ++j) {
        const std::size_t k = pick(rng);
        resampled[i].log_n[j] = curves[i].log_n[k];
        resampled[i].loss[j] = curves[i].loss[k];
      }
    }
    const Pass p = run_pass(resampled);
    for (std::size_t i = 0; i < curves.size(); ++i)
      if (p.used[i]) n_samples[i].push_back(std::exp(p.parabolas[i].log_n_opt));
    if (std::isfinite(p.a)) {
      a_samples.push_back(p.a);
      fit.samples.push_back({p.log_k, p.a});
    }
  }
  for (std::size_t i = 0; i < curves.size(); ++i)
    if (n_samples[i].size() >= 2)
      fit.minima[i].n_ci = percentile_interval(n_samples[i], options.confidence);
  if (a_samples.size() >= 2) {
    fit.a_ci = percentile_interval(a_samples, options.confidence);
    fit.b_ci = Interval{1 - fit.a_ci->hi, 1 - fit.a_ci->lo, fit.a_ci->sd};
  }
  return fit;
}

double Approach2Fit::n_opt(double compute) const {
  return std::exp(log_k + a * std::log(compute));
}

std::string to_json(const Approach2Fit& f) {
  auto interval = [](const std::optional<Interval>& iv) {
    return iv ? nlohmann::json{{"lo", iv->lo}, {"hi", iv->hi}, {"sd", iv->sd}} : nlohmann::json();
  };
  nlohmann::json j{{"method", "approach2"},
                   {"a", f.a},
                   {"a_interval", interval(f.a_ci)},
                   {"b", f.b},
                   {"b_interval", interval(f.b_ci)},
                   {"log_k", f.log_k},
                   {"n_points", f.n_points},
                   {"budgets_used", f.budgets_used},
                   {"bootstrap", f.bootstrap},
                   {"confidence", f.confidence},
                   {"budgets", nlohmann::json::array()},
                   {"diagnostics", nlohmann::json::array()},
                   {"samples", nlohmann::json::array()}};
  for (const BudgetMinimum& m : f.minima)
    j["budgets"].push_back(
        {{"compute", m.compute},
         {"runs", m.runs},
         {"n_opt", std::isfinite(m.n_opt) ? nlohmann::json(m.n_opt) : nullptr},
         {"n_interval", interval(m.n_ci)},
         {"tokens_opt", std::isfinite(m.tokens_opt) ? nlohmann::json(m.tokens_opt) : nullptr},
         {"loss", std::isfinite(m.loss) ? nlohmann::json(m.loss) : nullptr},
         {"n_min", m.n_min},
         {"n_max", m.n_max},
         {"opens_downward", m.opens_downward},
         {"outside_range", m.outside_range},
         {"used", m.used}});
  for (const auto& d : f.diagnostics)
    j["diagnostics"].push_back({{"code", d.code}, {"message", d.message}});
  for (const auto& [k, a] : f.samples) j["samples"].push_back({k, a});
  return j.dump();
}

Approach2Fit approach2_from_json(std::string_view text) {
  try {
    const auto j = nlohmann::json::parse(text);
    if (j.value("method", "") != "approach2")
      throw std::invalid_argument("it is not an approach 2 fit");
    auto interval = [](const nlohmann::json& v) -> std::optional<Interval> {
      if (v.is_null()) return std::nullopt;
      return Interval{v.at("lo"), v.at("hi"), v.at("sd")};
    };
    auto number = [](const nlohmann::json& v) { return v.is_null() ? NAN : v.get<double>(); };
    Approach2Fit f;
    f.a = j.at("a");
    f.b = j.at("b");
    f.a_ci = interval(j.at("a_interval"));
    f.b_ci = interval(j.at("b_interval"));
    f.log_k = j.at("log_k");
    f.n_points = j.at("n_points");
    f.budgets_used = j.at("budgets_used");
    f.bootstrap = j.at("bootstrap");
    f.confidence = j.at("confidence");
    for (const auto& b : j.at("budgets")) {
      BudgetMinimum m;
      m.compute = b.at("compute");
      m.runs = b.at("runs");
      m.n_opt = number(b.at("n_opt"));
      m.n_ci = interval(b.at("n_interval"));
      m.tokens_opt = number(b.at("tokens_opt"));
      m.loss = number(b.at("loss"));
      m.n_min = b.at("n_min");
      m.n_max = b.at("n_max");
      m.opens_downward = b.at("opens_downward");
      m.outside_range = b.at("outside_range");
      m.used = b.at("used");
      f.minima.push_back(m);
    }
    for (const auto& d : j.at("diagnostics"))
      f.diagnostics.push_back({d.at("code"), d.at("message")});
    for (const auto& s : j.at("samples")) f.samples.push_back({s.at(0), s.at(1)});
    return f;
  } catch (const std::exception& e) {
    throw std::invalid_argument(fmt::format("stored approach 2 fit is unreadable: {}", e.what()));
  }
}

bool is_approach2_json(std::string_view text) {
  try {
    const auto j = nlohmann::json::parse(text);
    return j.is_object() && j.value("method", "") == "approach2";
  } catch (const std::exception&) {
    return false;
  }
}

Recommendation recommend_approach2(const Approach2Fit& fit, double budget, double confidence) {
  if (!(budget > 0))
    throw std::invalid_argument("--budget must be a positive number of FLOPs, e.g. 1e21");
  Recommendation r;
  r.law = "approach2";
  r.budget = budget;
  r.confidence = confidence;
  Choice c;
  c.n_active = c.n_total = fit.n_opt(budget);
  c.tokens = tokens_for_compute(budget, c.n_active);
  c.compute = budget;
  c.loss = NAN;
  std::vector<double> n, d;
  for (const auto& [log_k, a] : fit.samples) {
    n.push_back(std::exp(log_k + a * std::log(budget)));
    d.push_back(tokens_for_compute(budget, n.back()));
  }
  if (n.size() >= 2) {
    c.n_active_ci = percentile_interval(n, confidence);
    c.tokens_ci = percentile_interval(d, confidence);
    r.bootstrap = static_cast<int>(n.size());
  }
  r.loss_optimal = {c};
  r.note = fmt::format(
      "approach 2 (N* = k C^a through {} budgets' parabola minima, a = {:.3f}) fits no loss "
      "law: it gives N* and D* = C / (6 N*), not the loss, and one row for the family it was "
      "fitted on",
      fit.budgets_used, fit.a);
  return r;
}

}  // namespace moescale::fitting
