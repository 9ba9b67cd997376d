#pragma once

#include <vector>

#include "blockinfer/tensor.h"
#include "kernels/cpu/kernels.h"

namespace blockinfer::ops {

using SampleRowParams = cpu::SampleRowParams;

// Per-row sampling (SEMANTICS §2; exact rules in kernels/cpu/sampling.cc).
// logits: [num_rows, vocab] float32; params: one per row. Outputs are [num_rows] tensors.
void sample_rows(const Tensor& logits, const std::vector<SampleRowParams>& params, Tensor& x0,
                 Tensor& confidence, Tensor& entropy);

}  // namespace blockinfer::ops
