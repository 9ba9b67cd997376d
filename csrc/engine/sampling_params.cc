#include "blockinfer/sampling_params.h"

#include <cmath>

#include "blockinfer/status.h"

namespace blockinfer {

namespace {
struct StrategyEntry {
  RemaskingStrategy value;
  const char* name;
};
const StrategyEntry kStrategies[] = {
    {RemaskingStrategy::kSequential, "sequential"},
    {RemaskingStrategy::kLowConfidenceStatic, "low_confidence_static"},
    {RemaskingStrategy::kLowConfidenceDynamic, "low_confidence_dynamic"},
    {RemaskingStrategy::kEntropyBounded, "entropy_bounded"},
    {RemaskingStrategy::kLowConfidence, "low_confidence"},
    {RemaskingStrategy::kRandom, "random"},
    {RemaskingStrategy::kConfidenceThreshold, "confidence_threshold"},
    {RemaskingStrategy::kConfidenceFactor, "confidence_factor"},
    {RemaskingStrategy::kOrigin, "origin"},
    {RemaskingStrategy::kMaskgitPlus, "maskgit_plus"},
    {RemaskingStrategy::kTopkMargin, "topk_margin"},
    {RemaskingStrategy::kEntropy, "entropy"},
};
}  // namespace

const std::vector<std::string>& remasking_strategy_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& e : kStrategies) v.push_back(e.name);
    return v;
  }();
  return names;
}

RemaskingStrategy parse_remasking_strategy(const std::string& name) {
  for (const auto& e : kStrategies)
    if (name == e.name) return e.value;
  std::string list;
  for (const auto& n : remasking_strategy_names()) list += (list.empty() ? "" : ", ") + n;
  throw InvalidArgument(str_cat("remasking_strategy: unknown strategy '", name, "'; valid: ", list));
}

const char* remasking_strategy_name(RemaskingStrategy s) {
  for (const auto& e : kStrategies)
    if (e.value == s) return e.name;
  return "unknown";
}

bool is_block_strategy(RemaskingStrategy s) {
  switch (s) {
    case RemaskingStrategy::kOrigin:
    case RemaskingStrategy::kMaskgitPlus:
    case RemaskingStrategy::kTopkMargin:
    case RemaskingStrategy::kEntropy:
      return false;
    default:
      return true;
  }
}

void SamplingParams::validate() const {
  auto finite = [](float v) { return std::isfinite(v); };
  BI_CHECK_ARG(finite(temperature) && temperature >= 0.f, "temperature must be >= 0 (0 = greedy), got ",
               temperature);
  BI_CHECK_ARG(topk >= 0, "topk must be >= 0 (0 = off), got ", topk);
  BI_CHECK_ARG(finite(topp) && topp > 0.f && topp <= 1.f, "topp must be in (0, 1], got ", topp);
  BI_CHECK_ARG(max_tokens >= 1, "max_tokens must be >= 1, got ", max_tokens);
  parse_remasking_strategy(remasking_strategy);
  if (block_length) BI_CHECK_ARG(*block_length >= 1, "block_length must be >= 1, got ", *block_length);
  if (denoising_steps)
    BI_CHECK_ARG(*denoising_steps >= 1, "denoising_steps must be >= 1, got ", *denoising_steps);
  BI_CHECK_ARG(finite(dynamic_threshold) && dynamic_threshold >= 0.f && dynamic_threshold <= 1.f,
               "dynamic_threshold must be in [0, 1], got ", dynamic_threshold);
  BI_CHECK_ARG(finite(eb_threshold) && eb_threshold > 0.f, "eb_threshold must be > 0, got ", eb_threshold);
  BI_CHECK_ARG(finite(factor) && factor > 0.f, "factor must be > 0, got ", factor);
  BI_CHECK_ARG(finite(alg_temp) && alg_temp >= 0.f, "alg_temp must be >= 0, got ", alg_temp);
  BI_CHECK_ARG(finite(cfg_scale) && cfg_scale >= 0.f, "cfg_scale must be >= 0, got ", cfg_scale);
  for (int32_t id : stop_token_ids)
    BI_CHECK_ARG(id >= 0, "stop_token_ids must be non-negative token ids, got ", id);
  for (const auto& s : stop) BI_CHECK_ARG(!s.empty(), "stop strings must be non-empty");

  // Valid values that this build cannot serve yet: a clear error, never a silent fallback. Which
  // strategies apply to which model family is the engine's check (Engine::add_request).
}

}  // namespace blockinfer
