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
  // x: [n, in_features] -> out: [n, out_features]; with accumulate, out += the projection
  // (ops::linear), for layers without a bias.
  void forward(const Tensor& x, Tensor& out, bool accumulate = false) const {
    BI_CHECK_ARG(!(accumulate && bias.defined()), "Linear: accumulating into out needs a layer without a bias");
    ops::linear(x, weight, out, accumulate);
    if (bias.defined()) ops::add_bias(out, bias);
  }
};

}  // namespace blockinfer
