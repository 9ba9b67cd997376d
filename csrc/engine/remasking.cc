#include "engine/remasking.h"

#include <algorithm>
#include <numeric>

#include "blockinfer/status.h"

namespace blockinfer {

int32_t num_to_unmask(int32_t block_len, int32_t steps, int32_t step) {
  return block_len / steps + (step < block_len % steps ? 1 : 0);
}

namespace {

// The k masked positions of highest confidence, ties to the lower position.
std::vector<int32_t> top_by_confidence(const std::vector<float>& c, int32_t k) {
  std::vector<int32_t> idx(c.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return c[a] > c[b]; });
  idx.resize(static_cast<size_t>(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

std::vector<int32_t> select_unmask(const RemaskInput& in) {
  const std::vector<float>& c = *in.confidence;
  const int32_t m = static_cast<int32_t>(c.size());
  std::vector<int32_t> all(static_cast<size_t>(m));
  std::iota(all.begin(), all.end(), 0);
  if (m == 0 || in.last_step) return all;
  const int32_t n = std::min(in.n_t, m);
  switch (in.strategy) {
    case RemaskingStrategy::kSequential:
      all.resize(static_cast<size_t>(n));
      return all;
    case RemaskingStrategy::kLowConfidenceStatic:
      return top_by_confidence(c, n);
    case RemaskingStrategy::kLowConfidenceDynamic: {
      // SDAR's rule: every position above the threshold (strict) when there are at least n_t of
      // them, else the top n_t by confidence.
      std::vector<int32_t> high;
      for (int32_t i = 0; i < m; ++i)
        if (c[i] > in.dynamic_threshold) high.push_back(i);
      if (static_cast<int32_t>(high.size()) >= in.n_t) return high;
      return top_by_confidence(c, n);
    }
    default:
      throw NotImplementedYet(str_cat("remasking strategy '", remasking_strategy_name(in.strategy),
                                      "' is not implemented yet"));
  }
}

}  // namespace blockinfer
