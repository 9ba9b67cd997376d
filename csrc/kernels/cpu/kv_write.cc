#include <cstring>

#include "kernels/cpu/kernels.h"

namespace blockinfer::cpu {

void kv_write(const float* qkv, const int32_t* slot_mapping, float* k_cache, float* v_cache,
              int64_t num_tokens, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim) {
  const int64_t row = (num_heads + 2 * num_kv_heads) * head_dim;
  const int64_t kv_width = num_kv_heads * head_dim;
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t slot = slot_mapping[t];
    const float* r = qkv + t * row;
    std::memcpy(k_cache + slot * kv_width, r + num_heads * head_dim, sizeof(float) * kv_width);
    std::memcpy(v_cache + slot * kv_width, r + (num_heads + num_kv_heads) * head_dim,
                sizeof(float) * kv_width);
  }
}

}  // namespace blockinfer::cpu
