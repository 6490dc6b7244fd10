// Internal to fitting/: a parsed law compiled to a flat node list, evaluated by one template
// for T = double and T = ceres::Jet<double, N>. Not part of the public API.
#pragma once

#include <ceres/jet.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fitting/law.h"

namespace moescale::fitting {

enum class Column : int8_t { N, NT, D, E, K, G, C };
inline constexpr int kNumColumns = 7;

// One observation's columns and their logs (all positive, validated), precomputed so that
// column^param costs one exp instead of a log and an exp per evaluation.
struct Point {
  std::array<double, kNumColumns> value{};
  std::array<double, kNumColumns> log{};
};
Point make_point(const Observation& x);

enum class Op : uint8_t {
  constant,
  column,
  param,
  neg,
  add,
  sub,
  mul,
  div,
  pow,         // x^y, general: exp(y log x)
  pow_const,   // x^c, c a number (negative x allowed for integer c)
  pow_column,  // column^y = exp(y log column)
  log,
  exp
};

struct Node {
  Op op = Op::constant;
  int32_t a = -1, b = -1;  // operand nodes (earlier in the list)
  int32_t index = 0;       // column or parameter index
  double value = 0;        // constant
};

struct Separable;

class Program {
 public:
  std::vector<Node> nodes;  // topological: operands before users; the last is the root
  std::vector<std::string> params;
  std::array<bool, kNumColumns> uses{};
  // Nodes that read no column (exp(a), 1/E_max, ...) are the same for every data point: a fit
  // computes them once per parameter vector (eval_uniform), then the rest per point.
  std::vector<int32_t> uniform, varying;
  uint64_t id = 0;  // unique per compiled program, for caches keyed on it
  // The law split into its linear and nonlinear parameters; null when none enters linearly.
  std::shared_ptr<const Separable> separable;

  template <typename T>
  T eval(const T* p, const Point& x, std::vector<T>& slots) const {
    eval_uniform(p, slots);
    return eval_varying(p, x, slots);
  }
  template <typename T>
  void eval_uniform(const T* p, std::vector<T>& slots) const {
    if (slots.size() < nodes.size()) slots.resize(nodes.size());
    const Point none{};
    for (int32_t i : uniform) step(i, p, none, slots);
  }
  // Needs the uniform slots of the same p.
  template <typename T>
  T eval_varying(const T* p, const Point& x, std::vector<T>& slots) const {
    for (int32_t i : varying) step(i, p, x, slots);
    return slots[nodes.size() - 1];
  }

 private:
  template <typename T>
  void step(int32_t i, const T* p, const Point& x, std::vector<T>& slots) const {
    using std::exp;
    using std::log;
    using std::pow;
    {
      const Node& n = nodes[i];
      T& out = slots[i];
      switch (n.op) {
        case Op::constant: out = T(n.value); break;
        case Op::column: out = T(x.value[n.index]); break;
        case Op::param: out = p[n.index]; break;
        case Op::neg: out = -slots[n.a]; break;
        case Op::add: out = slots[n.a] + slots[n.b]; break;
        case Op::sub: out = slots[n.a] - slots[n.b]; break;
        case Op::mul: out = slots[n.a] * slots[n.b]; break;
        case Op::div: out = slots[n.a] / slots[n.b]; break;
        case Op::pow: out = exp(slots[n.b] * log(slots[n.a])); break;
        case Op::pow_const: out = pow(slots[n.a], n.value); break;
        case Op::pow_column: out = exp(slots[n.b] * x.log[n.index]); break;
        case Op::log: out = log(slots[n.a]); break;
        case Op::exp: out = exp(slots[n.a]); break;
      }
    }
  }
};

// A law written as  sum_k c_k * (sum of its factor nodes) + (sum of the offset nodes), where each
// c_k is a law parameter p (or exp(p): a scale fitted in log space, so c_k > 0) that occurs
// nowhere else. Given the nonlinear parameters the law is linear in the c_k, so a fit can solve
// them inside each evaluation (variable projection) and search only over the rest.
struct Separable {
  Program basis;               // reads only the nonlinear parameters (basis.params)
  std::vector<int> nonlinear;  // law parameter index of each of basis.params
  struct Coefficient {
    int param = 0;                 // law parameter index
    bool log_scale = false;        // the law has exp(param): c = exp(param) > 0
    std::vector<int32_t> outputs;  // basis nodes whose sum c multiplies
  };
  std::vector<Coefficient> coefficients;
  std::vector<int32_t> offset;  // basis nodes added with no coefficient
};

// Calls fn(std::integral_constant<int, n>{}) for 1 <= n <= kMaxParams, so Jets can be sized to
// the law exactly (a 5-parameter law pays for 5 derivatives, not 16).
template <typename Fn, int... Is>
bool dispatch_param_count_impl(int n, Fn&& fn, std::integer_sequence<int, Is...>) {
  return ((n == Is + 1 ? (fn(std::integral_constant<int, Is + 1>{}), true) : false) || ...);
}
template <typename Fn>
bool dispatch_param_count(int n, Fn&& fn) {
  return dispatch_param_count_impl(n, fn, std::make_integer_sequence<int, kMaxParams>{});
}

}  // namespace moescale::fitting
