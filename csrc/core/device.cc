// Host and device memory. The CUDA half lives in kernels/cuda/cuda_runtime.cu so that no .cc file
// needs the CUDA headers; without CUDA every device entry point fails with a clear message.
#include <cstdlib>
#include <cstring>

#include "blockinfer/tensor.h"
#include "kernels/cuda/cuda_runtime_api.h"

namespace blockinfer {

namespace {
constexpr size_t kHostAlignment = 64;  // a cache line; also enough for any SIMD load
}

void* device_alloc(size_t nbytes, Device device) {
  if (device.is_cpu()) {
    size_t rounded = (nbytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
    void* p = std::aligned_alloc(kHostAlignment, rounded == 0 ? kHostAlignment : rounded);
    if (!p) throw OutOfMemory(str_cat("host allocation of ", nbytes, " bytes failed"));
    return p;
  }
  return cuda::malloc_device(nbytes, device.index);
}

void device_free(void* ptr, size_t nbytes, Device device) {
  if (device.is_cpu()) {
    std::free(ptr);
  } else {
    cuda::free_device(ptr, nbytes, device.index);
  }
}

void device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  cuda::copy(dst, dst_device.is_cuda(), src, src_device.is_cuda(), nbytes);
}

int cuda_device_count() { return cuda::device_count(); }

size_t cuda_free_memory(int device_index) { return cuda::free_memory(device_index); }

bool built_with_cuda() { return cuda::built_with_cuda(); }

}  // namespace blockinfer
