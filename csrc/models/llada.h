// LLaDA (and LLaDA-1.5): a LLaMA-shaped decoder without GQA or QK-norm, attended bidirectionally.
#pragma once

#include "models/model.h"

namespace blockinfer {

std::unique_ptr<Model> load_llada(const std::string& dir, const ModelConfig& config,
                                  const LoadOptions& options);

}  // namespace blockinfer
