// Per-head QK-norm and rotate-half RoPE, in place on the fused qkv rows, optionally fused with the
// KV write into pages, and the KV write alone.
#include "core/pow2.h"
#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/launchers.h"

namespace blockinfer::cuda {
namespace {

constexpr int kRowThreads = 128;
// Units a thread takes when it takes several: 16-byte units, and single elements (a head of up to
// 512 units then fits a CTA).
constexpr int kManyVec = 3, kManyScalar = 4;
// The widest head's first half: single-element units, kManyScalar a thread.
constexpr int kMaxHalf = kManyScalar * kRowThreads;

// W consecutive elements of T, loaded and stored as one access.
template <typename T, int W>
struct alignas(sizeof(T) * W) Pack {
  T v[W];
};

// One CTA per (token row, part of its heads). A head is cut into units: W consecutive elements of
// its first half and their W partners in the second half (rotate-half pairs element d with
// d + head_dim / 2), so one thread holds both operands of each rotation; W is 16 bytes of T, 2 or 1
// (the launcher's choice). Thread t takes units t, t + 128, ... of the part (at most J), every
// load issued before any math. A head's sum of squares is added over its units in a fixed order
// (below), then each unit normalises its elements (stored in T before the rotation, as the
// reference model does), rotates them and writes them back; k heads also go to the k cache at the
// token's slot, and v heads are copied to the v cache. The sines and cosines depend only on the
// row's position and the offset in a head's first half: the CTA computes each once into shared
// memory while its loads are in flight (a thread computing its own units' had put 8 sincosf
// behind every 16-byte unit: the kernel is bound by each warp's chain of instructions, and on an
// H100 640 rows of SDAR-4B went from 8.8-9.0 to 7.6-7.7 us).
// (It replaced a warp per one or four (token, head) items, two elements a lane: on an H100, 640
// rows of SDAR-4B took 13.8 us there and 9.2 here, 4 rows 4.0 and 4.1.)
template <typename T, int W, int J>
__global__ void __launch_bounds__(kRowThreads, J == 1 ? 4 : 5)
k_qk_norm_rope(T* __restrict__ qkv,                 // [n, (H + 2 KV) * D]
               const int32_t* __restrict__ positions,  // [n]
               const T* __restrict__ q_norm_w,       // [D] or null
               const T* __restrict__ k_norm_w,       // [D] or null
               const float* __restrict__ inv_freq,   // [D / 2]
               const int32_t* __restrict__ slots,    // [n] or null: no KV write
               T* __restrict__ k_cache, T* __restrict__ v_cache,  // [slots, KV * D]
               int num_heads, int num_kv_heads, int head_dim, int heads_per_part, float eps, int unit_shift) {
  using P = Pack<T, W>;
  __shared__ float unit_ss[J * kRowThreads];  // heads of units not a power of two, or of whole warps
  __shared__ float trig_s[2][kMaxHalf];       // the row's cosines [0] and sines [1] by offset
  const int64_t t = blockIdx.x;
  const int half = head_dim / 2, per_head = half / W;
  // A head's units: a power of two (unit_shift >= 0, the launcher's log2 of per_head; uniform over
  // the CTA, as every branch below) maps a unit to its head and offset by a shift and a mask, not
  // by integer divisions (in a kernel bound by its warps' chains).
  const bool pow2 = unit_shift >= 0;
  auto head_of = [&](int u) { return div_by(u, per_head, unit_shift); };
  auto unit_in_head = [&](int u) { return mod_by(u, per_head, unit_shift); };
  const int heads = num_heads + num_kv_heads + (slots ? num_kv_heads : 0);
  const int h0 = static_cast<int>(blockIdx.y) * heads_per_part;
  const int units = (min(heads, h0 + heads_per_part) - h0) * per_head;
  const int64_t kv_width = int64_t{num_kv_heads} * head_dim;
  T* row = qkv + t * (int64_t{num_heads + 2 * num_kv_heads} * head_dim);
  const int32_t pos = positions[t];
  const int64_t slot = slots ? slots[t] : 0;
  P a[J], b[J];
#pragma unroll
  for (int j = 0; j < J; ++j) {
    const int u = static_cast<int>(threadIdx.x) + j * kRowThreads;
    if (u >= units) continue;  // (not break: the loops stay unrolled, a and b in registers)
    const T* src = row + int64_t{h0 + head_of(u)} * head_dim + unit_in_head(u) * W;
    a[j] = *reinterpret_cast<const P*>(src);
    b[j] = *reinterpret_cast<const P*>(src + half);
  }
  // The row's cosines and sines, one per offset in a head's first half, into shared memory while the
  // loads are in flight: each is computed once for the CTA, not once for each thread of its offset.
  for (int i = static_cast<int>(threadIdx.x); i < half; i += kRowThreads)
    sincosf(static_cast<float>(pos) * inv_freq[i], &trig_s[1][i], &trig_s[0][i]);
  __syncthreads();
  // Each head's sum of squares (all heads: v heads ignore theirs).
  float ss[J];
#pragma unroll
  for (int j = 0; j < J; ++j) {
    ss[j] = 0.f;
    if (static_cast<int>(threadIdx.x) + j * kRowThreads >= units) continue;
#pragma unroll
    for (int e = 0; e < W; ++e) {
      const float x = to_f32(a[j].v[e]), y = to_f32(b[j].v[e]);
      ss[j] += x * x + y * y;
    }
  }
  // A power-of-two head's units are lanes of one warp (up to 32: an xor butterfly over them) or
  // whole warps; `group` units (a power of two) share a partial, and a head of more adds its
  // partials in order.
  const int group = pow2 ? min(per_head, 32) : 1, group_shift = __ffs(group) - 1;
#pragma unroll
  for (int j = 0; j < J; ++j)
    for (int off = group / 2; off > 0; off >>= 1) ss[j] += __shfl_xor_sync(0xffffffffu, ss[j], off);
  if (group < per_head) {
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int u = static_cast<int>(threadIdx.x) + j * kRowThreads;
      if ((u & (group - 1)) == 0 && u < units) unit_ss[u >> group_shift] = ss[j];
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int u = static_cast<int>(threadIdx.x) + j * kRowThreads;
      if (u >= units) continue;
      float sum = 0.f;
      for (int i = (u - unit_in_head(u)) >> group_shift, end = i + (per_head >> group_shift); i < end; ++i)
        sum += unit_ss[i];
      ss[j] = sum;
    }
  }
#pragma unroll
  for (int j = 0; j < J; ++j) {
    const int u = static_cast<int>(threadIdx.x) + j * kRowThreads;
    if (u >= units) continue;
    const int h = h0 + head_of(u), d = unit_in_head(u) * W;
    if (h >= num_heads + num_kv_heads) {  // a v head: copied to the cache as is
      T* dst = v_cache + slot * kv_width + int64_t{h - num_heads - num_kv_heads} * head_dim + d;
      *reinterpret_cast<P*>(dst) = a[j];
      *reinterpret_cast<P*>(dst + half) = b[j];
      continue;
    }
    const bool is_q = h < num_heads;
    const T* w = is_q ? q_norm_w : k_norm_w;
    float inv_rms = 1.f;
    P wx{}, wy{};
    if (w) {
      inv_rms = rsqrtf(ss[j] / head_dim + eps);
      wx = *reinterpret_cast<const P*>(w + d);
      wy = *reinterpret_cast<const P*>(w + d + half);
    }
    P lo, hi;
#pragma unroll
    for (int e = 0; e < W; ++e) {
      float x = to_f32(a[j].v[e]), y = to_f32(b[j].v[e]);
      if (w) {
        x = to_f32(from_f32<T>(x * inv_rms * to_f32(wx.v[e])));
        y = to_f32(from_f32<T>(y * inv_rms * to_f32(wy.v[e])));
      }
      const float cs = trig_s[0][d + e], sn = trig_s[1][d + e];
      lo.v[e] = from_f32<T>(x * cs - y * sn);
      hi.v[e] = from_f32<T>(y * cs + x * sn);
    }
    T* dst = row + int64_t{h} * head_dim + d;
    *reinterpret_cast<P*>(dst) = lo;
    *reinterpret_cast<P*>(dst + half) = hi;
    if (slots && !is_q) {
      T* k = k_cache + slot * kv_width + int64_t{h - num_heads} * head_dim + d;
      *reinterpret_cast<P*>(k) = lo;
      *reinterpret_cast<P*>(k + half) = hi;
    }
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
    constexpr int kVec = 16 / sizeof(T);
    auto aligned = [](const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; };
    auto fits = [&](int64_t w) {  // units of w elements: head_dim / 2 in whole units, every pointer aligned
      const size_t bytes = static_cast<size_t>(w) * sizeof(T);
      return (head_dim / 2) % w == 0 && aligned(qkv, bytes) && aligned(q_norm_w, bytes) &&
             aligned(k_norm_w, bytes) && aligned(k_cache, bytes) && aligned(v_cache, bytes);
    };
    const int64_t half = head_dim / 2, heads = num_heads + num_kv_heads + (slot_mapping ? num_kv_heads : 0);
    // Many rows (two CTAs per multiprocessor at kManyVec units a thread): 16-byte units, up to
    // kManyVec a thread (a whole row of SDAR's heads in one CTA; one unit a thread, three CTAs a
    // row, measured no faster in the engine). Few rows: units of two elements, one a thread (a
    // 128-wide head is a warp), so that the rows spread over many CTAs (when each thread computed
    // its own sines and cosines, 16-byte units took SDAR-4B's 4-row call from 4.8 to 6.6 us on an
    // H100); 16-byte units again for heads over 256 wide. Else single elements, several a thread
    // when a head has more units than a CTA has threads.
    const bool many = fits(kVec) && n * ceil_div(heads, kManyVec * kRowThreads / (half / kVec)) >=
                                        2 * int64_t{multiprocessor_count(device)};
    const bool pairs = !many && fits(2) && half / 2 <= kRowThreads;
    const bool wide = many || (!pairs && fits(kVec));
    const int64_t w = wide ? kVec : pairs ? 2 : 1, per_head = half / w;  // units a head: at most 512
    const int64_t per_thread = wide ? kManyVec : per_head > kRowThreads ? kManyScalar : 1;
    const int64_t heads_per_part = per_thread * kRowThreads / per_head;
    const dim3 grid(static_cast<unsigned>(n), ceil_div(heads, heads_per_part));
    const int unit_shift = log2_if_pow2(per_head);
    auto go = [&](auto kernel) {
      kernel<<<grid, kRowThreads, 0, current_stream()>>>(
          static_cast<T*>(qkv), positions, static_cast<const T*>(q_norm_w), static_cast<const T*>(k_norm_w),
          inv_freq, slot_mapping, static_cast<T*>(k_cache), static_cast<T*>(v_cache), static_cast<int>(num_heads),
          static_cast<int>(num_kv_heads), static_cast<int>(head_dim), static_cast<int>(heads_per_part), eps,
          unit_shift);
      BI_CUDA_CHECK_LAUNCH();
    };
    if (wide) {
      go(k_qk_norm_rope<T, kVec, kManyVec>);
    } else if (pairs) {
      go(k_qk_norm_rope<T, 2, 1>);
    } else if (per_thread == 1) {
      go(k_qk_norm_rope<T, 1, 1>);
    } else {
      go(k_qk_norm_rope<T, 1, kManyScalar>);
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
