#pragma once

#include "blockinfer/tensor.h"

namespace blockinfer::ops {

// out [n, inter] = silu(gate) * up with gate_up [n, 2 * inter] = [gate | up].
void silu_mul(const Tensor& gate_up, Tensor& out);

}  // namespace blockinfer::ops
