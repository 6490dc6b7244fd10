// The law catalogue (configs/laws.toml, compiled in) and starting grids.
#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "fitting/laws_toml.h"  // generated: kLawCatalogueToml
#include "fitting/program.h"

namespace moescale::fitting {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

double parse_number(std::string_view text, const std::string& where) {
  text = trim(text);
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v))
    throw std::invalid_argument(fmt::format("{}: \"{}\" is not a number", where, text));
  return v;
}

// "name = rest" -> (name, rest)
std::pair<std::string, std::string> split_assignment(std::string_view text,
                                                     const std::string& where) {
  const auto eq = text.find('=');
  if (eq == std::string_view::npos || trim(text.substr(0, eq)).empty())
    throw std::invalid_argument(
        fmt::format("{}: \"{}\" should look like \"name = value\"", where, text));
  return {std::string(trim(text.substr(0, eq))), std::string(trim(text.substr(eq + 1)))};
}

std::vector<double> parse_grid_values(std::string_view text, const std::string& where) {
  std::vector<double> values;
  if (text.find(':') != std::string_view::npos) {
    std::vector<double> parts;
    std::size_t start = 0;
    for (std::size_t i = 0; i <= text.size(); ++i) {
      if (i == text.size() || text[i] == ':') {
        parts.push_back(parse_number(text.substr(start, i - start), where));
        start = i + 1;
      }
    }
    if (parts.size() != 3 || !(parts[2] > 0) || parts[1] < parts[0])
      throw std::invalid_argument(fmt::format(
          "{}: \"{}\" should be from:to:step with from <= to and step > 0", where, text));
    // Counting steps (not accumulating) keeps 0:2:0.5 at exactly 5 values.
    const auto n = static_cast<int64_t>(std::floor((parts[1] - parts[0]) / parts[2] + 1e-9));
    if (n > 100000) throw std::invalid_argument(fmt::format("{}: too many values", where));
    for (int64_t i = 0; i <= n; ++i) values.push_back(parts[0] + static_cast<double>(i) * parts[2]);
    return values;
  }
  std::size_t start = 0;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == ',') {
      values.push_back(parse_number(text.substr(start, i - start), where));
      start = i + 1;
    }
  }
  return values;
}

std::string string_field(const toml::table& t, std::string_view key, const std::string& where,
                         bool required = true) {
  const auto v = t[key].value<std::string>();
  if (!v && required)
    throw std::invalid_argument(fmt::format("{}: missing string \"{}\"", where, key));
  return v.value_or("");
}

std::vector<std::string> string_list(const toml::table& t, std::string_view key,
                                     const std::string& where) {
  std::vector<std::string> out;
  const auto* node = t.get(key);
  if (!node) return out;
  const auto* arr = node->as_array();
  if (!arr)
    throw std::invalid_argument(fmt::format("{}: \"{}\" must be a list of strings", where, key));
  for (const auto& item : *arr) {
    const auto s = item.value<std::string>();
    if (!s)
      throw std::invalid_argument(fmt::format("{}: \"{}\" must be a list of strings", where, key));
    out.push_back(*s);
  }
  return out;
}

// Fills in defaults and checks that grid, reports and expression agree.
// `what` prefixes the expression in parse errors: `law "E0 + (a": expected ...`.
void finish_law(Law& law, const std::string& where, const std::string& what) {
  const Expression e = Expression::parse(law.expression, what, law.definitions);
  std::vector<ParamGrid> ordered;
  for (const auto& p : e.params()) {
    const auto it = std::find_if(law.grid.begin(), law.grid.end(),
                                 [&](const ParamGrid& g) { return g.name == p; });
    ordered.push_back(it != law.grid.end() ? *it : ParamGrid{p, {0, 0.5, 1}});
  }
  for (const auto& g : law.grid) {
    if (std::find(e.params().begin(), e.params().end(), g.name) == e.params().end())
      throw std::invalid_argument(fmt::format(
          "{}: grid names \"{}\", which is not a parameter of the expression", where, g.name));
    if (g.values.empty())
      throw std::invalid_argument(fmt::format("{}: grid of \"{}\" is empty", where, g.name));
  }
  law.grid = std::move(ordered);
  if (law.reported.empty())
    for (const auto& p : e.params()) law.reported.push_back({p, p});
  for (const auto& r : law.reported) {
    const Expression re =
        Expression::parse(r.expression, fmt::format("{}: reported parameter {} =", where, r.name));
    if (!re.columns().empty())
      throw std::invalid_argument(
          fmt::format("{}: reported parameter {} uses data columns; use only fitted parameters",
                      where, r.name));
    for (const auto& p : re.params())
      if (std::find(e.params().begin(), e.params().end(), p) == e.params().end())
        throw std::invalid_argument(fmt::format(
            "{}: reported parameter {} uses \"{}\", which the law does not fit", where, r.name, p));
  }
}

Law parse_law(const toml::table& t, const std::string& source, std::size_t index) {
  Law law;
  const std::string where0 = fmt::format("{} law #{}", source, index + 1);
  law.name = string_field(t, "name", where0);
  const std::string where = fmt::format("{} law \"{}\"", source, law.name);
  law.title = string_field(t, "title", where, false);
  law.formula = string_field(t, "formula", where, false);
  law.source = string_field(t, "source", where, false);
  law.expression = string_field(t, "expression", where);
  for (const auto& d : string_list(t, "define", where))
    law.definitions.push_back(split_assignment(d, where + " define"));
  for (const auto& g : string_list(t, "grid", where)) {
    auto [name, values] = split_assignment(g, where + " grid");
    law.grid.push_back({name, parse_grid_values(values, fmt::format("{} grid {}", where, name))});
  }
  for (const auto& r : string_list(t, "report", where)) {
    auto [name, expr] = split_assignment(r, where + " report");
    law.reported.push_back({name, expr});
  }
  finish_law(law, where, fmt::format("{}: law", where));
  for (const auto& b : string_list(t, "bounds", where)) set_bounds(law, b, where + " bounds");
  for (const auto& p : string_list(t, "published", where)) {
    auto [name, text] = split_assignment(p, where + " published");
    const std::string what = fmt::format("{} published {}", where, name);
    const auto params = law.params();
    if (std::find(params.begin(), params.end(), name) == params.end())
      throw std::invalid_argument(fmt::format("{}: not a fitted parameter of the law", what));
    const Expression value = Expression::parse(text, what);
    if (!value.params().empty() || !value.columns().empty())
      throw std::invalid_argument(fmt::format("{}: \"{}\" must be a number", what, text));
    law.published[name] = value.evaluate({}, Observation{});
  }
  if (!law.published.empty() && law.published.size() != law.grid.size())
    throw std::invalid_argument(
        fmt::format("{}: published gives {} of the {} fitted parameters; give all or none", where,
                    law.published.size(), law.grid.size()));
  return law;
}

}  // namespace

Expression Law::compiled() const {
  return Expression::parse(expression, "law", definitions);
}

std::vector<std::string> Law::params() const {
  std::vector<std::string> out;
  for (const auto& g : grid) out.push_back(g.name);
  return out;
}

std::size_t Law::grid_size() const {  // saturates instead of wrapping around
  // Linear parameters are solved inside each evaluation: their grids make no starts.
  const Expression expression = compiled();
  const Program& program = expression.program();
  std::vector<bool> searched(grid.size(), !program.separable);
  if (program.separable)
    for (int p : program.separable->nonlinear) searched[p] = true;
  std::size_t n = 1;
  for (std::size_t i = 0; i < grid.size(); ++i) {
    if (!searched[i]) continue;
    const auto& g = grid[i];
    const std::size_t k = g.values.size();
    if (k != 0 && n > std::numeric_limits<std::size_t>::max() / k)
      return std::numeric_limits<std::size_t>::max();
    n *= k;
  }
  return n;
}

std::vector<Law> parse_law_catalogue(std::string_view toml_text, const std::string& source) {
  toml::table doc;
  try {
    doc = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    throw std::invalid_argument(
        fmt::format("{} line {}: {}", source, e.source().begin.line, e.description()));
  }
  const auto* laws = doc["law"].as_array();
  if (!laws) throw std::invalid_argument(fmt::format("{}: no [[law]] tables", source));
  std::vector<Law> out;
  for (std::size_t i = 0; i < laws->size(); ++i) {
    const auto* t = laws->get(i)->as_table();
    if (!t) throw std::invalid_argument(fmt::format("{}: law #{} is not a table", source, i + 1));
    out.push_back(parse_law(*t, source, i));
    for (std::size_t j = 0; j + 1 < out.size(); ++j)
      if (out[j].name == out.back().name)
        throw std::invalid_argument(
            fmt::format("{}: law \"{}\" is defined twice", source, out.back().name));
  }
  return out;
}

const std::vector<Law>& builtin_laws() {
  static const std::vector<Law> laws = parse_law_catalogue(kLawCatalogueToml, "configs/laws.toml");
  return laws;
}

const Law& builtin_law(std::string_view name) {
  std::string known;
  for (const auto& law : builtin_laws()) {
    if (law.name == name) return law;
    known += (known.empty() ? "" : ", ") + law.name;
  }
  throw std::invalid_argument(
      fmt::format("unknown law \"{}\"; built-in laws: {} (or pass an expression, e.g. "
                  "\"E0 + exp(a)/N^alpha + exp(b)/D^beta\")",
                  name, known));
}

Law custom_law(std::string_view expression, std::string name) {
  Law law;
  law.name = std::move(name);
  law.title = "user expression";
  law.formula = std::string(expression);
  law.expression = std::string(expression);
  finish_law(law, "--law", "law");
  return law;
}

void set_bounds(Law& law, std::string_view spec, const std::string& where) {
  auto [name, range] = split_assignment(spec, where);
  const auto it = std::find_if(law.grid.begin(), law.grid.end(),
                               [&](const ParamGrid& g) { return g.name == name; });
  if (it == law.grid.end())
    throw std::invalid_argument(
        fmt::format("{}: \"{}\" is not a parameter of law \"{}\"", where, name, law.name));
  const auto colon = range.find(':');
  try {
    if (colon == std::string::npos) throw std::invalid_argument("no colon");
    const std::string lo = range.substr(0, colon), hi = range.substr(colon + 1);
    if (!lo.empty()) it->lower = std::stod(lo);
    if (!hi.empty()) it->upper = std::stod(hi);
  } catch (const std::exception&) {
    throw std::invalid_argument(fmt::format(
        "{}: \"{}\" is not a range; write {}=LOW:HIGH (either may be empty)", where, spec, name));
  }
  if (!(it->lower < it->upper))
    throw std::invalid_argument(fmt::format("{}: empty range for {}", where, name));
  for (double& v : it->values) v = std::clamp(v, it->lower, it->upper);
}

void set_grid(Law& law, std::string_view spec) {
  const std::string where = fmt::format("grid \"{}\"", spec);
  auto [name, values] = split_assignment(spec, where);
  const auto it = std::find_if(law.grid.begin(), law.grid.end(),
                               [&](const ParamGrid& g) { return g.name == name; });
  if (it == law.grid.end()) {
    std::string known;
    for (const auto& g : law.grid) known += (known.empty() ? "" : ", ") + g.name;
    throw std::invalid_argument(fmt::format("{}: law \"{}\" has no parameter \"{}\" (it has: {})",
                                            where, law.name, name, known));
  }
  it->values = parse_grid_values(values, where);
}

}  // namespace moescale::fitting
