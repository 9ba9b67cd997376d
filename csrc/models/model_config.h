// Hugging Face config.json / generation_config.json of a model directory.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace blockinfer {

struct ModelConfig {
  std::string model_type;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  float rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false;
  std::string torch_dtype = "float32";
  std::optional<int64_t> mask_token_id;  // config.json's `mask_token_id`, when present
  std::optional<int32_t> block_size;     // config.json's `block_size`, when present
  std::vector<int32_t> eos_token_ids;    // generation_config.json's, else config.json's
  bool block_causal = true;              // SDAR: block-causal; LLaDA, Dream: bidirectional
  bool shift_logits = false;             // Dream: position j is predicted from the hidden state at j - 1
};

// The model types this build can serve, for error messages.
const std::vector<std::string>& supported_model_types();

// Family defaults of SEMANTICS §1.
int64_t default_mask_token_id(const std::string& model_type);
int32_t default_block_length(const std::string& model_type);

// Reads and validates `dir`/config.json (and generation_config.json when present). Throws
// InvalidArgument naming the file and field for a missing directory, missing field, bad value or
// unknown model_type.
ModelConfig load_model_config(const std::string& dir);

}  // namespace blockinfer
