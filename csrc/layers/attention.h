#pragma once

#include "blockinfer/tensor.h"
#include "layers/linear.h"
#include "ops/attention.h"

namespace blockinfer {

// Self-attention of one layer over a ragged batch with a paged KV cache: fused QKV projection,
// optional per-head QK-norm, RoPE, KV write into pages, paged attention, output projection.
struct PagedSelfAttention {
  Linear qkv;        // [(H + 2 KV) * D, hidden]
  Linear o_proj;     // [hidden, H * D]
  Tensor q_norm;     // [D] or undefined
  Tensor k_norm;     // [D] or undefined
  Tensor inv_freq;   // [D / 2]
  ops::AttentionDims dims{};
  float eps = 1e-6f;

  // x: [num_tokens, hidden] (normalised input) -> out: [num_tokens, hidden]. With `rows`
  // ([r] int32 row indices), every token still writes its KV and attends, but only the listed
  // rows go through the output projection: out is [r, hidden] (a model's last layer, where only
  // the rows whose logits are wanted matter). With accumulate, the projection is added to out
  // (the residual stream; Linear::forward).
  void forward(const Tensor& x, const ops::AttentionMetadata& meta, Tensor& k_cache,
               Tensor& v_cache, Tensor& out, const Tensor* rows = nullptr, bool accumulate = false) const;
};

}  // namespace blockinfer
