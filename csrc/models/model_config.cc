#include "models/model_config.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "blockinfer/status.h"

namespace blockinfer {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::vector<std::string>& supported_model_types() {
  static const std::vector<std::string> types = {"sdar", "llada", "Dream"};
  return types;
}

int64_t default_mask_token_id(const std::string& model_type) {
  if (model_type == "sdar" || model_type == "sdar_moe") return 151669;
  if (model_type == "llada") return 126336;
  if (model_type == "Dream") return 151666;
  throw InvalidArgument(str_cat("no default mask token for model_type '", model_type, "'"));
}

int32_t default_block_length(const std::string& model_type) {
  if (model_type == "sdar" || model_type == "sdar_moe") return 4;
  return 32;  // LLaDA, Dream
}

namespace {

json read_json(const fs::path& path) {
  std::ifstream f(path);
  BI_CHECK_ARG(f.good(), "cannot open ", path.string());
  try {
    json j = json::parse(f);
    BI_CHECK_ARG(j.is_object(), path.string(), " must hold a JSON object, got ", j.type_name());
    return j;
  } catch (const json::exception& e) {
    throw InvalidArgument(str_cat(path.string(), " is not valid JSON: ", e.what()));
  }
}

template <typename T>
T required(const json& j, const char* key, const fs::path& path) {
  BI_CHECK_ARG(j.contains(key) && !j[key].is_null(), path.string(), ": required field '", key,
               "' is missing");
  try {
    return j[key].get<T>();
  } catch (const json::exception&) {
    throw InvalidArgument(str_cat(path.string(), ": field '", key, "' has the wrong type (",
                                  j[key].dump(), ")"));
  }
}

template <typename T>
T optional_field(const json& j, const char* key, T fallback, const fs::path& path) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return required<T>(j, key, path);
}

std::vector<int32_t> eos_list(const json& j, const fs::path& path) {
  std::vector<int32_t> ids;
  if (!j.is_object() || !j.contains("eos_token_id") || j["eos_token_id"].is_null()) return ids;
  const json& e = j["eos_token_id"];
  auto one = [&](const json& v) {
    BI_CHECK_ARG(v.is_number_integer(), path.string(), ": eos_token_id must be an integer or a list of ",
                 "integers, got ", e.dump());
    ids.push_back(v.get<int32_t>());
  };
  if (e.is_array()) {
    for (const auto& v : e) one(v);
  } else {
    one(e);
  }
  return ids;
}

// LLaDA's own config names (OLMo-style): d_model, n_layers, n_heads, mlp_hidden_size, ...
void parse_llada_fields(const json& j, const fs::path& path, ModelConfig& c) {
  c.hidden_size = required<int64_t>(j, "d_model", path);
  c.num_layers = required<int64_t>(j, "n_layers", path);
  c.num_heads = required<int64_t>(j, "n_heads", path);
  c.num_kv_heads = optional_field<int64_t>(j, "n_kv_heads", c.num_heads, path);
  c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  c.intermediate_size = required<int64_t>(j, "mlp_hidden_size", path);
  // The embedding and LM head have embedding_size rows (>= vocab_size); logits cover all of them.
  c.vocab_size = optional_field<int64_t>(j, "embedding_size", required<int64_t>(j, "vocab_size", path), path);
  c.max_position_embeddings = optional_field<int64_t>(j, "max_sequence_length", 4096, path);
  c.tie_word_embeddings = optional_field<bool>(j, "weight_tying", false, path);
  for (const char* flag : {"include_bias", "include_qkv_bias", "alibi", "attention_layer_norm", "input_emb_norm",
                           "scale_logits"})
    if (optional_field<bool>(j, flag, false, path))
      throw NotImplementedYet(str_cat(path.string(), ": LLaDA with ", flag, "=true is not supported"));
  if (j.contains("activation_type"))
    BI_CHECK_ARG(j["activation_type"] == "silu", path.string(), ": activation_type ", j["activation_type"].dump(),
                 " is not supported (only silu)");
  if (j.contains("layer_norm_type"))
    BI_CHECK_ARG(j["layer_norm_type"] == "rms", path.string(), ": layer_norm_type ", j["layer_norm_type"].dump(),
                 " is not supported (only rms)");
}

}  // namespace

ModelConfig load_model_config(const std::string& dir) {
  const fs::path root(dir);
  BI_CHECK_ARG(fs::is_directory(root), "model directory '", dir, "' does not exist");
  const fs::path path = root / "config.json";
  BI_CHECK_ARG(fs::is_regular_file(path), "model directory '", dir, "' has no config.json");
  const json j = read_json(path);

  ModelConfig c;
  c.model_type = required<std::string>(j, "model_type", path);
  bool known = false;
  for (const auto& t : supported_model_types()) known = known || t == c.model_type;
  // Families documented in SEMANTICS that a later milestone brings (issue 5 and the MoE work).
  static const char* kPlanned[] = {"sdar_moe"};
  for (const char* t : kPlanned)
    if (!known && c.model_type == t)
      throw NotImplementedYet(str_cat(path.string(), ": model_type '", c.model_type,
                                      "' is not implemented yet; this build supports: sdar, llada, Dream"));
  if (!known) {
    std::string list;
    for (const auto& t : supported_model_types()) list += (list.empty() ? "" : ", ") + t;
    throw InvalidArgument(str_cat(path.string(), ": unknown model_type '", c.model_type,
                                  "'; this build supports: ", list));
  }
  if (c.model_type == "llada") {
    parse_llada_fields(j, path, c);
  } else {
    c.hidden_size = required<int64_t>(j, "hidden_size", path);
    c.num_layers = required<int64_t>(j, "num_hidden_layers", path);
    c.num_heads = required<int64_t>(j, "num_attention_heads", path);
    c.num_kv_heads = optional_field<int64_t>(j, "num_key_value_heads", c.num_heads, path);
    c.head_dim = optional_field<int64_t>(j, "head_dim", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0, path);
    c.intermediate_size = required<int64_t>(j, "intermediate_size", path);
    c.vocab_size = required<int64_t>(j, "vocab_size", path);
    c.max_position_embeddings = optional_field<int64_t>(j, "max_position_embeddings", 4096, path);
    c.tie_word_embeddings = optional_field<bool>(j, "tie_word_embeddings", false, path);
  }
  c.rope_theta = optional_field<double>(j, "rope_theta", 10000.0, path);
  c.rms_norm_eps = optional_field<float>(j, "rms_norm_eps", 1e-6f, path);
  c.torch_dtype = optional_field<std::string>(j, "torch_dtype", "float32", path);
  c.block_causal = c.model_type == "sdar" || c.model_type == "sdar_moe";
  c.shift_logits = c.model_type == "Dream";
  if (j.contains("mask_token_id") && !j["mask_token_id"].is_null())
    c.mask_token_id = required<int64_t>(j, "mask_token_id", path);
  if (j.contains("block_size") && !j["block_size"].is_null())
    c.block_size = required<int32_t>(j, "block_size", path);
  if (j.contains("hidden_act"))
    BI_CHECK_ARG(j["hidden_act"] == "silu", path.string(), ": hidden_act ", j["hidden_act"].dump(),
                 " is not supported (only silu)");
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    throw NotImplementedYet(str_cat(path.string(), ": rope_scaling is not supported yet"));

  auto positive = [&](int64_t v, const char* name) {
    BI_CHECK_ARG(v > 0, path.string(), ": ", name, " must be positive, got ", v);
  };
  positive(c.hidden_size, "hidden_size");
  positive(c.num_layers, "num_hidden_layers");
  positive(c.num_heads, "num_attention_heads");
  positive(c.num_kv_heads, "num_key_value_heads");
  positive(c.head_dim, "head_dim");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.vocab_size, "vocab_size");
  positive(c.max_position_embeddings, "max_position_embeddings");
  BI_CHECK_ARG(c.num_heads % c.num_kv_heads == 0, path.string(), ": num_attention_heads ",
               c.num_heads, " is not a multiple of num_key_value_heads ", c.num_kv_heads);
  BI_CHECK_ARG(c.head_dim % 2 == 0, path.string(), ": head_dim ", c.head_dim, " must be even (RoPE)");
  BI_CHECK_ARG(c.rope_theta > 0, path.string(), ": rope_theta must be positive");
  if (c.block_size) BI_CHECK_ARG(*c.block_size > 0, path.string(), ": block_size must be positive");

  c.eos_token_ids = eos_list(j, path);
  const fs::path gen = root / "generation_config.json";
  if (fs::is_regular_file(gen)) {
    std::vector<int32_t> g = eos_list(read_json(gen), gen);
    if (!g.empty()) c.eos_token_ids = g;
  }
  for (int32_t id : c.eos_token_ids)
    BI_CHECK_ARG(id >= 0 && id < c.vocab_size, dir, ": eos_token_id ", id,
                 " is outside the vocabulary of ", c.vocab_size);
  return c;
}

}  // namespace blockinfer
