#pragma once

#include "blockinfer/tensor.h"

namespace blockinfer::ops {

// out = x @ weight^T. x: [m, k], weight: [n, k], out: [m, n]; contiguous. CPU: float32. CUDA:
// x and weight share a float dtype; out has it too, or float32 (e.g. logits).
void linear(const Tensor& x, const Tensor& weight, Tensor& out);

// out[i, :] += bias for every row. out: [n, w], bias: [w], same dtype and device.
void add_bias(Tensor& out, const Tensor& bias);

}  // namespace blockinfer::ops
