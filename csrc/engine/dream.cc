#include "engine/dream.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "blockinfer/status.h"
#include "kernels/philox.h"

namespace blockinfer::dream {

std::vector<float> timesteps(int32_t steps, float eps) {
  BI_CHECK_ARG(steps >= 1, "denoising_steps must be >= 1");
  // torch.linspace(1, eps, S + 1) in float32: the first half counts up from the start, the second
  // down from the end, each value one fused multiply-add (a single rounding).
  const int32_t n = steps + 1;
  const float start = 1.f, end = eps;
  const float step = (end - start) / static_cast<float>(n - 1);
  std::vector<float> ts(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i)
    ts[i] = i < n / 2 ? std::fma(step, static_cast<float>(i), start)
                      : std::fma(-step, static_cast<float>(n - i - 1), end);
  return ts;
}

std::vector<int32_t> select(RemaskingStrategy alg, const std::vector<int32_t>& positions,
                            const std::vector<float>& c, const std::vector<float>& ts, int32_t i,
                            float alg_temp, uint64_t seed) {
  const int32_t m = static_cast<int32_t>(positions.size());
  const int32_t S = static_cast<int32_t>(ts.size()) - 1;
  std::vector<int32_t> idx;
  const bool last = i == S - 1;
  const float frac = last ? 1.f : 1.f - ts[i + 1] / ts[i];  // float32(1 - float32(s / t))
  if (alg == RemaskingStrategy::kOrigin) {
    for (int32_t k = 0; k < m; ++k)
      if (last || position_uniform(seed, static_cast<uint32_t>(i), static_cast<uint32_t>(positions[k])) <
                      static_cast<double>(frac))
        idx.push_back(k);
    return idx;
  }
  const int32_t count = last ? m : static_cast<int32_t>(static_cast<float>(m) * frac);
  std::vector<double> score(static_cast<size_t>(m));
  for (int32_t k = 0; k < m; ++k)
    score[k] = alg_temp == 0.f ? static_cast<double>(c[k])
                               : static_cast<double>(c[k] / alg_temp) +
                                     position_gumbel(seed, static_cast<uint32_t>(i), static_cast<uint32_t>(positions[k]));
  idx.resize(static_cast<size_t>(m));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return score[a] > score[b]; });
  idx.resize(static_cast<size_t>(std::min(count, m)));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace blockinfer::dream
