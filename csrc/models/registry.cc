// The one place that maps a model_type to its family's loader.
#include "models/model.h"
#include "models/sdar.h"

namespace blockinfer {

std::unique_ptr<Model> load_model(const std::string& dir, const ModelConfig& config,
                                  const LoadOptions& options) {
  if (config.model_type == "sdar") return load_sdar(dir, config, options);
  throw InvalidArgument(str_cat("unknown model_type '", config.model_type, "'"));
}

}  // namespace blockinfer
