// Dense GEMM written for Hopper (sm_90a): out[m, n] = x[m, k] @ w[n, k]^T, bfloat16 or float16 in
// and out, float32 accumulation; optionally with SiLU·mul in its epilogue, for a gate/up weight
// whose rows alternate 128 gate rows and the 128 up rows of the same columns.
//
// One CTA per 128 x BN output tile (BN 256 or 128), three warpgroups: the first issues the TMA
// copies (one thread), the other two each multiply 64 rows of the tile by the whole BN columns
// with wgmma m64nBNk16, both operands from shared memory (K-major, 128-byte swizzle). k runs in
// steps of 64 through kStages buffers, each guarded by a "full" mbarrier (the copies' bytes) and
// an "empty" one (both consumers done with it). Tiles are numbered with m fastest, so the CTAs
// that share a weight tile run together and read it from L2 once. The epilogue stages the tile
// through a buffer of its own so that global stores are 16 bytes a thread.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/hopper.cuh"
#include "kernels/cuda/launchers.h"

namespace blockinfer::cuda {
namespace {

constexpr int kBM = 128, kBK = 64, kStages = 4, kThreads = 384;

// The epilogue's own buffer: each consumer warpgroup stages 64 rows x 128 columns (16 KB) of its
// output at a time, so that the producer may already fill the ring with the next unit's copies.
constexpr uint32_t kEpilogueBytes = 2 * 64 * 128 * 2;

template <int BN>
constexpr size_t gemm_smem_bytes() {
  // ring buffers, epilogue buffer, mbarriers, and the swizzle's alignment
  return size_t{kStages} * (kBM + BN) * kBK * 2 + kEpilogueBytes + 2 * kStages * 8 + 1024;
}
static_assert(gemm_smem_bytes<256>() <= 232448, "the 256-wide tile's shared memory exceeds an sm_90 CTA's");

// d (64 x BN, float32, the wgmma accumulator layout) += a (64 x 16) * b (16 x BN)^T, both by
// shared-memory descriptors of K-major tiles.
#define BI_GEMM_AB "l"(desc_a), "l"(desc_b), "r"(scale_d)
template <typename T, int BN>
__device__ __forceinline__ void wgmma_ss(float (&d)[BN / 8][4], uint64_t desc_a, uint64_t desc_b, int scale_d) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool bf16 = std::is_same_v<T, __nv_bfloat16>;
  // Both operands K-major from shared memory: the flags after scale-d are scale-a, scale-b and
  // transpose-a, transpose-b.
  if constexpr (BN == 256 && bf16) BI_WGMMA_ASM("256", "bf16", BI_WGMMA_ACC128, BI_WGMMA_NUM128, "%130", "%128, %129, p, 1, 1, 0, 0", BI_GEMM_AB);
  else if constexpr (BN == 256) BI_WGMMA_ASM("256", "f16", BI_WGMMA_ACC128, BI_WGMMA_NUM128, "%130", "%128, %129, p, 1, 1, 0, 0", BI_GEMM_AB);
  else if constexpr (bf16) BI_WGMMA_ASM("128", "bf16", BI_WGMMA_ACC64, BI_WGMMA_NUM64, "%66", "%64, %65, p, 1, 1, 0, 0", BI_GEMM_AB);
  else BI_WGMMA_ASM("128", "f16", BI_WGMMA_ACC64, BI_WGMMA_NUM64, "%66", "%64, %65, p, 1, 1, 0, 0", BI_GEMM_AB);
#else
  __trap();  // the launcher serves only code built for sm_90a
#endif
}
#undef BI_GEMM_AB

// The output value of accumulator pair (v0, v1) of column pair i (the wgmma layout's 8-column
// groups): itself, or with SiLU·mul, silu(gate) * up where the tile's column j has its up value in
// column j + BN / 2 (both rounded to T first, as launch_silu_mul on a stored gate_up computes it).
template <typename T, int BN, bool kSilu>
__device__ __forceinline__ uint32_t output_pair(const float (&acc)[BN / 8][4], int i, int h) {
  float v0 = acc[i][2 * h], v1 = acc[i][2 * h + 1];
  if constexpr (kSilu) {
    const float g0 = to_f32(from_f32<T>(v0)), g1 = to_f32(from_f32<T>(v1));
    const float u0 = to_f32(from_f32<T>(acc[i + BN / 16][2 * h]));
    const float u1 = to_f32(from_f32<T>(acc[i + BN / 16][2 * h + 1]));
    v0 = silu_times(g0, u0);
    v1 = silu_times(g1, u1);
  }
  return pack2<T>(v0, v1);
}

// Work units: one m tile at kCluster consecutive n tiles, numbered with m fastest, so that the
// clusters sharing a weight tile run together and read it from L2 once. A cluster takes units
// cluster, cluster + clusters, ...: one each where the grid covers every unit; several where it
// is persistent (at most the clusters that fit at once). kCluster 2 or 4: the CTAs of a unit share
// its rows of x; each copies 128 / kCluster of them (tm_x's boxes) into every CTA's buffers, so
// the activations cross from L2 once per cluster (cuBLASLt's 2 x 1 and 4 x 1 clusters on these
// GEMMs do the same, by their kernels' names). A buffer is refilled only after the consumers of
// every CTA of the cluster released it (its "empty" mbarrier counts 2 kCluster arrivals), and a
// CTA leaves only after its peers are done with its barriers.
// The epilogue stages each warpgroup's 64 rows through its part of a buffer of its own, 128 columns
// at a time (16-byte chunks XOR-swizzled by row, so that the accumulator pairs' writes and the
// chunks' reads are free of bank conflicts), for 16-byte global stores; the ring is free for the
// next unit's copies meanwhile (on a persistent grid: the same CTA's next unit). A persistent grid
// differs only in its size, so both run the same kernel.
template <typename T, int BN, bool kSilu, int kCluster>
__global__ void __launch_bounds__(kThreads, 1)
k_gemm_sm90(const __grid_constant__ CUtensorMap tm_x,  // x [m, k], boxes of 128 rows x 64
            const __grid_constant__ CUtensorMap tm_w,  // w [n, k], boxes of BN rows x 64
            T* __restrict__ out,                       // [m, n_out] with row stride ldo
            int m, int n_out, int k, int64_t ldo, int m_tiles, int units) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  constexpr uint32_t kABytes = kBM * kBK * 2, kBBytes = BN * kBK * 2, kStageBytes = kABytes + kBBytes;
  const uint32_t raw = smem_addr(smem_raw), base = (raw + 1023u) & ~1023u;  // the swizzle's alignment
  const uint32_t staging = base + kStages * kStageBytes, bars = staging + kEpilogueBytes;
  auto full = [&](int s) { return bars + 8 * s; };
  auto empty = [&](int s) { return bars + 8 * (kStages + s); };
  const int wg = static_cast<int>(threadIdx.x) / 128, tid = static_cast<int>(threadIdx.x) % 128;
  const int ktiles = (k + kBK - 1) / kBK;
  const int cluster = static_cast<int>(blockIdx.x) / kCluster, clusters = static_cast<int>(gridDim.x) / kCluster;
  const uint32_t rank = kCluster > 1 ? cluster_rank() : 0;
  // A unit: one m tile at kCluster consecutive n tiles (m fastest); the CTAs of a cluster share
  // the m tile's rows of x, each copying 128 / kCluster of them into every CTA's buffer.
  auto m0_of = [&](int u) { return (u % m_tiles) * kBM; };
  auto n0_of = [&](int u) { return ((u / m_tiles) * kCluster + static_cast<int>(rank)) * BN; };
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full(s), 1);
      mbar_init(empty(s), 2 * kCluster);  // one arrival a consumer warpgroup of each CTA
    }
    mbar_init_fence();
  }
  if constexpr (kCluster > 1) cluster_sync();  // the peer's barriers exist before anything reaches them
  else __syncthreads();

  if (wg == 0) {  // the producer: one thread issues every copy (out-of-range rows and k land as zeros)
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (tid == 0) {
      prefetch_tensor_map(&tm_x);
      prefetch_tensor_map(&tm_w);
      int it = 0;  // k steps so far, over every unit: the ring's position and phase
      for (int u = cluster; u < units; u += clusters) {
        const int m0 = m0_of(u), n0 = n0_of(u);
        for (int kt = 0; kt < ktiles; ++kt, ++it) {
          const int s = it % kStages;
          if (it >= kStages) mbar_wait(empty(s), (it / kStages - 1) & 1);
          mbar_expect(full(s), kStageBytes);
          if constexpr (kCluster > 1) {
            constexpr int kPart = kBM / kCluster;
            tma_load_2d_multicast(base + s * kStageBytes + rank * kPart * 128, &tm_x, kt * kBK,
                                  m0 + static_cast<int>(rank) * kPart, full(s), (1u << kCluster) - 1);
          } else {
            tma_load_2d(base + s * kStageBytes, &tm_x, kt * kBK, m0, full(s));
          }
          tma_load_2d(base + s * kStageBytes + kABytes, &tm_w, kt * kBK, n0, full(s));
        }
      }
    }
    if constexpr (kCluster > 1) {
      __syncwarp();
      cluster_sync();
    }
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
  const int c = wg - 1;  // this warpgroup's rows: m0 + 64 c ..
  const int warp = tid / 32, lane = tid % 32, r0 = warp * 16 + lane / 4;
  constexpr int kOutCols = kSilu ? BN / 2 : BN;
  // Both consumer warpgroups release a buffer (and the peer's copy of it) once done with it.
  auto release = [&](int it) {
    if (tid == 0) {
      const uint32_t bar = empty(it % kStages);
      mbar_arrive(bar);
      if constexpr (kCluster > 1)
        for (uint32_t peer = 0; peer < kCluster; ++peer)
          if (peer != rank) mbar_arrive_cluster(peer_addr(bar, peer));
    }
  };
  // Descriptors of stage 0's operands; a stage and a k16 step only move the start address, which
  // sits in the descriptor's low bits in 16-byte units (every address here is below 2^18).
  const uint64_t desc_a0 = wgmma_desc(base + c * 64 * 128, 16, 1024), desc_b0 = wgmma_desc(base + kABytes, 16, 1024);
  int it = 0;
  for (int u = cluster; u < units; u += clusters) {
    const int m0 = m0_of(u), n0 = n0_of(u);
    float acc[BN / 8][4];
#pragma unroll
    for (int i = 0; i < BN / 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][e] = 0.f;
    for (int kt = 0; kt < ktiles; ++kt, ++it) {
      const int s = it % kStages;
      mbar_wait(full(s), (it / kStages) & 1);
      wgmma_fence();
      const uint64_t step = (s * kStageBytes) >> 4;
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk)  // 16 columns of k are 32 bytes into each 128-byte row
        wgmma_ss<T, BN>(acc, desc_a0 + step + kk * 2, desc_b0 + step + kk * 2, 1);
      wgmma_commit();
      // With at most this step's group in flight, the previous step's buffer is free.
      wgmma_wait<1>();
      pin_registers(acc);
      if (kt > 0) release(it - 1);
    }
    wgmma_wait<0>();
    pin_registers(acc);
    release(it - 1);

    const int row0 = m0 + c * 64, col0 = kSilu ? n0 / 2 : n0;
    // This warpgroup's 64 x 128 part of the buffer: row r's 16 chunks of 16 bytes, chunk j at
    // position j ^ (r % 8).
    unsigned char* part = smem_raw + (staging - raw) + c * (kEpilogueBytes / 2);
    auto at = [&](int r, int chunk) { return part + r * 256 + ((chunk ^ (r & 7)) << 4); };
#pragma unroll
    for (int half = 0; half < kOutCols / 128; ++half) {
      // The previous 128 columns (or unit) are read out of the buffer before it is written again.
      asm volatile("bar.sync %0, 128;\n" ::"r"(2 + c) : "memory");
#pragma unroll
      for (int i = 0; i < 16; ++i)  // column pair i of the wgmma layout: chunk i, word lane % 4
#pragma unroll
        for (int h = 0; h < 2; ++h)  // accumulator rows r0 and r0 + 8
          *reinterpret_cast<uint32_t*>(at(r0 + 8 * h, i) + 4 * (lane % 4)) =
              output_pair<T, BN, kSilu>(acc, half * 16 + i, h);
      asm volatile("bar.sync %0, 128;\n" ::"r"(2 + c) : "memory");
#pragma unroll
      for (int j = 0; j < 8; ++j) {  // 64 rows x 16 chunks over the warpgroup's 128 threads
        const int idx = tid + 128 * j, r = idx / 16, chunk = idx % 16;
        const int col = col0 + half * 128 + chunk * 8;
        if (row0 + r < m && col < n_out)
          *reinterpret_cast<uint4*>(out + (row0 + r) * ldo + col) = *reinterpret_cast<const uint4*>(at(r, chunk));
      }
    }
  }
  // The peer may still arrive on this CTA's barriers until its last step: leave together.
  if constexpr (kCluster > 1) cluster_sync();
#else
  __trap();
#endif
}

// A row-major [rows, k] matrix as a TMA map with boxes of box_rows rows x 64 columns, 128-byte
// swizzled (the wgmma operand layout). False where it cannot be made.
bool operand_map(CUtensorMap* map, const void* p, DType dtype, int64_t rows, int64_t k, int box_rows) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (encode == nullptr) return false;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(k), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(k * 2)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kBK), static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t unit[2] = {1, 1};
  return encode(map, dtype == DType::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2,
                const_cast<void*>(p), dims, strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// How many clusters of `cluster` CTAs launched as `cfg` the device holds at once, a persistent
// grid's size; read once per kernel and device (where the query gives none, the SMs over the
// cluster size).
int64_t max_active_clusters(const void* kernel, const cudaLaunchConfig_t& cfg, int cluster, int device) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int64_t> known;
  std::lock_guard<std::mutex> lock(mu);
  auto it = known.find({kernel, device});
  if (it != known.end()) return it->second;
  int n = 0;
  cudaLaunchConfig_t probe = cfg;
  probe.gridDim = dim3(static_cast<unsigned>(multiprocessor_count(device)));
  BI_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&n, kernel, &probe));
  return known[{kernel, device}] = n > 0 ? n : std::max(1, multiprocessor_count(device) / cluster);
}

}  // namespace

bool gemm_sm90_serves(DType dtype, int64_t n, int64_t k, int device, bool silu_mul) {
#if BLOCKINFER_WGMMA
  if (dtype != DType::kBFloat16 && dtype != DType::kFloat16) return false;
  if (k % 8 != 0 || n % (silu_mul ? 256 : 8) != 0 || k > (int64_t{1} << 31) - 1 || n > (int64_t{1} << 31) - 1)
    return false;
  if (device < 0 || device >= device_count()) return false;  // (a build with CUDA on a host without this GPU)
  return compute_capability(device) == 90 && tensor_map_encoder() != nullptr;
#else
  (void)dtype, (void)n, (void)k, (void)device, (void)silu_mul;
  return false;
#endif
}

void launch_gemm_sm90(const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k, DType dtype,
                      int device, bool silu_mul, int block_n, int cluster, bool persistent) {
  if (m == 0 || n == 0) return;
  BI_CHECK_ARG(gemm_sm90_serves(dtype, n, k, device, silu_mul), "gemm_sm90: does not serve ", dtype_name(dtype),
               " n=", n, " k=", k, silu_mul ? " with silu_mul" : "", " on device ", device);
  BI_CHECK_ARG(aligned16(x) && aligned16(w) && aligned16(out), "gemm_sm90: operands must be 16-byte aligned");
  BI_CHECK_ARG(m <= (int64_t{1} << 31) - 1, "gemm_sm90: m=", m, " is too large");
  if (block_n == 0) {  // 256 columns a tile where the grid still fills the GPU (and always with silu_mul)
    const int64_t tiles = ceil_div(m, kBM) * int64_t{ceil_div(n, 256)};
    block_n = silu_mul || tiles >= multiprocessor_count(device) ? 256 : 128;
  }
  BI_CHECK_ARG(block_n == 256 || (block_n == 128 && !silu_mul), "gemm_sm90: block_n ", block_n,
               " is not 256 or 128 (256 with silu_mul)");
  BI_CHECK_ARG(cluster == 1 || cluster == 2 || cluster == 4, "gemm_sm90: cluster ", cluster, " is not 1, 2 or 4");
  BI_CUDA_CHECK(cudaSetDevice(device));
  CUtensorMap tm_x, tm_w;
  BI_CHECK(operand_map(&tm_x, x, dtype, m, k, kBM / cluster) && operand_map(&tm_w, w, dtype, n, k, block_n));
  const int n_out = static_cast<int>(silu_mul ? n / 2 : n);
  // Whole clusters along n: a CTA past the last n tile still copies its share of x.
  const int m_tiles = static_cast<int>(ceil_div(m, kBM));
  const int64_t units = int64_t{m_tiles} * ((ceil_div(n, block_n) + cluster - 1) / cluster);
  BI_CHECK_ARG(units * cluster <= (int64_t{1} << 31) - 1, "gemm_sm90: m=", m, " n=", n, " is too large");
  dispatch_float(dtype, "gemm_sm90", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      auto run = [&](auto kernel, size_t smem) {
        allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, device);
        cudaLaunchConfig_t cfg{};
        cfg.blockDim = dim3(kThreads);
        cfg.dynamicSmemBytes = smem;
        cfg.stream = current_stream();
        cudaLaunchAttribute attr{};
        attr.id = cudaLaunchAttributeClusterDimension;
        attr.val.clusterDim.x = static_cast<unsigned>(cluster);
        attr.val.clusterDim.y = 1;
        attr.val.clusterDim.z = 1;
        cfg.attrs = &attr;
        cfg.numAttrs = 1;
        int64_t clusters = units;
        if (persistent)
          clusters = std::min(units, max_active_clusters(reinterpret_cast<const void*>(kernel), cfg, cluster, device));
        cfg.gridDim = dim3(static_cast<unsigned>(clusters * cluster));
        BI_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, tm_x, tm_w, static_cast<T*>(out), static_cast<int>(m), n_out,
                                         static_cast<int>(k), int64_t{n_out}, m_tiles, static_cast<int>(units)));
      };
      auto with_form = [&](auto bn, auto silu) {
        constexpr int kBN = decltype(bn)::value;
        constexpr bool kS = decltype(silu)::value;
        constexpr size_t smem = gemm_smem_bytes<kBN>();
        if (cluster == 4) run(k_gemm_sm90<T, kBN, kS, 4>, smem);
        else if (cluster == 2) run(k_gemm_sm90<T, kBN, kS, 2>, smem);
        else run(k_gemm_sm90<T, kBN, kS, 1>, smem);
      };
      using I256 = std::integral_constant<int, 256>;
      if (silu_mul) with_form(I256{}, std::true_type{});
      else if (block_n == 256) with_form(I256{}, std::false_type{});
      else with_form(std::integral_constant<int, 128>{}, std::false_type{});
    }
  });
}

}  // namespace blockinfer::cuda
