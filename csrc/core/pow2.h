// The smallest power of two that is >= v and >= at_least (itself a power of two): the rounding of
// sizes that CUDA graphs are keyed by (executor, attention plan) and of graph-pool blocks.
#pragma once

#include <cstdint>

namespace blockinfer {

inline int64_t pow2_at_least(int64_t v, int64_t at_least = 1) {
  int64_t p = at_least;
  while (p < v) p *= 2;
  return p;
}

}  // namespace blockinfer
