#pragma once

#include "blockinfer/tensor.h"

namespace blockinfer::ops {

// out = rmsnorm(x) * weight, or with `residual` defined: residual <- x + residual, then
// out = rmsnorm(residual) * weight (the residual add fused into the norm).
// x: [num_rows, hidden] (rows may be strided), weight: [hidden], residual/out: [num_rows, hidden].
// CPU: float32. CUDA: float32, bfloat16 or float16, accumulating in float32.
void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
             Tensor* residual = nullptr);

}  // namespace blockinfer::ops
