// One type's instantiations of the CUTLASS GEMMs (gemm_cutlass.cuh): gate_up + SiLU·mul and the LM
// head's greedy statistics, in a file of its own so that the two 16-bit types compile in parallel.
#if BLOCKINFER_WITH_CUTLASS
#include "kernels/cuda/gemm_cutlass.cuh"

namespace blockinfer::cuda::cutlass_gemm {
void silu_mul_f16(const void* x, const void* w, void* out, int m, int n, int k, int device) {
  run_silu_mul<cutlass::half_t>(x, w, out, m, n, k, device);
}
void lm_head_stats_f16(const void* x, const void* w, void* partials, int m, int n, int k, int device) {
  run_lm_head_stats<cutlass::half_t>(x, w, partials, m, n, k, device);
}
}  // namespace blockinfer::cuda::cutlass_gemm
#endif
