#include <cmath>

#include "kernels/cpu/kernels.h"

namespace blockinfer::cpu {

void silu_mul(const float* gate_up, float* out, int64_t num_tokens, int64_t inter, int64_t block) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* row = gate_up + t * 2 * inter;
    float* o = out + t * inter;
    for (int64_t i = 0; i < inter; ++i) {
      const int64_t gi = block > 0 ? i / block * 2 * block + i % block : i, ui = block > 0 ? gi + block : inter + i;
      o[i] = row[gi] / (1.f + std::exp(-row[gi])) * row[ui];
    }
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
