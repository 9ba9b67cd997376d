// The remasking rules of SEMANTICS §3 (the reference the CUDA kernel is tested against).
#include <algorithm>
#include <numeric>
#include <vector>

#include "blockinfer/status.h"
#include "kernels/cpu/kernels.h"

namespace blockinfer::cpu {
namespace {

// Indices ordered by score, descending (or ascending), ties to the lower index.
std::vector<int32_t> ranked(const float* v, int32_t m, bool descending) {
  std::vector<int32_t> idx(static_cast<size_t>(m));
  std::iota(idx.begin(), idx.end(), 0);
  if (descending) {
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return v[a] > v[b]; });
  } else {
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return v[a] < v[b]; });
  }
  return idx;
}

std::vector<int32_t> first_k(std::vector<int32_t> order, size_t k) {
  order.resize(std::min(k, order.size()));
  return order;
}

// The rows one step unmasks, as indices into the segment (any order).
std::vector<int32_t> choose(const RemaskSegment& s, const float* c, const float* h) {
  const int32_t m = s.rows;
  const int32_t n = std::min(s.n_t, m);
  switch (s.strategy) {
    case RemaskingStrategy::kSequential: {
      std::vector<int32_t> idx(static_cast<size_t>(std::max(n, 0)));
      std::iota(idx.begin(), idx.end(), 0);
      return idx;
    }
    case RemaskingStrategy::kLowConfidenceStatic:
    case RemaskingStrategy::kLowConfidence:  // c is softmax(l)[x0], untempered
    case RemaskingStrategy::kRandom:         // c is a uniform draw
      return first_k(ranked(c, m, true), static_cast<size_t>(std::max(n, 0)));
    case RemaskingStrategy::kLowConfidenceDynamic: {
      // SDAR's rule: every position above the threshold (strict) when there are at least n_t of
      // them, else the top n_t by confidence.
      std::vector<int32_t> high;
      for (int32_t i = 0; i < m; ++i)
        if (c[i] > s.dynamic_threshold) high.push_back(i);
      if (static_cast<int32_t>(high.size()) >= s.n_t) return high;
      return first_k(ranked(c, m, true), static_cast<size_t>(std::max(n, 0)));
    }
    case RemaskingStrategy::kEntropyBounded: {
      // The lowest-entropy positions while their entropies' prefix sum stays below the bound.
      const std::vector<int32_t> order = ranked(h, m, false);
      double sum = 0.0;
      size_t k = 0;
      for (int32_t i : order) {
        sum += static_cast<double>(h[i]);
        if (sum < static_cast<double>(s.eb_threshold)) ++k;
      }
      return first_k(order, std::max<size_t>(k, 1));
    }
    case RemaskingStrategy::kConfidenceThreshold: {
      // Fast-dLLM: the most confident position, plus every other one at or above the threshold.
      const int32_t top = ranked(c, m, true)[0];
      std::vector<int32_t> idx;
      for (int32_t i = 0; i < m; ++i)
        if (i == top || c[i] >= s.dynamic_threshold) idx.push_back(i);
      return idx;
    }
    case RemaskingStrategy::kConfidenceFactor: {
      // Fast-dLLM: the n-th most confident (n >= 2) while c_(n) >= 1 - factor / (n + 1).
      const std::vector<int32_t> order = ranked(c, m, true);
      size_t k = 1;
      while (k < order.size() && static_cast<double>(c[order[k]]) >= 1.0 - static_cast<double>(s.factor) / (k + 2))
        ++k;  // order[k] has 1-based rank n = k + 1
      return first_k(order, k);
    }
    default:
      throw InvalidArgument(str_cat("remasking strategy '", remasking_strategy_name(s.strategy),
                                    "' is not a block strategy"));
  }
}

}  // namespace

bool unmasks_known_count(RemaskingStrategy s) {
  return s == RemaskingStrategy::kSequential || s == RemaskingStrategy::kLowConfidenceStatic ||
         s == RemaskingStrategy::kLowConfidence || s == RemaskingStrategy::kRandom;
}

int32_t known_unmask_count(const RemaskSegment& s) {
  if (s.rows <= 0) return 0;
  if (s.skip) return -1;  // chosen elsewhere
  if (s.first_only) return 1;
  if (s.last_step) return s.rows;
  return unmasks_known_count(s.strategy) ? std::max(1, std::min(s.n_t, s.rows)) : -1;
}

void select_unmask_rows(const float* confidence, const float* entropy, const RemaskSegment* segments,
                        int64_t num_segments, int32_t* chosen) {
  for (int64_t g = 0; g < num_segments; ++g) {
    const RemaskSegment& s = segments[g];
    int32_t* out = chosen + s.row_begin;
    std::fill(out, out + s.rows, 0);
    if (s.rows <= 0 || s.skip) continue;
    if (s.first_only) {
      out[0] = 1;
      continue;
    }
    if (s.last_step) {
      std::fill(out, out + s.rows, 1);
      continue;
    }
    const float* c = confidence + s.row_begin;
    std::vector<int32_t> idx = choose(s, c, entropy + s.row_begin);
    // Every strategy unmasks at least one position per step while any is masked (SEMANTICS §3).
    if (idx.empty()) idx.push_back(ranked(c, s.rows, true)[0]);
    for (int32_t i : idx) out[i] = 1;
  }
}

}  // namespace blockinfer::cpu
