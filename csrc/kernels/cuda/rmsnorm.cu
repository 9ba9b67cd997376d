// RMSNorm, optionally fused with the residual add, for fp32/bf16/fp16 storage.
// One block per row (16-byte vectors held in registers where the shape allows); fp32 accumulation. The sum of squares is reduced with warp shuffles and a
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

// The same with 16-byte vectors (hidden and the row stride multiples of the vector width) and
// the row kept in registers between the two passes: V vectors per thread at most. With V = 2
// (rows of up to 4,096 16-bit values, SDAR's) the weights are loaded with the row, so that no load
// waits behind the reduction (at V = 4 the registers that takes would cost a CTA per
// multiprocessor).
constexpr int kMaxVecs = 4;

template <typename T, int V>
__global__ void k_rmsnorm_vec(const T* __restrict__ x, T* __restrict__ residual, const T* __restrict__ weight,
                              T* __restrict__ out, int64_t hidden, int64_t x_stride, float eps) {
  constexpr int kVec = 16 / sizeof(T);
  struct alignas(16) Vec {
    T v[kVec];
  };
  const int64_t row = blockIdx.x;
  const int vecs = static_cast<int>(hidden / kVec);
  constexpr bool kEarlyWeights = V <= 2;
  const Vec* xr = reinterpret_cast<const Vec*>(x + row * x_stride);
  Vec* rr = residual ? reinterpret_cast<Vec*>(residual + row * hidden) : nullptr;
  const Vec* wr = reinterpret_cast<const Vec*>(weight);
  float v[V][kVec];
  Vec wv[V];
  float sum_sq = 0.f;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int i = threadIdx.x + j * kThreads;
    if (i >= vecs) break;
    if (kEarlyWeights) wv[j] = wr[i];
    const Vec a = xr[i];
    Vec r;
    if (rr) r = rr[i];
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      float f = to_f32(a.v[e]);
      if (rr) {
        const T stored = from_f32<T>(f + to_f32(r.v[e]));  // the stored residual, rounded once
        r.v[e] = stored;
        f = to_f32(stored);
      }
      v[j][e] = f;
      sum_sq += f * f;
    }
    if (rr) rr[i] = r;
  }
  sum_sq = warp_sum(sum_sq);
  __shared__ float warp_sums[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = sum_sq;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  const float inv_rms = rsqrtf(total / static_cast<float>(hidden) + eps);
  Vec* o = reinterpret_cast<Vec*>(out + row * hidden);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int i = threadIdx.x + j * kThreads;
    if (i >= vecs) break;
    if (!kEarlyWeights) wv[j] = wr[i];
    Vec r;
#pragma unroll
    for (int e = 0; e < kVec; ++e) r.v[e] = from_f32<T>(v[j][e] * inv_rms * to_f32(wv[j].v[e]));
    o[i] = r;
  }
}

template <typename T>
void launch_typed(const RmsNormArgs& a) {
  if (a.num_rows == 0) return;
  constexpr int kVec = 16 / sizeof(T);
  const bool vec = a.hidden % kVec == 0 && a.x_row_stride % kVec == 0 && a.hidden <= kMaxVecs * kThreads * kVec &&
                   (reinterpret_cast<uintptr_t>(a.x) | reinterpret_cast<uintptr_t>(a.residual) |
                    reinterpret_cast<uintptr_t>(a.weight) | reinterpret_cast<uintptr_t>(a.out)) % 16 == 0;
  auto go = [&](auto kernel) {
    kernel<<<static_cast<unsigned>(a.num_rows), kThreads, 0, current_stream()>>>(
        static_cast<const T*>(a.x), static_cast<T*>(a.residual), static_cast<const T*>(a.weight),
        static_cast<T*>(a.out), a.hidden, a.x_row_stride, a.eps);
  };
  if (vec && a.hidden <= 2 * kThreads * kVec)
    go(k_rmsnorm_vec<T, 2>);
  else if (vec)
    go(k_rmsnorm_vec<T, kMaxVecs>);
  else
    go(k_rmsnorm<T>);
  BI_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_rmsnorm(const RmsNormArgs& a) {
  BI_CUDA_CHECK(cudaSetDevice(a.device_index));
  dispatch_float(a.dtype, "rmsnorm", [&](auto tag) { launch_typed<decltype(tag)>(a); });
}

}  // namespace blockinfer::cuda
