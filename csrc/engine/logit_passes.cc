#include "engine/logit_passes.h"

#include <algorithm>

#include "blockinfer/status.h"

namespace blockinfer {

int64_t LogitPass::stacked_rows() const {
  int64_t n = 0;
  for (const auto& [begin, end] : inputs) n += end - begin;
  return n;
}

namespace {

// Closes a pass: its input rows, ascending, become runs; guidance indexes them by rank.
LogitPass make_pass(int64_t out_begin, const std::vector<cpu::GuidanceRow>& rows, bool guided) {
  LogitPass pass;
  pass.out_begin = out_begin;
  pass.out_rows = static_cast<int64_t>(rows.size());
  std::vector<int32_t> in;
  for (const cpu::GuidanceRow& r : rows) {
    in.push_back(r.cond);
    if (r.uncond >= 0) in.push_back(r.uncond);
  }
  std::sort(in.begin(), in.end());
  for (int32_t x : in) {
    if (!pass.inputs.empty() && pass.inputs.back().second == x) {
      ++pass.inputs.back().second;
    } else {
      pass.inputs.push_back({x, x + 1});
    }
  }
  if (guided) {
    auto rank = [&](int32_t x) {
      return x < 0 ? -1 : static_cast<int32_t>(std::lower_bound(in.begin(), in.end(), x) - in.begin());
    };
    for (const cpu::GuidanceRow& r : rows) pass.guidance.push_back({rank(r.cond), rank(r.uncond), r.weight});
  }
  return pass;
}

}  // namespace

std::vector<LogitPass> plan_logit_passes(const std::vector<int64_t>& rows, const std::vector<float>& cfg_scale,
                                         int64_t max_rows) {
  BI_CHECK_ARG(max_rows >= 2, "lm_head_chunk_rows must be >= 2, got ", max_rows);
  BI_CHECK(rows.size() == cfg_scale.size());
  // Every output row: its conditional row, its unconditional row (or -1) and the guidance weight.
  std::vector<cpu::GuidanceRow> out;
  int64_t cursor = 0;
  for (size_t c = 0; c < rows.size(); ++c) {
    const int64_t n = rows[c];
    const bool guided = cfg_scale[c] > 0.f;
    BI_CHECK(!guided || (c + 1 < rows.size() && rows[c + 1] == n), "a guided chunk needs its copy after it");
    for (int64_t i = 0; i < n; ++i)
      out.push_back(guided ? cpu::GuidanceRow{static_cast<int32_t>(cursor + i), static_cast<int32_t>(cursor + n + i),
                                              cfg_scale[c] + 1.f}
                           : cpu::GuidanceRow{static_cast<int32_t>(cursor + i), -1, 1.f});
    cursor += guided ? 2 * n : n;
    if (guided) ++c;  // the copy: no output rows of its own
  }
  std::vector<LogitPass> passes;
  int64_t begin = 0, stacked = 0;
  bool guided = false;
  for (int64_t r = 0; r <= static_cast<int64_t>(out.size()); ++r) {
    const bool end = r == static_cast<int64_t>(out.size());
    const int64_t need = end ? 0 : (out[r].uncond >= 0 ? 2 : 1);
    if (r > begin && (end || stacked + need > max_rows)) {
      passes.push_back(make_pass(begin, {out.begin() + begin, out.begin() + r}, guided));
      begin = r;
      stacked = 0;
      guided = false;
    }
    stacked += need;
    guided = guided || need == 2;
  }
  return passes;
}

}  // namespace blockinfer
