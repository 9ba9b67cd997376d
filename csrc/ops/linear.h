#pragma once

#include "blockinfer/tensor.h"

namespace blockinfer::ops {

// out = x @ weight^T. x: [m, k], weight: [n, k], out: [m, n]; contiguous. CPU: float32. CUDA:
// x and weight share a float dtype; out has it too, or float32 (e.g. logits). With accumulate,
// out += x @ weight^T: the product, in float32, plus out, rounded once to out's dtype (a residual
// add carried by the GEMM; in float32 the same bits as the product followed by the add).
void linear(const Tensor& x, const Tensor& weight, Tensor& out, bool accumulate = false);

// The fused gate/up projection with SiLU·mul in its epilogue. Two kernels take it:
// - CUTLASS's Hopper GEMM with an epilogue written here (gemm_cutlass.cu), the default where it
//   serves: a build with the nvidia-cutlass headers and sm_90a code, a compute capability 9.0 device.
//   Its bits equalled cuBLASLt's product followed by silu_mul on every shape measured; the engine
//   takes it for batches of 512 rows and more, in launches of at most 4,096 rows
//   (fused_silu_mul_launch_rows; see fused_silu_mul_takes for where it made an H100's forward
//   faster or slower; BENCHMARKS.md); BLOCKINFER_GEMM_CUTLASS=0 turns it off.
// - the Hopper GEMM written here (gemm_sm90.cu), only with BLOCKINFER_GEMM_SM90=1 (which then takes
//   precedence): on an H100 it made SDAR-4B's batch-128 forward slower, not faster.
// fused_silu_mul_block gives the layout the chosen kernel needs for a [2 * inter, k] gate_up weight
// in `dtype` on `device` (rows alternating `block` gate rows and the up rows of the same outputs),
// or 0 where none serves. fused_silu_mul_takes: whether a batch of m rows runs it (others: the
// plain GEMM and silu_mul with the block, the same bits). linear_silu_mul: out [m, inter] =
// silu(x @ gate^T) * (x @ up^T) for such a weight, each product rounded to the dtype before the
// SiLU·mul, as silu_mul on a stored gate_up computes it.
int64_t fused_silu_mul_block(DType dtype, Device device, int64_t inter, int64_t k);
bool fused_silu_mul_takes(int64_t m);
int64_t fused_silu_mul_launch_rows(int64_t m);  // rows per launch of linear_silu_mul over m rows
void linear_silu_mul(const Tensor& x, const Tensor& weight, Tensor& out);

// Rows of a [2 * inter, k] gate_up weight ([gate | up]) reordered into `block`-row runs of gate
// rows, each followed by the up rows of the same outputs (block divides inter); same device.
Tensor interleave_gate_up(const Tensor& weight, int64_t block);

// out[i, :] += bias for every row. out: [n, w], bias: [w], same dtype and device.
void add_bias(Tensor& out, const Tensor& bias);

}  // namespace blockinfer::ops
