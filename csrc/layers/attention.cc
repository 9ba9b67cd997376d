#include "layers/attention.h"

#include "ops/activation.h"

namespace blockinfer {

void PagedSelfAttention::forward(const Tensor& x, const ops::AttentionMetadata& meta,
                                 Tensor& k_cache, Tensor& v_cache, Tensor& out, const Tensor* rows,
                                 bool accumulate) const {
  const int64_t n = x.size(0);
  Tensor qkv_buf = Tensor::empty({n, qkv.out_features()}, x.dtype(), x.device());
  qkv.forward(x, qkv_buf);
  // Every forwarded token writes its KV before attention runs, so queries see the keys of their
  // own block (and of a finished block committed in the same forward).
  ops::qk_norm_rope_kv_write(qkv_buf, meta, q_norm, k_norm, inv_freq, dims, eps, k_cache, v_cache);
  if (rows != nullptr && rows->size(0) == 0) return;  // the KV was all that was needed
  Tensor attn = Tensor::empty({n, dims.num_heads * dims.head_dim}, x.dtype(), x.device());
  ops::paged_attention(qkv_buf, k_cache, v_cache, meta, dims, attn);
  if (rows == nullptr) {
    o_proj.forward(attn, out, accumulate);
    return;
  }
  Tensor attn_sel = Tensor::empty({rows->size(0), attn.size(1)}, x.dtype(), x.device());
  ops::gather_rows(attn, *rows, attn_sel);
  o_proj.forward(attn_sel, out, accumulate);
}

}  // namespace blockinfer
