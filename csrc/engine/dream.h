// Dream's diffusion_generate algorithms (SEMANTICS §6): per-position sampling with Dream's filters
// and confidences, the linspace timestep schedule, and the choice of positions per step. Host code:
// a Dream request's rows are sampled from host logits. tests/reference/dream.py is the reference.
#pragma once

#include <cstdint>
#include <vector>

#include "blockinfer/sampling_params.h"

namespace blockinfer::dream {

struct RowParams {
  RemaskingStrategy alg;  // kOrigin, kMaskgitPlus, kTopkMargin or kEntropy
  float temperature;
  int32_t topk;
  float topp;
  uint64_t seed;
  uint32_t step;          // the global step i of the request's S steps
  uint32_t position;      // absolute canvas position of the row's token
};

// x0, the algorithm's confidence and log p[x0] (p the unfiltered tempered distribution, as
// SEMANTICS §2 reports it) for one (shifted) logits row [vocab].
void sample_row(const float* logits, int64_t vocab, const RowParams& p, int32_t& x0, float& confidence,
                float& logprob);

// t_0..t_S = linspace(1, eps, S + 1) in float32, each value rounded once as torch computes it.
std::vector<float> timesteps(int32_t steps, float eps = 1e-3f);

// The masked positions (indices into `confidence`) that step i of S unmasks.
std::vector<int32_t> select(RemaskingStrategy alg, const std::vector<int32_t>& positions,
                            const std::vector<float>& confidence, const std::vector<float>& ts, int32_t step,
                            float alg_temp, uint64_t seed);

}  // namespace blockinfer::dream
