#include "ops/linear.h"

#include "kernels/cpu/kernels.h"
#include "kernels/cuda/launchers.h"
#include "core/profiler.h"
#include "ops/common.h"

namespace blockinfer::ops {

void linear(const Tensor& x, const Tensor& weight, Tensor& out) {
  OpTimer timer("gemm", x.device());
  check_dim(x, 2, "linear: x");
  check_dim(weight, 2, "linear: weight");
  check_dim(out, 2, "linear: out");
  BI_CHECK_ARG(x.size(1) == weight.size(1), "linear: x has ", x.size(1), " features but weight ",
               weight.shape_str(), " expects ", weight.size(1));
  BI_CHECK_ARG(out.size(0) == x.size(0) && out.size(1) == weight.size(0), "linear: out shape ",
               out.shape_str(), " != [", x.size(0), ", ", weight.size(0), "]");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&x, &weight, &out}) {
    check_compute(*t, x.device(), "linear");
    check_contiguous(*t, "linear");
  }
  BI_CHECK_ARG(weight.dtype() == x.dtype(), "linear: weight dtype ", dtype_name(weight.dtype()),
               " != x dtype ", dtype_name(x.dtype()));
  if (x.device().is_cpu()) {
    cpu::linear(x.data<float>(), weight.data<float>(), out.data<float>(), x.size(0), weight.size(0),
                x.size(1));
    return;
  }
  cuda::launch_gemm(x.raw_data(), weight.raw_data(), out.raw_data(), x.size(0), weight.size(0),
                    x.size(1), x.dtype(), out.dtype(), x.device().index);
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
