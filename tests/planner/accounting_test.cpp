#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "planner/planner.h"

namespace moescale {
namespace {

ModelShape llama2_7b() {
  ModelShape s;
  s.vocab = 32000;
  s.seq_len = 4096;
  s.d_model = 4096;
  s.n_layers = 32;
  s.n_heads = 32;
  s.ffn_hidden = 11008;
  s.tied_embeddings = false;
  return s;
}

ModelShape mixtral_8x7b() {
  ModelShape s = llama2_7b();
  s.n_kv_heads = 8;
  s.ffn_hidden = 14336;
  s.experts = 8;
  s.top_k = 2;
  s.router = Router::topk;
  return s;
}

TEST(Accounting, ReproducesLlama2_7B) {
  const ParamCount c = count_params(llama2_7b());
  EXPECT_EQ(c.all(), 6'738'415'616);
  EXPECT_EQ(c.all_active(), c.all());
  EXPECT_EQ(c.embedding, 2 * 32000 * 4096);
}

TEST(Accounting, ReproducesMixtral8x7B) {
  const ParamCount c = count_params(mixtral_8x7b());
  EXPECT_EQ(c.all(), 46'702'792'704);
  EXPECT_EQ(c.all_active(), 12'879'925'248);
  EXPECT_EQ(c.router, 32 * 4096 * 8);
}

TEST(Accounting, RmoeRouterIsPerLayerProjectionsAndGatesPlusOneSharedGru) {
  ModelShape s = mixtral_8x7b();
  s.router = Router::rmoe;
  s.router_dim = 128;
  const int64_t p = 128, d = 4096, e = 8;
  const int64_t gru = 3 * (p * p + p * p) + 6 * p;
  const ParamCount c = count_params(s);
  const ParamCount topk = count_params(mixtral_8x7b());
  // Stored once; run once per MoE layer, so counted per use in the compute N.
  EXPECT_EQ(c.total - topk.total, 32 * (d * p + p * e) + gru - topk.router);
  EXPECT_EQ(c.router, 32 * (d * p + p * e + gru));
  EXPECT_EQ(c.active - topk.active, c.router - topk.router);
  EXPECT_DOUBLE_EQ(flops_per_token_6n(s) - flops_per_token_6n(mixtral_8x7b()),
                   6.0 * (c.router - topk.router));
}

TEST(Accounting, RmoeGruCountsOncePerMoeLayerInComputeAndOnceInTotal) {
  ModelShape s = mixtral_8x7b();
  s.router = Router::rmoe;
  s.router_dim = 64;
  const int64_t p = 64, gru = 6 * p * p + 6 * p;
  ModelShape half = s;
  half.moe_every = 2;  // 16 MoE layers instead of 32
  const ParamCount all = count_params(s), every2 = count_params(half);
  const int64_t expert = 3 * 4096 * 14336, router_layer = 4096 * p + p * 8;
  // 16 layers go from MoE (2 active experts, router, GRU use) to one dense FFN.
  EXPECT_EQ(all.active - every2.active, 16 * (expert + router_layer + gru));
  EXPECT_EQ(all.total - every2.total, 16 * (7 * expert + router_layer));
}

TEST(Accounting, HashRouterHasNoParametersAndMoeEveryCountsOnlyMoeLayers) {
  ModelShape s = mixtral_8x7b();
  s.router = Router::hash;
  s.moe_every = 2;
  const ParamCount c = count_params(s);
  EXPECT_EQ(c.router, 0);
  EXPECT_EQ(s.resolved().moe_layers(), 16);
  const int64_t expert = 3 * 4096 * 14336;
  // 16 MoE layers hold 8 experts, 16 dense layers hold one FFN each.
  EXPECT_EQ(c.total - c.active, 16 * (8 - 2) * expert);
  EXPECT_FALSE(s.is_moe_layer(0));
  EXPECT_TRUE(s.is_moe_layer(1));
}

TEST(Accounting, FlopsPerTokenCountAttentionAndHead) {
  const ModelShape s = llama2_7b();
  const ParamCount c = count_params(s);
  EXPECT_DOUBLE_EQ(flops_per_token_6n(s), 6.0 * c.active);
  EXPECT_DOUBLE_EQ(flops_per_token(s),
                   6.0 * c.active + 12.0 * 32 * 4096 * 4096 + 6.0 * 32000 * 4096);
  EXPECT_DOUBLE_EQ(training_compute(1e9, 2e10), 1.2e20);
  EXPECT_DOUBLE_EQ(tokens_for_compute(1.2e20, 1e9), 2e10);
}

TEST(Accounting, DefaultsAndImpossibleShapes) {
  ModelShape s;
  s.d_model = 96;
  s.n_heads = 6;
  const ModelShape r = s.resolved();
  EXPECT_EQ(r.head_dim, 16);
  EXPECT_EQ(r.n_kv_heads, 6);
  EXPECT_EQ(r.ffn_hidden, 256);  // 8/3·96 = 256
  s.n_heads = 5;
  EXPECT_THROW(s.resolved(), std::invalid_argument);
  s.n_heads = 6;
  s.experts = 4;
  s.top_k = 5;
  s.router = Router::topk;
  EXPECT_THROW(s.resolved(), std::invalid_argument);
  s.top_k = 2;
  s.router = Router::dense;
  EXPECT_THROW(s.resolved(), std::invalid_argument);
  EXPECT_THROW(parse_router("sinkhorn"), std::invalid_argument);
}

TEST(Accounting, ShapeForActiveParamsLandsNearTheTarget) {
  ModelShape base;
  base.experts = 8;
  base.top_k = 2;
  base.router = Router::rmoe;
  base.router_dim = 32;
  ShapeRules rules;
  for (double target : {2e4, 1e5, 1e6, 1e8}) {
    const ModelShape s = shape_for_active_params(target, base, rules);
    const double got = static_cast<double>(count_params(s).active);
    EXPECT_LT(std::abs(std::log(got / target)), std::log(1.6)) << target;
    EXPECT_EQ(s.d_model % rules.head_dim, 0);
    EXPECT_EQ(s.ffn_hidden % 32, 0);
    EXPECT_EQ(s.experts, 8);
  }
}

// With width_step, widths step by it and each takes the widest even head up to head_dim that
// divides it: narrow models get few wide heads (fast attention) instead of many tiny ones, and
// every head has the pairs of dimensions rotary positions rotate.
TEST(Accounting, WidthStepGivesEachWidthItsWidestHead) {
  ModelShape base;
  base.vocab = 256;
  base.seq_len = 128;
  ShapeRules rules;
  rules.head_dim = 16;
  rules.width_step = 4;
  rules.ffn_multiple = 8;
  rules.aspect_ratio = 16;
  std::set<int64_t> widths;
  for (double target = 200; target < 2e5; target *= 1.3) {
    const ModelShape s = shape_for_active_params(target, base, rules);
    EXPECT_EQ(s.d_model % 4, 0) << target;
    EXPECT_EQ(s.n_heads * s.head_dim, s.d_model) << target;
    EXPECT_LE(s.head_dim, 16) << target;
    EXPECT_EQ(s.head_dim % 2, 0) << s.d_model;
    for (int64_t h = s.head_dim + 2; h <= std::min<int64_t>(16, s.d_model); h += 2)
      EXPECT_NE(s.d_model % h, 0) << "a wider even head divides " << s.d_model;
    widths.insert(s.d_model);
    if (s.d_model == 44) {
      EXPECT_EQ(s.head_dim, 4) << "44 = 4 x 11: the widest even head is 4";
    }
  }
  EXPECT_TRUE(widths.count(4));   // narrower than head_dim: one head of 4
  EXPECT_TRUE(widths.count(12));  // not a multiple of 16: one head of 12
  EXPECT_TRUE(widths.count(44));
  // Without width_step every head is head_dim wide, as before.
  rules.width_step = 0;
  const ModelShape s = shape_for_active_params(2e4, base, rules);
  EXPECT_EQ(s.head_dim, 16);
  EXPECT_EQ(s.d_model % 16, 0);
}

}  // namespace
}  // namespace moescale
