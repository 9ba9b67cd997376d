#include <cstring>

#include "kernels/cpu/kernels.h"

namespace blockinfer::cpu {

void embedding(const int32_t* ids, const float* table, float* out, int64_t num_tokens,
               int64_t hidden) {
  // ids are validated against the vocabulary by the op entry (ops/embedding.cc).
  for (int64_t t = 0; t < num_tokens; ++t)
    std::memcpy(out + t * hidden, table + static_cast<int64_t>(ids[t]) * hidden,
                sizeof(float) * static_cast<size_t>(hidden));
}

}  // namespace blockinfer::cpu
