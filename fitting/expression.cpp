// Law expressions: a recursive-descent parser to a small tree (definitions are shared
// subtrees), then a compile pass to the flat Program of program.h with constants folded.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <cmath>
#include <stdexcept>
#include <unordered_map>

#include "fitting/program.h"
#include "planner/planner.h"

namespace moescale::fitting {
namespace {

constexpr std::array<std::string_view, kNumColumns> kColumnNames = {"N", "NT", "D", "E",
                                                                    "K", "G",  "C"};

int column_index(std::string_view name) {
  for (int i = 0; i < kNumColumns; ++i)
    if (kColumnNames[i] == name) return i;
  return -1;
}

enum class Tok { number, name, op, lparen, rparen, end };
struct Token {
  Tok kind = Tok::end;
  std::string_view text;
  double number = 0;
  int column = 0;  // 1-based
};

// Tree node; children index the same arena, so a definition used twice is one subtree.
struct Ast {
  Op op = Op::constant;
  int a = -1, b = -1;
  double value = 0;
  std::string name;  // column or parameter
};

bool is_name_start(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_';
}
bool is_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

class Parser {
 public:
  Parser(std::vector<Ast>& arena, const std::unordered_map<std::string, int>& defs,
         std::string_view text, std::string what)
      : arena_(arena), defs_(defs), text_(text), what_(std::move(what)) {
    tokenize();
  }

  int parse() {
    if (tokens_.size() == 1)
      throw std::invalid_argument(fmt::format("{} \"{}\" is empty", what_, text_));
    const int root = sum();
    if (peek().kind != Tok::end) fail(fmt::format("unexpected '{}'", peek().text), pos_);
    return root;
  }

 private:
  [[noreturn]] void fail(const std::string& problem, std::size_t token) const {
    fail_at(problem, tokens_[token].column);
  }
  [[noreturn]] void fail_at(const std::string& problem, int column) const {
    throw std::invalid_argument(
        fmt::format("{} \"{}\": {} at column {}", what_, text_, problem, column));
  }

  void tokenize() {
    std::size_t i = 0;
    while (i < text_.size()) {
      const char c = text_[i];
      const int column = static_cast<int>(i) + 1;
      if (std::isspace(static_cast<unsigned char>(c))) {
        ++i;
      } else if (is_digit(c) || (c == '.' && i + 1 < text_.size() && is_digit(text_[i + 1]))) {
        i = number(i);
      } else if (is_name_start(c)) {
        std::size_t j = i;
        while (j < text_.size() && is_name_char(text_[j])) ++j;
        tokens_.push_back({Tok::name, text_.substr(i, j - i), 0, column});
        i = j;
      } else if (c == '+' || c == '-' || c == '*' || c == '/' || c == '^') {
        tokens_.push_back({Tok::op, text_.substr(i, 1), 0, column});
        ++i;
      } else if (c == '(' || c == ')') {
        tokens_.push_back({c == '(' ? Tok::lparen : Tok::rparen, text_.substr(i, 1), 0, column});
        ++i;
      } else {
        fail_at(fmt::format("unexpected character '{}'", c), column);
      }
    }
    tokens_.push_back({Tok::end, "end", 0, static_cast<int>(text_.size()) + 1});
  }

  // digits [. digits] [(e|E) [+-] digits]; an 'e' not followed by digits is not an exponent,
  // so "2E" stays a number followed by the column E (and then a syntax error, not a surprise).
  std::size_t number(std::size_t i) {
    std::size_t j = i;
    while (j < text_.size() && is_digit(text_[j])) ++j;
    if (j < text_.size() && text_[j] == '.') {
      ++j;
      while (j < text_.size() && is_digit(text_[j])) ++j;
    }
    if (j < text_.size() && (text_[j] == 'e' || text_[j] == 'E')) {
      std::size_t k = j + 1;
      if (k < text_.size() && (text_[k] == '+' || text_[k] == '-')) ++k;
      if (k < text_.size() && is_digit(text_[k])) {
        while (k < text_.size() && is_digit(text_[k])) ++k;
        j = k;
      }
    }
    double v = 0;
    const auto [end, ec] = std::from_chars(text_.data() + i, text_.data() + j, v);
    if (ec != std::errc() || end != text_.data() + j || !std::isfinite(v))
      fail_at(fmt::format("bad number '{}'", text_.substr(i, j - i)), static_cast<int>(i) + 1);
    tokens_.push_back({Tok::number, text_.substr(i, j - i), v, static_cast<int>(i) + 1});
    return j;
  }

  const Token& peek() const { return tokens_[pos_]; }
  bool accept_op(char op) {
    if (peek().kind == Tok::op && peek().text[0] == op) return ++pos_, true;
    return false;
  }
  int add(Op op, int a, int b = -1) {
    arena_.push_back({op, a, b, 0, {}});
    return static_cast<int>(arena_.size()) - 1;
  }

  int sum() {
    int left = product();
    for (;;) {
      if (accept_op('+'))
        left = add(Op::add, left, product());
      else if (accept_op('-'))
        left = add(Op::sub, left, product());
      else
        return left;
    }
  }
  int product() {
    int left = unary();
    for (;;) {
      if (accept_op('*'))
        left = add(Op::mul, left, unary());
      else if (accept_op('/'))
        left = add(Op::div, left, unary());
      else
        return left;
    }
  }
  int unary() {
    if (accept_op('-')) return add(Op::neg, unary());
    if (accept_op('+')) return unary();
    return power();
  }
  int power() {
    const int base = atom();
    if (accept_op('^')) return add(Op::pow, base, unary());  // right-assoc via unary -> power
    return base;
  }
  int atom() {
    const Token t = peek();
    switch (t.kind) {
      case Tok::number:
        ++pos_;
        arena_.push_back({Op::constant, -1, -1, t.number, {}});
        return static_cast<int>(arena_.size()) - 1;
      case Tok::lparen: {
        ++pos_;
        const int inner = sum();
        expect_rparen();
        return inner;
      }
      case Tok::name: return name();
      case Tok::end: fail("expected an expression", pos_);
      default: break;
    }
    fail(fmt::format("expected an expression, found '{}'", t.text), pos_);
  }
  void expect_rparen() {
    if (peek().kind != Tok::rparen) fail("expected ')'", pos_);
    ++pos_;
  }
  int name() {
    const Token t = tokens_[pos_++];
    const std::string n(t.text);
    if (peek().kind == Tok::lparen) {
      Op op;
      if (n == "log")
        op = Op::log;
      else if (n == "exp")
        op = Op::exp;
      else
        fail_at(fmt::format("unknown function '{}' (known: log, exp)", n), t.column);
      ++pos_;
      const int arg = sum();
      expect_rparen();
      return add(op, arg);
    }
    if (n == "log" || n == "exp") fail_at(fmt::format("expected '(' after '{}'", n), t.column);
    if (const auto it = defs_.find(n); it != defs_.end()) return it->second;
    const Op op = column_index(n) >= 0 ? Op::column : Op::param;
    arena_.push_back({op, -1, -1, 0, n});
    return static_cast<int>(arena_.size()) - 1;
  }

  std::vector<Ast>& arena_;
  const std::unordered_map<std::string, int>& defs_;
  std::string_view text_;
  std::string what_;
  std::vector<Token> tokens_;
  std::size_t pos_ = 0;
};

double fold(Op op, double a, double b) {
  switch (op) {
    case Op::neg: return -a;
    case Op::add: return a + b;
    case Op::sub: return a - b;
    case Op::mul: return a * b;
    case Op::div: return a / b;
    case Op::pow:
    case Op::pow_const: return std::pow(a, b);
    case Op::log: return std::log(a);
    case Op::exp: return std::exp(a);
    default: return a;
  }
}

class Compiler {
 public:
  Compiler(const std::vector<Ast>& arena, Program& program) : arena_(arena), prog_(program) {}

  int emit(int ast) {
    if (const auto it = done_.find(ast); it != done_.end()) return it->second;
    const int node = emit_new(arena_[ast]);
    done_[ast] = node;
    return node;
  }

 private:
  int push(Node n) {
    prog_.nodes.push_back(n);
    return static_cast<int>(prog_.nodes.size()) - 1;
  }
  bool is_const(int node) const { return prog_.nodes[node].op == Op::constant; }
  double value(int node) const { return prog_.nodes[node].value; }

  int param_index(const std::string& name) {
    for (std::size_t i = 0; i < prog_.params.size(); ++i)
      if (prog_.params[i] == name) return static_cast<int>(i);
    prog_.params.push_back(name);
    return static_cast<int>(prog_.params.size()) - 1;
  }

  int emit_new(const Ast& t) {
    switch (t.op) {
      case Op::constant: return push({Op::constant, -1, -1, 0, t.value});
      case Op::column: {
        const int c = column_index(t.name);
        prog_.uses[c] = true;
        return push({Op::column, -1, -1, c, 0});
      }
      case Op::param: return push({Op::param, -1, -1, param_index(t.name), 0});
      default: break;
    }
    const int a = emit(t.a);
    const int b = t.b >= 0 ? emit(t.b) : -1;
    if (is_const(a) && (b < 0 || is_const(b)))
      return push({Op::constant, -1, -1, 0, fold(t.op, value(a), b < 0 ? 0 : value(b))});
    if (t.op == Op::pow) return emit_pow(a, b);
    return push({t.op, a, b, 0, 0});
  }

  // Picks the cheapest exact form: x^2 stays a power (negative x allowed), N^alpha becomes
  // exp(alpha * log N) with log N precomputed per point.
  int emit_pow(int a, int b) {
    if (is_const(b)) return push({Op::pow_const, a, -1, 0, value(b)});
    if (prog_.nodes[a].op == Op::column)
      return push({Op::pow_column, -1, b, prog_.nodes[a].index, 0});
    return push({Op::pow, a, b, 0, 0});
  }

  const std::vector<Ast>& arena_;
  Program& prog_;
  std::unordered_map<int, int> done_;
};

void split_uniform(Program& p) {
  std::vector<bool> varies(p.nodes.size(), false);
  for (std::size_t i = 0; i < p.nodes.size(); ++i) {
    const Node& n = p.nodes[i];
    varies[i] = n.op == Op::column || n.op == Op::pow_column || (n.a >= 0 && varies[n.a]) ||
                (n.b >= 0 && varies[n.b]);
    (varies[i] ? p.varying : p.uniform).push_back(static_cast<int32_t>(i));
  }
  // A root that reads no column must still be computed by eval_varying's caller: keep it last.
  if (!varies.back()) p.varying.push_back(static_cast<int32_t>(p.nodes.size() - 1));
}

std::string ast_string(const std::vector<Ast>& arena, int i) {
  const Ast& t = arena[i];
  auto s = [&](int j) { return ast_string(arena, j); };
  switch (t.op) {
    case Op::constant: return fmt::format("{}", t.value);
    case Op::column:
    case Op::param: return t.name;
    case Op::neg: return fmt::format("(-{})", s(t.a));
    case Op::add: return fmt::format("({} + {})", s(t.a), s(t.b));
    case Op::sub: return fmt::format("({} - {})", s(t.a), s(t.b));
    case Op::mul: return fmt::format("({} * {})", s(t.a), s(t.b));
    case Op::div: return fmt::format("({} / {})", s(t.a), s(t.b));
    case Op::log: return fmt::format("log({})", s(t.a));
    case Op::exp: return fmt::format("exp({})", s(t.a));
    default: return fmt::format("({} ^ {})", s(t.a), s(t.b));
  }
}

struct Parsed {
  std::vector<Ast> arena;
  int root = -1;
};

Parsed parse_with_definitions(std::string_view text, std::string_view what,
                              const std::vector<std::pair<std::string, std::string>>& defs) {
  Parsed out;
  std::unordered_map<std::string, int> known;
  for (const auto& [name, body] : defs) {
    const std::string where = fmt::format("{} \"{}\" definition {}", what, text, name);
    if (name.empty() || !is_name_start(name[0]) ||
        !std::all_of(name.begin(), name.end(), is_name_char))
      throw std::invalid_argument(fmt::format("{}: not a valid name", where));
    if (column_index(name) >= 0 || name == "log" || name == "exp" || known.count(name))
      throw std::invalid_argument(
          fmt::format("{}: the name is a column, a function or defined twice", where));
    // Earlier definitions are visible, later ones are not: no recursion by construction; a
    // body naming its own definition would silently make that name a parameter instead.
    const std::size_t first = out.arena.size();
    const int root = Parser(out.arena, known, body, where).parse();
    for (std::size_t i = first; i < out.arena.size(); ++i)
      if (out.arena[i].op == Op::param && out.arena[i].name == name)
        throw std::invalid_argument(fmt::format("{}: refers to itself", where));
    known[name] = root;
  }
  out.root = Parser(out.arena, known, text, std::string(what)).parse();
  return out;
}

}  // namespace

Point make_point(const Observation& x) {
  Point p;
  const double nt = x.n_total > 0 ? x.n_total : x.n_active;
  p.value = {x.n_active,
             nt,
             x.tokens,
             x.experts,
             x.top_k,
             x.granularity,
             training_compute(x.n_active, x.tokens)};
  for (int i = 0; i < kNumColumns; ++i) p.log[i] = std::log(p.value[i]);
  return p;
}

Expression Expression::parse(std::string_view text, std::string_view what,
                             const std::vector<std::pair<std::string, std::string>>& defs) {
  const Parsed parsed = parse_with_definitions(text, what, defs);
  auto program = std::make_shared<Program>();
  Compiler(parsed.arena, *program).emit(parsed.root);
  split_uniform(*program);
  static std::atomic<uint64_t> next_id{1};
  program->id = next_id++;
  if (static_cast<int>(program->params.size()) > kMaxParams)
    throw std::invalid_argument(fmt::format("{} \"{}\": {} parameters, at most {} are supported",
                                            what, text, program->params.size(), kMaxParams));
  Expression e;
  e.text_ = std::string(text);
  e.program_ = std::move(program);
  e.canonical_ = ast_string(parsed.arena, parsed.root);
  return e;
}

const std::vector<std::string>& Expression::params() const {
  return program_->params;
}

std::vector<std::string> Expression::columns() const {
  std::vector<std::string> out;
  for (int i = 0; i < kNumColumns; ++i)
    if (program_->uses[i]) out.emplace_back(kColumnNames[i]);
  return out;
}

bool Expression::uses(std::string_view column) const {
  const int i = column_index(column);
  if (i < 0) throw std::invalid_argument(fmt::format("unknown column '{}'", column));
  return program_->uses[i];
}

std::string Expression::to_string() const {
  return canonical_;
}

double Expression::evaluate(std::span<const double> params, const Observation& x) const {
  if (params.size() != program_->params.size())
    throw std::invalid_argument(fmt::format("law \"{}\" takes {} parameters, got {}", text_,
                                            program_->params.size(), params.size()));
  thread_local std::vector<double> slots;
  return program_->eval<double>(params.data(), make_point(x), slots);
}

double Expression::gradient(std::span<const double> params, const Observation& x,
                            std::span<double> grad) const {
  const int n = static_cast<int>(program_->params.size());
  if (static_cast<int>(params.size()) != n || static_cast<int>(grad.size()) != n)
    throw std::invalid_argument(fmt::format("law \"{}\" takes {} parameters", text_, n));
  if (n == 0) return evaluate(params, x);
  const Point point = make_point(x);
  double value = 0;
  dispatch_param_count(n, [&](auto size) {
    constexpr int kN = decltype(size)::value;
    using J = ceres::Jet<double, kN>;
    std::array<J, kN> p;
    for (int i = 0; i < kN; ++i) p[i] = J(params[i], i);
    thread_local std::vector<J> slots;
    const J v = program_->eval<J>(p.data(), point, slots);
    value = v.a;
    for (int i = 0; i < kN; ++i) grad[i] = v.v[i];
  });
  return value;
}

}  // namespace moescale::fitting
