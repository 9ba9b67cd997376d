#pragma once

#include "blockinfer/tensor.h"
#include "ops/rmsnorm.h"

namespace blockinfer {

struct RMSNorm {
  Tensor weight;  // [hidden]
  float eps = 1e-6f;

  // out = norm(x) * weight; with residual: residual += x first and the sum is normalised.
  void forward(const Tensor& x, Tensor& out, Tensor* residual = nullptr) const {
    ops::rmsnorm(x, weight, eps, out, residual);
  }
};

}  // namespace blockinfer
