#include <cmath>

#include "kernels/cpu/kernels.h"

namespace blockinfer::cpu {

void rmsnorm(const float* x, float* residual, const float* weight, float* out, int64_t num_rows,
             int64_t hidden, int64_t x_stride, float eps) {
  for (int64_t r = 0; r < num_rows; ++r) {
    const float* xr = x + r * x_stride;
    float* rr = residual ? residual + r * hidden : nullptr;
    float* o = out + r * hidden;
    // Sum of squares in double: the reference for the device kernels' fp32 tree reductions.
    double sum_sq = 0.0;
    for (int64_t i = 0; i < hidden; ++i) {
      float v = xr[i];
      if (rr) {
        v += rr[i];
        rr[i] = v;
      }
      sum_sq += static_cast<double>(v) * v;
    }
    const float inv_rms =
        static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(hidden) + eps));
    const float* src = rr ? rr : xr;
    for (int64_t i = 0; i < hidden; ++i) o[i] = src[i] * inv_rms * weight[i];
  }
}

}  // namespace blockinfer::cpu
