// The recommender: loss-optimal N and D per expert count at a compute budget, and the
// inference-aware mode after Yun et al. 2024 (arXiv 2404.02852).
//
// Loss-optimal: for each E, minimise L(N, D = C / (6 N), E) over log N (a 400-point scan of
// the bracket, then golden-section search around the best point). An optimum within 0.1% (in
// log N) of an end of the bracket is reported as an edge, not an optimum. Each bootstrap
// parameter set of the fit gets the same search; the intervals are percentiles over them.
//
// Inference-aware cost model (all bf16; G = GPUs per serving replica; per GPU: memory M,
// bandwidth BW, peak bf16 P; mfu_s, mfu_t = achieved shares of P when serving / training):
//   weights   W_all = 2 bytes * (N_total + N_embedding)      all experts must be resident
//   KV/token  kv = 2 (K and V) * n_layers * n_kv_heads * head_dim * 2 bytes
//   batch     b(G) = min(max_batch, floor((G * M * usable - W_all) / (kv * (p + o/2))))
//             (p prompt and o output tokens per request, a request holds p + o/2 on average
//             over its life, as in Yun et al.; G is feasible when b >= 1)
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
// Budget mode (Yun et al.): N ranges over [min_params, C / 6] with D = C / (6 N), so the
// compute is the budget. (a) For a target loss L* (default: the loss-optimal loss of the E
// whose loss-optimal model is cheapest to serve), each E gets the N minimising serving
// $/token among those with L(N, C / 6N, E) <= L* (an interval around its loss-optimal N,
// found by bisection on both sides); (b) with a cap on serving $/token, the N of lowest loss
// under the cap. The over-training ratio is E's loss-optimal N at C over the chosen N.
// Total-cost mode (Sardana et al.): for a target loss L* (default: the lowest loss-optimal
// loss over the expert counts at the budget), each E gets D(N) solving L(N, D, E) = L* and
// the N minimising training $ (6 N D(N)) + T * serving $/token(N); the over-training ratio is
// N_loss_optimal(L*) / N, with N_loss_optimal the N reaching L* with the least compute.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <stdexcept>

#include "fitting/recommend.h"

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

// A law's loss at (N, D, E) for one parameter set. Footprints are shared by all parameter
// sets of a recommendation (they depend on the shape only).
class LossModel {
 public:
  LossModel(const Expression& expr, std::vector<double> x, const RecommendOptions& options,
            Footprints& footprints)
      : expr_(expr), x_(std::move(x)), options_(options), footprints_(footprints) {
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

  double loss_at_budget(double n, double budget, int64_t experts) const {
    return loss(n, tokens_for_compute(budget, n), experts);
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
  const Expression& expr_;
  std::vector<double> x_;
  const RecommendOptions& options_;
  Footprints& footprints_;
  bool uses_total_ = false;
};

void check_law(const Expression& expr, const std::string& law) {
  if (!(expr.uses("N") || expr.uses("NT")) || !(expr.uses("D") || expr.uses("C")))
    throw std::invalid_argument(fmt::format(
        "law \"{}\" does not depend on both parameters (N) and tokens (D or C), so it cannot "
        "trade one for the other at a budget; fit a law such as chinchilla or yun2024",
        law));
}

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
  if (o.max_serve_cost && !(*o.max_serve_cost > 0))
    throw std::invalid_argument("the serving cost cap must be a positive USD per million tokens");
  if (!(o.confidence > 0 && o.confidence < 1))
    throw std::invalid_argument("the confidence level must be in (0, 1), e.g. 0.95");
  if (o.mode == InferenceMode::total_cost && o.max_serve_cost)
    throw std::invalid_argument(
        "a serving cost cap is a question of --mode budget; drop it or use --mode budget");
  if (o.reference_experts &&
      std::find(o.experts.begin(), o.experts.end(), *o.reference_experts) == o.experts.end())
    throw std::invalid_argument(fmt::format(
        "reference expert count {} is not among the expert counts compared; add it to --experts",
        *o.reference_experts));
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

// The search range for N_active at a budget, in log N (D >= 1 token caps N at C / 6).
std::pair<double, double> budget_bracket(double budget, const RecommendOptions& o) {
  const double hi = std::log(std::min(o.max_params, budget / 6));
  const double lo = std::log(o.min_params);
  if (!(hi > lo))
    throw std::invalid_argument(
        fmt::format("budget {:g} FLOP is too small for models of {:g} parameters or more", budget,
                    o.min_params));
  return {lo, hi};
}

struct Optimum {
  double n = 0, loss = kInf;
  Edge edge = Edge::none;
};

Optimum loss_optimum(const LossModel& model, double budget, int64_t experts,
                     const RecommendOptions& o) {
  const auto [lo, hi] = budget_bracket(budget, o);
  const auto [u, loss] = minimise_1d(
      [&](double u) { return model.loss_at_budget(std::exp(u), budget, experts); }, lo, hi);
  Optimum opt{std::exp(u), loss};
  const double margin = 1e-3 * (hi - lo);
  if (u - lo < margin) opt.edge = Edge::lower;
  if (hi - u < margin) opt.edge = Edge::upper;
  return opt;
}

Choice loss_optimal(const LossModel& model, const std::string& law, double budget, int64_t experts,
                    const RecommendOptions& o) {
  const Optimum opt = loss_optimum(model, budget, experts, o);
  if (!std::isfinite(opt.loss))
    throw std::runtime_error(fmt::format(
        "law \"{}\" gives no finite loss for E = {} at budget {:g}", law, experts, budget));
  Choice c = describe(model, opt.n, tokens_for_compute(budget, opt.n), opt.loss, experts);
  c.edge = opt.edge;
  return c;
}

void add_costs(Choice& c, const ServingCost& s, const ServingDemand& demand) {
  c.serving = s;
  c.train_usd = training_cost_usd(c.compute, demand.hardware);
  c.serve_usd = demand.tokens * s.usd_per_million_tokens / 1e6;
  c.total_usd = c.train_usd + c.serve_usd;
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
  c.over_budget = c.compute > o.budget * (1 + 1e-9);
  add_costs(c, serving_at(n), demand);
  return c;
}

// The end of {u in [a, b] : loss(u) <= target} towards `outside`, given loss(inside) <= target
// and loss falling monotonically from `outside` to `inside`.
double level_crossing(const std::function<double(double)>& loss, double inside, double outside,
                      double target) {
  if (loss(outside) <= target) return outside;
  for (int i = 0; i < 100; ++i) {
    const double mid = (inside + outside) / 2;
    (loss(mid) <= target ? inside : outside) = mid;
  }
  return inside;
}

// Budget mode: among N with 6 N D = budget, the cheapest to serve at loss <= target (question
// a) or, with a cap on serving cost, the lowest loss under it (question b).
Choice budget_choice(const LossModel& model, const Choice& optimal, double target,
                     const RecommendOptions& o) {
  const ServingDemand& demand = *o.serving;
  const int64_t e = optimal.experts;
  const double budget = o.budget;
  const auto [lo, hi] = budget_bracket(budget, o);
  auto loss_at = [&](double u) { return model.loss_at_budget(std::exp(u), budget, e); };
  auto serving_at = [&](double u) {
    return serving_cost(model.footprint_at(std::exp(u), e), demand);
  };
  Choice c;
  c.experts = e;
  c.loss_optimal_n_active = optimal.n_active;
  std::pair<double, double> best{0, kInf};
  if (o.max_serve_cost) {
    best = minimise_1d(
        [&](double u) {
          const ServingCost s = serving_at(u);
          return s.feasible && s.usd_per_million_tokens <= *o.max_serve_cost ? loss_at(u) : kInf;
        },
        lo, hi);
  } else if (optimal.loss <= target * (1 + 1e-12)) {
    const double u_opt = std::log(optimal.n_active);
    const double tol = target * (1 + 1e-12);
    const double u_lo = level_crossing(loss_at, u_opt, lo, tol);
    const double u_hi = level_crossing(loss_at, u_opt, hi, tol);
    best = minimise_1d(
        [&](double u) {
          if (!(loss_at(u) <= tol)) return kInf;
          const ServingCost s = serving_at(u);
          return s.feasible ? s.usd_per_million_tokens : kInf;
        },
        u_lo, std::max(u_hi, u_lo + 1e-12));
  }
  if (!std::isfinite(best.second)) {
    c.feasible = false;
    return c;
  }
  const double n = std::exp(best.first);
  const double loss = loss_at(best.first);
  c = describe(model, n, tokens_for_compute(budget, n), loss, e);
  c.loss_optimal_n_active = optimal.n_active;
  c.overtrain_ratio = optimal.n_active / n;
  add_costs(c, serving_at(best.first), demand);
  return c;
}

// The target of question (a): the loss-optimal loss of the reference E, by default the E whose
// loss-optimal model serves cheapest.
std::pair<double, std::optional<int64_t>> budget_target(const LossModel& model,
                                                        const Recommendation& r,
                                                        const RecommendOptions& o) {
  if (o.target_loss) return {*o.target_loss, std::nullopt};
  std::optional<std::size_t> pick;
  double cheapest = kInf;
  for (std::size_t i = 0; i < r.loss_optimal.size(); ++i) {
    const Choice& c = r.loss_optimal[i];
    if (o.reference_experts) {
      if (c.experts == *o.reference_experts) pick = i;
      continue;
    }
    const ServingCost s = serving_cost(model.footprint_at(c.n_active, c.experts), *o.serving);
    if (s.feasible && s.usd_per_million_tokens < cheapest)
      cheapest = s.usd_per_million_tokens, pick = i;
  }
  if (!pick)
    throw std::runtime_error(fmt::format(
        "no loss-optimal model fits in {} GPUs, so none sets a target loss; give --target-loss "
        "or raise --max-gpus",
        o.serving->max_gpus));
  return {r.loss_optimal[*pick].loss, r.loss_optimal[*pick].experts};
}

void add_inference_choices(const LossModel& model, Recommendation& r, const RecommendOptions& o) {
  r.inference_aware = true;
  r.mode = o.mode;
  r.serving = o.serving;
  r.max_serve_cost = o.max_serve_cost;
  if (o.mode == InferenceMode::total_cost) {
    r.target_loss = o.target_loss.value_or(r.loss_optimal[r.best].loss);
  } else if (!o.max_serve_cost) {
    std::tie(r.target_loss, r.reference_experts) = budget_target(model, r, o);
  }
  for (const Choice& opt : r.loss_optimal) {
    r.cost_optimal.push_back(o.mode == InferenceMode::total_cost
                                 ? cost_optimal_choice(model, opt.experts, r.target_loss, o)
                                 : budget_choice(model, opt, r.target_loss, o));
    const Choice& c = r.cost_optimal.back();
    if (!c.feasible) continue;
    const std::size_t i = r.cost_optimal.size() - 1;
    if (!r.best_cost) {
      r.best_cost = i;
      continue;
    }
    const Choice& b = r.cost_optimal[*r.best_cost];
    const bool better = o.mode == InferenceMode::total_cost ? c.total_usd < b.total_usd
                        : o.max_serve_cost
                            ? c.loss < b.loss
                            : c.serving.usd_per_million_tokens < b.serving.usd_per_million_tokens;
    if (better) r.best_cost = i;
  }
}

std::optional<std::vector<double>> sample_vector(const Expression& expr,
                                                 const std::map<std::string, double>& sample) {
  std::vector<double> x;
  for (const std::string& p : expr.params()) {
    auto it = sample.find(p);
    if (it == sample.end() || !std::isfinite(it->second)) return std::nullopt;
    x.push_back(it->second);
  }
  return x;
}

// Intervals, p_best and compute_waste from the fit's bootstrap parameter sets.
void add_intervals(const FitResult& fit, const Expression& expr, Footprints& footprints,
                   Recommendation& r, const RecommendOptions& o) {
  const std::size_t m = r.loss_optimal.size();
  std::vector<std::vector<double>> n(m), d(m), loss(m);
  std::vector<int> wins(m, 0);
  std::vector<double> waste;
  int used = 0, unreachable = 0;
  const Choice& pick = r.loss_optimal[r.best];
  for (const auto& sample : fit.bootstrap_samples) {
    const auto x = sample_vector(expr, sample);
    if (!x) continue;
    const LossModel model(expr, *x, o, footprints);
    std::vector<Optimum> opt;
    for (const Choice& c : r.loss_optimal)
      opt.push_back(loss_optimum(model, r.budget, c.experts, o));
    if (std::any_of(opt.begin(), opt.end(),
                    [](const Optimum& p) { return !std::isfinite(p.loss); }))
      continue;
    ++used;
    std::size_t best = 0;
    for (std::size_t i = 0; i < m; ++i) {
      n[i].push_back(opt[i].n);
      d[i].push_back(tokens_for_compute(r.budget, opt[i].n));
      loss[i].push_back(opt[i].loss);
      if (opt[i].loss < opt[best].loss) best = i;
    }
    ++wins[best];
    const double tokens = model.tokens_for_loss(pick.n_active, pick.experts, opt[best].loss);
    if (std::isfinite(tokens))
      waste.push_back(std::max(0.0, training_compute(pick.n_active, tokens) / r.budget - 1));
    else
      ++unreachable;
  }
  if (used < 2) return;
  r.bootstrap = used;
  r.confidence = o.confidence;
  for (std::size_t i = 0; i < m; ++i) {
    Choice& c = r.loss_optimal[i];
    c.n_active_ci = percentile_interval(n[i], o.confidence);
    c.tokens_ci = percentile_interval(d[i], o.confidence);
    c.loss_ci = percentile_interval(loss[i], o.confidence);
    c.p_best = static_cast<double>(wins[i]) / used;
  }
  if (!waste.empty())
    r.compute_waste =
        std::accumulate(waste.begin(), waste.end(), 0.0) / static_cast<double>(waste.size());
  r.waste_unreachable = static_cast<double>(unreachable) / used;
}

nlohmann::json interval_json(const std::optional<Interval>& i) {
  return i ? nlohmann::json::array({i->lo, i->hi}) : nlohmann::json();
}

const char* edge_name(Edge e) {
  return e == Edge::lower ? "lower" : e == Edge::upper ? "upper" : nullptr;
}

nlohmann::json choice_json(const Choice& c, bool costs) {
  nlohmann::json j = {{"experts", c.experts}, {"feasible", c.feasible}, {"n_active", c.n_active},
                      {"n_total", c.n_total}, {"tokens", c.tokens},     {"compute", c.compute},
                      {"loss", c.loss}};
  if (!costs) {
    j["edge"] = c.edge == Edge::none ? nlohmann::json() : nlohmann::json(edge_name(c.edge));
    j["n_active_ci"] = interval_json(c.n_active_ci);
    j["tokens_ci"] = interval_json(c.tokens_ci);
    j["loss_ci"] = interval_json(c.loss_ci);
    j["p_best"] = c.p_best ? nlohmann::json(*c.p_best) : nlohmann::json();
    return j;
  }
  j["loss_optimal_n_active"] = c.loss_optimal_n_active;
  j["overtrain_ratio"] = c.overtrain_ratio;
  j["smaller_than_loss_optimal"] =
      c.overtrain_ratio > 0 ? nlohmann::json(1 - 1 / c.overtrain_ratio) : nlohmann::json();
  j["over_budget"] = c.over_budget;
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
  return j;
}

}  // namespace

std::string to_string(InferenceMode mode) {
  return mode == InferenceMode::budget ? "budget" : "total-cost";
}

Choice loss_optimal_choice(const FitResult& fit, double budget, int64_t experts,
                           const RecommendOptions& options) {
  RecommendOptions o = options;
  o.budget = budget;
  o.experts = {experts};
  check_options(o);
  const Expression expr = fit.compiled();
  check_law(expr, fit.law);
  Footprints footprints(o);
  const LossModel model(expr, fit.fitted_vector(), o, footprints);
  return loss_optimal(model, fit.law, budget, experts, o);
}

Recommendation recommend(const FitResult& fit, const RecommendOptions& options) {
  check_options(options);
  const Expression expr = fit.compiled();
  check_law(expr, fit.law);
  RecommendOptions o = options;
  Recommendation r;
  r.law = fit.law;
  r.budget = o.budget;
  if (!expr.uses("E") && o.experts.size() > 1) {
    // Every E would get the same loss-optimal model; in the inference-aware modes more experts
    // only cost memory, so the smallest count is the answer there too.
    o.experts = {*std::min_element(o.experts.begin(), o.experts.end())};
    o.reference_experts.reset();
    r.note = fmt::format(
        "law \"{}\" has no expert term (E): every expert count gets the same loss-optimal "
        "model, so one row (E = {}) is shown; fit a law with E (yun2024, ...) to compare "
        "expert counts",
        fit.law, o.experts[0]);
  }
  Footprints footprints(o);
  const LossModel model(expr, fit.fitted_vector(), o, footprints);
  for (auto e : o.experts) {
    r.loss_optimal.push_back(loss_optimal(model, fit.law, o.budget, e, o));
    if (r.loss_optimal.back().loss < r.loss_optimal[r.best].loss)
      r.best = r.loss_optimal.size() - 1;
  }
  add_intervals(fit, expr, footprints, r, o);
  if (!o.serving) return r;
  add_inference_choices(model, r, o);
  if (!r.best_cost)
    throw std::runtime_error(fmt::format(
        fmt::runtime(
            o.max_serve_cost
                ? "no expert count serves under ${1:g} per million tokens at budget {2:g} in {3} "
                  "GPUs; raise the cap or the GPU limit"
                : "no expert count reaches loss {0:.4g} and fits in {3} GPUs; raise the target "
                  "loss, "
                  "the GPU limit or the parameter bracket"),
        r.target_loss, o.max_serve_cost.value_or(0), o.budget, o.serving->max_gpus));
  return r;
}

std::string to_json(const Recommendation& r) {
  nlohmann::json j;
  j["law"] = r.law;
  j["budget"] = r.budget;
  if (!r.note.empty()) j["note"] = r.note;
  j["loss_optimal"] = nlohmann::json::array();
  for (const auto& c : r.loss_optimal) j["loss_optimal"].push_back(choice_json(c, false));
  const Choice& best = r.loss_optimal.at(r.best);
  j["best_experts"] = best.experts;
  j["best_loss"] = best.loss;
  if (r.bootstrap > 0) {
    j["bootstrap"] = r.bootstrap;
    j["confidence"] = r.confidence;
  }
  if (r.compute_waste) j["compute_waste"] = *r.compute_waste;
  if (r.waste_unreachable) j["compute_waste_unreachable"] = *r.waste_unreachable;
  j["inference_aware"] = r.inference_aware;
  if (r.inference_aware) {
    const auto& s = *r.serving;
    const auto& h = s.hardware;
    j["mode"] = to_string(r.mode);
    if (r.max_serve_cost)
      j["max_serve_cost"] = *r.max_serve_cost;
    else
      j["target_loss"] = r.target_loss;
    if (r.reference_experts) j["reference_experts"] = *r.reference_experts;
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
    if (r.best_cost) j["best_cost_experts"] = r.cost_optimal[*r.best_cost].experts;
  }
  return j.dump();
}

Law law_of(const FitResult& fit) {
  for (const Law& law : builtin_laws())
    if (law.name == fit.law && law.expression == fit.expression) return law;
  Law law = custom_law(fit.expression, fit.law);
  law.definitions = fit.definitions;
  if (!fit.reported.empty()) law.reported = fit.reported;
  return law;
}

FitResult with_bootstrap(const FitResult& fit, const std::vector<Observation>& observations,
                         const FitOptions& options) {
  Law law = law_of(fit);
  for (ParamGrid& g : law.grid) {
    auto it = fit.fitted.find(g.name);
    if (it == fit.fitted.end())
      throw std::invalid_argument(fmt::format(
          "fit of law \"{}\" has no value for parameter {}; refit it", fit.law, g.name));
    g.values = {it->second};
  }
  const FitResult refit = fit_law(law, observations, options);
  FitResult out = fit;
  out.bootstrap = refit.bootstrap;
  out.confidence = refit.confidence;
  out.intervals = refit.intervals;
  out.bootstrap_samples = refit.bootstrap_samples;
  return out;
}

}  // namespace moescale::fitting
