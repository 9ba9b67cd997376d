// The remasking selection of a denoise step on the device (kernels/cpu/remasking.cc is the
// reference): one CTA per sequence's segment of sampled rows. A stable sort's rank is computed
// directly, rank(i) = #{j : v_j before v_i} + #{j < i : v_j == v_i}, so ties go to the lower row as
// on the CPU; the few rules that walk the sorted order (entropy_bounded, confidence_factor) run on
// one thread over the inverse permutation.
#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/launchers.h"

namespace blockinfer::cuda {
namespace {

constexpr int kThreads = 128;

// Rank of row i in the segment's stable order of v: descending, or ascending.
__device__ int32_t stable_rank(const float* v, int32_t m, int32_t i, bool descending) {
  const float x = v[i];
  int32_t r = 0;
  for (int32_t j = 0; j < m; ++j) {
    const float y = v[j];
    r += (descending ? y > x : y < x) || (y == x && j < i);
  }
  return r;
}

enum Mode : int32_t { kNone, kAll, kFirst, kIndexBelow, kRankBelow, kAbove, kTopOrAtLeast };

__global__ void __launch_bounds__(kThreads)
k_select_unmask(const float* __restrict__ confidence, const float* __restrict__ entropy,
                const cpu::RemaskSegment* __restrict__ segments, int32_t* __restrict__ chosen,
                int32_t* __restrict__ rank, int32_t* __restrict__ order) {
  const cpu::RemaskSegment s = segments[blockIdx.x];
  const int32_t m = s.rows;
  if (m <= 0) return;
  const float* c = confidence + s.row_begin;
  const float* h = entropy + s.row_begin;
  rank += s.row_begin;
  order += s.row_begin;
  const bool by_entropy = s.strategy == RemaskingStrategy::kEntropyBounded;
  const bool plain = !s.skip && !s.first_only && !s.last_step;
  if (plain) {
    for (int32_t i = threadIdx.x; i < m; i += kThreads) order[i] = i;  // in range even if NaNs tie ranks
    __syncthreads();
    // entropy_bounded ranks by entropy (ascending), everything else by confidence (descending).
    for (int32_t i = threadIdx.x; i < m; i += kThreads) {
      const int32_t r = by_entropy ? stable_rank(h, m, i, false) : stable_rank(c, m, i, true);
      rank[i] = r;
      order[r] = i;
    }
  }
  __syncthreads();
  __shared__ int32_t mode, limit;
  if (threadIdx.x == 0) {
    const int32_t n = min(s.n_t, m);
    int32_t md = kNone, k = 0;
    if (s.skip) {
      md = kNone;
    } else if (s.first_only) {
      md = kFirst;
    } else if (s.last_step) {
      md = kAll;
    } else {
      switch (s.strategy) {
        case RemaskingStrategy::kSequential:
          md = kIndexBelow, k = n;
          break;
        case RemaskingStrategy::kLowConfidenceDynamic: {
          int32_t high = 0;
          for (int32_t i = 0; i < m; ++i) high += c[i] > s.dynamic_threshold;
          if (high >= s.n_t) {
            md = kAbove, k = high;
          } else {
            md = kRankBelow, k = n;
          }
          break;
        }
        case RemaskingStrategy::kEntropyBounded: {
          double sum = 0.0;
          for (int32_t r = 0; r < m; ++r) {
            sum += static_cast<double>(h[order[r]]);
            if (sum < static_cast<double>(s.eb_threshold)) ++k;
          }
          md = kRankBelow, k = max(k, 1);
          break;
        }
        case RemaskingStrategy::kConfidenceThreshold:
          md = kTopOrAtLeast, k = 1;
          break;
        case RemaskingStrategy::kConfidenceFactor:
          k = 1;
          while (k < m && static_cast<double>(c[order[k]]) >= 1.0 - static_cast<double>(s.factor) / (k + 2)) ++k;
          md = kRankBelow;
          break;
        default:  // kLowConfidenceStatic, kLowConfidence, kRandom (the op rejects the rest)
          md = kRankBelow, k = n;
          break;
      }
      // At least one row while any is masked: the most confident (by_entropy never gets here).
      if ((md == kIndexBelow || md == kRankBelow || md == kAbove) && k <= 0) md = kRankBelow, k = 1;
    }
    mode = md;
    limit = k;
  }
  __syncthreads();
  for (int32_t i = threadIdx.x; i < m; i += kThreads) {
    bool on = false;
    switch (mode) {
      case kAll: on = true; break;
      case kFirst: on = i == 0; break;
      case kIndexBelow: on = i < limit; break;
      case kRankBelow: on = rank[i] < limit; break;
      case kAbove: on = c[i] > s.dynamic_threshold; break;
      case kTopOrAtLeast: on = rank[i] == 0 || c[i] >= s.dynamic_threshold; break;
      default: break;
    }
    chosen[s.row_begin + i] = on ? 1 : 0;
  }
}

}  // namespace

void launch_select_unmask(const float* confidence, const float* entropy, const cpu::RemaskSegment* segments,
                          int64_t num_segments, int32_t* chosen, int32_t* workspace, int64_t num_rows, int device) {
  if (num_segments == 0) return;
  BI_CUDA_CHECK(cudaSetDevice(device));
  k_select_unmask<<<static_cast<unsigned>(num_segments), kThreads, 0, current_stream()>>>(
      confidence, entropy, segments, chosen, workspace, workspace + num_rows);
  BI_CUDA_CHECK_LAUNCH();
}

namespace {
// Blocks [0, scatter_blocks) scatter the chosen tokens (a thread a sampled row); the rest compact the
// runs' unfilled candidates, a warp a run (ballots keep the order).
__global__ void k_carry_decisions(const int32_t* x0, const int32_t* chosen, const int32_t* targets, int32_t* ids,
                                  int64_t num_rows, unsigned scatter_blocks, const int32_t* candidate_rows,
                                  const int32_t* candidate_sources, const int4* runs, int64_t num_runs,
                                  int32_t* logit_rows) {
  if (blockIdx.x < scatter_blocks) {
    const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (r < num_rows && chosen[r] && targets[r] >= 0) ids[targets[r]] = x0[r];
    return;
  }
  const int64_t k = static_cast<int64_t>(blockIdx.x - scatter_blocks) * (blockDim.x / 32) + threadIdx.x / 32;
  if (k >= num_runs) return;  // (uniform over the warp)
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int4 run = runs[k];  // first candidate, candidates, first logit row, logit rows
  int written = 0;
  for (int c = 0; c < run.y && written < run.w; c += 32) {
    const int i = run.x + c + lane;
    bool keep = false;
    if (c + lane < run.y) {
      const int32_t src = candidate_sources[i];
      keep = src < 0 || chosen[src] == 0;
    }
    const unsigned m = __ballot_sync(0xffffffffu, keep);
    const int at = written + __popc(m & ((1u << lane) - 1u));
    if (keep && at < run.w) logit_rows[run.z + at] = candidate_rows[i];
    written += __popc(m);
  }
}
}  // namespace

void launch_carry_decisions(const int32_t* x0, const int32_t* chosen, const int32_t* targets, int32_t* ids,
                            int64_t num_rows, const int32_t* candidate_rows, const int32_t* candidate_sources,
                            const int32_t* runs, int64_t num_runs, int32_t* logit_rows, int device) {
  if (num_rows == 0 && num_runs == 0) return;
  BI_CUDA_CHECK(cudaSetDevice(device));
  const int threads = 256;
  const int64_t scatter_blocks = (num_rows + threads - 1) / threads, run_blocks = (num_runs + threads / 32 - 1) / (threads / 32);
  k_carry_decisions<<<static_cast<unsigned>(scatter_blocks + run_blocks), threads, 0, current_stream()>>>(
      x0, chosen, targets, ids, num_rows, static_cast<unsigned>(scatter_blocks), candidate_rows, candidate_sources,
      reinterpret_cast<const int4*>(runs), num_runs, logit_rows);
  BI_CUDA_CHECK_LAUNCH();
}

}  // namespace blockinfer::cuda
