#include <cmath>
#include <vector>

#include "kernels/cpu/kernels.h"

namespace blockinfer::cpu {

void paged_attention(const float* qkv, const float* k_cache, const float* v_cache,
                     const int32_t* page_table, const int32_t* q_start, const int32_t* positions,
                     const int32_t* kv_len, const int32_t* block_len, const int32_t* block_offset,
                     float* out,
                     int64_t num_seqs, int64_t max_pages_per_seq, int64_t page_size,
                     int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, float scale) {
  const int64_t row = (num_heads + 2 * num_kv_heads) * head_dim;
  const int64_t kv_width = num_kv_heads * head_dim;
  const int64_t group = num_heads / num_kv_heads;  // query heads per kv head (GQA)
  std::vector<float> scores;
  std::vector<double> acc(static_cast<size_t>(head_dim));
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int32_t* pages = page_table + s * max_pages_per_seq;
    const int64_t bl = block_len[s];
    const int64_t off = block_offset ? block_offset[s] : 0;
    for (int64_t t = q_start[s]; t < q_start[s + 1]; ++t) {
      const int64_t pos = positions[t];
      // Keys visible to this query: all of [0, kv_len) for bidirectional attention, else every
      // key whose block index is at most the query's (the block-causal "staircase").
      int64_t n_keys = kv_len[s];
      if (bl > 0) {
        const int64_t block_end = pos < off ? off : off + ((pos - off) / bl + 1) * bl;
        if (block_end < n_keys) n_keys = block_end;
      }
      scores.resize(static_cast<size_t>(n_keys));
      for (int64_t h = 0; h < num_heads; ++h) {
        const float* q = qkv + t * row + h * head_dim;
        const int64_t kvh = h / group;
        float m = -INFINITY;
        for (int64_t j = 0; j < n_keys; ++j) {
          const int64_t slot = static_cast<int64_t>(pages[j / page_size]) * page_size + j % page_size;
          const float* k = k_cache + slot * kv_width + kvh * head_dim;
          float dotv = 0.f;
          for (int64_t d = 0; d < head_dim; ++d) dotv += q[d] * k[d];
          scores[j] = dotv * scale;
          if (scores[j] > m) m = scores[j];
        }
        double denom = 0.0;
        for (double& a : acc) a = 0.0;
        for (int64_t j = 0; j < n_keys; ++j) {
          const double p = std::exp(static_cast<double>(scores[j] - m));
          denom += p;
          const int64_t slot = static_cast<int64_t>(pages[j / page_size]) * page_size + j % page_size;
          const float* v = v_cache + slot * kv_width + kvh * head_dim;
          for (int64_t d = 0; d < head_dim; ++d) acc[d] += p * v[d];
        }
        float* o = out + t * num_heads * head_dim + h * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) o[d] = static_cast<float>(acc[d] / denom);
      }
    }
  }
}

}  // namespace blockinfer::cpu
