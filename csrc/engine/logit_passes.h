// The LM head and sampling of a step run in passes over the forward's logit rows, so the float32
// logits never take more than `max_rows` x vocab x 4 bytes, however many rows a step samples.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/cpu/kernels.h"

namespace blockinfer {

struct LogitPass {
  int64_t out_begin = 0;  // the pass's first output row (one per sampled position)
  int64_t out_rows = 0;
  // Runs [begin, end) of the forward's hidden rows whose logits the pass computes, stacked in order.
  std::vector<std::pair<int64_t, int64_t>> inputs;
  // Empty: the stacked logits are the output rows. Otherwise one row per output row, indexing the
  // stacked logits (classifier-free guidance).
  std::vector<cpu::GuidanceRow> guidance;
  int64_t stacked_rows() const;
};

// rows[c]: the logit rows of the forward's chunk c; cfg_scale[c] > 0 marks a guided chunk, whose
// unconditional copy is chunk c + 1 with as many rows. Output rows follow the chunks in order, a
// guided chunk's rows combining with its copy's and the copy adding none. A pass stacks at most
// max_rows (>= 2) logit rows; a guided row never leaves its unconditional row for another pass.
std::vector<LogitPass> plan_logit_passes(const std::vector<int64_t>& rows, const std::vector<float>& cfg_scale,
                                         int64_t max_rows);

}  // namespace blockinfer
