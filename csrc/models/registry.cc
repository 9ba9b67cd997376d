// The one place that maps a model_type to its family's loader.
#include "models/model.h"
#include "models/dream.h"
#include "models/llada.h"
#include "models/sdar.h"

namespace blockinfer {

std::unique_ptr<Model> load_model(const std::string& dir, const ModelConfig& config,
                                  const LoadOptions& options) {
  if (config.model_type == "sdar") return load_sdar(dir, config, options);
  if (config.model_type == "llada") return load_llada(dir, config, options);
  if (config.model_type == "Dream") return load_dream(dir, config, options);
  throw InvalidArgument(str_cat("unknown model_type '", config.model_type, "'"));
}

}  // namespace blockinfer
