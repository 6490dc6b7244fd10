// The MoE transformer: parameter accounting, batched dispatch, routers.
#include "trainer/model.h"

#include <gtest/gtest.h>
#include <torch/csrc/autograd/functions/accumulate_grad.h>

#include <map>
#include <unordered_set>

namespace moescale {
namespace {

// Other jobs share the machine; an oversubscribed OpenMP team stalls small ops.
class OneThread : public ::testing::Environment {
 public:
  void SetUp() override { torch::set_num_threads(1); }
};
[[maybe_unused]] const auto* const kOneThread = ::testing::AddGlobalTestEnvironment(new OneThread);

ModelShape base_shape() {
  ModelShape s;
  s.vocab = 50;
  s.seq_len = 16;
  s.d_model = 32;
  s.n_layers = 2;
  s.n_heads = 4;
  s.router_dim = 16;
  return s;
}

int64_t numel_of(const std::vector<torch::Tensor>& params) {
  int64_t n = 0;
  for (const auto& p : params) n += p.numel();
  return n;
}

struct ShapeCase {
  const char* name;
  ModelShape shape;
};

std::vector<ShapeCase> shape_cases() {
  std::vector<ShapeCase> cases;
  auto add = [&](const char* name, auto edit) {
    ModelShape s = base_shape();
    edit(s);
    cases.push_back({name, s});
  };
  add("dense", [](ModelShape&) {});
  add("topk", [](ModelShape& s) { s.experts = 4, s.top_k = 2, s.router = Router::topk; });
  add("rmoe", [](ModelShape& s) { s.experts = 8, s.top_k = 2, s.router = Router::rmoe; });
  add("hash", [](ModelShape& s) { s.experts = 4, s.router = Router::hash; });
  add("gqa", [](ModelShape& s) { s.n_kv_heads = 2, s.experts = 4, s.router = Router::topk; });
  add("moe_every_2", [](ModelShape& s) {
    s.n_layers = 4, s.moe_every = 2, s.experts = 4, s.router = Router::rmoe;
  });
  add("untied",
      [](ModelShape& s) { s.tied_embeddings = false, s.experts = 2, s.router = Router::topk; });
  add("head_dim_ffn", [](ModelShape& s) { s.head_dim = 16, s.ffn_hidden = 40; });
  return cases;
}

TEST(TrainerModel, ParameterCountMatchesPlanner) {
  for (const auto& c : shape_cases()) {
    MoeTransformer model(c.shape, 1);
    const ParamCount expected = count_params(c.shape);
    int64_t embedding = model->embed->weight.numel();
    if (model->head) embedding += model->head->weight.numel();
    EXPECT_EQ(numel_of(model->parameters()), expected.all()) << c.name;
    EXPECT_EQ(numel_of(model->parameters()) - embedding, expected.total) << c.name;
    EXPECT_EQ(embedding, expected.embedding) << c.name;
  }
}

TEST(TrainerModel, ForwardRunsEveryShapeAndGivesFiniteLogits) {
  for (const auto& c : shape_cases()) {
    MoeTransformer model(c.shape, 2);
    const auto tokens = torch::randint(c.shape.vocab, {2, c.shape.seq_len}, torch::kInt64);
    const auto out = model->forward(tokens);
    EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{2, c.shape.seq_len, c.shape.vocab}))
        << c.name;
    EXPECT_TRUE(torch::isfinite(out.logits).all().item<bool>()) << c.name;
    EXPECT_EQ(model->expert_load().size(), static_cast<size_t>(c.shape.resolved().moe_layers()))
        << c.name;
  }
}

TEST(TrainerModel, AttentionIsCausal) {
  ModelShape s = base_shape();
  s.n_kv_heads = 2;
  MoeTransformer model(s, 3);
  auto tokens = torch::randint(s.vocab, {1, s.seq_len}, torch::kInt64);
  const auto before = model->forward(tokens).logits;
  tokens[0][s.seq_len - 1] = (tokens[0][s.seq_len - 1].item<int64_t>() + 1) % s.vocab;
  const auto after = model->forward(tokens).logits;
  const int64_t t = s.seq_len - 1;
  EXPECT_TRUE(torch::allclose(before.narrow(1, 0, t), after.narrow(1, 0, t), 1e-5, 1e-6));
  EXPECT_FALSE(torch::allclose(before.narrow(1, t, 1), after.narrow(1, t, 1)));
}

// The obvious per-token loop the batched dispatch must equal.
torch::Tensor naive_dispatch(const torch::Tensor& x, const Routing& r, const torch::Tensor& w_gu,
                             const torch::Tensor& w_down) {
  const int64_t f = w_down.size(1);
  std::vector<torch::Tensor> rows;
  for (int64_t n = 0; n < x.size(0); ++n) {
    auto y = torch::zeros({x.size(1)});
    for (int64_t j = 0; j < r.experts.size(1); ++j) {
      const int64_t e = r.experts[n][j].item<int64_t>();
      const auto gu = x[n].matmul(w_gu[e]);
      const auto h = torch::silu(gu.narrow(0, 0, f)) * gu.narrow(0, f, f);
      y = y + r.weights[n][j] * h.matmul(w_down[e]);
    }
    rows.push_back(y);
  }
  return torch::stack(rows);
}

TEST(TrainerDispatch, BatchedEqualsNaivePerTokenForwardAndGradients) {
  torch::manual_seed(4);
  const int64_t n = 40, d = 12, f = 10, e = 5, k = 2;
  auto make = [&] {
    return std::vector<torch::Tensor>{torch::randn({n, d}, torch::requires_grad()),
                                      torch::randn({n, e}, torch::requires_grad()),
                                      torch::randn({e, d, 2 * f}, torch::requires_grad()),
                                      torch::randn({e, f, d}, torch::requires_grad())};
  };
  auto batched = make();
  std::vector<torch::Tensor> naive;
  for (const auto& t : batched) naive.push_back(t.detach().clone().requires_grad_(true));
  const auto upstream = torch::randn({n, d});

  std::vector<int64_t> counts;
  const auto yb =
      moe_dispatch(batched[0], route_top_k(batched[1], k, true), batched[2], batched[3], &counts);
  const auto yn = naive_dispatch(naive[0], route_top_k(naive[1], k, true), naive[2], naive[3]);
  ASSERT_TRUE(torch::allclose(yb, yn, 1e-5, 1e-5)) << (yb - yn).abs().max();
  (yb * upstream).sum().backward();
  (yn * upstream).sum().backward();
  for (size_t i = 0; i < batched.size(); ++i) {
    ASSERT_TRUE(batched[i].grad().defined()) << i;
    EXPECT_TRUE(torch::allclose(batched[i].grad(), naive[i].grad(), 1e-4, 1e-5))
        << "gradient " << i << " differs by " << (batched[i].grad() - naive[i].grad()).abs().max();
  }
  int64_t slots = 0;
  for (auto c : counts) slots += c;
  EXPECT_EQ(slots, n * k);
  EXPECT_GT(batched[1].grad().abs().sum().item<double>(), 0) << "the gate must be trained";
}

TEST(TrainerDispatch, HandlesExpertsThatReceiveNoTokens) {
  const int64_t n = 6, d = 4, f = 3, e = 4;
  Routing r;
  r.experts = torch::full({n, 1}, 2, torch::kInt64);
  r.weights = torch::ones({n, 1});
  const auto x = torch::randn({n, d});
  const auto w_gu = torch::randn({e, d, 2 * f}), w_down = torch::randn({e, f, d});
  std::vector<int64_t> counts;
  const auto y = moe_dispatch(x, r, w_gu, w_down, &counts);
  EXPECT_EQ(counts, (std::vector<int64_t>{0, 0, 6, 0}));
  EXPECT_TRUE(torch::allclose(y, naive_dispatch(x, r, w_gu, w_down), 1e-5, 1e-5));
}

TEST(TrainerRouter, HashRoutesByTokenIdOnly) {
  ModelShape s = base_shape();
  s.experts = 4;
  s.top_k = 2;
  s.router = Router::hash;
  MoeTransformer model(s, 5);
  const auto tokens = torch::tensor({3, 7, 3, 7, 3, 9}, torch::kInt64).view({1, 6});
  model->forward(tokens);
  const auto load = model->expert_load();
  ASSERT_EQ(load.size(), 2u);
  const auto table = model->moe_layers()[0]->hash_table;
  EXPECT_EQ(table.numel(), s.vocab);
  // token 3 three times, 7 twice, 9 once; k = 2 consecutive experts each: 12 slots.
  std::vector<double> expected(4, 0.0);
  for (int64_t t : {3, 7, 3, 7, 3, 9}) {
    const int64_t first = table[t].item<int64_t>();
    for (int64_t j = 0; j < 2; ++j) expected[(first + j) % 4] += 1.0 / 12;
  }
  for (int e = 0; e < 4; ++e) EXPECT_NEAR(load[0][e], expected[e], 1e-12);
}

TEST(TrainerRouter, TopKAuxAndZLossOfAZeroGate) {
  ModelShape s = base_shape();
  s.experts = 4;
  s.router = Router::topk;
  MoeTransformer model(s, 6);
  auto moe = model->moe_layers()[0];
  torch::NoGradGuard no_grad;
  moe->gate->weight.zero_();
  const auto x = torch::randn({8, s.d_model});
  torch::Tensor state;
  moe->forward(x, torch::zeros({8}, torch::kInt64), state, model->gru);
  // Ties send every token to one expert: f is one-hot, P = 1/4 each, aux = 4 * 1/4 = 1.
  EXPECT_NEAR(moe->last_aux.item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(moe->last_z.item<double>(), std::pow(std::log(4.0), 2), 1e-5);
}

ModelShape rmoe_shape() {
  ModelShape s = base_shape();
  s.n_layers = 3;
  s.experts = 4;
  s.top_k = 1;
  s.router = Router::rmoe;
  return s;
}

TEST(TrainerRMoE, OneGruCellIsSharedByAllMoeLayers) {
  MoeTransformer model(rmoe_shape(), 7);
  int grus = 0;
  for (const auto& m : model->modules(/*include_self=*/false))
    if (std::dynamic_pointer_cast<torch::nn::GRUCellImpl>(m)) ++grus;
  EXPECT_EQ(grus, 1);
  ASSERT_EQ(model->moe_layers().size(), 3u);
  for (const auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    if (name.find("gru") != std::string::npos) {
      EXPECT_EQ(name.rfind("gru.", 0), 0u) << name;
    }
  }

  // Every layer's routing loss trains the one cell.
  model->forward(torch::randint(50, {2, 16}, torch::kInt64));
  for (auto& moe : model->moe_layers()) {
    model->zero_grad();
    moe->last_aux.backward(/*gradient=*/{}, /*retain_graph=*/true);
    EXPECT_GT(model->gru->weight_ih.grad().abs().sum().item<double>(), 0);
  }
}

TEST(TrainerRMoE, LaterLayersRoutingLossReachesEarlierProjectorThroughGruState) {
  ModelShape s = rmoe_shape();
  s.renormalize = true;  // k = 1: a gate of exactly 1
  MoeTransformer model(s, 8);
  model->forward(torch::randint(50, {2, 16}, torch::kInt64));
  const auto layers = model->moe_layers();
  model->zero_grad();
  layers[1]->last_aux.backward({}, /*retain_graph=*/true);
  // With k = 1 the renormalised gate weight is 1: layer 0's output, and hence x at
  // layer 1, does not depend on layer 0's router. Gradient reaching layer 0's
  // projector can only have come through the recurrent state.
  const auto proj_grad = layers[0]->proj->weight.grad();
  ASSERT_TRUE(proj_grad.defined());
  EXPECT_GT(proj_grad.abs().sum().item<double>(), 0);
  const auto gate_grad = layers[0]->gate->weight.grad();
  EXPECT_TRUE(!gate_grad.defined() || gate_grad.abs().sum().item<double>() == 0)
      << "layer 0's gate reads the state but does not write it";
  EXPECT_TRUE(!layers[2]->proj->weight.grad().defined() ||
              layers[2]->proj->weight.grad().abs().sum().item<double>() == 0)
      << "routing of layer 1 cannot depend on layer 2";
}

// ---- routing gradients and the load-balancing loss -----------------------------

double grad_sum(const torch::Tensor& p) {
  return p.grad().defined() ? p.grad().abs().sum().item<double>() : 0.0;
}

// The router parameters' gradient from the language-model loss alone.
std::vector<std::pair<std::string, double>> router_grads_from_lm_loss(const ModelShape& s) {
  MoeTransformer model(s, 21);
  const auto tokens = torch::randint(s.vocab, {2, s.seq_len + 1}, torch::kInt64);
  const auto out = model->forward(tokens.narrow(1, 0, s.seq_len));
  torch::nn::functional::cross_entropy(out.logits.reshape({-1, s.vocab}),
                                       tokens.narrow(1, 1, s.seq_len).reshape(-1))
      .backward();
  std::vector<std::pair<std::string, double>> grads;
  for (const auto& item : model->named_parameters())
    if (item.key().find("gate.") != std::string::npos ||
        item.key().find("proj.") != std::string::npos || item.key().rfind("gru.", 0) == 0)
      grads.emplace_back(item.key(), grad_sum(item.value()));
  return grads;
}

TEST(TrainerRouter, RouterLearnsFromTheLanguageModelLossForTopOneAndTopTwo) {
  for (Router router : {Router::topk, Router::rmoe})
    for (int64_t k : {1, 2}) {
      ModelShape s = base_shape();
      s.n_layers = 3;
      s.experts = 4;
      s.top_k = k;
      s.router = router;
      const auto grads = router_grads_from_lm_loss(s);
      // topk: a gate per layer; rmoe: a projection and a gate per layer, GRU weights and biases.
      EXPECT_EQ(grads.size(), router == Router::topk ? 3u : 10u);
      for (const auto& [name, g] : grads)
        EXPECT_GT(g, 0) << to_string(router) << " k=" << k << ": " << name;
    }
}

TEST(TrainerRouter, RenormalisedTopOneGivesTheGateNoTaskGradient) {
  // What Switch scaling fixes: a gate of exactly 1 does not depend on the router.
  ModelShape s = base_shape();
  s.experts = 4;
  s.top_k = 1;
  s.router = Router::topk;
  s.renormalize = true;
  for (const auto& [name, g] : router_grads_from_lm_loss(s)) EXPECT_EQ(g, 0) << name;
}

TEST(TrainerRouter, TopOneGateIsTheRouterProbabilityAndTopTwoSumsToOne) {
  const auto logits = torch::tensor({{0.0, 1.0, 2.0}, {3.0, 0.0, 0.0}});
  const auto probs = torch::softmax(logits, -1);
  const Routing one = route_top_k(logits, 1, false);
  EXPECT_TRUE(torch::allclose(one.weights.squeeze(1), probs.amax(-1)));
  const Routing two = route_top_k(logits, 2, false);
  EXPECT_FALSE(torch::allclose(two.weights.sum(-1), torch::ones({2})));
  const Routing two_norm = route_top_k(logits, 2, true);
  EXPECT_TRUE(torch::allclose(two_norm.weights.sum(-1), torch::ones({2})));
}

TEST(TrainerRouter, LoadBalancingLossMatchesTheMixtralFormulaByHand) {
  // One layer, E = 3, k = 2. Token 1 picks experts 0, 1; token 2 picks 2, 1.
  // f = slots per token = (1/2, 2/2, 1/2), P = (0.35, 0.30, 0.35):
  // 3 · (0.5·0.35 + 1·0.30 + 0.5·0.35) = 1.95.
  ModelShape s = base_shape();
  s.experts = 3;
  s.top_k = 2;
  s.router = Router::topk;
  MoeTransformer model(s, 22);
  auto moe = model->moe_layers()[0];
  const auto logits = torch::log(torch::tensor({{0.5, 0.3, 0.2}, {0.2, 0.3, 0.5}}));
  const Routing r = route_top_k(logits, 2, true);
  const auto f = torch::bincount(r.experts.reshape(-1), {}, 3).to(torch::kFloat32) / 2.0;
  EXPECT_NEAR(load_balancing_loss({f}, {r.probs.mean(0)}).item<double>(), 1.95, 1e-6);

  // Two layers, E = 2, k = 1, pooled as Mixtral concatenates them: layer A sends both
  // tokens to expert 0, layer B both to expert 1. Pooled f = (1/2, 1/2),
  // P = (0.45, 0.55): 2 · (0.5·0.45 + 0.5·0.55) = 1 (the mean of the layers' own
  // losses, 1.4 and 1.6, would be 1.5).
  const auto pa = torch::tensor({{0.8, 0.2}, {0.6, 0.4}}),
             pb = torch::tensor({{0.3, 0.7}, {0.1, 0.9}});
  const auto fa = torch::tensor({1.0, 0.0}), fb = torch::tensor({0.0, 1.0});
  EXPECT_NEAR(load_balancing_loss({fa, fb}, {pa.mean(0), pb.mean(0)}).item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(load_balancing_loss({fa}, {pa.mean(0)}).item<double>(), 1.4, 1e-6);
}

TEST(TrainerRouter, ModelAuxLossIsTheMixtralLossOverItsLayers) {
  ModelShape s = base_shape();
  s.n_layers = 2;
  s.experts = 4;
  s.top_k = 2;
  s.router = Router::topk;
  MoeTransformer model(s, 23);
  const auto out = model->forward(torch::randint(s.vocab, {2, s.seq_len}, torch::kInt64));
  // Recompute from the routing each layer reported, Mixtral's way: one-hot counts.
  std::vector<torch::Tensor> f, p;
  for (const auto& m : model->moe_layers()) {
    const auto load = m->last_load;  // slot shares, sum 1
    f.push_back(load * static_cast<double>(s.top_k));
    p.push_back(m->last_mean_probs);
    EXPECT_NEAR(m->last_slots_per_token.sum().item<double>(), 2.0, 1e-5);
  }
  const double expected =
      4.0 * (torch::stack(f).mean(0) * torch::stack(p).mean(0)).sum().item<double>();
  EXPECT_NEAR(out.aux_loss.item<double>(), expected, 1e-5);
  EXPECT_GT(out.aux_loss.item<double>(), 1.9) << "near-balanced top-2 routing gives about k";
}

// ---- compute accounting, counted from the autograd graph ----------------------

// How many times each parameter is used in the graph of `root`: the edges into its
// gradient accumulator.
std::map<const void*, int64_t> parameter_uses(const torch::Tensor& root) {
  std::map<const void*, int64_t> uses;
  std::unordered_set<torch::autograd::Node*> seen;
  std::vector<torch::autograd::Node*> todo{root.grad_fn().get()};
  while (!todo.empty()) {
    auto* node = todo.back();
    todo.pop_back();
    if (!node || !seen.insert(node).second) continue;
    for (const auto& edge : node->next_edges()) {
      auto* next = edge.function.get();
      if (!next) continue;
      if (auto* acc = dynamic_cast<torch::autograd::AccumulateGrad*>(next))
        ++uses[acc->variable.unsafeGetTensorImpl()];
      else
        todo.push_back(next);
    }
  }
  return uses;
}

TEST(TrainerModel, ParametersUsedPerTokenMatchPlannerActiveCount) {
  // The planner's N_active counts a parameter per use; the graph says how often each
  // is used. Expert weights are stacked [E, ...]: a token uses k/E of them.
  for (const auto& c : shape_cases()) {
    const ModelShape s = c.shape.resolved();
    MoeTransformer model(s, 24);
    const auto out = model->forward(torch::randint(s.vocab, {1, s.seq_len}, torch::kInt64));
    const auto uses = parameter_uses(out.logits.sum());
    double used = 0;
    for (const auto& item : model->named_parameters()) {
      const std::string& name = item.key();
      if (name.rfind("embed.", 0) == 0 || name.rfind("head.", 0) == 0) continue;
      const auto it = uses.find(item.value().unsafeGetTensorImpl());
      const double n = it == uses.end() ? 0 : static_cast<double>(it->second);
      const bool expert = name.find("moe.w_") != std::string::npos;
      const double share = expert ? static_cast<double>(s.top_k) / s.experts : 1.0;
      used += n * share * static_cast<double>(item.value().numel());
    }
    EXPECT_DOUBLE_EQ(used, static_cast<double>(count_params(s).active)) << c.name;
  }
}

TEST(TrainerRMoE, SharedGruIsUsedOncePerMoeLayer) {
  MoeTransformer model(rmoe_shape(), 25);
  const auto out = model->forward(torch::randint(50, {1, 16}, torch::kInt64));
  const auto uses = parameter_uses(out.logits.sum());
  for (const auto& p : model->gru->parameters())
    EXPECT_EQ(uses.at(p.unsafeGetTensorImpl()), 3) << "3 MoE layers";
}

TEST(TrainerModel, SameSeedBuildsTheSameModel) {
  ModelShape s = rmoe_shape();
  MoeTransformer a(s, 9), b(s, 9), c(s, 10);
  const auto pa = a->parameters(), pb = b->parameters(), pc = c->parameters();
  bool all_equal = true, any_differs = false;
  for (size_t i = 0; i < pa.size(); ++i) {
    all_equal = all_equal && torch::equal(pa[i], pb[i]);
    any_differs = any_differs || !torch::equal(pa[i], pc[i]);
  }
  EXPECT_TRUE(all_equal);
  EXPECT_TRUE(any_differs);
}

TEST(TrainerOptimizer, FusedAdamWMatchesTorchAdamW) {
  torch::manual_seed(12);
  const auto init = std::vector<torch::Tensor>{torch::randn({5, 7}), torch::randn({7})};
  auto make = [&] {
    std::vector<torch::Tensor> ps;
    for (const auto& t : init) ps.push_back(t.clone().requires_grad_(true));
    return ps;
  };
  auto a = make(), b = make();
  auto opts = [](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(0.01).betas({0.9, 0.95}).weight_decay(wd));
  };
  auto groups = [&](std::vector<torch::Tensor>& ps) {
    std::vector<torch::optim::OptimizerParamGroup> g;
    g.emplace_back(std::vector<torch::Tensor>{ps[0]}, opts(0.1));
    g.emplace_back(std::vector<torch::Tensor>{ps[1]}, opts(0.0));
    return g;
  };
  FusedAdamW fused(groups(a), torch::optim::AdamWOptions(0.01));
  torch::optim::AdamW reference(groups(b), torch::optim::AdamWOptions(0.01));
  for (int step = 0; step < 5; ++step) {
    const auto target = torch::randn({5, 7});
    for (auto* ps : {&a, &b}) {
      for (auto& p : *ps) p.mutable_grad() = torch::Tensor();
      (((*ps)[0] + (*ps)[1]) - target).square().sum().backward();
    }
    fused.step();
    reference.step();
  }
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-5, 1e-6)) << i << ": " << (a[i] - b[i]).abs().max();
  EXPECT_FALSE(torch::allclose(a[0], init[0])) << "the parameters moved";
}

}  // namespace
}  // namespace moescale
