#pragma once

#include "blockinfer/tensor.h"
#include "ops/linear.h"

namespace blockinfer {

// A bias-free Linear layer. Fused projections (q|k|v, gate|up) are one Linear whose weight rows
// are the parts stacked at load time.
struct Linear {
  Tensor weight;  // [out_features, in_features]
  Tensor bias;    // [out_features] or undefined

  int64_t out_features() const { return weight.size(0); }
  int64_t in_features() const { return weight.size(1); }
  // x: [n, in_features] -> out: [n, out_features]
  void forward(const Tensor& x, Tensor& out) const {
    ops::linear(x, weight, out);
    if (bias.defined()) ops::add_bias(out, bias);
  }
};

}  // namespace blockinfer
