#pragma once

#include "blockinfer/tensor.h"
#include "layers/linear.h"
#include "ops/activation.h"

namespace blockinfer {

// SwiGLU MLP: down(silu(gate(x)) * up(x)) with gate|up fused into one projection.
struct GatedMLP {
  Linear gate_up;  // [2 * inter, hidden]
  Linear down;     // [hidden, inter]

  void forward(const Tensor& x, Tensor& out) const {
    const int64_t n = x.size(0);
    Tensor gu = Tensor::empty({n, gate_up.out_features()}, x.dtype(), x.device());
    gate_up.forward(x, gu);
    Tensor act = Tensor::empty({n, down.in_features()}, x.dtype(), x.device());
    ops::silu_mul(gu, act);
    down.forward(act, out);
  }
};

}  // namespace blockinfer
