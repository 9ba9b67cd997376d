// One instantiation of the CUTLASS gate_up + SiLU·mul GEMM (gemm_cutlass.cuh), in a file of its own
// so that the two 16-bit types compile in parallel.
#if BLOCKINFER_WITH_CUTLASS
#include "kernels/cuda/gemm_cutlass.cuh"

namespace blockinfer::cuda::cutlass_gemm {
void silu_mul_f16(const void* x, const void* w, void* out, int m, int n, int k, int device) {
  run_silu_mul<cutlass::half_t>(x, w, out, m, n, k, device);
}
}  // namespace blockinfer::cuda::cutlass_gemm
#endif
