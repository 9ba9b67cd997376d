#include "models/sdar.h"

#include "models/decoder.h"

namespace blockinfer {

// SDAR and its TraDo fine-tunes: Qwen3 names, with per-head QK-norm.
std::unique_ptr<Model> load_sdar(const std::string& dir, const ModelConfig& config,
                                 const LoadOptions& options) {
  static const DecoderWeightNames names{
      "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", "model.layers.",
      "input_layernorm.weight", "post_attention_layernorm.weight",
      "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
      "self_attn.o_proj.weight", "self_attn.q_norm.weight", "self_attn.k_norm.weight", "", "", "",
      "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"};
  return load_decoder(names, dir, config, options);
}

}  // namespace blockinfer
