// Per-request decoding parameters (SEMANTICS §1). The Python SamplingParams converts to this
// struct and calls validate(), so the rules live in one place.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace blockinfer {

enum class RemaskingStrategy : uint8_t {
  kSequential,
  kLowConfidenceStatic,
  kLowConfidenceDynamic,
  kEntropyBounded,
  kLowConfidence,
  kRandom,
  kConfidenceThreshold,
  kConfidenceFactor,
  kOrigin,
  kMaskgitPlus,
  kTopkMargin,
  kEntropy,
};

// Every strategy name of SEMANTICS §3, in table order.
const std::vector<std::string>& remasking_strategy_names();
// Throws InvalidArgument listing the valid names for an unknown one.
RemaskingStrategy parse_remasking_strategy(const std::string& name);
const char* remasking_strategy_name(RemaskingStrategy s);
// Whether a strategy is one of the block strategies (not Dream's canvas algorithms).
bool is_block_strategy(RemaskingStrategy s);

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  int32_t topk = 0;          // 0 = off
  float topp = 1.0f;         // 1 = off
  int32_t max_tokens = 64;
  std::string remasking_strategy = "low_confidence_static";
  std::optional<int32_t> block_length;      // none = the engine's
  std::optional<int32_t> denoising_steps;   // none = block length
  float dynamic_threshold = 0.9f;
  float eb_threshold = 0.35f;
  float factor = 1.0f;
  float alg_temp = 0.0f;
  float cfg_scale = 0.0f;
  // Stop strings are matched on decoded text, which needs the tokenizer: the Python layer applies
  // them (and aborts the request); the C++ engine only validates them. Embedders that decode text
  // themselves match them the same way.
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  std::optional<uint64_t> seed;             // none = a fresh seed per request
  bool logprobs = false;

  // Checks every field on its own (ranges, names). Throws InvalidArgument naming the field, or
  // NotImplementedYet for a valid value this build does not support yet.
  void validate() const;
};

}  // namespace blockinfer
