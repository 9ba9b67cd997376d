// out[m, n] = x[m, k] @ w[n, k]^T for few rows (m <= kMaxRows): a batch-1 or small-batch
// forward, where the GEMM is a weight read and cuBLASLt's tiles leave most of the bandwidth
// unused. Each warp owns output columns; its lanes stream the column's weight row with 16-byte
// loads (several in flight per lane), multiply with the m rows of x (read through L1/L2: x is tiny
// next to w), and reduce across the warp at the end. Every weight byte is read exactly once.
#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/launchers.h"

namespace blockinfer::cuda {
namespace {

constexpr int kMaxRows = 16;
constexpr int kWarps = 8;

template <typename T>
struct Vec {  // 16 bytes of T
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

template <typename T, typename TOut>
__global__ void __launch_bounds__(kWarps * 32)
k_gemm_skinny(const T* __restrict__ x,  // [m, k]
              const T* __restrict__ w,  // [n, k]
              TOut* __restrict__ out,   // [m, n]
              int m, int64_t n, int64_t k) {
  using V = Vec<T>;
  constexpr int kN = V::kN;
  const int lane = threadIdx.x % 32;
  const int64_t warp = blockIdx.x * int64_t{kWarps} + threadIdx.x / 32;
  const int64_t num_warps = int64_t{gridDim.x} * kWarps;
  const int64_t kv = k / kN;  // 16-byte vectors per row
  for (int64_t col = warp; col < n; col += num_warps) {
    const V* wr = reinterpret_cast<const V*>(w + col * k);
    float acc[kMaxRows];
#pragma unroll
    for (int r = 0; r < kMaxRows; ++r) acc[r] = 0.f;
#pragma unroll 4
    for (int64_t i = lane; i < kv; i += 32) {
      const V wv = wr[i];
      float wf[kN];
#pragma unroll
      for (int e = 0; e < kN; ++e) wf[e] = to_f32(wv.v[e]);
#pragma unroll
      for (int r = 0; r < kMaxRows; ++r) {
        if (r >= m) break;
        const V xv = reinterpret_cast<const V*>(x + int64_t{r} * k)[i];
#pragma unroll
        for (int e = 0; e < kN; ++e) acc[r] += wf[e] * to_f32(xv.v[e]);
      }
    }
#pragma unroll
    for (int r = 0; r < kMaxRows; ++r) {
      if (r >= m) break;
      const float s = warp_sum(acc[r]);
      if (lane == 0) out[int64_t{r} * n + col] = from_f32<TOut>(s);
    }
  }
}

}  // namespace

bool gemm_skinny_applies(const void* x, const void* w, int64_t m, int64_t k, DType dtype) {
  const int64_t per_vec = 16 / static_cast<int64_t>(dtype_size(dtype));
  return m >= 1 && m <= kMaxRows && k % per_vec == 0 &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
}

void launch_gemm_skinny(const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k,
                        DType dtype, DType out_dtype, int device) {
  static int sms[64] = {0};
  if (!sms[device]) BI_CUDA_CHECK(cudaDeviceGetAttribute(&sms[device], cudaDevAttrMultiProcessorCount, device));
  const int64_t blocks = std::min<int64_t>((n + kWarps - 1) / kWarps, int64_t{sms[device]} * 8);
  dispatch_float(dtype, "gemm_skinny", [&](auto tag) {
    using T = decltype(tag);
    if (out_dtype == DType::kFloat32) {
      k_gemm_skinny<T, float><<<static_cast<unsigned>(blocks), kWarps * 32>>>(
          static_cast<const T*>(x), static_cast<const T*>(w), static_cast<float*>(out), static_cast<int>(m), n, k);
    } else {
      k_gemm_skinny<T, T><<<static_cast<unsigned>(blocks), kWarps * 32>>>(
          static_cast<const T*>(x), static_cast<const T*>(w), static_cast<T*>(out), static_cast<int>(m), n, k);
    }
    BI_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace blockinfer::cuda
