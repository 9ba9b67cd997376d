#pragma once

#include <array>

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
  Tensor block_offset;
  // CUDA: the attention work plan of this batch (plan_attention), built once per forward and
  // shared by every layer; undefined tiles: paged_attention plans (and uploads) by itself.
  Tensor attn_tiles;     // [num_tiles, 3] int32 on the device
  int32_t attn_splits = 1;
  int32_t attn_keys_per_split = 0;
  int32_t attn_key_split = 1;  // tensor-core kernel: warps sharing 16 query items (1, 2 or 4)
  bool attn_wide = false;      // tensor-core kernel: wide tiles (kMmaWideItemsPerTile items, key split 1)
  bool attn_wgmma = false;     // wide plan in the wgmma form: 64-item tiles (AttentionPlanOptions::wgmma)
  bool attn_keys_read_once = false;  // AttentionPlan::keys_read_once
  Tensor attn_partials;  // float32 workspace on the device (when attn_splits > 1)
};

// The CUDA attention kernels' plan for a batch: host tiles [num_tiles, 3] of (sequence, first
// row, end row), the key splits and the workspace they need.
struct AttentionPlan {
  Tensor tiles;
  int32_t splits = 1;
  int32_t keys_per_split = 0;
  int32_t key_split = 1;  // tensor-core kernel: warps sharing 16 query items (small tiles: 2 or 4)
  bool wide = false;      // tensor-core kernel: wide tiles (key_split 1)
  bool wgmma = false;     // ... in the wgmma form: tiles of kMmaItemsPerTile items
  // Each sequence's rows in one tile (denoise steps), so each key is read by one CTA of its KV head
  // (one per split): the kernel brings the keys into the L2 evict-first, and they do not push out
  // the activations the next kernels read (a prefill's tiles share their sequence's keys).
  bool keys_read_once = false;
  int64_t partial_floats = 0;
};
struct AttentionPlanOptions {
  // Round the split count up to a power of two: the executor's CUDA graphs are keyed by it, so a
  // few graphs serve a whole decode (splits past a sequence's context exit at once).
  bool pow2_splits = false;
  // CTAs of the tensor-core kernel the GPU runs at once, by its key split 1, 2 and 4, then its wide
  // form (the wgmma kernel where that serves) (the default: an H100's 132 SMs at the occupancy of
  // the sm_90a build's TMA kernels, two, three, three and two an SM; attention_cta_slots reads a
  // device's, three an SM for the wgmma form): the plan sizes its key runs by the waves they make.
  std::array<int64_t, 4> cta_slots = {2 * 132, 3 * 132, 3 * 132, 2 * 132};
  // > 0: the tensor-core path's key run, instead of the planned one (benchmarks).
  int32_t keys_per_split = 0;
  // The tensor-core path's wide tiles: -1 where the plan chooses them, 0 never, 1 always (tests and
  // benchmarks).
  int32_t wide_tiles = -1;
  // The device runs the tensor-core path's wgmma form (attention_wgmma): a wide plan then keeps
  // 64-item tiles, which that form runs faster than the wide tiles' mma.sync (still two waves or more).
  bool wgmma = false;
};
// Whether `device` (a CUDA device) runs the tensor-core kernel's wgmma form (code built for sm_90a on
// a compute capability 9.0 device, caches in pages TMA serves, BLOCKINFER_ATTENTION_WGMMA not 0).
bool attention_wgmma(Device device, DType dtype, const AttentionDims& dims, int64_t page_size);
// cta_slots for the tensor-core kernel on `device` (a CUDA device) with caches in pages of
// `page_size` keys: its occupancy per key split (and wide) times the SMs.
std::array<int64_t, 4> attention_cta_slots(Device device, DType dtype, const AttentionDims& dims, int64_t page_size);
AttentionPlan plan_attention(const Tensor& host_q_start, const Tensor& host_kv_len,
                             const AttentionDims& dims, DType dtype, const AttentionPlanOptions& options = {});
// The plan's scalars (splits, key runs, key split, forms, keys_read_once) into `meta`; its tiles and
// split workspace are the caller's to place (attach_attention_plan uploads them, the executor packs
// them with the forward's other indices).
void set_plan_scalars(AttentionMetadata& meta, const AttentionPlan& plan);
// Builds the plan for `meta` (from its host copies) and puts it on `device` in `meta`.
void attach_attention_plan(AttentionMetadata& meta, const AttentionDims& dims, DType dtype, Device device,
                           const AttentionPlanOptions& options = {});

// In place on the fused qkv rows [num_tokens, (H + 2 KV) * D]: per-head RMSNorm of q and k
// (skipped where the weight is undefined) then rotate-half RoPE with `inv_freq` [D / 2].
void qk_norm_rope(Tensor& qkv, const Tensor& positions, const Tensor& q_norm_w,
                  const Tensor& k_norm_w, const Tensor& inv_freq, const AttentionDims& dims,
                  float eps);

// Writes each row's k and v into the paged caches [num_pages, page_size, KV, D].
void kv_write(const Tensor& qkv, const AttentionMetadata& meta, Tensor& k_cache, Tensor& v_cache,
              const AttentionDims& dims);

// qk_norm_rope, then kv_write of the rotated rows (on a GPU one kernel: the rows are read once).
void qk_norm_rope_kv_write(Tensor& qkv, const AttentionMetadata& meta, const Tensor& q_norm_w,
                           const Tensor& k_norm_w, const Tensor& inv_freq, const AttentionDims& dims, float eps,
                           Tensor& k_cache, Tensor& v_cache);

// out [num_tokens, H * D] = block-causal paged attention of the q part of qkv over the caches.
void paged_attention(const Tensor& qkv, const Tensor& k_cache, const Tensor& v_cache,
                     const AttentionMetadata& meta, const AttentionDims& dims, Tensor& out);

}  // namespace blockinfer::ops
