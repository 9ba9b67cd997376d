#include "ops/linear.h"

#include <algorithm>

#include "kernels/cpu/kernels.h"
#include "kernels/cuda/launchers.h"
#include "core/env_switch.h"
#include "core/profiler.h"
#include "ops/activation.h"
#include "ops/common.h"

namespace blockinfer::ops {
namespace {

// For 2-D x, weight and out (each op checks that with its own names): x [m, k], weight [n, k] and
// out [m, n / weight_rows_per_out], all contiguous on x's device, weight in x's dtype.
void check_projection(const char* op, const Tensor& x, const Tensor& weight, const Tensor& out,
                      int64_t weight_rows_per_out) {
  BI_CHECK_ARG(weight.size(0) % weight_rows_per_out == 0, op, ": weight ", weight.shape_str(), " has ",
               weight.size(0), " rows, not a multiple of ", weight_rows_per_out);
  const int64_t out_cols = weight.size(0) / weight_rows_per_out;
  BI_CHECK_ARG(x.size(1) == weight.size(1), op, ": x has ", x.size(1), " features but weight ",
               weight.shape_str(), " expects ", weight.size(1));
  BI_CHECK_ARG(out.size(0) == x.size(0) && out.size(1) == out_cols, op, ": out shape ", out.shape_str(), " != [",
               x.size(0), ", ", out_cols, "]");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&x, &weight, &out}) {
    check_compute(*t, x.device(), op);
    check_contiguous(*t, op);
  }
  BI_CHECK_ARG(weight.dtype() == x.dtype(), op, ": weight dtype ", dtype_name(weight.dtype()), " != x dtype ",
               dtype_name(x.dtype()));
}

}  // namespace

void linear(const Tensor& x, const Tensor& weight, Tensor& out, bool accumulate) {
  OpTimer timer("gemm", x.device());
  check_dim(x, 2, "linear: x");
  check_dim(weight, 2, "linear: weight");
  check_dim(out, 2, "linear: out");
  check_projection("linear", x, weight, out, 1);
  if (x.device().is_cpu()) {
    Tensor prod = accumulate ? Tensor::empty(out.shape(), DType::kFloat32) : out;
    cpu::linear(x.data<float>(), weight.data<float>(), prod.data<float>(), x.size(0), weight.size(0),
                x.size(1));
    if (accumulate) {
      float* o = out.data<float>();
      const float* p = prod.data<float>();
      for (int64_t i = 0; i < out.numel(); ++i) o[i] += p[i];
    }
    return;
  }
  cuda::launch_gemm(x.raw_data(), weight.raw_data(), out.raw_data(), x.size(0), weight.size(0),
                    x.size(1), x.dtype(), out.dtype(), x.device().index, accumulate);
}

namespace {

// Which fused kernel the process runs (the switches are read once): gemm_sm90 when opted in, else
// CUTLASS's unless switched off.
enum class FusedKernel { kCutlass, kSm90, kNone };
FusedKernel fused_kernel() {
  static const FusedKernel k = env_switch("BLOCKINFER_GEMM_SM90") == 1     ? FusedKernel::kSm90
                               : env_switch("BLOCKINFER_GEMM_CUTLASS") == 0 ? FusedKernel::kNone
                                                                           : FusedKernel::kCutlass;
  return k;
}

}  // namespace

int64_t fused_silu_mul_block(DType dtype, Device device, int64_t inter, int64_t k) {
  constexpr int64_t kBlock = 128;  // half of both kernels' 256-column tile
  if (!device.is_cuda() || inter % kBlock != 0) return 0;
  switch (fused_kernel()) {
    case FusedKernel::kCutlass: return cuda::gemm_cutlass_silu_mul_serves(dtype, inter, k, device.index) ? kBlock : 0;
    case FusedKernel::kSm90: return cuda::gemm_sm90_serves(dtype, 2 * inter, k, device.index, true) ? kBlock : 0;
    case FusedKernel::kNone: return 0;
  }
  return 0;
}

bool fused_silu_mul_takes(int64_t m) {
  // CUTLASS's: kept running alone on an H100 it beat cuBLASLt's gate_up and the SiLU·mul kernel
  // from 320 to 4,096 rows (5-32%); 8,192 rows are 9% slower alone (BENCHMARKS.md, twenty-sixth and
  // twenty-seventh sessions). In the engine, forwards of 640 rows (SDAR-4B batch 128 block 4 with
  // its requests one step apart) ran 0.8-1.5% slower with it (thirty-second and thirty-third
  // sessions), but the same batch denoising in lockstep (EngineConfig::prefill_first), forwards of
  // 512 and 1,024 rows, ran 1.0-1.3% faster with it from 512 rows, and 0.3-1.0% with it at 1,024
  // rows only (thirty-sixth session). Below 512 rows it has not paid (forwards of 256-320 rows, up
  // to 2.3% slower). Larger batches (prefill chunks) take it in launches of at most 4,096 rows
  // (linear_silu_mul): alone, 8,192 rows in one launch were 9% slower than the pair, 4,096 rows 7%
  // faster (thirty-sixth and thirty-seventh sessions).
  if (fused_kernel() == FusedKernel::kCutlass) return m >= 512;
  return m >= 128;
}

int64_t fused_silu_mul_launch_rows(int64_t m) {
  constexpr int64_t kMaxRows = 4096;
  if (fused_kernel() != FusedKernel::kCutlass || m <= kMaxRows) return m;
  const int64_t launches = (m + kMaxRows - 1) / kMaxRows;
  return (m + launches - 1) / launches;
}

void linear_silu_mul(const Tensor& x, const Tensor& weight, Tensor& out) {
  OpTimer timer("gemm_silu_mul", x.device());
  check_dim(x, 2, "linear_silu_mul: x");
  check_dim(weight, 2, "linear_silu_mul: weight");
  check_dim(out, 2, "linear_silu_mul: out");
  check_projection("linear_silu_mul", x, weight, out, 2);  // weight [2 * inter, k], out [m, inter]
  BI_CHECK_ARG(out.dtype() == x.dtype(), "linear_silu_mul: out dtype ", dtype_name(out.dtype()), " != x dtype ",
               dtype_name(x.dtype()));
  BI_CHECK_ARG(fused_silu_mul_block(x.dtype(), x.device(), out.size(1), x.size(1)) > 0,
               "linear_silu_mul: the fused kernel does not serve ", dtype_name(x.dtype()), " inter=", out.size(1),
               " k=", x.size(1), " on ", x.device().str());
  if (fused_kernel() == FusedKernel::kCutlass) {
    // Each output row depends only on its own input row, so launches over row ranges give the bits
    // of one launch over them all.
    const int64_t m = x.size(0), rows = fused_silu_mul_launch_rows(m);
    for (int64_t a = 0; a < m; a += rows) {
      const int64_t b = std::min(m, a + rows);
      Tensor xs = x.slice(0, a, b), os = out.slice(0, a, b);
      cuda::launch_gemm_cutlass_silu_mul(xs.raw_data(), weight.raw_data(), os.raw_data(), b - a, out.size(1), x.size(1),
                                         x.dtype(), x.device().index);
    }
    return;
  }
  cuda::launch_gemm_sm90(x.raw_data(), weight.raw_data(), out.raw_data(), x.size(0), weight.size(0), x.size(1),
                         x.dtype(), x.device().index, true);
}

Tensor interleave_gate_up(const Tensor& weight, int64_t block) {
  check_dim(weight, 2, "interleave_gate_up: weight");
  const int64_t inter = weight.size(0) / 2;
  BI_CHECK_ARG(weight.size(0) % 2 == 0 && block > 0 && inter % block == 0, "interleave_gate_up: weight ",
               weight.shape_str(), " does not split into gate and up runs of ", block, " rows");
  Tensor rows = Tensor::empty({2 * inter}, DType::kInt32);
  int32_t* r = rows.data<int32_t>();
  for (int64_t i = 0; i < 2 * inter; ++i) {
    const int64_t run = i / (2 * block), j = i % (2 * block);
    r[i] = static_cast<int32_t>(j < block ? run * block + j : inter + run * block + (j - block));
  }
  Tensor out = Tensor::empty(weight.shape(), weight.dtype(), weight.device());
  gather_rows(weight, weight.device().is_cuda() ? rows.to(weight.device()) : rows, out);
  return out;
}

void add_bias(Tensor& out, const Tensor& bias) {
  OpTimer timer("add_bias", out.device());
  check_dim(out, 2, "add_bias: out");
  check_dim(bias, 1, "add_bias: bias");
  check_compute(out, out.device(), "add_bias: out");
  check_compute(bias, out.device(), "add_bias: bias");
  check_contiguous(out, "add_bias: out");
  BI_CHECK_ARG(bias.dtype() == out.dtype() && bias.size(0) == out.size(1), "add_bias: bias ", bias.shape_str(),
               " ", dtype_name(bias.dtype()), " does not match out ", out.shape_str(), " ", dtype_name(out.dtype()));
  if (out.device().is_cuda()) {
    cuda::launch_add_bias(out.raw_data(), bias.raw_data(), out.size(0), out.size(1), out.dtype(), out.device().index);
    return;
  }
  float* o = out.data<float>();
  const float* b = bias.data<float>();
  for (int64_t r = 0; r < out.size(0); ++r)
    for (int64_t c = 0; c < out.size(1); ++c) o[r * out.size(1) + c] += b[c];
}

}  // namespace blockinfer::ops
