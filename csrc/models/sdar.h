// SDAR (and TraDo fine-tunes): a Qwen3-shaped decoder run with the block-causal rule.
#pragma once

#include "models/model.h"

namespace blockinfer {

std::unique_ptr<Model> load_sdar(const std::string& dir, const ModelConfig& config,
                                 const LoadOptions& options);

}  // namespace blockinfer
