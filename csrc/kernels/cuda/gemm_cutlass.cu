// The CUTLASS-built gate_up + SiLU·mul GEMM's entry point (gemm_cutlass.cuh holds the kernel).
// Without the nvidia-cutlass headers at build time (BLOCKINFER_WITH_CUTLASS off) it never serves.
#include <cstdint>

#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/launchers.h"

namespace blockinfer::cuda {
#if BLOCKINFER_WITH_CUTLASS && BLOCKINFER_WGMMA
namespace cutlass_gemm {
void silu_mul_bf16(const void* x, const void* w, void* out, int m, int n, int k, int device);
void silu_mul_f16(const void* x, const void* w, void* out, int m, int n, int k, int device);
}  // namespace cutlass_gemm
#endif

bool gemm_cutlass_silu_mul_serves(DType dtype, int64_t inter, int64_t k, int device) {
#if BLOCKINFER_WITH_CUTLASS && BLOCKINFER_WGMMA
  if (dtype != DType::kBFloat16 && dtype != DType::kFloat16) return false;
  if (inter <= 0 || inter % 128 != 0 || k <= 0 || k % 8 != 0 || 2 * inter > (int64_t{1} << 30) || k > (int64_t{1} << 30))
    return false;
  if (device < 0 || device >= device_count()) return false;
  return compute_capability(device) == 90;
#else
  (void)dtype, (void)inter, (void)k, (void)device;
  return false;
#endif
}

void launch_gemm_cutlass_silu_mul(const void* x, const void* w, void* out, int64_t m, int64_t inter, int64_t k,
                                  DType dtype, int device) {
  BI_CHECK_ARG(gemm_cutlass_silu_mul_serves(dtype, inter, k, device), "gemm_cutlass silu_mul: does not serve ",
               dtype_name(dtype), " inter=", inter, " k=", k, " on device ", device);
  BI_CHECK_ARG(m <= (int64_t{1} << 30), "gemm_cutlass silu_mul: m=", m, " is too large");
  BI_CHECK_ARG(aligned16(x) && aligned16(w) && aligned16(out), "gemm_cutlass silu_mul: operands must be 16-byte aligned");
  if (m == 0) return;
#if BLOCKINFER_WITH_CUTLASS && BLOCKINFER_WGMMA
  BI_CUDA_CHECK(cudaSetDevice(device));
  const int mi = static_cast<int>(m), n = static_cast<int>(2 * inter), ki = static_cast<int>(k);
  if (dtype == DType::kBFloat16) cutlass_gemm::silu_mul_bf16(x, w, out, mi, n, ki, device);
  else cutlass_gemm::silu_mul_f16(x, w, out, mi, n, ki, device);
#endif
}

}  // namespace blockinfer::cuda
