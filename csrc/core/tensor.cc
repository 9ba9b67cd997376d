#include "blockinfer/tensor.h"

#include <cstdlib>
#include <cstring>
#include <numeric>

#include "core/parallel.h"

namespace blockinfer {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kFloat16: return 2;
    case DType::kBFloat16: return 2;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
    case DType::kUInt8: return 1;
  }
  throw Error("dtype_size: unknown dtype");
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kUInt8: return "uint8";
  }
  return "unknown";
}

DType parse_float_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "float") return DType::kFloat32;
  if (name == "float16" || name == "fp16" || name == "half") return DType::kFloat16;
  if (name == "bfloat16" || name == "bf16") return DType::kBFloat16;
  throw InvalidArgument(str_cat("unknown dtype '", name,
                                "': expected one of float32, float16, bfloat16"));
}

std::string Device::str() const { return is_cpu() ? "cpu" : str_cat("cuda:", index); }

Storage::Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter)
    : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)) {}

Storage::~Storage() {
  if (deleter_ && data_) deleter_(data_);
}

namespace {
std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

void check_shape(const std::vector<int64_t>& shape) {
  for (auto d : shape) BI_CHECK_ARG(d >= 0, "tensor shape has a negative dimension: ", d);
}
}  // namespace

Tensor Tensor::empty(const std::vector<int64_t>& shape, DType dtype, Device device) {
  check_shape(shape);
  int64_t n = std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
  size_t nbytes = static_cast<size_t>(n) * dtype_size(dtype);
  void* ptr = device_alloc(nbytes, device);
  auto storage = std::make_shared<Storage>(ptr, nbytes, device,
                                           [device, nbytes](void* p) { device_free(p, nbytes, device); });
  Tensor t;
  t.data_ = ptr;
  t.dtype_ = dtype;
  t.device_ = device;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.holder_ = storage;
  t.defined_ = true;
  return t;
}

Tensor Tensor::zeros(const std::vector<int64_t>& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (device.is_cpu()) {
    std::memset(t.data_, 0, t.nbytes());
  } else {
    std::vector<uint8_t> host(t.nbytes(), 0);
    device_copy(t.data_, device, host.data(), Device::cpu(), t.nbytes());
  }
  return t;
}

Tensor Tensor::from_blob(void* data, const std::vector<int64_t>& shape, DType dtype, Device device,
                         std::vector<int64_t> strides, std::shared_ptr<void> holder) {
  check_shape(shape);
  if (strides.empty()) strides = contiguous_strides(shape);
  BI_CHECK_ARG(strides.size() == shape.size(), "from_blob: ", strides.size(), " strides for ",
               shape.size(), " dims");
  Tensor t;
  t.data_ = data;
  t.dtype_ = dtype;
  t.device_ = device;
  t.shape_ = shape;
  t.strides_ = std::move(strides);
  t.holder_ = std::move(holder);
  t.defined_ = true;
  return t;
}

int64_t Tensor::size(int64_t d) const {
  if (d < 0) d += dim();
  BI_CHECK_ARG(d >= 0 && d < dim(), "dim ", d, " out of range for a tensor of shape ", shape_str());
  return shape_[d];
}

int64_t Tensor::stride(int64_t d) const {
  if (d < 0) d += dim();
  BI_CHECK_ARG(d >= 0 && d < dim(), "dim ", d, " out of range for a tensor of shape ", shape_str());
  return strides_[d];
}

int64_t Tensor::numel() const {
  return std::accumulate(shape_.begin(), shape_.end(), int64_t{1}, std::multiplies<>());
}

bool Tensor::is_contiguous() const {
  int64_t s = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != s) return false;
    s *= shape_[i];
  }
  return true;
}

template <typename T>
struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::kFloat32; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::kInt32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::kInt64; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::kUInt8; };
// 16-bit floats are accessed as raw uint16_t words; the caller checks which of the two it is.
template <> struct DTypeOf<uint16_t> { static constexpr DType value = DType::kBFloat16; };

template <typename T>
T* Tensor::data() const {
  bool ok = dtype_ == DTypeOf<T>::value ||
            (std::is_same_v<T, uint16_t> && dtype_ == DType::kFloat16);
  BI_CHECK_ARG(ok, "tensor of dtype ", dtype_name(dtype_), " accessed as ",
               dtype_name(DTypeOf<T>::value));
  return static_cast<T*>(data_);
}
template float* Tensor::data<float>() const;
template int32_t* Tensor::data<int32_t>() const;
template int64_t* Tensor::data<int64_t>() const;
template uint8_t* Tensor::data<uint8_t>() const;
template uint16_t* Tensor::data<uint16_t>() const;

Tensor Tensor::view(const std::vector<int64_t>& shape) const {
  BI_CHECK_ARG(is_contiguous(), "view() of a non-contiguous tensor of shape ", shape_str());
  Tensor t = from_blob(data_, shape, dtype_, device_, {}, holder_);
  BI_CHECK_ARG(t.numel() == numel(), "view(): cannot view ", shape_str(), " as ", t.shape_str());
  return t;
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end) const {
  if (d < 0) d += dim();
  BI_CHECK_ARG(d >= 0 && d < dim(), "slice(): dim ", d, " out of range for ", shape_str());
  BI_CHECK_ARG(0 <= start && start <= end && end <= shape_[d], "slice(): [", start, ", ", end,
               ") out of range for dim ", d, " of ", shape_str());
  std::vector<int64_t> shape = shape_;
  shape[d] = end - start;
  char* p = static_cast<char*>(data_) + start * strides_[d] * static_cast<int64_t>(dtype_size(dtype_));
  return from_blob(p, shape, dtype_, device_, strides_, holder_);
}

Tensor Tensor::select(int64_t index) const {
  BI_CHECK_ARG(dim() >= 1 && index >= 0 && index < shape_[0], "select(", index,
               ") out of range for ", shape_str());
  std::vector<int64_t> shape(shape_.begin() + 1, shape_.end());
  std::vector<int64_t> strides(strides_.begin() + 1, strides_.end());
  char* p = static_cast<char*>(data_) + index * strides_[0] * static_cast<int64_t>(dtype_size(dtype_));
  return from_blob(p, shape, dtype_, device_, strides, holder_);
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  BI_CHECK_ARG(device_.is_cpu(), "contiguous() of a strided ", device_.str(), " tensor");
  Tensor out = empty(shape_, dtype_, device_);
  size_t es = dtype_size(dtype_);
  int64_t n = numel();
  std::vector<int64_t> idx(shape_.size(), 0);
  const char* src = static_cast<const char*>(data_);
  char* dst = static_cast<char*>(out.data_);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (size_t k = 0; k < idx.size(); ++k) off += idx[k] * strides_[k];
    std::memcpy(dst + i * es, src + off * static_cast<int64_t>(es), es);
    for (int64_t k = dim() - 1; k >= 0; --k) {
      if (++idx[k] < shape_[k]) break;
      idx[k] = 0;
    }
  }
  return out;
}

Tensor Tensor::to(Device device) const {
  Tensor src = contiguous();
  Tensor out = empty(shape_, dtype_, device);
  device_copy(out.data_, device, src.data_, device_, nbytes());
  return out;
}

void Tensor::copy_from(const Tensor& src) {
  BI_CHECK_ARG(src.shape_ == shape_ && src.dtype_ == dtype_, "copy_from: ", src.shape_str(), " ",
               dtype_name(src.dtype_), " into ", shape_str(), " ", dtype_name(dtype_));
  BI_CHECK_ARG(is_contiguous(), "copy_from into a non-contiguous tensor");
  Tensor s = src.device_.is_cpu() ? src.contiguous() : src;
  BI_CHECK_ARG(s.is_contiguous(), "copy_from from a non-contiguous device tensor");
  device_copy(data_, device_, s.data_, s.device_, nbytes());
}

Tensor Tensor::to_dtype(DType dtype) const {
  BI_CHECK_ARG(device_.is_cpu(), "to_dtype() runs on the CPU; got a ", device_.str(), " tensor");
  Tensor src = contiguous();
  if (dtype == dtype_) return src;
  auto is_float = [](DType d) { return d == DType::kFloat32 || d == DType::kBFloat16 || d == DType::kFloat16; };
  BI_CHECK_ARG(is_float(dtype_), "to_dtype: cannot convert from ", dtype_name(dtype_));
  BI_CHECK_ARG(is_float(dtype), "to_dtype: cannot convert to ", dtype_name(dtype));
  Tensor out = empty(shape_, dtype, Device::cpu());
  // The element types chosen once, outside the loop, and the loop split over the host's threads
  // (elementwise, so the bits do not depend on the split): a checkpoint's or a dummy model's
  // billions of weights go through here twice at load.
  auto run = [&](auto load, auto store) {
    parallel_ranges(numel(), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) store(i, load(i));
    });
  };
  auto with_store = [&](auto load) {
    if (dtype == DType::kFloat32) {
      float* o = static_cast<float*>(out.data_);
      run(load, [o](int64_t i, float v) { o[i] = v; });
    } else {
      uint16_t* o = static_cast<uint16_t*>(out.data_);
      if (dtype == DType::kBFloat16) run(load, [o](int64_t i, float v) { o[i] = float_to_bf16(v); });
      else run(load, [o](int64_t i, float v) { o[i] = float_to_half(v); });
    }
  };
  if (dtype_ == DType::kFloat32) {
    const float* in = static_cast<const float*>(src.data_);
    with_store([in](int64_t i) { return in[i]; });
  } else {
    const uint16_t* in = static_cast<const uint16_t*>(src.data_);
    if (dtype_ == DType::kBFloat16) with_store([in](int64_t i) { return bf16_to_float(in[i]); });
    else with_store([in](int64_t i) { return half_to_float(in[i]); });
  }
  return out;
}

std::string Tensor::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape_.size(); ++i) s += (i ? ", " : "") + std::to_string(shape_[i]);
  return s + "]";
}

float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint32_t sign = (bits >> 16) & 0x8000u;
  int32_t exp = static_cast<int32_t>((bits >> 23) & 0xffu) - 127 + 15;
  uint32_t mant = bits & 0x7fffffu;
  if (((bits >> 23) & 0xffu) == 0xffu) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0));
  if (exp >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00u);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    uint32_t shift = static_cast<uint32_t>(14 - exp);
    uint32_t half_mant = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_mant & 1u))) ++half_mant;
    return static_cast<uint16_t>(sign | half_mant);
  }
  uint32_t h = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent: correct
  return static_cast<uint16_t>(h);
}

}  // namespace blockinfer
