#include <cmath>

#include "kernels/cpu/kernels.h"

namespace blockinfer::cpu {

void silu_mul(const float* gate_up, float* out, int64_t num_tokens, int64_t inter) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* g = gate_up + t * 2 * inter;
    const float* u = g + inter;
    float* o = out + t * inter;
    for (int64_t i = 0; i < inter; ++i) o[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
  }
}

}  // namespace blockinfer::cpu
