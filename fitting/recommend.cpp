// The recommender: loss-optimal N and D per expert count at a compute budget, and the
// inference-aware mode after Yun et al. 2024 (arXiv 2404.02852).
//
// Loss-optimal: for each E, minimise L(N, D = C / (6 N), E) over log N (a 400-point scan of
// the bracket, then golden-section search around the best point).
//
// Inference-aware cost model (all bf16; G = GPUs per serving replica; per GPU: memory M,
// bandwidth BW, peak bf16 P; mfu_s, mfu_t = achieved shares of P when serving / training):
//   weights   W_all = 2 bytes * (N_total + N_embedding)      all experts must be resident
//   KV/token  kv = 2 (K and V) * n_layers * n_kv_heads * head_dim * 2 bytes
//   batch     b(G) = min(max_batch, floor((G * M * usable - W_all) / (kv * (p + o))))
//             (p prompt and o output tokens per request; G is feasible when b >= 1)
//   experts   N_exp = (N_total - N_active) * E / (E - K): all expert parameters;
//             touched per decode step u(b) = 1 - (1 - K/E)^b (share of experts some token uses)
//   decode    t_d = max(2 (N_active + N_emb - K/E N_exp + u(b) N_exp) + b kv (p + o/2)) / (G BW),
//                       2 (N_active + N_emb) b / (G P mfu_s))      one step, b tokens
//   prefill   t_p = max(W_all / (G BW), 2 (N_active + N_emb) b p / (G P mfu_s))   b requests
//   throughput  X(G) = b o / (t_p + o t_d)   generated tokens per second per replica
//   serving   $/token(G) = G * price_per_second / X(G), minimised over G = 1..max_gpus
//             (ties, common once b hits max_batch, go to the smallest G)
//   training  $ = C / (P mfu_t) * price_per_second      (C = 6 N_active D)
// Attention score FLOPs and tensor-parallel communication are left out (they favour smaller
// G slightly); the weights of all experts count toward memory, as in Yun et al.
// For a target loss L* (default: the lowest loss-optimal loss over the expert counts at the
// budget), each E gets D(N) solving L(N, D, E) = L* and the N minimising
// training $ (6 N D(N)) + T * serving $/token(N); the over-training ratio is
// N_loss_optimal(L*) / N, with N_loss_optimal the N reaching L* with the least compute.
#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "fitting/fitting.h"

namespace moescale::fitting {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Minimises f over [lo, hi]: a scan finds the basin (the functions here may be +inf on part
// of the bracket, which golden section alone would not survive), golden section refines it.
template <typename F>
std::pair<double, double> minimise_1d(F&& f, double lo, double hi, int scan = 400) {
  double best_u = lo, best_f = kInf;
  const double step = (hi - lo) / scan;
  for (int i = 0; i <= scan; ++i) {
    const double u = lo + step * i;
    const double v = f(u);
    if (v < best_f) best_f = v, best_u = u;
  }
  if (!std::isfinite(best_f)) return {best_u, kInf};
  double a = std::max(lo, best_u - step), b = std::min(hi, best_u + step);
  const double r = (std::sqrt(5.0) - 1) / 2;
  double c = b - r * (b - a), d = a + r * (b - a);
  double fc = f(c), fd = f(d);
  for (int i = 0; i < 100 && b - a > 1e-12 * std::max(1.0, std::abs(a)); ++i) {
    if (fc < fd) {
      b = d, d = c, fd = fc;
      c = b - r * (b - a), fc = f(c);
    } else {
      a = c, c = d, fc = fd;
      d = a + r * (b - a), fd = f(d);
    }
  }
  const double u = fc < fd ? c : d;
  const double fu = std::min(fc, fd);
  return fu <= best_f ? std::pair{u, fu} : std::pair{best_u, best_f};
}

// The planner's shape search takes tens of milliseconds per call, and the searches here ask
// for thousands of sizes: sample it twice per decade of N_active and interpolate (in log) the
// total/active ratio, embedding size and KV bytes, which also keeps costs smooth in N.
class Footprints {
 public:
  explicit Footprints(const RecommendOptions& options) : options_(options) {}

  Footprint at(double n, int64_t experts) {
    const double x = std::log10(n) * kPerDecade;
    const double k = std::floor(x), t = x - k;
    const Footprint& a = sample(static_cast<int>(k), experts);
    const Footprint& b = sample(static_cast<int>(k) + 1, experts);
    auto mix = [t](double u, double v) {
      return std::exp((1 - t) * std::log(u) + t * std::log(v));
    };
    Footprint f = a;
    f.n_active = n;
    f.n_total = n * mix(a.n_total / a.n_active, b.n_total / b.n_active);
    f.n_embedding = mix(a.n_embedding, b.n_embedding);
    f.kv_bytes_per_token = mix(a.kv_bytes_per_token, b.kv_bytes_per_token);
    return f;
  }

 private:
  static constexpr double kPerDecade = 2;
  const Footprint& sample(int k, int64_t experts) {
    const auto key = std::pair{experts, k};
    auto it = cache_.find(key);
    if (it == cache_.end()) {
      const double n = std::pow(10.0, k / kPerDecade);
      it = cache_.emplace(key, footprint(n, experts, options_.top_k, options_.shape)).first;
    }
    return it->second;
  }
  const RecommendOptions& options_;
  std::map<std::pair<int64_t, int>, Footprint> cache_;
};

class LossModel {
 public:
  LossModel(const FitResult& fit, const RecommendOptions& options)
      : expr_(fit.compiled()), x_(fit.fitted_vector()), options_(options), footprints_(options) {
    if (!(expr_.uses("N") || expr_.uses("NT")) || !(expr_.uses("D") || expr_.uses("C")))
      throw std::invalid_argument(fmt::format(
          "law \"{}\" does not depend on both parameters (N) and tokens (D or C), so it cannot "
          "trade one for the other at a budget; fit a law such as chinchilla or yun2024",
          fit.law));
    uses_total_ = expr_.uses("NT");
  }

  double n_total(double n, int64_t experts) const {
    return uses_total_ ? footprints_.at(n, experts).n_total : n;
  }
  Footprint footprint_at(double n, int64_t experts) const { return footprints_.at(n, experts); }

  double loss(double n, double d, int64_t experts) const {
    return loss(n, d, experts, n_total(n, experts));
  }

  double loss(double n, double d, int64_t experts, double nt) const {
    Observation o;
    o.n_active = n;
    o.n_total = nt;
    o.tokens = d;
    o.experts = static_cast<double>(experts);
    o.top_k = static_cast<double>(std::min<int64_t>(options_.top_k, experts));
    o.granularity = options_.granularity;
    const double v = expr_.evaluate(x_, o);
    return std::isfinite(v) ? v : kInf;
  }

  // Tokens for N to reach `target` (loss falls with D); +inf when no D does.
  double tokens_for_loss(double n, int64_t experts, double target) const {
    const double nt = n_total(n, experts);
    double lo = 0, hi = std::log(1e30);
    if (!(loss(n, std::exp(hi), experts, nt) < target)) return kInf;
    if (loss(n, 1, experts, nt) <= target) return 1;
    for (int i = 0; i < 100; ++i) {
      const double mid = (lo + hi) / 2;
      (loss(n, std::exp(mid), experts, nt) > target ? lo : hi) = mid;
    }
    return std::exp(hi);
  }

 private:
  Expression expr_;
  std::vector<double> x_;
  const RecommendOptions& options_;
  mutable Footprints footprints_;
  bool uses_total_ = false;
};

void check_options(const RecommendOptions& o) {
  if (!(o.budget > 0) || !std::isfinite(o.budget))
    throw std::invalid_argument("the compute budget must be a positive number of FLOP, e.g. 1e21");
  if (o.experts.empty()) throw std::invalid_argument("give at least one expert count");
  for (auto e : o.experts)
    if (e < 1) throw std::invalid_argument(fmt::format("expert count {} must be >= 1", e));
  if (o.top_k < 1) throw std::invalid_argument("top-k must be >= 1");
  if (!(o.min_params > 0) || !(o.max_params > o.min_params))
    throw std::invalid_argument("the parameter bracket needs 0 < min_params < max_params");
  if (o.target_loss && !(*o.target_loss > 0))
    throw std::invalid_argument("the target loss must be positive");
  if (o.serving) {
    const auto& s = *o.serving;
    if (!(s.tokens >= 0)) throw std::invalid_argument("served tokens must be >= 0");
    if (s.prompt_tokens < 0 || s.output_tokens < 1 || s.max_batch < 1 || s.max_gpus < 1)
      throw std::invalid_argument(
          "serving needs prompt_tokens >= 0, output_tokens >= 1, max_batch >= 1, max_gpus >= 1");
    const auto& h = s.hardware;
    if (!(h.memory_gb > 0 && h.bandwidth_tbs > 0 && h.bf16_tflops > 0 && h.usd_per_hour > 0 &&
          h.memory_usable > 0 && h.memory_usable <= 1 && h.serve_mfu > 0 && h.serve_mfu <= 1 &&
          h.train_mfu > 0 && h.train_mfu <= 1))
      throw std::invalid_argument(fmt::format(
          "hardware \"{}\": sizes, rates and prices must be positive, shares in (0, 1]", h.name));
  }
}

Choice describe(const LossModel& model, double n, double d, double loss, int64_t experts) {
  Choice c;
  c.experts = experts;
  c.n_active = n;
  c.n_total = model.footprint_at(n, experts).n_total;
  c.tokens = d;
  c.compute = training_compute(n, d);
  c.loss = loss;
  return c;
}

Choice loss_optimal(const LossModel& model, const FitResult& fit, double budget, int64_t experts,
                    const RecommendOptions& o) {
  // D >= 1 token caps N at C / 6.
  const double hi = std::log(std::min(o.max_params, budget / 6));
  const double lo = std::log(o.min_params);
  if (!(hi > lo))
    throw std::invalid_argument(
        fmt::format("budget {:g} FLOP is too small for models of {:g} parameters or more", budget,
                    o.min_params));
  auto f = [&](double u) {
    const double n = std::exp(u);
    return model.loss(n, tokens_for_compute(budget, n), experts);
  };
  const auto [u, loss] = minimise_1d(f, lo, hi);
  if (!std::isfinite(loss))
    throw std::runtime_error(fmt::format(
        "law \"{}\" gives no finite loss for E = {} at budget {:g}", fit.law, experts, budget));
  const double n = std::exp(u);
  return describe(model, n, tokens_for_compute(budget, n), loss, experts);
}

Choice cost_optimal_choice(const LossModel& model, int64_t experts, double target,
                           const RecommendOptions& o) {
  const ServingDemand& demand = *o.serving;
  const double lo = std::log(o.min_params), hi = std::log(o.max_params);
  auto compute_at = [&](double u) {
    const double n = std::exp(u);
    return training_compute(n, model.tokens_for_loss(n, experts, target));
  };
  auto serving_at = [&](double n) { return serving_cost(model.footprint_at(n, experts), demand); };
  auto total_at = [&](double u) {
    const double c = compute_at(u);
    if (!std::isfinite(c)) return kInf;
    const ServingCost s = serving_at(std::exp(u));
    if (!s.feasible) return kInf;
    return training_cost_usd(c, demand.hardware) + demand.tokens * s.usd_per_million_tokens / 1e6;
  };
  Choice c;
  c.experts = experts;
  c.loss = target;
  const auto [u_opt, c_opt] = minimise_1d(compute_at, lo, hi);
  if (!std::isfinite(c_opt)) {
    c.feasible = false;
    return c;
  }
  // Serving cost grows with N and training cost grows away from u_opt, so the cheapest N lies
  // below u_opt; its upper margin only absorbs the steps in G.
  const auto [u, total] = minimise_1d(total_at, std::max(lo, u_opt - std::log(1e6)),
                                      std::min(hi, u_opt + std::log(2.0)));
  if (!std::isfinite(total)) {
    c.feasible = false;
    return c;
  }
  const double n = std::exp(u);
  c = describe(model, n, model.tokens_for_loss(n, experts, target), target, experts);
  c.loss_optimal_n_active = std::exp(u_opt);
  c.overtrain_ratio = c.loss_optimal_n_active / n;
  c.serving = serving_at(n);
  c.train_usd = training_cost_usd(c.compute, demand.hardware);
  c.serve_usd = demand.tokens * c.serving.usd_per_million_tokens / 1e6;
  c.total_usd = c.train_usd + c.serve_usd;
  return c;
}

nlohmann::json choice_json(const Choice& c, bool costs) {
  nlohmann::json j = {{"experts", c.experts}, {"feasible", c.feasible}, {"n_active", c.n_active},
                      {"n_total", c.n_total}, {"tokens", c.tokens},     {"compute", c.compute},
                      {"loss", c.loss}};
  if (costs) {
    j["loss_optimal_n_active"] = c.loss_optimal_n_active;
    j["overtrain_ratio"] = c.overtrain_ratio;
    j["train_usd"] = c.train_usd;
    j["serve_usd"] = c.serve_usd;
    j["total_usd"] = c.total_usd;
    const auto& s = c.serving;
    j["serving"] = {{"gpus", s.gpus},
                    {"min_gpus", s.min_gpus},
                    {"batch", s.batch},
                    {"tokens_per_second", s.tokens_per_second},
                    {"usd_per_million_tokens", s.usd_per_million_tokens},
                    {"weights_gb", s.weights_gb},
                    {"kv_gb", s.kv_gb}};
  }
  return j;
}

}  // namespace

Hardware hardware_preset(std::string_view name) {
  // Public spec-sheet numbers (SXM parts, dense bf16); prices are rough 2024 cloud rates.
  if (name == "h100") return {"h100", 80, 3.35, 989, 2.5};
  if (name == "h200") return {"h200", 141, 4.8, 989, 3.5};
  if (name == "a100") return {"a100", 80, 2.039, 312, 1.5};
  throw std::invalid_argument(
      fmt::format("unknown hardware \"{}\"; presets: h100, a100, h200", name));
}

void apply_hardware_override(Hardware& hw, std::string_view assignment) {
  const auto eq = assignment.find('=');
  const std::string key(assignment.substr(0, eq));
  double* field = key == "memory_gb"       ? &hw.memory_gb
                  : key == "bandwidth_tbs" ? &hw.bandwidth_tbs
                  : key == "bf16_tflops"   ? &hw.bf16_tflops
                  : key == "usd_per_hour"  ? &hw.usd_per_hour
                  : key == "memory_usable" ? &hw.memory_usable
                  : key == "serve_mfu"     ? &hw.serve_mfu
                  : key == "train_mfu"     ? &hw.train_mfu
                                           : nullptr;
  if (eq == std::string_view::npos || !field)
    throw std::invalid_argument(fmt::format(
        "hardware override \"{}\": expected key=value with key one of memory_gb, bandwidth_tbs, "
        "bf16_tflops, usd_per_hour, memory_usable, serve_mfu, train_mfu",
        assignment));
  const std::string value(assignment.substr(eq + 1));
  char* end = nullptr;
  const double v = std::strtod(value.c_str(), &end);
  if (value.empty() || *end != '\0' || !(v > 0) || !std::isfinite(v))
    throw std::invalid_argument(fmt::format(
        "hardware override \"{}\": \"{}\" is not a positive number", assignment, value));
  *field = v;
}

ShapeRules default_serving_rules() {
  ShapeRules r;
  r.aspect_ratio = 128;  // d_model / n_layers of Llama-like models (4096 / 32)
  r.head_dim = 128;
  r.kv_group = 1;
  r.ffn_multiple = 256;
  r.min_layers = 1;
  r.max_layers = 256;
  return r;
}

ModelShape default_shape(double n_active, int64_t experts, int64_t top_k) {
  ModelShape base;
  base.vocab = 32000;
  base.seq_len = 2048;
  base.experts = experts;
  base.top_k = std::min(top_k, experts);
  base.moe_every = 1;
  base.router = experts > 1 ? Router::topk : Router::dense;
  base.tied_embeddings = false;
  return shape_for_active_params(n_active, base, default_serving_rules());
}

Footprint footprint(double n_active, int64_t experts, int64_t top_k, const ShapeFn& shape) {
  const ModelShape s = shape(n_active, experts, top_k).resolved();
  const ParamCount c = count_params(s);
  Footprint f;
  f.n_active = n_active;
  f.n_total = static_cast<double>(c.total) * n_active / static_cast<double>(c.active);
  f.n_embedding = static_cast<double>(c.embedding);
  f.experts = static_cast<double>(experts);
  f.top_k = static_cast<double>(std::min(top_k, experts));
  f.kv_bytes_per_token = 2.0 * static_cast<double>(s.n_layers * s.n_kv_heads * s.head_dim) * 2;
  return f;
}

ServingCost serving_cost(const Footprint& m, const ServingDemand& d) {
  const Hardware& hw = d.hardware;
  const double mem = hw.memory_gb * 1e9 * hw.memory_usable;
  const double bw = hw.bandwidth_tbs * 1e12;
  const double flops = hw.bf16_tflops * 1e12 * hw.serve_mfu;
  const double p = static_cast<double>(d.prompt_tokens), o = static_cast<double>(d.output_tokens);
  const double weights = 2 * (m.n_total + m.n_embedding);
  const double flop_per_token = 2 * (m.n_active + m.n_embedding);
  const bool moe = m.experts > m.top_k;
  const double n_expert = moe ? (m.n_total - m.n_active) * m.experts / (m.experts - m.top_k) : 0;
  const double n_always = m.n_active + m.n_embedding - (moe ? m.top_k / m.experts * n_expert : 0);
  ServingCost best;
  best.weights_gb = weights / 1e9;
  best.min_gpus = static_cast<int>(std::ceil(weights / mem));
  double best_usd = kInf;
  for (int g = std::max(1, best.min_gpus); g <= d.max_gpus; ++g) {
    const double kv_mem = g * mem - weights;
    const double fit = std::floor(kv_mem / (m.kv_bytes_per_token * (p + o)));
    if (!(fit >= 1)) continue;
    const double b = std::min(static_cast<double>(d.max_batch), fit);
    const double touched = moe ? 1 - std::pow(1 - m.top_k / m.experts, b) : 1;
    const double step_bytes =
        2 * (n_always + touched * n_expert) + b * m.kv_bytes_per_token * (p + o / 2);
    const double t_decode = std::max(step_bytes / (g * bw), flop_per_token * b / (g * flops));
    const double t_prefill = std::max(weights / (g * bw), flop_per_token * b * p / (g * flops));
    const double throughput = b * o / (t_prefill + o * t_decode);
    const double usd = g * hw.usd_per_hour / 3600 / throughput * 1e6;
    // Once the batch is capped, ideal scaling makes the cost flat in G: keep the fewest GPUs.
    if (usd < best_usd * (1 - 1e-9)) {
      best_usd = usd;
      best.feasible = true;
      best.gpus = g;
      best.batch = static_cast<int64_t>(b);
      best.tokens_per_second = throughput;
      best.usd_per_million_tokens = usd;
      best.kv_gb = b * m.kv_bytes_per_token * (p + o) / 1e9;
    }
  }
  return best;
}

double training_cost_usd(double compute, const Hardware& hw) {
  return compute / (hw.bf16_tflops * 1e12 * hw.train_mfu) * hw.usd_per_hour / 3600;
}

Choice loss_optimal_choice(const FitResult& fit, double budget, int64_t experts,
                           const RecommendOptions& options) {
  RecommendOptions o = options;
  o.budget = budget;
  o.experts = {experts};
  check_options(o);
  const LossModel model(fit, o);
  return loss_optimal(model, fit, budget, experts, o);
}

Recommendation recommend(const FitResult& fit, const RecommendOptions& options) {
  check_options(options);
  const LossModel model(fit, options);
  Recommendation r;
  r.law = fit.law;
  r.budget = options.budget;
  for (auto e : options.experts) {
    r.loss_optimal.push_back(loss_optimal(model, fit, options.budget, e, options));
    if (r.loss_optimal.back().loss < r.loss_optimal[r.best_loss].loss)
      r.best_loss = r.loss_optimal.size() - 1;
  }
  if (!options.serving) return r;
  r.inference_aware = true;
  r.serving = options.serving;
  r.target_loss = options.target_loss.value_or(r.loss_optimal[r.best_loss].loss);
  bool any = false;
  for (auto e : options.experts) {
    r.cost_optimal.push_back(cost_optimal_choice(model, e, r.target_loss, options));
    const Choice& c = r.cost_optimal.back();
    if (c.feasible && (!any || c.total_usd < r.cost_optimal[r.best_cost].total_usd)) {
      r.best_cost = r.cost_optimal.size() - 1;
      any = true;
    }
  }
  if (!any)
    throw std::runtime_error(fmt::format(
        "no expert count reaches loss {:.4g} and fits in {} GPUs; raise the target loss, the "
        "GPU limit or the parameter bracket",
        r.target_loss, options.serving->max_gpus));
  return r;
}

std::string to_json(const Recommendation& r) {
  nlohmann::json j;
  j["law"] = r.law;
  j["budget"] = r.budget;
  j["loss_optimal"] = nlohmann::json::array();
  for (const auto& c : r.loss_optimal) j["loss_optimal"].push_back(choice_json(c, false));
  j["best_loss"] = r.best_loss;
  j["inference_aware"] = r.inference_aware;
  if (r.inference_aware) {
    const auto& s = *r.serving;
    const auto& h = s.hardware;
    j["target_loss"] = r.target_loss;
    j["serving"] = {{"tokens", s.tokens},
                    {"prompt_tokens", s.prompt_tokens},
                    {"output_tokens", s.output_tokens},
                    {"max_batch", s.max_batch},
                    {"max_gpus", s.max_gpus},
                    {"hardware",
                     {{"name", h.name},
                      {"memory_gb", h.memory_gb},
                      {"bandwidth_tbs", h.bandwidth_tbs},
                      {"bf16_tflops", h.bf16_tflops},
                      {"usd_per_hour", h.usd_per_hour},
                      {"memory_usable", h.memory_usable},
                      {"serve_mfu", h.serve_mfu},
                      {"train_mfu", h.train_mfu}}}};
    j["cost_optimal"] = nlohmann::json::array();
    for (const auto& c : r.cost_optimal) j["cost_optimal"].push_back(choice_json(c, true));
    j["best_cost"] = r.best_cost;
  }
  return j.dump();
}

}  // namespace moescale::fitting
