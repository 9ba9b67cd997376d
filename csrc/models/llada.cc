#include "models/llada.h"

#include "models/decoder.h"

namespace blockinfer {

// LLaDA's names: ff_proj is the gate, up_proj the up projection, ff_out (in a block) the down
// projection, and model.transformer.ff_out the LM head. Its RMSNorm normalises in float32, casts
// to the storage dtype, then scales (as Qwen3's does); the shared norm kernel scales before its one
// rounding: identical in float32, one bf16 rounding apart in bfloat16.
std::unique_ptr<Model> load_llada(const std::string& dir, const ModelConfig& config,
                                  const LoadOptions& options) {
  static const DecoderWeightNames names{
      "model.transformer.wte.weight", "model.transformer.ln_f.weight", "model.transformer.ff_out.weight",
      "model.transformer.blocks.", "attn_norm.weight", "ff_norm.weight",
      "q_proj.weight", "k_proj.weight", "v_proj.weight", "attn_out.weight", "", "", "", "", "",
      "ff_proj.weight", "up_proj.weight", "ff_out.weight"};
  return load_decoder(names, dir, config, options);
}

}  // namespace blockinfer
