// The CUTLASS-built GEMMs' entry points (gemm_cutlass.cuh holds the kernels): gate_up + SiLU·mul,
// and the LM head reduced to greedy sampling with the kernel that merges its tiles. Without the
// nvidia-cutlass headers at build time (BLOCKINFER_WITH_CUTLASS off) they never serve.
#include <cstdint>

#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/launchers.h"

namespace blockinfer::cuda {
#if BLOCKINFER_WITH_CUTLASS && BLOCKINFER_WGMMA
namespace cutlass_gemm {
void silu_mul_bf16(const void* x, const void* w, void* out, int m, int n, int k, int device);
void silu_mul_f16(const void* x, const void* w, void* out, int m, int n, int k, int device);
void lm_head_stats_bf16(const void* x, const void* w, void* partials, int m, int n, int k, int device);
void lm_head_stats_f16(const void* x, const void* w, void* partials, int m, int n, int k, int device);
}  // namespace cutlass_gemm
#endif

namespace {

// Whether this build and `device` run the CUTLASS kernels (sm_90a code on compute capability 9.0).
bool cutlass_device(DType dtype, int device) {
#if BLOCKINFER_WITH_CUTLASS && BLOCKINFER_WGMMA
  if (dtype != DType::kBFloat16 && dtype != DType::kFloat16) return false;
  if (device < 0 || device >= device_count()) return false;
  return compute_capability(device) == 90;
#else
  (void)dtype, (void)device;
  return false;
#endif
}

constexpr int kLmHeadTile = 256;  // vocabulary columns of a tile (LmHeadStatsEpilogue)

// One warp a row: lane j merges tiles j, j + 32, ... in order, in double, then the lanes merge by
// an xor butterfly (a fixed order, so the bits do not depend on the launch).
__global__ void k_lm_head_greedy_merge(const float4* __restrict__ partials, int64_t m, int n_tiles, int vocab,
                                       int32_t* __restrict__ x0, float* __restrict__ confidence,
                                       float* __restrict__ logprob, float* __restrict__ entropy) {
  const int64_t row = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= m) return;
  float mx = -INFINITY;
  int arg = 0x7fffffff;
  double s = 0.0, t = 0.0;
  // (t + s (m_i - m)) e^(m_i - m): a partial's weighted sum moved to the max m.
  auto merge = [](float& mx, int& arg, double& s, double& t, float m2, int a2, double s2, double t2) {
    const float m = fmaxf(mx, m2);
    const double d1 = static_cast<double>(mx) - m, d2 = static_cast<double>(m2) - m;
    const double e1 = s > 0.0 ? exp(d1) : 0.0, e2 = s2 > 0.0 ? exp(d2) : 0.0;
    t = (s > 0.0 ? (t + s * d1) * e1 : 0.0) + (s2 > 0.0 ? (t2 + s2 * d2) * e2 : 0.0);
    s = s * e1 + s2 * e2;
    if (m2 > mx || (m2 == mx && a2 < arg)) arg = a2;
    mx = m;
  };
  for (int i = lane; i < n_tiles; i += 32) {
    const float4 p = partials[row * n_tiles + i];
    merge(mx, arg, s, t, p.x, __float_as_int(p.w), p.y, p.z);
  }
  for (int off = 16; off > 0; off >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, mx, off);
    const int a2 = __shfl_xor_sync(0xffffffffu, arg, off);
    const double s2 = __shfl_xor_sync(0xffffffffu, s, off), t2 = __shfl_xor_sync(0xffffffffu, t, off);
    merge(mx, arg, s, t, m2, a2, s2, t2);
  }
  if (lane != 0) return;
  // p[x0] = e^0 / S; log p = -log S; H = log S - T / S (sample_rows' entropy_of). A row without a
  // max (every logit NaN: a broken model) still gets a token id inside the vocabulary.
  x0[row] = arg < vocab ? arg : 0;
  confidence[row] = static_cast<float>(1.0 / s);
  logprob[row] = static_cast<float>(-log(s));
  entropy[row] = static_cast<float>(fmax(0.0, log(s) - t / s));
}

}  // namespace

bool gemm_cutlass_silu_mul_serves(DType dtype, int64_t inter, int64_t k, int device) {
  return cutlass_device(dtype, device) && inter > 0 && inter % 128 == 0 && k > 0 && k % 8 == 0 &&
         2 * inter <= (int64_t{1} << 30) && k <= (int64_t{1} << 30);
}

void launch_gemm_cutlass_silu_mul(const void* x, const void* w, void* out, int64_t m, int64_t inter, int64_t k,
                                  DType dtype, int device) {
  BI_CHECK_ARG(gemm_cutlass_silu_mul_serves(dtype, inter, k, device), "gemm_cutlass silu_mul: does not serve ",
               dtype_name(dtype), " inter=", inter, " k=", k, " on device ", device);
  BI_CHECK_ARG(m <= (int64_t{1} << 30), "gemm_cutlass silu_mul: m=", m, " is too large");
  BI_CHECK_ARG(aligned16(x) && aligned16(w) && aligned16(out), "gemm_cutlass silu_mul: operands must be 16-byte aligned");
  if (m == 0) return;
#if BLOCKINFER_WITH_CUTLASS && BLOCKINFER_WGMMA
  BI_CUDA_CHECK(cudaSetDevice(device));
  const int mi = static_cast<int>(m), n = static_cast<int>(2 * inter), ki = static_cast<int>(k);
  if (dtype == DType::kBFloat16) cutlass_gemm::silu_mul_bf16(x, w, out, mi, n, ki, device);
  else cutlass_gemm::silu_mul_f16(x, w, out, mi, n, ki, device);
#endif
}

bool gemm_cutlass_lm_head_greedy_serves(DType dtype, int64_t vocab, int64_t k, int device) {
  return cutlass_device(dtype, device) && vocab > 0 && vocab <= (int64_t{1} << 30) && k > 0 && k % 8 == 0 &&
         k <= (int64_t{1} << 30);
}

int64_t lm_head_greedy_partial_floats(int64_t m, int64_t vocab) { return m * ((vocab + kLmHeadTile - 1) / kLmHeadTile) * 4; }

void launch_lm_head_greedy(const void* x, const void* w, float* partials, int32_t* x0, float* confidence,
                           float* logprob, float* entropy, int64_t m, int64_t vocab, int64_t k, DType dtype,
                           int device) {
  BI_CHECK_ARG(gemm_cutlass_lm_head_greedy_serves(dtype, vocab, k, device), "gemm_cutlass lm_head_greedy: does not "
               "serve ", dtype_name(dtype), " vocab=", vocab, " k=", k, " on device ", device);
  BI_CHECK_ARG(m <= (int64_t{1} << 30), "gemm_cutlass lm_head_greedy: m=", m, " is too large");
  BI_CHECK_ARG(aligned16(x) && aligned16(w) && aligned16(partials), "gemm_cutlass lm_head_greedy: operands must be "
               "16-byte aligned");
  if (m == 0) return;
#if BLOCKINFER_WITH_CUTLASS && BLOCKINFER_WGMMA
  BI_CUDA_CHECK(cudaSetDevice(device));
  const int mi = static_cast<int>(m), n = static_cast<int>(vocab), ki = static_cast<int>(k);
  if (dtype == DType::kBFloat16) cutlass_gemm::lm_head_stats_bf16(x, w, partials, mi, n, ki, device);
  else cutlass_gemm::lm_head_stats_f16(x, w, partials, mi, n, ki, device);
  constexpr int kRowsPerBlock = 4;
  k_lm_head_greedy_merge<<<static_cast<unsigned>(ceil_div(m, int64_t{kRowsPerBlock})), kRowsPerBlock * 32, 0,
                           current_stream()>>>(reinterpret_cast<const float4*>(partials), m,
                                               static_cast<int>((vocab + kLmHeadTile - 1) / kLmHeadTile),
                                               static_cast<int>(vocab), x0,
                                               confidence, logprob, entropy);
  BI_CUDA_CHECK_LAUNCH();
#else
  (void)x0, (void)confidence, (void)logprob, (void)entropy;
#endif
}

}  // namespace blockinfer::cuda
