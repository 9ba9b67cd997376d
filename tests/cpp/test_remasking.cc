#include <algorithm>
#include <random>

#include "blockinfer/status.h"
#include "engine/remasking.h"
#include "kernels/cpu/kernels.h"
#include "ops/sampling.h"
#include "test_harness.h"

using namespace blockinfer;

namespace {
// The positions (ascending) one block's segment unmasks under the CPU rule.
std::vector<int32_t> pick(RemaskingStrategy s, std::vector<float> c, int32_t n, bool last = false,
                          float tau = 0.9f, std::vector<float> h = {}, float gamma = 0.35f,
                          float factor = 1.0f) {
  if (h.empty()) h.assign(c.size(), 0.f);
  cpu::RemaskSegment seg;
  seg.rows = static_cast<int32_t>(c.size());
  seg.strategy = s;
  seg.n_t = n;
  seg.last_step = last;
  seg.dynamic_threshold = tau;
  seg.eb_threshold = gamma;
  seg.factor = factor;
  std::vector<int32_t> chosen(c.size());
  cpu::select_unmask_rows(c.data(), h.data(), &seg, 1, chosen.data());
  std::vector<int32_t> idx;
  for (int32_t i = 0; i < seg.rows; ++i)
    if (chosen[i]) idx.push_back(i);
  return idx;
}
}  // namespace

TEST(schedule_spreads_the_block_over_the_steps) {
  for (int32_t b : {1, 4, 7, 16, 32})
    for (int32_t s : {1, 2, 3, 5, 16, 40}) {
      int32_t total = 0;
      for (int32_t t = 0; t < s; ++t) total += num_to_unmask(b, s, t);
      EXPECT_EQ(total, b);
    }
  EXPECT_EQ(num_to_unmask(10, 4, 0), 3);  // 10 = 3 + 3 + 2 + 2
  EXPECT_EQ(num_to_unmask(10, 4, 1), 3);
  EXPECT_EQ(num_to_unmask(10, 4, 2), 2);
  EXPECT_EQ(num_to_unmask(4, 8, 5), 0);
}

TEST(sequential_takes_the_leftmost) {
  EXPECT_EQ(pick(RemaskingStrategy::kSequential, {0.1f, 0.9f, 0.5f}, 2), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(pick(RemaskingStrategy::kSequential, {0.1f}, 3), (std::vector<int32_t>{0}));
}

TEST(static_takes_the_most_confident_with_ties_to_the_lower_position) {
  EXPECT_EQ(pick(RemaskingStrategy::kLowConfidenceStatic, {0.1f, 0.9f, 0.5f, 0.7f}, 2),
            (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(pick(RemaskingStrategy::kLowConfidenceStatic, {0.5f, 0.2f, 0.5f, 0.5f}, 2),
            (std::vector<int32_t>{0, 2}));
}

TEST(dynamic_takes_all_above_the_strict_threshold_or_falls_back_to_top_n) {
  // Three strictly above 0.5 >= n_t = 2: all three.
  EXPECT_EQ(pick(RemaskingStrategy::kLowConfidenceDynamic, {0.6f, 0.5f, 0.9f, 0.7f}, 2, false, 0.5f),
            (std::vector<int32_t>{0, 2, 3}));
  // Only one above (0.5 itself is not): the top two instead.
  EXPECT_EQ(pick(RemaskingStrategy::kLowConfidenceDynamic, {0.5f, 0.2f, 0.9f, 0.3f}, 2, false, 0.5f),
            (std::vector<int32_t>{0, 2}));
}

TEST(last_step_unmasks_everything) {
  for (auto s : {RemaskingStrategy::kSequential, RemaskingStrategy::kLowConfidenceStatic,
                 RemaskingStrategy::kLowConfidenceDynamic})
    EXPECT_EQ(pick(s, {0.1f, 0.2f, 0.3f}, 1, true), (std::vector<int32_t>{0, 1, 2}));
}

TEST(entropy_bounded_takes_low_entropy_positions_while_the_prefix_sum_stays_below_gamma) {
  // Sorted entropies 0.1 (pos 2), 0.2 (pos 0), 0.3 (pos 3), 0.9: prefix sums 0.1, 0.3, 0.6, ...
  std::vector<float> h = {0.2f, 0.9f, 0.1f, 0.3f};
  EXPECT_EQ(pick(RemaskingStrategy::kEntropyBounded, {0, 0, 0, 0}, 1, false, 0.9f, h, 0.35f),
            (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(pick(RemaskingStrategy::kEntropyBounded, {0, 0, 0, 0}, 1, false, 0.9f, h, 0.61f),
            (std::vector<int32_t>{0, 2, 3}));
  // Even the lowest entropy above the bound: still one position.
  EXPECT_EQ(pick(RemaskingStrategy::kEntropyBounded, {0, 0, 0, 0}, 1, false, 0.9f, h, 0.05f),
            (std::vector<int32_t>{2}));
}

TEST(confidence_threshold_takes_the_top_one_plus_all_at_or_above_tau) {
  EXPECT_EQ(pick(RemaskingStrategy::kConfidenceThreshold, {0.3f, 0.5f, 0.2f, 0.7f}, 1, false, 0.5f),
            (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(pick(RemaskingStrategy::kConfidenceThreshold, {0.3f, 0.1f}, 1, false, 0.9f),
            (std::vector<int32_t>{0}));
}

TEST(confidence_factor_accepts_ranks_while_c_n_is_at_least_one_minus_f_over_n_plus_one) {
  // factor 1: rank 2 needs >= 2/3, rank 3 needs >= 3/4, rank 4 needs >= 4/5.
  // 0.95, then 0.79 (>= 2/3), 0.76 (>= 3/4); 0.7 < 4/5 stops it.
  EXPECT_EQ(pick(RemaskingStrategy::kConfidenceFactor, {0.7f, 0.95f, 0.76f, 0.79f}, 1, false, 0.9f, {},
                 0.35f, 1.0f),
            (std::vector<int32_t>{1, 2, 3}));
  // A larger factor lowers the bar: 0.7 >= 1 - 2/5.
  EXPECT_EQ(pick(RemaskingStrategy::kConfidenceFactor, {0.7f, 0.95f, 0.76f, 0.79f}, 1, false, 0.9f, {},
                 0.35f, 2.0f),
            (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(pick(RemaskingStrategy::kConfidenceFactor, {0.1f, 0.2f}, 1, false, 0.9f, {}, 0.35f, 1.0f),
            (std::vector<int32_t>{1}));
}

TEST(low_confidence_and_random_rank_by_their_scores) {
  EXPECT_EQ(pick(RemaskingStrategy::kLowConfidence, {0.1f, 0.9f, 0.5f}, 2), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(pick(RemaskingStrategy::kRandom, {0.6f, 0.2f, 0.7f}, 1), (std::vector<int32_t>{2}));
}

TEST(dream_algorithms_are_not_block_strategies) {
  EXPECT_TRUE(!is_block_strategy(RemaskingStrategy::kMaskgitPlus));
  EXPECT_TRUE(is_block_strategy(RemaskingStrategy::kConfidenceFactor));
  EXPECT_THROWS(pick(RemaskingStrategy::kOrigin, {0.1f}, 1), InvalidArgument);
}

TEST(strategy_names_parse_and_unknown_names_list_the_valid_ones) {
  EXPECT_TRUE(parse_remasking_strategy("sequential") == RemaskingStrategy::kSequential);
  bool listed = false;
  try {
    parse_remasking_strategy("fastest");
  } catch (const InvalidArgument& e) {
    listed = std::string(e.what()).find("low_confidence_static") != std::string::npos;
  }
  EXPECT_TRUE(listed);
}

// The batched op (what the engine calls; the GPU runs its kernel) gives each segment what
// the CPU rule gives it alone, marks only its rows, and refuses bad segments.
TEST(batched_selection_matches_one_segment_at_a_time) {
  ops::SampleOutputs out = ops::SampleOutputs::empty(9);
  const float c[9] = {0.2f, 0.9f, 0.9f, 0.1f, 0.5f, 0.7f, 0.7f, 0.3f, 0.6f};
  for (int i = 0; i < 9; ++i) {
    out.confidence.data<float>()[i] = c[i];
    out.entropy.data<float>()[i] = 1.f - c[i];
    out.chosen.data<int32_t>()[i] = 7;
  }
  ops::RemaskSegment a, b, d;
  a.rows = 4, a.strategy = RemaskingStrategy::kLowConfidenceStatic, a.n_t = 2;
  b.row_begin = 4, b.rows = 3, b.strategy = RemaskingStrategy::kConfidenceThreshold, b.dynamic_threshold = 0.6f;
  d.row_begin = 7, d.rows = 1, d.strategy = RemaskingStrategy::kMaskgitPlus, d.skip = 1;
  ops::select_unmask_rows({a, b, d}, out);
  const int32_t want[9] = {0, 1, 1, 0, 0, 1, 1, 0, 7};  // row 8 is in no segment
  for (int i = 0; i < 9; ++i) EXPECT_EQ(out.chosen.data<int32_t>()[i], want[i]);
  EXPECT_TRUE(pick(RemaskingStrategy::kLowConfidenceStatic, {0.2f, 0.9f, 0.9f, 0.1f}, 2) == std::vector<int32_t>({1, 2}));
  ops::RemaskSegment overlapping = b;
  overlapping.row_begin = 3;
  EXPECT_THROWS(ops::select_unmask_rows({a, overlapping}, out), InvalidArgument);
  d.skip = 0;
  EXPECT_THROWS(ops::select_unmask_rows({d}, out), InvalidArgument);
  ops::RemaskSegment outside = a;
  outside.row_begin = 8, outside.rows = 2;
  EXPECT_THROWS(ops::select_unmask_rows({outside}, out), InvalidArgument);
}

// Asynchronous scheduling carries a step's decisions into the forward launched behind it: the
// chosen tokens into its ids, and each sequence's candidates less those the chosen rows fill
// (in order, at most the run's count) into its logit rows.
TEST(carried_decisions_fill_ids_and_keep_the_unfilled_candidates) {
  ops::SampleOutputs s = ops::SampleOutputs::empty(5);
  const int32_t x0[5] = {101, 102, 103, 104, 105}, chosen[5] = {1, 0, 1, 0, 1};
  for (int i = 0; i < 5; ++i) s.x0.data<int32_t>()[i] = x0[i], s.chosen.data<int32_t>()[i] = chosen[i];
  auto minus_ones = [] {
    Tensor t = Tensor::empty({6}, DType::kInt32);
    std::fill_n(t.data<int32_t>(), 6, -1);
    return t;
  };
  Tensor ids = Tensor::zeros({10}, DType::kInt32);
  Tensor rows = minus_ones();
  ops::CarriedDecisions d;
  d.targets = {2, 3, -1, 7, 9};  // row 2 is chosen but fills nothing here
  // Run 0: candidates 0-3 (forward rows 2, 3, 4, 5; rows 0 and 1 of the samples fill the first
  // two), two kept. Run 1: candidates 4-6 (rows 7, 8, 9; sample 4 fills row 9), all kept.
  // Run 2: one candidate, none kept (its slot stays as it was).
  d.candidate_rows = {2, 3, 4, 5, 7, 8, 9, 6};
  d.candidate_sources = {0, 1, -1, -1, 3, -1, 4, 2};
  d.runs = {0, 4, 0, 3, 4, 3, 3, 2, 7, 1, 5, 0};
  ops::carry_decisions(s, d, ids, &rows);
  const int32_t want_ids[10] = {0, 0, 101, 0, 0, 0, 0, 0, 0, 105};
  for (int i = 0; i < 10; ++i) EXPECT_EQ(ids.data<int32_t>()[i], want_ids[i]);
  // Run 0 keeps rows 3, 4, 5 (sample 1 was not chosen); run 1 keeps 7 and 8 (sample 3 not chosen,
  // sample 4 chosen).
  const int32_t want_rows[6] = {3, 4, 5, 7, 8, -1};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(rows.data<int32_t>()[i], want_rows[i]);
  // At most the run's count: one row kept of run 0's three.
  d.runs = {0, 4, 0, 1};
  rows = minus_ones();
  ops::carry_decisions(s, d, ids, &rows);
  EXPECT_EQ(rows.data<int32_t>()[0], 3);
  EXPECT_EQ(rows.data<int32_t>()[1], -1);
  // Bad runs, sources, rows and targets are refused with what is wrong.
  ops::CarriedDecisions bad = d;
  bad.runs = {0, 4, 5, 2};  // past the 6 logit rows
  EXPECT_THROWS(ops::carry_decisions(s, bad, ids, &rows), InvalidArgument);
  bad.runs = {0, 9, 0, 1};  // past the candidates
  EXPECT_THROWS(ops::carry_decisions(s, bad, ids, &rows), InvalidArgument);
  bad.runs = {0, 2, 0, 3};  // more kept than candidates
  EXPECT_THROWS(ops::carry_decisions(s, bad, ids, &rows), InvalidArgument);
  bad = d;
  bad.candidate_sources[1] = 5;
  EXPECT_THROWS(ops::carry_decisions(s, bad, ids, &rows), InvalidArgument);
  bad = d;
  bad.candidate_rows[0] = 10;
  EXPECT_THROWS(ops::carry_decisions(s, bad, ids, &rows), InvalidArgument);
  bad = d;
  bad.targets[0] = 10;
  EXPECT_THROWS(ops::carry_decisions(s, bad, ids, &rows), InvalidArgument);
  EXPECT_THROWS(ops::carry_decisions(s, d, ids, nullptr), InvalidArgument);  // runs need logit rows
}

// Asynchronous scheduling sizes a forward launched ahead by the count a step in flight unmasks
// (known_unmask_count): wherever that count is known, the selection marks exactly that many rows,
// whatever the confidences; the four fixed-count strategies always know it.
TEST(known_unmask_counts_are_what_the_selection_marks) {
  std::mt19937 g(5);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  int64_t known = 0;
  for (int i = 0; i < 4000; ++i) {
    cpu::RemaskSegment seg;
    seg.rows = static_cast<int32_t>(g() % 10);
    seg.strategy = static_cast<RemaskingStrategy>(g() % (static_cast<int>(RemaskingStrategy::kConfidenceFactor) + 1));
    seg.n_t = static_cast<int32_t>(g() % 11);
    seg.last_step = g() % 4 == 0;
    seg.first_only = g() % 8 == 0;
    seg.dynamic_threshold = u(g), seg.eb_threshold = 2.f * u(g), seg.factor = u(g);
    std::vector<float> c(static_cast<size_t>(seg.rows)), h(c.size());
    for (size_t r = 0; r < c.size(); ++r) c[r] = g() % 3 == 0 ? 0.5f : u(g), h[r] = u(g);
    std::vector<int32_t> chosen(c.size());
    cpu::select_unmask_rows(c.data(), h.data(), &seg, 1, chosen.data());
    const int32_t count = cpu::known_unmask_count(seg);
    if (cpu::unmasks_known_count(seg.strategy)) EXPECT_TRUE(count >= 0);
    if (count < 0) continue;
    ++known;
    EXPECT_EQ(static_cast<int32_t>(std::count(chosen.begin(), chosen.end(), 1)), count);
  }
  EXPECT_TRUE(known > 2000);
  cpu::RemaskSegment skipped;
  skipped.rows = 3, skipped.skip = 1;
  EXPECT_EQ(cpu::known_unmask_count(skipped), -1);
}

BITEST_MAIN()
