// Dream (and Dream-Coder, DiffuCoder): a Qwen2-shaped decoder with q/k/v biases, attended
// bidirectionally, whose logits are shifted by one position (SEMANTICS §6).
#pragma once

#include "models/model.h"

namespace blockinfer {

std::unique_ptr<Model> load_dream(const std::string& dir, const ModelConfig& config,
                                  const LoadOptions& options);

}  // namespace blockinfer
