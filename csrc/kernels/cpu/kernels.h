// CPU reference kernels (float32). They define each op's semantics; the CUDA kernels are tested
// against them. Raw pointers and sizes only: no Tensor, no framework types.
#pragma once

#include <cstdint>

#include "blockinfer/sampling_params.h"
#include "kernels/philox.h"  // BI_HOST_DEVICE

namespace blockinfer::cpu {

// out = rmsnorm(x [+ residual]) * weight; with residual: residual <- x + residual first.
void rmsnorm(const float* x,        // [num_rows, hidden], row stride x_stride
             float* residual,       // [num_rows, hidden] or nullptr
             const float* weight,   // [hidden]
             float* out,            // [num_rows, hidden]
             int64_t num_rows, int64_t hidden, int64_t x_stride, float eps);

// out = x @ w^T (a Linear layer without bias).
void linear(const float* x,  // [m, k]
            const float* w,  // [n, k]
            float* out,      // [m, n]
            int64_t m, int64_t n, int64_t k);

void embedding(const int32_t* ids,  // [num_tokens]
               const float* table,  // [vocab, hidden]
               float* out,          // [num_tokens, hidden]
               int64_t num_tokens, int64_t hidden);

// In place on the fused qkv rows: per-head RMSNorm of q and k (weights [head_dim]), then RoPE
// (rotate-half / NeoX layout) on q and k at each token's absolute position.
void qk_norm_rope(float* qkv,             // [num_tokens, (num_heads + 2 * num_kv_heads) * head_dim]
                  const int32_t* positions,  // [num_tokens]
                  const float* q_norm_w,  // [head_dim] or nullptr (no QK-norm)
                  const float* k_norm_w,  // [head_dim] or nullptr
                  const float* inv_freq,  // [head_dim / 2]
                  int64_t num_tokens, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                  float eps);

// Writes the k and v parts of each qkv row into the paged cache at slot_mapping[t]
// (slot = page * page_size + offset in page).
void kv_write(const float* qkv,            // [num_tokens, (H + 2 KV) * D]
              const int32_t* slot_mapping,  // [num_tokens]
              float* k_cache,               // [num_pages, page_size, num_kv_heads, head_dim]
              float* v_cache,               // [num_pages, page_size, num_kv_heads, head_dim]
              int64_t num_tokens, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim);

// Block-causal paged attention over a ragged batch. Sequence s owns query rows
// [q_start[s], q_start[s+1]) at absolute positions positions[row], and keys [0, kv_len[s]) in its
// pages. Query at position i attends key j iff j / block_len[s] <= i / block_len[s]
// (SEMANTICS §4); block_len[s] == 0 means fully bidirectional over [0, kv_len). With
// block_offset[s] = P > 0 (block decode of a bidirectional model, SEMANTICS §5) positions
// [0, P) form one bidirectional prompt block and blocks of block_len[s] start at P.
void paged_attention(const float* qkv,          // [num_tokens, (H + 2 KV) * D]: q is read from it
                     const float* k_cache,      // [num_pages, page_size, KV, D]
                     const float* v_cache,      // [num_pages, page_size, KV, D]
                     const int32_t* page_table,  // [num_seqs, max_pages_per_seq]
                     const int32_t* q_start,    // [num_seqs + 1]
                     const int32_t* positions,  // [num_tokens]
                     const int32_t* kv_len,     // [num_seqs]
                     const int32_t* block_len,  // [num_seqs]
                     const int32_t* block_offset,  // [num_seqs] or nullptr (all 0)
                     float* out,                // [num_tokens, H * D]
                     int64_t num_seqs, int64_t max_pages_per_seq, int64_t page_size,
                     int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, float scale);

// out = silu(gate) * up, with gate_up = [gate | up] per row, or (block > 0) alternating `block`
// gate columns and the up columns of the same outputs.
void silu_mul(const float* gate_up,  // [num_tokens, 2 * inter]
              float* out,            // [num_tokens, inter]
              int64_t num_tokens, int64_t inter, int64_t block = 0);

// Which score a strategy ranks positions by (SEMANTICS §3).
enum class ConfidenceKind : uint8_t {
  kTempered = 0,    // p[x0], p = softmax(l / T) unfiltered (softmax(l) when T == 0)
  kUntempered = 1,  // softmax(l)[x0]: LLaDA's low_confidence
  kRandom = 2,      // a uniform keyed by (seed, step, position): LLaDA's random
  // Dream's algorithms (rows with `dream` set; origin and maskgit_plus take kTempered), over
  // q_i = float(p_i), p the tempered distribution (softmax(l) when T == 0) renormalised over the
  // tokens Dream's filters keep.
  kMargin = 3,      // q_(1) - q_(2), the two largest q (Dream's topk_margin)
  kNegEntropy = 4,  // sum q log q in float64 over q > 0 (Dream's entropy)
};

// Per-row sampling of SEMANTICS §2 (exact rules in kernels/cpu/sampling.cc).
struct SampleRowParams {
  float temperature;   // 0 = greedy
  int32_t topk;        // 0 = off
  float topp;          // 1 = off
  uint64_t seed;
  uint32_t step;       // step index inside the block
  uint32_t position;   // absolute position of the row's token
  ConfidenceKind confidence_kind = ConfidenceKind::kTempered;
  // Dream's rules (SEMANTICS §6) instead of §2's filters: top-p first (a token stays while the
  // mass of the float32 probabilities before it is <= top_p), then top-k keeping ties, both also
  // at T = 0 (where x0 is still the argmax of l); the confidence is over the kept tokens.
  uint8_t dream = 0;
};
// Whether a row's top-k and top-p filters are on (top-k of the whole vocabulary keeps everything):
// the one rule of the CPU kernel, the CUDA kernel and the op's dispatch.
BI_HOST_DEVICE bool uses_topk(const SampleRowParams& p, int64_t vocab) { return p.topk > 0 && p.topk < vocab; }
BI_HOST_DEVICE bool uses_topp(const SampleRowParams& p) { return p.topp < 1.f; }

void sample_rows(const float* logits,            // [num_rows, vocab]
                 const SampleRowParams* params,  // [num_rows]
                 int32_t* x0,                    // [num_rows]
                 float* confidence,              // [num_rows]
                 float* logprob,                 // [num_rows] log p[x0]
                 float* entropy,                 // [num_rows] -sum p log p
                 int64_t num_rows, int64_t vocab);

// Classifier-free guidance (SEMANTICS §5, LLaDA canvas mode): output row r of the guided logits is
// rows[r].cond copied (uncond < 0) or un + weight * (cond - un) in float32, each operation rounded
// (no fused multiply-add), with un = rows[r].uncond and weight = cfg_scale + 1.
struct GuidanceRow {
  int32_t cond = 0;
  int32_t uncond = -1;
  float weight = 1.f;
};
void combine_guidance(const float* logits,  // [*, vocab]
                      const GuidanceRow* rows, int64_t num_rows, int64_t vocab,
                      float* out);          // [num_rows, vocab]

// The remasking selection of one denoise step (SEMANTICS §3) for one sequence: its sampled rows
// [row_begin, row_begin + rows) are its masked positions in order.
struct RemaskSegment {
  int32_t row_begin = 0;
  int32_t rows = 0;
  RemaskingStrategy strategy = RemaskingStrategy::kLowConfidenceStatic;  // a block strategy
  int32_t n_t = 0;              // the schedule's count for this step
  uint8_t last_step = 0;        // t == S - 1: every row
  uint8_t first_only = 0;       // the first row alone (a cached Dream block's first step)
  uint8_t skip = 0;             // chosen elsewhere (Dream's algorithms): no row
  float dynamic_threshold = 0;  // low_confidence_dynamic, confidence_threshold
  float eb_threshold = 0;       // entropy_bounded
  float factor = 0;             // confidence_factor
};
// chosen[r] = 1 for each row its segment unmasks, else 0 (rows outside every segment untouched).
// Ties go to the lower row; a segment unmasks at least one row while it has any (unless skipped).
void select_unmask_rows(const float* confidence,  // [num_rows]
                        const float* entropy,     // [num_rows]
                        const RemaskSegment* segments, int64_t num_segments,
                        int32_t* chosen);         // [num_rows]
// Strategies whose step unmasks a count known before its confidences: min(n_t, masked), at least
// one, all on the last step (sequential, low_confidence_static, low_confidence, random).
bool unmasks_known_count(RemaskingStrategy s);
// The rows select_unmask_rows marks for `s` whatever its confidences and entropies, or -1 where
// that count depends on them.
int32_t known_unmask_count(const RemaskSegment& s);

}  // namespace blockinfer::cpu
