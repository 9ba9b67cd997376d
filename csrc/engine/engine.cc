#include "blockinfer/engine.h"

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <random>

#include "core/env_switch.h"
#include "core/pow2.h"
#include "core/profiler.h"
#include "engine/dream.h"
#include "engine/kv_page_allocator.h"
#include "engine/logit_passes.h"
#include "engine/remasking.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"
#include "models/model.h"
#include "models/model_config.h"
#include "ops/activation.h"
#include "ops/sampling.h"
#include "runtime/executor.h"

namespace blockinfer {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAborted: return "abort";
  }
  return "";
}

namespace {

// Fewest rows a step samples with the fused LM head and greedy sampling (below it, cuBLASLt's LM
// head and the sampling pass).
constexpr int64_t kFusedLmHeadMinRows = 16;

Device resolve_device(const std::string& name) {
  if (name == "auto") return cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();
  if (name == "cpu") return Device::cpu();
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    int index = 0;
    if (name.size() > 5) {
      const std::string digits = name.substr(5);
      BI_CHECK_ARG(!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos,
                   "device '", name, "' is not one of auto, cpu, cuda, cuda:N");
      index = std::stoi(digits);
    }
    if (!built_with_cuda())
      throw NotImplementedYet(str_cat("device '", name, "': this build has no CUDA backend (use 'cpu')"));
    BI_CHECK_ARG(index < cuda_device_count(), "device '", name, "': ", cuda_device_count(),
                 " GPU(s) visible");
    return Device::cuda(index);
  }
  throw InvalidArgument(str_cat("device '", name, "' is not one of auto, cpu, cuda, cuda:N"));
}

// The decode modes that lay out a whole canvas (prompt + masks) and attend bidirectionally.
bool is_canvas(const std::string& mode) {
  return mode == "canvas" || mode == "prefix_cache" || mode == "dual_cache";
}

std::string resolve_decode_mode(const std::string& mode, const ModelConfig& c) {
  if (c.block_causal) {
    BI_CHECK_ARG(mode.empty(), "decode_mode '", mode, "' applies to the bidirectional models (llada, Dream); '",
                 c.model_type, "' is block-causal");
    return "block_causal";
  }
  if (mode.empty()) return "dual_cache";  // SEMANTICS §5: Fast-dLLM's dual cache by default
  if (mode == "canvas" || mode == "prefix_cache" || mode == "dual_cache" || mode == "block_causal") return mode;
  throw InvalidArgument(str_cat("decode_mode '", mode,
                                "' is not one of canvas, prefix_cache, dual_cache, block_causal"));
}

DType resolve_dtype(const std::string& name, Device device, const ModelConfig& c) {
  BI_CHECK_ARG(name == "auto" || name == "float32" || name == "bfloat16" || name == "float16",
               "dtype '", name, "' is not one of auto, float32, bfloat16, float16");
  if (device.is_cpu()) {
    BI_CHECK_ARG(name == "auto" || name == "float32", "dtype '", name,
                 "': the CPU backend computes in float32 (use 'auto' or 'float32')");
    return DType::kFloat32;
  }
  if (name != "auto") return parse_float_dtype(name);
  // A GPU serves the checkpoint's own dtype; float32 checkpoints run in the exact float32 mode.
  if (c.torch_dtype == "float32" || c.torch_dtype == "float16") return parse_float_dtype(c.torch_dtype);
  return DType::kBFloat16;
}

// The score each strategy ranks positions by (SEMANTICS §3; Dream's algorithms: §6, on rows
// sampled with Dream's rules).
ops::ConfidenceKind confidence_kind(RemaskingStrategy s) {
  switch (s) {
    case RemaskingStrategy::kLowConfidence: return ops::ConfidenceKind::kUntempered;
    case RemaskingStrategy::kRandom: return ops::ConfidenceKind::kRandom;
    case RemaskingStrategy::kTopkMargin: return ops::ConfidenceKind::kMargin;
    case RemaskingStrategy::kEntropy: return ops::ConfidenceKind::kNegEntropy;
    default: return ops::ConfidenceKind::kTempered;
  }
}

}  // namespace

class EngineImpl {
 public:
  explicit EngineImpl(const EngineConfig& cfg);
  ~EngineImpl() { drop_in_flight(); }

  int64_t add_request(const std::vector<int32_t>& prompt, const SamplingParams& params);
  // Checks everything add_request checks and fills `r` (all but the seed).
  void resolve(const std::vector<int32_t>& prompt, const SamplingParams& params, ResolvedParams& r) const;
  std::vector<RequestOutput> step();
  bool abort(int64_t id);
  std::vector<float> compute_logits(const std::vector<int32_t>& tokens, int32_t block_len);
  const Executor& executor() const { return *executor_; }
  int64_t forwards_launched_ahead() const { return launched_ahead_; }
  int64_t logit_rows_discarded() const { return logit_rows_discarded_; }
  int64_t forwards() const { return forwards_; }

  ModelInfo info;
  std::unique_ptr<KVPageAllocator> allocator;
  std::unique_ptr<Scheduler> scheduler;
  std::map<int64_t, std::unique_ptr<Sequence>> seqs;  // unfinished requests

 private:
  // The float32 logits of one pass over the forward's hidden rows: the LM head over the pass's
  // input runs, then classifier-free guidance (un + (cfg + 1)(cond - un)) where the pass has any.
  // The result is a view of a buffer the next pass overwrites.
  Tensor pass_logits(const Tensor& hidden, const LogitPass& pass);
  // Block decode of a bidirectional model (LLaDA, Dream): the prompt is one bidirectional block.
  bool prompt_block_decode() const { return !model_cfg_.block_causal && info.decode_mode == "block_causal"; }
  // After a denoise step: advance the block, or commit it and decide whether the request ends.
  void after_denoise(Sequence& seq, std::vector<RequestOutput>& out);
  // Reports the final block at `start` (its logprobs in `decided`) into `o`; returns why the request
  // ends there (kStop, kLength) or kNone.
  FinishReason emit_block(Sequence& seq, int32_t start, const std::vector<TokenLogprob>& decided, RequestOutput& o);
  // Ends the request for `reason` unless it is kNone, and appends its output `o` to `out`.
  void report_block(Sequence& seq, FinishReason reason, RequestOutput o, std::vector<RequestOutput>& out);
  // Counts a forward of plan entry `s` for its sequence and marks the KV that is final now: a
  // prefill chunk's, or all before the block (none of a canvas). Returns whether it denoised.
  static bool count_forward(Sequence& seq, const ScheduledSeq& s);
  // Erases the requests that `out` reports finished (only a finished request leaves the map, so
  // the step's outputs name them all, without a walk over the unfinished ones).
  void erase_finished(const std::vector<RequestOutput>& out);
  void check_plan(const std::vector<ScheduledSeq>& plan) const;
  // The remasking segment of `seq`'s denoise step, its rows starting at `row_begin` (the caller
  // sets `rows`), and the sampling parameters of its row at masked position `p`.
  static ops::RemaskSegment remask_segment(const Sequence& seq, int32_t row_begin);
  static ops::SampleRowParams sample_row(const Sequence& seq, int32_t p);
  // The LM head over `hidden`'s rows in passes (chunk_rows / chunk_cfg per chunk, as
  // plan_logit_passes takes them), sampling with `rows`, then the selection over `segments`.
  void sample_and_select(const Tensor& hidden, const std::vector<int64_t>& chunk_rows,
                         const std::vector<float>& chunk_cfg, const std::vector<ops::SampleRowParams>& rows,
                         const std::vector<ops::RemaskSegment>& segments, ops::SampleOutputs& out);
  // One synchronous step over `plan`: forward, sampling, the download, the decisions applied.
  void run_step(const std::vector<ScheduledSeq>& plan, std::vector<RequestOutput>& out);

  // Asynchronous scheduling (EngineConfig::async_scheduling): a step's forward is launched before
  // the host has applied the previous step's decisions, which reach it on the device (the chosen
  // tokens written into its token ids, and the rows they leave masked picked for its last layer).
  // Each call of step() (1) waits for the decisions of the step sampled last and applies them, (2)
  // samples the forward launched last: now that the masked positions are known, it finds their
  // hidden rows among those the forward computed, runs the LM head, sampling and selection and
  // queues the decisions' download, (3) when the structure after that step is certain (block
  // strategies that unmask a fixed count per step), moves every sequence past it (a request that
  // ends there by length leaves the scheduler) and launches the next forward, and (4) returns what
  // (1) applied. A stop token found in (1) ends a request whose next forward is already queued:
  // its rows are dropped.
  struct AsyncForward {
    std::vector<int64_t> ids;  // the plan's requests, by id (one may end or be aborted meanwhile)
    std::vector<ScheduledSeq> plan;
    std::vector<std::vector<int32_t>> candidates;  // per chunk: the positions masked as far as the host knew
    // Whether the forward's last layer ran on the candidates the decisions in flight leave masked
    // (the device picked them), or on every candidate; and per chunk, how many rows it ran on.
    bool compacted = false;
    std::vector<int32_t> rows;
    Tensor hidden;  // those rows, chunk after chunk
  };
  struct AsyncSampled {
    std::vector<int64_t> ids;
    std::vector<ScheduledSeq> plan;
    std::vector<int32_t> segment_of;  // per plan entry: its segment, or -1
    std::vector<ops::RemaskSegment> segments;
    std::vector<ops::SampleRowParams> rows;
    ops::SampleOutputs device_out;  // the decisions on the model's device
    ops::SampleOutputs host_out;    // and their host copy (valid once `ready` has passed)
    void* ready = nullptr;          // an event after the copy (GPU)
    // Per plan entry, once (3) has moved the request past this step: whether it did, whether the
    // step completes the block, whether the request ends there (by max_tokens or max_model_len:
    // it left the scheduler, and its block stays as it is), and the completed block's start and
    // logprobs (the request is in its next block by the time the tokens arrive).
    std::vector<uint8_t> advanced, completes, ends;
    std::vector<int32_t> prev_start;
    std::vector<std::vector<TokenLogprob>> prev_decided;
  };
  std::vector<RequestOutput> step_async();
  static bool async_capable(const std::vector<ScheduledSeq>& plan);  // every request of the plan
  AsyncForward launch_async(const std::vector<ScheduledSeq>& plan, const AsyncSampled* prev);
  AsyncSampled sample_async(const AsyncForward& f);
  void apply_async(AsyncSampled& s, std::vector<RequestOutput>& out);
  bool can_look_ahead(const AsyncSampled& s) const;
  // Whether a request whose block completes ends there by max_tokens or max_model_len.
  static bool ends_with_block(const Sequence& seq);
  void advance_structure(AsyncSampled& s);
  Sequence* live(int64_t id) const;
  // Forgets the steps in flight (no request is left that they could serve).
  void drop_in_flight();
  int64_t launched_ahead_ = 0;
  int64_t logit_rows_discarded_ = 0;  // rows a forward computed for positions no longer masked
  int64_t forwards_ = 0;  // forwards run for requests (not the warm-up's or compute_logits')
  std::optional<AsyncForward> launched_;
  std::optional<AsyncSampled> sampled_;
  std::shared_ptr<void> pinned_;  // the decisions' host buffer (GPU), grown as needed
  size_t pinned_bytes_ = 0;
  void finish(Sequence& seq, FinishReason reason);
  // GPU, before any request: the GEMMs at the row counts steps may bring, then one eager forward
  // at the largest token budget (vLLM's profile run does the same), so that the first batch does
  // not pay for first uses: cuBLASLt's plans and kernels, kernel modules loaded on first launch,
  // the caching allocator's blocks.
  void warm_up();

  EngineConfig cfg_;
  ModelConfig model_cfg_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Executor> executor_;
  int64_t max_num_batched_tokens_ = 0;
  bool shift_logits_ = false;
  int64_t next_id_ = 0;
  std::mt19937_64 seed_rng_;
  // A pass's logits and its guided rows, reused by every step: they grow to a power of two of rows
  // (at most lm_head_chunk_rows) and never shrink, so steps sampling varying numbers of rows do
  // not allocate (the caching allocator keeps blocks by exact size).
  Tensor pass_buffer_, guided_buffer_;
  // The sampling pass's float arithmetic (sums and Gumbel noise) for 16-bit models; the float32
  // mode keeps the CPU's double.
  ops::SampleMath sample_math_ = ops::SampleMath::kExact;
  // The LM head's weight where greedy rows take the fused LM head and sampling (ops::lm_head_greedy:
  // a 16-bit model on a GPU the CUTLASS kernel serves; BLOCKINFER_FUSED_LM_HEAD=0 turns it off),
  // else null.
  const Tensor* fused_lm_head_ = nullptr;
};

EngineImpl::EngineImpl(const EngineConfig& cfg) : cfg_(cfg), seed_rng_(cfg.seed) {
  model_cfg_ = load_model_config(cfg.model_dir);
  LoadOptions lo;
  lo.load_format = cfg.load_format;
  lo.device = resolve_device(cfg.device);
  lo.dtype = resolve_dtype(cfg.dtype, lo.device, model_cfg_);
  lo.dummy_seed = cfg.dummy_seed;
  BI_CHECK_ARG(cfg.gpu_memory_utilization > 0 && cfg.gpu_memory_utilization <= 1,
               "gpu_memory_utilization must be in (0, 1], got ", cfg.gpu_memory_utilization);
  model_ = load_model(cfg.model_dir, model_cfg_, lo);
  if (lo.dtype != DType::kFloat32) sample_math_ = ops::SampleMath::kFast;
  if (const Tensor* w = model_->lm_head_weight();
      w != nullptr && lo.device.is_cuda() && env_switch("BLOCKINFER_FUSED_LM_HEAD") != 0 &&
      ops::lm_head_greedy_serves(*w))
    fused_lm_head_ = w;

  info.model_type = model_cfg_.model_type;
  info.device = lo.device.str();
  info.dtype = dtype_name(lo.dtype);
  info.decode_mode = resolve_decode_mode(cfg.decode_mode, model_cfg_);
  shift_logits_ = model_cfg_.shift_logits;
  info.vocab_size = model_cfg_.vocab_size;
  info.mask_token_id = cfg.mask_token_id ? *cfg.mask_token_id
                       : model_cfg_.mask_token_id ? *model_cfg_.mask_token_id
                                                  : default_mask_token_id(model_cfg_.model_type);
  BI_CHECK_ARG(info.mask_token_id >= 0 && info.mask_token_id < model_cfg_.vocab_size, "mask_token_id ",
               info.mask_token_id, " is outside the vocabulary of ", model_cfg_.vocab_size,
               " (pass mask_token_id= or set it in config.json)");
  info.block_length = cfg.block_length ? *cfg.block_length
                      : model_cfg_.block_size ? *model_cfg_.block_size
                                              : default_block_length(model_cfg_.model_type);
  info.max_model_len = cfg.max_model_len ? *cfg.max_model_len : model_cfg_.max_position_embeddings;
  BI_CHECK_ARG(info.max_model_len >= 1 && info.max_model_len <= INT32_MAX, "max_model_len must be >= 1, got ",
               info.max_model_len);
  BI_CHECK_ARG(info.block_length >= 1 && info.block_length <= info.max_model_len, "block_length ",
               info.block_length, " must be in [1, max_model_len=", info.max_model_len, "]");
  info.eos_token_ids = model_cfg_.eos_token_ids;
  for (int32_t id : cfg.extra_eos_token_ids) {
    BI_CHECK_ARG(id >= 0 && id < model_cfg_.vocab_size, "EOS id ", id, " outside the vocabulary");
    if (std::find(info.eos_token_ids.begin(), info.eos_token_ids.end(), id) == info.eos_token_ids.end())
      info.eos_token_ids.push_back(id);
  }
  BI_CHECK_ARG(cfg.max_num_seqs >= 1, "max_num_seqs must be >= 1, got ", cfg.max_num_seqs);
  max_num_batched_tokens_ =
      cfg.max_num_batched_tokens ? *cfg.max_num_batched_tokens : std::max<int64_t>(8192, info.max_model_len);
  BI_CHECK_ARG(max_num_batched_tokens_ >= 1, "max_num_batched_tokens must be >= 1");
  BI_CHECK_ARG(cfg.lm_head_chunk_rows >= 2, "lm_head_chunk_rows must be >= 2, got ", cfg.lm_head_chunk_rows);

  KVCacheConfig kv;
  kv.page_size = cfg.kv_page_size;
  kv.num_pages = cfg.num_kv_pages ? *cfg.num_kv_pages : 0;
  BI_CHECK_ARG(!cfg.num_kv_pages || *cfg.num_kv_pages >= 1, "num_kv_pages must be >= 1");
  kv.memory_bytes = cfg.kv_cache_memory_bytes;
  kv.gpu_memory_utilization = cfg.gpu_memory_utilization;
  BI_CHECK_ARG(cfg.max_cuda_graphs >= 1, "max_cuda_graphs must be >= 1, got ", cfg.max_cuda_graphs);
  GraphConfig graphs;
  graphs.enforce_eager = cfg.enforce_eager;
  graphs.max_graphs = cfg.max_cuda_graphs;
  executor_ = std::make_unique<Executor>(*model_, kv, graphs);
  info.num_kv_pages = executor_->num_pages();
  info.kv_page_size = executor_->page_size();
  allocator = std::make_unique<KVPageAllocator>(executor_->num_pages());
  scheduler = std::make_unique<Scheduler>(
      *allocator, SchedulerConfig{cfg.max_num_seqs, max_num_batched_tokens_, executor_->page_size(),
                                  cfg.prefill_first});
  if (lo.device.is_cuda() && env_switch("BLOCKINFER_WARMUP") != 0) warm_up();
}

void EngineImpl::warm_up() {
  // First the GEMMs alone at the row counts a step may bring: every count to 8, multiples of 16 to
  // 1,024, of 128 beyond. cuBLASLt loads a kernel the first time it runs one, and that first call
  // held the host for the GPU's queue: eager steps at new row counts (a batch's first decode
  // shapes, its ramp-down) took 5-30 ms longer (BENCHMARKS.md, twenty-eighth session). The plans
  // the heuristic picks for these counts are the ones a step would pick. Their scratch tensors
  // come in many sizes met once, so the allocator's cache gives them back to the driver after.
  // Then one forward: sequences of up to max_model_len prompt tokens (id 0) fill
  // max_num_batched_tokens rows, or the KV cache if it is smaller. No row asks for logits, so the
  // forward runs eagerly (a graph needs logit rows) and leaves the executor's graph bookkeeping
  // untouched; the KV it writes is in pages freed at once, which a later sequence overwrites before
  // it reads them. Its temporaries stay cached for the first prefill-sized forward.
  const int device = model_->device().index;
  const int64_t page = executor_->page_size();
  const int64_t tokens = std::min<int64_t>(max_num_batched_tokens_, allocator->num_pages_free() * page);
  const int64_t per_seq = std::min<int64_t>(info.max_model_len, tokens);
  std::vector<std::vector<int32_t>> pages;  // the forward's sequences' pages, returned at the end
  auto release = [&] {
    for (auto& p : pages) allocator->release(p);
  };
  try {
    std::vector<int64_t> rows;
    for (int64_t m = 1; m <= max_num_batched_tokens_; m += m < 8 ? 1 : m < 1024 ? 16 - m % 16 : 128 - m % 128)
      rows.push_back(m);
    model_->warm_up_gemms(rows, cfg_.lm_head_chunk_rows);
    cuda::synchronize();
    cuda::release_cached_blocks(device);
    if (per_seq >= 1) {
      const std::vector<int32_t> ids(static_cast<size_t>(per_seq), 0);
      pages.resize(static_cast<size_t>((tokens + per_seq - 1) / per_seq));
      std::vector<SeqChunk> chunks;
      for (int64_t left = tokens, i = 0; left > 0; left -= per_seq, ++i) {
        SeqChunk ch;
        ch.tokens = ids.data();
        ch.end = static_cast<int32_t>(std::min(left, per_seq));
        ch.block_len = is_canvas(info.decode_mode) ? 0 : static_cast<int32_t>(info.block_length);
        allocator->allocate(scheduler->pages_for(ch.end), pages[static_cast<size_t>(i)]);
        ch.pages = &pages[static_cast<size_t>(i)];
        chunks.push_back(std::move(ch));
      }
      executor_->run(chunks);
      cuda::synchronize();
    }
  } catch (const OutOfMemory&) {
    // The budget's temporaries do not fit beside the KV cache: a batch that large would fail the
    // same way later, but a workload of smaller batches runs, so startup goes on unwarmed.
    cuda::release_cached_blocks(device);
  } catch (...) {
    release();
    throw;
  }
  release();
}

void EngineImpl::resolve(const std::vector<int32_t>& prompt, const SamplingParams& params,
                         ResolvedParams& r) const {
  params.validate();
  BI_CHECK_ARG(!prompt.empty(), "prompt is empty");
  for (size_t i = 0; i < prompt.size(); ++i) {
    BI_CHECK_ARG(prompt[i] >= 0 && prompt[i] < info.vocab_size, "prompt token id ", prompt[i],
                 " at index ", i, " is outside the vocabulary [0, ", info.vocab_size, ")");
    BI_CHECK_ARG(prompt[i] != info.mask_token_id, "prompt contains the mask token id ",
                 info.mask_token_id, " at index ", i);
  }
  r.strategy = parse_remasking_strategy(params.remasking_strategy);
  r.dream = !is_block_strategy(r.strategy) && info.model_type == "Dream";
  if (!is_block_strategy(r.strategy) && !r.dream) {
    std::string valid;
    for (const auto& name : remasking_strategy_names())
      if (is_block_strategy(parse_remasking_strategy(name))) valid += (valid.empty() ? "" : ", ") + name;
    throw InvalidArgument(str_cat("remasking_strategy '", params.remasking_strategy,
                                  "' is one of Dream's algorithms and does not apply to model_type '",
                                  info.model_type, "'; valid: ", valid));
  }
  r.temperature = params.temperature;
  r.topk = params.topk;
  r.topp = params.topp;
  r.block_len = params.block_length ? *params.block_length : info.block_length;
  // Dream's diffusion_generate (canvas mode) is one block of max_tokens, no rounding; with a cache
  // or in block decode its algorithms run per block of block_length (Fast-dLLM's Dream loop).
  if (r.dream && info.decode_mode == "canvas") r.block_len = params.max_tokens;
  r.steps = params.denoising_steps ? *params.denoising_steps : r.block_len;
  r.alg_temp = params.alg_temp;
  r.cfg_scale = params.cfg_scale;
  if (r.cfg_scale > 0.f)
    BI_CHECK_ARG(info.model_type == "llada" && info.decode_mode == "canvas", "cfg_scale > 0 applies to LLaDA in ",
                 "decode_mode 'canvas' (model_type '", info.model_type, "', decode_mode '", info.decode_mode,
                 "'): construct the LLM with decode_mode='canvas'");
  if (r.dream) r.dream_timesteps = dream::timesteps(r.steps);
  r.dynamic_threshold = params.dynamic_threshold;
  r.eb_threshold = params.eb_threshold;
  r.factor = params.factor;
  r.logprobs = params.logprobs;
  r.max_tokens = params.max_tokens;
  BI_CHECK_ARG(r.block_len <= info.max_model_len, "block_length ", r.block_len,
               " is larger than max_model_len ", info.max_model_len);
  BI_CHECK_ARG(r.block_len <= max_num_batched_tokens_, "block_length ", r.block_len,
               " is larger than max_num_batched_tokens ", max_num_batched_tokens_);
  r.stop_token_ids.clear();
  for (int32_t id : params.stop_token_ids) {
    BI_CHECK_ARG(id < info.vocab_size, "stop_token_ids: ", id, " is outside the vocabulary [0, ",
                 info.vocab_size, ")");
    r.stop_token_ids.push_back(id);
  }
  if (!params.ignore_eos)
    r.stop_token_ids.insert(r.stop_token_ids.end(), info.eos_token_ids.begin(), info.eos_token_ids.end());

  const int64_t p = static_cast<int64_t>(prompt.size()), b = r.block_len;
  if (is_canvas(info.decode_mode)) {
    const int64_t canvas_end = p + (r.max_tokens + b - 1) / b * b;
    BI_CHECK_ARG(canvas_end <= info.max_model_len, "prompt of ", p, " tokens plus max_tokens ", r.max_tokens,
                 " rounded up to block_length ", b, " (", canvas_end, " positions) exceeds max_model_len ",
                 info.max_model_len);
    const int64_t copies = r.cfg_scale > 0.f ? 2 : 1;  // guidance forwards an unconditional copy too
    BI_CHECK_ARG(canvas_end * copies <= max_num_batched_tokens_, "the canvas of ", canvas_end, " positions",
                 copies > 1 ? " (twice, with cfg_scale)" : "", " exceeds max_num_batched_tokens ",
                 max_num_batched_tokens_, " (a canvas is forwarded whole every step)");
    BI_CHECK_ARG(scheduler->pages_for(canvas_end) * copies <= allocator->num_pages_total(), "request needs ",
                 scheduler->pages_for(canvas_end) * copies, " KV pages but the cache has only ",
                 allocator->num_pages_total());
    return;
  }
  if (prompt_block_decode()) {
    const int64_t end = p + (r.max_tokens + b - 1) / b * b;
    BI_CHECK_ARG(p + b <= info.max_model_len, "prompt of ", p, " tokens leaves no room for a block of ", b,
                 " within max_model_len ", info.max_model_len);
    BI_CHECK_ARG(p + b <= max_num_batched_tokens_, "prompt of ", p, " tokens plus a block of ", b,
                 " exceeds max_num_batched_tokens ", max_num_batched_tokens_,
                 " (a bidirectional prompt is prefilled in one forward)");
    const int64_t extent = std::min<int64_t>(end, p + (info.max_model_len - p) / b * b);
    BI_CHECK_ARG(scheduler->pages_for(extent) <= allocator->num_pages_total(), "request needs up to ",
                 scheduler->pages_for(extent), " KV pages but the cache has only ", allocator->num_pages_total());
    return;
  }
  const int64_t first_block_end = p / b * b + b;
  BI_CHECK_ARG(first_block_end <= info.max_model_len, "prompt of ", p,
               " tokens is too long for max_model_len ", info.max_model_len, " (its first block of ",
               b, " ends at position ", first_block_end, ")");
  // The furthest position this request can reach, for the "can it ever fit" check.
  const int64_t wanted_end = p / b * b + (p % b + r.max_tokens + b - 1) / b * b;
  const int64_t extent = std::min<int64_t>(wanted_end, info.max_model_len / b * b);
  const int64_t pages = scheduler->pages_for(extent);
  BI_CHECK_ARG(pages <= allocator->num_pages_total(), "request needs up to ", pages,
               " KV pages (", extent, " positions) but the cache has only ",
               allocator->num_pages_total(), "; lower max_tokens or raise the KV cache size");
}

int64_t EngineImpl::add_request(const std::vector<int32_t>& prompt, const SamplingParams& params) {
  auto seq = std::make_unique<Sequence>();
  resolve(prompt, params, seq->params);
  // Drawn only once the request is valid, so a rejected request never shifts later seeds.
  seq->params.seed = params.seed ? *params.seed : seed_rng_();
  seq->id = next_id_++;
  seq->prompt = prompt;
  seq->mask_id = static_cast<int32_t>(info.mask_token_id);
  seq->max_model_len = static_cast<int32_t>(info.max_model_len);
  seq->canvas = is_canvas(info.decode_mode);
  seq->prompt_block = prompt_block_decode();
  seq->shift_logits = shift_logits_;
  seq->cache_mode = info.decode_mode == "prefix_cache" ? Sequence::CacheMode::kPrefix
                    : info.decode_mode == "dual_cache" ? Sequence::CacheMode::kDual
                                                       : Sequence::CacheMode::kNone;
  seq->init_first_block();
  scheduler->add(seq.get());
  const int64_t id = seq->id;
  seqs.emplace(id, std::move(seq));
  return id;
}

std::vector<RequestOutput> EngineImpl::step() {
  OpTimer step_timer("engine step", model_->device(), /*coarse=*/true);
  if (cfg_.async_scheduling) return step_async();
  std::vector<RequestOutput> out;
  std::vector<ScheduledSeq> plan = scheduler->schedule();
  check_plan(plan);
  if (!plan.empty()) run_step(plan, out);
  return out;
}

void EngineImpl::check_plan(const std::vector<ScheduledSeq>& plan) const {
  // Every request is checked to fit the cache and the per-forward budget when it is added, so an
  // empty plan with work left is a bug: fail loudly rather than let callers spin.
  BI_CHECK(!plan.empty() || seqs.empty(), "the scheduler planned nothing with ", seqs.size(),
           " unfinished request(s)");
}

ops::RemaskSegment EngineImpl::remask_segment(const Sequence& seq, int32_t row_begin) {
  // Fast-dLLM's Dream loop samples only the block's first position at the block's first step;
  // Dream's algorithms choose on the host except there.
  const ResolvedParams& sp = seq.params;
  const bool first_only = seq.first_position_step();
  ops::RemaskSegment g;
  g.row_begin = row_begin;
  g.strategy = sp.strategy;
  g.n_t = num_to_unmask(seq.block_len(), sp.steps, seq.step);
  g.last_step = seq.step == sp.steps - 1;
  g.first_only = first_only;
  g.skip = sp.dream && !first_only;
  g.dynamic_threshold = sp.dynamic_threshold;
  g.eb_threshold = sp.eb_threshold;
  g.factor = sp.factor;
  return g;
}

ops::SampleRowParams EngineImpl::sample_row(const Sequence& seq, int32_t p) {
  // Rows of Dream's algorithms take Dream's filters and confidences (SEMANTICS §6).
  const ResolvedParams& sp = seq.params;
  return {sp.temperature, sp.topk, sp.topp, sp.seed, static_cast<uint32_t>(seq.step), static_cast<uint32_t>(p),
          confidence_kind(sp.strategy), static_cast<uint8_t>(sp.dream)};
}

void EngineImpl::sample_and_select(const Tensor& hidden, const std::vector<int64_t>& chunk_rows,
                                   const std::vector<float>& chunk_cfg, const std::vector<ops::SampleRowParams>& rows,
                                   const std::vector<ops::RemaskSegment>& segments, ops::SampleOutputs& out) {
  // Greedy rows without guidance take the LM head and sampling in one, at enough rows for its
  // 64-row tiles to pay (BENCHMARKS.md, "Thirty-first session"): the hidden rows are then the
  // output rows, in order.
  const bool fused = fused_lm_head_ != nullptr && static_cast<int64_t>(rows.size()) >= kFusedLmHeadMinRows &&
                     hidden.size(0) == static_cast<int64_t>(rows.size()) &&
                     std::all_of(chunk_cfg.begin(), chunk_cfg.end(), [](float c) { return c == 0.f; }) &&
                     std::all_of(rows.begin(), rows.end(), ops::greedy_row_fuses) &&
                     ops::lm_head_greedy_serves(hidden, *fused_lm_head_);
  if (fused) {
    ops::lm_head_greedy(hidden, *fused_lm_head_, out);
  } else {
    for (const LogitPass& pass : plan_logit_passes(chunk_rows, chunk_cfg, cfg_.lm_head_chunk_rows)) {
      ops::SampleOutputs part = out.rows(pass.out_begin, pass.out_rows);
      ops::sample_rows(pass_logits(hidden, pass),
                       {rows.begin() + pass.out_begin, rows.begin() + pass.out_begin + pass.out_rows}, part,
                       sample_math_);
    }
  }
  ops::select_unmask_rows(segments, out);
}

void EngineImpl::run_step(const std::vector<ScheduledSeq>& plan, std::vector<RequestOutput>& out) {
  // The host's work between a step's download and the next launch leaves the GPU idle (0.1-0.36
  // ms of a batch-128 step on an H100's hosts, BENCHMARKS.md), so the per-sequence loops below
  // reserve their vectors instead of growing them.
  std::vector<SeqChunk> chunks;
  chunks.reserve(plan.size());
  // Guided (cfg_scale) sequences add an unconditional chunk right after their own.
  std::map<size_t, std::vector<int32_t>> uncond_tokens, uncond_pages;
  std::vector<float> chunk_cfg;  // per chunk: its cfg_scale if guided (its copy follows), else 0
  chunk_cfg.reserve(plan.size());
  // One row per masked position whose logits this forward computes; its `position` is the masked
  // position (the logit row itself is one position earlier for Dream).
  std::vector<ops::SampleRowParams> row_params;
  std::vector<ops::RemaskSegment> segments;  // one per denoised sequence, over its rows
  segments.reserve(plan.size());
  {
    size_t rows = 0;
    for (const ScheduledSeq& s : plan)
      if (s.denoise) rows += static_cast<size_t>(s.seq->block_len());
    row_params.reserve(rows);
  }
  for (size_t pi = 0; pi < plan.size(); ++pi) {
    const ScheduledSeq& s = plan[pi];
    Sequence& seq = *s.seq;
    SeqChunk ch;
    ch.tokens = seq.tokens.data() + s.start;
    ch.start = s.start;
    ch.end = s.end;
    ch.block_len = seq.canvas ? 0 : seq.block_len();  // 0: bidirectional over the canvas
    ch.kv_end = s.kv_end;
    ch.block_offset = seq.prompt_block ? seq.prompt_len() : 0;
    ch.pages = &seq.pages;
    if (s.denoise) {
      // Fast-dLLM's Dream loop samples only the block's first position at the block's first step.
      const bool first_only = seq.first_position_step();
      // The sequence's rows, for the remasking selection that runs after sampling, on the logits'
      // device (Dream's algorithms choose on the host, below, except at that first position).
      ops::RemaskSegment g = remask_segment(seq, static_cast<int32_t>(row_params.size()));
      BI_CHECK(!first_only || seq.is_masked(seq.block_start), "a cached Dream block starts unmasked");
      const int32_t sample_end = first_only ? seq.block_start + 1 : seq.block_end();
      ch.logit_positions.reserve(static_cast<size_t>(sample_end - seq.block_start));
      for (int32_t p = seq.block_start; p < sample_end; ++p) {
        if (!seq.is_masked(p)) continue;
        // Dream predicts position p from the hidden state at p - 1 (p >= 1: prompts are non-empty).
        ch.logit_positions.push_back(shift_logits_ ? p - 1 : p);
        row_params.push_back(sample_row(seq, p));
      }
      g.rows = static_cast<int32_t>(row_params.size()) - g.row_begin;
      segments.push_back(g);
    }
    const bool guided = seq.params.cfg_scale > 0.f;
    if (guided) {
      // The unconditional copy: the same canvas with the prompt masked, in the second half of
      // the sequence's pages, with the same logit positions.
      const size_t half = seq.pages.size() / 2;
      uncond_tokens[chunks.size()] = seq.tokens;
      std::fill(uncond_tokens[chunks.size()].begin(), uncond_tokens[chunks.size()].begin() + seq.prompt_len(),
                seq.mask_id);
      uncond_pages[chunks.size()].assign(seq.pages.begin() + half, seq.pages.end());
    }
    chunks.push_back(std::move(ch));
    chunk_cfg.push_back(guided ? seq.params.cfg_scale : 0.f);
    if (guided) {
      const size_t i = chunks.size() - 1;
      SeqChunk un = chunks[i];
      un.tokens = uncond_tokens[i].data() + s.start;
      un.pages = &uncond_pages[i];
      chunks.push_back(std::move(un));
      chunk_cfg.push_back(0.f);
    }
  }
  const Tensor hidden = executor_->run(chunks);
  ++forwards_;
  std::vector<int64_t> chunk_rows;
  for (const SeqChunk& ch : chunks) chunk_rows.push_back(static_cast<int64_t>(ch.logit_positions.size()));
  const Device dev = hidden.device();
  ops::SampleOutputs sampled = ops::SampleOutputs::empty(static_cast<int64_t>(row_params.size()), dev);
  {
    OpTimer timer("lm_head + sample + download", dev, /*coarse=*/true);
    sample_and_select(hidden, chunk_rows, chunk_cfg, row_params, segments, sampled);
    // The step's one device-to-host copy: five numbers per sampled row.
    if (dev.is_cuda()) {
      OpTimer timer("download_samples", dev);
      sampled = sampled.to(Device::cpu());
    }
  }
  const int32_t* x0 = sampled.x0.data<int32_t>();
  const float* conf = sampled.confidence.data<float>();
  const float* logprob = sampled.logprob.data<float>();
  const float* entropy = sampled.entropy.data<float>();
  const int32_t* chosen_rows = sampled.chosen.data<int32_t>();

  size_t segment = 0;  // the next denoised sequence's
  std::vector<int32_t> chosen;  // rows of the sequence at hand to unmask, relative to its first
  for (size_t i = 0; i < plan.size(); ++i) {
    const ScheduledSeq& s = plan[i];
    Sequence& seq = *s.seq;
    if (!count_forward(seq, s)) continue;
    const ResolvedParams& sp = seq.params;
    const ops::RemaskSegment& g = segments[segment++];
    const int64_t row = g.row_begin;
    auto position = [&](int32_t k) { return static_cast<int32_t>(row_params[static_cast<size_t>(row + k)].position); };
    chosen.clear();
    if (g.skip) {  // Dream's algorithms
      std::vector<int32_t> positions(static_cast<size_t>(g.rows));
      for (int32_t k = 0; k < g.rows; ++k) positions[static_cast<size_t>(k)] = position(k);
      const std::vector<float> c(conf + row, conf + row + g.rows);
      chosen = dream::select(sp.strategy, positions, c, sp.dream_timesteps, seq.step, sp.alg_temp, sp.seed);
    } else {
      for (int32_t k = 0; k < g.rows; ++k)
        if (chosen_rows[row + k]) chosen.push_back(k);
    }
    for (int32_t k : chosen)
      seq.unmask(position(k), x0[row + k], TokenLogprob{seq.step, logprob[row + k], entropy[row + k]});
    ++seq.step;
    after_denoise(seq, out);
  }
  erase_finished(out);
}

bool EngineImpl::count_forward(Sequence& seq, const ScheduledSeq& s) {
  ++seq.num_forwards;
  if (!s.denoise) {
    seq.num_cached = s.end;  // a prefill chunk: its KV is final
    return false;
  }
  // A canvas is recomputed whole every step; otherwise the KV before the block is final now.
  seq.num_cached = seq.canvas ? 0 : seq.block_start;
  return true;
}

void EngineImpl::erase_finished(const std::vector<RequestOutput>& out) {
  for (const RequestOutput& o : out)
    if (o.finished) seqs.erase(o.request_id);
}

// ---------------------------------------------------------------------------------------------
// Asynchronous scheduling (see EngineImpl::AsyncForward).

bool EngineImpl::async_capable(const std::vector<ScheduledSeq>& plan) {
  // Block-causal decoding of a block strategy, without guidance or Dream's shifted rows.
  return std::all_of(plan.begin(), plan.end(), [](const ScheduledSeq& p) {
    const Sequence& seq = *p.seq;
    return !seq.canvas && !seq.prompt_block && !seq.shift_logits && seq.params.cfg_scale <= 0.f && !seq.params.dream;
  });
}

void EngineImpl::drop_in_flight() {
  launched_.reset();
  if (sampled_ && sampled_->ready) cuda::event_destroy(sampled_->ready);  // released once it passes
  sampled_.reset();
}

Sequence* EngineImpl::live(int64_t id) const {
  auto it = seqs.find(id);
  return it == seqs.end() || it->second->status == SeqStatus::kFinished ? nullptr : it->second.get();
}

std::vector<RequestOutput> EngineImpl::step_async() {
  std::vector<RequestOutput> out;
  if (sampled_) {
    AsyncSampled& s = *sampled_;
    if (s.ready) {
      cuda::event_synchronize(s.ready);
      cuda::event_destroy(s.ready);
      s.ready = nullptr;
    }
    apply_async(s, out);
    sampled_.reset();
  }
  auto erase_ended = [&] {
    erase_finished(out);
    if (seqs.empty()) launched_.reset();  // only rows of ended requests would be left (sampled_ is done)
  };
  if (!launched_) {
    erase_ended();
    std::vector<ScheduledSeq> plan = scheduler->schedule();
    check_plan(plan);
    if (plan.empty()) return out;
    // A plan with a request the asynchronous path does not serve runs as one synchronous step.
    if (!async_capable(plan)) {
      run_step(plan, out);
      return out;
    }
    launched_ = launch_async(plan, nullptr);
  }
  sampled_ = sample_async(*launched_);
  launched_.reset();
  if (can_look_ahead(*sampled_)) {
    advance_structure(*sampled_);
    std::vector<ScheduledSeq> plan = scheduler->schedule();
    if (!plan.empty() && async_capable(plan)) {
      launched_ = launch_async(plan, &*sampled_);
      ++launched_ahead_;
    }
    // Otherwise (a request the asynchronous path does not serve was admitted) nothing is launched:
    // the next call applies the decisions and plans afresh, and the scheduler's pages for this plan
    // stay with their requests, which the fresh plan names again.
  }
  erase_ended();
  return out;
}

EngineImpl::AsyncForward EngineImpl::launch_async(const std::vector<ScheduledSeq>& plan, const AsyncSampled* prev) {
  AsyncForward f;
  f.plan = plan;
  f.ids.reserve(plan.size());
  f.candidates.resize(plan.size());
  std::vector<SeqChunk> chunks(plan.size());
  std::vector<int32_t> q_start(plan.size());
  std::map<int64_t, size_t> chunk_of;  // request id -> plan entry
  int32_t rows = 0;
  for (size_t k = 0; k < plan.size(); ++k) {
    const ScheduledSeq& p = plan[k];
    Sequence& seq = *p.seq;
    f.ids.push_back(seq.id);
    chunk_of[seq.id] = k;
    SeqChunk& ch = chunks[k];
    ch.tokens = seq.tokens.data() + p.start;
    ch.start = p.start;
    ch.end = p.end;
    ch.block_len = seq.block_len();
    ch.kv_end = p.kv_end;
    ch.pages = &seq.pages;
    if (p.denoise) {
      // The positions still masked as far as the host knows: a superset of those masked after the
      // decisions in flight, which fill some of them (the forward's last layer skips those where
      // their count is known, below).
      for (int32_t q = seq.block_start; q < seq.block_end(); ++q)
        if (seq.is_masked(q)) f.candidates[k].push_back(q);
      ch.logit_positions = f.candidates[k];
    }
    f.rows.push_back(static_cast<int32_t>(f.candidates[k].size()));
    q_start[k] = rows;
    rows += p.end - p.start;
  }
  Executor::Patch patch;
  ops::CarriedDecisions carried;
  if (prev != nullptr) {
    // Each row the previous step sampled, if chosen, fills its position's token in this forward.
    // Where it samples a candidate of this forward (the request's block did not end there), the
    // count it fills is known, so the forward's last layer runs only on the candidates it leaves
    // masked, which the device picks; the chunk's logit positions then hold that many
    // placeholders. (A chunk whose candidates the previous step sampled only in part would leave
    // the forward on every candidate; blocks do not move between the two.)
    carried.targets.assign(prev->rows.size(), -1);
    std::vector<std::vector<int32_t>> sources(plan.size());
    std::vector<int32_t> filled(plan.size(), 0);
    bool exact = true;
    for (size_t k = 0; k < plan.size(); ++k) sources[k].assign(f.candidates[k].size(), -1);
    for (size_t j = 0; j < prev->plan.size(); ++j) {
      const int32_t g = prev->segment_of[j];
      auto it = chunk_of.find(prev->ids[j]);
      if (g < 0 || it == chunk_of.end()) continue;
      const size_t k = it->second;
      const ScheduledSeq& p = plan[k];
      const ops::RemaskSegment& seg = prev->segments[static_cast<size_t>(g)];
      const std::vector<int32_t>& cand = f.candidates[k];
      int32_t mapped = 0;
      for (int32_t r = seg.row_begin; r < seg.row_begin + seg.rows; ++r) {
        const int32_t pos = static_cast<int32_t>(prev->rows[static_cast<size_t>(r)].position);
        if (pos >= p.start && pos < p.end)
          carried.targets[static_cast<size_t>(r)] = q_start[k] + (pos - p.start);
        const auto c = std::lower_bound(cand.begin(), cand.end(), pos);
        if (c != cand.end() && *c == pos) {
          sources[k][static_cast<size_t>(c - cand.begin())] = r;
          ++mapped;
        }
      }
      const int32_t count = cpu::known_unmask_count(seg);
      if (mapped == seg.rows && count >= 0) {
        filled[k] = count;
      } else if (mapped != 0) {
        exact = false;
      }
    }
    if (exact && std::any_of(filled.begin(), filled.end(), [](int32_t n) { return n > 0; })) {
      int32_t out = 0;
      for (size_t k = 0; k < plan.size(); ++k) {
        const std::vector<int32_t>& cand = f.candidates[k];
        const int32_t keep = static_cast<int32_t>(cand.size()) - filled[k];
        carried.runs.insert(carried.runs.end(),
                            {static_cast<int32_t>(carried.candidate_rows.size()), static_cast<int32_t>(cand.size()), out, keep});
        for (size_t c = 0; c < cand.size(); ++c) {
          carried.candidate_rows.push_back(q_start[k] + (cand[c] - plan[k].start));
          carried.candidate_sources.push_back(sources[k][c]);
        }
        chunks[k].logit_positions.resize(static_cast<size_t>(keep));
        f.rows[k] = keep;
        out += keep;
      }
      f.compacted = true;
    }
    patch = [&](Tensor& ids, Tensor& logit_rows) {
      ops::carry_decisions(prev->device_out, carried, ids, f.compacted ? &logit_rows : nullptr);
    };
  }
  f.hidden = executor_->run(chunks, patch);
  ++forwards_;
  return f;
}

EngineImpl::AsyncSampled EngineImpl::sample_async(const AsyncForward& f) {
  AsyncSampled s;
  s.ids = f.ids;
  s.plan = f.plan;
  s.segment_of.assign(f.plan.size(), -1);
  std::vector<int32_t> gather;  // rows of f.hidden to sample, in order
  std::vector<int64_t> chunk_rows;
  int32_t hidden_row = 0;
  for (size_t k = 0; k < f.plan.size(); ++k) {
    const std::vector<int32_t>& cand = f.candidates[k];
    Sequence* seq = live(f.ids[k]);
    if (seq != nullptr && f.plan[k].denoise) {
      ops::RemaskSegment g = remask_segment(*seq, static_cast<int32_t>(s.rows.size()));
      // The request's block has not moved since the launch: its structure moved before it, and
      // the decisions applied since then only fill positions (of this block, or of the block
      // before it where that step completed it).
      BI_CHECK(cand.empty() || (cand.front() >= seq->block_start && cand.back() < seq->block_end()),
               "async scheduling: request ", seq->id, "'s block moved while its forward was in flight");
      int32_t kept = 0;  // candidates still masked: a compacted forward's rows are these
      for (size_t c = 0; c < cand.size(); ++c) {
        if (!seq->is_masked(cand[c])) continue;
        gather.push_back(hidden_row + (f.compacted ? kept : static_cast<int32_t>(c)));
        ++kept;
        s.rows.push_back(sample_row(*seq, cand[c]));
      }
      BI_CHECK(!f.compacted || kept == f.rows[k], "async scheduling: request ", seq->id, " has ", kept,
               " masked positions where its forward computed ", f.rows[k]);
      g.rows = static_cast<int32_t>(s.rows.size()) - g.row_begin;
      s.segment_of[k] = static_cast<int32_t>(s.segments.size());
      s.segments.push_back(g);
      chunk_rows.push_back(g.rows);
    }
    hidden_row += f.rows[k];
  }
  const Device dev = model_->device();
  const int64_t n = static_cast<int64_t>(s.rows.size());
  logit_rows_discarded_ += hidden_row - n;
  Tensor hidden = f.hidden;
  if (n != hidden_row) {  // candidates unmasked meanwhile (not compacted), or their request ended
    hidden = Tensor::empty({n, f.hidden.size(1)}, f.hidden.dtype(), dev);
    if (n > 0) {
      Tensor idx = Tensor::empty({n}, DType::kInt32, dev);
      device_copy(idx.raw_data(), dev, gather.data(), Device::cpu(), static_cast<size_t>(n) * sizeof(int32_t));
      ops::gather_rows(f.hidden, idx, hidden);
    }
  }
  s.device_out = ops::SampleOutputs::empty(n, dev);
  sample_and_select(hidden, chunk_rows, std::vector<float>(chunk_rows.size(), 0.f), s.rows, s.segments, s.device_out);
  if (!dev.is_cuda()) {
    s.host_out = s.device_out;
    return s;
  }
  // The decisions' download, queued now and waited for by event in the next call: the next
  // forward is queued behind it, so a copy that waited for the stream would wait for that too.
  const size_t bytes = static_cast<size_t>(s.device_out.packed.nbytes());
  if (pinned_bytes_ < bytes) {
    pinned_.reset();
    const size_t want = std::max<size_t>(bytes, 2 * pinned_bytes_);
    pinned_ = std::shared_ptr<void>(cuda::malloc_host_pinned(want), cuda::free_host_pinned);
    pinned_bytes_ = want;
  }
  Tensor host = Tensor::from_blob(pinned_.get(), {5 * n}, DType::kInt32, Device::cpu(), {}, pinned_);
  if (bytes > 0) cuda::copy_to_host_async(host.raw_data(), s.device_out.packed.raw_data(), bytes);
  s.ready = cuda::event_record();
  s.host_out = ops::SampleOutputs::of(host);
  return s;
}

bool EngineImpl::can_look_ahead(const AsyncSampled& s) const {
  bool any = false;
  for (size_t k = 0; k < s.plan.size(); ++k) {
    const Sequence* seq = live(s.ids[k]);
    if (seq == nullptr) continue;
    if (seq->status != SeqStatus::kRunning) return false;
    any = true;
    if (!s.plan[k].denoise) continue;
    // A step that completes the block leaves the request in its next block (which only a stop
    // token among the coming tokens can overturn), or ends it there by max_tokens or max_model_len
    // (ends_with_block) whatever its tokens: either way the next forward is known.
    if (!cpu::unmasks_known_count(seq->params.strategy) || s.segment_of[k] < 0) return false;
  }
  return any;
}

bool EngineImpl::ends_with_block(const Sequence& seq) {
  const int32_t fresh = seq.block_end() - std::max(seq.block_start, seq.prompt_len());
  return seq.num_emitted + fresh >= seq.params.max_tokens || seq.block_end() + seq.block_len() > seq.max_model_len;
}

void EngineImpl::advance_structure(AsyncSampled& s) {
  s.advanced.assign(s.plan.size(), 0);
  s.completes.assign(s.plan.size(), 0);
  s.ends.assign(s.plan.size(), 0);
  s.prev_start.assign(s.plan.size(), 0);
  s.prev_decided.resize(s.plan.size());
  for (size_t k = 0; k < s.plan.size(); ++k) {
    Sequence* seq = live(s.ids[k]);
    if (seq == nullptr) continue;
    s.advanced[k] = 1;
    if (!count_forward(*seq, s.plan[k])) continue;
    const ops::RemaskSegment& g = s.segments[static_cast<size_t>(s.segment_of[k])];
    ++seq->step;
    if (g.last_step || g.n_t >= g.rows) {
      s.completes[k] = 1;
      s.prev_start[k] = seq->block_start;
      s.prev_decided[k] = seq->decided;
      if (ends_with_block(*seq)) {
        // Its last block: no next forward plans it, and its pages go back now (forwards queued
        // later that reuse them run after those that read them). Its tokens are emitted, and the
        // request finished, when they arrive.
        s.ends[k] = 1;
        scheduler->remove(seq);
      } else {
        seq->open_next_block();
      }
    }
  }
}

void EngineImpl::apply_async(AsyncSampled& s, std::vector<RequestOutput>& out) {
  const int32_t* x0 = s.host_out.x0.data<int32_t>();
  const float* logprob = s.host_out.logprob.data<float>();
  const float* entropy = s.host_out.entropy.data<float>();
  const int32_t* chosen = s.host_out.chosen.data<int32_t>();
  const bool advanced_all = !s.advanced.empty();
  for (size_t k = 0; k < s.plan.size(); ++k) {
    Sequence* seq_ptr = live(s.ids[k]);
    if (seq_ptr == nullptr) continue;
    Sequence& seq = *seq_ptr;
    const ScheduledSeq& p = s.plan[k];
    const bool advanced = advanced_all && s.advanced[k];
    if (!advanced) count_forward(seq, p);  // the synchronous order: decisions, then the structure
    if (!p.denoise) continue;
    const ops::RemaskSegment& g = s.segments[static_cast<size_t>(s.segment_of[k])];
    const uint32_t step = g.rows > 0 ? s.rows[static_cast<size_t>(g.row_begin)].step : 0;
    for (int32_t r = g.row_begin; r < g.row_begin + g.rows; ++r) {
      if (!chosen[r]) continue;
      const int32_t pos = static_cast<int32_t>(s.rows[static_cast<size_t>(r)].position);
      const TokenLogprob how{static_cast<int32_t>(step), logprob[r], entropy[r]};
      if (advanced && s.completes[k]) {
        seq.tokens[static_cast<size_t>(pos)] = x0[r];
        if (seq.params.logprobs) s.prev_decided[k][static_cast<size_t>(pos - s.prev_start[k])] = how;
      } else if (seq.status == SeqStatus::kRunning) {
        // (A request preempted after the structure moved restarts its block: its decisions go.)
        seq.unmask(pos, x0[r], how);
      }
    }
    if (!advanced) {
      ++seq.step;
      after_denoise(seq, out);
      continue;
    }
    if (!s.completes[k]) continue;
    // A stop token can end the request here, and its next forward, already queued, is dropped when
    // sampled; or it ends by length (its last block: nothing was queued for it).
    RequestOutput o;
    FinishReason reason = emit_block(seq, s.prev_start[k], s.prev_decided[k], o);
    if (reason == FinishReason::kNone && s.ends[k]) reason = FinishReason::kLength;  // max_model_len
    report_block(seq, reason, std::move(o), out);
  }
}

void EngineImpl::after_denoise(Sequence& seq, std::vector<RequestOutput>& out) {
  if (seq.block_has_mask()) return;
  RequestOutput o;
  FinishReason reason = emit_block(seq, seq.block_start, seq.decided, o);
  // The next block must fit in max_model_len (a canvas was checked whole when it was added).
  if (reason == FinishReason::kNone && !seq.canvas && seq.block_end() + seq.block_len() > seq.max_model_len)
    reason = FinishReason::kLength;
  // Otherwise open the next block; its first forward also writes the final KV of the block just done.
  if (reason == FinishReason::kNone) seq.open_next_block();
  report_block(seq, reason, std::move(o), out);
}

void EngineImpl::report_block(Sequence& seq, FinishReason reason, RequestOutput o, std::vector<RequestOutput>& out) {
  if (reason != FinishReason::kNone) {
    finish(seq, reason);
    o.finished = true;
    o.finish_reason = reason;
  }
  o.num_forwards = seq.num_forwards;
  out.push_back(std::move(o));
}

FinishReason EngineImpl::emit_block(Sequence& seq, int32_t start, const std::vector<TokenLogprob>& decided,
                                    RequestOutput& o) {
  // The block is final: report its completion tokens, stopping at the first stop token or at
  // max_tokens (SEMANTICS §4).
  o.request_id = seq.id;
  o.new_token_ids.reserve(static_cast<size_t>(seq.block_len()));
  const auto& stops = seq.params.stop_token_ids;
  for (int32_t p = std::max(start, seq.prompt_len()); p < start + seq.block_len(); ++p) {
    if (seq.num_emitted >= seq.params.max_tokens) return FinishReason::kLength;
    const int32_t tok = seq.tokens[p];
    o.new_token_ids.push_back(tok);
    if (seq.params.logprobs) o.new_logprobs.push_back(decided[p - start]);
    ++seq.num_emitted;
    if (std::find(stops.begin(), stops.end(), tok) != stops.end()) return FinishReason::kStop;
  }
  return seq.num_emitted >= seq.params.max_tokens ? FinishReason::kLength : FinishReason::kNone;
}

void EngineImpl::finish(Sequence& seq, FinishReason reason) {
  scheduler->remove(&seq);
  seq.status = SeqStatus::kFinished;
  seq.finish_reason = reason;
}

Tensor EngineImpl::pass_logits(const Tensor& hidden, const LogitPass& pass) {
  // Rows [0, rows) of `buf`, regrown first if it holds fewer.
  auto rows_of = [&](Tensor& buf, int64_t rows) {
    if (!buf.defined() || buf.size(0) < rows) {
      buf = Tensor();  // freed before the larger one is made
      const int64_t capacity = std::max(rows, std::min(pow2_at_least(rows), cfg_.lm_head_chunk_rows));
      buf = Tensor::empty({capacity, info.vocab_size}, DType::kFloat32, hidden.device());
    }
    return buf.slice(0, 0, rows);
  };
  Tensor logits = rows_of(pass_buffer_, pass.stacked_rows());
  int64_t at = 0;
  for (const auto& [begin, end] : pass.inputs) {
    Tensor out = logits.slice(0, at, at + (end - begin));
    model_->lm_head(hidden.slice(0, begin, end), out);
    at += end - begin;
  }
  if (pass.guidance.empty()) return logits;
  Tensor guided = rows_of(guided_buffer_, pass.out_rows);
  ops::combine_guidance(logits, pass.guidance, guided);
  return guided;
}

std::vector<float> EngineImpl::compute_logits(const std::vector<int32_t>& tokens, int32_t block_len) {
  BI_CHECK_ARG(seqs.empty(), "compute_logits needs an idle engine");
  BI_CHECK_ARG(!tokens.empty(), "compute_logits: no tokens");
  BI_CHECK_ARG(block_len >= 0, "compute_logits: block_length must be >= 0 (0 = bidirectional)");
  for (int32_t t : tokens)
    BI_CHECK_ARG(t >= 0 && t < info.vocab_size, "compute_logits: token id ", t, " outside the vocabulary");
  const int32_t n = static_cast<int32_t>(tokens.size());
  std::vector<int32_t> pages;
  allocator->allocate(scheduler->pages_for(n), pages);
  SeqChunk ch;
  ch.tokens = tokens.data();
  ch.start = 0;
  ch.end = n;
  ch.block_len = block_len;
  ch.pages = &pages;
  for (int32_t p = 0; p < n; ++p) ch.logit_positions.push_back(p);
  std::vector<float> out;
  try {
    const Tensor hidden = executor_->run({ch});
    for (const LogitPass& pass : plan_logit_passes({n}, {0.f}, cfg_.lm_head_chunk_rows)) {
      const Tensor logits = pass_logits(hidden, pass).to(Device::cpu());
      out.insert(out.end(), logits.data<float>(), logits.data<float>() + logits.numel());
    }
  } catch (...) {
    allocator->release(pages);
    throw;
  }
  allocator->release(pages);
  return out;
}

bool EngineImpl::abort(int64_t id) {
  auto it = seqs.find(id);
  if (it == seqs.end()) return false;
  finish(*it->second, FinishReason::kAborted);
  seqs.erase(it);
  // A step in flight drops the request's rows when it is sampled or applied; with none left, the
  // steps in flight serve nobody.
  if (seqs.empty()) drop_in_flight();
  return true;
}

Engine::Engine(const EngineConfig& config) : impl_(std::make_unique<EngineImpl>(config)) {}
Engine::~Engine() = default;
const ModelInfo& Engine::model_info() const { return impl_->info; }
int64_t Engine::add_request(const std::vector<int32_t>& prompt, const SamplingParams& params) {
  return impl_->add_request(prompt, params);
}
void Engine::validate_request(const std::vector<int32_t>& prompt, const SamplingParams& params) const {
  ResolvedParams r;
  impl_->resolve(prompt, params, r);
}
std::vector<RequestOutput> Engine::step() { return impl_->step(); }
bool Engine::has_unfinished() const { return !impl_->seqs.empty(); }
bool Engine::abort(int64_t id) { return impl_->abort(id); }
std::vector<float> Engine::compute_logits(const std::vector<int32_t>& tokens, int32_t block_length) {
  return impl_->compute_logits(tokens, block_length);
}
int64_t Engine::num_free_kv_pages() const { return impl_->allocator->num_pages_free(); }
int64_t Engine::num_running() const { return impl_->scheduler->num_running(); }
int64_t Engine::num_waiting() const { return impl_->scheduler->num_waiting(); }
int64_t Engine::num_preemptions() const { return impl_->scheduler->num_preemptions(); }
int64_t Engine::num_cuda_graphs() const { return impl_->executor().num_graphs(); }
int64_t Engine::num_cuda_graph_evictions() const { return impl_->executor().num_graph_evictions(); }
int64_t Engine::num_cuda_graph_replays() const { return impl_->executor().num_graph_replays(); }
int64_t Engine::num_forwards_launched_ahead() const { return impl_->forwards_launched_ahead(); }
int64_t Engine::num_logit_rows_discarded() const { return impl_->logit_rows_discarded(); }
int64_t Engine::num_forwards() const { return impl_->forwards(); }

}  // namespace blockinfer
