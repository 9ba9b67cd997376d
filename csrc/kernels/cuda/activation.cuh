// The gated MLP's activation, in the one form every kernel computes it (the SiLU·mul kernels and
// the fused GEMM epilogues), so that they agree bit for bit.
#pragma once

namespace blockinfer::cuda {

// SiLU(g) * u = g / (1 + e^-g) * u, in float32.
__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.f + __expf(-g)) * u; }

}  // namespace blockinfer::cuda
