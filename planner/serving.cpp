// The serving-cost model: a roofline over a GPU's memory, bandwidth and FLOP/s.
#include "planner/serving.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <stdexcept>

namespace moescale {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
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

ShapeFn serving_shape_like(Router router, int64_t moe_every) {
  if (moe_every < 1) throw std::invalid_argument("moe_every must be >= 1");
  return [router, moe_every](double n_active, int64_t experts, int64_t top_k) {
    ModelShape base;
    base.vocab = 32000;
    base.seq_len = 2048;
    base.experts = experts;
    base.top_k = std::min(top_k, experts);
    base.moe_every = moe_every;
    base.router = experts > 1 ? (router == Router::dense ? Router::topk : router) : Router::dense;
    base.tied_embeddings = false;
    return shape_for_active_params(n_active, base, default_serving_rules());
  };
}

ModelShape default_shape(double n_active, int64_t experts, int64_t top_k) {
  return serving_shape_like(Router::topk, 1)(n_active, experts, top_k);
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
  const double occupancy = p + o / 2;  // KV tokens a request holds, averaged over its life
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
    const double fit = std::floor(kv_mem / (m.kv_bytes_per_token * occupancy));
    if (!(fit >= 1)) continue;
    const double b = std::min(static_cast<double>(d.max_batch), fit);
    const double touched = moe ? 1 - std::pow(1 - m.top_k / m.experts, b) : 1;
    const double step_bytes =
        2 * (n_always + touched * n_expert) + b * m.kv_bytes_per_token * occupancy;
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
      best.kv_gb = b * m.kv_bytes_per_token * occupancy / 1e9;
    }
  }
  return best;
}

double training_cost_usd(double compute, const Hardware& hw) {
  return compute / (hw.bf16_tflops * 1e12 * hw.train_mfu) * hw.usd_per_hour / 3600;
}

}  // namespace moescale
