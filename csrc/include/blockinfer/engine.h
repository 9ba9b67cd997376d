// The engine: the public C++ entry point of libblockinfer. Embedders add requests of token ids,
// call step() until nothing is unfinished, and read the committed tokens from the outputs.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "blockinfer/sampling_params.h"

namespace blockinfer {

struct EngineConfig {
  std::string model_dir;
  std::string load_format = "auto";        // "auto" | "safetensors" | "dummy"
  std::string device = "auto";             // "auto" (a GPU when one is visible) | "cpu" | "cuda[:N]"
  std::string dtype = "auto";              // "auto": float32 on the CPU, the checkpoint's on a GPU
  double gpu_memory_utilization = 0.9;     // fraction of free GPU memory the KV cache may take
  std::optional<int64_t> mask_token_id;    // none: config.json's, else the family default
  // Bidirectional models only (SEMANTICS §5): "canvas", "prefix_cache", "dual_cache",
  // "block_causal"; empty: the family default ("dual_cache" for LLaDA and Dream).
  std::string decode_mode;
  std::optional<int32_t> block_length;     // none: config.json's block_size, else family default
  std::optional<int64_t> max_model_len;    // none: max_position_embeddings
  int32_t max_num_seqs = 256;
  std::optional<int64_t> max_num_batched_tokens;  // per forward; none: max(8192, max_model_len)
  int32_t kv_page_size = 16;               // tokens per KV page
  std::optional<int64_t> num_kv_pages;     // none: sized from kv_cache_memory_bytes
  int64_t kv_cache_memory_bytes = int64_t{1} << 30;  // CPU default budget for the KV cache
  std::vector<int32_t> extra_eos_token_ids;  // e.g. the tokenizer's EOS (added by Python)
  uint64_t seed = 0;                       // seeds the per-request seeds drawn for seed=None
  uint64_t dummy_seed = 0;                 // weights of load_format="dummy"
  // GPU: false captures each forward shape once (behind its first, eager forward) as a CUDA graph
  // and replays it; true launches every kernel eagerly (for debugging and comparison). No effect
  // on the CPU.
  bool enforce_eager = false;
  // GPU: CUDA graphs kept at once (>= 1). Past it a new forward shape replaces the graph used least
  // recently, once that one has gone unused for this many forwards (4x as many if it has not
  // replayed yet).
  int32_t max_cuda_graphs = 64;
  // Rows of float32 logits the LM head computes at once: a step that samples more rows runs the
  // LM head and sampling in passes, so the logits take at most this x vocab x 4 bytes (311 MB
  // for a 151,936-token vocabulary). Must be >= 2.
  int64_t lm_head_chunk_rows = 512;
  // Launch each step's forward before the host has applied the previous step's decisions (they
  // reach it on the device), so that the GPU does not wait for the host between steps. Steps
  // look ahead only while every running request decodes with a strategy that unmasks a fixed
  // count per step (sequential, low_confidence_static, low_confidence, random) and none ends by
  // length at the step; the rest step synchronously. Outputs then come one step() later. Tokens
  // and finish reasons are those of the synchronous engine; so are logprobs on the CPU, bit for
  // bit, while on a GPU the forwards' other row counts may pick other GEMM kernels and move the
  // logits' rounding, as batching does. On by default: up to 3.3% more tokens/s on an H100
  // (BENCHMARKS.md, thirtieth session); false steps synchronously.
  bool async_scheduling = true;
  // While a batch is being admitted (no running request has gone past its first denoise step) and
  // a waiting request can be admitted (pages, slots and the forward's budget allow), the requests
  // already denoising sit the step out and the forward prefills the waiting ones. A batch that
  // arrives together (generate() of many prompts) then prefills in whole-budget forwards and
  // denoises in lockstep, ending in one forward instead of a tail of shrinking ones: SDAR-4B batch
  // 128 block 4 gained 0.3-0.5% on an H100 (BENCHMARKS.md, thirty-sixth session). Not where the
  // batch in lockstep would overflow max_num_batched_tokens (twice each block, for the commit of
  // the block before). Requests that arrive while others
  // decode join their forwards, as without it. The same tokens either way (on a GPU the logits'
  // last bits may move with the batch's composition, as batching moves them); false lets the
  // running requests denoise in the forwards that prefill the new ones.
  bool prefill_first = true;
};

// What the engine knows about its model, for the Python layer and embedders.
struct ModelInfo {
  std::string model_type;
  std::string device;                      // "cpu" or "cuda:N"
  std::string dtype;                       // compute dtype
  std::string decode_mode;                 // "block_causal" for SDAR; the chosen mode otherwise
  int64_t vocab_size;
  int64_t mask_token_id;
  int32_t block_length;
  int64_t max_model_len;
  std::vector<int32_t> eos_token_ids;      // generation_config's plus extra_eos_token_ids
  int64_t num_kv_pages;
  int32_t kv_page_size;
};

enum class FinishReason : uint8_t { kNone, kStop, kLength, kAborted };
const char* finish_reason_name(FinishReason r);

// When and how confidently a completion token was decided (SamplingParams::logprobs).
struct TokenLogprob {
  int32_t step;     // denoise step inside its block at which the position was unmasked
  float logprob;    // log p(token) under the tempered, unfiltered distribution at that step
  float entropy;    // entropy of that distribution
};

// One request's news from one step: completion tokens committed in this step (never retracted),
// and whether it finished.
struct RequestOutput {
  int64_t request_id;
  std::vector<int32_t> new_token_ids;
  std::vector<TokenLogprob> new_logprobs;  // one per new token when logprobs were requested
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  int64_t num_forwards = 0;                // forwards this request took part in so far
};

class EngineImpl;

class Engine {
 public:
  explicit Engine(const EngineConfig& config);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const ModelInfo& model_info() const;

  // Validates the request fully (throws InvalidArgument / NotImplementedYet before anything is
  // queued, so a bad request never enters the batch) and queues it. Returns its id.
  int64_t add_request(const std::vector<int32_t>& prompt_token_ids, const SamplingParams& params);
  // Runs every check of add_request without queuing anything (and without drawing a seed), so a
  // caller can validate a whole batch before any of it starts.
  void validate_request(const std::vector<int32_t>& prompt_token_ids, const SamplingParams& params) const;
  // Runs one forward over the scheduled batch and returns what changed. With async_scheduling a
  // call launches the next forward and returns what the previous one decided, so outputs come one
  // call later (and the last call launches nothing); has_unfinished() stays true until they have.
  std::vector<RequestOutput> step();
  bool has_unfinished() const;
  // Finishes a request now (reason kAborted) and frees its pages; false if unknown or finished.
  bool abort(int64_t request_id);

  // Logits [len(token_ids), vocab] (float32, host) of one sequence forwarded whole with the
  // block-causal rule of `block_length` (0: bidirectional), for tests and analysis. Needs the
  // engine idle.
  std::vector<float> compute_logits(const std::vector<int32_t>& token_ids, int32_t block_length);

  int64_t num_free_kv_pages() const;
  int64_t num_running() const;
  int64_t num_waiting() const;
  int64_t num_preemptions() const;  // total since construction
  int64_t num_cuda_graphs() const;        // CUDA graphs alive (forward shapes captured, less those evicted)
  int64_t num_cuda_graph_replays() const;  // forwards that replayed one
  // Forwards launched before the previous step's decisions reached the host (async_scheduling).
  int64_t num_forwards_launched_ahead() const;
  // Rows whose final hidden states a forward computed and no step sampled: a forward launched
  // ahead computes the rows the decisions in flight leave masked, except where they are not known
  // ahead, and a request that ends meanwhile (a stop token) drops its rows.
  int64_t num_logit_rows_discarded() const;
  // Forwards run for requests since construction (the startup warm-up's not counted).
  int64_t num_forwards() const;
  int64_t num_cuda_graph_evictions() const;  // graphs destroyed to make room (max_cuda_graphs)

 private:
  std::unique_ptr<EngineImpl> impl_;
};

}  // namespace blockinfer
