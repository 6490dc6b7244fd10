// Robust multi-start fitting with Ceres: minimise sum_i Huber_delta(log L_hat_i - log L_i)
// from every point of the law's grid with Levenberg-Marquardt (DENSE_QR), polish the best few,
// keep the best; bootstrap intervals and held-out error.
//
// The Huber loss is folded into the residuals (AllPointsCost below) rather than given to Ceres
// as a HuberLoss on one block per run: the objective and its gradient are the same, and one
// 240-row block is about twice as fast as 240 one-row blocks (measured on the reference data).
#include <ceres/ceres.h>
#include <fmt/format.h>
#include <glog/logging.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>

#include "fitting/diagnostics.h"
#include "fitting/fit.h"
#include "fitting/recommend.h"
#include "fitting/program.h"
#include "fitting/varpro.h"

namespace moescale::fitting {
namespace {

using Clock = std::chrono::steady_clock;

// All runs in one residual block, residual psi(r) with psi(r)^2 / 2 = Huber_delta(r):
// psi = r inside delta, sign(r) sqrt(2 delta |r| - delta^2) beyond. Ceres' cost 1/2 sum psi^2 is
// then the Huber objective exactly and the Jacobian psi'(r) dr/dp is exact, so Levenberg-
// Marquardt minimises the same function as with a HuberLoss per block, without the per-block
// overhead, and the uniform part of the law is computed once per evaluation.
class AllPointsCost final : public ceres::CostFunction {
 public:
  AllPointsCost(const Program& program, const std::vector<const Point*>& points,
                const std::vector<double>& log_loss, double delta)
      : program_(program), points_(points), log_loss_(log_loss), delta_(delta) {
    set_num_residuals(static_cast<int>(points.size()));
    mutable_parameter_block_sizes()->push_back(static_cast<int32_t>(program.params.size()));
  }

  bool Evaluate(double const* const* parameters, double* residuals,
                double** jacobians) const override {
    const double* p = parameters[0];
    const std::size_t m = points_.size();
    if (jacobians == nullptr || jacobians[0] == nullptr) {
      thread_local std::vector<double> slots;
      program_.eval_uniform(p, slots);
      for (std::size_t i = 0; i < m; ++i) {
        const double r = std::log(program_.eval_varying(p, *points_[i], slots)) - log_loss_[i];
        residuals[i] = psi(r).first;
        if (!std::isfinite(residuals[i])) return false;
      }
      return true;
    }
    bool ok = true;
    dispatch_param_count(static_cast<int>(program_.params.size()), [&](auto size) {
      constexpr int kN = decltype(size)::value;
      using J = ceres::Jet<double, kN>;
      thread_local std::vector<J> slots;
      std::array<J, kN> x;
      for (int k = 0; k < kN; ++k) x[k] = J(p[k], k);
      program_.eval_uniform(x.data(), slots);
      for (std::size_t i = 0; i < m && ok; ++i) {
        const J r = log(program_.eval_varying(x.data(), *points_[i], slots)) - log_loss_[i];
        const auto [value, slope] = psi(r.a);
        residuals[i] = value;
        ok = std::isfinite(value);
        for (int k = 0; k < kN; ++k) {
          jacobians[0][i * kN + k] = slope * r.v[k];
          ok = ok && std::isfinite(jacobians[0][i * kN + k]);
        }
      }
    });
    return ok;
  }

 private:
  std::pair<double, double> psi(double r) const {
    const double a = std::abs(r);
    if (a <= delta_) return {r, 1.0};
    const double v = std::sqrt(2 * delta_ * a - delta_ * delta_);
    return {r < 0 ? -v : v, delta_ / v};
  }

  const Program& program_;
  std::vector<const Point*> points_;
  std::vector<double> log_loss_;
  double delta_;
};

struct Data {
  std::vector<Point> points;
  std::vector<double> log_loss;
  std::vector<double> lower, upper;  // per parameter, in program order
};

Data make_data(const std::vector<Observation>& obs) {
  Data d;
  for (const auto& o : obs) {
    d.points.push_back(make_point(o));
    d.log_loss.push_back(std::log(o.loss));
  }
  return d;
}

struct Outcome {
  bool ok = false;
  bool converged = false;
  double objective = std::numeric_limits<double>::infinity();
  std::vector<double> x;
};

// Solves one problem (a law on a multiset of rows) again from each start.
class Solver {
 public:
  virtual ~Solver() = default;
  virtual Outcome run(const std::vector<double>& start) = 0;
};

// One worker's Ceres problem over all the law's parameters.
class StartSolver final : public Solver {
 public:
  StartSolver(const Program& program, const Data& data, const std::vector<std::size_t>& rows,
              const FitOptions& options, int max_iterations)
      : program_(program), data_(data), rows_(rows), x_(program.params.size()) {
    ceres::Problem::Options po;
    po.cost_function_ownership = ceres::DO_NOT_TAKE_OWNERSHIP;
    problem_ = std::make_unique<ceres::Problem>(po);
    std::vector<const Point*> points;
    std::vector<double> log_loss;
    for (std::size_t r : rows) {
      points.push_back(&data.points[r]);
      log_loss.push_back(data.log_loss[r]);
    }
    cost_ = std::make_unique<AllPointsCost>(program, points, log_loss, options.delta);
    problem_->AddResidualBlock(cost_.get(), nullptr, x_.data());
    for (int i = 0; i < static_cast<int>(data.lower.size()); ++i) {
      if (std::isfinite(data.lower[i]))
        problem_->SetParameterLowerBound(x_.data(), i, data.lower[i]);
      if (std::isfinite(data.upper[i]))
        problem_->SetParameterUpperBound(x_.data(), i, data.upper[i]);
    }
    solver_options_.linear_solver_type = ceres::DENSE_QR;
    solver_options_.max_num_iterations = max_iterations;
    solver_options_.logging_type = ceres::SILENT;
    solver_options_.minimizer_progress_to_stdout = false;
    solver_options_.num_threads = 1;
    solver_options_.function_tolerance = 1e-10;
    solver_options_.parameter_tolerance = 1e-10;
    solver_options_.gradient_tolerance = 1e-14;
    delta_ = options.delta;
  }

  Outcome run(const std::vector<double>& start) override {
    std::copy(start.begin(), start.end(), x_.begin());
    for (std::size_t i = 0; i < data_.lower.size(); ++i)  // Ceres needs a feasible start
      x_[i] = std::clamp(x_[i], data_.lower[i], data_.upper[i]);
    Outcome out;
    ceres::Solver::Summary summary;
    ceres::Solve(solver_options_, problem_.get(), &summary);
    out.x = x_;
    // Ceres' final cost is 1/2 sum rho = sum Huber_delta exactly; after a failure (a start or
    // step in overflow) recompute it at the point Ceres left.
    out.objective = summary.termination_type == ceres::FAILURE ? objective(x_) : summary.final_cost;
    out.ok = std::isfinite(out.objective);
    out.converged = summary.termination_type == ceres::CONVERGENCE;
    return out;
  }

  double objective(const std::vector<double>& x) {
    double sum = 0;
    program_.eval_uniform(x.data(), slots_);
    for (std::size_t r : rows_)
      sum += huber(
          std::log(program_.eval_varying(x.data(), data_.points[r], slots_)) - data_.log_loss[r],
          delta_);
    return sum;
  }

 private:
  const Program& program_;
  const Data& data_;
  std::vector<std::size_t> rows_;
  std::vector<double> x_;
  double delta_ = 0;
  std::unique_ptr<AllPointsCost> cost_;
  std::unique_ptr<ceres::Problem> problem_;
  ceres::Solver::Options solver_options_;
  std::vector<double> slots_;
};

// Variable projection: the search covers only the nonlinear parameters (varpro.h).
class ProjectedSolver final : public Solver {
 public:
  ProjectedSolver(const Program& program, const Data& data, const std::vector<std::size_t>& rows,
                  const FitOptions& options, int max_iterations)
      : solver_(*program.separable, program.params.size(), data.points, data.log_loss, rows,
                options.delta, data.lower, data.upper, max_iterations) {}
  Outcome run(const std::vector<double>& start) override {
    const VarproOutcome v = solver_.run(start);
    return {v.ok, v.converged, v.ok ? v.objective : std::numeric_limits<double>::infinity(), v.x};
  }

 private:
  VarproSolver solver_;
};

using SolverFactory = std::function<std::unique_ptr<Solver>()>;

SolverFactory full_solver(const Program& program, const Data& data,
                          const std::vector<std::size_t>& rows, const FitOptions& options,
                          int max_iterations) {
  return [&program, &data, rows, &options, max_iterations] {
    return std::make_unique<StartSolver>(program, data, rows, options, max_iterations);
  };
}

// The projected solver where the law has linear parameters, else the full one.
SolverFactory best_solver(const Program& program, const Data& data,
                          const std::vector<std::size_t>& rows, const FitOptions& options,
                          int max_iterations) {
  if (!program.separable) return full_solver(program, data, rows, options, max_iterations);
  return [&program, &data, rows, &options, max_iterations]() -> std::unique_ptr<Solver> {
    return std::make_unique<ProjectedSolver>(program, data, rows, options, max_iterations);
  };
}

// Calls the progress callback from any worker, one call at a time, about 100 times per stage.
class Progress {
 public:
  Progress(const FitOptions& options, std::string_view stage, std::size_t total)
      : fn_(options.progress), stage_(stage), total_(total) {}
  void tick() {
    const std::size_t done = ++done_;
    if (!fn_ || (done % std::max<std::size_t>(1, total_ / 100) != 0 && done != total_)) return;
    std::lock_guard lock(mutex_);
    fn_(stage_, done, total_);
  }

 private:
  const std::function<void(std::string_view, std::size_t, std::size_t)>& fn_;
  std::string_view stage_;
  std::size_t total_;
  std::atomic<std::size_t> done_{0};
  std::mutex mutex_;
};

// Runs work(worker_index, item) for items [0, n) on `threads` threads; rethrows the first error.
template <typename Work>
void parallel_for(std::size_t n, int threads, Work&& work) {
  std::atomic<std::size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&](int w) {
    try {
      for (std::size_t i = next++; i < n; i = next++) work(w, i);
    } catch (...) {
      std::lock_guard lock(error_mutex);
      if (!error) error = std::current_exception();
      next = n;
    }
  };
  const int t = std::max(1, std::min<int>(threads, static_cast<int>(std::max<std::size_t>(n, 1))));
  std::vector<std::thread> pool;
  for (int w = 1; w < t; ++w) pool.emplace_back(worker, w);
  worker(0);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

// The starting points: the product of the grids of the parameters in `searched` (law order);
// the others (solved inside each evaluation) keep their first grid value.
std::vector<std::vector<double>> grid_starts(const Law& law, const std::vector<bool>& searched,
                                             std::size_t max_starts) {
  std::size_t size = 1;
  for (std::size_t i = 0; i < law.grid.size(); ++i) {
    if (!searched[i]) continue;
    const std::size_t n = law.grid[i].values.size();
    if (n != 0 && size > max_starts / n)
      throw std::invalid_argument(fmt::format(
          "law \"{}\": the starting grid is too large (more than the limit of {} points); give "
          "fewer values with --grid name=v1,v2",
          law.name, max_starts));
    size *= n;
  }
  std::vector<std::vector<double>> starts;
  std::set<std::vector<double>> seen;
  std::vector<std::size_t> digit(law.grid.size(), 0);
  for (std::size_t n = 0; n < size; ++n) {
    std::vector<double> x(law.grid.size());
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = law.grid[i].values[digit[i]];
    if (seen.insert(x).second) starts.push_back(std::move(x));
    for (std::size_t i = digit.size(); i-- > 0;) {  // mixed-radix increment, last fastest
      if (!searched[i]) continue;
      if (++digit[i] < law.grid[i].values.size()) break;
      digit[i] = 0;
    }
  }
  return starts;
}

std::vector<Outcome> run_starts(const SolverFactory& make,
                                const std::vector<std::vector<double>>& starts,
                                const FitOptions& options, std::string_view stage) {
  std::vector<Outcome> outcomes(starts.size());
  std::vector<std::unique_ptr<Solver>> solvers(std::max(1, options.threads));
  Progress progress(options, stage, starts.size());
  parallel_for(starts.size(), options.threads, [&](int w, std::size_t i) {
    if (!solvers[w]) solvers[w] = make();
    outcomes[i] = solvers[w]->run(starts[i]);
    progress.tick();
  });
  return outcomes;
}

// The best outcome and up to `k - 1` other distinct local optima, best first: the "small
// grid" each bootstrap resample starts from.
std::vector<std::vector<double>> distinct_optima(std::vector<Outcome> outcomes, std::size_t k) {
  std::sort(outcomes.begin(), outcomes.end(),
            [](const Outcome& a, const Outcome& b) { return a.objective < b.objective; });
  std::vector<std::vector<double>> out;
  for (const auto& o : outcomes) {
    if (!o.ok || out.size() >= k) break;
    const bool dup = std::any_of(out.begin(), out.end(), [&](const std::vector<double>& x) {
      for (std::size_t i = 0; i < x.size(); ++i)
        if (std::abs(x[i] - o.x[i]) > 1e-3 * std::max(1.0, std::abs(x[i]))) return false;
      return true;
    });
    if (!dup) out.push_back(o.x);
  }
  return out;
}

std::map<std::string, double> report(const std::vector<ReportedParam>& reported,
                                     const std::vector<std::string>& names,
                                     const std::vector<double>& x) {
  std::map<std::string, double> out;
  for (const auto& r : reported) {
    const Expression e = Expression::parse(r.expression, "reported parameter");
    std::vector<double> args;
    for (const auto& p : e.params()) {
      const auto it = std::find(names.begin(), names.end(), p);
      if (it == names.end())
        throw std::invalid_argument(
            fmt::format("reported parameter {} needs \"{}\", which has no value", r.name, p));
      args.push_back(x[it - names.begin()]);
    }
    out[r.name] = e.evaluate(args, Observation{});
  }
  return out;
}

std::vector<std::size_t> all_rows(std::size_t n) {
  std::vector<std::size_t> rows(n);
  for (std::size_t i = 0; i < n; ++i) rows[i] = i;
  return rows;
}

void check_sizes(const Law& law, std::size_t n_points, std::size_t n_params,
                 std::string_view what) {
  if (n_points <= n_params)
    throw std::invalid_argument(
        fmt::format("law \"{}\" has {} parameters but {} has only {} points; it needs at least {}",
                    law.name, n_params, what, n_points, n_params + 1));
}

struct BestFit {
  std::vector<double> x;
  double objective = 0;
  std::size_t starts = 0, converged = 0;
  std::vector<Outcome> outcomes;
};

bool within_bounds(const Data& data, const std::vector<double>& x) {
  for (std::size_t i = 0; i < data.lower.size(); ++i)
    if (x[i] < data.lower[i] || x[i] > data.upper[i]) return false;
  return true;
}

// Large imports: the starts are screened on an even subsample of at most this many rows, and
// only the best few are then solved on all of them, so the cost of the grid does not grow with
// the data.
constexpr std::size_t kScreenRows = 4000;
constexpr int kProjectedIterations = 200;  // well-conditioned: converges in a few dozen
constexpr int kProjectedScreenIterations = 5;
constexpr std::size_t kProjectedPolish = 3;
constexpr std::size_t kFullPolish = 2;

std::vector<std::size_t> screen_rows(const std::vector<std::size_t>& rows) {
  if (rows.size() <= kScreenRows) return rows;
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < kScreenRows; ++i) out.push_back(rows[i * rows.size() / kScreenRows]);
  return out;
}

[[noreturn]] void no_finite_start(const Law& law) {
  throw std::runtime_error(fmt::format(
      "law \"{}\": no starting point gave a finite loss on the data; check the expression "
      "(logs of negative values?) or give other starting values with --grid",
      law.name));
}

const Outcome* best_of(std::initializer_list<const std::vector<Outcome>*> pools) {
  const Outcome* winner = nullptr;
  for (const auto* pool : pools)
    for (const auto& o : *pool)
      if (o.ok && (!winner || o.objective < winner->objective)) winner = &o;
  return winner;
}

// The full search: a short unbounded pass from every start, then the best distinct results
// polished with the bounds.
BestFit fit_grid_full(const Law& law, const Program& program, const Data& data,
                      const std::vector<std::size_t>& rows, const FitOptions& options,
                      std::string_view stage) {
  const auto starts =
      grid_starts(law, std::vector<bool>(program.params.size(), true), options.max_starts);
  const std::vector<std::size_t> screen = screen_rows(rows);
  BestFit best;
  // The short first pass runs without bounds: bounded steps cost Ceres about 3x (measured on
  // the reference fit), and the pass only has to find basins. Finalists inside the bounds,
  // and the best ones outside pulled back in, are polished with the bounds.
  Data unbounded = data;
  unbounded.lower.clear();
  unbounded.upper.clear();
  best.outcomes =
      run_starts(full_solver(program, unbounded, screen, options, options.max_iterations), starts,
                 options, stage);
  best.starts = starts.size();
  for (const auto& o : best.outcomes) best.converged += o.converged;
  std::vector<Outcome> inside, outside;
  for (auto& o : best.outcomes) (within_bounds(data, o.x) ? inside : outside).push_back(o);
  const std::size_t k = std::max(1, options.polish);
  auto finalists = distinct_optima(inside, k);
  for (auto& x : distinct_optima(outside, k)) finalists.push_back(std::move(x));
  const bool subsampled = screen.size() < rows.size();
  // With a subsample the finalists are polished on it, and only the best on all rows.
  std::vector<Outcome> polished = run_starts(
      full_solver(program, data, subsampled ? screen : rows, options, options.polish_iterations),
      finalists, options, "polish");
  if (subsampled) {
    polished = run_starts(full_solver(program, data, rows, options, options.polish_iterations),
                          distinct_optima(polished, 1), options, "polish on all rows");
    inside.clear();  // their objectives are on the subsample
  }
  const Outcome* winner = best_of({&inside, &polished});
  if (!winner) no_finite_start(law);
  best.x = winner->x;
  best.objective = winner->objective;
  // What the bootstrap starts from: optima inside the bounds only.
  inside.insert(inside.end(), polished.begin(), polished.end());
  best.outcomes = std::move(inside);
  return best;
}

// The best `k` distinct results of a screen, less those that cannot win: a start still at
// twice the best objective after the screen is in a worse basin.
std::vector<std::vector<double>> contenders(const std::vector<Outcome>& outcomes, std::size_t k) {
  auto out = distinct_optima(outcomes, k);
  if (out.empty()) return out;
  double best = std::numeric_limits<double>::infinity();
  for (const auto& o : outcomes)
    if (o.ok) best = std::min(best, o.objective);
  std::vector<std::vector<double>> kept;
  for (const auto& x : out)
    for (const auto& o : outcomes)
      if (o.x == x && o.objective <= 2 * best + 1e-300) {
        kept.push_back(x);
        break;
      }
  return kept;
}

// Variable projection: every start of the nonlinear parameters' grid runs to convergence (a
// few well-conditioned dimensions), then the best few are polished over all parameters, which
// lands on the exact optimum of the same objective.
BestFit fit_grid_projected(const Law& law, const Program& program, const Data& data,
                           const std::vector<std::size_t>& rows, const FitOptions& options,
                           std::string_view stage) {
  const Separable& sep = *program.separable;
  std::vector<bool> searched(program.params.size(), false);
  for (int p : sep.nonlinear) searched[p] = true;
  const auto starts = grid_starts(law, searched, options.max_starts);
  const std::vector<std::size_t> screen = screen_rows(rows);
  BestFit best;
  // Which basin a start is in shows within a few steps: the best few distinct results then run
  // to convergence, and the best of those are polished over all parameters.
  std::vector<Outcome> outcomes =
      run_starts(best_solver(program, data, screen, options,
                             std::min(options.max_iterations, kProjectedScreenIterations)),
                 starts, options, stage);
  best.starts = starts.size();
  for (const auto& o : outcomes) best.converged += o.converged;
  const std::size_t k = std::min<std::size_t>(std::max(1, options.polish), kProjectedPolish);
  outcomes = run_starts(best_solver(program, data, screen, options, kProjectedIterations),
                        contenders(outcomes, k), options, "polish");
  // With a subsample, its winner is polished on all rows over all parameters: from so close a
  // start that takes a few steps (about 1 s on 877k rows), far fewer than projected steps.
  const bool subsampled = screen.size() < rows.size();
  auto finalists = distinct_optima(outcomes, subsampled ? 1 : kFullPolish);
  const auto polished =
      run_starts(full_solver(program, data, rows, options, options.polish_iterations), finalists,
                 options, subsampled ? "polish on all rows" : "polish");
  const std::vector<Outcome> none;
  const Outcome* winner = best_of({subsampled ? &none : &outcomes, &polished});
  if (!winner) no_finite_start(law);
  best.x = winner->x;
  best.objective = winner->objective;
  outcomes.insert(outcomes.end(), polished.begin(), polished.end());
  best.outcomes = std::move(outcomes);
  return best;
}

BestFit fit_grid(const Law& law, const Program& program, const Data& data,
                 const std::vector<std::size_t>& rows, const FitOptions& options,
                 std::string_view stage) {
  return program.separable ? fit_grid_projected(law, program, data, rows, options, stage)
                           : fit_grid_full(law, program, data, rows, options, stage);
}

double rmsle_of(const Program& program, const Data& data, const std::vector<std::size_t>& rows,
                const std::vector<double>& x, double* mean_error = nullptr) {
  std::vector<double> slots;
  double sq = 0, sum = 0;
  for (std::size_t r : rows) {
    const double e =
        std::log(program.eval<double>(x.data(), data.points[r], slots)) - data.log_loss[r];
    sq += e * e;
    sum += e;
  }
  if (mean_error) *mean_error = sum / static_cast<double>(rows.size());
  return std::sqrt(sq / static_cast<double>(rows.size()));
}

void bootstrap(const Law& law, const Program& program, const Data& data, const BestFit& best,
               const FitOptions& options, FitResult& result) {
  const auto starts = distinct_optima(best.outcomes, 5);
  const std::size_t n = data.points.size();
  std::vector<std::map<std::string, double>> samples(options.bootstrap);
  std::vector<std::map<std::string, double>> fitted(options.bootstrap);
  std::vector<bool> ok(options.bootstrap, false);
  Progress progress(options, "bootstrap", options.bootstrap);
  parallel_for(options.bootstrap, options.threads, [&](int, std::size_t b) {
    // One generator per resample: results do not depend on the thread count.
    std::mt19937_64 rng(options.seed * 1000003 + b);
    std::uniform_int_distribution<std::size_t> pick(0, n - 1);
    std::vector<std::size_t> rows(n);
    for (auto& r : rows) r = pick(rng);
    const auto solver = best_solver(program, data, rows, options, options.polish_iterations)();
    Outcome winner;
    for (const auto& s : starts) {
      Outcome o = solver->run(s);
      if (o.ok && o.objective < winner.objective) winner = std::move(o);
    }
    if (winner.ok) {
      samples[b] = report(law.reported, program.params, winner.x);
      for (std::size_t i = 0; i < winner.x.size(); ++i) fitted[b][program.params[i]] = winner.x[i];
      ok[b] = true;
    }
    progress.tick();
  });
  for (std::size_t b = 0; b < fitted.size(); ++b)
    if (ok[b]) result.bootstrap_samples.push_back(std::move(fitted[b]));
  for (const auto& r : law.reported) {
    std::vector<double> v;
    for (std::size_t b = 0; b < samples.size(); ++b)
      if (ok[b] && std::isfinite(samples[b][r.name])) v.push_back(samples[b][r.name]);
    if (v.size() >= 2) result.intervals[r.name] = percentile_interval(v, options.confidence);
  }
}

// Holds out the largest `holdout_budgets` budgets (group_budgets) and fits on the rest.
void holdout(const Law& law, const Program& program, const Data& data,
             const std::vector<Observation>& observations, const FitOptions& options,
             FitResult& result) {
  auto compute = [&](std::size_t r) { return data.points[r].value[static_cast<int>(Column::C)]; };
  if (options.holdout_budgets < 1)
    throw std::invalid_argument("holdout needs at least one budget to hold out");
  const std::vector<Budget> budgets = group_budgets(observations);
  std::vector<std::size_t> test, train;
  for (std::size_t b = 0; b < budgets.size(); ++b) {
    const bool held = b + static_cast<std::size_t>(options.holdout_budgets) >= budgets.size();
    auto& to = held ? test : train;
    to.insert(to.end(), budgets[b].rows.begin(), budgets[b].rows.end());
  }
  std::sort(test.begin(), test.end(),
            [&](std::size_t a, std::size_t b) { return compute(a) > compute(b); });
  check_sizes(law, train.size(), program.params.size(), "the training part of the holdout");
  FitOptions inner = options;
  inner.bootstrap = 0;
  const BestFit fit = fit_grid(law, program, data, train, inner, "holdout");
  HoldoutResult h;
  h.method = "largest-compute";
  h.budgets = options.holdout_budgets;
  h.min_compute = compute(test.back());
  h.n_train = train.size();
  h.n_test = test.size();
  h.rmsle = rmsle_of(program, data, test, fit.x, &h.mean_error);
  h.params = report(law.reported, program.params, fit.x);
  result.holdout = h;
}

// Fits on the k smallest budgets and predicts budget k, for every k from the first that leaves
// enough points (2 budgets, 3 for laws of more than 5 parameters).
void rollout(const Law& law, const Program& program, const Data& data,
             const std::vector<Observation>& observations, const FitOptions& options,
             FitResult& result) {
  const std::vector<Budget> budgets = group_budgets(observations);
  const std::size_t first = program.params.size() > 5 ? 3 : 2;
  if (budgets.size() <= first)
    throw std::invalid_argument(fmt::format(
        "--holdout rollout fits on the {} smallest budgets or more and predicts the next, and "
        "these runs hold {} budgets; add budgets, or use --holdout largest-compute",
        first, budgets.size()));
  FitOptions inner = options;
  inner.bootstrap = 0;
  std::vector<std::size_t> train;
  for (std::size_t k = 0; k < budgets.size(); ++k) {
    const std::vector<std::size_t>& test = budgets[k].rows;
    if (k >= first && train.size() > program.params.size()) {
      const BestFit fit = fit_grid(law, program, data, train, inner, "rollout");
      RolloutStep step;
      step.budgets_fitted = k;
      step.compute = budgets[k].compute;
      step.n_train = train.size();
      step.n_test = test.size();
      step.rmsle = rmsle_of(program, data, test, fit.x, &step.mean_error);
      const std::size_t best = *std::min_element(test.begin(), test.end(), [&](auto a, auto b) {
        return observations[a].loss < observations[b].loss;
      });
      step.observed_best_loss = observations[best].loss;
      step.observed_n_opt = observations[best].n_active;
      step.predicted_best_loss = step.predicted_n_opt = std::numeric_limits<double>::quiet_NaN();
      FitResult at = result;
      for (std::size_t i = 0; i < program.params.size(); ++i)
        at.fitted[program.params[i]] = fit.x[i];
      RecommendOptions ro;
      ro.top_k = static_cast<int64_t>(observations[best].top_k);
      try {
        const Choice c = loss_optimal_choice(at, step.compute,
                                             static_cast<int64_t>(observations[best].experts), ro);
        if (c.edge == Edge::none)
          step.predicted_best_loss = c.loss, step.predicted_n_opt = c.n_active;
      } catch (const std::exception&) {
        // A law without N and D (or C) has no loss-optimal N: the step keeps its RMSLE.
      }
      result.rollout.push_back(step);
    }
    train.insert(train.end(), test.begin(), test.end());
  }
}

// Ceres logs a start that steps into overflow as an ERROR on stderr. In a multi-start fit that
// is expected and handled (the start keeps its last finite point or is dropped), and thousands
// of such lines would bury the user's progress output.
void quiet_ceres() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (FLAGS_minloglevel < google::GLOG_FATAL) FLAGS_minloglevel = google::GLOG_FATAL;
  });
}

}  // namespace

std::map<std::string, double> reported_values(const std::vector<ReportedParam>& reported,
                                              const std::map<std::string, double>& fitted) {
  std::vector<std::string> names;
  std::vector<double> x;
  for (const auto& [name, value] : fitted) names.push_back(name), x.push_back(value);
  return report(reported, names, x);
}

double huber(double r, double delta) {
  const double a = std::abs(r);
  return a <= delta ? 0.5 * r * r : delta * (a - 0.5 * delta);
}

double huber_objective(const Expression& law, std::span<const double> params,
                       const std::vector<Observation>& observations, double delta) {
  double sum = 0;
  for (const auto& o : observations)
    sum += huber(std::log(law.evaluate(params, o)) - std::log(o.loss), delta);
  return sum;
}

FitResult fit_law(const Law& law, const std::vector<Observation>& observations,
                  const FitOptions& options) {
  const auto t0 = Clock::now();
  quiet_ceres();
  validate_observations(observations);
  if (!(options.delta > 0)) throw std::invalid_argument("Huber delta must be positive");
  if (options.bootstrap < 0) throw std::invalid_argument("bootstrap count must be >= 0");
  if (options.bootstrap > kMaxBootstrap)
    throw std::invalid_argument(fmt::format(
        "--bootstrap {} is more than the limit of {} resamples; 1000 give 95% intervals "
        "to about 2 digits",
        options.bootstrap, kMaxBootstrap));
  const Expression expr = law.compiled();
  const Program& program = expr.program();
  if (program.params.empty())
    throw std::invalid_argument(fmt::format(
        "law \"{}\" has no parameters to fit (every name in it is a column: N, NT, D, E, K, G, "
        "C); add at least one, e.g. \"E0 + exp(a)/N^alpha\"",
        law.name));
  check_sizes(law, observations.size(), program.params.size(), "the data");
  Data data = make_data(observations);
  for (const ParamGrid& g : law.grid) {  // law.grid is in expression (= program) order
    data.lower.push_back(g.lower);
    data.upper.push_back(g.upper);
  }
  const BestFit best = fit_grid(law, program, data, all_rows(data.points.size()), options, "grid");

  FitResult result;
  result.law = law.name;
  result.expression = law.expression;
  result.definitions = law.definitions;
  result.reported = law.reported;
  for (std::size_t i = 0; i < program.params.size(); ++i)
    result.fitted[program.params[i]] = best.x[i];
  result.params = report(law.reported, program.params, best.x);
  result.objective = best.objective;
  result.rmsle = rmsle_of(program, data, all_rows(data.points.size()), best.x);
  result.delta = options.delta;
  result.n_points = observations.size();
  result.starts = best.starts;
  result.converged = best.converged;
  result.bootstrap = options.bootstrap;
  result.confidence = options.confidence;
  for (const ParamGrid& g : law.grid)
    if (std::isfinite(g.lower) || std::isfinite(g.upper))
      result.bounds[g.name] = {g.lower, g.upper};
  if (options.bootstrap > 0) bootstrap(law, program, data, best, options, result);
  if (options.holdout == Holdout::largest_compute)
    holdout(law, program, data, observations, options, result);
  if (options.holdout == Holdout::rollout)
    rollout(law, program, data, observations, options, result);
  const ReplicateNoise noise = replicate_noise(replicate_sets(observations));
  if (explained_by_seeds(noise)) result.noise = noise;  // else diagnose() says why not
  result.diagnostics = diagnose(result, observations);
  result.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return result;
}

Expression FitResult::compiled() const {
  return Expression::parse(expression, fmt::format("law {}", law), definitions);
}

std::vector<double> FitResult::fitted_vector() const {
  const Expression e = compiled();
  std::vector<double> x;
  for (const auto& p : e.params()) {
    const auto it = fitted.find(p);
    if (it == fitted.end())
      throw std::invalid_argument(
          fmt::format("fit of law \"{}\" has no value for parameter \"{}\"", law, p));
    x.push_back(it->second);
  }
  return x;
}

double FitResult::predict(const Observation& x) const {
  return compiled().evaluate(fitted_vector(), x);
}

std::string to_json(const FitResult& r) {
  using nlohmann::json;
  json j;
  j["law"] = r.law;
  j["expression"] = r.expression;
  j["definitions"] = json::array();
  for (const auto& [name, body] : r.definitions) j["definitions"].push_back({name, body});
  j["reported"] = json::array();
  for (const auto& p : r.reported) j["reported"].push_back({p.name, p.expression});
  j["fitted"] = r.fitted;
  j["params"] = r.params;
  j["objective"] = r.objective;
  j["rmsle"] = r.rmsle;
  j["delta"] = r.delta;
  j["n_points"] = r.n_points;
  j["starts"] = r.starts;
  j["converged"] = r.converged;
  j["bootstrap"] = r.bootstrap;
  j["confidence"] = r.confidence;
  j["intervals"] = json::object();
  for (const auto& [name, iv] : r.intervals)
    j["intervals"][name] = {{"lo", iv.lo}, {"hi", iv.hi}, {"sd", iv.sd}};
  j["bootstrap_samples"] = r.bootstrap_samples;
  if (r.holdout) {
    const auto& h = *r.holdout;
    j["holdout"] = {{"method", h.method},           {"budgets", h.budgets},
                    {"min_compute", h.min_compute}, {"n_train", h.n_train},
                    {"n_test", h.n_test},           {"rmsle", h.rmsle},
                    {"mean_error", h.mean_error},   {"params", h.params}};
  } else {
    j["holdout"] = nullptr;
  }
  j["bounds"] = json::object();  // JSON has no infinity: an open end is null
  for (const auto& [name, b] : r.bounds)
    j["bounds"][name] = {std::isfinite(b.first) ? json(b.first) : json(),
                         std::isfinite(b.second) ? json(b.second) : json()};
  j["diagnostics"] = json::array();
  for (const auto& d : r.diagnostics)
    j["diagnostics"].push_back({{"code", d.code}, {"message", d.message}});
  if (r.noise.measured())
    j["noise"] = {{"sd_log_loss", r.noise.sd_log_loss},
                  {"sets", r.noise.sets},
                  {"runs", r.noise.runs},
                  {"dof", r.noise.dof}};
  if (!r.rollout.empty()) {
    j["rollout"] = json::array();
    for (const RolloutStep& st : r.rollout)
      j["rollout"].push_back({{"budgets_fitted", st.budgets_fitted},
                              {"compute", st.compute},
                              {"n_train", st.n_train},
                              {"n_test", st.n_test},
                              {"rmsle", st.rmsle},
                              {"mean_error", st.mean_error},
                              {"predicted_best_loss", st.predicted_best_loss},
                              {"observed_best_loss", st.observed_best_loss},
                              {"predicted_n_opt", st.predicted_n_opt},
                              {"observed_n_opt", st.observed_n_opt}});
  }
  j["seconds"] = r.seconds;
  return j.dump();
}

namespace {
// JSON has no infinity or NaN: nlohmann writes them as null, so read null back as NaN.
double number(const nlohmann::json& v) {
  return v.is_null() ? std::numeric_limits<double>::quiet_NaN() : v.get<double>();
}
}  // namespace

FitResult fit_result_from_json(std::string_view text) {
  try {
    const auto j = nlohmann::json::parse(text);
    FitResult r;
    r.law = j.at("law").get<std::string>();
    r.expression = j.at("expression").get<std::string>();
    for (const auto& d : j.at("definitions")) r.definitions.emplace_back(d.at(0), d.at(1));
    for (const auto& p : j.at("reported")) r.reported.push_back({p.at(0), p.at(1)});
    r.fitted = j.at("fitted").get<std::map<std::string, double>>();
    r.params = j.at("params").get<std::map<std::string, double>>();
    r.objective = j.at("objective").get<double>();
    r.rmsle = j.at("rmsle").get<double>();
    r.delta = j.at("delta").get<double>();
    r.n_points = j.at("n_points").get<std::size_t>();
    r.starts = j.value("starts", std::size_t{0});
    r.converged = j.value("converged", std::size_t{0});
    r.bootstrap = j.value("bootstrap", 0);
    r.confidence = j.value("confidence", 0.0);
    for (const auto& [name, iv] : j.at("intervals").items())
      r.intervals[name] = {number(iv.at("lo")), number(iv.at("hi")), number(iv.at("sd"))};
    if (j.contains("bootstrap_samples"))
      for (const auto& sample : j.at("bootstrap_samples")) {
        auto& params = r.bootstrap_samples.emplace_back();
        for (const auto& [name, v] : sample.items()) params[name] = number(v);
      }
    if (j.contains("holdout") && !j.at("holdout").is_null()) {
      const auto& h = j.at("holdout");
      r.holdout =
          HoldoutResult{h.at("method"),      h.at("budgets"),
                        h.at("min_compute"), h.at("n_train"),
                        h.at("n_test"),      h.at("rmsle"),
                        h.at("mean_error"),  h.at("params").get<std::map<std::string, double>>()};
    }
    if (j.contains("bounds"))
      for (const auto& [name, b] : j.at("bounds").items()) {
        const double inf = std::numeric_limits<double>::infinity();
        r.bounds[name] = {b.at(0).is_null() ? -inf : b.at(0).get<double>(),
                          b.at(1).is_null() ? inf : b.at(1).get<double>()};
      }
    if (j.contains("diagnostics"))
      for (const auto& d : j.at("diagnostics"))
        r.diagnostics.push_back(
            {d.at("code").get<std::string>(), d.at("message").get<std::string>()});
    if (j.contains("noise")) {  // absent in fits without replicates and in older fits
      const auto& n = j.at("noise");
      r.noise = {n.at("sd_log_loss").get<double>(), n.at("sets").get<std::size_t>(),
                 n.at("runs").get<std::size_t>(), n.at("dof").get<std::size_t>()};
    }
    if (j.contains("rollout"))
      for (const auto& st : j.at("rollout"))
        r.rollout.push_back({st.at("budgets_fitted"), number(st.at("compute")), st.at("n_train"),
                             st.at("n_test"), number(st.at("rmsle")), number(st.at("mean_error")),
                             number(st.at("predicted_best_loss")),
                             number(st.at("observed_best_loss")), number(st.at("predicted_n_opt")),
                             number(st.at("observed_n_opt"))});
    r.seconds = j.value("seconds", 0.0);
    r.fitted_vector();  // the expression parses and every parameter has a value
    return r;
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(fmt::format("stored fit is not valid fit JSON: {}", e.what()));
  }
}

}  // namespace moescale::fitting
