// The remasking schedule (SEMANTICS §3). The strategies' choice of positions is
// ops::select_unmask_rows (rules: kernels/cpu/remasking.cc; a CUDA kernel on a GPU).
#pragma once

#include <cstdint>

namespace blockinfer {

// n_t = B // S + (1 if t < B % S else 0): how many positions step t of S unmasks in a block of B.
int32_t num_to_unmask(int32_t block_len, int32_t steps, int32_t step);

}  // namespace blockinfer
