// Host launchers of the CUDA kernels: plain C++ declarations (raw device pointers, sizes, dtype,
// device index), included by the op entry points in csrc/ops. Implemented in the .cu files of this
// folder, and by throwing stubs in kernels/cpu/no_cuda.cc when CUDA is not built.
#pragma once

#include <cstdint>
#include <vector>

#include "blockinfer/tensor.h"
#include "kernels/cpu/kernels.h"

namespace blockinfer::cuda {

// out[t] = table[ids[t]]
void launch_embedding(const int32_t* ids,  // [n]
                      const void* table,   // [vocab, hidden]
                      void* out,           // [n, hidden]
                      int64_t n, int64_t hidden, DType dtype, int device);

// out = x @ w^T: x [m, k] and w [n, k] in `dtype`; out [m, n] in `out_dtype` (dtype or float32).
// cuBLASLt with float32 accumulation; float32 inputs use pure FP32 compute (TF32 off). With
// accumulate, out = out + x @ w^T, added to the float32 product before the one rounding to
// out_dtype (cuBLASLt's beta = 1, in place).
void launch_gemm(const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k,
                 DType dtype, DType out_dtype, int device, bool accumulate = false);
// The GEMM written here for Hopper (gemm_sm90.cu): out = x @ w^T in bfloat16/float16 with float32
// accumulation, tiles of 128 rows x block_n (256 or 128; 0: the launcher's choice) columns. With
// silu_mul, w's rows alternate 128 gate rows and the 128 up rows of the same columns, and out
// [m, n / 2] = silu(gate) * up (each rounded to the dtype first, as launch_silu_mul on a stored
// gate_up). gemm_sm90_serves: code built for sm_90a on a compute capability 9.0 device, k a
// multiple of 8, n a multiple of 8 (256 with silu_mul); the launcher also needs 16-byte aligned
// operands and throws InvalidArgument where it does not serve. cluster 2 or 4: clusters of CTAs
// on consecutive n tiles share each tile of x, read from L2 once (TMA multicast). persistent: as
// many CTAs (or clusters) as fit at once, each taking tile after tile.
bool gemm_sm90_serves(DType dtype, int64_t n, int64_t k, int device, bool silu_mul);
void launch_gemm_sm90(const void* x, const void* w, void* out, int64_t m, int64_t n, int64_t k, DType dtype,
                      int device, bool silu_mul, int block_n = 0, int cluster = 1, bool persistent = false);
// The MLP's gate_up with SiLU·mul in its epilogue, built from CUTLASS's Hopper GEMM
// (gemm_cutlass.cu; needs the nvidia-cutlass headers at build time): x [m, k], w [2 * inter, k]
// interleaved in runs of 128 gate rows and the 128 up rows of the same outputs
// (ops::interleave_gate_up(w, 128)), out [m, inter] = silu(gate) * up, each rounded to the dtype
// first, as launch_silu_mul on the stored product computes it. Serves bfloat16/float16 on a compute
// capability 9.0 device in a build with CUTLASS and sm_90a code, inter a multiple of 128, k of 8;
// the launcher also needs 16-byte aligned operands and throws InvalidArgument where it does not serve.
bool gemm_cutlass_silu_mul_serves(DType dtype, int64_t inter, int64_t k, int device);
void launch_gemm_cutlass_silu_mul(const void* x, const void* w, void* out, int64_t m, int64_t inter, int64_t k,
                                  DType dtype, int device);
// The LM head reduced to greedy sampling, its float32 logits never stored: x [m, k] (the final
// hidden rows) times w [vocab, k]^T on CUTLASS's Hopper GEMM, whose epilogue reduces each row of a
// 64 x 256 tile to (max, its lowest column, sum of exp(l - max), sum of (l - max) exp(l - max)) in
// float into `partials` [m, ceil(vocab / 256), 4] (lm_head_greedy_partial_floats); a second kernel
// merges a row's tiles in double into x0 (the argmax, the lowest id on ties), log p[x0] = -log S,
// the entropy log S - T / S (at least 0) and the confidence p[x0] = 1 / S: sample_rows' values at
// T = 0 for the kTempered/kUntempered confidences, up to the order of the sums (the fast math's
// sums). Serves bfloat16/float16 on a compute capability 9.0 device in a build with CUTLASS and
// sm_90a code, k a multiple of 8; the launcher also needs 16-byte aligned operands and throws
// InvalidArgument where it does not serve.
bool gemm_cutlass_lm_head_greedy_serves(DType dtype, int64_t vocab, int64_t k, int device);
int64_t lm_head_greedy_partial_floats(int64_t m, int64_t vocab);
void launch_lm_head_greedy(const void* x, const void* w, float* partials, int32_t* x0, float* confidence,
                           float* logprob, float* entropy, int64_t m, int64_t vocab, int64_t k, DType dtype,
                           int device);
// Benchmarks: cuBLASLt's first `count` heuristic candidates for the shape (entry 0 is the one
// launch_gemm uses), each timed over `iters` launches on the given buffers.
struct GemmCandidate {
  double ms;        // per launch
  int split_k;      // the candidate's split of the K loop (1: none)
  bool same_bits;   // its output equals entry 0's bit for bit on these inputs
  int tile;         // cublasLtMatmulTile_t of the candidate
  float waves;      // the heuristic's estimate of its waves over the SMs
  int stages = 0;   // cublasLtMatmulStages_t
  int cluster = 0;  // cublasLtClusterShape_t
  int algo_id = 0;  // CUBLASLT_ALGO_CONFIG_ID
};
std::vector<GemmCandidate> time_gemm_candidates(const void* x, const void* w, void* out, int64_t m, int64_t n,
                                                int64_t k, DType dtype, DType out_dtype, int device, int count,
                                                int iters);
// Benchmarks: candidate `index` of the heuristic's list (0: its first choice, what launch_gemm
// runs unpinned) becomes the algorithm launch_gemm runs for this shape from now on. Returns its
// description (ms 0, same_bits true) and the number of candidates in `count`; an index past the
// list throws InvalidArgument.
GemmCandidate pin_gemm_candidate(int64_t m, int64_t n, int64_t k, DType dtype, DType out_dtype, int device, int index,
                                 int* count);

// In place on qkv [n, (H + 2 KV) * D]: per-head RMSNorm of q and k (when weights are given) and
// rotate-half RoPE with inv_freq [D / 2] (float32). With a slot mapping, the rotated k and the v
// of each row are also written into the paged caches (launch_kv_write fused in).
void launch_qk_norm_rope(void* qkv, const int32_t* positions, const void* q_norm_w,
                         const void* k_norm_w, const float* inv_freq, int64_t n, int64_t num_heads,
                         int64_t num_kv_heads, int64_t head_dim, float eps, DType dtype, int device,
                         const int32_t* slot_mapping = nullptr, void* k_cache = nullptr, void* v_cache = nullptr);

// k/v parts of qkv rows into the paged caches [pages, page_size, KV, D] at slot_mapping[t].
void launch_kv_write(const void* qkv, const int32_t* slot_mapping, void* k_cache, void* v_cache,
                     int64_t n, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                     DType dtype, int device);

// The attention kernels' tiles: runs of query rows of one sequence holding at most this many
// query items (rows x query heads per KV head). The tensor-core kernel serves bfloat16/float16
// with head_dim 64 or 128; everything else (float32: the exact mode) takes the CUDA-core kernel.
// Its four warps split each chunk's keys `key_split` ways (1, 2 or 4) when every tile holds at
// most kMmaItemsPerTile / key_split items. Wide tiles (long prefills and canvases, where every
// sequence fills whole tiles) hold kMmaWideItemsPerTile items: each of the four warps owns two
// groups of 16, so each K/V fragment it reads serves both.
constexpr int kMmaItemsPerTile = 64;
constexpr int kMmaWideItemsPerTile = 128;
inline int attention_key_split(int64_t max_items_per_tile) {
  return max_items_per_tile <= kMmaItemsPerTile / 4 ? 4 : max_items_per_tile <= kMmaItemsPerTile / 2 ? 2 : 1;
}
constexpr int kCudaCoreItemsPerTile = 32;
inline bool attention_uses_tensor_cores(DType dtype, int64_t head_dim, int64_t group) {
  return dtype != DType::kFloat32 && (head_dim == 64 || head_dim == 128) && group <= kMmaItemsPerTile;
}
inline int attention_items_per_tile(DType dtype, int64_t head_dim, int64_t group) {
  return attention_uses_tensor_cores(dtype, head_dim, group) ? kMmaItemsPerTile : kCudaCoreItemsPerTile;
}

struct PagedAttentionArgs {
  const void* qkv;           // [num_tokens, (H + 2 KV) * D]
  const void* k_cache;       // [num_pages, page_size, KV, D]
  const void* v_cache;
  const int32_t* page_table; // [num_seqs, max_pages_per_seq]
  const int32_t* positions;  // [num_tokens]
  const int32_t* kv_len;     // [num_seqs]
  const int32_t* block_len;  // [num_seqs] (0 = bidirectional)
  const int32_t* block_offset;  // [num_seqs] or null (all 0)
  void* out;                 // [num_tokens, H * D]
  // The work plan (ops::plan_attention): num_tiles (sequence, row_begin, row_end) triples in
  // device memory, `splits` runs of `keys_per_split` keys, and a float32 workspace of
  // splits * num_tokens * H * (D + 1) floats when splits > 1.
  const int32_t* tiles;
  int64_t num_tiles;
  int32_t splits, keys_per_split;
  int32_t key_split;  // tensor-core kernel: warps per 16 query items (attention_key_split)
  bool wide;          // tensor-core kernel: tiles of up to kMmaWideItemsPerTile items (key_split 1)
  bool wgmma;         // with wide: the plan's tiles hold up to kMmaItemsPerTile items, for the wgmma form
  float* partials;
  int64_t num_seqs, num_tokens, max_pages_per_seq, page_size;
  int64_t num_heads, num_kv_heads, head_dim;
  float scale;
  DType dtype;
  int device;
  int64_t cache_pages = 0;  // the caches' first dimension (0: unknown, no TMA copies)
  // Each key is read by one CTA of its KV head (ops::AttentionPlan::keys_read_once): the tensor-core
  // kernel's TMA copies then bring K and V into the L2 evict-first.
  bool keys_read_once = false;
};
void launch_paged_attention(const PagedAttentionArgs& args);
// CTAs of the tensor-core kernel with `key_split` (or its wide form: the wgmma kernel where that
// serves) that one SM of `device` holds at once (its registers and shared memory, from the
// occupancy API), for caches in pages of `page_size` keys (which choose between its TMA and
// cp.async forms). 0 where the tensor-core kernel does not serve (dtype, head_dim).
int attention_ctas_per_sm(DType dtype, int64_t head_dim, int64_t page_size, int key_split, int device,
                          bool wide = false);
// Whether the tensor-core kernel runs its wgmma form (64-item tiles, whole chunks by TMA; wide plans
// only) for (dtype, head_dim) on `device` with caches in pages of `page_size` keys: code built for
// sm_90a, a compute capability 9.0 device, and BLOCKINFER_ATTENTION_WGMMA unset or not 0.
bool attention_wgmma_serves(DType dtype, int64_t head_dim, int64_t page_size, int device);

// out[r, :] += bias for out [n, w], bias [w].
void launch_add_bias(void* out, const void* bias, int64_t n, int64_t w, DType dtype, int device);

// out [n, inter] = silu(gate) * up with gate_up [n, 2 * inter] = [gate | up], or (block > 0)
// alternating `block` gate columns and the up columns of the same outputs.
void launch_silu_mul(const void* gate_up, void* out, int64_t n, int64_t inter, DType dtype, int device,
                     int64_t block = 0);

// dst[i] = src[rows[i]] for rows of `width` elements.
void launch_gather_rows(const void* src, const int32_t* rows, void* dst, int64_t num_rows,
                        int64_t width, DType dtype, int device);

// Per-row sampling (the rules of kernels/cpu/sampling.cc, top-k/top-p included); logits float32
// [num_rows, vocab]; params and outputs in device memory; `workspace` of
// sample_rows_workspace_bytes; `any_filtered`: some row has top-k or top-p (their cuts are
// computed first); `any_negentropy`: some row's confidence is kNegEntropy (a second pass over its
// vocabulary once the row's max and sum are known); `fast_math`: the sums of exp(z - m) and the
// Gumbel noise's logarithms in float (ops::SampleMath::kFast).
size_t sample_rows_workspace_bytes(int64_t num_rows, int64_t vocab);
void launch_sample_rows(const float* logits, const cpu::SampleRowParams* params, int32_t* x0,
                        float* confidence, float* logprob, float* entropy, int64_t num_rows,
                        int64_t vocab, bool any_filtered, bool any_negentropy, bool fast_math, void* workspace,
                        int device);

// Guided logits (cpu::combine_guidance's rule): rows in device memory.
void launch_combine_guidance(const float* logits, const cpu::GuidanceRow* rows, int64_t num_rows, int64_t vocab,
                             float* out, int device);

// The remasking selection (the rules of kernels/cpu/remasking.cc): chosen[r] = 1 for the rows each
// segment unmasks, else 0; segments and outputs in device memory, rows of different segments
// disjoint; `workspace` holds 2 * num_rows int32.
void launch_select_unmask(const float* confidence, const float* entropy, const cpu::RemaskSegment* segments,
                          int64_t num_segments, int32_t* chosen, int32_t* workspace, int64_t num_rows, int device);
// ops::carry_decisions: ids[targets[r]] = x0[r] where chosen[r] != 0 and targets[r] >= 0, for the
// num_rows sampled rows; and for each run (int4: first candidate, candidates, first logit row,
// logit rows), its first `logit rows` candidates whose source is -1 or not chosen, in order, into
// logit_rows from its first logit row (candidate_rows[i] the row written for candidate i).
void launch_carry_decisions(const int32_t* x0, const int32_t* chosen, const int32_t* targets, int32_t* ids,
                            int64_t num_rows, const int32_t* candidate_rows, const int32_t* candidate_sources,
                            const int32_t* runs, int64_t num_runs, int32_t* logit_rows, int device);

}  // namespace blockinfer::cuda
