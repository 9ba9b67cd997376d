#include "models/weight_loader.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "core/parallel.h"

namespace blockinfer {

WeightLoader::WeightLoader(const std::string& dir, const LoadOptions& options)
    : options_(options), rng_(options.dummy_seed) {
  if (options.load_format == "dummy") return;
  BI_CHECK_ARG(options.load_format == "auto" || options.load_format == "safetensors",
               "unknown load_format '", options.load_format,
               "': expected one of auto, safetensors, dummy");
  reader_ = std::make_unique<CheckpointReader>(dir);
}

bool WeightLoader::has(const std::string& name) const { return !reader_ || reader_->contains(name); }

void WeightLoader::fill_dummy(void* dst, int64_t n, float mean, float std) {
  // Uniform noise with the requested mean and standard deviation from a splitmix64 stream, made
  // straight in the load dtype (each element rounded from its float32 value, as to_dtype would):
  // fast enough for the multi-billion-parameter shapes that benchmarks load with
  // load_format="dummy", without a float32 copy of them. Counter-based (element i depends only on
  // the stream seed and i), so threads fill it in parallel.
  const uint64_t seed = rng_();
  const float half_width = std * 1.7320508f;  // uniform on [-a, a] has std a / sqrt(3)
  auto value = [=](int64_t i) {
    uint64_t z = seed + static_cast<uint64_t>(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    return mean + (2.f * u - 1.f) * half_width;
  };
  auto fill = [&](auto* out, auto convert) {
    parallel_ranges(n, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = convert(value(i));
    });
  };
  switch (options_.dtype) {
    case DType::kFloat32: fill(static_cast<float*>(dst), [](float v) { return v; }); break;
    case DType::kBFloat16: fill(static_cast<uint16_t*>(dst), float_to_bf16); break;
    case DType::kFloat16: fill(static_cast<uint16_t*>(dst), float_to_half); break;
    default: BI_CHECK_ARG(false, "dummy weights: load dtype ", dtype_name(options_.dtype), " is not a float type");
  }
}

Tensor WeightLoader::dummy(const std::vector<int64_t>& shape, float mean, float std) {
  Tensor t = Tensor::empty(shape, options_.dtype);
  fill_dummy(t.raw_data(), t.numel(), mean, std);
  return t;
}

// The scale of a dummy matrix keeps activations finite through deep stacks.
float WeightLoader::dummy_std(const std::vector<int64_t>& shape) {
  return shape.size() == 2 ? 1.0f / std::sqrt(static_cast<float>(shape[1])) : 0.02f;
}

Tensor WeightLoader::to_device(const Tensor& t) const {
  return options_.device.is_cpu() ? t : t.to(options_.device);
}

Tensor WeightLoader::get(const std::string& name, const std::vector<int64_t>& shape) {
  if (!reader_) return to_device(dummy(shape, 0.f, dummy_std(shape)));
  // Always an owned copy (aligned, and independent of the mapping's lifetime), straight from the
  // stored dtype to the load dtype: element by element through float, which is what a float32
  // copy in between gave (a 16-bit value through float32 and back is itself). A tensor already in
  // the load dtype is copied from the mapping to the load device in one step.
  const Tensor stored = read(name, shape);
  if (stored.dtype() == options_.dtype) return stored.to(options_.device);
  return to_device(stored.to_dtype(options_.dtype));
}

Tensor WeightLoader::read(const std::string& name, const std::vector<int64_t>& shape) {
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
  return stored;
}

Tensor WeightLoader::get_fused(const std::vector<std::string>& names,
                               const std::vector<std::vector<int64_t>>& shapes) {
  BI_CHECK_ARG(names.size() == shapes.size() && !shapes.empty(), "get_fused: ", names.size(), " names for ",
               shapes.size(), " shapes");
  int64_t rows = 0;
  for (const auto& s : shapes) rows += s[0];
  std::vector<int64_t> fused_shape = shapes[0];
  fused_shape[0] = rows;
  // Each part in turn, straight into the fused tensor in the load dtype (dummy weights: each
  // part's stream).
  Tensor out = Tensor::empty(fused_shape, options_.dtype);
  char* dst = static_cast<char*>(out.raw_data());
  for (size_t i = 0; i < shapes.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : shapes[i]) n *= d;
    if (!reader_) {
      fill_dummy(dst, n, 0.f, dummy_std(shapes[i]));
    } else {
      const Tensor stored = read(names[i], shapes[i]);
      const Tensor typed = stored.dtype() == options_.dtype ? stored.contiguous() : stored.to_dtype(options_.dtype);
      std::memcpy(dst, typed.raw_data(), typed.nbytes());
    }
    dst += n * static_cast<int64_t>(dtype_size(options_.dtype));
  }
  return to_device(out);
}

Tensor WeightLoader::get_norm(const std::string& name, int64_t size) {
  if (!reader_) return to_device(dummy({size}, 1.f, 0.02f));
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
