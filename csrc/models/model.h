// The interface every model family implements: one forward over a ragged batch.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "blockinfer/tensor.h"
#include "models/model_config.h"
#include "ops/attention.h"

namespace blockinfer {

// The paged KV cache of one layer: [num_pages, page_size, num_kv_heads, head_dim] each.
struct LayerKVCache {
  Tensor k;
  Tensor v;
};

struct ForwardInput {
  Tensor token_ids;              // [num_tokens] int32
  ops::AttentionMetadata attn;   // positions, pages and the attention rule per sequence
  Tensor logit_rows;             // [num_logit_rows] int32: rows whose logits are computed
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  virtual Device device() const = 0;
  virtual DType dtype() const = 0;
  // Runs the model and writes the final-normed hidden states [num_logit_rows, hidden_size] (the
  // model's dtype) of the selected rows only: the input of the LM head.
  virtual void forward(const ForwardInput& in, std::vector<LayerKVCache>& cache,
                       Tensor& hidden) const = 0;
  // The LM head: hidden [n, hidden_size] -> logits [n, vocab] (float32). A row's logits depend on
  // that row alone, so the rows of a forward may go through in several passes.
  virtual void lm_head(const Tensor& hidden, Tensor& logits) const = 0;
  // The LM head's weight [vocab, hidden_size] when the head is that one bias-free projection (the
  // fused LM head and greedy sampling, ops::lm_head_greedy, read it), else null.
  virtual const Tensor* lm_head_weight() const { return nullptr; }
  // Runs the model's GEMMs (one layer's, and the LM head's up to `max_lm_head_rows`) once at each
  // row count of `rows`, on scratch inputs, so that the GEMM library has chosen and loaded their
  // kernels before a request needs them. The results are thrown away; nothing else changes.
  virtual void warm_up_gemms(const std::vector<int64_t>& rows, int64_t max_lm_head_rows) const {
    (void)rows;
    (void)max_lm_head_rows;
  }
};

struct LoadOptions {
  std::string load_format = "auto";  // "auto"/"safetensors" read the files; "dummy" fills random
  Device device = Device::cpu();
  DType dtype = DType::kFloat32;     // compute/storage dtype of weights, activations and KV cache
  uint64_t dummy_seed = 0;
};

// Builds the model of config.model_type from `dir`. Throws InvalidArgument naming the tensor for
// missing, unexpected or mis-shaped weights.
std::unique_ptr<Model> load_model(const std::string& dir, const ModelConfig& config,
                                  const LoadOptions& options);

}  // namespace blockinfer
