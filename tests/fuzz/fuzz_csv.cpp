// CSV importer: any bytes either give observations with positive finite values,
// or throw std::invalid_argument with a short message.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string_view>

#include "fitting/fitting.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  static const moescale::fitting::ColumnMapping with_d{
      {"N", "N"}, {"D", "D"}, {"loss", "loss"}, {"E", "E"}};
  static const moescale::fitting::ColumnMapping with_c{{"N", "N"}, {"C", "C"}, {"loss", "loss"}};
  for (const auto* mapping : {&with_d, &with_c}) {
    try {
      const auto rows = moescale::fitting::parse_observations_csv(text, *mapping, "fuzz.csv");
      moescale::fitting::validate_observations(rows);  // must hold for what was accepted
    } catch (const std::invalid_argument& e) {
      if (std::string_view(e.what()).size() > 2000) std::abort();  // echoed a huge field
    }
  }
  return 0;
}
