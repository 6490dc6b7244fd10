// Diagnostics: plain checks of a fit against the observations it was fitted to. Thresholds are
// chosen so that the Epoch Chinchilla data (240 points) and a well-bracketed synthetic IsoFLOP
// sweep draw none, while fits that run into bounds, drop a term or extrapolate past their data
// do (tests/fitting/diagnostics_test.cpp).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "fitting/diagnostics.h"
#include "fitting/program.h"

namespace moescale::fitting {
namespace {

constexpr int64_t kShortRunSteps = 300;       // fewer optimiser steps: a run far from converged
constexpr double kHoldoutLimit = 0.02;        // held-out RMSLE above 2%
constexpr double kLackOfFit = 2;              // RMSLE over this many times the measured noise
constexpr std::size_t kMinNoiseDof = 3;       // fewer: the noise itself is too uncertain
constexpr double kScaleIntervalFactor = 100;  // bootstrap hi/lo of a scale parameter
// Column-normalised Jacobian of log L_hat: above this condition number a direction of the
// parameters barely changes the fit (the Epoch Chinchilla fit stays below it: a test checks).
constexpr double kConditionLimit = 1e6;
constexpr double kVanishingTerm = 1e-6;  // a term's largest share of the loss

std::map<std::string, std::vector<std::size_t>> groups(const std::vector<Observation>& obs) {
  std::map<std::string, std::vector<std::size_t>> out;
  for (std::size_t i = 0; i < obs.size(); ++i) out[family_of(obs[i])].push_back(i);
  return out;
}

std::string prefix(const std::string& group, std::size_t n_groups) {
  return n_groups > 1 ? group + ": " : "";
}

// Each budget (group_budgets) is judged by its own curve: the model size of its lowest loss
// against its smallest and largest sizes, family by family.
void edge_minimum(const std::vector<Observation>& obs, std::vector<Diagnostic>& out) {
  struct Count {
    int isoflop = 0;
    std::vector<double> small, large;  // budgets whose minimum is at that edge
  };
  std::map<std::string, Count> counts;
  for (const Budget& budget : group_budgets(obs)) {
    std::map<std::string, std::vector<std::size_t>> by_family;
    for (std::size_t r : budget.rows) by_family[family_of(obs[r])].push_back(r);
    for (const auto& [family, rows] : by_family) {
      std::set<double> sizes;
      for (std::size_t r : rows) sizes.insert(obs[r].n_active);
      if (sizes.size() < 3) continue;  // not an IsoFLOP profile
      Count& c = counts[family];
      ++c.isoflop;
      const std::size_t best = *std::min_element(
          rows.begin(), rows.end(), [&](auto a, auto b) { return obs[a].loss < obs[b].loss; });
      if (obs[best].n_active == *sizes.begin()) c.small.push_back(budget.compute);
      if (obs[best].n_active == *sizes.rbegin()) c.large.push_back(budget.compute);
    }
  }
  for (const auto& [family, c] : counts) {
    auto say = [&](const std::vector<double>& at, const char* edge, const char* move) {
      out.push_back({"edge_minimum",
                     fmt::format("{}the lowest loss of {} of {} IsoFLOP budgets (e.g. C = {:.3g}) "
                                 "is at the {} model: the sweep does not bracket the optimum, so "
                                 "the fitted optimum is an extrapolation; add {} models",
                                 prefix(family, counts.size()), at.size(), c.isoflop, at.back(),
                                 edge, move)});
    };
    // One budget's minimum at an edge can be noise (two sizes a few hundredths of a nat apart):
    // it takes half of a family's budgets at the same edge to say the sweep is off.
    if (2 * c.small.size() >= static_cast<std::size_t>(c.isoflop) && !c.small.empty())
      say(c.small, "smallest", "smaller");
    if (2 * c.large.size() >= static_cast<std::size_t>(c.isoflop) && !c.large.empty())
      say(c.large, "largest", "larger");
  }
}

void param_at_bound(const FitResult& fit, std::vector<Diagnostic>& out) {
  for (const auto& [name, range] : fit.bounds) {
    const auto it = fit.fitted.find(name);
    if (it == fit.fitted.end()) continue;
    const double x = it->second;
    for (const double bound : {range.first, range.second}) {
      if (!std::isfinite(bound) || std::abs(x - bound) > 1e-6 * std::max(1.0, std::abs(bound)))
        continue;
      out.push_back({"param_at_bound",
                     fmt::format("{} = {:.6g} is at its {} bound: the data do not hold it inside "
                                 "its range; check the sweep's range of N and D, or widen with "
                                 "--bound {}=LOW:HIGH if the bound is not meaningful",
                                 name, x, bound == range.first ? "lower" : "upper", name)});
    }
  }
}

bool is_scale(const ReportedParam& r) {
  return r.expression.rfind("exp(", 0) == 0;
}

// The name the user sees for a fitted parameter: "E" for e when the law reports E = exp(e).
std::string shown_name(const FitResult& fit, const std::string& fitted) {
  for (const auto& r : fit.reported)
    if (r.expression == fitted || r.expression == "exp(" + fitted + ")") return r.name;
  return fitted;
}

// The Jacobian J of log L_hat in the fitted parameters, columns scaled to unit length: a small
// singular value is a combination of parameters the data cannot pin. Works on J'J (P x P), so
// the cost is one gradient per observation however many there are.
void unidentified_by_jacobian(const FitResult& fit, const std::vector<Observation>& obs,
                              std::vector<Diagnostic>& out) {
  const Expression law = fit.compiled();
  const std::vector<double> x = fit.fitted_vector();
  const auto n = static_cast<Eigen::Index>(x.size());
  Eigen::MatrixXd JtJ = Eigen::MatrixXd::Zero(n, n);
  std::vector<double> grad(x.size());
  Eigen::VectorXd row(n);
  for (const auto& o : obs) {
    const double value = law.gradient(x, o, grad);
    for (Eigen::Index k = 0; k < n; ++k) row[k] = grad[k] / value;
    for (Eigen::Index a = 0; a < n; ++a)
      for (Eigen::Index b = 0; b < n; ++b) JtJ(a, b) += row[a] * row[b];
  }
  if (!JtJ.allFinite()) return;
  std::vector<double> norms(static_cast<std::size_t>(n));
  for (Eigen::Index k = 0; k < n; ++k) norms[k] = std::sqrt(JtJ(k, k));
  const double biggest = *std::max_element(norms.begin(), norms.end());
  std::vector<std::string> flat;
  std::vector<Eigen::Index> kept;
  for (Eigen::Index k = 0; k < n; ++k)
    (norms[k] <= 1e-12 * biggest ? flat.push_back(shown_name(fit, law.params()[k]))
                                 : kept.push_back(k));
  for (const auto& p : flat)
    out.push_back({"unidentified",
                   fmt::format("the loss does not change with {} at the fitted optimum: the data "
                               "cannot pin it (its term has vanished or it sits where it has no "
                               "effect)",
                               p)});
  if (!flat.empty() || kept.size() < 2) return;
  const auto m = static_cast<Eigen::Index>(kept.size());
  Eigen::MatrixXd scaled(m, m);
  for (Eigen::Index a = 0; a < m; ++a)
    for (Eigen::Index b = 0; b < m; ++b)
      scaled(a, b) = JtJ(kept[a], kept[b]) / (norms[kept[a]] * norms[kept[b]]);
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(scaled);
  const auto& ev = eig.eigenvalues();  // ascending
  const double condition = std::sqrt(ev[m - 1] / std::max(ev[0], 1e-300));
  if (condition <= kConditionLimit) return;
  // The parameters that move most along the direction the data barely see.
  const Eigen::VectorXd v = eig.eigenvectors().col(0).cwiseAbs();
  std::vector<std::string> names;
  for (Eigen::Index a = 0; a < m; ++a)
    if (v[a] >= 0.3) names.push_back(shown_name(fit, law.params()[kept[a]]));
  out.push_back({"unidentified",
                 fmt::format("the data barely constrain a combination of {} (condition number "
                             "{:.2g} of the scaled Jacobian): values along it fit about equally "
                             "well; run --bootstrap for intervals, add runs that vary what they "
                             "multiply, or fix a parameter with --bound",
                             fmt::join(names, ", "), condition)});
}

void unidentified(const FitResult& fit, const std::vector<Observation>& obs,
                  std::vector<Diagnostic>& out) {
  if (fit.intervals.empty()) return unidentified_by_jacobian(fit, obs, out);
  for (const auto& r : fit.reported) {
    const auto it = fit.intervals.find(r.name);
    if (it == fit.intervals.end() || !is_scale(r)) continue;
    const Interval& iv = it->second;
    if (iv.lo > 0 && iv.hi / iv.lo <= kScaleIntervalFactor) continue;
    out.push_back({"unidentified",
                   fmt::format("the {:.0f}% bootstrap interval of {} is [{:.3g}, {:.3g}], more "
                               "than a factor {:g}: the data cannot pin it; add runs that vary "
                               "what it multiplies",
                               100 * fit.confidence, r.name, iv.lo, iv.hi, kScaleIntervalFactor)});
  }
}

// A term that contributes nothing anywhere in the data: the law has lost a part.
void degenerate(const FitResult& fit, const std::vector<Observation>& obs,
                std::vector<Diagnostic>& out) {
  std::set<std::string> said;
  const Expression law = fit.compiled();
  const Program& program = law.program();
  const std::vector<double> x = fit.fitted_vector();
  if (program.separable && !obs.empty()) {
    const Separable& sep = *program.separable;
    std::vector<double> theta;
    for (int p : sep.nonlinear) theta.push_back(x[p]);
    std::vector<double> share(sep.coefficients.size(), 0), slots;
    for (const auto& o : obs) {
      sep.basis.eval(theta.data(), make_point(o), slots);
      for (std::size_t k = 0; k < sep.coefficients.size(); ++k) {
        const auto& coef = sep.coefficients[k];
        const double c = coef.log_scale ? std::exp(x[coef.param]) : x[coef.param];
        double term = 0;
        for (int32_t node : coef.outputs) term += slots[node];
        share[k] = std::max(share[k], std::abs(c * term) / o.loss);
      }
    }
    for (std::size_t k = 0; k < share.size(); ++k) {
      if (!(share[k] < kVanishingTerm)) continue;
      const std::string& p = program.params[sep.coefficients[k].param];
      said.insert(p);
      out.push_back({"degenerate",
                     fmt::format("the term scaled by {} contributes less than {:g} of the loss at "
                                 "every point: the fit has dropped it (e.g. E -> 0), so the law "
                                 "is not the one intended; the data do not support that term",
                                 shown_name(fit, p), kVanishingTerm)});
    }
  }
  for (const auto& r : fit.reported) {  // scales fitted in log space, e.g. E = exp(e) ~ 1e-19
    const auto it = fit.params.find(r.name);
    if (!is_scale(r) || it == fit.params.end() || it->second >= 1e-8) continue;
    const std::string inner = r.expression.substr(4, r.expression.size() - 5);
    if (said.count(inner)) continue;
    out.push_back({"degenerate", fmt::format("{} = {:.3g}: the term it scales has vanished; the "
                                             "data do not support that term",
                                             r.name, it->second)});
  }
}

void systematic_residual(const FitResult& fit, const std::vector<Observation>& obs,
                         std::vector<Diagnostic>& out) {
  const std::vector<double> r = log_residuals(fit, obs);
  const double limit = std::max(2 * fit.rmsle, 1e-3);
  auto check = [&](const std::vector<std::size_t>& rows, const std::string& what) {
    if (rows.size() < 3) return;
    double mean = 0;
    for (std::size_t i : rows) mean += r[i] / static_cast<double>(rows.size());
    if (std::abs(mean) <= limit) return;
    out.push_back({"systematic_residual",
                   fmt::format("{}: the law {} the loss by {:.2g}% on average (RMSLE {:.2g}%); "
                               "the law's form does not fit there",
                               what, mean > 0 ? "over-predicts" : "under-predicts",
                               100 * std::abs(mean), 100 * fit.rmsle)});
  };
  const auto by_group = groups(obs);
  if (by_group.size() > 1)
    for (const auto& [group, rows] : by_group) check(rows, "group " + group);
  for (const Budget& budget : group_budgets(obs))
    check(budget.rows, fmt::format("budget C = {:.3g}", budget.compute));
}

}  // namespace

std::vector<double> log_residuals(const FitResult& fit, const std::vector<Observation>& obs) {
  const Expression law = fit.compiled();
  const std::vector<double> x = fit.fitted_vector();
  std::vector<double> out;
  for (const auto& o : obs) out.push_back(std::log(law.evaluate(x, o)) - std::log(o.loss));
  return out;
}

std::vector<Diagnostic> diagnose_design(const std::vector<Observation>& observations) {
  std::vector<Diagnostic> out;
  edge_minimum(observations, out);
  return out;
}

std::vector<Diagnostic> diagnose(const FitResult& fit, const std::vector<Observation>& obs) {
  std::vector<Diagnostic> out = diagnose_design(obs);
  param_at_bound(fit, out);
  unidentified(fit, obs, out);
  degenerate(fit, obs, out);
  systematic_residual(fit, obs, out);
  const auto short_runs = std::count_if(obs.begin(), obs.end(), [](const Observation& o) {
    return o.steps > 0 && o.steps < kShortRunSteps;
  });
  if (short_runs > 0)
    out.push_back({"short_runs",
                   fmt::format("{} of {} runs trained fewer than {} optimiser steps: their loss is "
                               "far from converged and bends the fit; train longer runs",
                               short_runs, obs.size(), kShortRunSteps)});
  if (fit.noise.measured() && fit.noise.dof >= kMinNoiseDof &&
      fit.rmsle > kLackOfFit * fit.noise.sd_log_loss)
    out.push_back(
        {"lack_of_fit",
         fmt::format("the law misses the runs by {:.3g} RMSLE, {:.1f} times the run-to-run noise "
                     "that {} points trained with several seeds measure (sd of log loss {:.3g}): "
                     "the misfit is systematic, not noise; try another law, or look for bad runs "
                     "in the residuals",
                     fit.rmsle, fit.rmsle / fit.noise.sd_log_loss, fit.noise.sets,
                     fit.noise.sd_log_loss)});
  if (const ReplicateNoise n = replicate_noise(replicate_sets(obs)); !explained_by_seeds(n))
    out.push_back(
        {"replicates_disagree",
         fmt::format("{} points appear more than once and their losses spread by {:.3g} (sd of "
                     "log loss), far more than a training seed explains (under {:g}): they are "
                     "likely different measurements under one loss column (two loss columns "
                     "imported as one, or runs that differ in what the columns leave out), so the "
                     "spread is not used as run-to-run noise; import one loss column, or map the "
                     "column that tells the runs apart",
                     n.sets, n.sd_log_loss, kMaxSeedNoise)});
  if (fit.holdout && fit.holdout->rmsle > kHoldoutLimit)
    out.push_back({"extrapolation",
                   fmt::format("the law misses the {} held-out runs (C >= {:.3g}) by {:.2g}% "
                               "RMSLE, more than {:g}%: do not trust it beyond the data",
                               fit.holdout->n_test, fit.holdout->min_compute,
                               100 * fit.holdout->rmsle, 100 * kHoldoutLimit)});
  if (!fit.rollout.empty() && fit.rollout.back().rmsle > kHoldoutLimit)
    out.push_back({"extrapolation",
                   fmt::format("fitted on the smaller budgets, the law misses the runs of the "
                               "largest (C = {:.3g}) by {:.2g}% RMSLE, more than {:g}%: do not "
                               "trust it beyond the data",
                               fit.rollout.back().compute, 100 * fit.rollout.back().rmsle,
                               100 * kHoldoutLimit)});
  return out;
}

}  // namespace moescale::fitting
