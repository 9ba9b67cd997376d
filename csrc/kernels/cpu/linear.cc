#include "kernels/cpu/kernels.h"

namespace blockinfer::cpu {
namespace {

// Dot product with 8 independent partial sums: the compiler vectorises it without -ffast-math
// (no reassociation is needed), and the summation order depends only on k, never on the batch,
// so a row gives bit-identical results whatever else is in the batch.
inline float dot(const float* a, const float* b, int64_t k) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  for (; i < k; ++i) acc[i % 8] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

}  // namespace

void linear(const float* x, const float* w, float* out, int64_t m, int64_t n, int64_t k) {
  // Tile over rows of w so a tile stays in cache while every row of x passes over it.
  constexpr int64_t kTileN = 64;
  for (int64_t n0 = 0; n0 < n; n0 += kTileN) {
    const int64_t n1 = n0 + kTileN < n ? n0 + kTileN : n;
    for (int64_t r = 0; r < m; ++r) {
      const float* xr = x + r * k;
      float* o = out + r * n;
      for (int64_t j = n0; j < n1; ++j) o[j] = dot(xr, w + j * k, k);
    }
  }
}

}  // namespace blockinfer::cpu
