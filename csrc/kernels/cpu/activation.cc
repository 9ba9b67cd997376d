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

void combine_guidance(const float* logits, const GuidanceRow* rows, int64_t num_rows, int64_t vocab, float* out) {
  for (int64_t r = 0; r < num_rows; ++r) {
    const float* cond = logits + int64_t{rows[r].cond} * vocab;
    float* dst = out + r * vocab;
    if (rows[r].uncond < 0) {
      for (int64_t i = 0; i < vocab; ++i) dst[i] = cond[i];
      continue;
    }
    const float* un = logits + int64_t{rows[r].uncond} * vocab;
    const float w = rows[r].weight;
    // Three roundings, as torch's float32 ops do (the host build targets no FMA instructions).
    for (int64_t i = 0; i < vocab; ++i) dst[i] = un[i] + w * (cond[i] - un[i]);
  }
}

}  // namespace blockinfer::cpu
