#include "engine/remasking.h"

#include "blockinfer/status.h"
#include "kernels/cpu/kernels.h"

namespace blockinfer {

int32_t num_to_unmask(int32_t block_len, int32_t steps, int32_t step) {
  return block_len / steps + (step < block_len % steps ? 1 : 0);
}

std::vector<int32_t> select_unmask(const RemaskInput& in) {
  const int32_t m = static_cast<int32_t>(in.confidence->size());
  if (m == 0) return {};
  BI_CHECK(!in.entropy || in.entropy->size() == in.confidence->size());
  BI_CHECK(in.entropy || in.strategy != RemaskingStrategy::kEntropyBounded, "entropy_bounded needs entropies");
  cpu::RemaskSegment seg;
  seg.rows = m;
  seg.strategy = in.strategy;
  seg.n_t = in.n_t;
  seg.last_step = in.last_step;
  seg.dynamic_threshold = in.dynamic_threshold;
  seg.eb_threshold = in.eb_threshold;
  seg.factor = in.factor;
  const std::vector<float> no_entropy(in.entropy ? 0 : static_cast<size_t>(m), 0.f);
  std::vector<int32_t> chosen(static_cast<size_t>(m));
  cpu::select_unmask_rows(in.confidence->data(), in.entropy ? in.entropy->data() : no_entropy.data(), &seg, 1,
                          chosen.data());
  std::vector<int32_t> idx;
  for (int32_t i = 0; i < m; ++i)
    if (chosen[i]) idx.push_back(i);
  return idx;
}

}  // namespace blockinfer
