#pragma once

#include <cmath>

#include "blockinfer/tensor.h"

namespace blockinfer {

// inv_freq[i] = 1 / theta^(2i / head_dim), i < head_dim / 2, in float32 as Hugging Face computes
// it for Qwen-style rotary embeddings.
inline Tensor rope_inv_freq(int64_t head_dim, double theta) {
  Tensor t = Tensor::empty({head_dim / 2}, DType::kFloat32);
  float* p = t.data<float>();
  for (int64_t i = 0; i < head_dim / 2; ++i)
    p[i] = 1.0f / std::pow(static_cast<float>(theta),
                           static_cast<float>(2 * i) / static_cast<float>(head_dim));
  return t;
}

}  // namespace blockinfer
