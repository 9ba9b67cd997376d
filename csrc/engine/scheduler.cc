#include "engine/scheduler.h"

#include <algorithm>

#include "blockinfer/status.h"

namespace blockinfer {

Scheduler::Scheduler(KVPageAllocator& allocator, const SchedulerConfig& config)
    : allocator_(allocator), config_(config) {
  BI_CHECK_ARG(config.max_num_seqs > 0, "max_num_seqs must be positive, got ", config.max_num_seqs);
  BI_CHECK_ARG(config.max_num_batched_tokens > 0, "max_num_batched_tokens must be positive, got ",
               config.max_num_batched_tokens);
  BI_CHECK_ARG(config.page_size > 0, "kv_page_size must be positive, got ", config.page_size);
}

void Scheduler::add(Sequence* seq) {
  seq->status = SeqStatus::kWaiting;
  waiting_.push_back(seq);
}

bool Scheduler::next_range(const Sequence& seq, int64_t budget, ScheduledSeq& out) const {
  if (seq.canvas) {  // the whole canvas every step; it cannot be chunked (attention is bidirectional)
    const int32_t canvas_end = seq.forward_end();
    int32_t start = 0, end = canvas_end;
    if (seq.step > 0 && seq.cache_mode != Sequence::CacheMode::kNone) {
      start = seq.block_start;
      if (seq.cache_mode == Sequence::CacheMode::kDual) end = seq.block_end();
    }
    if (static_cast<int64_t>(end - start) * seq.page_copies() > budget) return false;
    out = {const_cast<Sequence*>(&seq), start, end, true, canvas_end};
    return true;
  }
  // A shifted (Dream) block predicts its first position from the one before it: forward that too
  // (its KV is final, so rewriting it changes nothing).
  const int32_t start = seq.shift_logits && seq.num_cached == seq.block_start && seq.block_start > 0
                            ? seq.block_start - 1
                            : seq.num_cached;
  const int32_t end = seq.block_end();
  if (end - start <= budget) {
    out = {const_cast<Sequence*>(&seq), start, end, true};
    return true;
  }
  // A bidirectional prompt cannot be split into chunks; once it is cached, the commit of a block
  // can be forwarded on its own like any chunk of whole blocks.
  if (seq.prompt_block && seq.num_cached < seq.prompt_len()) return false;
  // Too long for the remaining budget: prefill whole blocks of what precedes the current block
  // (a chunk must end on a block boundary, since positions of one block attend to each other).
  const int64_t chunk_blocks = budget / seq.block_len();
  const int32_t chunk_end =
      static_cast<int32_t>(std::min<int64_t>(start + chunk_blocks * seq.block_len(), seq.block_start));
  if (chunk_end <= start) return false;
  out = {const_cast<Sequence*>(&seq), start, chunk_end, false};
  return true;
}

bool Scheduler::hold_denoising() const {
  if (!config_.prefill_first || waiting_.empty() || static_cast<int64_t>(running_.size()) >= config_.max_num_seqs)
    return false;
  // Only while a batch is being admitted: every running sequence is still prefilling or waits
  // after its first denoise step. Once any has gone further, new sequences join the running ones'
  // forwards (holding them back for each admission would add a forward per finished request, and
  // a request preempted by the decodes, re-admitted ahead of them, would be preempted again).
  // And only if the batch in lockstep, the running sequences and the waiting ones that slots allow,
  // fits one forward: a block's first step carries the commit of the block before (twice the
  // block), a canvas forwards itself whole. A lockstep over the budget would split at every block
  // start, its laggards falling further behind.
  auto lockstep_rows = [](const Sequence& seq) {
    return static_cast<int64_t>(seq.canvas ? seq.forward_end() : 2 * seq.block_len()) * seq.page_copies();
  };
  int64_t rows = 0;
  for (const Sequence* seq : running_) {
    if (seq->denoise_forwards > 1) return false;
    rows += lockstep_rows(*seq);
  }
  const size_t joining = std::min(waiting_.size(), static_cast<size_t>(config_.max_num_seqs) - running_.size());
  for (size_t i = 0; i < joining && rows <= config_.max_num_batched_tokens; ++i) rows += lockstep_rows(*waiting_[i]);
  if (rows > config_.max_num_batched_tokens) return false;
  // What schedule() will give the sequences still prefilling (they go first), then the head.
  int64_t budget = config_.max_num_batched_tokens, pages = allocator_.num_pages_free();
  auto take = [&](const Sequence& seq) {
    ScheduledSeq r{};
    if (!next_range(seq, budget, r)) return false;
    budget -= static_cast<int64_t>(r.end - r.start) * seq.page_copies();
    pages -= std::max<int64_t>(0, pages_needed(seq, r));
    return pages >= 0;
  };
  for (const Sequence* seq : running_)
    if (seq->denoise_forwards == 0 && !take(*seq) && pages < 0) return false;  // it would preempt: step as usual
  return take(*waiting_.front());
}

void Scheduler::preempt(Sequence* seq) {
  auto it = std::find(running_.begin(), running_.end(), seq);
  BI_CHECK(it != running_.end());
  running_.erase(it);
  allocator_.release(seq->pages);
  seq->reset_for_recompute();
  seq->status = SeqStatus::kWaiting;
  waiting_.push_front(seq);
  ++num_preemptions_;
}

std::vector<ScheduledSeq> Scheduler::schedule() {
  std::vector<ScheduledSeq> plan;
  plan.reserve(std::min(running_.size() + waiting_.size(), static_cast<size_t>(config_.max_num_seqs)));
  int64_t budget = config_.max_num_batched_tokens;
  bool preempted = false;
  const bool prefill_only = hold_denoising();
  // Running sequences first, oldest first, so the oldest always make progress.
  for (size_t i = 0; i < running_.size();) {
    Sequence* seq = running_[i];
    ScheduledSeq r{};
    if ((prefill_only && seq->denoise_forwards > 0) || !next_range(*seq, budget, r)) {
      ++i;  // held back (prefill_first) or no budget left for it this step; it keeps its pages
      continue;
    }
    const int64_t need = pages_needed(*seq, r);
    bool self_preempted = false;
    while (need > allocator_.num_pages_free()) {
      Sequence* victim = running_.back();  // the newest; never one already planned (index < i)
      preempt(victim);
      preempted = true;
      if (victim == seq) {
        self_preempted = true;
        break;
      }
    }
    if (self_preempted) break;  // seq was the newest: nothing after it remains
    if (need > 0) allocator_.allocate(need, seq->pages);
    seq->denoise_forwards += r.denoise ? 1 : 0;
    plan.push_back(r);
    budget -= static_cast<int64_t>(r.end - r.start) * seq->page_copies();
    ++i;
  }
  // Admit waiting sequences while pages, slots and budget allow; not in a step that had to
  // preempt, which would only thrash.
  while (!preempted && !waiting_.empty() &&
         static_cast<int64_t>(running_.size()) < config_.max_num_seqs) {
    Sequence* seq = waiting_.front();
    ScheduledSeq r{};
    if (!next_range(*seq, budget, r)) break;
    const int64_t need = pages_needed(*seq, r);
    if (need > allocator_.num_pages_free()) break;
    allocator_.allocate(need, seq->pages);
    waiting_.pop_front();
    seq->status = SeqStatus::kRunning;
    running_.push_back(seq);
    seq->denoise_forwards += r.denoise ? 1 : 0;  // 0 while waiting (new, or reset when preempted)
    plan.push_back(r);
    budget -= static_cast<int64_t>(r.end - r.start) * seq->page_copies();
  }
  return plan;
}

void Scheduler::remove(Sequence* seq) {
  auto it = std::find(running_.begin(), running_.end(), seq);
  if (it != running_.end()) running_.erase(it);
  auto wt = std::find(waiting_.begin(), waiting_.end(), seq);
  if (wt != waiting_.end()) waiting_.erase(wt);
  allocator_.release(seq->pages);
}

}  // namespace blockinfer
