// Fused per-row sampling for rows without a top-k/top-p filter (the rules of
// kernels/cpu/sampling.cc). Each row's vocabulary is cut into fixed slices of 4096 tokens, one CTA
// per (row, slice), so a handful of rows still fills the GPU; a CTA makes three passes over its
// slice (max and argmax; sum of exp and the entropy term; the Gumbel-max draw with Philox noise
// keyed by (seed, step, position, token)) and a second kernel merges the slices of each row.
// Probabilities are never materialised. Sums are accumulated in
// double and the noise is computed in double, as on the CPU, so float32 logits give the CPU's
// tokens.
#include <cfloat>
#include <map>
#include <mutex>
#include <utility>

#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/philox.h"

namespace blockinfer::cuda {
namespace {

constexpr int kThreads = 256;

struct ArgMax {
  double value;
  int32_t index;
};

// Larger value wins; equal values go to the lower index.
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  if (b.index < 0) return a;
  if (a.index < 0) return b;
  return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
}

__device__ ArgMax block_argmax(ArgMax v, ArgMax* sh) {
  for (int off = 16; off > 0; off >>= 1) {
    ArgMax o{__shfl_xor_sync(0xffffffffu, v.value, off), __shfl_xor_sync(0xffffffffu, v.index, off)};
    v = better(v, o);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  ArgMax r = sh[0];
  for (int w = 1; w < kThreads / 32; ++w) r = better(r, sh[w]);
  return r;
}

__device__ double block_sum(double v, double* sh) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  double r = 0.0;
  for (int w = 0; w < kThreads / 32; ++w) r += sh[w];
  return r;
}

// One slice of a row's vocabulary: the statistics the merge needs, each relative to the slice's
// own maximum so that slices are independent.
struct SlicePartial {
  double m;        // max of z = logit / T (the logit when greedy), and its first index
  int32_t argmax;
  double s, w;     // sum exp(z - m), sum (z - m) exp(z - m)
  double gumbel;   // best z + Gumbel noise and its first index (sampled rows)
  int32_t draw;
  double raw_m, raw_s;  // max and sum exp(l - raw_m) of the untempered logits (when needed)
};

constexpr int64_t kSlice = 4096;  // fixed: a row's result never depends on the batch
constexpr int kPerThread = kSlice / kThreads;

__global__ void __launch_bounds__(kThreads)
k_sample_slices(const float* __restrict__ logits,  // [rows, vocab]
                const cpu::SampleRowParams* __restrict__ params, SlicePartial* __restrict__ partials,
                int64_t vocab) {
  __shared__ ArgMax sh_arg[kThreads / 32];
  __shared__ double sh_sum[kThreads / 32];
  const int64_t row = blockIdx.x, slice = blockIdx.y;
  const int64_t v0 = slice * kSlice, v1 = min(vocab, v0 + kSlice);
  const cpu::SampleRowParams p = params[row];
  const bool greedy = p.temperature == 0.f;
  // The slice's logits, read once into registers (coalesced); every pass below reuses them.
  float l[kPerThread];
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = v0 + threadIdx.x + k * kThreads;
    l[k] = i < v1 ? logits[row * vocab + i] : 0.f;
  }
  auto index = [&](int k) { return v0 + threadIdx.x + k * kThreads; };
  auto z_of = [&](int k) { return greedy ? l[k] : l[k] / p.temperature; };

  // Pass 1: max of z (and the greedy argmax).
  ArgMax best{-DBL_MAX, -1};
#pragma unroll
  for (int k = 0; k < kPerThread; ++k)
    if (index(k) < v1) best = better(best, ArgMax{z_of(k), static_cast<int32_t>(index(k))});
  best = block_argmax(best, sh_arg);
  const float m = static_cast<float>(best.value);
  // Pass 2: S and W relative to the slice max, in double.
  double s = 0.0, w = 0.0;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    if (index(k) >= v1) continue;
    const double d = static_cast<double>(z_of(k) - m);
    const double e = exp(d);
    s += e;
    w += d * e;
  }
  s = block_sum(s, sh_sum);
  w = block_sum(w, sh_sum);
  ArgMax draw{-DBL_MAX, -1};
  if (!greedy) {
    // Pass 3: the Gumbel-max draw.
    for (int k = 0; k < kPerThread; ++k) {
      if (index(k) >= v1) continue;
      const double score = static_cast<double>(z_of(k)) +
                           token_gumbel(p.seed, p.step, p.position, static_cast<uint32_t>(index(k)));
      draw = better(draw, ArgMax{score, static_cast<int32_t>(index(k))});
    }
    draw = block_argmax(draw, sh_arg);
  }
  double raw_m = 0.0, raw_s = 0.0;
  if (p.confidence_kind == cpu::ConfidenceKind::kUntempered && !greedy) {
    ArgMax raw{-DBL_MAX, -1};
    for (int k = 0; k < kPerThread; ++k)
      if (index(k) < v1) raw = better(raw, ArgMax{l[k], static_cast<int32_t>(index(k))});
    const float rm = static_cast<float>(block_argmax(raw, sh_arg).value);
    for (int k = 0; k < kPerThread; ++k)
      if (index(k) < v1) raw_s += exp(static_cast<double>(l[k] - rm));
    raw_s = block_sum(raw_s, sh_sum);
    raw_m = rm;
  }
  if (threadIdx.x == 0)
    partials[row * gridDim.y + slice] = SlicePartial{best.value, best.index, s, w, draw.value, draw.index, raw_m, raw_s};
}

// Combines a row's slices in slice order (ties keep the lowest index, as on the CPU).
__global__ void k_sample_merge(const float* __restrict__ logits, const cpu::SampleRowParams* __restrict__ params,
                               const SlicePartial* __restrict__ partials, int num_slices, int64_t num_rows,
                               int32_t* __restrict__ x0, float* __restrict__ confidence, float* __restrict__ logprob,
                               float* __restrict__ entropy, int64_t vocab) {
  const int64_t row = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (row >= num_rows) return;
  const SlicePartial* part = partials + row * num_slices;
  const cpu::SampleRowParams p = params[row];
  const bool greedy = p.temperature == 0.f;
  ArgMax best{-DBL_MAX, -1}, draw{-DBL_MAX, -1};
  double raw_max = -DBL_MAX;
  for (int j = 0; j < num_slices; ++j) {
    best = better(best, ArgMax{part[j].m, part[j].argmax});
    draw = better(draw, ArgMax{part[j].gumbel, part[j].draw});
    raw_max = fmax(raw_max, part[j].raw_m);
  }
  const double m = best.value;
  double s = 0.0, w = 0.0, raw_sum = 0.0;
  for (int j = 0; j < num_slices; ++j) {
    const double shift = part[j].m - m, scale = exp(shift);
    s += part[j].s * scale;
    w += (part[j].w + shift * part[j].s) * scale;
    raw_sum += part[j].raw_s * exp(part[j].raw_m - raw_max);
  }
  const int32_t token = greedy ? best.index : draw.index;
  const float* l = logits + row * vocab;
  const float z_tok = greedy ? l[token] : l[token] / p.temperature;
  double conf = exp(static_cast<double>(z_tok - static_cast<float>(m))) / s;
  if (p.confidence_kind == cpu::ConfidenceKind::kUntempered && !greedy) {
    conf = exp(static_cast<double>(l[token] - static_cast<float>(raw_max))) / raw_sum;
  } else if (p.confidence_kind == cpu::ConfidenceKind::kRandom) {
    conf = position_uniform(p.seed, p.step, p.position);
  }
  x0[row] = token;
  confidence[row] = static_cast<float>(conf);
  logprob[row] = static_cast<float>(static_cast<double>(z_tok - static_cast<float>(m)) - log(s));
  entropy[row] = static_cast<float>(fmax(0.0, log(s) - w / s));
}

}  // namespace

void launch_sample_rows(const float* logits, const cpu::SampleRowParams* params, int32_t* x0,
                        float* confidence, float* logprob, float* entropy, int64_t num_rows,
                        int64_t vocab, int device) {
  if (num_rows == 0) return;
  BI_CUDA_CHECK(cudaSetDevice(device));
  const int slices = static_cast<int>((vocab + kSlice - 1) / kSlice);
  // A grow-only workspace for the slice partials: reallocated (after the stream drains) only when
  // a larger batch needs more. Sampling runs after the forward, outside any CUDA graph.
  static std::mutex mu;
  static std::map<int, std::pair<void*, size_t>> workspaces;
  const size_t need = static_cast<size_t>(num_rows) * slices * sizeof(SlicePartial);
  SlicePartial* partials = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto& ws = workspaces[device];
    if (ws.second < need) {
      if (ws.first) {
        BI_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
        BI_CUDA_CHECK(cudaFree(ws.first));
      }
      BI_CUDA_CHECK(cudaMalloc(&ws.first, need));
      ws.second = need;
    }
    partials = static_cast<SlicePartial*>(ws.first);
  }
  k_sample_slices<<<dim3(static_cast<unsigned>(num_rows), static_cast<unsigned>(slices)), kThreads, 0,
                    current_stream()>>>(logits, params, partials, vocab);
  BI_CUDA_CHECK_LAUNCH();
  k_sample_merge<<<ceil_div(num_rows, 128), 128, 0, current_stream()>>>(logits, params, partials, slices, num_rows,
                                                                        x0, confidence, logprob, entropy, vocab);
  BI_CUDA_CHECK_LAUNCH();
}

}  // namespace blockinfer::cuda
