// The serving-cost model: GPUs (presets and overrides), a model's serving footprint, and the
// cost of serving and training it (a roofline, not a profiled server).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "planner/planner.h"

namespace moescale {

// A GPU for serving and training. Presets: h100, a100, h200 (list prices are rough
// assumptions: override them).
struct Hardware {
  std::string name;
  double memory_gb = 80;
  double bandwidth_tbs = 3.35;  // HBM TB/s
  double bf16_tflops = 989;     // dense peak
  double usd_per_hour = 2.5;
  double memory_usable = 0.9;  // share of memory for weights + KV (rest: activations, runtime)
  double serve_mfu = 0.5;      // achieved share of peak in compute-bound serving
  double train_mfu = 0.4;      // achieved share of peak in training
};
Hardware hardware_preset(std::string_view name);  // throws listing the presets
// "memory_gb=141", "usd_per_hour=3.1", ... (the Hardware field names).
void apply_hardware_override(Hardware& hw, std::string_view assignment);

struct ServingDemand {
  double tokens = 0;             // T: tokens to generate over the model's life
  int64_t prompt_tokens = 1024;  // per request
  int64_t output_tokens = 256;   // per request
  int64_t max_batch = 256;       // concurrent sequences per replica
  int max_gpus = 64;             // per replica
  Hardware hardware = hardware_preset("h100");
};

// What serving needs to know about a model.
struct Footprint {
  double n_active = 0, n_total = 0, n_embedding = 0;
  double experts = 1, top_k = 1;
  double kv_bytes_per_token = 0;  // 2 (K,V) * n_layers * n_kv_heads * head_dim * 2 bytes
};
// Turns N_active and E into a real shape (N_total, KV size). Default: the planner's
// shape_for_active_params with default_serving_rules() and a 32k vocabulary.
using ShapeFn = std::function<ModelShape(double n_active, int64_t experts, int64_t top_k)>;
ShapeRules default_serving_rules();
ModelShape default_shape(double n_active, int64_t experts, int64_t top_k);
// The serving shape of a fitted sweep: its router and MoE spacing (every moe_every-th FFN is
// an MoE layer), at serving scale (default_serving_rules, 32k vocabulary). E = 1 is dense.
ShapeFn serving_shape_like(Router router, int64_t moe_every);
// Rescales the shape's counts to n_active exactly, so costs are smooth in N.
Footprint footprint(double n_active, int64_t experts, int64_t top_k, const ShapeFn& shape);

struct ServingCost {
  bool feasible = false;  // false: the weights fit on no G <= max_gpus
  int gpus = 0;           // G per replica
  int64_t batch = 0;
  double tokens_per_second = 0;  // per replica
  double usd_per_million_tokens = 0;
  double weights_gb = 0;
  double kv_gb = 0;  // at average occupancy, p + o/2 tokens per request
  int min_gpus = 0;  // fewest GPUs the weights fit in
};
ServingCost serving_cost(const Footprint& model, const ServingDemand& demand);
double training_cost_usd(double compute, const Hardware& hw);

}  // namespace moescale
