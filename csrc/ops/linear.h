#pragma once

#include "blockinfer/tensor.h"

namespace blockinfer::ops {

// out = x @ weight^T. x: [m, k], weight: [n, k], out: [m, n]; all contiguous float32 (CPU).
void linear(const Tensor& x, const Tensor& weight, Tensor& out);

}  // namespace blockinfer::ops
