#pragma once

#include "blockinfer/tensor.h"

namespace blockinfer::ops {

// Shapes of one attention layer's heads.
struct AttentionDims {
  int64_t num_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
};

// The ragged batch's attention metadata (all int32, on the compute device).
struct AttentionMetadata {
  Tensor positions;     // [num_tokens] absolute positions
  Tensor slot_mapping;  // [num_tokens] cache slot (page * page_size + offset) each token writes
  Tensor page_table;    // [num_seqs, max_pages_per_seq]
  Tensor q_start;       // [num_seqs + 1] first query row of each sequence
  Tensor kv_len;        // [num_seqs] keys [0, kv_len) visible to the sequence
  Tensor block_len;     // [num_seqs] block-causal rule's block length; 0 = bidirectional
  int64_t page_size = 0;
  // Host copies of q_start and kv_len: the CUDA kernels plan their grid from them.
  Tensor host_q_start;
  Tensor host_kv_len;
  // [num_seqs] where blocks start (a bidirectional prompt block before them); undefined: all 0.
  // The CPU backend only, so far.
  Tensor block_offset;
};

// In place on the fused qkv rows [num_tokens, (H + 2 KV) * D]: per-head RMSNorm of q and k
// (skipped where the weight is undefined) then rotate-half RoPE with `inv_freq` [D / 2].
void qk_norm_rope(Tensor& qkv, const Tensor& positions, const Tensor& q_norm_w,
                  const Tensor& k_norm_w, const Tensor& inv_freq, const AttentionDims& dims,
                  float eps);

// Writes each row's k and v into the paged caches [num_pages, page_size, KV, D].
void kv_write(const Tensor& qkv, const AttentionMetadata& meta, Tensor& k_cache, Tensor& v_cache,
              const AttentionDims& dims);

// out [num_tokens, H * D] = block-causal paged attention of the q part of qkv over the caches.
void paged_attention(const Tensor& qkv, const Tensor& k_cache, const Tensor& v_cache,
                     const AttentionMetadata& meta, const AttentionDims& dims, Tensor& out);

}  // namespace blockinfer::ops
