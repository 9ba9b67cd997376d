#include "blockinfer/status.h"
#include "engine/remasking.h"
#include "test_harness.h"

using namespace blockinfer;

namespace {
std::vector<int32_t> pick(RemaskingStrategy s, std::vector<float> c, int32_t n, bool last = false,
                          float tau = 0.9f) {
  return select_unmask({s, n, last, tau, &c});
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

TEST(unimplemented_strategies_say_so) {
  EXPECT_THROWS(pick(RemaskingStrategy::kRandom, {0.1f}, 1), NotImplementedYet);
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

BITEST_MAIN()
