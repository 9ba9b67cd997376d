// Tensor: dtype, device, shape and strides over memory that it owns (through a shared Storage)
// or merely views (a mmap'ed checkpoint, a DLPack producer's buffer kept alive by a holder).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "blockinfer/status.h"

namespace blockinfer {

enum class DType : uint8_t { kFloat32, kFloat16, kBFloat16, kInt32, kInt64, kUInt8 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
// Parses "float32"/"fp32", "float16"/"fp16"/"half", "bfloat16"/"bf16".
DType parse_float_dtype(const std::string& name);

enum class DeviceType : uint8_t { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;
  static Device cpu() { return {DeviceType::kCPU, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::kCUDA, index}; }
  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool is_cuda() const { return type == DeviceType::kCUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  std::string str() const;
};

// A block of memory and how to give it back. Allocated by an Allocator, or wrapping
// foreign memory whose lifetime is tied to `holder`.
class Storage {
 public:
  Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_;
  size_t nbytes_;
  Device device_;
  std::function<void(void*)> deleter_;
};

class Tensor {
 public:
  Tensor() = default;

  // Owning, contiguous, uninitialised.
  static Tensor empty(const std::vector<int64_t>& shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(const std::vector<int64_t>& shape, DType dtype, Device device = Device::cpu());
  // Non-owning view of `data`; `holder` (may be null) is kept alive as long as any view is.
  static Tensor from_blob(void* data, const std::vector<int64_t>& shape, DType dtype, Device device,
                          std::vector<int64_t> strides = {},
                          std::shared_ptr<void> holder = nullptr);

  bool defined() const { return defined_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  void* raw_data() const { return data_; }
  const std::shared_ptr<void>& holder() const { return holder_; }

  // Typed access; throws InvalidArgument when T does not match the dtype.
  template <typename T>
  T* data() const;

  // Views (share memory): dims must be contiguous for view().
  Tensor view(const std::vector<int64_t>& shape) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end) const;  // [start, end) along dim
  Tensor select(int64_t index) const;                            // drops dim 0

  // Copies (always contiguous results).
  Tensor to(Device device) const;
  Tensor to_dtype(DType dtype) const;  // CPU only: float conversions
  Tensor contiguous() const;
  void copy_from(const Tensor& src);  // same shape and dtype, any devices

  std::string shape_str() const;

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::kFloat32;
  Device device_;
  std::vector<int64_t> shape_;
  std::vector<int64_t> strides_;
  std::shared_ptr<void> holder_;  // Storage or a foreign owner
  bool defined_ = false;
};

// bf16/fp16 <-> fp32 on the host (round to nearest even).
float bf16_to_float(uint16_t v);
uint16_t float_to_bf16(float f);
float half_to_float(uint16_t v);
uint16_t float_to_half(float f);

// Device memory and copies. CUDA entry points throw NotImplementedYet when the library was
// built without CUDA and CudaError when the runtime fails.
void* device_alloc(size_t nbytes, Device device);
void device_free(void* ptr, size_t nbytes, Device device);
void device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);
int cuda_device_count();  // 0 when built without CUDA or when no driver/GPU is present
size_t cuda_free_memory(int device_index);
bool built_with_cuda();

}  // namespace blockinfer
