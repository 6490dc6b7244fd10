// What the LibTorch this trainer is built on offers: its version, whether it
// was built with CUDA, for which GPU architectures, how many GPUs are visible
// now, and its CPU BLAS. Torch-free header: `moescale version` prints this.
#pragma once

#include <string>

namespace moescale {

struct TorchRuntime {
  std::string torch;  // "2.11.0"
  bool cuda_compiled = false;
  std::string cuda_archs;  // "sm_80 sm_90 ..." of the linked LibTorch; empty without CUDA
  int cuda_devices = 0;    // visible to this process now
  std::string blas;        // "mkl", "openblas", ...
};

TorchRuntime torch_runtime();

}  // namespace moescale
