// Law expressions: grammar, error positions, definitions, Jet derivatives, the catalogue.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "fitting/fitting.h"

namespace moescale::fitting {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

double eval(const std::string& text, std::vector<double> params = {}, Observation x = {}) {
  return Expression::parse(text).evaluate(params, x);
}

std::string error_of(const std::string& text) {
  try {
    Expression::parse(text);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "no error";
}

TEST(Expression, PrecedenceAndAssociativity) {
  EXPECT_DOUBLE_EQ(eval("1 + 2 * 3"), 7);
  EXPECT_DOUBLE_EQ(eval("(1 + 2) * 3"), 9);
  EXPECT_DOUBLE_EQ(eval("1 - 2 - 3"), -4);
  EXPECT_DOUBLE_EQ(eval("8 / 4 / 2"), 1);
  EXPECT_DOUBLE_EQ(eval("2 ^ 3 ^ 2"), 512);  // right-associative
  EXPECT_DOUBLE_EQ(eval("2 * 3 ^ 2"), 18);
  EXPECT_DOUBLE_EQ(eval("1e-3 * 1000 + .5 + 1.5E1"), 16.5);
  EXPECT_EQ(Expression::parse("a + b * c ^ d ^ e").to_string(), "(a + (b * (c ^ (d ^ e))))");
}

TEST(Expression, UnaryMinus) {
  EXPECT_DOUBLE_EQ(eval("-2 ^ 2"), -4);  // the power binds first
  EXPECT_DOUBLE_EQ(eval("(-2) ^ 2"), 4);
  EXPECT_DOUBLE_EQ(eval("2 ^ -1"), 0.5);
  EXPECT_DOUBLE_EQ(eval("2 * -3"), -6);
  EXPECT_DOUBLE_EQ(eval("--3"), 3);
  EXPECT_DOUBLE_EQ(eval("-a + b", {1, 5}), 4);
  EXPECT_EQ(Expression::parse("-a^b").to_string(), "(-(a ^ b))");
}

TEST(Expression, ColumnsParamsAndFunctions) {
  const Expression e = Expression::parse("exp(e) + exp(a)/N^alpha + C/(6*N*D) + log(E*K*G*NT)");
  EXPECT_THAT(e.params(), ElementsAre("e", "a", "alpha"));
  EXPECT_THAT(e.columns(), ElementsAre("N", "NT", "D", "E", "K", "G", "C"));
  Observation x{.n_active = 100,
                .n_total = 400,
                .tokens = 50,
                .experts = 4,
                .top_k = 2,
                .granularity = 3,
                .loss = 1,
                .where = ""};
  const double want =
      std::exp(0.5) + std::exp(2.0) / std::pow(100.0, 0.3) + 1 + std::log(4.0 * 2 * 3 * 400);
  EXPECT_NEAR(e.evaluate(std::vector<double>{0.5, 2, 0.3}, x), want, 1e-12);
  EXPECT_TRUE(e.uses("D"));
  EXPECT_FALSE(Expression::parse("a/N").uses("D"));
}

TEST(Expression, ErrorsNameProblemAndColumn) {
  EXPECT_EQ(error_of("E0 + (a"), "law \"E0 + (a\": expected ')' at column 8");
  EXPECT_EQ(error_of("a + * b"), "law \"a + * b\": expected an expression, found '*' at column 5");
  EXPECT_EQ(error_of("a $ b"), "law \"a $ b\": unexpected character '$' at column 3");
  EXPECT_EQ(error_of("a b"), "law \"a b\": unexpected 'b' at column 3");
  EXPECT_EQ(error_of("(a))"), "law \"(a))\": unexpected ')' at column 4");
  EXPECT_EQ(error_of("a +"), "law \"a +\": expected an expression at column 4");
  EXPECT_THAT(error_of("sqrt(a)"),
              HasSubstr("unknown function 'sqrt' (known: log, exp) at column 1"));
  EXPECT_THAT(error_of("1 + log a"), HasSubstr("expected '(' after 'log' at column 5"));
  EXPECT_THAT(error_of("2E"), HasSubstr("unexpected 'E' at column 2"));
  EXPECT_THAT(error_of("  "), HasSubstr("is empty"));
  EXPECT_THAT(error_of("p0+p1+p2+p3+p4+p5+p6+p7+p8+p9+p10+p11+p12+p13+p14+p15+p16"),
              HasSubstr("17 parameters, at most 16"));
}

TEST(Expression, DefinitionsAreInlinedAndOrdered) {
  const std::vector<std::pair<std::string, std::string>> defs = {
      {"Ehat", "1/(1/(E - 1 + 1/(1/Es - 1/Em)) + 1/Em)"}, {"twice", "2*Ehat"}};
  const Expression e = Expression::parse("twice", "law", defs);
  EXPECT_THAT(e.params(), ElementsAre("Es", "Em"));
  Observation dense{.n_active = 1, .tokens = 1, .experts = 1, .loss = 1, .where = ""};
  EXPECT_NEAR(e.evaluate(std::vector<double>{2, 100}, dense), 4, 1e-12);  // Ehat(1) = E_start
  Observation many = dense;
  many.experts = 1e9;
  EXPECT_NEAR(e.evaluate(std::vector<double>{2, 100}, many), 200, 1e-3);  // saturates at E_max
  EXPECT_THROW(Expression::parse("x", "law", {{"N", "1"}}), std::invalid_argument);
  EXPECT_THROW(Expression::parse("x", "law", {{"x", "x + 1"}}), std::invalid_argument);
}

// Forward-mode derivatives must agree with central differences for every kind of node.
void expect_gradient_matches(const Expression& e, const std::vector<double>& p,
                             const Observation& x) {
  std::vector<double> grad(p.size());
  const double v = e.gradient(p, x, grad);
  EXPECT_NEAR(v, e.evaluate(p, x), 1e-12 * std::abs(v));
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double h = 1e-6 * std::max(1.0, std::abs(p[i]));
    auto q = p;
    q[i] = p[i] + h;
    const double up = e.evaluate(q, x);
    q[i] = p[i] - h;
    const double down = e.evaluate(q, x);
    const double fd = (up - down) / (2 * h);
    EXPECT_NEAR(grad[i], fd, 1e-6 * std::max(1.0, std::abs(fd)))
        << e.text() << " d/d" << e.params()[i];
  }
}

TEST(Expression, JetDerivativesEqualFiniteDifferences) {
  const Observation x{.n_active = 3e8,
                      .n_total = 2e9,
                      .tokens = 6e9,
                      .experts = 8,
                      .top_k = 2,
                      .granularity = 4,
                      .loss = 3,
                      .where = ""};
  expect_gradient_matches(Expression::parse("(a*N/1e8)^2 / (b + D/1e9)^c + log(a)*exp(-b) - a^3"),
                          {1.5, 0.7, 0.4}, x);
  for (const Law& law : builtin_laws()) {
    std::vector<double> p;
    for (const auto& g : law.grid) p.push_back(g.values.back());
    expect_gradient_matches(law.compiled(), p, x);
  }
}

TEST(Catalogue, ChinchillaGridIsBesiroglus) {
  const Law& law = builtin_law("chinchilla");
  // Besiroglu et al.'s 4,500 points; E, A and B are solved in each evaluation, so only the
  // 5 x 5 alpha x beta points are starts.
  EXPECT_EQ(law.grid.size(), 5u);
  EXPECT_EQ(law.grid_size(), 25u);
  EXPECT_THAT(law.params(), ElementsAre("e", "a", "alpha", "b", "beta"));  // as they appear
  EXPECT_THAT(law.grid[0].values, ElementsAre(-1, -0.5, 0, 0.5, 1));
  EXPECT_THAT(law.grid[1].values, ElementsAre(0, 5, 10, 15, 20, 25));
  EXPECT_THAT(law.grid[2].values, ElementsAre(0, 0.5, 1, 1.5, 2));
  std::vector<std::string> reported;
  for (const auto& r : law.reported) reported.push_back(r.name);
  EXPECT_THAT(reported, ElementsAre("E", "A", "B", "alpha", "beta"));
}

TEST(Catalogue, AllBuiltInLawsAreThere) {
  for (const char* name :
       {"chinchilla", "kaplan", "clark2022", "yun2024", "krajewski2024", "krajewski2024-dense",
        "ludziejewski2025"}) {
    const Law& law = builtin_law(name);
    EXPECT_FALSE(law.source.empty()) << name;
    EXPECT_EQ(law.grid.size(), law.compiled().params().size()) << name;
    EXPECT_GE(law.grid_size(), 1u) << name;
  }
  EXPECT_TRUE(builtin_law("yun2024").compiled().uses("E"));
  EXPECT_TRUE(builtin_law("krajewski2024").compiled().uses("G"));
  try {
    builtin_law("chinchila");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("unknown law \"chinchila\"; built-in laws: chinchilla"));
  }
}

TEST(Catalogue, BadCatalogueEntriesAreRejected) {
  EXPECT_THAT(
      [] {
        parse_law_catalogue("[[law]]\nname = \"x\"\nexpression = \"a/N\"\ngrid = [\"b = 1\"]\n",
                            "laws.toml");
      },
      ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("not a parameter")));
  EXPECT_THAT(
      [] {
        parse_law_catalogue("[[law]]\nname = \"x\"\nexpression = \"a/N\"\nreport = [\"A = a*N\"]\n",
                            "laws.toml");
      },
      ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("uses data columns")));
}

TEST(Catalogue, CustomLawsAndGrids) {
  Law law = custom_law("E0 + exp(a)/N^alpha + exp(b)/D^beta");
  EXPECT_THAT(law.params(), ElementsAre("E0", "a", "alpha", "b", "beta"));
  EXPECT_EQ(law.grid_size(), 9u);  // 3 default values each, alpha x beta (the rest is linear)
  set_grid(law, "a = 0:25:5");
  set_grid(law, "alpha=0.1, 0.3");
  EXPECT_THAT(law.grid[1].values, ElementsAre(0, 5, 10, 15, 20, 25));
  EXPECT_THAT(law.grid[2].values, ElementsAre(0.1, 0.3));
  EXPECT_THROW(set_grid(law, "gamma=1"), std::invalid_argument);
  EXPECT_THROW(set_grid(law, "a=1:0:1"), std::invalid_argument);
  EXPECT_THROW(set_grid(law, "a=x"), std::invalid_argument);
}

}  // namespace
}  // namespace moescale::fitting
