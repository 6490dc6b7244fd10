// moescale model: how big is this config?
#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "planner/planner.h"

namespace moescale::cli {
namespace {

struct ModelArgs {
  ModelShape shape;
  std::string router = "topk";
  bool untied = false;
  bool json = false;
};

nlohmann::json model_json(const ModelShape& s, const ParamCount& c) {
  return {{"shape",
           {{"vocab", s.vocab},
            {"seq_len", s.seq_len},
            {"d_model", s.d_model},
            {"layers", s.n_layers},
            {"heads", s.n_heads},
            {"kv_heads", s.n_kv_heads},
            {"head_dim", s.head_dim},
            {"ffn", s.ffn_hidden},
            {"experts", s.experts},
            {"top_k", s.top_k},
            {"moe_every", s.moe_every},
            {"moe_layers", s.moe_layers()},
            {"router", to_string(s.router)},
            {"router_dim", s.router_dim},
            {"tied_embeddings", s.tied_embeddings}}},
          {"embedding_params", c.embedding},
          {"active_params", c.active},
          {"total_params", c.total},
          {"router_params", c.router},
          {"all_params", c.all()},
          {"all_active_params", c.all_active()},
          {"flops_per_token_6n", flops_per_token_6n(s)},
          {"flops_per_token", flops_per_token(s)}};
}

void print_model(const ModelShape& s, const ParamCount& c) {
  fmt::print("shape        d_model {}, {} layers, {} heads ({} kv, head_dim {}), ffn {}\n",
             s.d_model, s.n_layers, s.n_heads, s.n_kv_heads, s.head_dim, s.ffn_hidden);
  if (s.experts > 1)
    fmt::print("experts      {} (top-{}, {} MoE layers), router {}\n", s.experts, s.top_k,
               s.moe_layers(), to_string(s.router));
  else
    fmt::print("experts      1 (dense)\n");
  fmt::print("vocab        {} ({} embeddings), seq_len {}\n", s.vocab,
             s.tied_embeddings ? "tied" : "untied", s.seq_len);
  auto row = [](const char* name, int64_t n, const char* note) {
    fmt::print("{:<12} {:>18L}  {:>7}  {}\n", name, n, human_count(static_cast<double>(n)), note);
  };
  row("embedding", c.embedding, "");
  row("active", c.active, "non-embedding, per token");
  row("total", c.total, "non-embedding, all experts");
  row("router", c.router, "");
  row("all", c.all(), "total + embedding");
  row("all active", c.all_active(), "active + embedding");
  fmt::print("FLOPs/token  {} (6·N_active), {} (with attention and head)\n",
             sci(flops_per_token_6n(s)), sci(flops_per_token(s)));
}

}  // namespace

void add_model_command(CLI::App& app) {
  auto args = std::make_shared<ModelArgs>();
  ModelShape& s = args->shape;
  CLI::App* cmd = app.add_subcommand(
      "model", "Print parameter and FLOP counts of a model shape (embedding, active, total).");
  cmd->add_option("--vocab", s.vocab, "vocabulary size")->required();
  cmd->add_option("--seq-len", s.seq_len, "context length (for attention FLOPs)")->required();
  cmd->add_option("--d-model", s.d_model, "model width")->required();
  cmd->add_option("--layers", s.n_layers, "transformer blocks")->required();
  cmd->add_option("--heads", s.n_heads, "attention heads")->required();
  cmd->add_option("--kv-heads", s.n_kv_heads, "key/value heads (grouped-query attention)")
      ->default_str("heads");
  cmd->add_option("--head-dim", s.head_dim, "width of one head")->default_str("d_model/heads");
  cmd->add_option("--ffn", s.ffn_hidden, "SwiGLU hidden size, per expert")
      ->default_str("8/3·d_model rounded up to 32");
  cmd->add_option("--experts", s.experts, "experts per MoE layer (1: dense)")->default_val(1);
  cmd->add_option("--top-k", s.top_k, "experts per token")->default_val(1);
  cmd->add_option("--moe-every", s.moe_every, "every M-th FFN is an MoE layer")->default_val(1);
  cmd->add_option("--router", args->router, "topk, rmoe or hash (ignored when dense)")
      ->default_val("topk");
  cmd->add_option("--router-dim", s.router_dim, "RMoE routing state size p")->default_val(128);
  cmd->add_flag("--untied", args->untied, "separate input embedding and output head");
  cmd->add_flag("--json", args->json, "print JSON");
  cmd->callback([args] {
    ModelShape shape = args->shape;
    shape.router = shape.experts > 1 ? parse_router(args->router) : Router::dense;
    shape.tied_embeddings = !args->untied;
    try {
      shape = shape.resolved();
    } catch (const std::invalid_argument& e) {
      std::string why = e.what();  // "field: reason"; name the flag instead
      std::replace(why.begin(), why.begin() + static_cast<long>(why.find(':')), '_', '-');
      throw std::invalid_argument(fmt::format("--{}", why));
    }
    const ParamCount c = count_params(shape);
    if (args->json)
      fmt::print("{}\n", model_json(shape, c).dump(2));
    else
      print_model(shape, c);
  });
}

}  // namespace moescale::cli
