// Asks the linked LibTorch about itself.
#include "trainer/runtime.h"

#include <ATen/Version.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <regex>

namespace moescale {
namespace {

// at::show_config() lists "BLAS_INFO=mkl" among its build settings.
std::string blas_name() {
  static const std::regex blas_info("BLAS_INFO=([A-Za-z0-9_]+)");
  const std::string config = at::show_config();
  std::smatch m;
  return std::regex_search(config, m, blas_info) ? m[1].str() : "unknown";
}

}  // namespace

TorchRuntime torch_runtime() {
  TorchRuntime r;
  r.torch = TORCH_VERSION;
#ifdef MOESCALE_HAVE_CUDA
  r.cuda_compiled = true;
  r.cuda_archs = MOESCALE_CUDA_ARCHS;
  r.cuda_devices = static_cast<int>(torch::cuda::device_count());
#endif
  r.blas = blas_name();
  return r;
}

}  // namespace moescale
