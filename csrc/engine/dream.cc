#include "engine/dream.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "blockinfer/status.h"
#include "kernels/philox.h"

namespace blockinfer::dream {

void sample_row(const float* l, int64_t vocab, const RowParams& p, int32_t& x0, float& confidence,
                float& logprob) {
  const bool greedy = p.temperature == 0.f;
  std::vector<float> z(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) z[i] = greedy ? l[i] : l[i] / p.temperature;
  const float zmax = *std::max_element(z.begin(), z.end());
  // Dream's filters in Dream's order: top-p, then top-k (ties at the top-k threshold all stay).
  std::vector<uint8_t> keep(static_cast<size_t>(vocab), 1);
  if (p.topp < 1.f) {
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); });
    double sum = 0.0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(z[i] - zmax));
    double before = 0.0;
    for (int32_t id : order) {
      keep[id] = before <= static_cast<double>(p.topp);
      before += static_cast<double>(static_cast<float>(std::exp(static_cast<double>(z[id] - zmax)) / sum));
    }
  }
  if (p.topk > 0) {
    std::vector<float> kept;
    for (int64_t i = 0; i < vocab; ++i)
      if (keep[i]) kept.push_back(z[i]);
    if (static_cast<int64_t>(kept.size()) > p.topk) {
      std::nth_element(kept.begin(), kept.begin() + (p.topk - 1), kept.end(), std::greater<float>());
      const float threshold = kept[p.topk - 1];
      for (int64_t i = 0; i < vocab; ++i) keep[i] = keep[i] && z[i] >= threshold;
    }
  }
  // q = softmax over the kept z (float32 values).
  float kmax = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i)
    if (keep[i]) kmax = std::max(kmax, z[i]);
  double ksum = 0.0;
  for (int64_t i = 0; i < vocab; ++i)
    if (keep[i]) ksum += std::exp(static_cast<double>(z[i] - kmax));
  auto q = [&](int64_t i) {
    return keep[i] ? static_cast<float>(std::exp(static_cast<double>(z[i] - kmax)) / ksum) : 0.f;
  };
  int64_t best = 0;
  if (greedy) {
    for (int64_t i = 1; i < vocab; ++i)
      if (l[i] > l[best]) best = i;
  } else {
    double best_score = -INFINITY;
    best = -1;
    for (int64_t i = 0; i < vocab; ++i) {
      if (!keep[i]) continue;
      const double score = static_cast<double>(z[i]) + token_gumbel(p.seed, p.step, p.position, static_cast<uint32_t>(i));
      if (best < 0 || score > best_score) {
        best = i;
        best_score = score;
      }
    }
  }
  x0 = static_cast<int32_t>(best);
  // log p[x0] = (z_x0 - max z) - log sum exp(z - max z), in double (kernels/cpu/sampling.cc's rule).
  double zsum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) zsum += std::exp(static_cast<double>(z[i] - zmax));
  logprob = static_cast<float>(static_cast<double>(z[best] - zmax) - std::log(zsum));
  switch (p.alg) {
    case RemaskingStrategy::kOrigin:
    case RemaskingStrategy::kMaskgitPlus:
      confidence = q(best);
      break;
    case RemaskingStrategy::kTopkMargin: {
      float top1 = 0.f, top2 = 0.f;
      for (int64_t i = 0; i < vocab; ++i) {
        const float v = q(i);
        if (v > top1) {
          top2 = top1;
          top1 = v;
        } else if (v > top2) {
          top2 = v;
        }
      }
      confidence = top1 - top2;
      break;
    }
    case RemaskingStrategy::kEntropy: {
      double s = 0.0;  // sum q log q: the negative entropy (higher = more certain)
      for (int64_t i = 0; i < vocab; ++i) {
        const double v = q(i);
        if (v > 0) s += v * std::log(v);
      }
      confidence = static_cast<float>(s);
      break;
    }
    default:
      throw InvalidArgument(str_cat("'", remasking_strategy_name(p.alg), "' is not one of Dream's algorithms"));
  }
}

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
