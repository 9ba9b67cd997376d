#pragma once

#include "blockinfer/tensor.h"
#include "layers/linear.h"
#include "ops/activation.h"
#include "ops/linear.h"

namespace blockinfer {

// SwiGLU MLP: down(silu(gate(x)) * up(x)) with gate|up fused into one projection.
struct GatedMLP {
  Linear gate_up;  // [2 * inter, hidden]
  Linear down;     // [hidden, inter]
  // gate_up's rows: 0, [gate | up]; > 0, runs of silu_block gate rows each followed by the up
  // rows of the same outputs (ops::fused_silu_mul_block), so that batches of the sizes where it
  // pays (ops::fused_silu_mul_takes) take the projection with SiLU·mul in its epilogue.
  int64_t silu_block = 0;

  // Puts gate_up into the fused kernel's layout where one serves (no bias; see
  // ops::fused_silu_mul_block for which kernel and the switches).
  void use_fused_silu_mul() {
    if (gate_up.bias.defined()) return;
    const Tensor& w = gate_up.weight;
    silu_block = ops::fused_silu_mul_block(w.dtype(), w.device(), w.size(0) / 2, w.size(1));
    if (silu_block > 0) gate_up.weight = ops::interleave_gate_up(w, silu_block);
  }

  // out = the MLP of x; with accumulate, out += it (the residual stream; Linear::forward).
  void forward(const Tensor& x, Tensor& out, bool accumulate = false) const {
    const int64_t n = x.size(0);
    Tensor act = Tensor::empty({n, down.in_features()}, x.dtype(), x.device());
    if (silu_block > 0 && ops::fused_silu_mul_takes(n)) {
      ops::linear_silu_mul(x, gate_up.weight, act);
    } else {
      Tensor gu = Tensor::empty({n, gate_up.out_features()}, x.dtype(), x.device());
      gate_up.forward(x, gu);
      ops::silu_mul(gu, act, silu_block);
    }
    down.forward(act, out, accumulate);
  }
};

}  // namespace blockinfer
