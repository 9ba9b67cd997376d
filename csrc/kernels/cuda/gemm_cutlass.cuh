// Two GEMMs built from CUTLASS's Hopper GEMM (the nvidia-cutlass package's headers;
// BLOCKINFER_WITH_CUTLASS): a TMA warp-specialized pingpong kernel, persistent, 64 token rows x 256
// weight rows a tile, each with an epilogue written here: the MLP's gate_up projection with
// SiLU·mul, and the LM head reduced to each row's greedy statistics per tile (the logits are never
// stored).
// Included only by gemm_cutlass_{bf16,f16}.cu, one instantiation each, so they build in parallel.
#pragma once

#include <cuda_runtime.h>

#include <type_traits>

#include "cutlass/arch/barrier.h"

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/collective/detail.hpp"
#include "cutlass/epilogue/thread/linear_combination.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"
#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/cuda_utils.cuh"

namespace blockinfer::cuda::cutlass_gemm {

// What Sm90TmaWarpSpecializedAdapter asks of an epilogue in CUTLASS's operator form (run by the
// consumer warpgroup on its accumulators), shared by the two below: their element types, no source
// C, no workspace, and the arguments passed to the kernel as they are.
template <class T, class StrideD_, class Arguments_>
struct OperatorEpilogue {
  using EpilogueSchedule = cutlass::epilogue::NoSmemWarpSpecialized;
  using DispatchPolicy = EpilogueSchedule;
  using ElementC = T;
  using ElementD = T;
  using ElementOutput = T;
  using ElementAccumulator = float;
  using ElementCompute = float;
  using StrideC = StrideD_;
  using StrideD = StrideD_;
  using ThreadEpilogueOp = cutlass::epilogue::thread::LinearCombination<T, 1, float, float>;  // named by the adapter
  using GmemTiledCopyC = void;
  using GmemTiledCopyD = void;
  using Arguments = Arguments_;
  using Params = Arguments_;

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(ProblemShape const&, Arguments const& a, void*) {
    return a;
  }
  template <class ProblemShape>
  static size_t get_workspace_size(ProblemShape const&, Arguments const&) {
    return 0;
  }
  template <class ProblemShape>
  static cutlass::Status initialize_workspace(ProblemShape const&, Arguments const&, void*, cudaStream_t,
                                              cutlass::CudaHostAdapter* = nullptr) {
    return cutlass::Status::kSuccess;
  }
  CUTLASS_DEVICE bool is_source_needed() { return false; }
};

template <class T>
struct SiluMulArguments {
  T* out = nullptr;  // [M, N / 2], row-major
};

// An epilogue in CUTLASS's operator form (run by the consumer warpgroup on its accumulators),
// wrapped by Sm90TmaWarpSpecializedAdapter. The GEMM's M is the tokens and its N the gate_up rows,
// interleaved in runs of 128 gate rows and the 128 up rows of the same outputs
// (ops::interleave_gate_up(w, 128)); with tiles 256 wide, a tile's column j < 128 has its up value
// in column j + 128. In the m64n256 accumulator fragment a thread holds, for each of 32 groups of
// 8 columns, two adjacent columns of two rows; groups 16-31 are the up columns of groups 0-15, so
// element i + S/2 is element i's up value (test_cuda_kernels checks the outputs against the CPU).
// Gate and up are each rounded to T first, and out = T(silu(gate) * up) with __expf, as
// k_silu_mul_vec computes it from a stored gate_up: the fused and unfused forms give the same bits.
// The 64 x 128 outputs go through shared memory (rows padded by 16 bytes: the pairs' stores hit 32
// banks) so that each warp stores two whole 256-byte output rows at a time. The pingpong kernel
// runs its two consumers' epilogues one after the other, so one buffer serves both.
template <class T, class StrideD_>
class SiluMulEpilogue : public OperatorEpilogue<T, StrideD_, SiluMulArguments<T>> {
 public:
  using Base = OperatorEpilogue<T, StrideD_, SiluMulArguments<T>>;
  using typename Base::Arguments;
  using typename Base::Params;
  static constexpr int kRows = 64, kCols = 128, kLd = kCols + 8;  // the output tile; padded rows
  struct SharedStorage {
    alignas(16) T tile[kRows * kLd];
  };
  using TensorStorage = SharedStorage;

  template <class ProblemShape>
  static bool can_implement(ProblemShape const& p, Arguments const&) {
    return cute::get<1>(p) % 256 == 0;
  }

  CUTLASS_HOST_DEVICE SiluMulEpilogue(Params const& p, SharedStorage const& = SharedStorage()) : params_(p) {}

  template <class ProblemShapeMNKL, class BlockShapeMNK, class BlockCoordMNKL, class FrgEngine, class FrgLayout,
            class TiledMma, class ResidueMNK>
  CUTLASS_DEVICE void operator()(ProblemShapeMNKL problem, BlockShapeMNK blk, BlockCoordMNKL coord,
                                 cute::Tensor<FrgEngine, FrgLayout> const& acc, TiledMma tiled_mma, ResidueMNK,
                                 int thread_idx, char* smem) {
    using namespace cute;
    static_assert(size<0>(BlockShapeMNK{}) == kRows && size<1>(BlockShapeMNK{}) == 2 * kCols,
                  "64-row tiles of 128 gate and their 128 up columns");
    const int m_total = get<0>(problem);
    const int64_t ld = get<1>(problem) / 2;
    const int m0 = get<0>(coord) * kRows, n0 = get<1>(coord) * 2 * kCols;
    T* tile = reinterpret_cast<SharedStorage*>(smem)->tile;
    // This thread's accumulator coordinates within the problem.
    Tensor cD = local_tile(make_identity_tensor(make_shape(m_total, get<1>(problem))), take<0, 2>(blk),
                           make_coord(get<0>(coord), get<1>(coord)));
    Tensor tCcD = tiled_mma.get_thread_slice(thread_idx).partition_C(cD);
    constexpr int S = decltype(size(acc))::value;
    static_assert(S % 4 == 0, "pairs of adjacent columns, gate then up halves");
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < S / 2; i += 2) {
      const auto c = tCcD(i);
      cutlass::Array<T, 2> v;
      CUTLASS_PRAGMA_UNROLL
      for (int e = 0; e < 2; ++e) {
        const float g = static_cast<float>(T(acc(i + e)));
        const float u = static_cast<float>(T(acc(i + e + S / 2)));
        v[e] = T(silu_times(g, u));
      }
      *reinterpret_cast<cutlass::Array<T, 2>*>(tile + (get<0>(c) - m0) * kLd + (get<1>(c) - n0)) = v;
    }
    const int barrier = static_cast<int>(cutlass::arch::ReservedNamedBarriers::FirstUserBarrier);
    cutlass::arch::NamedBarrier::sync(128, barrier);
    // 16 bytes a thread: half a warp stores one 256-byte output row.
    using V = cutlass::AlignedArray<T, 16 / sizeof(T)>;
    constexpr int kChunks = kCols * sizeof(T) / 16;  // per row
    T* out = params_.out + n0 / 2;
    CUTLASS_PRAGMA_UNROLL
    for (int q = thread_idx; q < kRows * kChunks; q += 128) {
      const int r = q / kChunks, col = (q % kChunks) * (16 / sizeof(T));
      if (m0 + r < m_total)
        *reinterpret_cast<V*>(out + int64_t{m0 + r} * ld + col) = *reinterpret_cast<const V*>(tile + r * kLd + col);
    }
    cutlass::arch::NamedBarrier::sync(128, barrier);  // read out before the other consumer's epilogue writes
  }

 private:
  Params params_;
};

// CUTLASS's pingpong GEMM (64 x 256 tiles, no cluster) of x [M, K] and w [N, K], both K-major (A
// row-major, B column-major in CUTLASS's terms), with epilogue Epi<T, row-major D stride>.
template <class T, template <class, class> class EpiT>
struct PingpongGemm {
  using Tile = cute::Shape<cute::_64, cute::_256, cute::_64>;
  using Cluster = cute::Shape<cute::_1, cute::_1, cute::_1>;
  using StrideD = cutlass::detail::TagToStrideC_t<cutlass::layout::RowMajor>;
  using Epi = EpiT<T, StrideD>;
  using Epilogue = cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<Epi>;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, T, cutlass::layout::RowMajor, 8, T,
      cutlass::layout::ColumnMajor, 8, float, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epi::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedPingpong>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Op = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

// The LM head's greedy statistics: for each row of a 64 x 256 tile of logits (columns past the
// vocabulary left out), its max m, the lowest column holding it, s = sum exp(l - m) and
// t = sum (l - m) exp(l - m), in float, written as one float4 (m, s, t, column's bits) to
// partials[row * n_tiles + tile column]. A thread holds, for each of 32 groups of 8 columns, two
// adjacent columns of two rows (g and g + 8 of its warp's 16: element i's row is (i / 2) % 2); it
// reduces its 64 values a row, then the quad that shares the rows merges its four partials.
// launch_lm_head_greedy merges a row's tiles (in double) into x0, log p, entropy and confidence.
struct LmHeadStatsArguments {
  float4* partials = nullptr;  // [M, n_tiles]
  int n_tiles = 0;
};

template <class T, class StrideD_>
class LmHeadStatsEpilogue : public OperatorEpilogue<T, StrideD_, LmHeadStatsArguments> {
 public:
  using Base = OperatorEpilogue<T, StrideD_, LmHeadStatsArguments>;
  using typename Base::Arguments;
  using typename Base::Params;
  static constexpr int kRows = 64, kCols = 256;
  struct SharedStorage {
    int unused;
  };
  using TensorStorage = SharedStorage;

  template <class ProblemShape>
  static bool can_implement(ProblemShape const& p, Arguments const& a) {
    return a.n_tiles == (cute::get<1>(p) + kCols - 1) / kCols;
  }

  CUTLASS_HOST_DEVICE LmHeadStatsEpilogue(Params const& p, SharedStorage const& = SharedStorage()) : params_(p) {}

  template <class ProblemShapeMNKL, class BlockShapeMNK, class BlockCoordMNKL, class FrgEngine, class FrgLayout,
            class TiledMma, class ResidueMNK>
  CUTLASS_DEVICE void operator()(ProblemShapeMNKL problem, BlockShapeMNK blk, BlockCoordMNKL coord,
                                 cute::Tensor<FrgEngine, FrgLayout> const& acc, TiledMma tiled_mma, ResidueMNK,
                                 int thread_idx, char*) {
    using namespace cute;
    static_assert(size<0>(BlockShapeMNK{}) == kRows && size<1>(BlockShapeMNK{}) == kCols, "64 x 256 tiles");
    const int m_total = get<0>(problem), n_total = get<1>(problem);
    Tensor cD = local_tile(make_identity_tensor(make_shape(m_total, n_total)), take<0, 2>(blk),
                           make_coord(get<0>(coord), get<1>(coord)));
    Tensor tCcD = tiled_mma.get_thread_slice(thread_idx).partition_C(cD);
    constexpr int S = decltype(size(acc))::value;
    static_assert(S == kCols / 2, "a thread holds 64 columns of two rows");
    float mx[2] = {-INFINITY, -INFINITY};
    int arg[2] = {n_total, n_total};
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < S; ++i) {
      const int h = (i >> 1) & 1, col = get<1>(tCcD(i));
      const float v = acc(i);
      // Columns ascend with i within a row, so a strict > keeps the lowest column of a tie.
      if (col < n_total && v > mx[h]) {
        mx[h] = v;
        arg[h] = col;
      }
    }
    float sum[2] = {0.f, 0.f}, wsum[2] = {0.f, 0.f};
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < S; ++i) {
      const int h = (i >> 1) & 1, col = get<1>(tCcD(i));
      if (col < n_total) {
        const float d = acc(i) - mx[h], e = __expf(d);
        sum[h] += e;
        wsum[h] += d * e;
      }
    }
    // The quad (lanes 4g .. 4g + 3) holds the rows' other columns: merge in a fixed order.
    CUTLASS_PRAGMA_UNROLL
    for (int h = 0; h < 2; ++h) {
      CUTLASS_PRAGMA_UNROLL
      for (int off = 1; off < 4; off <<= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, mx[h], off);
        const int a2 = __shfl_xor_sync(0xffffffffu, arg[h], off);
        const float s2 = __shfl_xor_sync(0xffffffffu, sum[h], off);
        const float w2 = __shfl_xor_sync(0xffffffffu, wsum[h], off);
        const float m = fmaxf(mx[h], m2);
        // (t + s (m_i - m)) e^(m_i - m) moves a partial's weighted sum to the new max; a partial
        // without columns (s = 0, m_i = -inf) adds nothing.
        const float d1 = mx[h] - m, d2 = m2 - m;
        const float t1 = sum[h] > 0.f ? (wsum[h] + sum[h] * d1) * __expf(d1) : 0.f;
        const float t2 = s2 > 0.f ? (w2 + s2 * d2) * __expf(d2) : 0.f;
        sum[h] = (sum[h] > 0.f ? sum[h] * __expf(d1) : 0.f) + (s2 > 0.f ? s2 * __expf(d2) : 0.f);
        wsum[h] = t1 + t2;
        if (m2 > mx[h] || (m2 == mx[h] && a2 < arg[h])) arg[h] = a2;
        mx[h] = m;
      }
    }
    if ((thread_idx & 3) != 0) return;
    CUTLASS_PRAGMA_UNROLL
    for (int h = 0; h < 2; ++h) {
      const int row = get<0>(tCcD(2 * h));
      if (row < m_total)
        params_.partials[int64_t{row} * params_.n_tiles + get<1>(coord)] =
            make_float4(mx[h], sum[h], wsum[h], __int_as_float(arg[h]));
    }
  }

 private:
  Params params_;
};

inline void check_status(cutlass::Status s, const char* what) {
  if (s != cutlass::Status::kSuccess)
    throw CudaError(str_cat("gemm_cutlass: ", what, " failed: ", cutlass::cutlassGetStatusString(s)));
}

// Runs GEMM G over x [m, k] and w [n, k]^T (both K-major) with its epilogue's arguments `epi`.
template <class G>
void run_gemm(const void* x, const void* w, int m, int n, int k, typename G::Epi::Arguments epi, int device) {
  using Kernel = typename G::Kernel;
  using T = typename G::Epi::ElementD;
  auto sa = cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, cute::make_shape(m, k, 1));
  auto sb = cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, cute::make_shape(n, k, 1));
  typename G::Op::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                 {m, n, k, 1},
                                 {static_cast<const T*>(x), sa, static_cast<const T*>(w), sb},
                                 epi};
  args.hw_info.device_id = device;
  args.hw_info.sm_count = multiprocessor_count(device);
  // Walk the tiles along M: the concurrent tiles then share a few weight tiles in L2. CUTLASS's
  // heuristic walks along N once m tiles outnumber n tiles (8,192 rows of gate_up), which spreads
  // the concurrent tiles over every weight tile (100 MB for SDAR-4B, more than the L2).
  args.scheduler.raster_order = decltype(args.scheduler.raster_order)::AlongM;
  typename G::Op op;
  check_status(op.can_implement(args), "can_implement");
  const size_t bytes = G::Op::get_workspace_size(args);
  void* workspace = bytes > 0 ? malloc_device(bytes, device) : nullptr;
  try {
    check_status(op.initialize(args, workspace, current_stream()), "initialize");
    check_status(op.run(current_stream()), "run");
    BI_CUDA_CHECK_LAUNCH();
  } catch (...) {
    if (workspace) free_device(workspace, bytes, device);
    throw;
  }
  if (workspace) free_device(workspace, bytes, device);  // stream-ordered reuse (see cuda_runtime.cu)
}

// out [m, n / 2] = silu(gate) * up of x [m, k] w [n, k]^T, w interleaved by 128 rows.
template <class T>
void run_silu_mul(const void* x, const void* w, void* out, int m, int n, int k, int device) {
  run_gemm<PingpongGemm<T, SiluMulEpilogue>>(x, w, m, n, k, {static_cast<T*>(out)}, device);
}

// partials [m, ceil(n / 256)] of x [m, k] w [n, k]^T (LmHeadStatsEpilogue).
template <class T>
void run_lm_head_stats(const void* x, const void* w, void* partials, int m, int n, int k, int device) {
  run_gemm<PingpongGemm<T, LmHeadStatsEpilogue>>(x, w, m, n, k, {static_cast<float4*>(partials), (n + 255) / 256}, device);
}

}  // namespace blockinfer::cuda::cutlass_gemm
