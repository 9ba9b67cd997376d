// Block-causal paged attention over a ragged batch (the rule of kernels/cpu/attention.cc).
//
// Work is cut into tiles, planned on the host once per forward (ops::plan_attention): a tile is
// (sequence, a run of query rows) x one KV head x one split of the keys. The rows of a tile times
// the query heads of the KV head's GQA group are the tile's query items, so K and V are read once
// per tile and split for every head that shares them. Denoise steps have few query rows per
// sequence and long key ranges, so the keys are split over several CTAs (flash-decoding, runs of
// a fixed number of keys, so a row's result does not depend on the rest of the batch) and the
// partial results merged by log-sum-exp in a second kernel.
//
// Two kernels compute a tile:
// - k_attention_mma (bfloat16/float16, head_dim 64 or 128): tensor cores (mma.sync m16n8k16,
//   float32 accumulation), FlashAttention-2 style. Four warps own 16 query items each, held as
//   mma fragments in registers (or, for tiles of 16 or 32 items, 4 or 2 warps share 16 items and
//   split each chunk's keys, merging at the end); K and V chunks of 64 keys are staged into swizzled shared memory,
//   double-buffered (64 KiB for d = 128: up to three CTAs per SM, as registers allow), and read with ldmatrix. On sm_90 with
//   pages of a multiple of 16 keys, warp 0 stages a chunk by TMA copies (16 keys x 64 columns
//   each, landing on an mbarrier), which spends fewer instructions and less power than every
//   thread copying 16 bytes at a time (cp.async, the other pages' path);
//   the softmax is online in registers and P feeds the PV product from registers. Its wgmma form
//   (sm_90a, TMA, 64-item tiles: long prefills, where the plan chose a wide plan) computes S and
//   PV as warpgroup MMAs (wgmma m64n64k16 and m64n{D}k16), the queries and P from registers and K
//   and V straight from the staged chunks by shared-memory descriptors (V N-major), instead of
//   each warp's ldmatrix and mma.sync.
// - k_paged_attention (any dtype and head_dim; float32 is the exact mode): CUDA cores, one query
//   item per warp at a time, keys staged into shared memory as float.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <type_traits>
#include <utility>

#include "core/env_switch.h"
#include "core/pow2.h"
#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/hopper.cuh"
#include "kernels/cuda/launchers.h"

namespace blockinfer::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kKeysPerChunk = 32;
constexpr int kItemsPerTile = kCudaCoreItemsPerTile;  // query rows x group heads per CTA
constexpr int kMaxDimsPerLane = 8;  // head_dim <= 256

struct Tile {
  int32_t seq;
  int32_t row_begin;  // first query row (index into the batch)
  int32_t row_end;
};
static_assert(sizeof(Tile) == 3 * sizeof(int32_t), "tiles are uploaded as int32 triples");

// Keys [0, n) a query at `pos` sees: the sequence's keys up to the end of the query's block
// (block-causal, blocks of `bl` from `offset`, [0, offset) one block), or all of them (bl == 0).
__device__ __forceinline__ int visible_keys(int pos, int n_kv, int bl, int offset) {
  if (bl <= 0) return n_kv;
  const int end = pos < offset ? offset : offset + ((pos - offset) / bl + 1) * bl;
  return min(n_kv, end);
}

// The cache's pages: a key's slot is pages[key / size] * size + key % size. Power-of-two sizes (the
// engine's 16) take a shift: an integer division by a run-time value is tens of instructions, and
// the kernels look a slot up for every 16 bytes they copy.
struct PageGeometry {
  int size;
  int shift;  // log2(size), or -1 when size is not a power of two
  static PageGeometry of(int size) {
    int shift = -1;
    if ((size & (size - 1)) == 0)
      for (shift = 0; (1 << shift) < size; ++shift) {
      }
    return {size, shift};
  }
  __device__ __forceinline__ int64_t slot(const int32_t* __restrict__ pages, int key) const {
    const int pg = shift >= 0 ? key >> shift : key / size;
    return int64_t{pages[pg]} * size + (key - pg * size);
  }
};

template <typename T>
struct Vec16 {
  T v[16 / sizeof(T)];
};

template <typename T, int DPL>
__global__ void __launch_bounds__(kWarps * 32)
k_paged_attention(const T* __restrict__ qkv, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                  const int32_t* __restrict__ page_table, const int32_t* __restrict__ positions,
                  const int32_t* __restrict__ kv_len, const int32_t* __restrict__ block_len,
                  const int32_t* __restrict__ block_offset, const Tile* __restrict__ tiles, T* __restrict__ out,
                  float* __restrict__ part_o,    // [splits, num_tokens, H, D] (splits > 1)
                  float* __restrict__ part_lse,  // [splits, num_tokens, H]
                  int64_t num_tokens, int max_pages, PageGeometry page, int num_heads, int num_kv_heads,
                  int head_dim, int keys_per_split, float scale) {
  extern __shared__ float smem[];
  constexpr int kVec = 16 / sizeof(T);
  const int group = num_heads / num_kv_heads;
  const int dstride = head_dim + 1;  // padded: lanes reading different keys hit different banks
  float* q_s = smem;                                  // [kItemsPerTile, D]
  float* k_s = q_s + kItemsPerTile * head_dim;        // [kKeysPerChunk, D + 1]
  float* v_s = k_s + kKeysPerChunk * dstride;         // [kKeysPerChunk, D]

  const Tile tile = tiles[blockIdx.x];
  const int kvh = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rows = tile.row_end - tile.row_begin;
  const int items = rows * group;
  const int64_t qkv_width = int64_t{num_heads + 2 * num_kv_heads} * head_dim;
  const int64_t kv_width = int64_t{num_kv_heads} * head_dim;
  const int32_t* pages = page_table + int64_t{tile.seq} * max_pages;
  const int n_kv = kv_len[tile.seq], bl = block_len[tile.seq];
  const int offset = block_offset ? block_offset[tile.seq] : 0;

  // Stage the tile's queries (item = row * group + g, query head kvh * group + g).
  for (int i = threadIdx.x; i < items * head_dim; i += blockDim.x) {
    const int item = i / head_dim, d = i % head_dim;
    const int64_t row = tile.row_begin + item / group;
    const int h = kvh * group + item % group;
    q_s[i] = to_f32(qkv[row * qkv_width + int64_t{h} * head_dim + d]);
  }
  // Keys visible to the tile: up to the last row's block end (rows are in position order).
  auto visible = [&](int64_t row) { return visible_keys(positions[row], n_kv, bl, offset); };
  const int tile_keys = visible(tile.row_end - 1);
  const int k_begin = split * keys_per_split;
  const int k_end = min(tile_keys, k_begin + keys_per_split);

  constexpr int kItemsPerWarp = kItemsPerTile / kWarps;
  float acc[kItemsPerWarp][DPL];
  float m[kItemsPerWarp], l[kItemsPerWarp];
  int n_keys[kItemsPerWarp];
#pragma unroll
  for (int j = 0; j < kItemsPerWarp; ++j) {
    m[j] = -INFINITY;
    l[j] = 0.f;
    const int item = warp + j * kWarps;
    n_keys[j] = item < items ? visible(tile.row_begin + item / group) : 0;
#pragma unroll
    for (int e = 0; e < DPL; ++e) acc[j][e] = 0.f;
  }
  __syncthreads();

  for (int c0 = k_begin; c0 < k_end; c0 += kKeysPerChunk) {
    const int nc = min(kKeysPerChunk, k_end - c0);
    if (head_dim % kVec == 0) {
      // 16-byte loads, unrolled so that each thread has several in flight: the chunk costs about
      // one memory latency instead of one per element.
      const int vecs_per_row = head_dim / kVec;
#pragma unroll 4
      for (int i = threadIdx.x; i < nc * vecs_per_row; i += blockDim.x) {
        const int j = i / vecs_per_row, d = (i % vecs_per_row) * kVec;
        const int key = c0 + j;
        const int64_t off = page.slot(pages, key) * kv_width + int64_t{kvh} * head_dim + d;
        const Vec16<T> kv16 = *reinterpret_cast<const Vec16<T>*>(k_cache + off);
        const Vec16<T> vv16 = *reinterpret_cast<const Vec16<T>*>(v_cache + off);
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
          k_s[j * dstride + d + e] = to_f32(kv16.v[e]);
          v_s[j * head_dim + d + e] = to_f32(vv16.v[e]);
        }
      }
    } else {
      for (int i = threadIdx.x; i < nc * head_dim; i += blockDim.x) {
        const int j = i / head_dim, d = i % head_dim;
        const int key = c0 + j;
        const int64_t slot = page.slot(pages, key);
        k_s[j * dstride + d] = to_f32(k_cache[slot * kv_width + int64_t{kvh} * head_dim + d]);
        v_s[j * head_dim + d] = to_f32(v_cache[slot * kv_width + int64_t{kvh} * head_dim + d]);
      }
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kItemsPerWarp; ++j) {
      const int item = warp + j * kWarps;
      if (item >= items || c0 >= n_keys[j]) continue;  // warp-uniform
      const float* q = q_s + item * head_dim;
      const int key = c0 + lane;
      const bool valid = lane < nc && key < n_keys[j];
      float s = -INFINITY;
      if (valid) {
        float dot = 0.f;
        const float* kr = k_s + lane * dstride;
        for (int d = 0; d < head_dim; ++d) dot += q[d] * kr[d];
        s = dot * scale;
      }
      const float m_new = fmaxf(m[j], warp_max(s));
      const float alpha = __expf(m[j] - m_new);  // 0 on the first chunk (m = -inf)
      const float p = valid ? __expf(s - m_new) : 0.f;
      l[j] = l[j] * alpha + warp_sum(p);
      m[j] = m_new;
#pragma unroll
      for (int e = 0; e < DPL; ++e) acc[j][e] *= alpha;
      for (int jj = 0; jj < nc; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, p, jj);
#pragma unroll
        for (int e = 0; e < DPL; ++e) {
          const int d = lane * DPL + e;
          if (d < head_dim) acc[j][e] += pj * v_s[jj * head_dim + d];
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int j = 0; j < kItemsPerWarp; ++j) {
    const int item = warp + j * kWarps;
    if (item >= items) continue;
    const int64_t row = tile.row_begin + item / group;
    const int h = kvh * group + item % group;
    const float inv_l = l[j] > 0.f ? 1.f / l[j] : 0.f;
    if (splits == 1) {
#pragma unroll
      for (int e = 0; e < DPL; ++e) {
        const int d = lane * DPL + e;
        if (d < head_dim) out[row * num_heads * head_dim + int64_t{h} * head_dim + d] = from_f32<T>(acc[j][e] * inv_l);
      }
    } else {
      const int64_t base = (int64_t{split} * num_tokens + row) * num_heads + h;
#pragma unroll
      for (int e = 0; e < DPL; ++e) {
        const int d = lane * DPL + e;
        if (d < head_dim) part_o[base * head_dim + d] = acc[j][e] * inv_l;
      }
      if (lane == 0) part_lse[base] = l[j] > 0.f ? m[j] + __logf(l[j]) : -INFINITY;
    }
  }
}

// Combines the splits of each (row, head): out = sum_s w_s o_s with w_s = softmax over lse_s.
template <typename T>
__global__ void k_merge_splits(const float* __restrict__ part_o, const float* __restrict__ part_lse,
                               T* __restrict__ out, int64_t num_tokens, int num_heads, int head_dim,
                               int splits) {
  const int64_t rh = blockIdx.x;  // row * num_heads + head
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, part_lse[s * num_tokens * num_heads + rh]);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float num = 0.f, den = 0.f;
    for (int s = 0; s < splits; ++s) {
      const float lse = part_lse[s * num_tokens * num_heads + rh];
      if (lse == -INFINITY) continue;
      const float w = __expf(lse - mx);
      num += w * part_o[(s * num_tokens * num_heads + rh) * head_dim + d];
      den += w;
    }
    out[rh * head_dim + d] = from_f32<T>(den > 0.f ? num / den : 0.f);
  }
}

// ---- Tensor-core tiles ----------------------------------------------------------------------

constexpr int kMmaWarps = kMmaItemsPerTile / 16;  // each warp owns 16 query items
constexpr int kMmaWideGroups = kMmaWideItemsPerTile / (16 * kMmaWarps);  // 16-item groups a warp, wide tiles
constexpr int kMmaKeys = 64;                      // keys per staged chunk
// How far (log2 units) a score may exceed its row's running max m before the tensor-core kernel moves
// m and rescales its accumulators: P then stays at most 2^8, exact in bf16's and fp16's range.
constexpr float kLazyRescale = 8.f;

// 2^x with subnormal results flushed to zero (one MUFU.EX2; exp2f keeps subnormals at the cost of
// extra instructions around it). Softmax weights below 2^-126 of the row's largest do not matter.
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
// 16 bytes global -> shared, asynchronously; `valid` false writes zeros and reads nothing.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// c += a (16 x 16, row-major fragment) * b (16 x 8, column-major fragment), float32 accumulation.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}
// wgmma (sm_90a): d (64 x N, float32, the mma accumulator layout per warp, rows 16 w.. of warp w)
// += a (64 x 16, the registers of the mma A fragment per warp) * b (16 x N, by its shared-memory
// descriptor; kTransB 1: stored N-major). scale_d 0 ignores d's old values. Every warp of the
// warpgroup issues it; the results may be read after wgmma_commit_wait.
#define BI_WGMMA_A_REGS "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(kTransB)
template <typename T, int N, int kTransB>
__device__ __forceinline__ void wgmma_m64k16(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool bf16 = std::is_same_v<T, __nv_bfloat16>;
  if constexpr (N == 64 && bf16) BI_WGMMA_ASM("64", "bf16", BI_WGMMA_ACC32, BI_WGMMA_NUM32, "%37", "{%32, %33, %34, %35}, %36, p, 1, 1, %38", BI_WGMMA_A_REGS);
  else if constexpr (N == 64) BI_WGMMA_ASM("64", "f16", BI_WGMMA_ACC32, BI_WGMMA_NUM32, "%37", "{%32, %33, %34, %35}, %36, p, 1, 1, %38", BI_WGMMA_A_REGS);
  else if constexpr (bf16) BI_WGMMA_ASM("128", "bf16", BI_WGMMA_ACC64, BI_WGMMA_NUM64, "%69", "{%64, %65, %66, %67}, %68, p, 1, 1, %70", BI_WGMMA_A_REGS);
  else BI_WGMMA_ASM("128", "f16", BI_WGMMA_ACC64, BI_WGMMA_NUM64, "%69", "{%64, %65, %66, %67}, %68, p, 1, 1, %70", BI_WGMMA_A_REGS);
#else
  __trap();  // the launcher takes the wgmma form only for code built for sm_90a
#endif
}
#undef BI_WGMMA_A_REGS
// Element offset of (row, 16-byte chunk) in a staged [kMmaKeys, D] tile, held as halves of 64
// columns ([D / 64][kMmaKeys][64]) whose 128-byte rows are XOR-swizzled by the row in 16-byte units
// (the TMA's 128-byte swizzle): the 8 rows an ldmatrix reads at one chunk hit 8 different banks.
__device__ __forceinline__ int swz(int row, int chunk) {
  return (chunk >> 3) * (kMmaKeys * 64) + row * 64 + (((chunk & 7) ^ (row & 7)) << 3);
}
// The same for a wide tile's queries staged as [D / 64][kMmaWideItemsPerTile][64].
__device__ __forceinline__ int qswz(int item, int chunk) {
  return (chunk >> 3) * (kMmaWideItemsPerTile * 64) + item * 64 + (((chunk & 7) ^ (item & 7)) << 3);
}
// Wide tiles' queries sit in shared memory past the K/V buffers and their mbarriers.
template <typename T, int D>
constexpr int kQueryOffset = 4 * kMmaKeys * D * static_cast<int>(sizeof(T)) + 1024;

// Scales an mma accumulator's rows: elements 0 and 1 of each n8 tile are the thread's row g, 2 and
// 3 its row g + 8 (the online softmax's correction, and the key-split merge's weights).
template <int N>
__device__ __forceinline__ void scale_rows(float (&o)[N][4], float lo, float hi) {
#pragma unroll
  for (int n = 0; n < N; ++n) {
    o[n][0] *= lo;
    o[n][1] *= lo;
    o[n][2] *= hi;
    o[n][3] *= hi;
  }
}

// KS warps share each 16 query items, each taking a KW-key slice of every chunk, and merge their
// softmax states through shared memory at the end (KS = 1: every warp owns 16 items and all 64
// keys of a chunk). A denoise tile has 16 or 32 query items (4 or 8 rows x a GQA group of 4): with
// KS = 1 one warp would do all the tile's math, serialised on one of the SM's four schedulers.
//
// kTma: the chunks come by TMA. tm_k and tm_v map the caches as [slots, KV, D] with boxes of
// `box_keys` keys x 64 columns; the launcher takes this path only where box_keys divides both 64
// and the page size (so a box never leaves its page) and every split starts at a multiple of 64.
//
// R: 16-item groups a warp owns (KS = 1 only). With R = 2 (wide tiles of 128 items) each K and V
// fragment a warp reads from shared memory feeds two MMAs, one per group, and each staged chunk
// serves twice the items. The queries are then staged in shared memory once and read as A
// fragments at every k-step, and a chunk's keys go through the softmax in steps of 16: two groups'
// query fragments, or S of more keys, in registers beside their O would spill (ptxas, sm_90a).
template <typename T, int D, int KS, bool kTma, int R = 1, bool kWg = false>
__global__ void __launch_bounds__(kMmaWarps * 32)
k_attention_mma(const T* __restrict__ qkv, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                const __grid_constant__ CUtensorMap tm_k, const __grid_constant__ CUtensorMap tm_v, int box_keys,
                const int32_t* __restrict__ page_table, const int32_t* __restrict__ positions,
                const int32_t* __restrict__ kv_len, const int32_t* __restrict__ block_len,
                const int32_t* __restrict__ block_offset, const Tile* __restrict__ tiles, T* __restrict__ out,
                float* __restrict__ part_o, float* __restrict__ part_lse, int64_t num_tokens, int max_pages,
                PageGeometry page, int num_heads, int num_kv_heads, int keys_per_split, float scale,
                bool keys_read_once, int group_shift) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  constexpr int KW = kMmaKeys / KS;  // keys of each chunk a warp takes
  constexpr int KH = R == 1 ? KW : 16;  // keys of one softmax step
  static_assert(kMmaWarps % KS == 0 && KH % 16 == 0, "key slices of whole k-steps");
  static_assert(R == 1 || KS == 1, "a warp with two item groups takes whole chunks");
  static_assert(!kWg || (R == 1 && KS == 1 && kTma), "the wgmma form: 64-item tiles, whole chunks, TMA");
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  T* k_s = reinterpret_cast<T*>(smem_raw);  // [2][kMmaKeys, D]
  T* v_s = k_s + 2 * kMmaKeys * D;          // [2][kMmaKeys, D]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
#if BI_HOPPER_TMA
  if (kTma && tid == 0) {  // the maps' descriptors are fetched while the tile's indices load
    prefetch_tensor_map(&tm_k);
    prefetch_tensor_map(&tm_v);
  }
#endif

  const Tile tile = tiles[blockIdx.x];
  const int kvh = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
  const int group = num_heads / num_kv_heads;
  // Item i is query head kvh * group + i % group of row i / group: a shift and a mask where the
  // group is a power of two (group_shift >= 0, uniform), not two integer divisions each time.
  auto row_of = [&](int item) { return div_by(item, group, group_shift); };
  auto head_of = [&](int item) { return kvh * group + mod_by(item, group, group_shift); };
  const int items = (tile.row_end - tile.row_begin) * group;
  const int64_t qkv_width = int64_t{num_heads + 2 * num_kv_heads} * D;
  const int64_t kv_width = int64_t{num_kv_heads} * D;
  const int32_t* pages = page_table + int64_t{tile.seq} * max_pages;
  const int n_kv = kv_len[tile.seq], bl = block_len[tile.seq];
  const int offset = block_offset ? block_offset[tile.seq] : 0;
  const int tile_keys = visible_keys(positions[tile.row_end - 1], n_kv, bl, offset);
  const int k_begin = split * keys_per_split;
  const int k_end = min(tile_keys, k_begin + keys_per_split);
  const int n_chunks = k_end > k_begin ? (k_end - k_begin + kMmaKeys - 1) / kMmaKeys : 0;

#if BI_HOPPER_TMA
  const uint32_t bars = smem_addr(v_s + 2 * kMmaKeys * D);  // an mbarrier a buffer, past the buffers
  if constexpr (kTma) {
    if (tid == 0) {
      mbar_init(bars);
      mbar_init(bars + 8);
      mbar_init_fence();
    }
    __syncthreads();
  }
#endif
  auto load_chunk = [&](int c0, int buf) {
    T* kb = k_s + buf * kMmaKeys * D;
    T* vb = v_s + buf * kMmaKeys * D;
    if constexpr (kTma) {
#if BI_HOPPER_TMA
      // Lane 0 of warp b % kMmaWarps copies box b, if it holds keys of the range: one box a warp
      // for the 16-key boxes of a 64-key chunk, so that the page lookups overlap and no warp
      // carries the chunk's copies alone (with warp 0 issuing all of them, a lone CTA's chunk
      // waited at its barrier for that warp). Warp 0 arrives on the buffer's mbarrier with the
      // chunk's bytes: a box that lands before that takes the transaction count below zero, and
      // the phase cannot complete before the arrival. Keys past the range in the last box are
      // whatever the page holds, and the rows past the last box whatever the buffer held: the
      // wait below zeroes their V rows (their P is 0, and 0 x NaN would not be).
      if (lane != 0) return;
      // (box_keys divides 64, so it is a power of two: a shift, not an integer division.)
      const int boxes = (min(kMmaKeys, k_end - c0) + box_keys - 1) >> (__ffs(box_keys) - 1);
      const uint32_t bar = bars + 8 * buf;
      if (warp == 0) mbar_expect(bar, static_cast<uint32_t>(boxes * box_keys * D * 2 * sizeof(T)));
      // Keys read by this CTA alone (keys_read_once: a denoise step's plan) come in evict-first, so
      // that the cache's stream through the L2 does not push out the activations around it.
      const uint64_t policy = keys_read_once ? evict_first_policy() : 0;
      for (int b = warp; b < boxes; b += kMmaWarps) {
        const int slot = static_cast<int>(page.slot(pages, c0 + b * box_keys));
#pragma unroll
        for (int h = 0; h < D / 64; ++h) {
          const int at = swz(b * box_keys, h * 8);
          if (keys_read_once) {
            tma_load_3d_hint(smem_addr(kb + at), &tm_k, h * 64, kvh, slot, bar, policy);
            tma_load_3d_hint(smem_addr(vb + at), &tm_v, h * 64, kvh, slot, bar, policy);
          } else {
            tma_load_3d(smem_addr(kb + at), &tm_k, h * 64, kvh, slot, bar);
            tma_load_3d(smem_addr(vb + at), &tm_v, h * 64, kvh, slot, bar);
          }
        }
      }
#else
      __trap();  // the launcher takes this path only for code built for sm_90 and later
#endif
    } else {
      for (int i = tid; i < kMmaKeys * kChunks; i += kMmaWarps * 32) {
        const int j = i / kChunks, c = i % kChunks, key = c0 + j;
        const bool valid = key < k_end;  // keys past the range are zeros (P is 0 there too)
        int64_t off = 0;
        if (valid) off = page.slot(pages, key) * kv_width + kvh * D + c * 8;
        cp_async16(smem_addr(kb + swz(j, c)), k_cache + off, valid);
        cp_async16(smem_addr(vb + swz(j, c)), v_cache + off, valid);
      }
    }
  };
  // Waits for chunk `it` (keys from c0) to land in buffer it & 1, visible to every thread.
  auto wait_chunk = [&](int it, int c0) {
    if constexpr (kTma) {
#if BI_HOPPER_TMA
      mbar_wait(bars + 8 * (it & 1), (it >> 1) & 1);
      if (c0 + kMmaKeys > k_end) {  // the range's last chunk: zero the V rows past it
        T* vb = v_s + (it & 1) * kMmaKeys * D;
        const int first = k_end - c0;
        for (int i = tid; i < (kMmaKeys - first) * kChunks; i += kMmaWarps * 32)
          *reinterpret_cast<uint4*>(vb + swz(first + i / kChunks, i % kChunks)) = make_uint4(0, 0, 0, 0);
        // wgmma reads shared memory through the async proxy: order these stores before it.
        if constexpr (kWg) asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();
      }
#endif
    } else {
      cp_async_commit();
      cp_async_wait<1>();  // chunk `it` has landed
      __syncthreads();
    }
  };
  if (n_chunks > 0) load_chunk(k_begin, 0);
  if constexpr (!kTma) cp_async_commit();

  // Shared-memory byte addresses of the buffers, and this lane's offsets into a staged tile for its
  // ldmatrix rows (see swz): K's at chunk lane / 8 of row lane % 8; V's at chunk (lane / 8) / 2 of
  // row ((lane / 8) & 1) * 8 + lane % 8.
  constexpr uint32_t kBufBytes = kMmaKeys * D * 2, kHalfBytes = kMmaKeys * 128;
  const uint32_t k_sa = smem_addr(k_s), v_sa = smem_addr(v_s);
  const uint32_t k_lane = (lane & 7) * 128 + (((lane >> 3) ^ (lane & 7)) << 4);
  const uint32_t v_lane = (((lane >> 3) & 1) * 8 + (lane & 7)) * 128 + (((lane >> 4) ^ (lane & 7)) << 4);
  // R = 2: this lane's ldmatrix row of a staged query group (item (lane / 8 & 1) * 8 + lane % 8, the
  // k-step's 16-byte chunk 2 kk + lane / 16).
  const uint32_t q_sa = smem_addr(smem_raw + kQueryOffset<T, D>);
  const int q_item = ((lane >> 3) & 1) * 8 + (lane & 7), q_chunk = lane >> 4;
  // This thread's two query items of each of the warp's R groups of 16: rows g and g + 8 of the mma
  // fragments.
  const int g = lane / 4, tig = lane % 4;
  const int ig = warp / KS, ks = warp % KS;  // the warp's items and its key slice
  const bool active = ig * R * 16 < items;
  int item_lo[R], item_hi[R], lim_lo[R], lim_hi[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    item_lo[r] = (ig * R + r) * 16 + g;
    item_hi[r] = item_lo[r] + 8;
    lim_lo[r] = item_lo[r] < items
                    ? min(k_end, visible_keys(positions[tile.row_begin + row_of(item_lo[r])], n_kv, bl, offset))
                    : 0;
    lim_hi[r] = item_hi[r] < items
                    ? min(k_end, visible_keys(positions[tile.row_begin + row_of(item_hi[r])], n_kv, bl, offset))
                    : 0;
  }
  const float scale_log2 = scale * 1.4426950408889634f;  // scores in log2 units: exp2 below

  // The queries (item = row * group + g is query head kvh * group + g of that row; items past the
  // tile are zeros). R = 1: the warp's as mma A fragments, straight from global memory. R = 2: the
  // tile's, staged in shared memory (16-byte loads) before the first chunk is waited for.
  uint32_t qf[R == 1 ? D / 16 : 1][4];
  if constexpr (R == 1) {
    const T* q_lo = item_lo[0] < items
                        ? qkv + (tile.row_begin + row_of(item_lo[0])) * qkv_width + int64_t{head_of(item_lo[0])} * D
                        : nullptr;
    const T* q_hi = item_hi[0] < items
                        ? qkv + (tile.row_begin + row_of(item_hi[0])) * qkv_width + int64_t{head_of(item_hi[0])} * D
                        : nullptr;
    auto word = [](const T* q, int d) { return q ? *reinterpret_cast<const uint32_t*>(q + d) : 0u; };
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int d = kk * 16 + tig * 2;
      qf[kk][0] = word(q_lo, d);
      qf[kk][1] = word(q_hi, d);
      qf[kk][2] = word(q_lo, d + 8);
      qf[kk][3] = word(q_hi, d + 8);
    }
  } else {
    T* q_s = reinterpret_cast<T*>(smem_raw + kQueryOffset<T, D>);
    for (int i = tid; i < kMmaWideItemsPerTile * kChunks; i += kMmaWarps * 32) {
      const int item = i / kChunks, c = i % kChunks;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (item < items)
        v = *reinterpret_cast<const uint4*>(qkv + (tile.row_begin + row_of(item)) * qkv_width +
                                            int64_t{head_of(item)} * D + c * 8);
      *reinterpret_cast<uint4*>(q_s + qswz(item, c)) = v;
    }
    __syncthreads();
  }
  float o[R][D / 8][4];
  float m_lo[R], m_hi[R], l_lo[R], l_hi[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int n = 0; n < D / 8; ++n) o[r][n][0] = o[r][n][1] = o[r][n][2] = o[r][n][3] = 0.f;
    m_lo[r] = m_hi[r] = -INFINITY;
    l_lo[r] = l_hi[r] = 0.f;
  }

  for (int it = 0; it < n_chunks; ++it) {
    const int c0 = k_begin + it * kMmaKeys;
    if (it + 1 < n_chunks) load_chunk(c0 + kMmaKeys, (it + 1) & 1);
    wait_chunk(it, c0);
    if (kWg || active) {  // every warp of the warpgroup issues the wgmmas
      const uint32_t kb = k_sa + (it & 1) * kBufBytes, vb = v_sa + (it & 1) * kBufBytes;
#pragma unroll
      for (int step = 0; step < KW / KH; ++step) {
        const int kb0 = ks * KW + step * KH;  // the step's first key in the chunk
        // S = Q K^T for each group's 16 items x the step's KH keys (each K fragment serves every group).
        float s[R][KH / 8][4];
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int n = 0; n < KH / 8; ++n) s[r][n][0] = s[r][n][1] = s[r][n][2] = s[r][n][3] = 0.f;
        if constexpr (kWg) {
          // The warpgroup's 64 items x the chunk's 64 keys: the queries from registers, K (K-major,
          // 16-column steps within each 64-column half) from shared memory.
          wgmma_fence();
#pragma unroll
          for (int kk = 0; kk < D / 16; ++kk)
            wgmma_m64k16<T, KH, 0>(s[0], qf[kk], wgmma_desc(kb + (kk >> 2) * kHalfBytes + (kk & 3) * 32, 16, 1024), 1);
          wgmma_commit_wait(s[0]);
        } else {
#pragma unroll
          for (int kk = 0; kk < D / 16; kk += 2) {
            // The k-steps' query fragments of each group (R = 2: from shared memory).
            uint32_t qa[R][2][4];
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
              for (int j = 0; j < 2; ++j) {
                if constexpr (R == 1) {
#pragma unroll
                  for (int e = 0; e < 4; ++e) qa[r][j][e] = qf[kk + j][e];
                } else {
                  const int item = (ig * R + r) * 16 + q_item, chunk = (kk + j) * 2 + q_chunk;
                  ldmatrix_x4(qa[r][j], q_sa + 2 * qswz(item, chunk));
                }
              }
#pragma unroll
            for (int n = 0; n < KH / 8; ++n) {
              uint32_t b[4];
              // swz(kb0 + n * 8 + (lane & 7), kk * 2 + lane / 8), in bytes.
              ldmatrix_x4(b, kb + (kk >> 2) * kHalfBytes + (kb0 + n * 8) * 128 + ((kk & 2) ? k_lane ^ 64 : k_lane));
#pragma unroll
              for (int r = 0; r < R; ++r) {
                mma_16816<T>(s[r][n], qa[r][0], b[0], b[1]);
                mma_16816<T>(s[r][n], qa[r][1], b[2], b[3]);
              }
            }
          }
        }
        // Mask, then the online softmax (row max over the quad that shares a row), per group; P as
        // the A operand of P V: key tiles 2j and 2j + 1 make the 16 keys of k-step j.
        uint32_t pf[R][KH / 16][4];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          // Keys past a row's limit get -inf; a step whose keys every row of the warp sees (all but
          // the diagonal and the range's last chunk in a prefill) skips the test.
          if (!__all_sync(0xffffffffu, c0 + kb0 + KH <= min(lim_lo[r], lim_hi[r]))) {
#pragma unroll
            for (int n = 0; n < KH / 8; ++n)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int key = c0 + kb0 + n * 8 + tig * 2 + e;
                if (key >= lim_lo[r]) s[r][n][e] = -INFINITY;
                if (key >= lim_hi[r]) s[r][n][2 + e] = -INFINITY;
              }
          }
          float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
          for (int n = 0; n < KH / 8; ++n) {
            mx_lo = fmaxf(mx_lo, fmaxf(s[r][n][0], s[r][n][1]));
            mx_hi = fmaxf(mx_hi, fmaxf(s[r][n][2], s[r][n][3]));
          }
          // m is in log2 units (a raw max times scale_log2: the scale is positive, so it is a max
          // of the scaled scores), and each p = 2^(s * scale_log2 - m) takes one FMA. m is moved
          // lazily: only when some score of the warp's rows exceeds its row's m by more than
          // kLazyRescale, so most steps skip the quad's max, the exp2 of the correction and the
          // rescale of O. Every score seen so far stays at most m + kLazyRescale, so p stays at most
          // 2^kLazyRescale (exact in 16 bits' exponent range, as l and O in float32), and m, l and
          // O always describe the same softmax: the result is the exact one up to rounding.
          if (__any_sync(0xffffffffu, mx_lo * scale_log2 > m_lo[r] + kLazyRescale ||
                                          mx_hi * scale_log2 > m_hi[r] + kLazyRescale)) {
#pragma unroll
            for (int off = 1; off < 4; off <<= 1) {
              mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
              mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
            }
            const float new_lo = fmaxf(m_lo[r], mx_lo * scale_log2), new_hi = fmaxf(m_hi[r], mx_hi * scale_log2);
            // A row with no visible key so far keeps m = -inf; exp2 against 0 then gives zeros.
            const float a_lo = exp2_ftz(m_lo[r] - (new_lo == -INFINITY ? 0.f : new_lo));
            const float a_hi = exp2_ftz(m_hi[r] - (new_hi == -INFINITY ? 0.f : new_hi));
            m_lo[r] = new_lo;
            m_hi[r] = new_hi;
            l_lo[r] *= a_lo;
            l_hi[r] *= a_hi;
            // Rows whose m stayed have a correction of exactly 1 (2^0).
            if (!__all_sync(0xffffffffu, a_lo == 1.f && a_hi == 1.f)) scale_rows(o[r], a_lo, a_hi);
          }
          const float ref_lo = m_lo[r] == -INFINITY ? 0.f : m_lo[r], ref_hi = m_hi[r] == -INFINITY ? 0.f : m_hi[r];
#pragma unroll
          for (int n = 0; n < KH / 8; ++n) {
            const float p0 = exp2_ftz(fmaf(s[r][n][0], scale_log2, -ref_lo));
            const float p1 = exp2_ftz(fmaf(s[r][n][1], scale_log2, -ref_lo));
            const float p2 = exp2_ftz(fmaf(s[r][n][2], scale_log2, -ref_hi));
            const float p3 = exp2_ftz(fmaf(s[r][n][3], scale_log2, -ref_hi));
            l_lo[r] += p0 + p1;
            l_hi[r] += p2 + p3;
            pf[r][n / 2][(n % 2) * 2] = pack2<T>(p0, p1);
            pf[r][n / 2][(n % 2) * 2 + 1] = pack2<T>(p2, p3);
          }
        }
        // O += P V (each V fragment serves every group). wgmma: V N-major, 64-column halves kHalfBytes apart.
        if constexpr (kWg) {
          wgmma_fence();
#pragma unroll
          for (int kk = 0; kk < KH / 16; ++kk)
            wgmma_m64k16<T, D, 1>(o[0], pf[0][kk], wgmma_desc(vb + (kb0 + kk * 16) * 128, kHalfBytes, 1024), 1);
          wgmma_commit_wait(o[0]);
        } else {
#pragma unroll
          for (int kk = 0; kk < KH / 16; ++kk) {
#pragma unroll
            for (int n = 0; n < D / 8; n += 2) {
              uint32_t b[4];
              // swz(kb0 + kk * 16 + (mat & 1) * 8 + (lane & 7), n + mat / 2) with mat = lane / 8, in bytes.
              ldmatrix_x4_trans(b, vb + (n >> 3) * kHalfBytes + (kb0 + kk * 16) * 128 + (v_lane ^ ((n & 7) * 16)));
#pragma unroll
              for (int r = 0; r < R; ++r) {
                mma_16816<T>(o[r][n], pf[r][kk], b[0], b[1]);
                mma_16816<T>(o[r][n + 1], pf[r][kk], b[2], b[3]);
              }
            }
          }
        }
      }
    }
    __syncthreads();  // the buffer is refilled by the next iteration's load
  }
  if constexpr (!kTma) cp_async_wait<0>();
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
      l_lo[r] += __shfl_xor_sync(0xffffffffu, l_lo[r], off);
      l_hi[r] += __shfl_xor_sync(0xffffffffu, l_hi[r], off);
    }
  if constexpr (KS > 1) {  // (R = 1: group 0 only)
    // Merge the KS key slices of each item group into its first warp: the group's max M, each
    // slice's weight 2^(m - M), the summed l and o (every thread takes part in the barriers; the
    // K/V buffers are free: the loop ended with a barrier and no copy is in flight).
    constexpr int kStride = D + 4;  // padded rows of the o exchange
    float* m_s = reinterpret_cast<float*>(smem_raw);  // [warps][16]
    float* l_s = m_s + kMmaWarps * 16;                 // [warps][16]
    float* o_s = l_s + kMmaWarps * 16;                 // [warps][16][kStride]
    if (tig == 0) {
      m_s[warp * 16 + g] = m_lo[0];
      m_s[warp * 16 + g + 8] = m_hi[0];
      l_s[warp * 16 + g] = l_lo[0];
      l_s[warp * 16 + g + 8] = l_hi[0];
    }
    __syncthreads();
    float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
    for (int j = 0; j < KS; ++j) {
      mx_lo = fmaxf(mx_lo, m_s[(ig * KS + j) * 16 + g]);
      mx_hi = fmaxf(mx_hi, m_s[(ig * KS + j) * 16 + g + 8]);
    }
    const float ref_lo = mx_lo == -INFINITY ? 0.f : mx_lo, ref_hi = mx_hi == -INFINITY ? 0.f : mx_hi;
    float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
    for (int j = 0; j < KS; ++j) {
      sum_lo += l_s[(ig * KS + j) * 16 + g] * exp2f(m_s[(ig * KS + j) * 16 + g] - ref_lo);
      sum_hi += l_s[(ig * KS + j) * 16 + g + 8] * exp2f(m_s[(ig * KS + j) * 16 + g + 8] - ref_hi);
    }
    scale_rows(o[0], exp2f(m_lo[0] - ref_lo), exp2f(m_hi[0] - ref_hi));
    if (ks != 0) {
      float* dst = o_s + warp * 16 * kStride + tig * 2;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        *reinterpret_cast<float2*>(dst + g * kStride + n * 8) = make_float2(o[0][n][0], o[0][n][1]);
        *reinterpret_cast<float2*>(dst + (g + 8) * kStride + n * 8) = make_float2(o[0][n][2], o[0][n][3]);
      }
    }
    __syncthreads();
    if (ks != 0) return;
#pragma unroll
    for (int j = 1; j < KS; ++j) {
      const float* src = o_s + (warp + j) * 16 * kStride + tig * 2;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        const float2 a = *reinterpret_cast<const float2*>(src + g * kStride + n * 8);
        const float2 b = *reinterpret_cast<const float2*>(src + (g + 8) * kStride + n * 8);
        o[0][n][0] += a.x;
        o[0][n][1] += a.y;
        o[0][n][2] += b.x;
        o[0][n][3] += b.y;
      }
    }
    m_lo[0] = mx_lo;
    m_hi[0] = mx_hi;
    l_lo[0] = sum_lo;
    l_hi[0] = sum_hi;
  }
  if (!active) return;
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int item = half ? item_hi[r] : item_lo[r];
    if (item >= items) continue;
    const float l = half ? l_hi[r] : l_lo[r], m = half ? m_hi[r] : m_lo[r];
    const int64_t row = tile.row_begin + row_of(item);
    const int h = head_of(item);
    const float inv_l = l > 0.f ? 1.f / l : 0.f;
    if (splits == 1) {
      T* dst = out + (row * num_heads + h) * D + tig * 2;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<uint32_t*>(dst + n * 8) = pack2<T>(o[r][n][half * 2] * inv_l, o[r][n][half * 2 + 1] * inv_l);
    } else {
      const int64_t base = (int64_t{split} * num_tokens + row) * num_heads + h;
      float* dst = part_o + base * D + tig * 2;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<float2*>(dst + n * 8) = make_float2(o[r][n][half * 2] * inv_l, o[r][n][half * 2 + 1] * inv_l);
      // log-sum-exp in natural units: ln 2 * (m + log2 l) with m in log2 units.
      if (tig == 0) part_lse[base] = l > 0.f ? 0.6931471805599453f * (m + log2f(l)) : -INFINITY;
    }
  }
}


// Whether the tensor-core kernel's code came from sm_90 or later, so that its TMA path is compiled
// in: the PTX version (a JIT from an older architecture's PTX keeps that version). Read once.
template <typename T>
bool tma_compiled() {
  static const bool compiled = [] {
    cudaFuncAttributes fa{};
    if (cudaFuncGetAttributes(&fa, reinterpret_cast<const void*>(k_attention_mma<T, 128, 4, true>)) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return fa.ptxVersion >= 90;
  }();
  return compiled;
}

// The TMA path's boxes: 16 keys, for pages of a multiple of 16 keys (a box then never leaves its
// page) and splits at multiples of 64 keys (a chunk starts at a box). The kernel takes other box
// sizes that divide 64 and the page; 16, the engine's page, is the one the GPU tests have run, so
// it serves every page size it can.
constexpr int kBoxKeys = 16;

// Whether the tensor-core kernel may take its TMA form for caches in pages of `page_size` keys (the
// launcher also needs splits at multiples of kMmaKeys and the maps to encode).
template <typename T>
bool tma_serves(int64_t page_size) {
  return tma_compiled<T>() && page_size % kBoxKeys == 0;
}

// Whether the 64-item tiles with whole chunks by TMA may take the wgmma form on `device`: code
// built for sm_90a (BLOCKINFER_WGMMA) on a compute capability 9.0 device, unless
// BLOCKINFER_ATTENTION_WGMMA=0 (A/B runs against the wide tiles).
bool wgmma_serves(int device) {
#if BLOCKINFER_WGMMA
  static const bool enabled = env_switch("BLOCKINFER_ATTENTION_WGMMA") != 0;
  return enabled && compute_capability(device) == 90;
#else
  (void)device;
  return false;
#endif
}

// Whether keys read once take the evict-first L2 policy (unless BLOCKINFER_KV_EVICT_FIRST=0, for A/B
// runs). Read once.
bool evict_first_on() {
  static const bool on = env_switch("BLOCKINFER_KV_EVICT_FIRST") != 0;
  return on;
}

// The tensor-core kernel's shared memory: K and V, double-buffered, and two mbarriers; wide tiles
// also hold their queries (at kQueryOffset).
size_t mma_smem_bytes(size_t elem_bytes, int64_t head_dim, bool wide) {
  const size_t kv = elem_bytes * 4 * kMmaKeys * static_cast<size_t>(head_dim);
  return wide ? kv + 1024 + elem_bytes * kMmaWideItemsPerTile * static_cast<size_t>(head_dim) : kv + 16;
}

// Calls f(kernel) with the tensor-core kernel for (head_dim 64 or 128, key_split or wide tiles, TMA
// or cp.async).
template <typename T, typename F>
void with_mma_kernel(int64_t head_dim, int key_split, bool wide, bool tma, bool wg, F&& f) {
  auto with_split = [&](auto dim, auto use_tma) {
    constexpr int D = decltype(dim)::value;
    constexpr bool kTma = decltype(use_tma)::value;
    if constexpr (kTma) {
      if (wg) return f(k_attention_mma<T, D, 1, true, 1, true>);
    }
    if (wide) f(k_attention_mma<T, D, 1, kTma, kMmaWideGroups>);
    else if (key_split == 4) f(k_attention_mma<T, D, 4, kTma>);
    else if (key_split == 2) f(k_attention_mma<T, D, 2, kTma>);
    else f(k_attention_mma<T, D, 1, kTma>);
  };
  auto with_dim = [&](auto dim) {
    if (tma) with_split(dim, std::true_type{});
    else with_split(dim, std::false_type{});
  };
  if (head_dim == 128) with_dim(std::integral_constant<int, 128>{});
  else with_dim(std::integral_constant<int, 64>{});
}

// A cache [slots, KV, D] as a TMA map with boxes of box_keys keys x 1 head x 64 columns, 128-byte
// swizzled (the tensor-core kernel's staged layout). False where it cannot be made.
bool kv_tensor_map(CUtensorMap* map, const void* cache, DType dtype, int64_t slots, int64_t kv_heads,
                   int64_t head_dim, int box_keys) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (encode == nullptr) return false;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(head_dim), static_cast<cuuint64_t>(kv_heads),
                              static_cast<cuuint64_t>(slots)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(head_dim * 2), static_cast<cuuint64_t>(kv_heads * head_dim * 2)};
  const cuuint32_t box[3] = {64, 1, static_cast<cuuint32_t>(box_keys)};
  const cuuint32_t unit[3] = {1, 1, 1};
  return encode(map, dtype == DType::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3,
                const_cast<void*>(cache), dims, strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace

void launch_paged_attention(const PagedAttentionArgs& a) {
  if (a.num_tokens == 0 || a.num_tiles == 0) return;
  BI_CHECK_ARG(a.head_dim <= 32 * kMaxDimsPerLane, "paged_attention (CUDA): head_dim ", a.head_dim,
               " > ", 32 * kMaxDimsPerLane);
  const int group = static_cast<int>(a.num_heads / a.num_kv_heads);
  const bool mma = attention_uses_tensor_cores(a.dtype, a.head_dim, group);
  BI_CHECK_ARG(group <= (mma ? kMmaItemsPerTile : kItemsPerTile), "paged_attention (CUDA): ", group,
               " query heads per KV head is too many");
  BI_CHECK_ARG(a.splits == 1 || a.partials != nullptr, "paged_attention (CUDA): ", a.splits,
               " key splits need a partials workspace");
  BI_CHECK_ARG(a.key_split == 1 || a.key_split == 2 || a.key_split == 4, "paged_attention (CUDA): key_split ",
               a.key_split, " is not 1, 2 or 4");
  BI_CHECK_ARG(!a.wide || (mma && a.key_split == 1), "paged_attention (CUDA): wide tiles need the tensor-core "
               "kernel and key_split 1");
  BI_CHECK_ARG(!a.wgmma || a.wide, "paged_attention (CUDA): the wgmma form is a wide plan's");
  BI_CUDA_CHECK(cudaSetDevice(a.device));
  const Tile* tiles = reinterpret_cast<const Tile*>(a.tiles);
  float* part_o = a.partials;
  float* part_lse = a.splits > 1 ? a.partials + static_cast<int64_t>(a.splits) * a.num_tokens * a.num_heads * a.head_dim
                                 : nullptr;
  dim3 grid(static_cast<unsigned>(a.num_tiles), static_cast<unsigned>(a.num_kv_heads), static_cast<unsigned>(a.splits));
  cudaStream_t stream = current_stream();
  auto launch = [&](auto kernel, unsigned threads, size_t smem, auto... args) {
    allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, a.device);
    kernel<<<grid, threads, smem, stream>>>(args...);
    BI_CUDA_CHECK_LAUNCH();
  };
  dispatch_float(a.dtype, "paged_attention", [&](auto tag) {
    using T = decltype(tag);
    const T* q = static_cast<const T*>(a.qkv);
    const T* kc = static_cast<const T*>(a.k_cache);
    const T* vc = static_cast<const T*>(a.v_cache);
    T* out = static_cast<T*>(a.out);
    const int max_pages = static_cast<int>(a.max_pages_per_seq);
    const PageGeometry page = PageGeometry::of(static_cast<int>(a.page_size));
    const int nh = static_cast<int>(a.num_heads), nkv = static_cast<int>(a.num_kv_heads);
    if constexpr (!std::is_same_v<T, float>) {
      if (mma) {
        const int64_t slots = a.cache_pages * a.page_size;
        CUtensorMap tm_k{}, tm_v{};
        const bool tma = tma_serves<T>(a.page_size) &&
                         (a.splits == 1 || a.keys_per_split % kMmaKeys == 0) &&
                         slots > 0 && slots <= INT32_MAX &&
                         kv_tensor_map(&tm_k, kc, a.dtype, slots, a.num_kv_heads, a.head_dim, kBoxKeys) &&
                         kv_tensor_map(&tm_v, vc, a.dtype, slots, a.num_kv_heads, a.head_dim, kBoxKeys);
        // A wgmma plan's tiles also suit the wide tiles' kernel, where TMA does not serve.
        const bool wg = a.wide && a.wgmma && tma && wgmma_serves(a.device);
        const size_t smem = mma_smem_bytes(sizeof(T), a.head_dim, a.wide && !wg);
        const int group = static_cast<int>(nh / nkv);
        const int group_shift = log2_if_pow2(group);  // -1: not a power of two
        auto run = [&](auto kernel) {
          launch(kernel, kMmaWarps * 32, smem, q, kc, vc, tm_k, tm_v, kBoxKeys, a.page_table, a.positions, a.kv_len,
                 a.block_len, a.block_offset, tiles, out, part_o, part_lse, a.num_tokens, max_pages, page, nh, nkv,
                 a.keys_per_split, a.scale, a.keys_read_once && evict_first_on(), group_shift);
        };
        with_mma_kernel<T>(a.head_dim, a.key_split, a.wide, tma, wg, run);
      }
    }
    if (!mma) {
      const int dpl = static_cast<int>((a.head_dim + 31) / 32);
      const size_t smem = sizeof(float) * (kItemsPerTile * a.head_dim + kKeysPerChunk * (a.head_dim + 1) +
                                           kKeysPerChunk * a.head_dim);
      auto run = [&](auto kernel) {
        launch(kernel, kWarps * 32, smem, q, kc, vc, a.page_table, a.positions, a.kv_len, a.block_len,
               a.block_offset, tiles, out, part_o, part_lse, a.num_tokens, max_pages, page, nh, nkv,
               static_cast<int>(a.head_dim), a.keys_per_split, a.scale);
      };
      if (dpl <= 1) run(k_paged_attention<T, 1>);
      else if (dpl <= 2) run(k_paged_attention<T, 2>);
      else if (dpl <= 4) run(k_paged_attention<T, 4>);
      else run(k_paged_attention<T, 8>);
    }
    if (a.splits > 1) {
      k_merge_splits<T><<<static_cast<unsigned>(a.num_tokens * a.num_heads), 128, 0, stream>>>(
          part_o, part_lse, out, a.num_tokens, nh, static_cast<int>(a.head_dim), a.splits);
      BI_CUDA_CHECK_LAUNCH();
    }
  });
}

int attention_ctas_per_sm(DType dtype, int64_t head_dim, int64_t page_size, int key_split, int device, bool wide) {
  if (!attention_uses_tensor_cores(dtype, head_dim, 1)) return 0;
  BI_CHECK_ARG(key_split == 1 || key_split == 2 || key_split == 4, "attention_ctas_per_sm: key_split ", key_split,
               " is not 1, 2 or 4");
  BI_CHECK_ARG(!wide || key_split == 1, "attention_ctas_per_sm: wide tiles take key_split 1, not ", key_split);
  BI_CUDA_CHECK(cudaSetDevice(device));
  int ctas = 0;
  dispatch_float(dtype, "attention_ctas_per_sm", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      const bool tma = tma_serves<T>(page_size), wg = wide && tma && wgmma_serves(device);
      const size_t smem = mma_smem_bytes(sizeof(T), head_dim, wide && !wg);
      with_mma_kernel<T>(head_dim, key_split, wide, tma, wg, [&](auto kernel) {
        allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, device);
        BI_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, kernel, kMmaWarps * 32, smem));
      });
    }
  });
  return ctas;
}

bool attention_wgmma_serves(DType dtype, int64_t head_dim, int64_t page_size, int device) {
  if (!attention_uses_tensor_cores(dtype, head_dim, 1)) return false;
  bool serves = false;
  dispatch_float(dtype, "attention_wgmma_serves", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) serves = tma_serves<T>(page_size) && wgmma_serves(device);
  });
  return serves;
}

}  // namespace blockinfer::cuda
