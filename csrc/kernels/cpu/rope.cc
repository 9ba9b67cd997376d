#include <cmath>

#include "kernels/cpu/kernels.h"

namespace blockinfer::cpu {
namespace {

void head_rmsnorm(float* h, const float* w, int64_t d, float eps) {
  double sum_sq = 0.0;
  for (int64_t i = 0; i < d; ++i) sum_sq += static_cast<double>(h[i]) * h[i];
  const float inv_rms = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(d) + eps));
  for (int64_t i = 0; i < d; ++i) h[i] = h[i] * inv_rms * w[i];
}

// Rotate-half RoPE: pairs (i, i + d/2) rotate by angle pos * inv_freq[i]. The angle is rounded to
// float32 first, as Hugging Face's Qwen3 rotary embedding computes it.
void rope(float* h, const float* cos_v, const float* sin_v, int64_t d) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = h[i], b = h[i + half];
    h[i] = a * cos_v[i] - b * sin_v[i];
    h[i + half] = b * cos_v[i] + a * sin_v[i];
  }
}

}  // namespace

void qk_norm_rope(float* qkv, const int32_t* positions, const float* q_norm_w,
                  const float* k_norm_w, const float* inv_freq, int64_t num_tokens,
                  int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, float eps) {
  const int64_t row = (num_heads + 2 * num_kv_heads) * head_dim;
  const int64_t half = head_dim / 2;
  float cos_v[512], sin_v[512];  // head_dim <= 1024 is checked by the op entry
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float pos = static_cast<float>(positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      cos_v[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin_v[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
    float* r = qkv + t * row;
    for (int64_t h = 0; h < num_heads + num_kv_heads; ++h) {
      float* v = r + h * head_dim;
      const float* w = h < num_heads ? q_norm_w : k_norm_w;
      if (w) head_rmsnorm(v, w, head_dim, eps);
      rope(v, cos_v, sin_v, head_dim);
    }
  }
}

}  // namespace blockinfer::cpu
