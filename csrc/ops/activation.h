#pragma once

#include "blockinfer/tensor.h"

namespace blockinfer::ops {

// out [n, inter] = silu(gate) * up with gate_up [n, 2 * inter] = [gate | up].
void silu_mul(const Tensor& gate_up, Tensor& out);

// out[i] = src[rows[i]]: src [n, w], rows [r] int32, out [r, w].
void gather_rows(const Tensor& src, const Tensor& rows, Tensor& out);

}  // namespace blockinfer::ops
