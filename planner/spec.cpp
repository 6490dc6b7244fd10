// RunSpec: its JSON form (what the database stores) and its stable key.
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "planner/planner.h"
#include "planner/stable_random.h"

namespace moescale {
using nlohmann::json;

int64_t RunSpec::steps() const {
  const int64_t per_step = train.tokens_per_step(shape.seq_len);
  return std::max<int64_t>(1, (tokens + per_step - 1) / per_step);
}

namespace {
json shape_json(const ModelShape& s) {
  return {{"vocab", s.vocab},
          {"seq_len", s.seq_len},
          {"d_model", s.d_model},
          {"n_layers", s.n_layers},
          {"n_heads", s.n_heads},
          {"n_kv_heads", s.n_kv_heads},
          {"head_dim", s.head_dim},
          {"ffn_hidden", s.ffn_hidden},
          {"experts", s.experts},
          {"top_k", s.top_k},
          {"moe_every", s.moe_every},
          {"router", to_string(s.router)},
          {"router_dim", s.router_dim},
          {"tied_embeddings", s.tied_embeddings},
          {"renormalize", s.renormalizes()}};
}

json train_json(const TrainSettings& t) {
  json j{{"batch_size", t.batch_size},
          {"lr", t.lr},
          {"min_lr_ratio", t.min_lr_ratio},
          {"warmup_fraction", t.warmup_fraction},
          {"weight_decay", t.weight_decay},
          {"grad_clip", t.grad_clip},
          {"aux_loss_weight", t.aux_loss_weight},
          {"z_loss_weight", t.z_loss_weight},
          {"eval_interval", t.eval_interval},
          {"eval_batches", t.eval_batches},
          {"final_eval_batches", t.final_eval_batches},
          {"val_windows_per_seed", t.val_windows_per_seed},
          {"log_interval", t.log_interval},
          {"checkpoint_interval", t.checkpoint_interval},
          {"seed", t.seed}};
  // Only where they differ from what every older spec meant, so that old runs keep their keys.
  if (t.lr_rule != "fixed") j["lr_rule"] = t.lr_rule;
  if (t.recipe_probe != 1) j["recipe_probe"] = t.recipe_probe;
  return j;
}

}  // namespace

std::string to_json(const RunSpec& spec) {
  json j{{"shape", shape_json(spec.shape)},
         {"train", train_json(spec.train)},
         {"tokens", spec.tokens},
         {"data_dir", spec.data_dir}};
  return j.dump();
}

RunSpec run_spec_from_json(std::string_view text) {
  try {
    const json j = json::parse(text);
    RunSpec r;
    const json& s = j.at("shape");
    ModelShape& m = r.shape;
    s.at("vocab").get_to(m.vocab);
    s.at("seq_len").get_to(m.seq_len);
    s.at("d_model").get_to(m.d_model);
    s.at("n_layers").get_to(m.n_layers);
    s.at("n_heads").get_to(m.n_heads);
    s.at("n_kv_heads").get_to(m.n_kv_heads);
    s.at("head_dim").get_to(m.head_dim);
    s.at("ffn_hidden").get_to(m.ffn_hidden);
    s.at("experts").get_to(m.experts);
    s.at("top_k").get_to(m.top_k);
    s.at("moe_every").get_to(m.moe_every);
    m.router = parse_router(s.at("router").get<std::string>());
    s.at("router_dim").get_to(m.router_dim);
    s.at("tied_embeddings").get_to(m.tied_embeddings);
    // Specs stored before the key existed were trained with renormalised gates, k = 1
    // included (a gate of exactly 1).
    m.renormalize = s.contains("renormalize") ? s.at("renormalize").get<bool>() : true;
    const json& t = j.at("train");
    TrainSettings& ts = r.train;
    t.at("batch_size").get_to(ts.batch_size);
    t.at("lr").get_to(ts.lr);
    t.at("min_lr_ratio").get_to(ts.min_lr_ratio);
    t.at("warmup_fraction").get_to(ts.warmup_fraction);
    t.at("weight_decay").get_to(ts.weight_decay);
    t.at("grad_clip").get_to(ts.grad_clip);
    t.at("aux_loss_weight").get_to(ts.aux_loss_weight);
    t.at("z_loss_weight").get_to(ts.z_loss_weight);
    t.at("eval_interval").get_to(ts.eval_interval);
    t.at("eval_batches").get_to(ts.eval_batches);
    // Specs stored before these keys scored the final loss like every other evaluation, on
    // windows drawn from the run's seed.
    ts.final_eval_batches = t.value("final_eval_batches", ts.eval_batches);
    ts.val_windows_per_seed = t.value("val_windows_per_seed", true);
    t.at("log_interval").get_to(ts.log_interval);
    t.at("checkpoint_interval").get_to(ts.checkpoint_interval);
    t.at("seed").get_to(ts.seed);
    ts.lr_rule = t.value("lr_rule", std::string("fixed"));
    ts.recipe_probe = t.value("recipe_probe", 1.0);
    if (!(ts.recipe_probe > 0))
      throw std::invalid_argument("run spec: train.recipe_probe must be positive");
    j.at("tokens").get_to(r.tokens);
    j.at("data_dir").get_to(r.data_dir);
    r.shape = r.shape.resolved();
    return r;
  } catch (const json::exception& e) {
    throw std::invalid_argument(fmt::format("run spec is not valid JSON of a run: {}", e.what()));
  }
}

std::string RunSpec::key() const {
  const ModelShape& s = shape;
  return fmt::format("{}-E{}k{}-d{}L{}-D{}-{:08x}", to_string(s.router), s.experts, s.top_k,
                     s.d_model, s.n_layers, tokens, fnv1a(to_json(*this)) & 0xffffffffu);
}

}  // namespace moescale
