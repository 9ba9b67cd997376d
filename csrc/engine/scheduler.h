// Continuous batching: which sequences take part in the next forward and with which positions.
// Admission is by free KV pages (first come, first served); when a running sequence needs a page
// and none is free, the newest running sequence is preempted (its pages freed, the sequence
// re-queued at the front) and later recomputed.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "engine/kv_page_allocator.h"
#include "engine/sequence.h"

namespace blockinfer {

struct SchedulerConfig {
  int32_t max_num_seqs = 256;
  int64_t max_num_batched_tokens = 8192;  // positions forwarded per step, all sequences together
  int32_t page_size = 16;
  // While a batch is being admitted and a waiting sequence can be admitted, sequences that have
  // begun denoising sit the step out (sequences still prefilling go on; hold_denoising says when).
  // A batch that arrives together then prefills in forwards of whole budgets and denoises in
  // lockstep: it ends in one forward instead of a tail of shrinking ones. The engine passes
  // EngineConfig::prefill_first (on by default).
  bool prefill_first = false;
};

// One sequence's share of a forward: positions [start, end). With `denoise`, end is the current
// block's end and the block's masked positions need logits; [start, block_start) are prompt or
// just-finished blocks whose final KV this forward writes (the commit fused with the next step).
// Without it, a prefill chunk of whole blocks.
struct ScheduledSeq {
  Sequence* seq;
  int32_t start;
  int32_t end;
  bool denoise;
  int32_t kv_end = 0;  // keys [0, kv_end) are attended; 0 means `end`
};

class Scheduler {
 public:
  Scheduler(KVPageAllocator& allocator, const SchedulerConfig& config);

  void add(Sequence* seq);
  // Plans the next forward. May preempt running sequences (counted in num_preemptions()).
  std::vector<ScheduledSeq> schedule();
  // Removes a running or waiting sequence and frees its pages.
  void remove(Sequence* seq);

  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_preemptions() const { return num_preemptions_; }
  bool empty() const { return running_.empty() && waiting_.empty(); }
  int64_t pages_for(int64_t num_positions) const {
    return (num_positions + config_.page_size - 1) / config_.page_size;
  }

 private:
  // The range this sequence would forward within `budget` positions; false if none fits.
  bool next_range(const Sequence& seq, int64_t budget, ScheduledSeq& out) const;
  // Pages `seq` must be given to forward `r` (negative where it holds more).
  int64_t pages_needed(const Sequence& seq, const ScheduledSeq& r) const {
    return pages_for(r.end) * seq.page_copies() - static_cast<int64_t>(seq.pages.size());
  }
  // prefill_first: whether this step holds back the sequences already denoising. It does while no
  // running sequence has gone past its first denoise step, the running and joinable waiting ones in
  // lockstep fit the budget, and, after the sequences still prefilling get their ranges and pages,
  // the next waiting sequence fits what is left, so the step admits it without preempting anyone.
  bool hold_denoising() const;
  void preempt(Sequence* seq);

  KVPageAllocator& allocator_;
  SchedulerConfig config_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // in admission order: the back is the newest
  int64_t num_preemptions_ = 0;
};

}  // namespace blockinfer
