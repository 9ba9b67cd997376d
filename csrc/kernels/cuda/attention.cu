// Block-causal paged attention over a ragged batch (the rule of kernels/cpu/attention.cc).
//
// Work is cut into tiles: (sequence, a run of up to kRowsPerTile query rows) x one KV head x one
// split of the keys. A CTA stages 32 keys at a time from the pages into shared memory (as float)
// and every query item of the tile (row x query head of the KV head's GQA group) reads them from
// there, so each K/V element is read from memory once per tile and split. Each warp owns query
// items; lane j scores key j of the chunk, the warp keeps an online softmax (running max m, sum l,
// output accumulator spread over the lanes). Denoise steps have few query rows per sequence and
// long key ranges, so the keys are split over several CTAs (flash-decoding, runs of 256 keys) and the
// partial results merged by log-sum-exp in a second kernel. (A first version on CUDA cores; tensor-core tiles for
// long prefills are future work.)
#include <algorithm>
#include <vector>

#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/launchers.h"

namespace blockinfer::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kKeysPerChunk = 32;
constexpr int kItemsPerTile = 32;  // query rows x group heads handled by one CTA
constexpr int kMaxDimsPerLane = 8;  // head_dim <= 256
constexpr int kKeysPerSplit = 256;
constexpr size_t kMaxPartialBytes = size_t{256} << 20;

struct Tile {
  int32_t seq;
  int32_t row_begin;  // first query row (index into the batch)
  int32_t row_end;
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
                  const Tile* __restrict__ tiles, T* __restrict__ out,
                  float* __restrict__ part_o,    // [splits, num_tokens, H, D] (splits > 1)
                  float* __restrict__ part_lse,  // [splits, num_tokens, H]
                  int64_t num_tokens, int max_pages, int page_size, int num_heads, int num_kv_heads,
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

  // Stage the tile's queries (item = row * group + g, query head kvh * group + g).
  for (int i = threadIdx.x; i < items * head_dim; i += blockDim.x) {
    const int item = i / head_dim, d = i % head_dim;
    const int64_t row = tile.row_begin + item / group;
    const int h = kvh * group + item % group;
    q_s[i] = to_f32(qkv[row * qkv_width + int64_t{h} * head_dim + d]);
  }
  // Keys visible to the tile: up to the last row's block end (rows are in position order).
  auto visible = [&](int64_t row) {
    int n = n_kv;
    if (bl > 0) n = min(n, (positions[row] / bl + 1) * bl);
    return n;
  };
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
        const int64_t off = (int64_t{pages[key / page_size]} * page_size + key % page_size) * kv_width +
                            int64_t{kvh} * head_dim + d;
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
        const int64_t slot = int64_t{pages[key / page_size]} * page_size + key % page_size;
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

// A grow-only device workspace per process (tiles and split partials).
struct Workspace {
  void* ptr = nullptr;
  size_t bytes = 0;
  void* get(size_t need) {
    if (need > bytes) {
      if (ptr) cudaFree(ptr);
      BI_CUDA_CHECK(cudaMalloc(&ptr, need));
      bytes = need;
    }
    return ptr;
  }
};

}  // namespace

void launch_paged_attention(const PagedAttentionArgs& a) {
  if (a.num_tokens == 0) return;
  BI_CHECK_ARG(a.head_dim <= 32 * kMaxDimsPerLane, "paged_attention (CUDA): head_dim ", a.head_dim,
               " > ", 32 * kMaxDimsPerLane);
  const int group = static_cast<int>(a.num_heads / a.num_kv_heads);
  BI_CHECK_ARG(group <= kItemsPerTile, "paged_attention (CUDA): ", group, " query heads per KV head > ",
               kItemsPerTile);
  BI_CUDA_CHECK(cudaSetDevice(a.device));
  // Tiles: consecutive query rows of one sequence, at most kItemsPerTile / group rows each.
  const int rows_per_tile = kItemsPerTile / group;
  std::vector<Tile> tiles;
  int max_keys = 0;
  for (int64_t s = 0; s < a.num_seqs; ++s) {
    for (int32_t r = a.host_q_start[s]; r < a.host_q_start[s + 1]; r += rows_per_tile)
      tiles.push_back({static_cast<int32_t>(s), r, std::min<int32_t>(r + rows_per_tile, a.host_q_start[s + 1])});
    max_keys = std::max(max_keys, a.host_kv_len[s]);
  }
  if (tiles.empty()) return;
  // Split every tile's keys into runs of kKeysPerSplit (flash-decoding), so denoise steps with
  // few query rows still fill the GPU. The split length is a constant, not derived from the batch:
  // a row's result then depends only on its own sequence, whatever else is in the batch. Only a
  // batch whose partial results would not fit kMaxPartialBytes (long prefills) uses longer splits.
  const size_t per_split = static_cast<size_t>(a.num_tokens) * a.num_heads * (a.head_dim + 1) * sizeof(float);
  int keys_per_split = kKeysPerSplit;
  while (static_cast<size_t>((max_keys + keys_per_split - 1) / keys_per_split) * per_split > kMaxPartialBytes &&
         keys_per_split < max_keys)
    keys_per_split *= 2;
  const int splits = std::max(1, (max_keys + keys_per_split - 1) / keys_per_split);

  // The tile list is the same for every layer of a forward: upload it only when it changes (a
  // synchronous copy per layer would stall the launch queue).
  static Workspace ws[64];
  static std::vector<Tile> uploaded[64];
  const size_t tiles_bytes = tiles.size() * sizeof(Tile);
  const size_t part_elems = splits > 1 ? static_cast<size_t>(splits) * a.num_tokens * a.num_heads : 0;
  const size_t need = tiles_bytes + 256 + part_elems * (a.head_dim + 1) * sizeof(float);
  void* before = ws[a.device].ptr;
  char* base = static_cast<char*>(ws[a.device].get(need));
  Tile* d_tiles = reinterpret_cast<Tile*>(base);
  float* part_o = reinterpret_cast<float*>(base + (tiles_bytes + 255) / 256 * 256);
  float* part_lse = part_o + part_elems * a.head_dim;
  const bool same = base == before && uploaded[a.device].size() == tiles.size() &&
                    std::equal(tiles.begin(), tiles.end(), uploaded[a.device].begin(), [](const Tile& x, const Tile& y) {
                      return x.seq == y.seq && x.row_begin == y.row_begin && x.row_end == y.row_end;
                    });
  if (!same) {
    BI_CUDA_CHECK(cudaMemcpy(d_tiles, tiles.data(), tiles_bytes, cudaMemcpyHostToDevice));
    uploaded[a.device] = tiles;
  }

  const int dpl = static_cast<int>((a.head_dim + 31) / 32);
  const size_t smem = sizeof(float) * (kItemsPerTile * a.head_dim + kKeysPerChunk * (a.head_dim + 1) +
                                       kKeysPerChunk * a.head_dim);
  dim3 grid(static_cast<unsigned>(tiles.size()), static_cast<unsigned>(a.num_kv_heads), static_cast<unsigned>(splits));
  dispatch_float(a.dtype, "paged_attention", [&](auto tag) {
    using T = decltype(tag);
    auto launch = [&](auto kernel) {
      // Raise the kernel's dynamic shared-memory limit once per size it has not seen.
      static int granted[64] = {0};
      if (static_cast<int>(smem) > granted[a.device]) {
        BI_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
        granted[a.device] = static_cast<int>(smem);
      }
      kernel<<<grid, kWarps * 32, smem>>>(
          static_cast<const T*>(a.qkv), static_cast<const T*>(a.k_cache), static_cast<const T*>(a.v_cache),
          a.page_table, a.positions, a.kv_len, a.block_len, d_tiles, static_cast<T*>(a.out), part_o,
          part_lse, a.num_tokens, static_cast<int>(a.max_pages_per_seq), static_cast<int>(a.page_size),
          static_cast<int>(a.num_heads), static_cast<int>(a.num_kv_heads), static_cast<int>(a.head_dim),
          keys_per_split, a.scale);
      BI_CUDA_CHECK_LAUNCH();
    };
    if (dpl <= 1) launch(k_paged_attention<T, 1>);
    else if (dpl <= 2) launch(k_paged_attention<T, 2>);
    else if (dpl <= 4) launch(k_paged_attention<T, 4>);
    else launch(k_paged_attention<T, 8>);
    if (splits > 1) {
      k_merge_splits<T><<<static_cast<unsigned>(a.num_tokens * a.num_heads), 128>>>(
          part_o, part_lse, static_cast<T*>(a.out), a.num_tokens, static_cast<int>(a.num_heads),
          static_cast<int>(a.head_dim), splits);
      BI_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace blockinfer::cuda
