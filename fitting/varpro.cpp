// Variable projection (see varpro.h). The inner problem, for fixed nonlinear parameters theta:
// minimise sum_i Huber(log(Phi_i c + phi0_i) - log L_i) over the bounded coefficients c. Each
// step linearises the log at the current prediction and reweights the Huber loss (weight 1
// inside delta, delta/|r| beyond), which is a bounded weighted least squares in c; a step is
// halved until the objective decreases, so the iteration never goes uphill.
#include "fitting/fit.h"
#include "fitting/varpro.h"

#include <ceres/ceres.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <limits>

namespace moescale::fitting {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int kInnerIterations = 100;
// The semismooth Newton model gives points outside delta (no curvature of their own) this
// share of their reweighted curvature, so that it stays positive definite.
constexpr double kOutsideCurvature = 1e-2;

bool at_bound(double v, double lo, double hi) {
  const double tol = 1e-12 * std::max(1.0, std::abs(v));
  return v <= lo + tol || v >= hi - tol;
}

}  // namespace

std::vector<double> bounded_quadratic_minimum(std::span<const double> G_in,
                                              std::span<const double> b_in,
                                              std::span<const double> lower,
                                              std::span<const double> upper) {
  const int k = static_cast<int>(b_in.size());
  // Scaled to a unit diagonal: columns of very different size (1 and N^-0.35) stay solvable.
  Eigen::VectorXd d(k);
  for (int i = 0; i < k; ++i) {
    const double g = G_in[i * k + i];
    d[i] = g > 0 && std::isfinite(g) ? 1 / std::sqrt(g) : 1.0;
  }
  Eigen::MatrixXd G(k, k);
  Eigen::VectorXd b(k), lo(k), hi(k), z(k);
  for (int i = 0; i < k; ++i) {
    for (int j = 0; j < k; ++j) G(i, j) = G_in[i * k + j] * d[i] * d[j];
    G(i, i) += 1e-12;
    b[i] = b_in[i] * d[i];
    lo[i] = lower[i] / d[i];
    hi[i] = upper[i] / d[i];
  }
  // 0: free, -1: at lower, +1: at upper. Start with every bounded variable at a bound.
  std::vector<int> state(k, 0);
  for (int i = 0; i < k; ++i) {
    if (std::isfinite(lo[i]))
      state[i] = -1, z[i] = lo[i];
    else if (std::isfinite(hi[i]))
      state[i] = 1, z[i] = hi[i];
    else
      z[i] = 0;
  }
  for (int iter = 0; iter < 10 * k + 20; ++iter) {
    std::vector<int> free;
    for (int i = 0; i < k; ++i)
      if (state[i] == 0) free.push_back(i);
    Eigen::VectorXd target = z;
    if (!free.empty()) {
      const int f = static_cast<int>(free.size());
      Eigen::MatrixXd Gff(f, f);
      Eigen::VectorXd rhs(f);
      for (int a = 0; a < f; ++a) {
        rhs[a] = b[free[a]];
        for (int i = 0; i < k; ++i)
          if (state[i] != 0) rhs[a] -= G(free[a], i) * z[i];
        for (int c = 0; c < f; ++c) Gff(a, c) = G(free[a], free[c]);
      }
      const Eigen::VectorXd zf = Gff.ldlt().solve(rhs);
      for (int a = 0; a < f; ++a) target[free[a]] = zf[a];
    }
    // Move from z toward target, stopping at the first bound crossed (which then binds).
    double step = 1;
    int blocking = -1;
    for (int i : free) {
      if (target[i] < lo[i] && target[i] < z[i]) {
        const double s = (lo[i] - z[i]) / (target[i] - z[i]);
        if (s < step) step = s, blocking = i;
      } else if (target[i] > hi[i] && target[i] > z[i]) {
        const double s = (hi[i] - z[i]) / (target[i] - z[i]);
        if (s < step) step = s, blocking = i;
      }
    }
    for (int i : free) z[i] += std::max(0.0, step) * (target[i] - z[i]);
    if (blocking >= 0) {
      state[blocking] = target[blocking] < lo[blocking] ? -1 : 1;
      z[blocking] = state[blocking] < 0 ? lo[blocking] : hi[blocking];
      continue;
    }
    // Optimal on the free set: free the bound variable whose gradient points inside most.
    const Eigen::VectorXd g = G * z - b;
    int release = -1;
    double worst = 1e-14;
    for (int i = 0; i < k; ++i) {
      const double pull = state[i] < 0 ? -g[i] : state[i] > 0 ? g[i] : 0;
      if (pull > worst) worst = pull, release = i;
    }
    if (release < 0) break;
    state[release] = 0;
  }
  std::vector<double> c(k);
  for (int i = 0; i < k; ++i) c[i] = std::clamp(z[i] * d[i], lower[i], upper[i]);
  return c;
}

// The basis values of every row at one theta: Phi (m x K, row-major), phi0 (m) and, when asked,
// their derivatives in theta.
struct Basis {
  std::vector<double> phi, phi0;    // values
  std::vector<double> dphi, dphi0;  // (m x K x T), (m x T)
};

struct VarproSolver::Impl {
  const Separable& sep;
  std::size_t n_params;
  std::vector<const Point*> points;
  std::vector<double> log_loss, loss;
  double delta;
  std::vector<double> lower, upper;      // law order
  std::vector<double> c_lower, c_upper;  // coefficient space
  int max_iterations;
  std::size_t K, T, m;

  // The coefficients of the last inner solve: the next evaluation starts from them.
  std::vector<double> c;
  bool warm = false;

  Impl(const Separable& s, std::size_t n, const std::vector<Point>& pts,
       const std::vector<double>& ll, const std::vector<std::size_t>& rows, double d,
       const std::vector<double>& lo, const std::vector<double>& hi, int iters)
      : sep(s), n_params(n), delta(d), lower(lo), upper(hi), max_iterations(iters) {
    for (std::size_t r : rows) {
      points.push_back(&pts[r]);
      log_loss.push_back(ll[r]);
      loss.push_back(std::exp(ll[r]));
    }
    K = sep.coefficients.size();
    T = sep.nonlinear.size();
    m = points.size();
    for (const auto& coef : sep.coefficients) {
      const double l = lower.empty() ? -kInf : lower[coef.param];
      const double h = upper.empty() ? kInf : upper[coef.param];
      c_lower.push_back(coef.log_scale ? (std::isfinite(l) ? std::exp(l) : 0.0) : l);
      c_upper.push_back(coef.log_scale ? std::exp(h) : h);
    }
  }

  template <typename J>
  static double value_of(const J& v) {
    if constexpr (std::is_same_v<J, double>)
      return v;
    else
      return v.a;
  }

  template <typename J>
  void eval_basis(const J* theta, Basis& out, bool derivatives) const {
    out.phi.assign(m * K, 0);
    out.phi0.assign(m, 0);
    if (derivatives) {
      out.dphi.assign(m * K * T, 0);
      out.dphi0.assign(m * T, 0);
    }
    thread_local std::vector<J> slots;
    sep.basis.eval_uniform(theta, slots);
    for (std::size_t i = 0; i < m; ++i) {
      sep.basis.eval_varying(theta, *points[i], slots);
      for (std::size_t k = 0; k < K; ++k)
        for (int32_t node : sep.coefficients[k].outputs) {
          out.phi[i * K + k] += value_of(slots[node]);
          if constexpr (!std::is_same_v<J, double>)
            for (std::size_t t = 0; t < T; ++t) out.dphi[(i * K + k) * T + t] += slots[node].v[t];
        }
      for (int32_t node : sep.offset) {
        out.phi0[i] += value_of(slots[node]);
        if constexpr (!std::is_same_v<J, double>)
          for (std::size_t t = 0; t < T; ++t) out.dphi0[i * T + t] += slots[node].v[t];
      }
    }
  }

  // Huber objective at coefficients cc; infinite where a prediction is not positive.
  double objective(const Basis& b, const std::vector<double>& cc, std::vector<double>* pred) const {
    double sum = 0;
    for (std::size_t i = 0; i < m; ++i) {
      double p = b.phi0[i];
      for (std::size_t k = 0; k < K; ++k) p += b.phi[i * K + k] * cc[k];
      if (!(p > 0) || !std::isfinite(p)) return kInf;
      if (pred) (*pred)[i] = p;
      sum += huber(std::log(p) - log_loss[i], delta);
    }
    return sum;
  }

  // One bounded weighted least squares: rows A_i c ~ t_i with weights w_i.
  std::vector<double> weighted_solve(const Basis& b, const std::vector<double>& scale,
                                     const std::vector<double>& target,
                                     const std::vector<double>& weight) const {
    std::vector<double> G(K * K, 0), rhs(K, 0);
    for (std::size_t i = 0; i < m; ++i) {
      const double* row = &b.phi[i * K];
      for (std::size_t p = 0; p < K; ++p) {
        const double ap = row[p] * scale[i] * weight[i];
        rhs[p] += ap * target[i];
        for (std::size_t q = 0; q <= p; ++q) G[p * K + q] += ap * row[q] * scale[i];
      }
    }
    for (std::size_t p = 0; p < K; ++p)
      for (std::size_t q = 0; q < p; ++q) G[q * K + p] = G[p * K + q];
    return bounded_quadratic_minimum(G, rhs, c_lower, c_upper);
  }

  // Tries c + s (next - c) for s = 1, 1/2, ... (at most `halvings` times); keeps the first
  // that lowers f.
  bool line_search(const Basis& b, const std::vector<double>& next, int halvings, double& f,
                   std::vector<double>& pred) {
    std::vector<double> trial(K);
    double step = 1;
    for (int h = 0; h <= halvings; ++h, step /= 2) {
      for (std::size_t k = 0; k < K; ++k) trial[k] = c[k] + step * (next[k] - c[k]);
      const double f_trial = objective(b, trial, &pred);
      if (f_trial < f) {
        c = trial;
        f = f_trial;
        return true;
      }
    }
    objective(b, c, &pred);
    return false;
  }

  // Solves the coefficients at the basis b (from c when warm). False if no positive prediction
  // could be found. Each step minimises a quadratic model of the objective in c (the log
  // linearised at the current prediction) within the bounds: first the semismooth Newton model
  // (curvature from the points inside delta, which converges in a few steps once it knows
  // which points those are), and where that fails to descend the reweighted one (a majoriser
  // of the Huber loss, which always descends but only linearly).
  bool inner(const Basis& b, double& f) {
    std::vector<double> pred(m), scale(m), target(m), weight(m, 1.0), irls(m), newton(m), slope(m);
    f = warm ? objective(b, c, &pred) : kInf;
    if (f == kInf) {
      // Relative least squares, (L_hat - L) / L ~ log L_hat - log L near the fit.
      for (std::size_t i = 0; i < m; ++i) {
        scale[i] = 1 / loss[i];
        target[i] = 1 - b.phi0[i] / loss[i];
      }
      c = weighted_solve(b, scale, target, weight);
      f = objective(b, c, &pred);
      if (f == kInf) return false;
    }
    for (int it = 0; it < kInnerIterations; ++it) {
      const double before = f;
      for (std::size_t i = 0; i < m; ++i) {
        const double r = std::log(pred[i]) - log_loss[i];
        scale[i] = 1 / pred[i];
        // Both models have the objective's gradient: weight * (A_i c - target) = Huber'(r).
        const double ac = (pred[i] - b.phi0[i]) / pred[i];  // A_i c
        const bool inside = std::abs(r) <= delta;
        irls[i] = inside ? 1.0 : delta / std::abs(r);
        weight[i] = inside ? 1.0 : kOutsideCurvature * irls[i];
        target[i] = ac - r;
        slope[i] = r * irls[i];  // Huber'(r)
        newton[i] = ac - r * irls[i] / weight[i];
      }
      const std::vector<double> step = weighted_solve(b, scale, newton, weight);
      // Stop where the model promises less than rounding: -g'(step - c), g the gradient.
      double promised = 0;
      for (std::size_t i = 0; i < m; ++i) {
        double a_step = 0;
        for (std::size_t k = 0; k < K; ++k) a_step += b.phi[i * K + k] * (step[k] - c[k]);
        promised -= slope[i] * a_step * scale[i];
      }
      if (promised <= 1e-13 * f) break;
      if (!line_search(b, step, 3, f, pred) &&
          !line_search(b, weighted_solve(b, scale, target, irls), 10, f, pred))
        break;
      if (before - f <= 1e-14 * f + 1e-300) break;
    }
    warm = true;
    return true;
  }

  std::vector<double> full_x(std::span<const double> theta) const {
    std::vector<double> x(n_params, 0);
    for (std::size_t t = 0; t < T; ++t) x[sep.nonlinear[t]] = theta[t];
    for (std::size_t k = 0; k < K; ++k) {
      const auto& coef = sep.coefficients[k];
      // A scale at exactly 0 (the term vanishes) has no finite log: keep it tiny instead.
      x[coef.param] = coef.log_scale ? std::log(std::max(c[k], 1e-300)) : c[k];
    }
    return x;
  }
};

namespace {

// Residuals psi(r) with psi^2/2 = Huber (as in fit.cpp), Jacobian projected off the free
// coefficients' columns.
class ProjectedCost final : public ceres::CostFunction {
 public:
  explicit ProjectedCost(VarproSolver::Impl& impl) : s_(impl) {
    set_num_residuals(static_cast<int>(impl.m));
    mutable_parameter_block_sizes()->push_back(static_cast<int32_t>(impl.T));
  }

  bool Evaluate(double const* const* parameters, double* residuals,
                double** jacobians) const override {
    const double* theta = parameters[0];
    const bool want_j = jacobians != nullptr && jacobians[0] != nullptr;
    if (want_j) {
      dispatch_param_count(static_cast<int>(s_.T), [&](auto size) {
        constexpr int kN = decltype(size)::value;
        std::array<ceres::Jet<double, kN>, kN> x;
        for (int t = 0; t < kN; ++t) x[t] = ceres::Jet<double, kN>(theta[t], t);
        s_.eval_basis(x.data(), basis_, true);
      });
    } else {
      s_.eval_basis(theta, basis_, false);
    }
    double f = 0;
    if (!s_.inner(basis_, f)) return false;
    const std::size_t m = s_.m, K = s_.K, T = s_.T;
    std::vector<double> slope(m), pred(m);
    for (std::size_t i = 0; i < m; ++i) {
      double p = basis_.phi0[i];
      for (std::size_t k = 0; k < K; ++k) p += basis_.phi[i * K + k] * s_.c[k];
      pred[i] = p;
      const double r = std::log(p) - s_.log_loss[i];
      const double a = std::abs(r);
      if (a <= s_.delta) {
        residuals[i] = r, slope[i] = 1;
      } else {
        const double v = std::sqrt(2 * s_.delta * a - s_.delta * s_.delta);
        residuals[i] = r < 0 ? -v : v;
        slope[i] = s_.delta / v;
      }
      if (!std::isfinite(residuals[i])) return false;
    }
    if (!want_j) return true;
    using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Eigen::Map<RowMajor> J(jacobians[0], static_cast<Eigen::Index>(m),
                           static_cast<Eigen::Index>(T));
    std::vector<std::size_t> free;
    for (std::size_t k = 0; k < K; ++k)
      if (!at_bound(s_.c[k], s_.c_lower[k], s_.c_upper[k])) free.push_back(k);
    Eigen::MatrixXd Jc(m, free.size());
    for (std::size_t i = 0; i < m; ++i) {
      const double w = slope[i] / pred[i];
      for (std::size_t t = 0; t < T; ++t) {
        double d = basis_.dphi0[i * T + t];
        for (std::size_t k = 0; k < K; ++k) d += s_.c[k] * basis_.dphi[(i * K + k) * T + t];
        J(i, t) = w * d;
      }
      for (std::size_t a = 0; a < free.size(); ++a) Jc(i, a) = w * basis_.phi[i * K + free[a]];
    }
    if (!free.empty()) {
      // J -= Q Q' J, Q an orthonormal basis of the free coefficients' columns.
      Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(Jc);
      const auto rank = qr.rank();
      if (rank > 0) {
        const Eigen::MatrixXd Q =
            qr.householderQ() * Eigen::MatrixXd::Identity(static_cast<Eigen::Index>(m), rank);
        const Eigen::MatrixXd QtJ = Q.transpose() * J;
        J -= Q * QtJ;
      }
    }
    for (Eigen::Index i = 0; i < J.size(); ++i)
      if (!std::isfinite(J.data()[i])) return false;
    return true;
  }

 private:
  VarproSolver::Impl& s_;
  mutable Basis basis_;
};

}  // namespace

VarproSolver::VarproSolver(const Separable& separable, std::size_t n_params,
                           const std::vector<Point>& points, const std::vector<double>& log_loss,
                           const std::vector<std::size_t>& rows, double delta,
                           const std::vector<double>& lower, const std::vector<double>& upper,
                           int max_iterations)
    : impl_(std::make_unique<Impl>(separable, n_params, points, log_loss, rows, delta, lower, upper,
                                   max_iterations)) {}

VarproSolver::~VarproSolver() = default;

VarproOutcome VarproSolver::run(std::span<const double> start) {
  Impl& s = *impl_;
  VarproOutcome out;
  std::vector<double> theta(s.T);
  for (std::size_t t = 0; t < s.T; ++t) {
    const int p = s.sep.nonlinear[t];
    const double lo = s.lower.empty() ? -kInf : s.lower[p];
    const double hi = s.upper.empty() ? kInf : s.upper[p];
    theta[t] = std::clamp(start[p], lo, hi);  // Ceres needs a feasible start
  }
  s.warm = false;  // a start's result must not depend on which start ran before it
  out.converged = true;
  if (s.T > 0) {
    ceres::Problem::Options po;
    po.cost_function_ownership = ceres::DO_NOT_TAKE_OWNERSHIP;
    ceres::Problem problem(po);
    ProjectedCost cost(s);
    problem.AddResidualBlock(&cost, nullptr, theta.data());
    for (std::size_t t = 0; t < s.T; ++t) {
      const int p = s.sep.nonlinear[t];
      if (!s.lower.empty() && std::isfinite(s.lower[p]))
        problem.SetParameterLowerBound(theta.data(), static_cast<int>(t), s.lower[p]);
      if (!s.upper.empty() && std::isfinite(s.upper[p]))
        problem.SetParameterUpperBound(theta.data(), static_cast<int>(t), s.upper[p]);
    }
    ceres::Solver::Options options;
    options.linear_solver_type = ceres::DENSE_QR;
    options.max_num_iterations = s.max_iterations;
    options.logging_type = ceres::SILENT;
    options.num_threads = 1;
    options.function_tolerance = 1e-12;
    options.parameter_tolerance = 1e-12;
    options.gradient_tolerance = 1e-14;
    ceres::Solver::Summary summary;
    ceres::Solve(options, &problem, &summary);
    out.converged = summary.termination_type == ceres::CONVERGENCE;
  }
  // The last evaluation may have been a rejected trial step: solve again at the final theta.
  Basis b;
  s.eval_basis(theta.data(), b, false);
  double f = 0;
  out.ok = s.inner(b, f) && std::isfinite(f);
  out.objective = out.ok ? f : kInf;
  out.x = s.full_x(theta);
  for (double v : out.x) out.ok = out.ok && std::isfinite(v);
  return out;
}

}  // namespace moescale::fitting
