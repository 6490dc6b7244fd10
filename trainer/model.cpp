// The MoE transformer: attention, routers and the dropless batched dispatch.
#include "trainer/model.h"

#include <fmt/format.h>

#include <cmath>
#include <random>
#include <stdexcept>

#include <fmt/format.h>

#ifdef MOESCALE_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace moescale {
namespace F = torch::nn::functional;

namespace {
constexpr double kInitStd = 0.02;
constexpr double kNormEps = 1e-6;

torch::nn::Linear linear(int64_t in, int64_t out, double std) {
  torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(false));
  torch::nn::init::normal_(l->weight, 0.0, std);
  return l;
}

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight) {
  return torch::rms_norm(x, {x.size(-1)}, weight, kNormEps);
}

// Rotary positions, half-split convention: x [B, T, H, hd], cos/sin [T, 1, hd/2].
torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  // chunk, not narrow: the backward of a split is one cat, a narrow's is a zero fill + copy.
  const auto halves = x.chunk(2, -1);
  const auto &x1 = halves[0], &x2 = halves[1];
  return torch::cat({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1);
}

torch::Tensor swiglu(const torch::Tensor& gate_up) {
  const auto parts = gate_up.chunk(2, -1);
  return F::silu(parts[0]) * parts[1];
}
}  // namespace

Routing route_top_k(const torch::Tensor& logits, int64_t k, bool renormalize) {
  Routing r;
  r.logits = logits;
  r.probs = torch::softmax(logits, -1);
  auto [top, idx] = r.probs.topk(k, -1);
  r.experts = idx;
  if (!renormalize)
    r.weights = top;
  else  // k = 1 renormalises to exactly 1; dividing would leak rounding-level gradients.
    r.weights = k == 1 ? torch::ones_like(top) : top / top.sum(-1, true);
  return r;
}

torch::Tensor load_balancing_loss(const std::vector<torch::Tensor>& slots_per_token,
                                  const std::vector<torch::Tensor>& mean_probs) {
  // Every layer routes the same tokens, so the concatenation's means are the
  // means of the layers' means.
  const auto f = torch::stack(slots_per_token).mean(0);
  const auto p = torch::stack(mean_probs).mean(0);
  return static_cast<double>(f.size(0)) * (f * p).sum();
}

namespace {

// Each expert's SwiGLU on its contiguous block of `xs` (slots sorted by expert),
// one matmul pair per expert: the CPU path, where the counts are host data anyway.
torch::Tensor experts_blockwise(const torch::Tensor& xs, const torch::Tensor& counts,
                                const torch::Tensor& w_gate_up, const torch::Tensor& w_down) {
  const auto host_counts = counts.to(torch::kCPU);
  const int64_t* count = host_counts.data_ptr<int64_t>();
  const int64_t n_experts = host_counts.numel();
  // Unbind, split: their backwards are one stack / one cat. Indexing w[e] per expert
  // would zero-fill and accumulate a full [E, ...] gradient for every expert.
  const auto gate_up = w_gate_up.unbind(0), down = w_down.unbind(0);
  const auto blocks = xs.split_with_sizes(c10::IntArrayRef(count, static_cast<size_t>(n_experts)));
  std::vector<torch::Tensor> outs;
  outs.reserve(n_experts);
  for (int64_t e = 0; e < n_experts; ++e)
    if (count[e] > 0) outs.push_back(swiglu(blocks[e].matmul(gate_up[e])).matmul(down[e]));
  return torch::cat(outs);
}

// All experts in two grouped GEMMs (torch's _grouped_mm, CUTLASS on sm90/sm100),
// bf16 in and out, the block boundaries read from `counts` on the device: no host
// sync. Both are stored [E, in, out] row-major, a layout the kernel accepts.
torch::Tensor experts_grouped(const torch::Tensor& xs, const torch::Tensor& counts,
                              const torch::Tensor& w_gate_up, const torch::Tensor& w_down) {
  // The operands are bf16 already; autocast must not recast them.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCUDA);
  const auto offsets = counts.cumsum(0).to(torch::kInt32);
  const auto h = at::_grouped_mm(xs.to(torch::kBFloat16), w_gate_up.to(torch::kBFloat16), offsets);
  return at::_grouped_mm(swiglu(h), w_down.to(torch::kBFloat16), offsets);
}

// All experts in one batched matmul over blocks padded to the largest expert's
// count: for GPUs without a grouped GEMM kernel. Reading that count is one host
// sync per layer, the price of a dense batched shape.
torch::Tensor experts_padded(const torch::Tensor& xs, const torch::Tensor& counts,
                             const torch::Tensor& w_gate_up, const torch::Tensor& w_down) {
  const int64_t n_experts = counts.numel(), slots = xs.size(0);
  const int64_t capacity = counts.max().item<int64_t>();
  // Slot i of expert e goes to row e * capacity + (i - start of e).
  const auto starts = counts.cumsum(0) - counts;
  const auto expert_of_slot = torch::repeat_interleave(torch::arange(n_experts, counts.options()),
                                                       counts, /*dim=*/0, /*output_size=*/slots);
  const auto rank = torch::arange(slots, counts.options()) - starts.index_select(0, expert_of_slot);
  const auto row = expert_of_slot * capacity + rank;
  const auto padded = torch::zeros({n_experts * capacity, xs.size(1)}, xs.options())
                          .index_copy(0, row, xs)
                          .view({n_experts, capacity, xs.size(1)});
  const auto y =
      swiglu(padded.bmm(w_gate_up.to(xs.scalar_type()))).bmm(w_down.to(xs.scalar_type()));
  return y.view({n_experts * capacity, -1}).index_select(0, row);
}

#ifdef MOESCALE_HAVE_CUDA
// _grouped_mm has fast kernels from Hopper (sm90) on, for rows of whole 16-byte
// units (bf16: multiples of 8); otherwise padded blocks.
bool grouped_gemm_fits(const torch::Tensor& xs, const torch::Tensor& w_down) {
  const int64_t d = xs.size(1), f = w_down.size(1);
  return at::cuda::getDeviceProperties(xs.device().index())->major >= 9 && d % 8 == 0 && f % 8 == 0;
}
#endif

}  // namespace

ExpertKernel expert_kernel_for([[maybe_unused]] const torch::Tensor& xs,
                               [[maybe_unused]] const torch::Tensor& w_down) {
#ifdef MOESCALE_HAVE_CUDA
  if (xs.is_cuda())
    return grouped_gemm_fits(xs, w_down) ? ExpertKernel::grouped : ExpertKernel::padded;
#endif
  return ExpertKernel::blockwise;
}

torch::Tensor run_experts(const torch::Tensor& xs, const torch::Tensor& counts,
                          const torch::Tensor& w_gate_up, const torch::Tensor& w_down,
                          ExpertKernel kernel) {
  switch (kernel) {
    case ExpertKernel::grouped: return experts_grouped(xs, counts, w_gate_up, w_down);
    case ExpertKernel::padded: return experts_padded(xs, counts, w_gate_up, w_down);
    case ExpertKernel::blockwise: break;
  }
  return experts_blockwise(xs, counts, w_gate_up, w_down);
}

torch::Tensor moe_dispatch(const torch::Tensor& x, const Routing& routing,
                           const torch::Tensor& w_gate_up, const torch::Tensor& w_down,
                           torch::Tensor* counts) {
  const int64_t k = routing.experts.size(1), n_experts = w_gate_up.size(0);
  const auto flat = routing.experts.reshape(-1);
  const auto order = std::get<1>(flat.sort(std::optional<bool>(true), 0, false));  // stable
  const auto token = order.div(k, "floor");
  // Slots per expert, on x's device (bincount would read its maximum on the host).
  const auto count =
      torch::zeros({n_experts}, flat.options()).index_add_(0, flat, torch::ones_like(flat));
  if (counts) *counts = count;
  const auto xs = x.index_select(0, token);
  const auto ys = run_experts(xs, count, w_gate_up, w_down, expert_kernel_for(xs, w_down));
  const auto gate = routing.weights.reshape(-1).index_select(0, order).unsqueeze(1);
  return torch::zeros_like(x).index_add(0, token,
                                        ys.to(x.scalar_type()) * gate.to(x.scalar_type()));
}

torch::Tensor moe_dispatch(const torch::Tensor& x, const Routing& routing,
                           const torch::Tensor& w_gate_up, const torch::Tensor& w_down,
                           std::vector<int64_t>* counts) {
  torch::Tensor count;
  auto y = moe_dispatch(x, routing, w_gate_up, w_down, &count);
  if (counts) {
    const auto host = count.to(torch::kCPU);
    counts->assign(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel());
  }
  return y;
}

// ---- MoE FFN ---------------------------------------------------------------

MoeFfnImpl::MoeFfnImpl(const ModelShape& s, uint64_t seed) : shape_(s) {
  const int64_t d = s.d_model, f = s.ffn_hidden, n_experts = s.experts;
  w_gate_up = register_parameter("w_gate_up", torch::randn({n_experts, d, 2 * f}) * kInitStd);
  w_down = register_parameter(
      "w_down", torch::randn({n_experts, f, d}) * (kInitStd / std::sqrt(2.0 * s.n_layers)));
  if (s.router == Router::topk) gate = register_module("gate", linear(d, n_experts, kInitStd));
  if (s.router == Router::rmoe) {
    proj = register_module("proj", linear(d, s.router_dim, kInitStd));
    gate = register_module("gate", linear(s.router_dim, n_experts, kInitStd));
  }
  if (s.router == Router::hash) {
    std::mt19937_64 rng(seed ^ 0x5eedf00dull);
    auto table = torch::empty({s.vocab}, torch::kInt64);
    for (int64_t v = 0; v < s.vocab; ++v)
      table[v] = static_cast<int64_t>(rng() % static_cast<uint64_t>(n_experts));
    hash_table = register_buffer("hash_table", table);
  }
}

Routing MoeFfnImpl::route(const torch::Tensor& x, const torch::Tensor& tokens, torch::Tensor& state,
                          torch::nn::GRUCell& gru) {
  const int64_t k = shape_.top_k;
  switch (shape_.router) {
    case Router::topk: return route_top_k(gate(x), k, shape_.renormalizes());
    case Router::rmoe: {
      if (!state.defined()) state = torch::zeros({x.size(0), shape_.router_dim}, x.options());
      state = gru(proj(x), state);  // kept in the graph: later layers train earlier ones
      return route_top_k(gate(state), k, shape_.renormalizes());
    }
    case Router::hash: {
      Routing r;
      const auto first = hash_table.index_select(0, tokens).unsqueeze(1);
      r.experts = (first + torch::arange(k, first.options())).remainder(shape_.experts);
      r.weights = torch::full({x.size(0), k}, 1.0 / static_cast<double>(k), x.options());
      return r;
    }
    case Router::dense: break;
  }
  throw std::logic_error("MoE layer built for the dense router");
}

torch::Tensor MoeFfnImpl::forward(const torch::Tensor& x, const torch::Tensor& tokens,
                                  torch::Tensor& state, torch::nn::GRUCell& gru) {
  const Routing r = route(x, tokens, state, gru);
  torch::Tensor counts;  // stays on the device: read on the host only at log steps
  auto y = moe_dispatch(x, r, w_gate_up, w_down, &counts);
  const double slots = static_cast<double>(r.experts.numel());
  const double n_tokens = static_cast<double>(x.size(0));
  last_load = counts.to(torch::kFloat32) / slots;
  if (r.probs.defined()) {
    last_slots_per_token = counts.to(r.probs.scalar_type()) / n_tokens;
    last_mean_probs = r.probs.mean(0);
    last_aux = load_balancing_loss({last_slots_per_token}, {last_mean_probs});
    last_z = torch::logsumexp(r.logits, -1).square().mean();
  } else {
    last_slots_per_token = last_mean_probs = torch::Tensor();
    last_aux = torch::zeros({}, x.options());
    last_z = torch::zeros({}, x.options());
  }
  return y;
}

// ---- block -------------------------------------------------------------------

BlockImpl::BlockImpl(const ModelShape& s, bool moe_layer, uint64_t seed) : shape_(s) {
  const int64_t d = s.d_model, q = s.n_heads * s.head_dim, kv = s.n_kv_heads * s.head_dim;
  const double out_std = kInitStd / std::sqrt(2.0 * s.n_layers);
  attn_norm = register_parameter("attn_norm", torch::ones({d}));
  ffn_norm = register_parameter("ffn_norm", torch::ones({d}));
  wqkv = register_module("wqkv", linear(d, q + 2 * kv, kInitStd));  // q, k, v fused: one matmul
  wo = register_module("wo", linear(q, d, out_std));
  if (moe_layer) {
    moe = register_module("moe", MoeFfn(s, seed));
  } else {
    w_gate_up = register_module("w_gate_up", linear(d, 2 * s.ffn_hidden, kInitStd));
    w_down = register_module("w_down", linear(s.ffn_hidden, d, out_std));
  }
}

torch::Tensor BlockImpl::attention(const torch::Tensor& x, const torch::Tensor& cos,
                                   const torch::Tensor& sin) {
  const int64_t b = x.size(0), t = x.size(1), hd = shape_.head_dim;
  const int64_t h = shape_.n_heads, kvh = shape_.n_kv_heads;
  // q and k rotate as one tensor of h + kvh heads: half the small elementwise ops.
  const auto qkv = wqkv(x).view({b, t, h + 2 * kvh, hd}).split_with_sizes({h + kvh, kvh}, 2);
  // The tables in q's dtype: bf16 under autocast stays bf16 (fp32 tables would promote
  // q and k to fp32), and SDPA then takes its flash kernel on CUDA.
  const auto dt = qkv[0].scalar_type();
  const auto qk =
      rotate(qkv[0], cos.to(dt), sin.to(dt)).transpose(1, 2).split_with_sizes({h, kvh}, 1);
  const auto v = qkv[1].transpose(1, 2);
  auto y = torch::scaled_dot_product_attention(qk[0], qk[1], v, {}, 0.0, /*is_causal=*/true,
                                               std::nullopt, /*enable_gqa=*/kvh != h);
  return wo(y.transpose(1, 2).reshape({b, t, h * hd}));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& tokens,
                                 const torch::Tensor& cos, const torch::Tensor& sin,
                                 torch::Tensor& state, torch::nn::GRUCell& gru) {
  auto h = x + attention(rms_norm(x, attn_norm), cos, sin);
  const auto xn = rms_norm(h, ffn_norm);
  if (!moe) return h + w_down(swiglu(w_gate_up(xn)));
  const auto flat = xn.reshape({-1, shape_.d_model});
  return h + moe(flat, tokens.reshape(-1), state, gru).view_as(h);
}

// ---- model -------------------------------------------------------------------

MoeTransformerImpl::MoeTransformerImpl(const ModelShape& shape, uint64_t seed)
    : shape_(shape.resolved()) {
  const ModelShape& s = shape_;
  if (s.head_dim % 2 != 0)
    throw std::invalid_argument(
        fmt::format("head_dim = {} must be even for rotary positions", s.head_dim));
  torch::manual_seed(seed);  // the same seed builds the same model
  embed = register_module("embed", torch::nn::Embedding(s.vocab, s.d_model));
  torch::nn::init::normal_(embed->weight, 0.0, kInitStd);
  if (!s.tied_embeddings) head = register_module("head", linear(s.d_model, s.vocab, kInitStd));
  if (s.router == Router::rmoe && s.moe_layers() > 0)
    gru = register_module("gru", torch::nn::GRUCell(s.router_dim, s.router_dim));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t l = 0; l < s.n_layers; ++l)
    blocks->push_back(Block(s, s.is_moe_layer(l), seed + static_cast<uint64_t>(l)));
  final_norm = register_parameter("final_norm", torch::ones({s.d_model}));

  const int64_t half = s.head_dim / 2;
  const auto inv_freq =
      torch::pow(10000.0, -torch::arange(half, torch::kFloat64) / static_cast<double>(half));
  const auto angles = torch::outer(torch::arange(s.seq_len, torch::kFloat64), inv_freq);
  rope_cos = register_buffer("rope_cos", angles.cos().to(torch::kFloat32).unsqueeze(1));
  rope_sin = register_buffer("rope_sin", angles.sin().to(torch::kFloat32).unsqueeze(1));
}

ForwardOutput MoeTransformerImpl::forward(const torch::Tensor& tokens) {
  const int64_t t = tokens.size(1);
  if (t > shape_.seq_len)
    throw std::invalid_argument(
        fmt::format("sequence of {} exceeds seq_len {}", t, shape_.seq_len));
  const auto cos = rope_cos.narrow(0, 0, t), sin = rope_sin.narrow(0, 0, t);
  auto x = embed(tokens);
  torch::Tensor state;  // the RMoE routing state, h_0 = 0, created by the first MoE layer
  for (const auto& m : *blocks) x = m->as<Block>()->forward(x, tokens, cos, sin, state, gru);
  x = rms_norm(x, final_norm);
  ForwardOutput out;
  out.logits = head ? head(x) : torch::matmul(x, embed->weight.t());
  std::vector<torch::Tensor> slots, probs, z;
  for (const auto& m : moe_layers()) {
    z.push_back(m->last_z);
    if (!m->last_mean_probs.defined()) continue;  // hash: nothing to balance
    slots.push_back(m->last_slots_per_token);
    probs.push_back(m->last_mean_probs);
  }
  out.aux_loss = slots.empty() ? torch::zeros({}, x.options()) : load_balancing_loss(slots, probs);
  // Equal token counts per layer: the mean over layers is the pooled mean.
  out.z_loss = z.empty() ? torch::zeros({}, x.options()) : torch::stack(z).mean();
  return out;
}

std::vector<MoeFfn> MoeTransformerImpl::moe_layers() const {
  std::vector<MoeFfn> out;
  for (const auto& m : *blocks)
    if (auto moe = m->as<Block>()->moe) out.push_back(moe);
  return out;
}

std::vector<std::vector<double>> MoeTransformerImpl::expert_load() const {
  std::vector<std::vector<double>> out;
  for (const auto& m : moe_layers()) {
    const auto share = m->last_load.to(torch::kCPU, torch::kFloat64);
    out.emplace_back(share.data_ptr<double>(), share.data_ptr<double>() + share.numel());
  }
  return out;
}

// ---- optimizer -----------------------------------------------------------------

torch::Tensor FusedAdamW::step(LossClosure closure) {
  TORCH_CHECK(!closure, "FusedAdamW takes no closure");
  torch::NoGradGuard no_grad;
  for (auto& group : param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    std::vector<torch::Tensor> params, grads, avgs, squares, steps;
    torch::Tensor shared_step;  // parameters at the same step share one step tensor
    double shared_value = -1;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& s = param_state(p);
      s.step(s.step() + 1);
      params.push_back(p);
      grads.push_back(p.grad());
      avgs.push_back(s.exp_avg());
      squares.push_back(s.exp_avg_sq());
      // The kernel reads the step count (for bias correction) from a tensor.
      const auto value = static_cast<double>(s.step());
      if (shared_value != value || shared_step.device() != p.device()) {
        shared_step = torch::full({}, value, p.options());
        shared_value = value;
      }
      steps.push_back(shared_step);
    }
    if (params.empty()) continue;
    at::_fused_adamw_(params, grads, avgs, squares, {}, steps, o.lr(), std::get<0>(o.betas()),
                      std::get<1>(o.betas()), o.weight_decay(), o.eps(), /*amsgrad=*/false,
                      /*maximize=*/false);
  }
  return {};
}

torch::optim::AdamWParamState& FusedAdamW::param_state(const torch::Tensor& p) {
  auto& slot = state()[p.unsafeGetTensorImpl()];
  if (!slot) {
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    s->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    slot = std::move(s);
  }
  return static_cast<torch::optim::AdamWParamState&>(*slot);
}

}  // namespace moescale
