#pragma once

#include "blockinfer/tensor.h"

namespace blockinfer::ops {

// out [n, inter] = silu(gate) * up with gate_up [n, 2 * inter] = [gate | up], or (block > 0, a
// divisor of inter) alternating `block` gate columns and the up columns of the same outputs.
void silu_mul(const Tensor& gate_up, Tensor& out, int64_t block = 0);

// out[i] = src[rows[i]]: src [n, w], rows [r] int32, out [r, w].
void gather_rows(const Tensor& src, const Tensor& rows, Tensor& out);

}  // namespace blockinfer::ops
