// Simulated losses: a known law plus multiplicative log-normal noise, for rehearsing a sweep
// design and for checking the planner and the fitter end to end against a known truth.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

#include "fitting/fitting.h"
#include "planner/stable_random.h"

namespace moescale::fitting {
namespace {

double parse_value(const std::string& text, const std::string& assignment) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(v))
    throw std::invalid_argument(
        fmt::format("--param \"{}\": \"{}\" is not a number", assignment, text));
  return v;
}

std::string known_names(const Law& law) {
  std::string out;
  for (const std::string& p : law.params()) out += (out.empty() ? "" : ", ") + p;
  for (const ReportedParam& r : law.reported)
    if (r.expression.rfind("exp(", 0) == 0) out += ", " + r.name;
  return out;
}

}  // namespace

std::map<std::string, double> law_parameters(const Law& law,
                                             const std::vector<std::string>& assignments) {
  const std::vector<std::string> fitted = law.params();
  std::map<std::string, double> values;
  for (const std::string& a : assignments) {
    const auto eq = a.find('=');
    if (eq == std::string::npos)
      throw std::invalid_argument(fmt::format("--param \"{}\": expected name=value", a));
    const std::string name = a.substr(0, eq);
    const double v = parse_value(a.substr(eq + 1), a);
    if (std::find(fitted.begin(), fitted.end(), name) != fitted.end()) {
      values[name] = v;
      continue;
    }
    // A reported parameter defined as exp(x) (A = exp(a)) sets x = log(value).
    bool set = false;
    for (const ReportedParam& r : law.reported) {
      if (r.name != name) continue;
      const std::string& e = r.expression;
      if (e.size() > 5 && e.rfind("exp(", 0) == 0 && e.back() == ')') {
        const std::string inner = e.substr(4, e.size() - 5);
        if (std::find(fitted.begin(), fitted.end(), inner) != fitted.end()) {
          if (!(v > 0))
            throw std::invalid_argument(
                fmt::format("--param \"{}\": {} = exp({}) must be positive", a, name, inner));
          values[inner] = std::log(v);
          set = true;
        }
      }
    }
    if (!set)
      throw std::invalid_argument(
          fmt::format("--param \"{}\": law \"{}\" has no parameter {}; its parameters: {}", a,
                      law.name, name, known_names(law)));
  }
  for (const std::string& p : fitted)
    if (!values.count(p))
      throw std::invalid_argument(
          fmt::format("law \"{}\" needs a value for {}: add --param {}=VALUE (parameters: {})",
                      law.name, p, p, known_names(law)));
  return values;
}

double simulated_loss(const Expression& law, std::span<const double> params, const Observation& x,
                      double noise, uint64_t seed, std::string_view key) {
  if (!(noise >= 0) || !std::isfinite(noise))
    throw std::invalid_argument("the noise must be a non-negative log-scale standard deviation");
  const double clean = law.evaluate(params, x);
  if (!(clean > 0) || !std::isfinite(clean))
    throw std::invalid_argument(
        fmt::format("law \"{}\" gives loss {} for {}; check the parameter values", law.text(),
                    clean, x.where.empty() ? std::string(key) : x.where));
  const uint64_t h = fnv1a(key);  // the same simulated sweep on every platform
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(h), static_cast<uint32_t>(h >> 32)};
  std::mt19937_64 rng(seq);
  std::normal_distribution<double> z;
  return clean * std::exp(noise * z(rng));
}

}  // namespace moescale::fitting
