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

}  // namespace blockinfer::ops
