// plan --next: the runs whose results would most shrink the interval on N* at a target budget,
// per FLOP, and the simulated design study that checks the method against a known truth.
//
// Method. The fit's bootstrap parameter sets theta_1..theta_B stand in for the uncertainty
// on the law. For every candidate run x (a real shape, snapped by the planner) and every
// bootstrap set b they give f_b(x) = log L_b(x), and at the target budget g_b,e = log N*_e.
// Treating (g, f) as jointly Gaussian with the ensemble's covariance S, observing
// y = f(x) + noise (sd sigma: the fit's RMSLE, or the run-to-run noise measured from
// replicates when that is larger, since a fit can pass closer to its points than a new
// run's seed allows) shrinks var(g_e) by S[e,x]^2 / (S[x,x] +
// sigma^2) (the linear-Gaussian, ensemble-Kalman update). Candidates are picked greedily by
// that shrinkage, summed over E, per FLOP of the run (6 N D), within the allowance; after
// each pick S is updated by the same rank-one formula, so the next pick values only what
// the picked runs do not already tell.
//
// Candidates: for each expert count, each compute budget already in the data plus one above
// (the largest times the typical ratio between budgets), 9 sizes from N*/8 to 8 N* around the
// fit's optimum at that budget, tokens = budget / (6 N) in whole steps.
#include <fmt/format.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <stdexcept>

#include "fitting/fitting.h"

namespace moescale::fitting {
namespace {

// The compute of each budget present in the observations (group_budgets), ascending.
std::vector<double> budgets_of(const std::vector<Observation>& observations) {
  std::vector<double> out;
  for (const Budget& b : group_budgets(observations)) out.push_back(b.compute);
  return out;
}

double budget_above(const std::vector<double>& budgets) {
  double ratio = 4;
  if (budgets.size() >= 2)
    ratio =
        std::pow(budgets.back() / budgets.front(), 1.0 / static_cast<double>(budgets.size() - 1));
  return budgets.back() * std::clamp(ratio, 2.0, 10.0);
}

FitResult with_params(const FitResult& fit, const std::map<std::string, double>& fitted) {
  FitResult f = fit;
  f.fitted = fitted;
  f.bootstrap_samples.clear();
  return f;
}

RecommendOptions search_options(const NextRunsOptions& o) {
  RecommendOptions r;
  r.min_params = o.min_params;
  r.max_params = o.max_params;
  return r;
}

// log N* at the budget for each E, or empty when the law gives no finite optimum.
std::optional<std::vector<double>> log_optima(const FitResult& fit, double budget,
                                              const std::vector<int64_t>& experts,
                                              const RecommendOptions& ro) {
  std::vector<double> out;
  for (int64_t e : experts) {
    try {
      out.push_back(std::log(loss_optimal_choice(fit, budget, e, ro).n_active));
    } catch (const std::runtime_error&) {
      return std::nullopt;
    }
  }
  return out;
}

struct Candidate {
  PlannedRun run;
  Observation x;
  int64_t experts = 1;
  double size_factor = 1;  // N over the fit's N* at its budget
};

std::vector<Candidate> candidates(const FitResult& fit, const std::vector<double>& budgets,
                                  const SweepConfig& config, const std::vector<int64_t>& experts,
                                  const std::set<std::string>& existing, const NextRunsOptions& o) {
  const RecommendOptions ro = search_options(o);
  std::vector<Candidate> out;
  std::set<std::string> keys = existing;
  for (int64_t e : experts) {
    ModelShape base = config.base;
    base.experts = e;
    base.router = e == 1 ? Router::dense : o.router;
    if (e == 1) base.top_k = 1;
    for (double budget : budgets) {
      double centre = 0;
      try {
        centre = loss_optimal_choice(fit, budget, e, ro).n_active;
      } catch (const std::runtime_error&) {
        continue;
      }
      for (int k = -4; k <= 4; ++k) {
        const double target = centre * std::pow(8.0, k / 4.0);
        const ModelShape shape = shape_for_active_params(target, base, config.rules);
        const double active = static_cast<double>(count_params(shape).active);
        // The sweep's own recipe: its lr rule gives the new run its rate.
        const RunSpec spec =
            sweep_run_spec(config, shape, tokens_for_compute(budget, active));
        if (!keys.insert(spec.key()).second) continue;
        Candidate c;
        c.run = plan_run(spec, config.device_flops, budget);
        c.experts = e;
        c.size_factor = active / centre;
        c.x.n_active = static_cast<double>(c.run.params.active);
        c.x.n_total = static_cast<double>(c.run.params.total);
        c.x.tokens = static_cast<double>(c.run.spec.tokens);
        c.x.experts = static_cast<double>(e);
        c.x.top_k = static_cast<double>(c.run.spec.shape.top_k);
        out.push_back(std::move(c));
      }
    }
  }
  return out;
}

std::vector<int64_t> experts_in(const std::vector<Observation>& observations) {
  std::set<int64_t> e;
  for (const Observation& o : observations) e.insert(static_cast<int64_t>(std::llround(o.experts)));
  return {e.begin(), e.end()};
}

void check(const FitResult& fit, const NextRunsOptions& o) {
  if (!(o.target_budget > 0))
    throw std::invalid_argument("the target budget must be a positive number of FLOPs");
  if (!(o.allowance > 0))
    throw std::invalid_argument("the compute allowance must be a positive number of FLOPs");
  if (o.max_runs < 1) throw std::invalid_argument("--max-runs must be at least 1");
  if (fit.bootstrap_samples.size() < 2)
    throw std::invalid_argument(fmt::format(
        "fit of law \"{}\" has no bootstrap parameter sets, which plan --next needs to know the "
        "uncertainty; refit with --bootstrap 100",
        fit.law));
}

}  // namespace

NextRunsPlan propose_next_runs(const FitResult& fit, const std::vector<Observation>& observations,
                               const SweepConfig& config,
                               const std::vector<std::string>& existing_keys,
                               const NextRunsOptions& o) {
  check(fit, o);
  if (observations.empty()) throw std::invalid_argument("plan --next needs finished runs");
  const std::vector<int64_t> experts = o.experts.empty() ? experts_in(observations) : o.experts;
  std::vector<double> budgets = budgets_of(observations);
  budgets.push_back(budget_above(budgets));
  const std::set<std::string> existing(existing_keys.begin(), existing_keys.end());
  std::vector<Candidate> cand = candidates(fit, budgets, config, experts, existing, o);

  // Rows: bootstrap sets with a finite optimum; columns: log N*_e at the target, then
  // log L at each candidate.
  const Expression expr = fit.compiled();
  const RecommendOptions ro = search_options(o);
  const std::size_t m = experts.size(), n = cand.size();
  std::vector<std::vector<double>> rows;
  for (const auto& sample : fit.bootstrap_samples) {
    const FitResult f = with_params(fit, sample);
    const auto g = log_optima(f, o.target_budget, experts, ro);
    if (!g) continue;
    std::vector<double> row = *g;
    const std::vector<double> x = f.fitted_vector();
    bool ok = true;
    for (const Candidate& c : cand) {
      const double v = std::log(expr.evaluate(x, c.x));
      ok = ok && std::isfinite(v);
      row.push_back(v);
    }
    if (ok) rows.push_back(std::move(row));
  }
  if (rows.size() < 2)
    throw std::runtime_error(fmt::format(
        "fewer than 2 of the fit's {} bootstrap sets give a finite optimum at {:g} FLOPs; refit "
        "with more data or a lower target budget",
        fit.bootstrap_samples.size(), o.target_budget));
  Eigen::MatrixXd z(static_cast<Eigen::Index>(rows.size()), static_cast<Eigen::Index>(m + n));
  for (std::size_t b = 0; b < rows.size(); ++b)
    for (std::size_t j = 0; j < m + n; ++j)
      z(static_cast<Eigen::Index>(b), static_cast<Eigen::Index>(j)) = rows[b][j];
  const Eigen::MatrixXd centred = z.rowwise() - z.colwise().mean();
  Eigen::MatrixXd s = centred.transpose() * centred / static_cast<double>(rows.size() - 1);
  const Eigen::MatrixXd s0 = s;
  const double measured = fit.noise.measured() ? fit.noise.sd_log_loss : 0.0;
  const double sigma = o.noise > 0 ? o.noise : std::max({fit.rmsle, measured, 1e-3});
  auto total_var = [&] {
    double v = 0;
    for (std::size_t e = 0; e < m; ++e)
      v += s(static_cast<Eigen::Index>(e), static_cast<Eigen::Index>(e));
    return v;
  };

  NextRunsPlan plan;
  plan.candidates = n;
  plan.sd_start = std::sqrt(total_var());
  std::vector<bool> taken(n, false);
  double left = o.allowance;
  while (static_cast<int>(plan.runs.size()) < o.max_runs) {
    std::optional<std::size_t> best;
    double best_score = 0, best_gain = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (taken[i] || cand[i].run.compute_6n > left) continue;
      const auto xi = static_cast<Eigen::Index>(m + i);
      double gain = 0;
      for (std::size_t e = 0; e < m; ++e) {
        const double c = s(static_cast<Eigen::Index>(e), xi);
        gain += c * c / (s(xi, xi) + sigma * sigma);
      }
      const double score = gain / cand[i].run.compute_6n;
      if (score > best_score) best = i, best_score = score, best_gain = gain;
    }
    if (!best || best_gain <= 1e-12 * std::max(total_var(), 1e-300)) break;
    const std::size_t i = *best;
    const auto xi = static_cast<Eigen::Index>(m + i);
    const double before = std::sqrt(total_var());
    const Eigen::VectorXd col = s.col(xi);
    s -= col * col.transpose() / (s(xi, xi) + sigma * sigma);
    taken[i] = true;
    left -= cand[i].run.compute_6n;
    const Candidate& c = cand[i];
    ProposedRun p;
    p.run = c.run;
    p.experts = c.experts;
    p.predicted_loss = fit.predict(c.x);
    p.prediction_sd = std::sqrt(s0(xi, xi));
    p.sd_before = before;
    p.sd_after = std::sqrt(std::max(0.0, total_var()));
    p.shrink_per_flop = best_score;
    p.why = fmt::format(
        "at {:.3g} FLOPs, {:.2g}x the fitted N* there; bootstrap fits disagree on its loss by "
        "{:.2g}% (sd), which is {:.2g} of the noise; sd of log N*{} at {:.3g} FLOPs {:.3g} -> "
        "{:.3g} ({:.1f}% narrower interval), {:.3g} per 1e18 FLOPs",
        c.run.budget, c.size_factor, 100 * p.prediction_sd, p.prediction_sd / sigma,
        m > 1 ? " (all E together)" : "", o.target_budget, p.sd_before, p.sd_after,
        100 * (1 - p.sd_after / p.sd_before), best_gain / c.run.compute_6n * 1e18);
    plan.compute += c.run.compute_6n;
    plan.runs.push_back(std::move(p));
  }
  plan.sd_end = std::sqrt(std::max(0.0, total_var()));
  return plan;
}

// ---------------------------------------------------------------- the design study
namespace {

struct Sweep {
  std::vector<Observation> observations;
  std::vector<std::string> keys;
  double compute = 0;  // added on top of the start
};

void simulate_into(Sweep& sweep, const std::vector<PlannedRun>& runs, const Expression& law,
                   const std::vector<double>& truth, double noise, uint64_t seed) {
  for (const PlannedRun& r : runs) {
    Observation x;
    x.n_active = static_cast<double>(r.params.active);
    x.n_total = static_cast<double>(r.params.total);
    x.tokens = static_cast<double>(r.spec.tokens);
    x.experts = static_cast<double>(r.spec.shape.experts);
    x.top_k = static_cast<double>(r.spec.shape.top_k);
    x.where = r.spec.key();
    x.loss = simulated_loss(law, truth, x, noise, seed, x.where);
    sweep.observations.push_back(x);
    sweep.keys.push_back(x.where);
  }
}

DesignArm measure(const std::string& name, const FitResult& fit, double target, double truth_n,
                  double compute) {
  const RecommendOptions ro;
  DesignArm arm;
  arm.name = name;
  arm.compute = compute;
  arm.log_error = std::abs(std::log(loss_optimal_choice(fit, target, 1, ro).n_active / truth_n));
  std::vector<double> n;
  for (const auto& sample : fit.bootstrap_samples) {
    try {
      n.push_back(loss_optimal_choice(with_params(fit, sample), target, 1, ro).n_active);
    } catch (const std::runtime_error&) {
    }
  }
  if (n.size() < 2) {
    arm.interval_ratio = std::numeric_limits<double>::infinity();
    return arm;
  }
  const Interval iv = percentile_interval(std::move(n), 0.95);
  arm.interval_ratio = iv.hi / iv.lo;
  return arm;
}

// One more IsoFLOP budget of the sweep's layout (or centred on 20 tokens per parameter)
// costing about `compute` in all.
std::vector<PlannedRun> uniform_budget(SweepConfig config, double compute, bool centred) {
  config.budgets = {compute / static_cast<double>(config.points_per_budget)};
  if (centred) config.tokens_per_param = 20;
  config.max_total_compute = 0;
  return plan_sweep(config);
}

}  // namespace

DesignStudyResult run_design_study(const DesignStudyOptions& o) {
  Law law = builtin_law("chinchilla");
  for (const std::string& g : o.grid) set_grid(law, g);
  const Expression expr = law.compiled();
  std::vector<double> truth;
  for (const std::string& p : expr.params()) truth.push_back(o.truth.at(p));
  FitOptions fo;
  fo.bootstrap = o.bootstrap;
  fo.seed = o.seed;
  auto fit = [&](const Sweep& s) { return fit_law(law, s.observations, fo); };

  DesignStudyResult result;
  const double largest = *std::max_element(o.sweep.budgets.begin(), o.sweep.budgets.end());
  result.target_budget = o.target_factor * largest;
  FitResult truth_fit;
  truth_fit.law = law.name;
  truth_fit.expression = law.expression;
  truth_fit.fitted = o.truth;
  result.true_n_opt = loss_optimal_choice(truth_fit, result.target_budget, 1, {}).n_active;

  Sweep start;
  const std::vector<PlannedRun> start_runs = plan_sweep(o.sweep);
  simulate_into(start, start_runs, expr, truth, o.noise, o.seed);
  double start_compute = 0;
  for (const PlannedRun& r : start_runs) start_compute += r.compute_6n;
  const FitResult fit0 = fit(start);
  result.start = measure("start", fit0, result.target_budget, result.true_n_opt, 0);

  Sweep next = start;
  FitResult current = fit0;
  NextRunsOptions no;
  no.target_budget = result.target_budget;
  no.allowance = o.allowance_per_round > 0 ? o.allowance_per_round : start_compute / 3;
  no.max_runs = o.max_runs;
  no.experts = {1};
  for (int round = 0; round < o.rounds; ++round) {
    const NextRunsPlan plan = propose_next_runs(current, next.observations, o.sweep, next.keys, no);
    if (plan.runs.empty()) break;
    std::vector<PlannedRun> runs;
    for (const ProposedRun& p : plan.runs) runs.push_back(p.run), next.compute += p.run.compute_6n;
    simulate_into(next, runs, expr, truth, o.noise, o.seed);
    current = fit(next);
  }
  result.next =
      measure("plan --next", current, result.target_budget, result.true_n_opt, next.compute);

  for (bool centred : {false, true}) {
    Sweep uniform = start;
    const auto runs = uniform_budget(o.sweep, next.compute, centred);
    for (const PlannedRun& r : runs) uniform.compute += r.compute_6n;
    simulate_into(uniform, runs, expr, truth, o.noise, o.seed);
    (centred ? result.uniform_centred : result.uniform) =
        measure(centred ? "uniform, 20 tokens/param" : "uniform, sweep's layout", fit(uniform),
                result.target_budget, result.true_n_opt, uniform.compute);
  }
  return result;
}

}  // namespace moescale::fitting
