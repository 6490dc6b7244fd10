// Scaling laws: expressions over a run's columns, the law catalogue (configs/laws.toml), and
// losses simulated from a law.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fitting/observations.h"

namespace moescale::fitting {

// ---------------------------------------------------------------- expressions
// Grammar: sum := product (('+'|'-') product)*; product := unary (('*'|'/') unary)*;
// unary := '-' unary | power; power := atom ('^' unary)?  (right-associative, binds tighter
// than unary minus on its left: -x^2 = -(x^2)); atom := number | name | name '(' sum ')' |
// '(' sum ')'. Functions: log, exp. Columns: N, NT, D, E, K, G, C (= 6 N D); any other name
// is a parameter. Definitions (name = expression) are inlined where their name appears.
class Program;
class Expression {
 public:
  // Throws std::invalid_argument: `law "E0 + (a": expected ')' at column 8`.
  static Expression parse(std::string_view text, std::string_view what = "law",
                          const std::vector<std::pair<std::string, std::string>>& defs = {});
  const std::string& text() const { return text_; }
  const std::vector<std::string>& params() const;  // in order of first appearance
  std::vector<std::string> columns() const;        // the columns it reads
  bool uses(std::string_view column) const;
  std::string to_string() const;  // fully parenthesised, definitions inlined
  // params are in params() order.
  double evaluate(std::span<const double> params, const Observation& x) const;
  // Value, and d value / d params by forward-mode automatic differentiation (Ceres Jets).
  double gradient(std::span<const double> params, const Observation& x,
                  std::span<double> grad) const;
  const Program& program() const { return *program_; }

 private:
  std::string text_;
  std::string canonical_;
  std::shared_ptr<const Program> program_;
};
inline constexpr int kMaxParams = 16;  // Jet size limit of the fitter

// ---------------------------------------------------------------- laws
struct ParamGrid {
  std::string name;
  std::vector<double> values;  // starting values
  // The fit stays within [lower, upper]: exponents of these laws are positive by their
  // meaning, and small noisy sweeps otherwise drift to nonsense such as negative alpha.
  double lower = -std::numeric_limits<double>::infinity();
  double upper = std::numeric_limits<double>::infinity();
};
struct ReportedParam {
  std::string name;        // e.g. "E"
  std::string expression;  // over fitted parameters, e.g. "exp(e)"
};
struct Law {
  std::string name;
  std::string title;    // one line
  std::string formula;  // as in the paper, for people
  std::string source;   // citation
  std::string expression;
  std::vector<std::pair<std::string, std::string>> definitions;
  std::vector<ParamGrid> grid;          // one per fitted parameter, expression order
  std::vector<ReportedParam> reported;  // what results show; defaults to the fitted ones
  // The paper's values of the fitted parameters, where it gives them (else empty).
  std::map<std::string, double> published;
  Expression compiled() const;
  std::vector<std::string> params() const;  // fitted parameter names
  // Number of starting points: the grid product over the parameters the fit searches (not the
  // linear ones, which it solves in each evaluation).
  std::size_t grid_size() const;
};

// The reported parameters (e.g. A = exp(a)) at the given fitted ones.
std::map<std::string, double> reported_values(const std::vector<ReportedParam>& reported,
                                              const std::map<std::string, double>& fitted);
std::vector<Law> parse_law_catalogue(std::string_view toml_text, const std::string& source);
const std::vector<Law>& builtin_laws();
const Law& builtin_law(std::string_view name);  // throws listing the known names
// A user law; each parameter starts from {0, 0.5, 1} unless set_grid says otherwise.
Law custom_law(std::string_view expression, std::string name = "custom");
// "alpha=0:2:0.5" (from:to:step, inclusive) or "alpha=0.1,0.3,1"; throws on unknown names.
void set_grid(Law& law, std::string_view spec);
// "alpha=0:3" (either end may be empty): the fit keeps alpha in [0, 3].
void set_bounds(Law& law, std::string_view spec, const std::string& where = "--bound");


// ---------------------------------------------------------------- simulating
// Parameter values for a law from "name=value" assignments. Names are the law's fitted
// parameters, or reported ones defined as exp(x) or as x (chinchilla: E=1.69 A=406.4 ...).
std::map<std::string, double> law_parameters(const Law& law,
                                             const std::vector<std::string>& assignments);
// Draws loss = L(x) * exp(noise * z), z standard normal, from a generator seeded by
// (seed, key): the same run keeps its loss when other runs are added to the sweep.
double simulated_loss(const Expression& law, std::span<const double> params, const Observation& x,
                      double noise, uint64_t seed, std::string_view key);

}  // namespace moescale::fitting
