// Remasking strategies (SEMANTICS §3): which still-masked positions of a block to unmask in one
// denoise step. Host code over the few positions of one block.
#pragma once

#include <cstdint>
#include <vector>

#include "blockinfer/sampling_params.h"

namespace blockinfer {

// n_t = B // S + (1 if t < B % S else 0): how many positions step t of S unmasks in a block of B.
int32_t num_to_unmask(int32_t block_len, int32_t steps, int32_t step);

struct RemaskInput {
  RemaskingStrategy strategy;
  int32_t n_t;                           // the schedule's count for this step
  bool last_step;                        // t == S - 1: everything still masked is unmasked
  float dynamic_threshold;               // low_confidence_dynamic, confidence_threshold
  float eb_threshold;                    // entropy_bounded
  float factor;                          // confidence_factor
  const std::vector<float>* confidence;  // one per masked position, in position order
  const std::vector<float>* entropy;     // same; needed by entropy_bounded only
};

// Returns indices into the masked-position list (ascending). Ties go to the lower position.
// Unmasks at least one position while any is masked.
std::vector<int32_t> select_unmask(const RemaskInput& in);

}  // namespace blockinfer
