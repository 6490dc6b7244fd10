// The MoE transformer (internal to the trainer; tests and benchmarks use it).
// Decoder-only: pre-RMSNorm, rotary positions, causal SDPA with grouped-query
// attention, SwiGLU FFN; every moe_every-th FFN is a dropless MoE layer.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "planner/planner.h"

namespace moescale {

// The routing decision for N tokens: k experts each and their weights.
struct Routing {
  torch::Tensor experts;  // [N, k] int64
  torch::Tensor weights;  // [N, k] gate weights (router probabilities, or renormalised)
  torch::Tensor logits;   // [N, E] router logits; undefined for the hash router
  torch::Tensor probs;    // [N, E] softmax of logits; undefined for the hash router
};

// Softmax and top-k (the topk and rmoe routers). The gate weights are the chosen
// probabilities (Switch Transformer: with k = 1 the router learns from the task
// only through them), or those renormalised to sum to 1 over the k.
Routing route_top_k(const torch::Tensor& logits, int64_t k, bool renormalize);

// The Hugging Face Mixtral `load_balancing_loss_func` (what the RMoE reference code
// uses), over the MoE layers pooled as its concatenation pools them:
// E · Σ_e f_e · P_e, f_e = top-k slots of expert e per token (sums to k), P_e = mean
// router probability. Balanced routing gives k. Per layer: `slots_per_token` [E]
// (constant) and `mean_probs` [E].
torch::Tensor load_balancing_loss(const std::vector<torch::Tensor>& slots_per_token,
                                  const std::vector<torch::Tensor>& mean_probs);

// Dropless batched dispatch: token slots sorted by expert, each expert run once
// on its contiguous block (SwiGLU with stacked weights w_gate_up [E, d, 2f],
// w_down [E, f, d]), results scattered back weighted by the gate. `counts`
// receives the slots per expert ([E] int64 on x's device: no host sync). On CUDA
// the experts are grouped GEMMs in bf16 (padded blocks before Hopper).
torch::Tensor moe_dispatch(const torch::Tensor& x, const Routing& routing,
                           const torch::Tensor& w_gate_up, const torch::Tensor& w_down,
                           torch::Tensor* counts = nullptr);
// The same, with the counts copied to the host (tests).
torch::Tensor moe_dispatch(const torch::Tensor& x, const Routing& routing,
                           const torch::Tensor& w_gate_up, const torch::Tensor& w_down,
                           std::vector<int64_t>* counts);

// How the experts run on token slots sorted by expert (xs [S, d], counts [E]):
// one matmul pair per expert (CPU), two grouped GEMMs in bf16 without a host sync
// (CUDA from Hopper on), or one batched matmul over blocks padded to the largest
// count (older GPUs: one host sync). All give the same result.
enum class ExpertKernel { blockwise, grouped, padded };
ExpertKernel expert_kernel_for(const torch::Tensor& xs, const torch::Tensor& w_down);
torch::Tensor run_experts(const torch::Tensor& xs, const torch::Tensor& counts,
                          const torch::Tensor& w_gate_up, const torch::Tensor& w_down,
                          ExpertKernel kernel);

class MoeFfnImpl : public torch::nn::Module {
 public:
  MoeFfnImpl(const ModelShape& shape, uint64_t seed);
  // x: [N, d] normalised FFN input, tokens: [N] ids (hash router). rmoe updates
  // `state` ([N, p]) through the shared `gru`, without detaching.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& tokens, torch::Tensor& state,
                        torch::nn::GRUCell& gru);

  torch::Tensor w_gate_up, w_down;
  torch::nn::Linear gate{nullptr};  // topk: d -> E; rmoe: p -> E
  torch::nn::Linear proj{nullptr};  // rmoe: d -> p
  torch::Tensor hash_table;         // hash: token id -> first expert

  // Of the last forward: this layer's load-balancing loss, mean(logsumexp^2), its
  // inputs (slots per token and mean probability per expert; undefined for hash),
  // and the share of slots per expert. All stay on the device; expert_load()
  // copies the shares at log steps.
  torch::Tensor last_aux, last_z, last_slots_per_token, last_mean_probs, last_load;

 private:
  Routing route(const torch::Tensor& x, const torch::Tensor& tokens, torch::Tensor& state,
                torch::nn::GRUCell& gru);
  ModelShape shape_;
};
TORCH_MODULE(MoeFfn);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ModelShape& shape, bool moe, uint64_t seed);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& tokens,
                        const torch::Tensor& cos, const torch::Tensor& sin, torch::Tensor& state,
                        torch::nn::GRUCell& gru);

  torch::Tensor attn_norm, ffn_norm;
  torch::nn::Linear wqkv{nullptr}, wo{nullptr};
  torch::nn::Linear w_gate_up{nullptr}, w_down{nullptr};  // dense SwiGLU
  MoeFfn moe{nullptr};

 private:
  torch::Tensor attention(const torch::Tensor& x, const torch::Tensor& cos,
                          const torch::Tensor& sin);
  ModelShape shape_;
};
TORCH_MODULE(Block);

struct ForwardOutput {
  torch::Tensor logits;    // [B, T, V]
  torch::Tensor aux_loss;  // load balancing over the MoE layers pooled (0 without)
  torch::Tensor z_loss;    // router z-loss, mean over MoE layers (0 without)
};

class MoeTransformerImpl : public torch::nn::Module {
 public:
  MoeTransformerImpl(const ModelShape& shape, uint64_t seed);
  ForwardOutput forward(const torch::Tensor& tokens);  // tokens: [B, T] int64
  std::vector<MoeFfn> moe_layers() const;
  std::vector<std::vector<double>> expert_load() const;
  const ModelShape& shape() const { return shape_; }

  torch::nn::Embedding embed{nullptr};
  torch::nn::Linear head{nullptr};  // untied embeddings only
  torch::nn::GRUCell gru{nullptr};  // rmoe only: ONE cell shared by all MoE layers
  torch::nn::ModuleList blocks;
  torch::Tensor final_norm, rope_cos, rope_sin;

 private:
  ModelShape shape_;
};
TORCH_MODULE(MoeTransformer);

// AdamW whose update is one fused kernel per parameter group (at::_fused_adamw_)
// instead of about ten elementwise passes per parameter. Its state lives in AdamW's
// own map, so AdamW's save/load (the checkpoints) apply unchanged.
class FusedAdamW : public torch::optim::AdamW {
 public:
  using AdamW::AdamW;
  torch::Tensor step(LossClosure closure = nullptr) override;

 private:
  torch::optim::AdamWParamState& param_state(const torch::Tensor& p);
};

}  // namespace moescale
