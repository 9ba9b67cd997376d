#pragma once

#include "blockinfer/tensor.h"

namespace blockinfer::ops {

// out[t] = table[ids[t]]. ids: [n] int32 (each in [0, vocab)), table: [vocab, hidden],
// out: [n, hidden].
void embedding(const Tensor& ids, const Tensor& table, Tensor& out);

}  // namespace blockinfer::ops
