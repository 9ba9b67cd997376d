// Per-row sampling (SEMANTICS §2). For each row of logits l:
//   T == 0: x0 = argmax l (lowest id on ties), confidence = softmax(l)[x0].
//   T > 0 : p = softmax(l / T); q = p restricted to the top-k (ties: lower id) and then to the
//           top-p nucleus (smallest prefix of the p-descending order whose renormalised mass
//           reaches topp), renormalised; x0 ~ q by the Gumbel-max trick with Philox noise keyed
//           by (seed, step, position, token); confidence = p[x0] (tempered, unfiltered).
//   entropy = -sum p log p and logprob = log p[x0], over the unfiltered tempered distribution
//   (T == 0: softmax(l)).
//   The confidence is p[x0] by default; softmax(l)[x0] (untempered) for LLaDA's low_confidence,
//   or a Philox uniform keyed by (seed, step, position) for LLaDA's random.
//   Rows of Dream's algorithms (`dream`) follow Dream's rules instead (SEMANTICS §6): Dream's filters
//   (also at T = 0) and confidences over the kept tokens; x0's draw and the noise are the same.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/kernels.h"
#include "kernels/philox.h"

namespace blockinfer::cpu {
namespace {

struct Softmax {
  float max;
  double sum;  // sum of exp(z - max)
};

Softmax softmax_stats(const float* z, int64_t vocab) {
  float m = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) m = std::max(m, z[i]);
  double s = 0.0;
  for (int64_t i = 0; i < vocab; ++i) s += std::exp(static_cast<double>(z[i] - m));
  return {m, s};
}

double entropy_of(const float* z, int64_t vocab, const Softmax& sm) {
  // H = log S - sum_i (z_i - m) e_i / S, with e_i = exp(z_i - m): no log of a tiny p.
  double weighted = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    const double d = static_cast<double>(z[i] - sm.max);
    weighted += d * std::exp(d);
  }
  return std::max(0.0, std::log(sm.sum) - weighted / sm.sum);
}

// log p[i] = (z_i - m) - log S, in double.
double log_prob(const float* z, int64_t i, const Softmax& sm) {
  return static_cast<double>(z[i] - sm.max) - std::log(sm.sum);
}

// argmax l, the lowest id on ties.
int64_t argmax(const float* l, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (l[i] > l[best]) best = i;  // strict: the lowest id wins ties
  return best;
}

// Gumbel-max over the kept tokens: argmax z_i + g_i samples from their softmax (the common -log Z
// shift does not change the argmax); the lowest id on ties.
int64_t gumbel_draw(const float* z, const uint8_t* kept, int64_t vocab, const SampleRowParams& p) {
  int64_t best = -1;
  double best_score = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) {
    if (!kept[i]) continue;
    const double score = static_cast<double>(z[i]) + token_gumbel(p.seed, p.step, p.position, static_cast<uint32_t>(i));
    if (best < 0 || score > best_score) {
      best = i;
      best_score = score;
    }
  }
  return best;
}

// A row with Dream's rules: x0, the confidence, log p[x0] and the entropy (the last two §2's).
void sample_dream_row(const float* l, int64_t vocab, const SampleRowParams& p, int32_t& x0, float& confidence,
                      float& logprob, float& entropy) {
  const bool greedy = p.temperature == 0.f;
  std::vector<float> z(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) z[i] = greedy ? l[i] : l[i] / p.temperature;
  const Softmax sm = softmax_stats(z.data(), vocab);
  // Dream's filters in Dream's order: top-p, then top-k (ties at the top-k threshold all stay).
  std::vector<uint8_t> keep(static_cast<size_t>(vocab), 1);
  if (p.topp < 1.f) {
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); });
    double before = 0.0;
    for (int32_t id : order) {
      keep[id] = before <= static_cast<double>(p.topp);
      before += static_cast<double>(static_cast<float>(std::exp(static_cast<double>(z[id] - sm.max)) / sm.sum));
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
  // q = softmax over the kept z (float32 values); the top token is always kept, so its max is m.
  double ksum = 0.0;
  for (int64_t i = 0; i < vocab; ++i)
    if (keep[i]) ksum += std::exp(static_cast<double>(z[i] - sm.max));
  auto q = [&](int64_t i) {
    return keep[i] ? static_cast<float>(std::exp(static_cast<double>(z[i] - sm.max)) / ksum) : 0.f;
  };
  const int64_t best = greedy ? argmax(l, vocab) : gumbel_draw(z.data(), keep.data(), vocab, p);
  x0 = static_cast<int32_t>(best);
  logprob = static_cast<float>(log_prob(z.data(), best, sm));
  entropy = static_cast<float>(entropy_of(z.data(), vocab, sm));
  switch (p.confidence_kind) {
    case ConfidenceKind::kMargin: {
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
    case ConfidenceKind::kNegEntropy: {
      double sum = 0.0;  // sum q log q: the negative entropy (higher = more certain)
      for (int64_t i = 0; i < vocab; ++i) {
        const double v = q(i);
        if (v > 0) sum += v * std::log(v);
      }
      confidence = static_cast<float>(sum);
      break;
    }
    default:  // origin, maskgit_plus
      confidence = q(best);
      break;
  }
}

}  // namespace

void sample_rows(const float* logits, const SampleRowParams* params, int32_t* x0, float* confidence,
                 float* logprob, float* entropy, int64_t num_rows, int64_t vocab) {
  std::vector<float> z(static_cast<size_t>(vocab));
  std::vector<int32_t> order;
  std::vector<uint8_t> kept;
  for (int64_t r = 0; r < num_rows; ++r) {
    const float* l = logits + r * vocab;
    const SampleRowParams& p = params[r];
    if (p.dream) {
      sample_dream_row(l, vocab, p, x0[r], confidence[r], logprob[r], entropy[r]);
      continue;
    }
    if (p.temperature == 0.f) {
      const int64_t best = argmax(l, vocab);
      const Softmax sm = softmax_stats(l, vocab);
      x0[r] = static_cast<int32_t>(best);
      confidence[r] = p.confidence_kind == ConfidenceKind::kRandom
                          ? static_cast<float>(position_uniform(p.seed, p.step, p.position))
                          : static_cast<float>(1.0 / sm.sum);  // exp(l[best] - max) == 1
      logprob[r] = static_cast<float>(log_prob(l, best, sm));
      entropy[r] = static_cast<float>(entropy_of(l, vocab, sm));
      continue;
    }
    for (int64_t i = 0; i < vocab; ++i) z[i] = l[i] / p.temperature;
    const Softmax sm = softmax_stats(z.data(), vocab);
    auto prob = [&](int64_t i) { return std::exp(static_cast<double>(z[i] - sm.max)) / sm.sum; };

    kept.assign(static_cast<size_t>(vocab), 1);
    const bool use_topk = uses_topk(p, vocab);
    const bool use_topp = uses_topp(p);
    if (use_topk || use_topp) {
      // Rank by probability, ties to the lower id. Ranking by z is the same order except where
      // exp() rounds two different z to one probability, so rank by the probabilities.
      order.resize(static_cast<size_t>(vocab));
      std::iota(order.begin(), order.end(), 0);
      std::vector<double> pr(static_cast<size_t>(vocab));
      for (int64_t i = 0; i < vocab; ++i) pr[i] = prob(i);
      const int64_t k = use_topk ? p.topk : vocab;
      auto by_prob = [&](int32_t a, int32_t b) { return pr[a] > pr[b] || (pr[a] == pr[b] && a < b); };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), by_prob);
      int64_t n_keep = k;
      if (use_topp) {
        double mass = 0.0;
        for (int64_t i = 0; i < k; ++i) mass += pr[order[i]];
        double cum = 0.0;
        n_keep = 0;
        // Keep rank i while the renormalised mass of the ranks before it is below topp.
        while (n_keep < k && (n_keep == 0 || cum < static_cast<double>(p.topp))) {
          cum += pr[order[n_keep]] / mass;
          ++n_keep;
        }
      }
      std::fill(kept.begin(), kept.end(), 0);
      for (int64_t i = 0; i < n_keep; ++i) kept[order[i]] = 1;
    }
    const int64_t best = gumbel_draw(z.data(), kept.data(), vocab, p);
    x0[r] = static_cast<int32_t>(best);
    switch (p.confidence_kind) {
      case ConfidenceKind::kTempered:
        confidence[r] = static_cast<float>(prob(best));
        break;
      case ConfidenceKind::kUntempered: {
        const Softmax raw = softmax_stats(l, vocab);
        confidence[r] = static_cast<float>(std::exp(static_cast<double>(l[best] - raw.max)) / raw.sum);
        break;
      }
      case ConfidenceKind::kRandom:
        confidence[r] = static_cast<float>(position_uniform(p.seed, p.step, p.position));
        break;
      default:  // kMargin and kNegEntropy come with `dream` (checked by ops::sample_rows)
        confidence[r] = static_cast<float>(prob(best));
        break;
    }
    logprob[r] = static_cast<float>(log_prob(z.data(), best, sm));
    entropy[r] = static_cast<float>(entropy_of(z.data(), vocab, sm));
  }
}

}  // namespace blockinfer::cpu
