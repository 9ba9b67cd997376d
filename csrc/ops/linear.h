#pragma once

#include "blockinfer/tensor.h"

namespace blockinfer::ops {

// out = x @ weight^T. x: [m, k], weight: [n, k], out: [m, n]; contiguous. CPU: float32. CUDA:
// x and weight share a float dtype; out has it too, or float32 (e.g. logits).
void linear(const Tensor& x, const Tensor& weight, Tensor& out);

// The fused gate/up projection with SiLU·mul in its epilogue (the Hopper GEMM, gemm_sm90.cu):
// fused_silu_mul_block gives the layout it needs for a [2 * inter, k] gate_up weight in `dtype`
// on `device` (rows alternating `block` gate rows and the up rows of the same outputs), or 0 where
// it does not serve: not CUDA, code not built for sm_90a or a device not of compute capability
// 9.0, or shapes it does not take. The engine's MLP takes it only with BLOCKINFER_GEMM_SM90=1: on
// an H100 it made SDAR-4B's batch-128 forward slower, not faster (BENCHMARKS.md). linear_silu_mul:
// out [m, inter] = silu(x @ gate^T) * (x @ up^T) for such a weight, each product rounded to the
// dtype before the SiLU·mul, as silu_mul on a stored gate_up computes it. It takes batches of at
// least kFusedSiluMulMinRows rows (fewer: the plain GEMM and silu_mul with the block).
int64_t fused_silu_mul_block(DType dtype, Device device, int64_t inter, int64_t k);
constexpr int64_t kFusedSiluMulMinRows = 128;
void linear_silu_mul(const Tensor& x, const Tensor& weight, Tensor& out);

// Rows of a [2 * inter, k] gate_up weight ([gate | up]) reordered into `block`-row runs of gate
// rows, each followed by the up rows of the same outputs (block divides inter); same device.
Tensor interleave_gate_up(const Tensor& weight, int64_t block);

// out[i, :] += bias for every row. out: [n, w], bias: [w], same dtype and device.
void add_bias(Tensor& out, const Tensor& bias);

}  // namespace blockinfer::ops
