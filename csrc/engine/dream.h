// Dream's diffusion_generate algorithms (SEMANTICS §6): the linspace timestep schedule and the
// choice of positions per step (host code over a step's confidences). Dream's filters and
// confidences are part of the per-row sampling (kernels/cpu/sampling.cc and its CUDA kernel).
// tests/reference/dream.py is the reference.
#pragma once

#include <cstdint>
#include <vector>

#include "blockinfer/sampling_params.h"

namespace blockinfer::dream {

// t_0..t_S = linspace(1, eps, S + 1) in float32, each value rounded once as torch computes it.
std::vector<float> timesteps(int32_t steps, float eps = 1e-3f);

// The masked positions (indices into `confidence`) that step i of S unmasks.
std::vector<int32_t> select(RemaskingStrategy alg, const std::vector<int32_t>& positions,
                            const std::vector<float>& confidence, const std::vector<float>& ts, int32_t step,
                            float alg_temp, uint64_t seed);

}  // namespace blockinfer::dream
