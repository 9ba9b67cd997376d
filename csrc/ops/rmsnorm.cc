#include "ops/rmsnorm.h"

#include "kernels/cpu/kernels.h"
#include "kernels/cuda/rmsnorm.h"
#include "core/profiler.h"
#include "ops/common.h"

namespace blockinfer::ops {

void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out, Tensor* residual) {
  OpTimer timer("rmsnorm", x.device());
  check_dim(x, 2, "rmsnorm: x");
  check_dim(weight, 1, "rmsnorm: weight");
  check_dim(out, 2, "rmsnorm: out");
  const int64_t rows = x.size(0), hidden = x.size(1);
  BI_CHECK_ARG(weight.size(0) == hidden, "rmsnorm: weight has ", weight.size(0),
               " elements but x has hidden size ", hidden);
  BI_CHECK_ARG(out.shape() == x.shape(), "rmsnorm: out shape ", out.shape_str(), " != x shape ",
               x.shape_str());
  BI_CHECK_ARG(x.stride(1) == 1, "rmsnorm: x rows must be contiguous");
  BI_CHECK_ARG(eps > 0.f, "rmsnorm: eps must be > 0, got ", eps);
  check_contiguous(out, "rmsnorm: out");
  check_contiguous(weight, "rmsnorm: weight");
  check_same_device(x, weight, "rmsnorm: x", "weight");
  check_same_device(x, out, "rmsnorm: x", "out");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&weight, &out})
    BI_CHECK_ARG(t->dtype() == x.dtype(), "rmsnorm: all tensors must share x's dtype ",
                 dtype_name(x.dtype()), ", got ", dtype_name(t->dtype()));
  if (residual) {
    BI_CHECK_ARG(residual->shape() == x.shape() && residual->dtype() == x.dtype(),
                 "rmsnorm: residual must match x (", x.shape_str(), " ", dtype_name(x.dtype()),
                 "), got ", residual->shape_str(), " ", dtype_name(residual->dtype()));
    check_contiguous(*residual, "rmsnorm: residual");
    check_same_device(x, *residual, "rmsnorm: x", "residual");
  }
  if (x.device().is_cpu()) {
    check_dtype(x, DType::kFloat32, "rmsnorm (CPU): x");
    cpu::rmsnorm(x.data<float>(), residual ? residual->data<float>() : nullptr,
                 weight.data<float>(), out.data<float>(), rows, hidden, x.stride(0), eps);
    return;
  }
  cuda::RmsNormArgs args{x.raw_data(), residual ? residual->raw_data() : nullptr,
                         weight.raw_data(), out.raw_data(), rows, hidden, x.stride(0), eps,
                         x.dtype(), x.device().index};
  cuda::launch_rmsnorm(args);
}

}  // namespace blockinfer::ops
