// The pre-norm decoder shared by the families (Qwen3-shaped SDAR, LLaMA-shaped LLaDA): embedding,
// N x (RMSNorm, fused QKV, optional QK-norm, RoPE, paged attention, O-proj, RMSNorm, SwiGLU MLP),
// final norm, LM head on the selected rows. A family supplies its checkpoint's tensor names; the
// attention rule (block-causal or bidirectional) comes with each forward's metadata.
#pragma once

#include <string>

#include "models/model.h"

namespace blockinfer {

struct DecoderWeightNames {
  std::string embed, final_norm, lm_head;
  std::string layer_prefix;  // followed by the layer index and '.'
  std::string input_norm, post_attention_norm;
  std::string q, k, v, o;
  std::string q_norm, k_norm;  // empty: the family has no QK-norm
  std::string q_bias, k_bias, v_bias;  // empty: no q/k/v biases (Dream has them)
  std::string gate, up, down;
};

std::unique_ptr<Model> load_decoder(const DecoderWeightNames& names, const std::string& dir,
                                    const ModelConfig& config, const LoadOptions& options);

}  // namespace blockinfer
