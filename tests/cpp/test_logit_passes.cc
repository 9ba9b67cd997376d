#include <set>
#include <utility>
#include <vector>

#include "blockinfer/status.h"
#include "engine/logit_passes.h"
#include "test_harness.h"

using namespace blockinfer;

namespace {

using Runs = std::vector<std::pair<int64_t, int64_t>>;

// Replays the passes on symbolic rows: stacked logit row k of a pass is the forward's hidden row
// it came from; each output row must name exactly the rows (and weight) the guidance rule says.
struct Expanded {
  std::vector<cpu::GuidanceRow> out;  // in forward rows
  int64_t max_stacked = 0;
};

Expanded expand(const std::vector<LogitPass>& passes) {
  Expanded e;
  int64_t next_out = 0;
  std::set<int64_t> used;
  for (const LogitPass& p : passes) {
    EXPECT_EQ(p.out_begin, next_out);
    std::vector<int32_t> stacked;
    for (const auto& [b, en] : p.inputs) {
      EXPECT_TRUE(b < en);
      for (int64_t x = b; x < en; ++x) {
        EXPECT_TRUE(used.insert(x).second);  // each forward row's logits are computed once
        stacked.push_back(static_cast<int32_t>(x));
      }
    }
    EXPECT_EQ(p.stacked_rows(), static_cast<int64_t>(stacked.size()));
    e.max_stacked = std::max(e.max_stacked, p.stacked_rows());
    if (p.guidance.empty()) {
      EXPECT_EQ(p.out_rows, static_cast<int64_t>(stacked.size()));
      for (int32_t x : stacked) e.out.push_back({x, -1, 1.f});
    } else {
      EXPECT_EQ(p.out_rows, static_cast<int64_t>(p.guidance.size()));
      for (const cpu::GuidanceRow& g : p.guidance)
        e.out.push_back({stacked.at(g.cond), g.uncond < 0 ? -1 : stacked.at(g.uncond), g.weight});
    }
    next_out += p.out_rows;
  }
  return e;
}

void expect_rows(const Expanded& e, const std::vector<cpu::GuidanceRow>& want) {
  EXPECT_EQ(e.out.size(), want.size());
  for (size_t i = 0; i < want.size() && i < e.out.size(); ++i) {
    EXPECT_EQ(e.out[i].cond, want[i].cond);
    EXPECT_EQ(e.out[i].uncond, want[i].uncond);
    EXPECT_EQ(e.out[i].weight, want[i].weight);
  }
}

}  // namespace

TEST(rows_within_the_bound_are_one_pass_without_guidance) {
  const auto passes = plan_logit_passes({4, 0, 3}, {0.f, 0.f, 0.f}, 512);
  EXPECT_EQ(passes.size(), size_t{1});
  EXPECT_TRUE(passes[0].inputs == Runs({{0, 7}}));
  EXPECT_TRUE(passes[0].guidance.empty());
  EXPECT_TRUE(plan_logit_passes({0, 0}, {0.f, 0.f}, 2).empty());
}

TEST(plain_rows_split_into_passes_of_at_most_max_rows) {
  for (int64_t max_rows : {2, 3, 5, 7, 100}) {
    const auto passes = plan_logit_passes({5, 1, 6}, {0.f, 0.f, 0.f}, max_rows);
    const Expanded e = expand(passes);
    EXPECT_TRUE(e.max_stacked <= max_rows);
    std::vector<cpu::GuidanceRow> want;
    for (int32_t r = 0; r < 12; ++r) want.push_back({r, -1, 1.f});
    expect_rows(e, want);
    EXPECT_EQ(passes.size(), static_cast<size_t>((12 + max_rows - 1) / max_rows));
  }
}

TEST(guided_rows_keep_their_unconditional_row_in_the_same_pass) {
  // Chunks: plain (2 rows), guided (3 rows, cfg 0.5) + its copy, plain (1), guided (2, cfg 2) + copy.
  const std::vector<int64_t> rows{2, 3, 3, 1, 2, 2};
  const std::vector<float> cfg{0.f, 0.5f, 0.f, 0.f, 2.f, 0.f};
  const std::vector<cpu::GuidanceRow> want{{0, -1, 1.f}, {1, -1, 1.f}, {2, 5, 1.5f}, {3, 6, 1.5f},
                                           {4, 7, 1.5f}, {8, -1, 1.f}, {9, 11, 3.f}, {10, 12, 3.f}};
  for (int64_t max_rows : {2, 3, 4, 5, 13, 64}) {
    const auto passes = plan_logit_passes(rows, cfg, max_rows);
    const Expanded e = expand(passes);
    EXPECT_TRUE(e.max_stacked <= max_rows);
    expect_rows(e, want);
  }
  // One pass: the forward's rows in one run, guidance over them.
  const auto one = plan_logit_passes(rows, cfg, 64);
  EXPECT_EQ(one.size(), size_t{1});
  EXPECT_TRUE(one[0].inputs == Runs({{0, 13}}));
  // A guided chunk cut across passes: each pass holds its conditional and unconditional rows as
  // two runs.
  const auto cut = plan_logit_passes({3, 3}, {1.f, 0.f}, 4);
  EXPECT_EQ(cut.size(), size_t{2});
  EXPECT_TRUE(cut[0].inputs == Runs({{0, 2}, {3, 5}}));
  EXPECT_TRUE(cut[1].inputs == Runs({{2, 3}, {5, 6}}));
}

TEST(bad_bounds_and_plans_are_rejected) {
  EXPECT_THROWS(plan_logit_passes({4}, {0.f}, 1), InvalidArgument);
  EXPECT_THROWS(plan_logit_passes({4}, {1.f}, 8), Error);  // a guided chunk with no copy
  EXPECT_THROWS(plan_logit_passes({4, 3}, {1.f, 0.f}, 8), Error);  // a copy of another size
}

BITEST_MAIN()
