// Parameter and FLOP accounting: the one place these formulas live.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "planner/planner.h"

namespace moescale {

std::string to_string(Router r) {
  switch (r) {
    case Router::dense: return "dense";
    case Router::topk: return "topk";
    case Router::rmoe: return "rmoe";
    case Router::hash: return "hash";
  }
  return "?";
}

Router parse_router(std::string_view name) {
  for (Router r : {Router::dense, Router::topk, Router::rmoe, Router::hash})
    if (to_string(r) == name) return r;
  throw std::invalid_argument(
      fmt::format("unknown router '{}'; use one of dense, topk, rmoe, hash", name));
}

namespace {
int64_t round_up(int64_t x, int64_t multiple) {
  return (x + multiple - 1) / multiple * multiple;
}

void require(bool ok, std::string_view field, std::string_view why) {
  if (!ok) throw std::invalid_argument(fmt::format("{}: {}", field, why));
}
}  // namespace

ModelShape ModelShape::resolved() const {
  ModelShape s = *this;
  require(s.vocab > 0, "vocab", "must be positive");
  require(s.seq_len > 0, "seq_len", "must be positive");
  require(s.d_model > 0, "d_model", "must be positive");
  require(s.n_layers > 0, "layers", "must be positive");
  require(s.n_heads > 0, "heads", "must be positive");
  require(s.d_model % s.n_heads == 0, "d_model",
          fmt::format("{} is not divisible by heads = {}", s.d_model, s.n_heads));
  if (s.n_kv_heads == 0) s.n_kv_heads = s.n_heads;
  require(s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0, "kv_heads",
          fmt::format("heads = {} must be a multiple of kv_heads = {}", s.n_heads, s.n_kv_heads));
  if (s.head_dim == 0) s.head_dim = s.d_model / s.n_heads;
  require(s.head_dim > 0, "head_dim", "must be positive");
  if (s.ffn_hidden == 0) s.ffn_hidden = round_up((8 * s.d_model + 2) / 3, 32);
  require(s.ffn_hidden > 0, "ffn", "must be positive");
  require(s.experts >= 1, "experts", "must be at least 1");
  require(s.moe_every >= 1, "moe_every", "must be at least 1");
  require(s.top_k >= 1 && s.top_k <= s.experts, "top_k",
          fmt::format("must be between 1 and experts = {} (got {})", s.experts, s.top_k));
  if (s.experts == 1) {
    require(s.router == Router::dense || s.router == Router::topk, "router",
            fmt::format("{} needs experts > 1", to_string(s.router)));
    s.router = Router::dense;
  } else {
    require(s.router != Router::dense, "router", "dense needs experts = 1; use topk, rmoe or hash");
  }
  if (s.router == Router::rmoe) require(s.router_dim > 0, "router_dim", "must be positive");
  return s;
}

bool ModelShape::is_moe_layer(int64_t layer) const {
  return experts > 1 && (layer + 1) % moe_every == 0;
}

int64_t ModelShape::moe_layers() const {
  return experts > 1 ? n_layers / moe_every : 0;
}

ParamCount count_params(const ModelShape& shape) {
  const ModelShape s = shape.resolved();
  const int64_t d = s.d_model, q = s.n_heads * s.head_dim, kv = s.n_kv_heads * s.head_dim;
  const int64_t attention = d * q + 2 * d * kv + q * d;
  const int64_t expert = 3 * d * s.ffn_hidden;  // SwiGLU: gate, up, down
  const int64_t norms = 2 * d;
  int64_t router_per_layer = 0;
  if (s.router == Router::topk) router_per_layer = d * s.experts;
  if (s.router == Router::rmoe) router_per_layer = d * s.router_dim + s.router_dim * s.experts;

  // Layer types repeat, so count one of each instead of walking the layers:
  // shape searches call this many thousand times.
  const int64_t moe = s.moe_layers(), dense = s.n_layers - moe;
  const int64_t common = attention + norms;
  ParamCount c;
  c.active = s.n_layers * common + dense * expert + moe * (s.top_k * expert + router_per_layer);
  c.total = s.n_layers * common + dense * expert + moe * (s.experts * expert + router_per_layer);
  c.router = moe * router_per_layer;
  if (s.router == Router::rmoe && moe > 0) {
    // One GRU cell is shared by all MoE layers, so it is stored once (total) but a
    // token runs it once per MoE layer: compute counts a parameter per use, and
    // 6·N_active·D must see every use or it undercounts RMoE's training FLOPs.
    const int64_t p = s.router_dim;
    const int64_t gru = 3 * (p * p + p * p) + 6 * p;
    c.active += moe * gru;
    c.total += gru;
    c.router += moe * gru;
  }
  c.active += d;  // final norm
  c.total += d;
  c.embedding = s.vocab * d * (s.tied_embeddings ? 1 : 2);
  return c;
}

double flops_per_token_6n(const ModelShape& shape) {
  return 6.0 * static_cast<double>(count_params(shape).active);
}

double flops_per_token(const ModelShape& shape) {
  const ModelShape s = shape.resolved();
  const double attention_scores =
      12.0 * s.n_layers * static_cast<double>(s.n_heads * s.head_dim) * s.seq_len;
  const double head = 6.0 * static_cast<double>(s.vocab) * s.d_model;
  return flops_per_token_6n(s) + attention_scores + head;
}

double training_compute(double n_active, double tokens) {
  return 6.0 * n_active * tokens;
}

double tokens_for_compute(double compute, double n_active) {
  return compute / (6.0 * n_active);
}

// Depth may stray up to 2x from the aspect ratio: loss barely depends on it
// over that range (Kaplan et al. 2020), and small models need the extra
// sizes between widths. Ties go to the shape nearest the aspect ratio.
ModelShape shape_for_active_params(double target, const ModelShape& base, const ShapeRules& rules) {
  if (!(target > 0)) throw std::invalid_argument("target parameter count must be positive");
  ModelShape best;
  double best_err = std::numeric_limits<double>::infinity();
  const int64_t step = rules.width_step > 0 ? rules.width_step : rules.head_dim * rules.kv_group;
  for (int64_t width = step; width <= 512 * rules.head_dim; width += step) {
    ModelShape s = base;
    int64_t head_dim = std::min(rules.head_dim, width);
    // Heads are even: rotary positions rotate pairs of dimensions.
    const auto fits = [&](int64_t h) {
      return h % 2 == 0 && width % h == 0 && (width / h) % rules.kv_group == 0;
    };
    while (head_dim > 2 && !fits(head_dim)) --head_dim;
    if (!fits(head_dim)) continue;
    const int64_t heads = width / head_dim;
    s.d_model = width;
    s.n_heads = heads;
    s.n_kv_heads = heads / rules.kv_group;
    s.head_dim = head_dim;
    s.ffn_hidden = round_up((8 * s.d_model + 2) / 3, rules.ffn_multiple);
    const double ideal = s.d_model / rules.aspect_ratio;
    const int64_t lo = std::max({rules.min_layers, base.moe_every, int64_t(std::floor(ideal / 2))});
    const int64_t hi = std::min(rules.max_layers, std::max(lo, int64_t(std::ceil(ideal * 2))));
    s.n_layers = lo;  // wider models only grow: stop once the shallowest is far too big
    if (count_params(s).active > 4 * target && std::isfinite(best_err)) break;
    for (s.n_layers = lo; s.n_layers <= hi; ++s.n_layers) {
      const double size_err = std::abs(std::log(count_params(s).active / target));
      const double aspect_err = std::abs(std::log(s.n_layers / std::max(ideal, 1.0)));
      const double err = size_err + 1e-3 * aspect_err;
      if (err < best_err) best_err = err, best = s;
    }
  }
  return best.resolved();
}

}  // namespace moescale
