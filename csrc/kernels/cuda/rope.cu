// Per-head QK-norm and rotate-half RoPE, in place on the fused qkv rows, and the KV write into
// pages. One warp per (token, head): the head's D elements are spread over the 32 lanes.
#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/launchers.h"

namespace blockinfer::cuda {
namespace {

constexpr int kWarps = 4;

template <typename T>
__global__ void k_qk_norm_rope(T* __restrict__ qkv,                 // [n, (H + 2 KV) * D]
                               const int32_t* __restrict__ positions,  // [n]
                               const T* __restrict__ q_norm_w,       // [D] or null
                               const T* __restrict__ k_norm_w,       // [D] or null
                               const float* __restrict__ inv_freq,   // [D / 2]
                               int64_t n, int num_heads, int num_kv_heads, int head_dim, float eps) {
  const int heads = num_heads + num_kv_heads;  // v is not rotated
  const int64_t item = blockIdx.x * int64_t{kWarps} + threadIdx.x / 32;
  if (item >= n * heads) return;
  const int lane = threadIdx.x % 32;
  const int64_t t = item / heads;
  const int h = static_cast<int>(item % heads);
  T* v = qkv + t * int64_t{num_heads + 2 * num_kv_heads} * head_dim + int64_t{h} * head_dim;
  const T* w = h < num_heads ? q_norm_w : k_norm_w;
  const int half = head_dim / 2;
  float inv_rms = 1.f;
  if (w) {
    float ss = 0.f;
    for (int d = lane; d < head_dim; d += 32) {
      const float x = to_f32(v[d]);
      ss += x * x;
    }
    inv_rms = rsqrtf(warp_sum(ss) / head_dim + eps);
  }
  const float pos = static_cast<float>(positions[t]);
  // Each lane rotates pairs (d, d + half); reads of a pair happen before its writes.
  for (int d = lane; d < half; d += 32) {
    float a = to_f32(v[d]), b = to_f32(v[d + half]);
    if (w) {
      // The normalised value is stored in T before rotation, as the reference model does.
      a = to_f32(from_f32<T>(a * inv_rms * to_f32(w[d])));
      b = to_f32(from_f32<T>(b * inv_rms * to_f32(w[d + half])));
    }
    float s, c;
    sincosf(pos * inv_freq[d], &s, &c);
    v[d] = from_f32<T>(a * c - b * s);
    v[d + half] = from_f32<T>(b * c + a * s);
  }
}

template <typename T>
__global__ void k_kv_write(const T* __restrict__ qkv,            // [n, (H + 2 KV) * D]
                           const int32_t* __restrict__ slots,     // [n]
                           T* __restrict__ k_cache,               // [pages * page_size, KV * D]
                           T* __restrict__ v_cache, int64_t n, int num_heads, int num_kv_heads,
                           int head_dim) {
  const int64_t width = int64_t{num_kv_heads} * head_dim;
  const int64_t total = n * width;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / width, c = i % width;
    const T* row = qkv + t * (int64_t{num_heads + 2 * num_kv_heads} * head_dim);
    const int64_t slot = slots[t];
    k_cache[slot * width + c] = row[int64_t{num_heads} * head_dim + c];
    v_cache[slot * width + c] = row[int64_t{num_heads + num_kv_heads} * head_dim + c];
  }
}

}  // namespace

void launch_qk_norm_rope(void* qkv, const int32_t* positions, const void* q_norm_w,
                         const void* k_norm_w, const float* inv_freq, int64_t n, int64_t num_heads,
                         int64_t num_kv_heads, int64_t head_dim, float eps, DType dtype, int device) {
  if (n == 0) return;
  BI_CUDA_CHECK(cudaSetDevice(device));
  dispatch_float(dtype, "qk_norm_rope", [&](auto tag) {
    using T = decltype(tag);
    const int64_t items = n * (num_heads + num_kv_heads);
    k_qk_norm_rope<T><<<ceil_div(items, kWarps), kWarps * 32, 0, current_stream()>>>(
        static_cast<T*>(qkv), positions, static_cast<const T*>(q_norm_w),
        static_cast<const T*>(k_norm_w), inv_freq, n, static_cast<int>(num_heads),
        static_cast<int>(num_kv_heads), static_cast<int>(head_dim), eps);
    BI_CUDA_CHECK_LAUNCH();
  });
}

void launch_kv_write(const void* qkv, const int32_t* slot_mapping, void* k_cache, void* v_cache,
                     int64_t n, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                     DType dtype, int device) {
  if (n == 0) return;
  BI_CUDA_CHECK(cudaSetDevice(device));
  dispatch_float(dtype, "kv_write", [&](auto tag) {
    using T = decltype(tag);
    const int64_t total = n * num_kv_heads * head_dim;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 65535 * 8));
    k_kv_write<T><<<blocks, 256, 0, current_stream()>>>(static_cast<const T*>(qkv), slot_mapping, static_cast<T*>(k_cache),
                                   static_cast<T*>(v_cache), n, static_cast<int>(num_heads),
                                   static_cast<int>(num_kv_heads), static_cast<int>(head_dim));
    BI_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace blockinfer::cuda
