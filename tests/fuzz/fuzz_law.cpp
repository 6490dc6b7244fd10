// Law parser and compiler: any text either parses, or throws std::invalid_argument.
// A parsed law is evaluated at a few points; the values may be anything (NaN
// included) but evaluation must not crash.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "fitting/fitting.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto law = moescale::fitting::Expression::parse(text);
    (void)law.to_string();
    std::vector<double> params(law.params().size(), 0.5);
    std::vector<double> grad(params.size());
    for (double n : {1e6, 3e9}) {
      moescale::fitting::Observation x;
      x.n_active = n;
      x.n_total = 4 * n;
      x.tokens = 20 * n;
      x.experts = 8;
      x.top_k = 2;
      x.granularity = 1;
      x.loss = 3;
      (void)law.evaluate(params, x);
      if (params.size() <= static_cast<size_t>(moescale::fitting::kMaxParams))
        (void)law.gradient(params, x, grad);
    }
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
