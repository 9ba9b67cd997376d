// Every CUDA kernel against the CPU reference op on awkward shapes, in float32 (tight tolerance)
// and bfloat16 (storage-rounded inputs, looser). Exits with 77 (ctest: "Skipped") where no GPU is
// visible, printing why: a GPU test that did not run never counts as passed.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <tuple>

#include "blockinfer/tensor.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/launchers.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/linear.h"
#include "ops/rmsnorm.h"
#include "ops/sampling.h"
#include "test_harness.h"

using namespace blockinfer;

namespace {

// One tolerance table: float32 kernels differ from the CPU only by summation order; bfloat16
// storage rounds each stored intermediate to 8 significant bits.
double tol(DType d) { return d == DType::kFloat32 ? 2e-4 : 3e-2; }  // float16 rounds finer than bfloat16

// bitest::randn's draws as a float32 tensor of `shape`.
Tensor randn(std::vector<int64_t> shape, unsigned seed, float scale = 1.f) {
  Tensor t = Tensor::empty(shape, DType::kFloat32);
  const std::vector<float> v = bitest::randn(static_cast<size_t>(t.numel()), seed, scale);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

// CPU float32 tensor rounded through `dtype` (what the GPU sees), and its GPU copy.
Tensor round_to(const Tensor& t, DType dtype) { return t.to_dtype(dtype).to_dtype(DType::kFloat32); }
Tensor gpu(const Tensor& t, DType dtype) { return t.to_dtype(dtype).to(Device::cuda(0)); }
Tensor host_f32(const Tensor& t) { return t.to(Device::cpu()).to_dtype(DType::kFloat32); }
// How many elements of two same-shaped tensors differ in value (compared in float32 on the host).
int64_t count_differing(const Tensor& x, const Tensor& y) {
  const Tensor a = host_f32(x), b = host_f32(y);
  int64_t differ = 0;
  for (int64_t i = 0; i < a.numel(); ++i) differ += a.data<float>()[i] != b.data<float>()[i];
  return differ;
}
Tensor i32(std::vector<int32_t> v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::kInt32);
  std::copy(v.begin(), v.end(), t.data<int32_t>());
  return t;
}

double max_rel_err(const Tensor& got, const Tensor& want) {
  double worst = 0, scale = 1e-6;
  for (int64_t i = 0; i < want.numel(); ++i) scale = std::max(scale, std::fabs(double(want.data<float>()[i])));
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double g = got.data<float>()[i], w = want.data<float>()[i];
    if (std::isnan(g) || std::isnan(w)) return INFINITY;
    worst = std::max(worst, std::fabs(g - w) / scale);
  }
  return worst;
}

// Equal values, NaN where the other has NaN.
bool same_values(const Tensor& got, const Tensor& want) {
  for (int64_t i = 0; i < want.numel(); ++i) {
    const float g = got.data<float>()[i], w = want.data<float>()[i];
    if (!(g == w || (std::isnan(g) && std::isnan(w)))) return false;
  }
  return true;
}

const DType kDtypes[] = {DType::kFloat32, DType::kBFloat16, DType::kFloat16};

}  // namespace

// Rows 30..36 of [rows, vocab] logits made into ties: 30 and 31 every logit equal, 32 and 33 in
// four levels, 34 one dominant logit (ties must go to the lower id on both devices), 35 and 36 the
// random logits rounded to halves and to integers (runs of ties a few hundred to tens of thousands
// long at every level of the order: the device's selections over its shared-memory list and over
// the whole vocabulary).
void make_tie_rows(Tensor& logits, int64_t vocab) {
  float* l = logits.data<float>();
  for (int64_t i = 0; i < vocab; ++i) {
    l[30 * vocab + i] = l[31 * vocab + i] = 0.5f;
    l[32 * vocab + i] = l[33 * vocab + i] = static_cast<float>(i % 4);
    l[34 * vocab + i] = i == vocab / 2 ? 30.f : 0.f;
    l[35 * vocab + i] = std::round(l[35 * vocab + i] * 2.f) / 2.f;
    l[36 * vocab + i] = std::round(l[36 * vocab + i]);
  }
}

struct BothSamples {
  ops::SampleOutputs cpu, gpu;  // gpu copied back to the host
};

// The same rows sampled by the CPU kernel and the CUDA one.
BothSamples sample_on_both(const Tensor& logits, const std::vector<ops::SampleRowParams>& params,
                           ops::SampleMath math = ops::SampleMath::kExact) {
  const int64_t rows = logits.size(0);
  BothSamples out{ops::SampleOutputs::empty(rows), ops::SampleOutputs::empty(rows, Device::cuda(0))};
  ops::sample_rows(logits, params, out.cpu);
  ops::sample_rows(logits.to(Device::cuda(0)), params, out.gpu, math);
  out.gpu = out.gpu.to(Device::cpu());
  return out;
}

TEST(gemm_matches_cpu_linear) {
  for (DType dt : kDtypes)
    for (auto [m, n, k] : {std::tuple{1, 7, 19}, {7, 83, 64}, {1, 151, 4096}, {16, 300, 1024},
                           {33, 257, 769}, {128, 512, 256}}) {
      Tensor x = round_to(randn({m, k}, 1), dt), w = round_to(randn({n, k}, 2), dt);
      Tensor want = Tensor::empty({m, n}, DType::kFloat32);
      ops::linear(x, w, want);
      Tensor out = Tensor::empty({m, n}, DType::kFloat32, Device::cuda(0));  // float32 output (logits)
      ops::linear(gpu(x, dt), gpu(w, dt), out);
      EXPECT_TRUE(max_rel_err(host_f32(out), want) < tol(dt) / 10);
    }
}

// The residual add carried by the GEMM (cuBLASLt's beta = 1, in place): out + x w^T in out's dtype
// against the CPU's product plus out, and in float32 the same bits as the product then the add.
TEST(gemm_accumulate_matches_cpu) {
  for (DType dt : kDtypes)
    for (auto [m, n, k] : {std::tuple{1, 7, 19}, {5, 2560, 4096}, {33, 257, 769}, {640, 512, 256}}) {
      Tensor x = round_to(randn({m, k}, 3), dt), w = round_to(randn({n, k}, 4), dt);
      Tensor base = round_to(randn({m, n}, 5, 8.f), dt);
      Tensor want = base.to(Device::cpu());
      ops::linear(x, w, want, true);
      Tensor out = gpu(base, dt);
      ops::linear(gpu(x, dt), gpu(w, dt), out, true);
      // (16-bit outputs round to half an ulp of the dtype: up to 2^-8 of the largest for bfloat16.)
      EXPECT_TRUE(max_rel_err(host_f32(out), want) < (dt == DType::kFloat32 ? tol(dt) / 10 : 0.01));
      if (dt != DType::kFloat32) continue;
      Tensor prod = Tensor::empty({m, n}, dt, Device::cuda(0));
      ops::linear(gpu(x, dt), gpu(w, dt), prod);
      Tensor p = host_f32(prod), got = host_f32(out);
      int differ = 0;
      for (int64_t i = 0; i < m * n; ++i)
        differ += got.data<float>()[i] != base.data<float>()[i] + p.data<float>()[i];
      EXPECT_EQ(differ, 0);
    }
}

// A fused gate_up + SiLU·mul case: x [m, k] and a [2 * inter, k] weight in dt; `want` is
// silu_mul of their CPU product (each product rounded to dt first), dx and dw the GPU copies with
// the weight interleaved in runs of 128 rows as the MLP lays it out.
void silu_mul_case(DType dt, int64_t m, int64_t inter, int64_t k, Tensor& want, Tensor& dx, Tensor& dw) {
  Tensor x = round_to(randn({m, k}, 23), dt), w = round_to(randn({2 * inter, k}, 24, 0.05f), dt);
  Tensor prod = Tensor::empty({m, 2 * inter}, DType::kFloat32);
  want = Tensor::empty({m, inter}, DType::kFloat32);
  ops::linear(x, w, prod);
  ops::silu_mul(round_to(prod, dt), want);
  dx = gpu(x, dt);
  dw = ops::interleave_gate_up(gpu(w, dt), 128);
}

// The Hopper GEMM (sm_90a only; it says so where it does not serve) against the CPU linear:
// partial tiles in m, n and k, both tile widths, and the SiLU·mul epilogue on interleaved
// gate/up rows against silu(gate) * up of the CPU product, each rounded to the dtype first.
TEST(gemm_sm90_matches_cpu_linear) {
  for (DType dt : {DType::kBFloat16, DType::kFloat16}) {
    // The output's rounding (half a unit in the last place: 2^-9 of bfloat16, 2^-12 of float16)
    // and float32 summation order; the SiLU·mul also rounds both products first.
    const double out_tol = dt == DType::kBFloat16 ? 4e-3 : 1e-3;
    if (!cuda::gemm_sm90_serves(dt, 256, 64, 0, true)) {
      std::printf("NOTE: gemm_sm90 does not serve on this device or build; its cases did not run\n");
      return;
    }
    // (m, n, k, tile width or 0 for the launcher's, cluster, persistent): n-tile counts that are
    // not a multiple of the cluster (along n) leave CTAs past the last tile, which must still copy
    // their share of x; the persistent grids' CTAs take several tiles each where there are more
    // tiles than SMs (40 x 5 and 76 x 6 here).
    for (auto [m, n, k, bn, cl, p] :
         {std::tuple{1, 264, 72, 256, 1, false}, {130, 512, 256, 256, 1, false}, {640, 520, 1000, 128, 1, false},
          {300, 256, 2560, 256, 1, false}, {77, 1032, 64, 128, 1, false}, {129, 136, 8, 0, 1, false},
          {640, 520, 1000, 256, 2, false}, {300, 264, 2560, 128, 2, false}, {1, 256, 72, 256, 2, false},
          {513, 1024, 136, 256, 2, false}, {640, 10240, 200, 256, 1, true}, {700, 19456, 136, 256, 2, true},
          {130, 520, 1000, 128, 2, true}, {5, 264, 72, 0, 1, true}, {640, 520, 1000, 128, 4, false},
          {300, 264, 2560, 256, 4, true}, {700, 19456, 136, 256, 4, true}, {129, 6144, 264, 256, 4, false}}) {
      Tensor x = round_to(randn({m, k}, 21), dt), w = round_to(randn({n, k}, 22, 0.05f), dt);
      Tensor want = Tensor::empty({m, n}, DType::kFloat32);
      ops::linear(x, w, want);
      Tensor dx = gpu(x, dt), dw = gpu(w, dt), out = Tensor::empty({m, n}, dt, Device::cuda(0));
      cuda::launch_gemm_sm90(dx.raw_data(), dw.raw_data(), out.raw_data(), m, n, k, dt, 0, false, bn, cl, p);
      const double err = max_rel_err(host_f32(out), want);
      if (!(err < out_tol))
        std::printf("gemm_sm90 %s m=%d n=%d k=%d bn=%d cluster=%d persistent=%d: rel err %g\n", dtype_name(dt), m, n, k,
                    bn, cl, int{p}, err);
      EXPECT_TRUE(err < out_tol);
    }
    // As the MLP lays it out: the weight interleaved on the GPU, every form of the fused kernel
    // against silu_mul of the CPU product of the plain weight (each product rounded to the dtype
    // first), and the blocked silu_mul kernel on the GPU product of the interleaved weight.
    for (auto [m, inter, k] : {std::tuple{200, 256, 136}, {640, 384, 520}, {3, 128, 2560}}) {
      Tensor want, dx, dw;
      silu_mul_case(dt, m, inter, k, want, dx, dw);
      Tensor gu = Tensor::empty({m, 2 * inter}, dt, Device::cuda(0)), unfused = Tensor::empty({m, inter}, dt, Device::cuda(0));
      ops::linear(dx, dw, gu);
      ops::silu_mul(gu, unfused, 128);
      EXPECT_TRUE(max_rel_err(host_f32(unfused), want) < 2 * out_tol);
      for (auto [cl, p] : {std::pair{1, false}, {2, false}, {1, true}, {2, true}}) {
        Tensor other = Tensor::empty({m, inter}, dt, Device::cuda(0));
        cuda::launch_gemm_sm90(dx.raw_data(), dw.raw_data(), other.raw_data(), m, 2 * inter, k, dt, 0, true, 0, cl, p);
        const double err = max_rel_err(host_f32(other), want);
        if (!(err < 2 * out_tol))
          std::printf("gemm_sm90 silu %s m=%d inter=%d k=%d cluster=%d persistent=%d: rel err %g\n", dtype_name(dt), m,
                      inter, k, cl, int{p}, err);
        EXPECT_TRUE(err < 2 * out_tol);
      }
    }
  }
}

// CUTLASS's Hopper GEMM with the SiLU·mul epilogue (gemm_cutlass.cu; it says so where it does not
// serve): partial 64-row tiles, one and several 256-wide tiles, k not a multiple of the 64-column
// stage, against silu_mul of the CPU product (each product rounded to the dtype first); through
// the op as the MLP runs it; and against the unfused GPU path (cuBLASLt, then silu_mul with the
// block), whose bits it equals where cuBLASLt sums k in the same order (printed, not required).
TEST(gemm_cutlass_silu_mul_matches_cpu) {
  for (DType dt : {DType::kBFloat16, DType::kFloat16}) {
    const double out_tol = dt == DType::kBFloat16 ? 4e-3 : 1e-3;
    if (!cuda::gemm_cutlass_silu_mul_serves(dt, 128, 64, 0)) {
      std::printf("NOTE: gemm_cutlass silu_mul does not serve on this device or build (no CUTLASS headers, no "
                  "sm_90a, or not compute capability 9.0); its cases did not run\n");
      return;
    }
    if (!std::getenv("BLOCKINFER_GEMM_SM90") && !std::getenv("BLOCKINFER_GEMM_CUTLASS")) {  // the default kernel
      EXPECT_EQ(ops::fused_silu_mul_block(dt, Device::cuda(0), 128, 64), int64_t{128});
      EXPECT_TRUE(!ops::fused_silu_mul_takes(511) && ops::fused_silu_mul_takes(512) && ops::fused_silu_mul_takes(1024) &&
                  ops::fused_silu_mul_takes(4096) && ops::fused_silu_mul_takes(4097) && ops::fused_silu_mul_takes(8192));
      // Prefill chunks run in even launches of at most 4,096 rows.
      EXPECT_EQ(ops::fused_silu_mul_launch_rows(512), int64_t{512});
      EXPECT_EQ(ops::fused_silu_mul_launch_rows(4096), int64_t{4096});
      EXPECT_EQ(ops::fused_silu_mul_launch_rows(4097), int64_t{2049});
      EXPECT_EQ(ops::fused_silu_mul_launch_rows(8192), int64_t{4096});
      EXPECT_EQ(ops::fused_silu_mul_launch_rows(8320), int64_t{2774});
      // linear_silu_mul over 9,000 rows (three launches of 3,000) gives one launch's bits.
      Tensor want, dx, dw;
      silu_mul_case(dt, 9000, 256, 72, want, dx, dw);
      Tensor one = Tensor::empty({9000, 256}, dt, Device::cuda(0)), split = Tensor::empty({9000, 256}, dt, Device::cuda(0));
      cuda::launch_gemm_cutlass_silu_mul(dx.raw_data(), dw.raw_data(), one.raw_data(), 9000, 256, 72, dt, 0);
      ops::linear_silu_mul(dx, dw, split);
      EXPECT_TRUE(max_rel_err(host_f32(split), want) < 2 * out_tol);
      EXPECT_EQ(count_differing(one, split), int64_t{0});
    }
    EXPECT_TRUE(!cuda::gemm_cutlass_silu_mul_serves(dt, 200, 64, 0));  // inter not whole runs of 128
    EXPECT_TRUE(!cuda::gemm_cutlass_silu_mul_serves(dt, 128, 60, 0));  // k not a multiple of 8
    EXPECT_TRUE(!cuda::gemm_cutlass_silu_mul_serves(DType::kFloat32, 128, 64, 0));
    for (auto [m, inter, k] : {std::tuple{1, 128, 64}, {65, 256, 136}, {300, 384, 520}, {640, 128, 2560},
                               {257, 512, 8}, {129, 1024, 200}}) {
      Tensor want, dx, dw;
      silu_mul_case(dt, m, inter, k, want, dx, dw);
      Tensor out = Tensor::empty({m, inter}, dt, Device::cuda(0)), via_op = Tensor::empty({m, inter}, dt, Device::cuda(0));
      cuda::launch_gemm_cutlass_silu_mul(dx.raw_data(), dw.raw_data(), out.raw_data(), m, inter, k, dt, 0);
      if (ops::fused_silu_mul_block(dt, Device::cuda(0), inter, k) > 0) ops::linear_silu_mul(dx, dw, via_op);
      else via_op = out;
      const double err = max_rel_err(host_f32(out), want);
      if (!(err < 2 * out_tol))
        std::printf("gemm_cutlass silu %s m=%d inter=%d k=%d: rel err %g\n", dtype_name(dt), m, inter, k, err);
      EXPECT_TRUE(err < 2 * out_tol);
      EXPECT_TRUE(max_rel_err(host_f32(via_op), want) < 2 * out_tol);
      Tensor gu = Tensor::empty({m, 2 * inter}, dt, Device::cuda(0)), unfused = Tensor::empty({m, inter}, dt, Device::cuda(0));
      ops::linear(dx, dw, gu);
      ops::silu_mul(gu, unfused, 128);
      std::printf("gemm_cutlass silu %s m=%d inter=%d k=%d: %lld of %lld outputs differ from cuBLASLt + silu_mul\n",
                  dtype_name(dt), m, inter, k, static_cast<long long>(count_differing(out, unfused)),
                  static_cast<long long>(out.numel()));
    }
    // Misaligned operands are refused, not run.
    Tensor want, dx, dw;
    silu_mul_case(dt, 64, 128, 64, want, dx, dw);
    Tensor out = Tensor::empty({64, 128}, dt, Device::cuda(0));
    EXPECT_THROWS(cuda::launch_gemm_cutlass_silu_mul(static_cast<char*>(dx.raw_data()) + 2, dw.raw_data(), out.raw_data(),
                                                     63, 128, 64, dt, 0),
                  InvalidArgument);
  }
}

// The LM head with greedy sampling fused (gemm_cutlass.cu; it says so where it does not serve):
// vocabularies not a multiple of the 256-wide tile, partial 64-row tiles, k not a multiple of the
// 64-column stage; against the CPU's sample_rows over the float32 logits of the exact product of
// the rounded operands, and against the unfused GPU path (cuBLASLt's float32 logits, then
// sample_rows with the fast sums). Row 0's max is tied between columns 5 and vocab - 3 (two equal
// weight rows, in different tiles where vocab > 256): the lower id must win. Two runs give the same
// bits (graph replays and eager forwards rely on it).
TEST(lm_head_greedy_matches_cpu) {
  for (DType dt : {DType::kBFloat16, DType::kFloat16}) {
    if (!cuda::gemm_cutlass_lm_head_greedy_serves(dt, 256, 64, 0)) {
      std::printf("NOTE: gemm_cutlass lm_head_greedy does not serve on this device or build (no CUTLASS headers, "
                  "no sm_90a, or not compute capability 9.0); its cases did not run\n");
      return;
    }
    EXPECT_TRUE(!cuda::gemm_cutlass_lm_head_greedy_serves(dt, 256, 60, 0));  // k not a multiple of 8
    EXPECT_TRUE(!cuda::gemm_cutlass_lm_head_greedy_serves(DType::kFloat32, 256, 64, 0));
    for (auto [m, vocab, k] : {std::tuple{1, 256, 64}, {65, 1000, 136}, {130, 151, 520}, {64, 2048, 2560},
                               {3, 4097, 8}, {320, 20000, 256}}) {
      const float scale = 3.f / std::sqrt(static_cast<float>(k));  // logits of about unit-3 spread
      Tensor x = round_to(randn({m, k}, 11), dt), w = round_to(randn({vocab, k}, 12, scale), dt);
      // Row 0's max, tied: two weight rows along x's row 0, large enough to lead every other logit.
      const int64_t a = std::min<int64_t>(5, vocab - 1), b = vocab - 3;
      for (int64_t j = 0; j < k; ++j) w.data<float>()[a * k + j] = w.data<float>()[b * k + j] = x.data<float>()[j] * (30.f / k);
      w = round_to(w, dt);
      Tensor logits = Tensor::empty({m, vocab}, DType::kFloat32);
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < vocab; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < k; ++j) acc += double(x.data<float>()[r * k + j]) * w.data<float>()[c * k + j];
          logits.data<float>()[r * vocab + c] = static_cast<float>(acc);
        }
      std::vector<ops::SampleRowParams> params(static_cast<size_t>(m), ops::SampleRowParams{0.f, 0, 1.f, 7, 0, 0});
      ops::SampleOutputs want = ops::SampleOutputs::empty(m);
      ops::sample_rows(logits, params, want);
      Tensor dx = gpu(x, dt), dw = gpu(w, dt);
      EXPECT_TRUE(ops::lm_head_greedy_serves(dx, dw) && ops::lm_head_greedy_serves(dw));
      ops::SampleOutputs got = ops::SampleOutputs::empty(m, Device::cuda(0)), again = ops::SampleOutputs::empty(m, Device::cuda(0));
      ops::lm_head_greedy(dx, dw, got);
      ops::lm_head_greedy(dx, dw, again);
      Tensor unfused_logits = Tensor::empty({m, vocab}, DType::kFloat32, Device::cuda(0));
      ops::linear(dx, dw, unfused_logits);
      ops::SampleOutputs unfused = ops::SampleOutputs::empty(m, Device::cuda(0));
      ops::sample_rows(unfused_logits, params, unfused, ops::SampleMath::kFast);
      const ops::SampleOutputs g = got.to(Device::cpu()), g2 = again.to(Device::cpu()), u = unfused.to(Device::cpu());
      double worst = 0, worst_unfused = 0;
      int64_t skipped = 0;
      for (int64_t r = 0; r < m; ++r) {
        // A row whose two largest logits are within the GEMM's rounding may take either.
        const float* l = logits.data<float>() + r * vocab;
        const int32_t best = want.x0.data<int32_t>()[r];
        float second = -INFINITY;
        for (int64_t c = 0; c < vocab; ++c)
          if (c != best) second = std::max(second, l[c]);
        if (r == 0) EXPECT_EQ(g.x0.data<int32_t>()[r], static_cast<int32_t>(a));
        if (l[best] - second > 1e-3f * std::max(1.f, std::fabs(l[best]))) {
          EXPECT_EQ(g.x0.data<int32_t>()[r], best);
        } else if (r != 0) {
          ++skipped;
        }
        auto diff = [&](const ops::SampleOutputs& ref) {
          double d = std::fabs(double(g.logprob.data<float>()[r]) - ref.logprob.data<float>()[r]);
          d = std::max(d, std::fabs(double(g.entropy.data<float>()[r]) - ref.entropy.data<float>()[r]));
          return std::max(d, std::fabs(double(g.confidence.data<float>()[r]) - ref.confidence.data<float>()[r]));
        };
        worst = std::max(worst, diff(want));
        worst_unfused = std::max(worst_unfused, diff(u));
        EXPECT_EQ(g.x0.data<int32_t>()[r], g2.x0.data<int32_t>()[r]);
        EXPECT_TRUE(g.logprob.data<float>()[r] == g2.logprob.data<float>()[r] &&
                    g.entropy.data<float>()[r] == g2.entropy.data<float>()[r] &&
                    g.confidence.data<float>()[r] == g2.confidence.data<float>()[r]);
      }
      std::printf("lm_head_greedy %s m=%d vocab=%d k=%d: max |diff| %.3g against the CPU, %.3g against cuBLASLt + "
                  "sample_rows; %lld near-tie rows not compared\n",
                  dtype_name(dt), m, vocab, k, worst, worst_unfused, static_cast<long long>(skipped));
      EXPECT_TRUE(worst < 2e-3 && worst_unfused < 2e-3);
    }
    // Misaligned operands are refused, not run.
    Tensor dx = Tensor::empty({64, 64}, dt, Device::cuda(0)), dw = Tensor::empty({256, 64}, dt, Device::cuda(0));
    Tensor partials = Tensor::empty({cuda::lm_head_greedy_partial_floats(63, 256)}, DType::kFloat32, Device::cuda(0));
    ops::SampleOutputs out = ops::SampleOutputs::empty(63, Device::cuda(0));
    EXPECT_THROWS(cuda::launch_lm_head_greedy(static_cast<char*>(dx.raw_data()) + 2, dw.raw_data(),
                                              partials.data<float>(), out.x0.data<int32_t>(),
                                              out.confidence.data<float>(), out.logprob.data<float>(),
                                              out.entropy.data<float>(), 63, 256, 64, dt, 0),
                  InvalidArgument);
  }
}

TEST(rmsnorm_embedding_silu_gather_match_cpu) {
  for (DType dt : kDtypes) {
    Tensor table = round_to(randn({50, 83}, 3), dt);
    Tensor ids = i32({3, 0, 49, 7, 7, 20, 1});
    Tensor want = Tensor::empty({7, 83}, DType::kFloat32), out = Tensor::empty({7, 83}, dt, Device::cuda(0));
    ops::embedding(ids, table, want);
    ops::embedding(ids.to(Device::cuda(0)), gpu(table, dt), out);
    EXPECT_TRUE(max_rel_err(host_f32(out), want) == 0.0);

    // The scalar kernel (129); the 16-byte one by rows, [gate | up] (136 = 8 x 17) or gate and up in
    // alternating blocks of a power of two (8, 16); the 16-byte one over a flat index, for a block
    // that is not a power of two (24).
    for (auto [inter, block] : {std::pair<int64_t, int64_t>{129, 0}, {136, 0}, {136, 8}, {144, 16}, {144, 24}}) {
      Tensor x = round_to(randn({19, 2 * inter}, 5), dt);
      Tensor a_want = Tensor::empty({19, inter}, DType::kFloat32), a = Tensor::empty({19, inter}, dt, Device::cuda(0));
      ops::silu_mul(x, a_want, block);
      ops::silu_mul(gpu(x, dt), a, block);
      EXPECT_TRUE(max_rel_err(host_f32(a), a_want) < tol(dt));
    }
    Tensor gu = round_to(randn({19, 2 * 129}, 4), dt);

    Tensor rows = i32({5, 0, 18});
    Tensor g_want = Tensor::empty({3, 2 * 129}, DType::kFloat32), g = Tensor::empty({3, 2 * 129}, dt, Device::cuda(0));
    ops::gather_rows(gu, rows, g_want);
    ops::gather_rows(gpu(gu, dt), rows.to(Device::cuda(0)), g);
    EXPECT_TRUE(max_rel_err(host_f32(g), g_want) == 0.0);
  }
}

TEST(qk_norm_rope_and_kv_write_match_cpu) {
  // The launcher's paths. 13 rows: two-element units, one a thread (d = 8, 16, 128); 16-byte units,
  // three a thread, for heads over 256 wide (d = 1,024); single elements for odd half heads (d = 6,
  // and d = 514, whose 257 units exceed a CTA's threads: four a thread). 2,200 rows: 16-byte units,
  // three a thread (d = 16, one unit a head in 16 bits; d = 128), and single elements (d = 6). A
  // head's sum of squares: a butterfly over its lanes, warp sums in order (d = 1,024) or its units'
  // partials in order (d = 6, 514).
  for (DType dt : kDtypes)
    for (auto [h, kv, d, n] : {std::tuple{4, 2, 16, 13}, {8, 2, 8, 13}, {32, 8, 128, 13}, {6, 3, 6, 13},
                               {4, 4, 1024, 13}, {2, 1, 514, 13}, {32, 8, 128, 2200}, {6, 3, 6, 2200},
                               {4, 2, 16, 2200}}) {
      const int64_t w = (h + 2 * kv) * d;
      Tensor qkv = round_to(randn({n, w}, 5, 2.f), dt);
      Tensor qn = round_to(randn({d}, 6), dt), kn = round_to(randn({d}, 7), dt);
      std::vector<int32_t> pos;
      for (int i = 0; i < n; ++i) pos.push_back((i * 37 + 3) % 8192);
      Tensor positions = i32(pos);
      Tensor inv_freq = Tensor::empty({d / 2}, DType::kFloat32);
      for (int64_t i = 0; i < d / 2; ++i) inv_freq.data<float>()[i] = 1.f / std::pow(10000.f, 2.f * i / d);
      Tensor want = qkv.contiguous().to(Device::cpu());
      ops::AttentionDims dims{h, kv, d};
      ops::qk_norm_rope(want, positions, qn, kn, inv_freq, dims, 1e-6f);
      Tensor got = gpu(qkv, dt);
      ops::qk_norm_rope(got, positions.to(Device::cuda(0)), gpu(qn, dt), gpu(kn, dt), inv_freq.to(Device::cuda(0)),
                        dims, 1e-6f);
      EXPECT_TRUE(max_rel_err(host_f32(got), want) < tol(dt));

      // The fused op (one kernel on the GPU) against the CPU's two: the rows and both caches, with
      // the tokens' slots scattered over pages of 8.
      // (i * 5 + 3) mod (page * pages) is one slot per token when 5 does not divide page * pages.
      const int64_t page = 8;
      int64_t pages = (n + page - 1) / page + 1;
      if ((page * pages) % 5 == 0) ++pages;
      std::vector<int32_t> slot;
      for (int i = 0; i < n; ++i) slot.push_back(static_cast<int32_t>((i * 5 + 3) % (page * pages)));
      ops::AttentionMetadata meta;
      meta.positions = positions;
      meta.slot_mapping = i32(slot);
      meta.page_size = page;
      Tensor kc = Tensor::zeros({pages, page, kv, d}, DType::kFloat32), vc = Tensor::zeros({pages, page, kv, d}, DType::kFloat32);
      Tensor rows = qkv.contiguous().to(Device::cpu());
      ops::qk_norm_rope_kv_write(rows, meta, qn, kn, inv_freq, dims, 1e-6f, kc, vc);
      ops::AttentionMetadata dm = meta;
      dm.positions = positions.to(Device::cuda(0));
      dm.slot_mapping = meta.slot_mapping.to(Device::cuda(0));
      Tensor fused = gpu(qkv, dt), kg = Tensor::zeros({pages, page, kv, d}, dt, Device::cuda(0)),
             vg = Tensor::zeros({pages, page, kv, d}, dt, Device::cuda(0));
      ops::qk_norm_rope_kv_write(fused, dm, gpu(qn, dt), gpu(kn, dt), inv_freq.to(Device::cuda(0)), dims, 1e-6f, kg, vg);
      EXPECT_TRUE(max_rel_err(host_f32(fused), rows) < tol(dt));
      EXPECT_TRUE(max_rel_err(host_f32(kg), kc) < tol(dt));
      EXPECT_TRUE(max_rel_err(host_f32(vg), vc) < tol(dt));
      // The GPU's cache holds exactly the GPU's rotated rows.
      Tensor fused_host = host_f32(fused), kg_host = host_f32(kg), vg_host = host_f32(vg);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t j = 0; j < kv * d; ++j) {
          EXPECT_EQ(kg_host.data<float>()[slot[t] * kv * d + j], fused_host.data<float>()[t * w + h * d + j]);
          EXPECT_EQ(vg_host.data<float>()[slot[t] * kv * d + j], fused_host.data<float>()[t * w + (h + kv) * d + j]);
        }
    }
}

TEST(paged_attention_matches_cpu_on_ragged_block_causal_batches) {
  struct Seq {
    int32_t start, end, block_len, block_offset;
  };
  // Query runs of 1, 4, 7, 33 and long prefills; keys up to 2100 (several 256-key splits);
  // block lengths 0 (bidirectional), 1, 4 and 7; block offsets (a bidirectional prompt block of
  // 13 or 17 keys before the blocks). Head shapes cover both kernels (tensor cores for 16-bit
  // types with head_dim 64/128, CUDA cores otherwise) and GQA groups of 1, 2, 4 and 7.
  // The second and third batches are denoise steps (at most 4 or 8 rows per sequence), where the
  // tensor-core kernel's warps split each chunk's keys 4 or 2 ways (attention_key_split). Each batch
  // runs under the plan's key runs and under forced runs of 64, 512 and 1,024 keys (up to 33, 5 and
  // 3 splits and their merge; the forced runs apply to the tensor-core kernel only), and the
  // tensor-core shapes again in forced wide tiles (two 16-item groups a warp, 128 items: a GQA group of 7 takes
  // 18 rows) under the plan's runs and runs of 512 and 1,024. Pages hold 16
  // tokens, except in the third batch, 12 (the tensor-core kernel's page lookup has a path for
  // powers of two, and its TMA copies need pages of a multiple of 16: pages of 12 take the
  // cp.async path), and the fourth, the second's sequences in pages of 32 (two TMA boxes a page).
  // The fifth and sixth are the second and first again with each cached key scaled by 1 + position
  // / 128: a row's scores then grow along its keys, so that the tensor-core kernel's running max
  // moves past its lazy-rescale margin (kLazyRescale) after the first chunk, where random keys
  // of one scale seldom move it.
  const std::vector<Seq> denoise = {{0, 1, 4, 0},       {296, 300, 4, 0},  {1497, 1500, 7, 0},
                                    {2096, 2100, 4, 0}, {13, 17, 4, 13}, {60, 64, 0, 0}};
  std::vector<std::vector<Seq>> batches = {
      {{0, 1, 4, 0}, {296, 300, 4, 0}, {1493, 1500, 7, 0}, {0, 33, 1, 0}, {64, 164, 0, 0}, {900, 933, 4, 0},
       {0, 41, 4, 13}, {17, 25, 8, 17}, {2096, 2100, 4, 0}},
      denoise,
      {{0, 8, 8, 0}, {292, 300, 4, 0}, {1493, 1500, 7, 0}, {2092, 2100, 4, 0}, {17, 25, 8, 17}, {40, 41, 4, 0}},
      denoise};
  batches.push_back(batches[1]);
  batches.push_back(batches[0]);
  const int64_t page_sizes[] = {16, 16, 12, 32, 16, 16};
  for (size_t b = 0; b < batches.size(); ++b)
  for (DType dt : kDtypes)
    for (auto [h, kv, d] : {std::tuple{4, 2, 16}, {8, 2, 8}, {32, 8, 128}, {12, 12, 64}, {28, 4, 128}, {8, 8, 128}}) {
      const std::vector<Seq>& seqs = batches[b];
      const int64_t page = page_sizes[b], w = (h + 2 * kv) * d;
      int64_t max_pages = 0, num_tokens = 0;
      for (const auto& s : seqs) {
        max_pages = std::max<int64_t>(max_pages, (s.end + page - 1) / page);
        num_tokens += s.end - s.start;
      }
      const int64_t num_pages = max_pages * static_cast<int64_t>(seqs.size()) + 3;
      // Distinct pages in a scrambled order (a multiplier coprime with num_pages is a permutation).
      int64_t mult = 7;
      while (std::gcd(mult, num_pages) != 1) mult += 2;
      Tensor page_table = Tensor::zeros({static_cast<int64_t>(seqs.size()), max_pages}, DType::kInt32);
      for (int64_t s = 0, next = 0; s < static_cast<int64_t>(seqs.size()); ++s)
        for (int64_t p = 0; p < max_pages; ++p, ++next)
          page_table.data<int32_t>()[s * max_pages + p] = static_cast<int32_t>((next * mult + 3) % num_pages);
      Tensor kc = randn({num_pages, page, kv, d}, 8), vc = round_to(randn({num_pages, page, kv, d}, 9), dt);
      if (b >= 4)  // growing scores: key p scaled by 1 + p / 128
        for (int64_t s = 0; s < static_cast<int64_t>(seqs.size()); ++s)
          for (int32_t p = 0; p < seqs[s].end; ++p) {
            const int64_t slot = page_table.data<int32_t>()[s * max_pages + p / page] * page + p % page;
            for (int64_t e = 0; e < kv * d; ++e) kc.data<float>()[slot * kv * d + e] *= 1.f + p / 128.f;
          }
      kc = round_to(kc, dt);
      {
        // Slots past each sequence's keys hold NaN: a last page's tail and the pages no sequence
        // holds keep whatever the cache held, and none may reach a result (P = 0 times NaN is NaN).
        std::vector<char> used(static_cast<size_t>(num_pages * page), 0);
        for (int64_t s = 0; s < static_cast<int64_t>(seqs.size()); ++s)
          for (int32_t p = 0; p < seqs[s].end; ++p)
            used[static_cast<size_t>(page_table.data<int32_t>()[s * max_pages + p / page] * page + p % page)] = 1;
        const int64_t row = kv * d;
        for (int64_t slot = 0; slot < num_pages * page; ++slot)
          if (!used[static_cast<size_t>(slot)])
            for (int64_t e = 0; e < row; ++e) kc.data<float>()[slot * row + e] = vc.data<float>()[slot * row + e] = NAN;
      }
      Tensor qkv = round_to(randn({num_tokens, w}, 10), dt);
      std::vector<int32_t> q_start = {0}, positions, slots, kv_len, block_len, block_offset;
      for (int64_t s = 0; s < static_cast<int64_t>(seqs.size()); ++s) {
        for (int32_t p = seqs[s].start; p < seqs[s].end; ++p) {
          positions.push_back(p);
          slots.push_back(page_table.data<int32_t>()[s * max_pages + p / page] * page + p % page);
        }
        q_start.push_back(static_cast<int32_t>(positions.size()));
        kv_len.push_back(seqs[s].end);
        block_len.push_back(seqs[s].block_len);
        block_offset.push_back(seqs[s].block_offset);
      }
      ops::AttentionMetadata meta{i32(positions), i32(slots), page_table, i32(q_start), i32(kv_len), i32(block_len), page};
      meta.block_offset = i32(block_offset);
      ops::AttentionDims dims{h, kv, d};
      Tensor kc_cpu = kc.contiguous().to(Device::cpu()), vc_cpu = vc.contiguous().to(Device::cpu());
      ops::kv_write(qkv, meta, kc_cpu, vc_cpu, dims);
      Tensor want = Tensor::empty({num_tokens, h * d}, DType::kFloat32);
      ops::paged_attention(qkv, kc_cpu, vc_cpu, meta, dims, want);

      ops::AttentionMetadata dm = meta;
      dm.host_q_start = meta.q_start;
      dm.host_kv_len = meta.kv_len;
      for (Tensor* t : {&dm.positions, &dm.slot_mapping, &dm.page_table, &dm.q_start, &dm.kv_len, &dm.block_len,
                        &dm.block_offset})
        *t = t->to(Device::cuda(0));
      Tensor kc_gpu = gpu(kc, dt), vc_gpu = gpu(vc, dt), qkv_gpu = gpu(qkv, dt);
      ops::kv_write(qkv_gpu, dm, kc_gpu, vc_gpu, dims);
      EXPECT_TRUE(same_values(host_f32(kc_gpu), kc_cpu) && same_values(host_f32(vc_gpu), vc_cpu));
      // The tensor-core shapes also run in wide tiles (128 items, two groups a warp) and in the wgmma
      // form (64-item tiles, where the device and the page size allow it), forced: the plan takes
      // them by itself only for long prefills.
      const bool tensor_cores = dt != DType::kFloat32 && (d == 64 || d == 128);
      const bool wgmma = tensor_cores && ops::attention_wgmma(Device::cuda(0), dt, dims, page);
      for (int32_t run : {0, 64, 512, 1024})
        for (int32_t form : {-1, 1, 2}) {  // planned, wide, wgmma
          if (form > 0 && (!tensor_cores || run == 64)) continue;
          if (form == 2 && !wgmma) continue;
          const int32_t wide = form > 0 ? 1 : -1;
          ops::AttentionMetadata planned = dm;
          if (run > 0 || wide == 1)
            ops::attach_attention_plan(planned, dims, dt, Device::cuda(0),
                                       {.keys_per_split = run, .wide_tiles = wide, .wgmma = form == 2});
          EXPECT_EQ(planned.attn_wide, wide == 1);
          EXPECT_EQ(planned.attn_wgmma, form == 2);
          Tensor out = Tensor::empty({num_tokens, h * d}, dt, Device::cuda(0));
          ops::paged_attention(qkv_gpu, kc_gpu, vc_gpu, planned, dims, out);
          const double err = max_rel_err(host_f32(out), want);
          if (!(err < tol(dt)))
            std::fprintf(stderr, "  attention h=%d kv=%d d=%d %s, batch of %zu, run %d (%d splits)%s: max rel err %g\n",
                         h, kv, d, dtype_name(dt), seqs.size(), run, planned.attn_splits,
                         form == 2 ? ", wgmma" : form == 1 ? ", wide" : "",
                         err);
          EXPECT_TRUE(err < tol(dt));
        }
    }
}

TEST(sampling_kernel_gives_the_cpu_tokens_from_the_same_logits) {
  const int64_t rows = 24, vocab = 1531;
  Tensor logits = randn({rows, vocab}, 11, 3.f);
  std::vector<ops::SampleRowParams> params;
  for (int64_t r = 0; r < rows; ++r)
    params.push_back({r % 3 == 0 ? 0.f : 0.5f + 0.25f * (r % 4), 0, 1.f, 1234567ull + r, static_cast<uint32_t>(r % 5),
                      static_cast<uint32_t>(100 + r), static_cast<ops::ConfidenceKind>(r % 3)});
  const auto [want, got] = sample_on_both(logits, params);
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_EQ(got.x0.data<int32_t>()[r], want.x0.data<int32_t>()[r]);
    EXPECT_NEAR(got.confidence.data<float>()[r], want.confidence.data<float>()[r], 1e-6);
    EXPECT_NEAR(got.logprob.data<float>()[r], want.logprob.data<float>()[r], 1e-5);
    EXPECT_NEAR(got.entropy.data<float>()[r], want.entropy.data<float>()[r], 1e-5);
  }
}

// Top-k / top-p rows on the device (radix-selected cuts) against the CPU's sort: same tokens and
// outputs, over awkward vocabularies, tied logits (ties go to the lower id), k past the ties, a
// nucleus that needs a single token and one that needs nearly all, both filters together, and a
// real vocabulary size; unfiltered and greedy rows in the same batch.
TEST(sampling_kernel_top_k_top_p_give_the_cpu_tokens) {
  for (int64_t vocab : {int64_t{5}, int64_t{1531}, int64_t{4097}, int64_t{151936}}) {
    const int64_t rows = 40;
    Tensor logits = randn({rows, vocab}, 12 + vocab, 2.f);
    make_tie_rows(logits, vocab);
    std::vector<ops::SampleRowParams> params;
    const int32_t topks[] = {0, 1, 2, 3, 7, 50, 1000, static_cast<int32_t>(vocab) - 1, static_cast<int32_t>(vocab)};
    const float topps[] = {1.f, 0.9f, 0.5f, 0.05f, 0.999f, 0.3f};
    for (int64_t r = 0; r < rows; ++r) {
      ops::SampleRowParams p{r % 11 == 10 ? 0.f : 0.6f + 0.2f * (r % 3), topks[r % 9], topps[(r / 2) % 6],
                             777ull + r, static_cast<uint32_t>(r % 4), static_cast<uint32_t>(9 + r),
                             static_cast<ops::ConfidenceKind>(r % 3)};
      params.push_back(p);
    }
    const auto [want, got] = sample_on_both(logits, params);
    int diffs = 0;
    for (int64_t r = 0; r < rows; ++r) {
      if (got.x0.data<int32_t>()[r] != want.x0.data<int32_t>()[r]) {
        std::fprintf(stderr, "  vocab %lld row %lld (topk %d, topp %g): gpu %d, cpu %d\n", static_cast<long long>(vocab),
                     static_cast<long long>(r), params[r].topk, params[r].topp, got.x0.data<int32_t>()[r],
                     want.x0.data<int32_t>()[r]);
        ++diffs;
      }
      EXPECT_NEAR(got.confidence.data<float>()[r], want.confidence.data<float>()[r], 1e-6);
      EXPECT_NEAR(got.logprob.data<float>()[r], want.logprob.data<float>()[r], 1e-5);
      EXPECT_NEAR(got.entropy.data<float>()[r], want.entropy.data<float>()[r], 1e-5);
    }
    EXPECT_EQ(diffs, 0);
  }
}

// Rows of Dream's algorithms (Dream's filters, also at T = 0, and its three confidences) on the
// device against the CPU: the same vocabularies and tie rows as above, top-p alone, top-k alone
// (past the top-p count or not), both, and neither.
TEST(sampling_kernel_dream_rows_give_the_cpu_tokens) {
  for (int64_t vocab : {int64_t{5}, int64_t{1531}, int64_t{4097}, int64_t{151936}}) {
    const int64_t rows = 40;
    Tensor logits = randn({rows, vocab}, 99 + vocab, 2.f);
    make_tie_rows(logits, vocab);
    const int32_t topks[] = {0, 1, 2, 3, 20, 1000};
    const float topps[] = {1.f, 0.95f, 0.5f, 0.05f, 0.999f};
    const ops::ConfidenceKind kinds[] = {ops::ConfidenceKind::kTempered, ops::ConfidenceKind::kMargin,
                                         ops::ConfidenceKind::kNegEntropy};
    std::vector<ops::SampleRowParams> params;
    for (int64_t r = 0; r < rows; ++r) {
      ops::SampleRowParams p{r % 4 == 3 ? 0.f : 0.4f + 0.3f * (r % 3), topks[r % 6], topps[(r / 2) % 5],
                             4242ull + r, static_cast<uint32_t>(r % 7), static_cast<uint32_t>(5 + r), kinds[r % 3]};
      p.dream = 1;
      params.push_back(p);
    }
    const auto [want, got] = sample_on_both(logits, params);
    int diffs = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float gc = got.confidence.data<float>()[r], wc = want.confidence.data<float>()[r];
      if (got.x0.data<int32_t>()[r] != want.x0.data<int32_t>()[r] || std::fabs(gc - wc) > 1e-6f * (1.f + std::fabs(wc))) {
        std::fprintf(stderr, "  dream vocab %lld row %lld (T %g, topk %d, topp %g, kind %d): gpu %d %.9g, cpu %d %.9g\n",
                     static_cast<long long>(vocab), static_cast<long long>(r), params[r].temperature, params[r].topk,
                     params[r].topp, static_cast<int>(params[r].confidence_kind), got.x0.data<int32_t>()[r], gc,
                     want.x0.data<int32_t>()[r], wc);
        ++diffs;
      }
      EXPECT_NEAR(got.logprob.data<float>()[r], want.logprob.data<float>()[r], 1e-5);
      EXPECT_NEAR(got.entropy.data<float>()[r], want.entropy.data<float>()[r], 1e-5);
    }
    EXPECT_EQ(diffs, 0);
  }
}

// The float arithmetic of 16-bit models (SampleMath::kFast: float sums and Gumbel logarithms):
// the CPU's token on every row (greedy and sampled, filtered or not, Dream's rows, ties), and its
// confidence, log p and entropy to about the sixth digit, over the vocabularies above.
TEST(sampling_kernel_fast_math_keeps_the_cpu_tokens) {
  for (int64_t vocab : {int64_t{5}, int64_t{1531}, int64_t{4097}, int64_t{151936}}) {
    const int64_t rows = 40;
    Tensor logits = randn({rows, vocab}, 31 + vocab, 3.f);
    make_tie_rows(logits, vocab);
    const int32_t topks[] = {0, 0, 2, 50, 1000};
    const float topps[] = {1.f, 1.f, 0.9f, 0.5f};
    // §2's three kinds on most rows; every fourth row Dream's (its three kinds in turn).
    const ops::ConfidenceKind dream_kinds[] = {ops::ConfidenceKind::kTempered, ops::ConfidenceKind::kMargin,
                                               ops::ConfidenceKind::kNegEntropy};
    std::vector<ops::SampleRowParams> params;
    for (int64_t r = 0; r < rows; ++r) {
      const bool dream = r % 4 == 3;
      ops::SampleRowParams p{r % 3 == 0 ? 0.f : 0.5f + 0.25f * (r % 4), topks[r % 5], topps[(r / 2) % 4], 99ull + r,
                             static_cast<uint32_t>(r % 5), static_cast<uint32_t>(7 + r),
                             dream ? dream_kinds[(r / 4) % 3] : static_cast<ops::ConfidenceKind>(r % 3)};
      p.dream = dream ? 1 : 0;
      params.push_back(p);
    }
    const auto [want, got] = sample_on_both(logits, params, ops::SampleMath::kFast);
    for (int64_t r = 0; r < rows; ++r) {
      const float wc = want.confidence.data<float>()[r], gc = got.confidence.data<float>()[r];
      const bool ok = got.x0.data<int32_t>()[r] == want.x0.data<int32_t>()[r] &&
                      std::fabs(gc - wc) <= 1e-5f * (1.f + std::fabs(wc)) &&
                      std::fabs(got.logprob.data<float>()[r] - want.logprob.data<float>()[r]) <= 1e-5f &&
                      std::fabs(got.entropy.data<float>()[r] - want.entropy.data<float>()[r]) <= 1e-4f;
      if (!ok)
        std::fprintf(stderr, "  fast math vocab %lld row %lld: gpu %d %.9g %.9g %.9g, cpu %d %.9g %.9g %.9g\n",
                     static_cast<long long>(vocab), static_cast<long long>(r), got.x0.data<int32_t>()[r], gc,
                     got.logprob.data<float>()[r], got.entropy.data<float>()[r], want.x0.data<int32_t>()[r], wc,
                     want.logprob.data<float>()[r], want.entropy.data<float>()[r]);
      EXPECT_TRUE(ok);
    }
  }
}

// Guided logits on the device give the CPU's bits (no fused multiply-add), for copied and combined
// rows, scales 0.5 to 3, over a vocabulary that is no multiple of the block.
TEST(guidance_kernel_gives_the_cpu_bits) {
  const int64_t rows = 9, vocab = 1531;
  Tensor logits = randn({rows, vocab}, 77, 4.f);
  const std::vector<ops::GuidanceRow> map = {{0, -1, 1.f}, {1, 3, 1.5f}, {2, 4, 4.f}, {5, -1, 1.f}, {6, 7, 2.f}, {8, 0, 1.f}};
  const int64_t out_rows = static_cast<int64_t>(map.size());
  Tensor want = Tensor::empty({out_rows, vocab}, DType::kFloat32);
  ops::combine_guidance(logits, map, want);
  Tensor got_dev = Tensor::empty({out_rows, vocab}, DType::kFloat32, Device::cuda(0));
  ops::combine_guidance(logits.to(Device::cuda(0)), map, got_dev);
  Tensor got = got_dev.to(Device::cpu());
  int64_t diffs = 0;
  for (int64_t i = 0; i < want.numel(); ++i) diffs += got.data<float>()[i] != want.data<float>()[i];
  EXPECT_EQ(diffs, int64_t{0});
  EXPECT_TRUE(want.data<float>()[0] == logits.data<float>()[0]);
  Tensor one = Tensor::empty({1, vocab}, DType::kFloat32);
  EXPECT_THROWS(ops::combine_guidance(logits, {{0, rows, 1.f}}, one), InvalidArgument);
  EXPECT_THROWS(ops::combine_guidance(logits, map, one), InvalidArgument);  // out has 1 row, not 6
}

// The remasking selection on the device against the CPU rules: every block strategy, segments of
// 1 to 700 rows (one CTA strides over the long ones), scores with many ties (a few levels), n_t of
// 0 (the at-least-one rule), thresholds met by none, some or all, and the last/first/skip flags.
TEST(remasking_selection_kernel_matches_cpu) {
  const RemaskingStrategy block[] = {RemaskingStrategy::kSequential,         RemaskingStrategy::kLowConfidenceStatic,
                                     RemaskingStrategy::kLowConfidenceDynamic, RemaskingStrategy::kEntropyBounded,
                                     RemaskingStrategy::kLowConfidence,      RemaskingStrategy::kRandom,
                                     RemaskingStrategy::kConfidenceThreshold, RemaskingStrategy::kConfidenceFactor};
  std::mt19937 g(2024);
  std::vector<ops::RemaskSegment> segs;
  int32_t rows = 0;
  for (int i = 0; i < 300; ++i) {
    ops::RemaskSegment s;
    s.row_begin = rows;
    s.rows = i % 50 == 7 ? 700 : 1 + static_cast<int32_t>(g() % 33);
    s.strategy = block[i % 8];
    s.n_t = static_cast<int32_t>(g() % (s.rows + 2));
    if (i % 9 == 0) s.n_t = 0;
    s.last_step = i % 13 == 5;
    s.first_only = i % 17 == 3;
    s.skip = i % 19 == 4;
    s.dynamic_threshold = (i / 8) % 3 == 0 ? 0.5f : (i / 8) % 3 == 1 ? 1.5f : -1.f;
    s.eb_threshold = 0.1f * static_cast<float>(g() % 40);
    s.factor = 0.25f * static_cast<float>(g() % 8);
    segs.push_back(s);
    rows += s.rows;
  }
  ops::SampleOutputs want = ops::SampleOutputs::empty(rows);
  for (int32_t r = 0; r < rows; ++r) {
    // A few levels, so ties are common; entropies >= 0.
    want.confidence.data<float>()[r] = static_cast<float>(g() % 6) / 5.f;
    want.entropy.data<float>()[r] = static_cast<float>(g() % 5) * 0.3f;
  }
  ops::SampleOutputs got = want.to(Device::cuda(0));
  ops::select_unmask_rows(segs, want);
  ops::select_unmask_rows(segs, got);
  got = got.to(Device::cpu());
  int diffs = 0, picked = 0;
  for (int32_t r = 0; r < rows; ++r) {
    diffs += got.chosen.data<int32_t>()[r] != want.chosen.data<int32_t>()[r];
    picked += want.chosen.data<int32_t>()[r];
  }
  EXPECT_EQ(diffs, 0);
  EXPECT_TRUE(picked > 0 && picked < rows);
  // Bad segments are refused before any launch.
  std::vector<ops::RemaskSegment> bad = {segs[0], segs[0]};
  EXPECT_THROWS(ops::select_unmask_rows(bad, got), InvalidArgument);
}

// Two stream lanes: GEMMs queued on both at once (each with its own cuBLASLt workspace) give what
// they give one after the other, and a block freed on one lane is not handed to the other.
TEST(stream_lanes_run_side_by_side) {
  const int64_t m = 96, n = 80, k = 72;
  Tensor x = randn({m, k}, 31), w = randn({n, k}, 32);
  Tensor want = Tensor::empty({m, n}, DType::kFloat32);
  cpu::linear(x.data<float>(), w.data<float>(), want.data<float>(), m, n, k);
  Tensor dx = x.to(Device::cuda(0)), dw = w.to(Device::cuda(0));
  Tensor a = Tensor::empty({m, n}, DType::kFloat32, Device::cuda(0)), b = Tensor::empty({m, n}, DType::kFloat32, Device::cuda(0));
  void* freed_on_lane1 = nullptr;
  cuda::fork_lanes();
  for (int rep = 0; rep < 4; ++rep) {
    cuda::launch_gemm(dx.raw_data(), dw.raw_data(), a.raw_data(), m, n, k, DType::kFloat32, DType::kFloat32, 0);
    cuda::StreamLaneScope lane(1);
    EXPECT_EQ(cuda::stream_lane(), 1);
    cuda::launch_gemm(dx.raw_data(), dw.raw_data(), b.raw_data(), m, n, k, DType::kFloat32, DType::kFloat32, 0);
    Tensor tmp = Tensor::empty({12345}, DType::kUInt8, Device::cuda(0));
    freed_on_lane1 = tmp.raw_data();
  }
  EXPECT_EQ(cuda::stream_lane(), 0);
  Tensor again = Tensor::empty({12345}, DType::kUInt8, Device::cuda(0));  // lane 0: not lane 1's block
  EXPECT_TRUE(again.raw_data() != freed_on_lane1);
  cuda::join_lanes();
  EXPECT_TRUE(max_rel_err(a.to(Device::cpu()), want) < tol(DType::kFloat32));
  EXPECT_TRUE(max_rel_err(b.to(Device::cpu()), want) < tol(DType::kFloat32));
}

// Eager blocks are cached by rounded size (powers of two up to 2 MiB, 2 MiB multiples above), so a
// temporary a little smaller or larger than a freed one, within the same rounding, reuses it; one
// past it does not.
TEST(eager_blocks_are_shared_within_their_rounded_size) {
  auto block = [](int64_t bytes) { return Tensor::empty({bytes}, DType::kUInt8, Device::cuda(0)); };
  for (auto [a, b, c] : {std::tuple<int64_t, int64_t, int64_t>{1000, 1020, 1030},
                         {(int64_t{3} << 20) + 1, int64_t{4} << 20, (int64_t{4} << 20) + 1}}) {
    void* first = nullptr;
    {
      Tensor t = block(a);
      first = t.raw_data();
    }
    {
      Tensor t = block(b);  // the same rounded size: the block just freed
      EXPECT_TRUE(t.raw_data() == first);
    }
    Tensor larger = block(c);  // the next rounded size: not the free block of the smaller one
    EXPECT_TRUE(larger.raw_data() != first);
  }
}

// The graph pool (temporaries of captured forwards) goes back to the driver with the last graph,
// so a later engine in the same process captures from an empty pool.
TEST(graph_pool_is_released_with_the_last_graph) {
  const size_t before = cuda::graph_pool_bytes();
  EXPECT_EQ(before, size_t{0});
  {
    // Each capture allocates 4 MiB of temporaries (values do not matter) and launches a kernel.
    Tensor gate_up = Tensor::zeros({1, 2048}, DType::kFloat32, Device::cuda(0));
    cuda::Graph a, b;
    for (cuda::Graph* g : {&a, &b})
      g->capture(0, [&] {
        Tensor scratch = Tensor::empty({int64_t{1} << 20}, DType::kFloat32, Device::cuda(0));
        Tensor out = Tensor::empty({1, 1024}, DType::kFloat32, Device::cuda(0));
        ops::silu_mul(gate_up, out);
      });
    EXPECT_TRUE(cuda::graph_pool_bytes() >= (size_t{4} << 20));
    a.replay();
    b.replay();
    cuda::synchronize();
  }
  EXPECT_EQ(cuda::graph_pool_bytes(), size_t{0});
}

// A graph-pool block serves later captures' smaller requests (up to 4x their size): a second graph
// whose temporaries are smaller takes no new memory; a larger one does.
TEST(graph_pool_blocks_serve_smaller_captures) {
  EXPECT_EQ(cuda::graph_pool_bytes(), size_t{0});
  {
    Tensor gate_up = Tensor::zeros({1, 2048}, DType::kFloat32, Device::cuda(0));
    auto capture = [&](cuda::Graph& g, int64_t scratch_floats) {
      g.capture(0, [&] {
        Tensor scratch = Tensor::empty({scratch_floats}, DType::kFloat32, Device::cuda(0));
        Tensor out = Tensor::empty({1, 1024}, DType::kFloat32, Device::cuda(0));
        ops::silu_mul(gate_up, out);
      });
    };
    cuda::Graph a, b, c;
    capture(a, int64_t{5} << 20);  // 20 MiB
    const size_t after_a = cuda::graph_pool_bytes();
    EXPECT_TRUE(after_a >= (size_t{20} << 20));
    capture(b, int64_t{3} << 20);  // 12 MiB: fits the 20 MiB block
    EXPECT_EQ(cuda::graph_pool_bytes(), after_a);
    capture(c, int64_t{6} << 20);  // 24 MiB: a new block
    EXPECT_TRUE(cuda::graph_pool_bytes() >= after_a + (size_t{24} << 20));
    for (cuda::Graph* g : {&a, &b, &c}) g->replay();
    cuda::synchronize();
  }
  EXPECT_EQ(cuda::graph_pool_bytes(), size_t{0});
}

// An upload from pageable host memory does not wait for the stream, but the host may overwrite its
// buffer as soon as the call returns: the device holds the values of the call.
TEST(upload_from_pageable_memory_is_staged) {
  const int64_t n = int64_t{1} << 22;
  std::vector<float> host(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) host[static_cast<size_t>(i)] = static_cast<float>(i % 1000);
  Tensor gate_up = Tensor::zeros({4096, 8192}, DType::kFloat32, Device::cuda(0));
  Tensor busy = Tensor::empty({4096, 4096}, DType::kFloat32, Device::cuda(0));
  Tensor dev = Tensor::empty({n}, DType::kFloat32, Device::cuda(0));
  for (int rep = 0; rep < 8; ++rep) ops::silu_mul(gate_up, busy);  // work queued ahead of the copy
  device_copy(dev.raw_data(), dev.device(), host.data(), Device::cpu(), static_cast<size_t>(n) * sizeof(float));
  std::fill(host.begin(), host.end(), -1.f);
  Tensor back = dev.to(Device::cpu());
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i) wrong += back.data<float>()[i] != static_cast<float>(i % 1000);
  EXPECT_EQ(wrong, int64_t{0});
}

// Asynchronous scheduling's device pieces: the decisions carried into a forward (the chosen tokens
// scattered into its ids, each run's unfilled candidates into its logit rows) give the CPU's
// ids and rows, and a download into pinned memory queued behind work is complete once its event
// has passed (and not before the work ahead of it).
TEST(carried_decisions_and_the_event_waited_download) {
  std::mt19937 g(77);
  const int64_t rows = 1000, n = 3000;
  ops::SampleOutputs want = ops::SampleOutputs::empty(rows);
  ops::CarriedDecisions d;
  d.targets.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    want.x0.data<int32_t>()[r] = static_cast<int32_t>(g() % 50000);
    want.chosen.data<int32_t>()[r] = static_cast<int32_t>(g() % 2);
    d.targets[static_cast<size_t>(r)] = r % 7 == 3 ? -1 : static_cast<int32_t>(3 * r);
  }
  // 300 runs of 0 to 80 candidates (several warp-wide chunks), each keeping a random count up to
  // its candidates (so some stop early), packed one after another in the logit rows.
  int32_t out = 0;
  for (int k = 0; k < 300; ++k) {
    const int32_t count = static_cast<int32_t>(g() % 81), keep = count == 0 ? 0 : static_cast<int32_t>(g() % (count + 1));
    d.runs.insert(d.runs.end(), {static_cast<int32_t>(d.candidate_rows.size()), count, out, keep});
    for (int32_t c = 0; c < count; ++c) {
      d.candidate_rows.push_back(static_cast<int32_t>(g() % n));
      d.candidate_sources.push_back(static_cast<int32_t>(g() % (rows + 1)) - 1);
    }
    out += keep;
  }
  Tensor ids_cpu = Tensor::zeros({n}, DType::kInt32, Device::cpu());
  Tensor ids_gpu = ids_cpu.to(Device::cuda(0));
  Tensor rows_cpu = Tensor::empty({out + 5}, DType::kInt32, Device::cpu());
  std::fill_n(rows_cpu.data<int32_t>(), out + 5, -3);
  Tensor rows_gpu = rows_cpu.to(Device::cuda(0));
  ops::SampleOutputs got = want.to(Device::cuda(0));
  ops::carry_decisions(want, d, ids_cpu, &rows_cpu);
  ops::carry_decisions(got, d, ids_gpu, &rows_gpu);
  const Tensor back = ids_gpu.to(Device::cpu()), rows_back = rows_gpu.to(Device::cpu());
  int64_t diffs = 0, written = 0, row_diffs = 0, rows_written = 0;
  for (int64_t i = 0; i < n; ++i) {
    diffs += back.data<int32_t>()[i] != ids_cpu.data<int32_t>()[i];
    written += ids_cpu.data<int32_t>()[i] != 0;
  }
  for (int64_t i = 0; i < out + 5; ++i) {
    row_diffs += rows_back.data<int32_t>()[i] != rows_cpu.data<int32_t>()[i];
    rows_written += rows_cpu.data<int32_t>()[i] != -3;
  }
  EXPECT_EQ(diffs, int64_t{0});
  EXPECT_EQ(row_diffs, int64_t{0});
  EXPECT_TRUE(written > 100);
  EXPECT_TRUE(rows_written > out / 2);  // most runs find their count of unfilled candidates
  ops::CarriedDecisions bad = d;
  bad.targets[5] = static_cast<int32_t>(n);
  EXPECT_THROWS(ops::carry_decisions(got, bad, ids_gpu, &rows_gpu), InvalidArgument);

  const size_t bytes = static_cast<size_t>(got.packed.nbytes());
  std::shared_ptr<void> pinned(cuda::malloc_host_pinned(bytes), cuda::free_host_pinned);
  std::fill_n(static_cast<int32_t*>(pinned.get()), bytes / 4, -7);
  Tensor gate_up = Tensor::zeros({4096, 8192}, DType::kFloat32, Device::cuda(0));
  Tensor busy = Tensor::empty({4096, 4096}, DType::kFloat32, Device::cuda(0));
  for (int rep = 0; rep < 8; ++rep) ops::silu_mul(gate_up, busy);  // work queued ahead of the copy
  cuda::copy_to_host_async(pinned.get(), got.packed.raw_data(), bytes);
  void* done = cuda::event_record();
  cuda::event_synchronize(done);
  cuda::event_destroy(done);
  const int32_t* h = static_cast<const int32_t*>(pinned.get());
  int64_t wrong = 0;
  for (size_t i = 0; i < bytes / 4; ++i) wrong += h[i] != want.packed.data<int32_t>()[i];
  EXPECT_EQ(wrong, int64_t{0});
}

int main() {
  if (cuda_device_count() == 0) {
    std::printf("SKIPPED: no CUDA GPU visible (built with CUDA: %s); these tests did not run\n",
                built_with_cuda() ? "yes" : "no");
    return 77;
  }
  return ::bitest::run_all();  // BITEST_FILTER=name runs only the cases whose names contain it
}
