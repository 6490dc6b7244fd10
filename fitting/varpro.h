// Internal to fitting/: variable projection. For a law with a Separable form (program.h), the
// linear coefficients are solved inside each evaluation (a small bounded least squares, with
// the log residual and the Huber loss handled by reweighted Gauss-Newton steps), and
// Levenberg-Marquardt searches only the nonlinear parameters, on the projected Jacobian
// (Kaufman's form: exact gradient, Gauss-Newton Hessian).
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "fitting/program.h"

namespace moescale::fitting {

struct VarproOutcome {
  bool ok = false;
  bool converged = false;
  double objective = 0;   // sum of Huber_delta(log L_hat - log L) over the rows
  std::vector<double> x;  // all law parameters, in law (program) order
};

// Box-constrained least squares: minimises 1/2 c'Gc - b'c over lower <= c <= upper (entries may
// be infinite), G symmetric positive semi-definite, by an active-set method. For a handful of
// coefficients; a tiny ridge keeps collinear columns solvable.
std::vector<double> bounded_quadratic_minimum(std::span<const double> G, std::span<const double> b,
                                              std::span<const double> lower,
                                              std::span<const double> upper);

class VarproSolver {
 public:
  // lower/upper: bounds of every law parameter, in law order (a log-scale coefficient's bounds
  // apply to its log). rows index points.
  VarproSolver(const Separable& separable, std::size_t n_params, const std::vector<Point>& points,
               const std::vector<double>& log_loss, const std::vector<std::size_t>& rows,
               double delta, const std::vector<double>& lower, const std::vector<double>& upper,
               int max_iterations);
  ~VarproSolver();
  // start: all law parameters; only the nonlinear ones are used.
  VarproOutcome run(std::span<const double> start);

  struct Impl;  // opaque; public so that varpro.cpp's cost function can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace moescale::fitting
