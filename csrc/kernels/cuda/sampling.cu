// Fused per-row sampling for rows without a top-k/top-p filter (the rules of
// kernels/cpu/sampling.cc): one CTA per row makes three passes over the vocabulary (max and
// argmax; sum of exp and the entropy term; the Gumbel-max draw with Philox noise keyed by
// (seed, step, position, token)) and never materialises probabilities. Sums are accumulated in
// double and the noise is computed in double, as on the CPU, so float32 logits give the CPU's
// tokens.
#include <cfloat>

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

__global__ void __launch_bounds__(kThreads)
k_sample_rows(const float* __restrict__ logits,  // [rows, vocab]
              const cpu::SampleRowParams* __restrict__ params, int32_t* __restrict__ x0,
              float* __restrict__ confidence, float* __restrict__ logprob, float* __restrict__ entropy,
              int64_t vocab) {
  __shared__ ArgMax sh_arg[kThreads / 32];
  __shared__ double sh_sum[kThreads / 32];
  const int64_t row = blockIdx.x;
  const float* l = logits + row * vocab;
  const cpu::SampleRowParams p = params[row];
  const bool greedy = p.temperature == 0.f;
  auto z_of = [&](int64_t i) { return greedy ? l[i] : l[i] / p.temperature; };

  // Pass 1: max of z (and the greedy argmax).
  ArgMax best{-DBL_MAX, -1};
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) best = better(best, ArgMax{z_of(i), static_cast<int32_t>(i)});
  best = block_argmax(best, sh_arg);
  const float m = static_cast<float>(best.value);
  // Pass 2: S = sum exp(z - m) and W = sum (z - m) exp(z - m), in double.
  double s = 0.0, w = 0.0;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const double d = static_cast<double>(z_of(i) - m);
    const double e = exp(d);
    s += e;
    w += d * e;
  }
  s = block_sum(s, sh_sum);
  w = block_sum(w, sh_sum);
  int32_t token = best.index;
  if (!greedy) {
    // Pass 3: the Gumbel-max draw over the whole vocabulary.
    ArgMax draw{-DBL_MAX, -1};
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      const double score = static_cast<double>(z_of(i)) +
                           token_gumbel(p.seed, p.step, p.position, static_cast<uint32_t>(i));
      draw = better(draw, ArgMax{score, static_cast<int32_t>(i)});
    }
    token = block_argmax(draw, sh_arg).index;
  }
  double conf = exp(static_cast<double>(z_of(token) - m)) / s;
  if (p.confidence_kind == cpu::ConfidenceKind::kUntempered && !greedy) {
    ArgMax raw{-DBL_MAX, -1};
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) raw = better(raw, ArgMax{l[i], static_cast<int32_t>(i)});
    const float raw_max = static_cast<float>(block_argmax(raw, sh_arg).value);
    double raw_sum = 0.0;
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) raw_sum += exp(static_cast<double>(l[i] - raw_max));
    raw_sum = block_sum(raw_sum, sh_sum);
    conf = exp(static_cast<double>(l[token] - raw_max)) / raw_sum;
  } else if (p.confidence_kind == cpu::ConfidenceKind::kRandom) {
    conf = position_uniform(p.seed, p.step, p.position);
  }
  if (threadIdx.x == 0) {
    x0[row] = token;
    confidence[row] = static_cast<float>(conf);
    logprob[row] = static_cast<float>(static_cast<double>(z_of(token) - m) - log(s));
    entropy[row] = static_cast<float>(fmax(0.0, log(s) - w / s));
  }
}

}  // namespace

void launch_sample_rows(const float* logits, const cpu::SampleRowParams* params, int32_t* x0,
                        float* confidence, float* logprob, float* entropy, int64_t num_rows,
                        int64_t vocab, int device) {
  if (num_rows == 0) return;
  BI_CUDA_CHECK(cudaSetDevice(device));
  k_sample_rows<<<static_cast<unsigned>(num_rows), kThreads>>>(logits, params, x0, confidence, logprob,
                                                               entropy, vocab);
  BI_CUDA_CHECK_LAUNCH();
}

}  // namespace blockinfer::cuda
