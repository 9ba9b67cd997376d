// RMSNorm, optionally fused with the residual add, for fp32/bf16/fp16 storage.
// One block per row; fp32 accumulation. The sum of squares is reduced with warp shuffles and a
// shared-memory pass, so the result differs from the CPU reference only by summation order.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/rmsnorm.h"

namespace blockinfer::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void k_rmsnorm(const T* __restrict__ x,  // [num_rows, hidden] (row stride x_stride)
                          T* __restrict__ residual,  // [num_rows, hidden] or null
                          const T* __restrict__ weight,  // [hidden]
                          T* __restrict__ out,  // [num_rows, hidden]
                          int64_t hidden, int64_t x_stride, float eps) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * x_stride;
  T* rr = residual ? residual + row * hidden : nullptr;
  float sum_sq = 0.f;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    float v = to_f32(xr[i]);
    if (rr) {
      v += to_f32(rr[i]);
      // The residual stream is stored in T: round once, and normalise the rounded value so the
      // next layer sees exactly what is stored.
      T stored = from_f32<T>(v);
      rr[i] = stored;
      v = to_f32(stored);
    }
    sum_sq += v * v;
  }
  sum_sq = warp_sum(sum_sq);
  __shared__ float warp_sums[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = sum_sq;
  __syncthreads();
  if (warp == 0) {
    float s = lane < blockDim.x / 32 ? warp_sums[lane] : 0.f;
    s = warp_sum(s);
    if (lane == 0) warp_sums[0] = s;
  }
  __syncthreads();
  const float inv_rms = rsqrtf(warp_sums[0] / static_cast<float>(hidden) + eps);
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    float v = rr ? to_f32(rr[i]) : to_f32(xr[i]);
    out[row * hidden + i] = from_f32<T>(v * inv_rms * to_f32(weight[i]));
  }
}

template <typename T>
void launch_typed(const RmsNormArgs& a) {
  if (a.num_rows == 0) return;
  k_rmsnorm<T><<<static_cast<unsigned>(a.num_rows), kThreads, 0, current_stream()>>>(
      static_cast<const T*>(a.x), static_cast<T*>(a.residual), static_cast<const T*>(a.weight),
      static_cast<T*>(a.out), a.hidden, a.x_row_stride, a.eps);
  BI_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_rmsnorm(const RmsNormArgs& a) {
  BI_CUDA_CHECK(cudaSetDevice(a.device_index));
  dispatch_float(a.dtype, "rmsnorm", [&](auto tag) { launch_typed<decltype(tag)>(a); });
}

}  // namespace blockinfer::cuda
