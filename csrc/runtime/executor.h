// The Executor turns a scheduled batch into one forward of the model over a ragged batch: it owns
// the paged KV cache (the memory plan) and builds the per-forward index tensors.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "kernels/cuda/cuda_runtime_api.h"
#include "models/model.h"

namespace blockinfer {

// What one sequence contributes to a forward: the tokens at positions [start, end), attending to
// keys [0, end) of its pages under the block-causal rule of `block_len` (0 = bidirectional), and
// the absolute positions whose logits are needed.
struct SeqChunk {
  const int32_t* tokens = nullptr;  // tokens[0] is the token at position `start`
  int32_t start = 0;
  int32_t end = 0;
  int32_t block_len = 0;
  int32_t kv_end = 0;  // keys [0, kv_end) are attended (cached beyond [start, end)); 0: `end`
  int32_t block_offset = 0;  // blocks start here; [0, block_offset) is one bidirectional block
  const std::vector<int32_t>* pages = nullptr;  // page table covering [0, end)
  std::vector<int32_t> logit_positions;         // absolute, within [start, end)
};

struct KVCacheConfig {
  int32_t page_size = 16;
  int64_t num_pages = 0;  // 0: derive from memory_bytes (CPU) or the free GPU memory
  int64_t memory_bytes = int64_t{1} << 30;  // CPU budget
  // GPU: the cache takes this fraction of the memory free after the weights are loaded, less
  // `activation_reserve_bytes` kept for the forward's temporaries.
  double gpu_memory_utilization = 0.9;
  int64_t activation_reserve_bytes = int64_t{2} << 30;
};

// CUDA graphs (GPU only): a forward shape is captured once, behind its first (eager) forward, and
// replayed from its second on.
struct GraphConfig {
  bool enforce_eager = false;  // never capture: every forward launches its kernels one by one
  // Captured graphs kept at once. A new shape past it takes the place of the graph used least
  // recently, once that one has gone unused for max_graphs forwards (so the shapes a workload keeps
  // meeting are not evicted in turn), or 4 x max_graphs for a graph not replayed yet; until then
  // the new shape runs eagerly.
  int32_t max_graphs = 64;
  int64_t max_tokens = 4096;   // forwards with more rows run eagerly (launches are amortised)
  int64_t max_pool_bytes = int64_t{3} << 29;  // no new capture once the graph pool holds 1.5 GiB
};

class Executor {
 public:
  Executor(const Model& model, const KVCacheConfig& kv_config, const GraphConfig& graph_config = {});

  int64_t num_pages() const { return num_pages_; }
  int32_t page_size() const { return page_size_; }
  // Bytes of KV cache one page holds across all layers (K and V).
  int64_t bytes_per_page() const { return bytes_per_page_; }

  // Runs the forward; returns the LM head's input, the final-normed hidden states [sum of
  // logit_positions, hidden_size] in the model's dtype on its device, rows in chunk order. On a GPU
  // the result is valid until the next run. The LM head runs apart (Model::lm_head), so a step
  // may compute its logits in passes of bounded size.
  // `patch`, if set, is called with the forward's token ids [tokens] and its logit rows (the rows
  // of the forward whose hidden states come back, padding included; int32, on the model's device)
  // after they are in place and before the forward reads them: asynchronous scheduling writes the
  // previous step's decisions there on the device (its chosen tokens, and the rows they leave
  // masked in place of the logit positions the chunks hold for them).
  using Patch = std::function<void(Tensor& token_ids, Tensor& logit_rows)>;
  Tensor run(const std::vector<SeqChunk>& chunks, const Patch& patch = {});

  int64_t num_graphs() const { return captured_; }  // graphs alive now
  int64_t num_graph_replays() const { return graph_replays_; }
  int64_t num_graph_evictions() const { return graph_evictions_; }

 private:
  // What a captured graph bakes in: every size that sets a kernel's grid or a GEMM's shape.
  // (tokens, sequences, logit rows, page-table width, attention tiles, key splits, keys/split,
  // warps per 16 query items, wide tiles, keys read once)
  using GraphKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int32_t, int32_t, int32_t, bool, bool>;
  struct GraphEntry {
    bool failed = false;        // a capture failed: the shape stays eager
    int64_t last_used = 0;      // the forward (forwards_) that last met the shape
    int64_t replays = 0;        // of the graph alive now
    std::unique_ptr<cuda::Graph> graph;
    Tensor meta;                // the packed int32 metadata the graph reads (device)
    Tensor hidden;              // [logit rows, hidden] the LM head's input: a view into the graph pool
  };

  const Model& model_;
  int32_t page_size_;
  int64_t num_pages_;
  int64_t bytes_per_page_;
  std::array<int64_t, 4> cta_slots_ = ops::AttentionPlanOptions{}.cta_slots;  // attention CTAs the GPU runs at once
  int32_t wide_tiles_ = -1;  // the plan decides; BLOCKINFER_ATTENTION_WIDE_TILES forces 0 or 1
  bool wgmma_ = false;       // the attention's wgmma form serves this device (ops::attention_wgmma)
  std::vector<LayerKVCache> cache_;
  GraphConfig graph_config_;
  // Makes room for a capture when max_graphs are alive: evicts the graph used least recently of
  // those that may give way (GraphConfig::max_graphs). False: no room.
  bool make_room_for_graph();

  std::map<GraphKey, GraphEntry> graphs_;  // shapes met (bounded: see run), captured or not
  int64_t forwards_ = 0;                   // graphable forwards so far
  int64_t captured_ = 0;
  int64_t graph_replays_ = 0;
  int64_t graph_evictions_ = 0;
};

}  // namespace blockinfer
