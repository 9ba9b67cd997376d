#include "engine/remasking.h"

#include <algorithm>
#include <numeric>

#include "blockinfer/status.h"

namespace blockinfer {

int32_t num_to_unmask(int32_t block_len, int32_t steps, int32_t step) {
  return block_len / steps + (step < block_len % steps ? 1 : 0);
}

bool is_block_strategy(RemaskingStrategy s) {
  switch (s) {
    case RemaskingStrategy::kOrigin:
    case RemaskingStrategy::kMaskgitPlus:
    case RemaskingStrategy::kTopkMargin:
    case RemaskingStrategy::kEntropy:
      return false;
    default:
      return true;
  }
}

namespace {

// Indices ordered by score, descending (or ascending), ties to the lower position.
std::vector<int32_t> ranked(const std::vector<float>& v, bool descending) {
  std::vector<int32_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  if (descending) {
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return v[a] > v[b]; });
  } else {
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return v[a] < v[b]; });
  }
  return idx;
}

std::vector<int32_t> first_k_sorted(std::vector<int32_t> order, size_t k) {
  order.resize(std::min(k, order.size()));
  std::sort(order.begin(), order.end());
  return order;
}

std::vector<int32_t> choose(const RemaskInput& in) {
  const std::vector<float>& c = *in.confidence;
  const int32_t m = static_cast<int32_t>(c.size());
  const int32_t n = std::min(in.n_t, m);
  switch (in.strategy) {
    case RemaskingStrategy::kSequential: {
      std::vector<int32_t> idx(static_cast<size_t>(n));
      std::iota(idx.begin(), idx.end(), 0);
      return idx;
    }
    case RemaskingStrategy::kLowConfidenceStatic:
    case RemaskingStrategy::kLowConfidence:  // c is softmax(l)[x0], untempered
    case RemaskingStrategy::kRandom:         // c is a uniform draw
      return first_k_sorted(ranked(c, true), static_cast<size_t>(n));
    case RemaskingStrategy::kLowConfidenceDynamic: {
      // SDAR's rule: every position above the threshold (strict) when there are at least n_t of
      // them, else the top n_t by confidence.
      std::vector<int32_t> high;
      for (int32_t i = 0; i < m; ++i)
        if (c[i] > in.dynamic_threshold) high.push_back(i);
      if (static_cast<int32_t>(high.size()) >= in.n_t) return high;
      return first_k_sorted(ranked(c, true), static_cast<size_t>(n));
    }
    case RemaskingStrategy::kEntropyBounded: {
      // The lowest-entropy positions while their entropies' prefix sum stays below the bound.
      BI_CHECK(in.entropy && in.entropy->size() == c.size());
      const std::vector<float>& h = *in.entropy;
      const std::vector<int32_t> order = ranked(h, false);
      double sum = 0.0;
      size_t k = 0;
      for (int32_t i : order) {
        sum += static_cast<double>(h[i]);
        if (sum < static_cast<double>(in.eb_threshold)) ++k;
      }
      return first_k_sorted(order, std::max<size_t>(k, 1));
    }
    case RemaskingStrategy::kConfidenceThreshold: {
      // Fast-dLLM: the most confident position, plus every other one at or above the threshold.
      const int32_t top = ranked(c, true)[0];
      std::vector<int32_t> idx;
      for (int32_t i = 0; i < m; ++i)
        if (i == top || c[i] >= in.dynamic_threshold) idx.push_back(i);
      return idx;
    }
    case RemaskingStrategy::kConfidenceFactor: {
      // Fast-dLLM: the n-th most confident (n >= 2) while c_(n) >= 1 - factor / (n + 1).
      const std::vector<int32_t> order = ranked(c, true);
      size_t k = 1;
      while (k < order.size() &&
             static_cast<double>(c[order[k]]) >= 1.0 - static_cast<double>(in.factor) / (k + 2))
        ++k;  // order[k] has 1-based rank n = k + 1
      return first_k_sorted(order, k);
    }
    default:
      throw InvalidArgument(str_cat("remasking strategy '", remasking_strategy_name(in.strategy),
                                    "' is not a block strategy"));
  }
}

}  // namespace

std::vector<int32_t> select_unmask(const RemaskInput& in) {
  const int32_t m = static_cast<int32_t>(in.confidence->size());
  if (m == 0) return {};
  if (in.last_step) {
    std::vector<int32_t> all(static_cast<size_t>(m));
    std::iota(all.begin(), all.end(), 0);
    return all;
  }
  std::vector<int32_t> idx = choose(in);
  // Every strategy unmasks at least one position per step while any is masked (SEMANTICS §3).
  if (idx.empty()) idx.push_back(ranked(*in.confidence, true)[0]);
  return idx;
}

}  // namespace blockinfer
