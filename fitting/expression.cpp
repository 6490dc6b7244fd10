// Law expressions: a recursive-descent parser to a small tree (definitions are shared
// subtrees), then a compile pass to the flat Program of program.h with constants folded.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <cmath>
#include <map>
#include <set>
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
  int depth = 1;     // longest path to a leaf: bounds every recursive walk of the tree
};

// Every walk of the tree (compiling, printing, finding linear parameters) recurses, and so
// does the parser on nested brackets, minus signs, powers and calls. Deep input would overflow
// the stack instead of failing with a message, so both depths and the length are limited far
// above any real law.
constexpr int kMaxDepth = 200;
constexpr std::size_t kMaxLength = 10000;

// Long laws are cut in messages (a column number says where).
std::string shown(std::string_view text) {
  return text.size() <= 120 ? std::string(text) : std::string(text.substr(0, 100)) + "...";
}

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
    if (text_.size() > kMaxLength)
      throw std::invalid_argument(fmt::format("{} is {} characters long; at most {} are allowed",
                                              what_, text_.size(), kMaxLength));
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
        fmt::format("{} \"{}\": {} at column {}", what_, shown(text_), problem, column));
  }

  // Counts the parser's own recursion (brackets, calls, minus signs, powers).
  class Nesting {
   public:
    explicit Nesting(Parser& p) : p_(p) {
      // Each level of brackets or calls passes two counted functions (sum and unary).
      if (++p_.nesting_ > 2 * kMaxDepth)
        p_.fail(fmt::format("nested more than {} levels deep; simplify the expression", kMaxDepth),
                p_.pos_);
    }
    ~Nesting() { --p_.nesting_; }
    Nesting(const Nesting&) = delete;
    Nesting& operator=(const Nesting&) = delete;

   private:
    Parser& p_;
  };

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
    const int depth = 1 + std::max(arena_[a].depth, b >= 0 ? arena_[b].depth : 0);
    if (depth > kMaxDepth)
      fail(fmt::format("more than {} operations deep (a sum or product of more than {} terms, "
                       "or nesting); simplify the expression",
                       kMaxDepth, kMaxDepth),
           pos_ > 0 ? pos_ - 1 : 0);
    arena_.push_back({op, a, b, 0, {}, depth});
    return static_cast<int>(arena_.size()) - 1;
  }

  int sum() {
    const Nesting nesting(*this);
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
    const Nesting nesting(*this);
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
  int nesting_ = 0;
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

// Definitions are shared subtrees, so the inlined text can be exponentially longer than the
// input (d2 = d1*d1, d3 = d2*d2, ...): the printer stops at a length no real law reaches.
constexpr std::size_t kMaxInlinedLength = 100000;

void append_ast(const std::vector<Ast>& arena, int i, std::string& out) {
  if (out.size() > kMaxInlinedLength)
    throw std::invalid_argument(fmt::format(
        "law is longer than {} characters once its definitions are inlined; simplify it",
        kMaxInlinedLength));
  const Ast& t = arena[i];
  auto binary = [&](const char* op) {
    out += '(';
    append_ast(arena, t.a, out);
    out += op;
    append_ast(arena, t.b, out);
    out += ')';
  };
  auto call = [&](const char* open) {
    out += open;
    append_ast(arena, t.a, out);
    out += ')';
  };
  switch (t.op) {
    case Op::constant: out += fmt::format("{}", t.value); break;
    case Op::column:
    case Op::param: out += t.name; break;
    case Op::neg: call("(-"); break;
    case Op::add: binary(" + "); break;
    case Op::sub: binary(" - "); break;
    case Op::mul: binary(" * "); break;
    case Op::div: binary(" / "); break;
    case Op::log: call("log("); break;
    case Op::exp: call("exp("); break;
    default: binary(" ^ "); break;
  }
}

std::string ast_string(const std::vector<Ast>& arena, int i) {
  std::string out;
  append_ast(arena, i, out);
  return out;
}

// Splits a law into sum_k c_k * phi_k(theta) + phi_0(theta), where each c_k is a parameter p
// (or exp(p), a log-space scale) that occurs nowhere else. Walks the tree once, distributing
// products and quotients by factors free of coefficients over sums; anything else is one term
// whose factor is the node itself.
class Separator {
 public:
  explicit Separator(std::vector<Ast>& arena) : arena_(arena) {}

  struct Term {
    std::string coef;  // empty: part of the offset phi_0
    bool log_scale = false;
    int factor = -1;  // AST node; -1: the number 1
  };

  // Definitions are shared subtrees, so a tree walk can be exponential: past this many visits
  // the law is treated as having no linear part.
  struct TooBig {};
  std::vector<Term> decompose(int i) {
    if (++visits_ > kMaxVisits) throw TooBig{};
    const Ast t = arena_[i];  // a copy: node() below grows the arena
    switch (t.op) {
      case Op::param: return {{t.name, false, -1}};
      case Op::exp: {
        const Ast arg = arena_[t.a];  // a copy: node() grows the arena
        if (arg.op == Op::param) return {{arg.name, true, -1}};
        // exp(x + d) = exp(d) * exp(x): d is a log-space scale (Clark's law).
        for (const auto& [coef, rest] : {std::pair{arg.b, arg.a}, std::pair{arg.a, arg.b}})
          if (arg.op == Op::add && arena_[coef].op == Op::param) {
            std::string name = arena_[coef].name;
            return {{std::move(name), true, node(Op::exp, rest)}};
          }
        return offset(i);
      }
      case Op::add: return concat(decompose(t.a), decompose(t.b));
      case Op::sub: return concat(decompose(t.a), negate(decompose(t.b)));
      case Op::neg: return negate(decompose(t.a));
      case Op::mul: {
        auto da = decompose(t.a);
        auto db = decompose(t.b);
        if (is_plain(db)) return scale(std::move(da), t.b, Op::mul);
        if (is_plain(da)) return scale(std::move(db), t.a, Op::mul);
        return offset(i);
      }
      case Op::div: {
        auto db = decompose(t.b);
        if (is_plain(db)) return scale(decompose(t.a), t.b, Op::div);
        return offset(i);
      }
      default: return offset(i);
    }
  }

  // The parameters a subtree reads.
  void params_of(int i, std::set<std::string>& out) {
    std::vector<int> stack{i};
    std::set<int> seen;
    while (!stack.empty()) {
      const int j = stack.back();
      stack.pop_back();
      if (j < 0 || !seen.insert(j).second) continue;
      if (arena_[j].op == Op::param) out.insert(arena_[j].name);
      stack.push_back(arena_[j].a);
      stack.push_back(arena_[j].b);
    }
  }

  int node(Op op, int a, int b = -1, double value = 0, std::string name = {}) {
    int depth = 1;
    if (a >= 0) depth = 1 + std::max(arena_[a].depth, b >= 0 ? arena_[b].depth : 0);
    arena_.push_back({op, a, b, value, std::move(name), depth});
    return static_cast<int>(arena_.size()) - 1;
  }

 private:
  static std::vector<Term> offset(int i) { return {{"", false, i}}; }
  static bool is_plain(const std::vector<Term>& d) { return d.size() == 1 && d[0].coef.empty(); }
  static std::vector<Term> concat(std::vector<Term> a, std::vector<Term> b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }
  std::vector<Term> negate(std::vector<Term> d) {
    for (auto& t : d)
      t.factor = t.factor < 0 ? node(Op::constant, -1, -1, -1) : node(Op::neg, t.factor);
    return d;
  }
  std::vector<Term> scale(std::vector<Term> d, int by, Op op) {
    for (auto& t : d) {
      const int one = t.factor < 0 ? node(Op::constant, -1, -1, 1) : t.factor;
      t.factor = t.factor < 0 && op == Op::mul ? by : node(op, one, by);
    }
    return d;
  }

  static constexpr std::size_t kMaxVisits = 100000;
  std::vector<Ast>& arena_;
  std::size_t visits_ = 0;
};

// Null when no parameter enters linearly.
std::shared_ptr<const Separable> separate(std::vector<Ast>& arena, int root, const Program& full) {
  Separator sep(arena);
  std::vector<Separator::Term> terms;
  try {
    terms = sep.decompose(root);
  } catch (const Separator::TooBig&) {
    return nullptr;
  }
  // A candidate is linear only if every occurrence is a coefficient, all of one kind.
  std::set<std::string> elsewhere;
  std::map<std::string, std::set<bool>> kinds;
  for (const auto& t : terms) {
    if (t.factor >= 0) sep.params_of(t.factor, elsewhere);
    if (!t.coef.empty()) kinds[t.coef].insert(t.log_scale);
  }
  auto linear = [&](const std::string& p) {
    return !p.empty() && !elsewhere.count(p) && kinds[p].size() == 1;
  };
  auto out = std::make_shared<Separable>();
  Compiler compiler(arena, out->basis);
  const int one = sep.node(Op::constant, -1, -1, 1);
  for (std::size_t i = 0; i < full.params.size(); ++i) {
    const std::string& p = full.params[i];
    if (!linear(p)) continue;
    Separable::Coefficient c{static_cast<int>(i), *kinds[p].begin(), {}};
    for (const auto& t : terms)
      if (t.coef == p) c.outputs.push_back(compiler.emit(t.factor < 0 ? one : t.factor));
    out->coefficients.push_back(std::move(c));
  }
  if (out->coefficients.empty()) return nullptr;
  for (const auto& t : terms) {
    if (linear(t.coef)) continue;
    int f = t.factor < 0 ? one : t.factor;
    if (!t.coef.empty()) {  // a coefficient that occurs elsewhere: back into phi_0
      int p = sep.node(Op::param, -1, -1, 0, t.coef);
      if (t.log_scale) p = sep.node(Op::exp, p);
      f = sep.node(Op::mul, p, f);
    }
    out->offset.push_back(compiler.emit(f));
  }
  for (const auto& p : out->basis.params)
    out->nonlinear.push_back(static_cast<int>(std::find(full.params.begin(), full.params.end(), p) -
                                              full.params.begin()));
  split_uniform(out->basis);
  return out;
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
    const std::string where = fmt::format("{} \"{}\" definition {}", what, shown(text), name);
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
  Parsed parsed = parse_with_definitions(text, what, defs);
  auto program = std::make_shared<Program>();
  Compiler(parsed.arena, *program).emit(parsed.root);
  split_uniform(*program);
  std::string canonical = ast_string(parsed.arena, parsed.root);  // throws if far too long
  program->separable = separate(parsed.arena, parsed.root, *program);
  static std::atomic<uint64_t> next_id{1};
  program->id = next_id++;
  if (program->separable) const_cast<Separable&>(*program->separable).basis.id = next_id++;
  if (static_cast<int>(program->params.size()) > kMaxParams)
    throw std::invalid_argument(fmt::format("{} \"{}\": {} parameters, at most {} are supported",
                                            what, shown(text), program->params.size(), kMaxParams));
  Expression e;
  e.text_ = std::string(text);
  e.program_ = std::move(program);
  e.canonical_ = std::move(canonical);
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
