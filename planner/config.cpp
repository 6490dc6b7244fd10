// Sweep configs (TOML). Every key is checked: unknown keys, wrong types and
// impossible values are errors that name the key and the file.
#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <stdexcept>

#include "planner/planner.h"

namespace moescale {
namespace {

// Limits that keep every count the planner and trainer multiply inside int64 and
// every plan quick to make. Each error names its limit.
constexpr double kMaxNumber = 1e30;
constexpr int64_t kMaxInteger = int64_t{1} << 40;
constexpr size_t kMaxListLength = 1000;
constexpr double kMaxBudget = limits::kMaxBudget;
constexpr double kMaxSize = 1e15;     // parameters
constexpr double kMaxTokens = 1e18;   // per run, fits int64 with room
constexpr int64_t kMaxPoints = 1000;  // points_per_budget
constexpr int64_t kMaxReplicates = 100;
constexpr int64_t kMaxExperts = limits::kMaxExperts;
constexpr int64_t kMaxVocab = 1 << 24;
constexpr int64_t kMaxSeqLen = 1 << 24;
constexpr int64_t kMaxBatch = 1 << 24;
constexpr int64_t kMaxTokensPerStep = int64_t{1} << 30;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxKvGroup = 512;  // the shape search tries up to 512 heads
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxRouterDim = 1 << 16;
constexpr int64_t kMaxFfnMultiple = 1 << 16;
constexpr size_t kMaxSweepName = 100;

// Sweep names become checkpoint folder names: nothing that could leave the folder.
void check_sweep_name(const std::string& name, const std::function<void(std::string)>& fail) {
  if (name.empty()) fail("is required (a name for this sweep)");
  if (name.size() > kMaxSweepName)
    fail(fmt::format("is {} characters; at most {}", name.size(), kMaxSweepName));
  const bool safe = std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
  if (!safe || name.front() == '.')
    fail(
        fmt::format("\"{}\" may use only letters, digits, '-', '_' and '.' (not first), so that "
                    "it is a safe folder name",
                    name));
}

class Section {
 public:
  Section(const toml::table* table, std::string name, std::string file)
      : table_(table), name_(std::move(name)), file_(std::move(file)) {}

  // Throws on keys that no get_* call asked about; call after reading.
  void reject_unknown() const {
    if (!table_) return;
    for (auto&& [key, node] : *table_) {
      if (!known_.count(std::string(key.str())))
        fail(std::string(key.str()),
             fmt::format("unknown key; known keys here: {}", fmt::join(known_, ", ")));
    }
  }

  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    throw std::invalid_argument(fmt::format("{}.{} in {}: {}", name_, key, file_, why));
  }

  const toml::node* find(const std::string& key) {
    known_.insert(key);
    return table_ ? table_->get(key) : nullptr;
  }

  void number(const std::string& key, double& out, bool positive = true, double max = kMaxNumber) {
    if (const toml::node* n = find(key)) out = as_number(key, *n);
    if (positive && !(out > 0)) fail(key, fmt::format("must be positive (got {})", out));
    if (out > max) fail(key, fmt::format("must be at most {:g} (got {:g})", max, out));
  }

  void integer(const std::string& key, int64_t& out, int64_t min = 1, int64_t max = kMaxInteger) {
    if (const toml::node* n = find(key)) {
      if (!n->is_integer()) fail(key, "expected an integer");
      out = n->value<int64_t>().value();
    }
    if (out < min) fail(key, fmt::format("must be at least {} (got {})", min, out));
    if (out > max) fail(key, fmt::format("must be at most {} (got {})", max, out));
  }

  void boolean(const std::string& key, bool& out) {
    if (const toml::node* n = find(key)) {
      if (!n->is_boolean()) fail(key, "expected true or false");
      out = n->value<bool>().value();
    }
  }

  void string(const std::string& key, std::string& out) {
    if (const toml::node* n = find(key)) {
      if (!n->is_string()) fail(key, "expected a string");
      out = n->value<std::string>().value();
    }
  }

  void numbers(const std::string& key, std::vector<double>& out, double max = kMaxNumber) {
    const toml::node* n = find(key);
    if (!n) return;
    const toml::array* a = n->as_array();
    if (!a || a->empty()) fail(key, "expected a non-empty array of numbers");
    if (a->size() > kMaxListLength)
      fail(key, fmt::format("at most {} values (got {})", kMaxListLength, a->size()));
    out.clear();
    for (const toml::node& e : *a) {
      const double v = as_number(key, e);
      if (!(v > 0)) fail(key, fmt::format("values must be positive (got {})", v));
      if (v > max) fail(key, fmt::format("values must be at most {:g} (got {:g})", max, v));
      out.push_back(v);
    }
  }

  void integers(const std::string& key, std::vector<int64_t>& out, int64_t max) {
    const toml::node* n = find(key);
    if (!n) return;
    const toml::array* a = n->as_array();
    if (!a || a->empty()) fail(key, "expected a non-empty array of integers");
    if (a->size() > kMaxListLength)
      fail(key, fmt::format("at most {} values (got {})", kMaxListLength, a->size()));
    out.clear();
    for (const toml::node& e : *a) {
      if (!e.is_integer() || e.value<int64_t>().value() < 1)
        fail(key, "values must be positive integers");
      if (e.value<int64_t>().value() > max)
        fail(key,
             fmt::format("values must be at most {} (got {})", max, e.value<int64_t>().value()));
      out.push_back(e.value<int64_t>().value());
    }
  }

  void strings(const std::string& key, std::vector<std::string>& out) {
    const toml::node* n = find(key);
    if (!n) return;
    const toml::array* a = n->as_array();
    if (!a || a->empty()) fail(key, "expected a non-empty array of strings");
    out.clear();
    for (const toml::node& e : *a) {
      if (!e.is_string()) fail(key, "values must be strings");
      out.push_back(e.value<std::string>().value());
    }
  }

 private:
  double as_number(const std::string& key, const toml::node& n) const {
    if (!n.is_number()) fail(key, "expected a number");
    const double v = n.value<double>().value();
    if (!std::isfinite(v)) fail(key, fmt::format("must be a finite number (got {})", v));
    return v;
  }

  const toml::table* table_;
  std::string name_, file_;
  std::set<std::string> known_;
};

void read_sweep(Section& s, SweepConfig& c) {
  s.string("name", c.name);
  check_sweep_name(c.name, [&](const std::string& why) { s.fail("name", why); });
  std::string design = "isoflop";
  s.string("design", design);
  if (design == "isoflop")
    c.design = Design::isoflop;
  else if (design == "grid")
    c.design = Design::grid;
  else
    s.fail("design", fmt::format("'{}' is not a design; use isoflop or grid", design));
  s.numbers("budgets", c.budgets, kMaxBudget);
  s.integer("points_per_budget", c.points_per_budget, 1, kMaxPoints);
  s.number("span", c.span, true, 1e6);
  if (c.span < 1) s.fail("span", "must be at least 1");
  s.number("tokens_per_param", c.tokens_per_param, true, 1e9);
  s.number("optimum_exponent", c.optimum_exponent, true, 1);
  if (c.optimum_exponent >= 1)
    s.fail("optimum_exponent", "must be below 1 (N* grows more slowly than C, since D = C/6N)");
  s.integer("replicates", c.replicates, 1, kMaxReplicates);
  s.numbers("replicate_budgets", c.replicate_budgets, kMaxBudget);
  for (double b : c.replicate_budgets)
    if (std::find(c.budgets.begin(), c.budgets.end(), b) == c.budgets.end())
      s.fail("replicate_budgets", fmt::format("{:g} is not one of the budgets", b));
  s.numbers("sizes", c.sizes, kMaxSize);
  s.numbers("tokens", c.token_counts, kMaxTokens);
  s.integers("experts", c.experts, kMaxExperts);
  std::vector<std::string> routers;
  s.strings("routers", routers);
  if (!routers.empty()) {
    c.routers.clear();
    for (const auto& r : routers) {
      try {
        c.routers.push_back(parse_router(r));
      } catch (const std::invalid_argument& e) {
        s.fail("routers", e.what());
      }
    }
  }
  s.number("max_total_compute", c.max_total_compute, false);
  if (c.max_total_compute < 0) s.fail("max_total_compute", "must not be negative");
  if (c.design == Design::isoflop && c.budgets.empty())
    s.fail("budgets", "an isoflop sweep needs budgets (training FLOPs, 6·N·D)");
  if (c.design == Design::grid && (c.sizes.empty() || c.token_counts.empty()))
    s.fail(c.sizes.empty() ? "sizes" : "tokens", "a grid sweep needs sizes and tokens");
  const bool routed =
      std::any_of(c.routers.begin(), c.routers.end(), [](Router r) { return r != Router::dense; });
  for (int64_t e : c.experts)
    if (e > 1 && !routed)
      s.fail("routers", fmt::format("experts = {} needs a router that routes (topk, rmoe or hash); "
                                    "\"dense\" alone plans no run with experts",
                                    e));
}

void read_model(Section& s, SweepConfig& c) {
  ModelShape& m = c.base;
  s.integer("vocab", m.vocab, 1, kMaxVocab);
  s.integer("seq_len", m.seq_len, 1, kMaxSeqLen);
  s.integer("top_k", m.top_k, 1, kMaxExperts);
  s.integer("moe_every", m.moe_every, 1, kMaxLayers);
  s.integer("router_dim", m.router_dim, 1, kMaxRouterDim);
  s.boolean("tied_embeddings", m.tied_embeddings);
  if (s.find("renormalize")) {
    bool renormalize = false;
    s.boolean("renormalize", renormalize);
    m.renormalize = renormalize;
  }
  s.number("aspect_ratio", c.rules.aspect_ratio, true, 1e6);
  s.integer("head_dim", c.rules.head_dim, 2, kMaxHeadDim);
  if (c.rules.head_dim % 2 != 0)
    s.fail("head_dim", fmt::format("must be even (got {}): rotary positions rotate pairs of "
                                   "dimensions",
                                   c.rules.head_dim));
  s.integer("width_step", c.rules.width_step, 0, kMaxHeadDim);
  s.integer("kv_group", c.rules.kv_group, 1, kMaxKvGroup);
  s.integer("ffn_multiple", c.rules.ffn_multiple, 1, kMaxFfnMultiple);
  s.integer("min_layers", c.rules.min_layers, 1, kMaxLayers);
  s.integer("max_layers", c.rules.max_layers, 1, kMaxLayers);
  if (c.rules.min_layers > c.rules.max_layers)
    s.fail("min_layers", fmt::format("min_layers = {} exceeds max_layers = {}", c.rules.min_layers,
                                     c.rules.max_layers));
  if (m.moe_every > c.rules.max_layers)
    s.fail("moe_every", fmt::format("moe_every = {} exceeds max_layers = {}: no layer could be an "
                                    "MoE layer",
                                    m.moe_every, c.rules.max_layers));
  for (int64_t e : c.experts)
    if (e > 1 && m.top_k > e)
      s.fail("top_k", fmt::format("top_k = {} exceeds experts = {}", m.top_k, e));
}

void read_train(Section& s, TrainSettings& t) {
  s.integer("batch_size", t.batch_size, 1, kMaxBatch);
  s.number("lr", t.lr, true, 1e3);
  s.number("min_lr_ratio", t.min_lr_ratio, false);
  s.number("warmup_fraction", t.warmup_fraction, false);
  s.number("weight_decay", t.weight_decay, false);
  s.number("grad_clip", t.grad_clip, false);
  s.number("aux_loss_weight", t.aux_loss_weight, false);
  s.number("z_loss_weight", t.z_loss_weight, false);
  s.integer("eval_interval", t.eval_interval, 0);
  s.integer("eval_batches", t.eval_batches, 1, 1 << 20);
  s.integer("final_eval_batches", t.final_eval_batches, 1, 1 << 20);
  s.integer("log_interval", t.log_interval);
  s.integer("checkpoint_interval", t.checkpoint_interval, 0);
  int64_t seed = static_cast<int64_t>(t.seed);
  s.integer("seed", seed, 0);
  t.seed = static_cast<uint64_t>(seed);
  if (t.min_lr_ratio < 0 || t.min_lr_ratio > 1) s.fail("min_lr_ratio", "must be in [0, 1]");
  if (t.warmup_fraction < 0 || t.warmup_fraction >= 1)
    s.fail("warmup_fraction", "must be in [0, 1)");
  for (auto [key, v] : {std::pair{"weight_decay", t.weight_decay},
                        {"grad_clip", t.grad_clip},
                        {"aux_loss_weight", t.aux_loss_weight},
                        {"z_loss_weight", t.z_loss_weight}})
    if (v < 0) s.fail(key, "must not be negative");
}

// [train] lr_rule and its keys: the rate each run gets (see LrRule).
void read_lr_rule(Section& s, SweepConfig& c) {
  std::string name = "fixed";
  s.string("lr_rule", name);
  LrPowerLaw power{.lr_ref = c.train.lr};
  const bool has_power_keys = s.find("lr_n_ref") || s.find("lr_d_ref") ||
                              s.find("lr_n_exponent") || s.find("lr_d_exponent") ||
                              s.find("lr_e_exponent");
  s.number("lr_n_ref", power.n_ref, true, kMaxSize);
  s.number("lr_d_ref", power.d_ref, true, kMaxTokens);
  for (auto [key, out] : {std::pair{"lr_n_exponent", &power.n_exponent},
                          {"lr_d_exponent", &power.d_exponent},
                          {"lr_e_exponent", &power.e_exponent}}) {
    s.number(key, *out, false, 10);
    if (*out < -10) s.fail(key, fmt::format("must be at least -10 (got {})", *out));
  }
  s.string("lr_fit", c.lr_fit);
  if (has_power_keys && name != "power")
    s.fail("lr_rule", fmt::format("is \"{}\", but lr_n_ref, lr_d_ref and the lr_*_exponent keys "
                                  "belong to lr_rule = \"power\"",
                                  name));
  if (!c.lr_fit.empty() && name != "fit")
    s.fail("lr_fit", fmt::format("names a tuning sweep, but lr_rule is \"{}\"; set lr_rule = "
                                 "\"fit\" to take the rates from its fitted law",
                                 name));
  if (name == "fit" && c.lr_fit.empty())
    s.fail("lr_fit", fmt::format("lr_rule = \"fit\" needs lr_fit, the tuning sweep whose law "
                                 "gives the rates (e.g. \"{}\")",
                                 lr_tuning_sweep_name(c.name)));
  c.lr_rule.name = name;
  if (name == "fixed" || name == "power" || name == "fit") {
    c.lr_rule.law = name == "power" ? power : LrPowerLaw{.lr_ref = c.train.lr};
    if (name == "power")
      c.lr_rule.source = fmt::format("[train] lr_* keys of {}", c.source_path);
    if (name == "fit") c.lr_rule.source = fmt::format("the lr fits of sweep '{}'", c.lr_fit);
    return;
  }
  try {
    c.lr_rule = lr_preset(name).rule;
  } catch (const std::invalid_argument& e) {
    s.fail("lr_rule", e.what());
  }
}

void read_tuning(Section& s, SweepConfig& c) {
  LrTuning& t = c.tuning;
  s.numbers("budgets", t.budgets, kMaxBudget);
  for (double b : t.budgets)
    if (std::find(c.budgets.begin(), c.budgets.end(), b) == c.budgets.end())
      s.fail("budgets", fmt::format("{:g} is not one of [sweep] budgets", b));
  s.integers("anchors", t.anchors, kMaxPoints);
  s.numbers("rate_factors", t.rate_factors, 1e6);
  s.numbers("rates", t.rates, 1e3);
  s.integer("seeds", t.seeds, 1, kMaxReplicates);
  if (!t.rates.empty() && !t.rate_factors.empty())
    s.fail("rates", "give rates (absolute) or rate_factors (times the rule's rate), not both");
  if (t.rates.empty() && t.rate_factors.empty()) t.rate_factors = {0.125, 0.25, 0.5, 1, 2, 4, 8};
  const size_t budgets = t.budgets.empty() ? 1 : t.budgets.size();
  if (t.anchors.size() != 1 && t.anchors.size() != budgets)
    s.fail("anchors", fmt::format("give one count for every budget or one per budget ({}), not {}",
                                  budgets, t.anchors.size()));
}

}  // namespace

SweepConfig parse_sweep_config(std::string_view text, const std::string& source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw std::invalid_argument(fmt::format("{}:{}:{}: {}", source, e.source().begin.line,
                                            e.source().begin.column, e.description()));
  }
  SweepConfig c;
  c.source_path = source;
  c.text = std::string(text);
  const std::set<std::string> sections{"sweep", "model", "train", "tune", "data", "device"};
  for (auto&& [key, node] : root) {
    if (!sections.count(std::string(key.str())) || !node.is_table())
      throw std::invalid_argument(fmt::format(
          "{} in {}: unknown section; use [sweep], [model], [train], [tune], [data] and [device]",
          key.str(), source));
  }
  auto section = [&](const char* name) { return Section(root[name].as_table(), name, source); };
  Section sweep = section("sweep"), model = section("model"), train = section("train"),
          tune = section("tune"), data = section("data"), device = section("device");
  read_sweep(sweep, c);
  read_model(model, c);
  read_train(train, c.train);
  read_lr_rule(train, c);
  read_tuning(tune, c);
  // Checked here so that no later product of config integers can overflow.
  int64_t per_step = 0;
  if (__builtin_mul_overflow(c.train.batch_size, c.base.seq_len, &per_step) ||
      per_step > kMaxTokensPerStep)
    train.fail("batch_size", fmt::format("batch_size = {} times seq_len = {} is over the limit of "
                                         "{} tokens per step",
                                         c.train.batch_size, c.base.seq_len, kMaxTokensPerStep));
  data.string("dir", c.data_dir);
  device.number("flops", c.device_flops);
  for (Section* s : {&sweep, &model, &train, &tune, &data, &device}) s->reject_unknown();
  return c;
}

SweepConfig load_sweep_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::invalid_argument(
        fmt::format("cannot read config {}; check the path (configs/ has examples)", path));
  std::ostringstream text;
  text << in.rdbuf();
  return parse_sweep_config(text.str(), path);
}

}  // namespace moescale
