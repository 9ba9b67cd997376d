// Check macros for every CUDA runtime call and every kernel launch, and small helpers kernels share.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "blockinfer/status.h"

#define BI_CUDA_CHECK(expr)                                                                \
  do {                                                                                     \
    cudaError_t bi_err_ = (expr);                                                          \
    if (bi_err_ != cudaSuccess)                                                            \
      throw ::blockinfer::CudaError(::blockinfer::str_cat(#expr, " failed at ", __FILE__, \
                                                          ":", __LINE__, ": ",            \
                                                          cudaGetErrorString(bi_err_)));   \
  } while (0)

namespace blockinfer::cuda {
// The stream every kernel, GEMM and copy of a device runs on (one per device, created on first
// use). A blocking stream, so legacy-stream work stays ordered with it; CUDA graphs capture it.
cudaStream_t current_stream();
// Lets `kernel` launch with `bytes` of dynamic shared memory on `device` (raises its limit with
// cudaFuncSetAttribute the first time a larger size is asked for; cached per kernel and device).
void allow_dynamic_smem(const void* kernel, size_t bytes, int device);
// Whether p sits on a 16-byte boundary (TMA operands, 16-byte vector accesses).
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
// x / d and x % d (x >= 0): a shift and a mask where d = 2^shift, else integer divisions (about
// twenty instructions each). Kernels take `shift` from their launcher, log2_if_pow2(d) (-1 where d
// is not a power of two; core/pow2.h), so the choice is uniform.
__device__ __forceinline__ int div_by(int x, int d, int shift) { return shift >= 0 ? x >> shift : x / d; }
__device__ __forceinline__ int mod_by(int x, int d, int shift) { return shift >= 0 ? x & (d - 1) : x % d; }
}  // namespace blockinfer::cuda

// After every <<<...>>>: catches bad launch configurations immediately.
#define BI_CUDA_CHECK_LAUNCH() BI_CUDA_CHECK(cudaGetLastError())
