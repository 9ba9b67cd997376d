// The MLP's gate_up projection with SiLU·mul in its epilogue, built from CUTLASS's Hopper GEMM
// (the nvidia-cutlass package's headers; BLOCKINFER_WITH_CUTLASS): a TMA warp-specialized pingpong
// kernel, persistent, 64 token rows x 256 weight rows a tile, and an epilogue written here.
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
#include "kernels/cuda/cuda_utils.cuh"

namespace blockinfer::cuda::cutlass_gemm {

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
class SiluMulEpilogue {
 public:
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
  static constexpr int kRows = 64, kCols = 128, kLd = kCols + 8;  // the output tile; padded rows
  struct SharedStorage {
    alignas(16) T tile[kRows * kLd];
  };
  using TensorStorage = SharedStorage;
  struct Arguments {
    T* out = nullptr;  // [M, N / 2], row-major
  };
  using Params = Arguments;

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
  template <class ProblemShape>
  static bool can_implement(ProblemShape const& p, Arguments const&) {
    return cute::get<1>(p) % 256 == 0;
  }

  CUTLASS_HOST_DEVICE SiluMulEpilogue(Params const& p, SharedStorage const& = SharedStorage()) : params_(p) {}
  CUTLASS_DEVICE bool is_source_needed() { return false; }

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
        v[e] = T(g / (1.f + __expf(-g)) * u);
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

template <class T>
struct SiluMulGemm {
  using Tile = cute::Shape<cute::_64, cute::_256, cute::_64>;
  using Cluster = cute::Shape<cute::_1, cute::_1, cute::_1>;
  using StrideD = cutlass::detail::TagToStrideC_t<cutlass::layout::RowMajor>;
  using Epi = SiluMulEpilogue<T, StrideD>;
  using Epilogue = cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<Epi>;
  // x [M, K] and w [N, K], both K-major (A row-major, B column-major in CUTLASS's terms).
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, T, cutlass::layout::RowMajor, 8, T,
      cutlass::layout::ColumnMajor, 8, float, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epi::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedPingpong>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Op = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

inline void check_status(cutlass::Status s, const char* what) {
  if (s != cutlass::Status::kSuccess)
    throw CudaError(str_cat("gemm_cutlass silu_mul: ", what, " failed: ", cutlass::cutlassGetStatusString(s)));
}

// out [m, n / 2] = silu(gate) * up of x [m, k] w [n, k]^T, w interleaved by 128 rows.
template <class T>
void run_silu_mul(const void* x, const void* w, void* out, int m, int n, int k, int device) {
  using G = SiluMulGemm<T>;
  using Kernel = typename G::Kernel;
  auto sa = cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, cute::make_shape(m, k, 1));
  auto sb = cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, cute::make_shape(n, k, 1));
  typename G::Op::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                 {m, n, k, 1},
                                 {static_cast<const T*>(x), sa, static_cast<const T*>(w), sb},
                                 {static_cast<T*>(out)}};
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

}  // namespace blockinfer::cuda::cutlass_gemm
