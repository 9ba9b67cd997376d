// Per-head QK-norm and rotate-half RoPE, in place on the fused qkv rows, optionally fused with the
// KV write into pages, and the KV write alone.
#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/launchers.h"

namespace blockinfer::cuda {
namespace {

constexpr int kWarps = 8;

// f(i, e, d) for each element a lane holds of a head's first half: unit i (of U), element e (of V),
// at offset d; its partner in the second half is at d + head_dim / 2.
template <int V, int U, typename F>
__device__ __forceinline__ void for_lane_elements(int lane, int units, F&& f) {
#pragma unroll
  for (int i = 0; i < U; ++i) {
    if (lane + 32 * i >= units) continue;
#pragma unroll
    for (int e = 0; e < V; ++e) f(i, e, (lane + 32 * i) * V + e);
  }
}

// One warp per P consecutive (token, head) items over q, k and (when the KV write is fused) v
// heads. A lane holds up to U units of V consecutive elements from each half of a head (V = 2 when
// head_dim % 4 == 0, else 1; U covers head_dim / (2 V) over 32 lanes). Every global read comes
// first: the P heads, their tokens' positions and slots, and the lane's norm weights and
// frequencies, so a warp has them all in flight at once and the compute that follows waits on
// none (on an H100, P = 4 took SDAR-4B batch 128 from 18 to 16 us a layer in the engine; reading
// positions, slots and weights up front and sharing the sines and cosines of consecutive items of
// one token took bench_kernels' 640 rows from 15.2 to 13.7 us). Each head is normalised from
// registers, rotated and written back; k and v also go to the paged caches at the token's slot.
template <typename T, int V, int U, int P>
__global__ void __launch_bounds__(kWarps * 32)
k_qk_norm_rope(T* __restrict__ qkv,                 // [n, (H + 2 KV) * D]
               const int32_t* __restrict__ positions,  // [n]
               const T* __restrict__ q_norm_w,       // [D] or null
               const T* __restrict__ k_norm_w,       // [D] or null
               const float* __restrict__ inv_freq,   // [D / 2]
               const int32_t* __restrict__ slots,    // [n] or null: no KV write
               T* __restrict__ k_cache, T* __restrict__ v_cache,  // [slots, KV * D]
               int64_t n, int num_heads, int num_kv_heads, int head_dim, float eps) {
  const int heads = num_heads + num_kv_heads + (slots ? num_kv_heads : 0);
  const int64_t first = (blockIdx.x * int64_t{kWarps} + threadIdx.x / 32) * P;
  const int64_t items = n * heads;
  if (first >= items) return;
  const int lane = threadIdx.x % 32;
  const int half = head_dim / 2, units = half / V;
  const int64_t kv_width = int64_t{num_kv_heads} * head_dim;
  const int64_t row_width = int64_t{num_heads + 2 * num_kv_heads} * head_dim;
  float a[P][U][V], b[P][U][V];
  int32_t pos[P], slot[P];
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int64_t item = first + p;
    if (item >= items) continue;  // (not break: the loops stay unrolled, a and b in registers)
    const int64_t t = item / heads;
    const T* v = qkv + t * row_width + int64_t{static_cast<int>(item % heads)} * head_dim;
    pos[p] = positions[t];
    slot[p] = slots ? slots[t] : 0;
    for_lane_elements<V, U>(lane, units, [&](int i, int e, int d) {
      a[p][i][e] = to_f32(v[d]);
      b[p][i][e] = to_f32(v[d + half]);
    });
  }
  float freq[U][V], qw[U][V][2], kw[U][V][2];
  for_lane_elements<V, U>(lane, units, [&](int i, int e, int d) {
    freq[i][e] = inv_freq[d];
    qw[i][e][0] = q_norm_w ? to_f32(q_norm_w[d]) : 1.f;
    qw[i][e][1] = q_norm_w ? to_f32(q_norm_w[d + half]) : 1.f;
    kw[i][e][0] = k_norm_w ? to_f32(k_norm_w[d]) : 1.f;
    kw[i][e][1] = k_norm_w ? to_f32(k_norm_w[d + half]) : 1.f;
  });
  float sn[U][V], cs[U][V];
  int32_t trig_pos = -1;  // the position sn and cs hold
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int64_t item = first + p;
    if (item >= items) continue;
    const int64_t t = item / heads;
    const int h = static_cast<int>(item % heads);
    T* v = qkv + t * row_width + int64_t{h} * head_dim;
    if (h >= num_heads + num_kv_heads) {  // a v head: copied to the cache as is
      T* dst = v_cache + int64_t{slot[p]} * kv_width + int64_t{h - num_heads - num_kv_heads} * head_dim;
      for_lane_elements<V, U>(lane, units, [&](int i, int e, int d) {
        dst[d] = from_f32<T>(a[p][i][e]);
        dst[d + half] = from_f32<T>(b[p][i][e]);
      });
      continue;
    }
    const bool is_q = h < num_heads;
    const bool norm = (is_q ? q_norm_w : k_norm_w) != nullptr;
    float ss = 0.f;
    for_lane_elements<V, U>(lane, units,
                            [&](int i, int e, int) { ss += a[p][i][e] * a[p][i][e] + b[p][i][e] * b[p][i][e]; });
    const float inv_rms = norm ? rsqrtf(warp_sum(ss) / head_dim + eps) : 1.f;
    if (pos[p] != trig_pos) {  // warp-uniform
      trig_pos = pos[p];
      for_lane_elements<V, U>(lane, units, [&](int i, int e, int) {
        sincosf(static_cast<float>(trig_pos) * freq[i][e], &sn[i][e], &cs[i][e]);
      });
    }
    T* kdst = slots && !is_q ? k_cache + int64_t{slot[p]} * kv_width + int64_t{h - num_heads} * head_dim : nullptr;
    for_lane_elements<V, U>(lane, units, [&](int i, int e, int d) {
      float x = a[p][i][e], y = b[p][i][e];
      if (norm) {
        // The normalised value is stored in T before rotation, as the reference model does.
        const float wx = is_q ? qw[i][e][0] : kw[i][e][0], wy = is_q ? qw[i][e][1] : kw[i][e][1];
        x = to_f32(from_f32<T>(x * inv_rms * wx));
        y = to_f32(from_f32<T>(y * inv_rms * wy));
      }
      const T lo = from_f32<T>(x * cs[i][e] - y * sn[i][e]), hi = from_f32<T>(y * cs[i][e] + x * sn[i][e]);
      v[d] = lo;
      v[d + half] = hi;
      if (kdst) {
        kdst[d] = lo;
        kdst[d + half] = hi;
      }
    });
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
                         int64_t num_kv_heads, int64_t head_dim, float eps, DType dtype, int device,
                         const int32_t* slot_mapping, void* k_cache, void* v_cache) {
  if (n == 0) return;
  BI_CUDA_CHECK(cudaSetDevice(device));
  dispatch_float(dtype, "qk_norm_rope", [&](auto tag) {
    using T = decltype(tag);
    const int64_t items = n * (num_heads + num_kv_heads + (slot_mapping ? num_kv_heads : 0));
    auto go = [&](auto kernel, int per_warp) {
      kernel<<<ceil_div(items, int64_t{kWarps} * per_warp), kWarps * 32, 0, current_stream()>>>(
          static_cast<T*>(qkv), positions, static_cast<const T*>(q_norm_w), static_cast<const T*>(k_norm_w),
          inv_freq, slot_mapping, static_cast<T*>(k_cache), static_cast<T*>(v_cache), n,
          static_cast<int>(num_heads), static_cast<int>(num_kv_heads), static_cast<int>(head_dim), eps);
      BI_CUDA_CHECK_LAUNCH();
    };
    // Units of V elements per half head, over 32 lanes: heads up to 128 (V = 2) take one unit per
    // lane, larger ones up to 1,024 (checked by the op) up to 8 (16 for V = 1). Big batches (enough
    // items for 32 warps per multiprocessor at four heads a warp) put four heads in a warp; small
    // ones keep one, for more warps in flight.
    const int64_t units = head_dim % 4 == 0 ? head_dim / 4 : head_dim / 2;
    const bool four = units <= 32 && items >= 4 * 32 * int64_t{multiprocessor_count(device)};
    if (head_dim % 4 == 0) {
      if (four) {
        go(k_qk_norm_rope<T, 2, 1, 4>, 4);
      } else if (units <= 32) {
        go(k_qk_norm_rope<T, 2, 1, 1>, 1);
      } else {
        go(k_qk_norm_rope<T, 2, 8, 1>, 1);
      }
    } else if (four) {
      go(k_qk_norm_rope<T, 1, 1, 4>, 4);
    } else {
      go(k_qk_norm_rope<T, 1, 16, 1>, 1);
    }
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
