// Powers of two: the rounding of sizes that CUDA graphs are keyed by (executor, attention plan) and
// of graph-pool blocks, and the shifts kernels take in place of divisions.
#pragma once

#include <cstdint>

namespace blockinfer {

// The smallest power of two that is >= v and >= at_least (itself a power of two).
inline int64_t pow2_at_least(int64_t v, int64_t at_least = 1) {
  int64_t p = at_least;
  while (p < v) p *= 2;
  return p;
}

// log2(v) where v is a power of two (1, 2, 4, ...), else -1. (Host code; the CUDA sources build
// as C++17, without std::countr_zero.)
inline int log2_if_pow2(int64_t v) {
  if (v <= 0 || (v & (v - 1)) != 0) return -1;
  int s = 0;
  while ((int64_t{1} << s) < v) ++s;
  return s;
}

}  // namespace blockinfer
