// The three ways moe_dispatch runs the experts give the same result. Here on CPU:
// the grouped GEMM and the padded batched matmul are the CUDA paths, and torch
// runs both on CPU too, so their bookkeeping (offsets, padding, row order) is
// checked on every machine, GPU or not.
#include <gtest/gtest.h>

#include "trainer/model.h"

namespace moescale {
namespace {

struct Experts {
  torch::Tensor xs, counts, w_gate_up, w_down;
};

// Slots sorted by expert with uneven counts, one expert empty.
Experts make_experts() {
  torch::manual_seed(3);
  const int64_t d = 16, f = 24;
  Experts e;
  e.counts = torch::tensor({5, 0, 9, 2}, torch::kInt64);
  const int64_t slots = e.counts.sum().item<int64_t>();
  e.xs = torch::randn({slots, d});
  e.w_gate_up = torch::randn({4, d, 2 * f}) * 0.2;
  e.w_down = torch::randn({4, f, d}) * 0.2;
  return e;
}

TEST(ExpertKernels, PaddedBlocksMatchOneMatmulPerExpert) {
  const Experts e = make_experts();
  const auto reference =
      run_experts(e.xs, e.counts, e.w_gate_up, e.w_down, ExpertKernel::blockwise);
  const auto padded = run_experts(e.xs, e.counts, e.w_gate_up, e.w_down, ExpertKernel::padded);
  ASSERT_EQ(padded.sizes(), reference.sizes());
  EXPECT_TRUE(torch::allclose(padded, reference, 1e-5, 1e-5));
}

TEST(ExpertKernels, GroupedGemmMatchesOneMatmulPerExpertInBf16) {
  const Experts e = make_experts();
  const auto reference =
      run_experts(e.xs, e.counts, e.w_gate_up, e.w_down, ExpertKernel::blockwise);
  const auto grouped = run_experts(e.xs, e.counts, e.w_gate_up, e.w_down, ExpertKernel::grouped);
  EXPECT_EQ(grouped.scalar_type(), torch::kBFloat16);
  ASSERT_EQ(grouped.sizes(), reference.sizes());
  const double scale = reference.abs().max().item<double>();
  EXPECT_LT((grouped.to(torch::kFloat32) - reference).abs().max().item<double>(), 0.03 * scale);
}

TEST(ExpertKernels, GradientsAgree) {
  Experts e = make_experts();
  std::vector<torch::Tensor> grads[2];
  const ExpertKernel kernels[2] = {ExpertKernel::blockwise, ExpertKernel::padded};
  for (int i = 0; i < 2; ++i) {
    const auto xs = e.xs.clone().requires_grad_(true);
    const auto w1 = e.w_gate_up.clone().requires_grad_(true);
    const auto w2 = e.w_down.clone().requires_grad_(true);
    run_experts(xs, e.counts, w1, w2, kernels[i]).square().sum().backward();
    grads[i] = {xs.grad(), w1.grad(), w2.grad()};
  }
  for (int g = 0; g < 3; ++g) EXPECT_TRUE(torch::allclose(grads[0][g], grads[1][g], 1e-4, 1e-4));
}

TEST(ExpertKernels, GroupedGemmTrainsItsFp32MasterWeights) {
  const Experts e = make_experts();
  std::vector<torch::Tensor> grads[2];
  const ExpertKernel kernels[2] = {ExpertKernel::blockwise, ExpertKernel::grouped};
  for (int i = 0; i < 2; ++i) {
    const auto w1 = e.w_gate_up.clone().requires_grad_(true);
    const auto w2 = e.w_down.clone().requires_grad_(true);
    run_experts(e.xs, e.counts, w1, w2, kernels[i]).to(torch::kFloat32).square().sum().backward();
    grads[i] = {w1.grad(), w2.grad()};
  }
  for (int g = 0; g < 2; ++g) {
    ASSERT_EQ(grads[1][g].scalar_type(), torch::kFloat32);  // the master weights' own dtype
    const double scale = grads[0][g].abs().max().item<double>();
    EXPECT_LT((grads[1][g] - grads[0][g]).abs().max().item<double>(), 0.05 * scale);
  }
}

TEST(ExpertKernels, CpuUsesOneMatmulPerExpert) {
  const Experts e = make_experts();
  EXPECT_EQ(expert_kernel_for(e.xs, e.w_down), ExpertKernel::blockwise);
}

}  // namespace
}  // namespace moescale
