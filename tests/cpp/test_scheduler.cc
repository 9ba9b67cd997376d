#include <algorithm>
#include <memory>
#include <set>

#include "engine/scheduler.h"
#include "test_harness.h"

using namespace blockinfer;

namespace {

constexpr int32_t kMask = 99;

std::unique_ptr<Sequence> make_seq(int64_t id, int32_t prompt_len, int32_t block_len) {
  auto s = std::make_unique<Sequence>();
  s->id = id;
  for (int32_t i = 0; i < prompt_len; ++i) s->prompt.push_back(i % 50);
  s->params.block_len = block_len;
  s->params.steps = block_len;
  s->mask_id = kMask;
  s->max_model_len = 4096;
  s->init_first_block();
  return s;
}

// What the engine does after a forward, with a "model" that unmasks every position at once.
void apply(const ScheduledSeq& r) {
  Sequence& s = *r.seq;
  if (!r.denoise) {
    s.num_cached = r.end;
    return;
  }
  s.num_cached = s.block_start;
  for (int32_t p = s.block_start; p < s.block_end(); ++p)
    if (s.is_masked(p)) s.unmask(p, 1, TokenLogprob{});
  s.open_next_block();
}

void check_pages_disjoint(const std::vector<std::unique_ptr<Sequence>>& seqs) {
  std::set<int32_t> seen;
  for (const auto& s : seqs)
    for (int32_t p : s->pages) EXPECT_TRUE(seen.insert(p).second);
}

}  // namespace

TEST(first_forward_prefills_the_aligned_prompt_and_denoises_the_first_block) {
  KVPageAllocator alloc(100);
  Scheduler sched(alloc, {8, 1024, 4});
  auto s = make_seq(0, 10, 4);  // A = 8, first block [8, 12) holds prompt tail 8..9 and 2 masks
  EXPECT_EQ(s->block_start, 8);
  EXPECT_TRUE(!s->is_masked(9) && s->is_masked(10));
  sched.add(s.get());
  auto plan = sched.schedule();
  EXPECT_EQ(plan.size(), size_t{1});
  EXPECT_EQ(plan[0].start, 0);
  EXPECT_EQ(plan[0].end, 12);
  EXPECT_TRUE(plan[0].denoise);
  EXPECT_EQ(s->pages.size(), size_t{3});
  EXPECT_EQ(sched.num_running(), 1);
}

TEST(commit_rides_on_the_next_blocks_first_forward) {
  KVPageAllocator alloc(100);
  Scheduler sched(alloc, {8, 1024, 4});
  auto s = make_seq(0, 8, 4);
  sched.add(s.get());
  apply(sched.schedule()[0]);  // [0, 12): block [8, 12) finishes
  auto plan = sched.schedule();
  EXPECT_EQ(plan[0].start, 8);  // the finished block is forwarded again for its final KV
  EXPECT_EQ(plan[0].end, 16);
  EXPECT_TRUE(plan[0].denoise);
}

TEST(long_prompts_are_prefilled_in_whole_block_chunks) {
  KVPageAllocator alloc(100);
  Scheduler sched(alloc, {8, 10, 4});  // 10 positions per forward: chunks of 8
  auto s = make_seq(0, 21, 4);  // A = 20, first block [20, 24)
  sched.add(s.get());
  std::vector<std::pair<int32_t, int32_t>> ranges;
  for (int i = 0; i < 4; ++i) {
    auto plan = sched.schedule();
    EXPECT_EQ(plan.size(), size_t{1});
    ranges.push_back({plan[0].start, plan[0].end});
    EXPECT_TRUE(plan[0].start % 4 == 0 && (plan[0].denoise || plan[0].end % 4 == 0));
    apply(plan[0]);
  }
  EXPECT_EQ(ranges[0].second, 8);
  EXPECT_EQ(ranges[1].second, 16);
  EXPECT_EQ(ranges[2].first, 16);
  EXPECT_EQ(ranges[2].second, 24);  // the rest of the prompt and the first block: 8 positions
  EXPECT_EQ(ranges[3].first, 20);   // then the commit of [20, 24) with the next block
}

TEST(admission_is_first_come_first_served_by_free_pages_and_max_num_seqs) {
  KVPageAllocator alloc(6);
  Scheduler sched(alloc, {2, 1024, 4});
  std::vector<std::unique_ptr<Sequence>> seqs;
  for (int i = 0; i < 4; ++i) seqs.push_back(make_seq(i, 5, 4));  // each needs 2 pages first
  for (auto& s : seqs) sched.add(s.get());
  auto plan = sched.schedule();
  EXPECT_EQ(plan.size(), size_t{2});  // max_num_seqs
  EXPECT_EQ(plan[0].seq->id, 0);
  EXPECT_EQ(plan[1].seq->id, 1);
  EXPECT_EQ(sched.num_waiting(), 2);
  check_pages_disjoint(seqs);
}

TEST(out_of_pages_preempts_the_newest_and_requeues_it_first) {
  KVPageAllocator alloc(5);
  Scheduler sched(alloc, {8, 1024, 4});
  auto a = make_seq(0, 4, 4), b = make_seq(1, 4, 4);
  sched.add(a.get());
  sched.add(b.get());
  auto plan = sched.schedule();  // each takes 2 pages ([0, 8)); 1 page left
  EXPECT_EQ(plan.size(), size_t{2});
  for (auto& r : plan) apply(r);
  plan = sched.schedule();  // a needs page 3 ([4, 12)): fits; b needs one more: none left
  EXPECT_EQ(sched.num_preemptions(), 1);
  EXPECT_EQ(plan.size(), size_t{1});
  EXPECT_EQ(plan[0].seq, a.get());
  EXPECT_TRUE(b->pages.empty());
  EXPECT_EQ(b->num_cached, 0);
  EXPECT_EQ(b->status, SeqStatus::kWaiting);
  EXPECT_EQ(sched.num_waiting(), 1);
  // b's committed block [4, 8) stays final (it is recomputed, not re-decoded); only its current
  // block [8, 12) starts over.
  EXPECT_EQ(b->block_start, 8);
  EXPECT_TRUE(b->is_masked(8));
}

TEST(remove_frees_pages_of_running_and_waiting_sequences) {
  KVPageAllocator alloc(10);
  Scheduler sched(alloc, {1, 1024, 4});
  auto a = make_seq(0, 6, 4), b = make_seq(1, 6, 4);
  sched.add(a.get());
  sched.add(b.get());
  sched.schedule();
  sched.remove(a.get());
  sched.remove(b.get());
  EXPECT_TRUE(sched.empty());
  EXPECT_EQ(alloc.num_pages_free(), 10);
}

TEST(many_sequences_under_pressure_all_finish_and_free_everything) {
  KVPageAllocator alloc(24);
  Scheduler sched(alloc, {16, 64, 4});
  std::vector<std::unique_ptr<Sequence>> seqs;
  for (int i = 0; i < 20; ++i) seqs.push_back(make_seq(i, 1 + (i * 7) % 23, (i % 2) ? 4 : 8));
  for (auto& s : seqs) sched.add(s.get());
  std::vector<int> blocks_done(seqs.size(), 0);
  int steps = 0;
  while (!sched.empty() && steps < 10000) {
    ++steps;
    auto plan = sched.schedule();
    EXPECT_TRUE(!plan.empty());
    int64_t positions = 0;
    for (auto& r : plan) {
      positions += r.end - r.start;
      EXPECT_TRUE(static_cast<int64_t>(r.seq->pages.size()) * 4 >= r.end);
    }
    EXPECT_TRUE(positions <= 64);
    check_pages_disjoint(seqs);
    for (auto& r : plan) {
      const bool finishes_block = r.denoise;
      apply(r);
      if (finishes_block && ++blocks_done[r.seq->id] == 3) sched.remove(r.seq);
    }
  }
  EXPECT_TRUE(sched.empty());
  EXPECT_EQ(alloc.num_pages_free(), 24);
  EXPECT_TRUE(sched.num_preemptions() > 0);
}

TEST(prefill_first_holds_denoising_sequences_while_a_waiting_one_fits) {
  KVPageAllocator alloc(100);
  Scheduler sched(alloc, {8, 32, 4, /*prefill_first=*/true});
  std::vector<std::unique_ptr<Sequence>> seqs;
  // [0, 16) each: two a forward. In lockstep a block's first step forwards 8 positions a sequence
  // (the commit of the block before and the block): 32 for the four, which fits.
  for (int i = 0; i < 4; ++i) seqs.push_back(make_seq(i, 12, 4));
  for (auto& s : seqs) sched.add(s.get());
  std::vector<std::vector<int64_t>> forwards;
  for (int step = 0; step < 3; ++step) {
    auto plan = sched.schedule();
    forwards.emplace_back();
    for (auto& r : plan) {
      forwards.back().push_back(r.seq->id);
      EXPECT_TRUE(r.denoise);
    }
    // The "model" unmasks one position a step, so a block takes four forwards.
    for (auto& r : plan) {
      Sequence& q = *r.seq;
      q.num_cached = q.block_start;
      for (int32_t pos = q.block_start; pos < q.block_end(); ++pos)
        if (q.is_masked(pos)) {
          q.unmask(pos, 1, TokenLogprob{});
          break;
        }
    }
  }
  // 0 and 1 prefill (with their first step), then wait for 2 and 3; then all four step together.
  EXPECT_TRUE((forwards[0] == std::vector<int64_t>{0, 1}));
  EXPECT_TRUE((forwards[1] == std::vector<int64_t>{2, 3}));
  EXPECT_TRUE((forwards[2] == std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(prefill_first_holds_only_while_a_batch_is_admitted_and_its_lockstep_fits) {
  // 0 and 1 are admitted, take `late` more steps, then 2 and 3 arrive: the ids in the next plan.
  auto next_plan = [](int32_t budget, int late) {
    KVPageAllocator alloc(200);
    Scheduler sched(alloc, {8, budget, 4, /*prefill_first=*/true});
    std::vector<std::unique_ptr<Sequence>> seqs;
    for (int i = 0; i < 4; ++i) seqs.push_back(make_seq(i, 12, 4));  // [0, 16) each at first
    sched.add(seqs[0].get());
    sched.add(seqs[1].get());
    for (int step = 0; step < 1 + late; ++step)
      for (auto& r : sched.schedule()) apply(r);
    sched.add(seqs[2].get());
    sched.add(seqs[3].get());
    std::vector<int64_t> ids;
    for (auto& r : sched.schedule()) ids.push_back(r.seq->id);
    return ids;
  };
  // Admitted together: 0 and 1 stepped once (in their prefill forward) and wait while 2 and 3 come.
  EXPECT_TRUE((next_plan(32, 0) == std::vector<int64_t>{2, 3}));
  // 0 and 1 have gone past their first step: they step beside 2's prefill (3 does not fit).
  EXPECT_TRUE((next_plan(32, 1) == std::vector<int64_t>{0, 1, 2}));
  // The four in lockstep would need 32 positions at a block's first step, over a budget of 31: no
  // holding. (The budget of 31 also cut 1's first forward to a chunk, so 1 still prefills.)
  EXPECT_TRUE((next_plan(31, 0) == std::vector<int64_t>{0, 1, 2}));
}

TEST(prefill_first_lets_a_chunked_prefill_go_on) {
  KVPageAllocator alloc(100);
  Scheduler sched(alloc, {8, 24, 4, /*prefill_first=*/true});
  auto a = make_seq(0, 4, 4), b = make_seq(1, 28, 4), c = make_seq(2, 4, 4);
  for (auto* s : {a.get(), b.get(), c.get()}) sched.add(s);
  auto plan = sched.schedule();  // a [0, 8), b's first chunk [0, 16)
  EXPECT_EQ(plan.size(), size_t{2});
  EXPECT_TRUE(plan[0].seq == a.get() && plan[0].denoise);
  EXPECT_TRUE(plan[1].seq == b.get() && !plan[1].denoise && plan[1].end == 16);
  for (auto& r : plan) apply(r);
  plan = sched.schedule();  // a waits; b's rest with its first block [16, 32), and c [0, 8)
  EXPECT_EQ(plan.size(), size_t{2});
  EXPECT_TRUE(plan[0].seq == b.get() && plan[0].denoise && plan[0].start == 16);
  EXPECT_TRUE(plan[1].seq == c.get());
  for (auto& r : plan) apply(r);
  EXPECT_EQ(sched.schedule().size(), size_t{3});  // nothing waits: all three
}

TEST(prefill_first_decodes_when_the_waiting_sequence_does_not_fit) {
  KVPageAllocator alloc(8);
  Scheduler sched(alloc, {8, 1024, 4, /*prefill_first=*/true});
  auto a = make_seq(0, 4, 4), b = make_seq(1, 4, 4), c = make_seq(2, 20, 4);
  for (auto* s : {a.get(), b.get()}) sched.add(s);
  for (auto& r : sched.schedule()) apply(r);  // a and b take 2 pages each
  sched.add(c.get());  // [0, 24) needs 6 pages, 4 are free
  auto plan = sched.schedule();
  EXPECT_EQ(plan.size(), size_t{2});
  EXPECT_TRUE(plan[0].seq == a.get() && plan[1].seq == b.get());
  EXPECT_EQ(sched.num_waiting(), 1);
}

BITEST_MAIN()
