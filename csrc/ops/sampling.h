#pragma once

#include <vector>

#include "blockinfer/tensor.h"
#include "kernels/cpu/kernels.h"

namespace blockinfer::ops {

using SampleRowParams = cpu::SampleRowParams;
using ConfidenceKind = cpu::ConfidenceKind;

// Per-row sampling (SEMANTICS §2; exact rules in kernels/cpu/sampling.cc).
// logits: [num_rows, vocab] float32 on the CPU or a GPU; params: one per row (host). Outputs are
// [num_rows] tensors on the logits' device.
struct SampleOutputs {
  Tensor x0;          // [num_rows] int32
  Tensor confidence;  // [num_rows] float32: the strategy's ranking score (see ConfidenceKind)
  Tensor logprob;     // [num_rows] float32: log p[x0]
  Tensor entropy;     // [num_rows] float32
  Tensor chosen;      // [num_rows] int32: 1 where select_unmask_rows unmasks the row
  // The five outputs are views of one buffer [5, num_rows] of 4-byte words, so moving them
  // between devices is one copy.
  Tensor packed;
  static SampleOutputs empty(int64_t num_rows, Device device = Device::cpu());
  // The outputs as views of `packed`, an int32 buffer [5 * num_rows] laid out as empty() lays it.
  static SampleOutputs of(const Tensor& packed);
  SampleOutputs to(Device device) const;
  // Views of rows [begin, begin + n) of each output, for sample_rows over part of a step's rows
  // (`packed` is left undefined: the part is not one buffer).
  SampleOutputs rows(int64_t begin, int64_t n) const;
};
// How a GPU sums a row's exp(z - max) terms (the CPU always takes kExact):
// - kExact: each term and every sum in double, as the CPU does, so float32 logits give the CPU's
//   tokens, confidences, log-probabilities and entropies (the float32 mode's contract);
// - kFast: each term (expf) and each thread's 16 terms in float, the rest in double, and the
//   Gumbel noise's logarithms in float (philox.h's gumbel_of_word_f32: the same noise to about
//   1e-6). A greedy x0 is the same token; a sampled one too, unless two candidates' noisy scores
//   agree to about 1e-6 (the top-k/top-p cuts do not change). The confidence, log p and entropy
//   differ in about the sixth significant digit. For 16-bit models, whose logits already carry
//   storage rounding far larger than that: the double arithmetic made the pass compute-bound
//   (0.43 ms for 512 greedy rows of SDAR's vocabulary on an H100, a quarter of the bandwidth).
enum class SampleMath { kExact, kFast };
void sample_rows(const Tensor& logits, const std::vector<SampleRowParams>& params, SampleOutputs& out,
                 SampleMath math = SampleMath::kExact);

// The LM head and greedy sampling in one (cuda::launch_lm_head_greedy): the float32 logits of
// hidden [rows, k] (16-bit, on a GPU) times weight [vocab, k]^T are reduced tile by tile and never
// stored. out's x0, confidence, logprob and entropy get sample_rows' values for rows that
// greedy_row_fuses, up to the order of the sums (SampleMath::kFast's error or less); out.chosen is
// left alone. lm_head_greedy_serves: the build and device run it for these operands (CUDA with
// CUTLASS on a compute capability 9.0 device, bfloat16/float16, k a multiple of 8, 16-byte aligned,
// hidden and weight of one dtype and device).
bool greedy_row_fuses(const SampleRowParams& p);  // T = 0, not Dream's, confidence p[x0]
bool lm_head_greedy_serves(const Tensor& hidden, const Tensor& weight);
bool lm_head_greedy_serves(const Tensor& weight);  // some hidden rows would do
bool lm_head_greedy_serves(DType dtype, Device device, int64_t vocab, int64_t k);  // some operands would do
void lm_head_greedy(const Tensor& hidden, const Tensor& weight, SampleOutputs& out);

using GuidanceRow = cpu::GuidanceRow;
// Classifier-free guidance on float32 logits [*, vocab] (CPU or GPU): out [rows.size(), vocab]
// (float32, contiguous, on the logits' device), row r = the rule of cpu::combine_guidance over
// rows[r].
void combine_guidance(const Tensor& logits, const std::vector<GuidanceRow>& rows, Tensor& out);

using RemaskSegment = cpu::RemaskSegment;
// The remasking selection of a denoise step (SEMANTICS §3; rules in kernels/cpu/remasking.cc) from
// sample_rows' confidences and entropies, on their device: out.chosen = 1 for the rows each
// segment unmasks, 0 elsewhere. Segments (host) cover disjoint row ranges; a segment that is not
// skipped and not first_only must name a block strategy.
void select_unmask_rows(const std::vector<RemaskSegment>& segments, SampleOutputs& out);

// A step's decisions carried into the next forward, on its device (asynchronous scheduling
// launches that forward before the host has read them).
struct CarriedDecisions {
  // token_ids[targets[r]] = x0[r] for every sampled row r with chosen[r] != 0 and targets[r] >= 0:
  // int32 [num_rows] (host), each in [-1, token_ids.size(0)).
  std::vector<int32_t> targets;
  // The forward's logit rows without the candidates the decisions fill (optional). Candidate i is
  // row candidate_rows[i] of the forward, filled where candidate_sources[i] (-1: none, else a
  // sampled row) is chosen. Each run of four ints (first candidate, candidates, first logit row,
  // logit rows) writes the first `logit rows` of its unfilled candidates, in order, from its first
  // logit row on.
  std::vector<int32_t> candidate_rows, candidate_sources, runs;
};
// Applies `d` to a forward's token ids and, where d has runs, its logit rows (int32, contiguous,
// on the samples' device).
void carry_decisions(const SampleOutputs& sampled, const CarriedDecisions& d, Tensor& token_ids,
                     Tensor* logit_rows = nullptr);

}  // namespace blockinfer::ops
