#include "models/weight_loader.h"

#include <cmath>
#include <cstring>

namespace blockinfer {

WeightLoader::WeightLoader(const std::string& dir, const LoadOptions& options)
    : rng_(options.dummy_seed) {
  if (options.load_format == "dummy") return;
  BI_CHECK_ARG(options.load_format == "auto" || options.load_format == "safetensors",
               "unknown load_format '", options.load_format,
               "': expected one of auto, safetensors, dummy");
  reader_ = std::make_unique<CheckpointReader>(dir);
}

bool WeightLoader::has(const std::string& name) const { return !reader_ || reader_->contains(name); }

Tensor WeightLoader::dummy(const std::vector<int64_t>& shape, float mean, float std) {
  Tensor t = Tensor::empty(shape, DType::kFloat32);
  std::normal_distribution<float> dist(mean, std);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng_);
  return t;
}

Tensor WeightLoader::get(const std::string& name, const std::vector<int64_t>& shape) {
  if (!reader_) {
    // Dummy weights of the real shape; the scale keeps activations finite through deep stacks.
    const float std = shape.size() == 2 ? 1.0f / std::sqrt(static_cast<float>(shape[1])) : 0.02f;
    return dummy(shape, 0.f, std);
  }
  BI_CHECK_ARG(reader_->contains(name), "checkpoint is missing tensor '", name, "'");
  Tensor stored = reader_->view(name);
  Tensor expect = Tensor::from_blob(nullptr, shape, DType::kFloat32, Device::cpu());
  BI_CHECK_ARG(stored.shape() == shape, "tensor '", name, "' has shape ", stored.shape_str(),
               " but the config implies ", expect.shape_str());
  BI_CHECK_ARG(stored.dtype() == DType::kFloat32 || stored.dtype() == DType::kBFloat16 ||
                   stored.dtype() == DType::kFloat16,
               "tensor '", name, "' has dtype ", dtype_name(stored.dtype()),
               "; expected float32, bfloat16 or float16");
  consumed_.insert(name);
  // Always an owned copy: aligned, and independent of the mapping's lifetime.
  Tensor f32 = stored.to_dtype(DType::kFloat32);
  return f32.raw_data() == stored.raw_data() ? f32.to(Device::cpu()) : f32;
}

Tensor WeightLoader::get_fused(const std::vector<std::string>& names,
                               const std::vector<std::vector<int64_t>>& shapes) {
  int64_t rows = 0;
  for (const auto& s : shapes) rows += s[0];
  std::vector<int64_t> fused_shape = shapes[0];
  fused_shape[0] = rows;
  Tensor out = Tensor::empty(fused_shape, DType::kFloat32);
  char* dst = static_cast<char*>(out.raw_data());
  for (size_t i = 0; i < names.size(); ++i) {
    Tensor part = get(names[i], shapes[i]);
    std::memcpy(dst, part.raw_data(), part.nbytes());
    dst += part.nbytes();
  }
  return out;
}

Tensor WeightLoader::get_norm(const std::string& name, int64_t size) {
  if (!reader_) return dummy({size}, 1.f, 0.02f);
  return get(name, {size});
}

void WeightLoader::check_all_consumed() const {
  if (!reader_) return;
  std::string unexpected;
  for (const auto& n : reader_->names()) {
    // Rotary frequency buffers saved by some exporters are recomputed, not loaded.
    if (n.ends_with("rotary_emb.inv_freq")) continue;
    if (!consumed_.count(n)) unexpected += (unexpected.empty() ? "'" : ", '") + n + "'";
  }
  BI_CHECK_ARG(unexpected.empty(), "checkpoint has unexpected tensors: ", unexpected);
}

}  // namespace blockinfer
