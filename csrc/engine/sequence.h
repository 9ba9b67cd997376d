// One request's decoding state (SEMANTICS §4): the canvas of prompt + completion so far, where the
// current block is, and which of its positions already have final KV in the cache.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "blockinfer/engine.h"
#include "blockinfer/sampling_params.h"

namespace blockinfer {

// SamplingParams with every default filled in for this request.
struct ResolvedParams {
  RemaskingStrategy strategy = RemaskingStrategy::kLowConfidenceStatic;
  float temperature = 1.f;
  int32_t topk = 0;
  float topp = 1.f;
  int32_t block_len = 4;
  int32_t steps = 4;
  float dynamic_threshold = 0.9f;
  float eb_threshold = 0.35f;
  float factor = 1.0f;
  bool logprobs = false;
  int32_t max_tokens = 64;
  // Dream's algorithms (origin, maskgit_plus, topk_margin, entropy): the whole generation is one
  // block of S steps on the timestep schedule `dream_timesteps`.
  bool dream = false;
  float cfg_scale = 0.f;  // > 0: LLaDA's classifier-free guidance (canvas mode)
  float alg_temp = 0.f;
  std::vector<float> dream_timesteps;
  uint64_t seed = 0;
  std::vector<int32_t> stop_token_ids;  // params' ids plus (unless ignore_eos) the model's EOS ids
};

enum class SeqStatus : uint8_t { kWaiting, kRunning, kFinished };

struct Sequence {
  int64_t id = 0;
  std::vector<int32_t> prompt;
  ResolvedParams params;
  int32_t mask_id = 0;
  int32_t max_model_len = 0;
  // Canvas decoding (bidirectional models, SEMANTICS §5): the whole canvas (prompt + G masks, G =
  // max_tokens rounded up to the block) is forwarded every step with full attention and no cache;
  // blocks start at the end of the prompt.
  bool canvas = false;
  // Fast-dLLM caches on a canvas: a block's first step forwards the whole canvas (refreshing every
  // position's KV); later steps forward [block_start, canvas end) (prefix) or the block alone
  // (dual), attending to the cached KV of every other position.
  enum class CacheMode : uint8_t { kNone, kPrefix, kDual } cache_mode = CacheMode::kNone;
  // Block decode of a bidirectional model (decode_mode "block_causal"): the whole prompt is one
  // bidirectional block and the generation's blocks start at its end, appended one at a time.
  bool prompt_block = false;
  // Dream's shifted logits: position p is predicted from the hidden state at p - 1, so a forward
  // that samples the block's first position must cover the position before the block.
  bool shift_logits = false;

  // tokens[0, block_end()) : prompt, committed completion blocks, then the current block (which
  // holds mask ids at still-masked positions).
  std::vector<int32_t> tokens;
  int32_t block_start = 0;   // first position of the current block (a multiple of block_len)
  // Which positions of the current block are still masked. Tracked as flags, not by comparing
  // with mask_id: a sampled token may equal the mask id, and once unmasked it is final.
  std::vector<uint8_t> masked;
  std::vector<TokenLogprob> decided;  // per position of the current block, when logprobs are on
  int32_t step = 0;          // denoise steps already run in the current block
  int32_t num_cached = 0;    // positions [0, num_cached) hold final KV (a multiple of block_len)
  int32_t denoise_forwards = 0;  // denoise forwards planned since the prefill (or recompute) began
  std::vector<int32_t> pages;

  SeqStatus status = SeqStatus::kWaiting;
  FinishReason finish_reason = FinishReason::kNone;
  int32_t num_emitted = 0;   // completion tokens already reported to the caller
  int64_t num_forwards = 0;

  int32_t prompt_len() const { return static_cast<int32_t>(prompt.size()); }
  int32_t block_len() const { return params.block_len; }
  int32_t block_end() const { return block_start + params.block_len; }
  // KV pages per position: a guided canvas also forwards its unconditional copy (second half of
  // `pages`).
  int32_t page_copies() const { return params.cfg_scale > 0.f ? 2 : 1; }
  // The end of what a forward must cover: the current block, or the whole canvas.
  int32_t forward_end() const { return canvas ? static_cast<int32_t>(tokens.size()) : block_end(); }
  // Fast-dLLM's Dream loop with a cache: a block's first step (the full-canvas forward) unmasks the
  // block's first position only, since the block's later (cached) forwards start at the block and
  // cannot predict it; the last step (S = 1) still takes every masked position.
  bool first_position_step() const {
    return shift_logits && cache_mode != CacheMode::kNone && step == 0 && params.steps > 1;
  }

  // Starts decoding: the aligned prompt prefix is for prefill; the first block holds the prompt
  // tail followed by masks.
  void init_first_block() {
    tokens = prompt;
    if (canvas) {
      block_start = prompt_len();
      const int32_t g = (params.max_tokens + block_len() - 1) / block_len() * block_len();
      tokens.resize(static_cast<size_t>(prompt_len() + g), mask_id);
    } else {
      block_start = prompt_block ? prompt_len() : prompt_len() / block_len() * block_len();
      tokens.resize(static_cast<size_t>(block_end()), mask_id);
    }
    reset_mask_flags();
    step = 0;
    num_cached = 0;
  }
  // Opens the next block (all masks) after the current one is final.
  void open_next_block() {
    block_start = block_end();
    if (!canvas) tokens.resize(static_cast<size_t>(block_end()), mask_id);
    reset_mask_flags();
    step = 0;
  }
  // Restores the current block to its initial content (prompt tail, masks) and forgets the KV:
  // used when the sequence is preempted; it later recomputes and re-decodes the block, which,
  // with randomness keyed by (seed, step, position), yields the same tokens.
  void reset_for_recompute() {
    for (int32_t p = block_start; p < block_end(); ++p)
      tokens[p] = p < prompt_len() ? prompt[p] : mask_id;
    reset_mask_flags();
    step = 0;
    num_cached = 0;
    denoise_forwards = 0;
  }
  bool is_masked(int32_t pos) const { return masked[pos - block_start] != 0; }
  void unmask(int32_t pos, int32_t token, const TokenLogprob& how) {
    tokens[pos] = token;
    masked[pos - block_start] = 0;
    if (params.logprobs) decided[pos - block_start] = how;
  }
  bool block_has_mask() const {
    for (uint8_t m : masked)
      if (m) return true;
    return false;
  }

 private:
  void reset_mask_flags() {
    masked.assign(static_cast<size_t>(block_len()), 0);
    if (params.logprobs) decided.assign(static_cast<size_t>(block_len()), TokenLogprob{});
    for (int32_t p = std::max(block_start, prompt_len()); p < block_end(); ++p) masked[p - block_start] = 1;
  }
};

}  // namespace blockinfer
