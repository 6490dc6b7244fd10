// Hashing and random numbers that are the same on every platform and release, for what must
// not change between machines: run keys, data fingerprints, row identities, synthetic data
// and bootstrap seeds. (std::hash and the standard distributions are implementation-defined.)
#pragma once

#include <cstdint>
#include <string_view>

namespace moescale {

// FNV-1a, 64 bit; `h` continues an earlier hash.
constexpr uint64_t kFnv1aOffset = 1469598103934665603ull;
constexpr uint64_t fnv1a(std::string_view bytes, uint64_t h = kFnv1aOffset) {
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  return h;
}

// splitmix64: a tiny generator with a full 64-bit state.
struct SplitMix64 {
  uint64_t state;
  explicit constexpr SplitMix64(uint64_t seed) : state(seed) {}
  constexpr uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  uint64_t below(uint64_t n) { return next() % n; }
};

}  // namespace moescale
