#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/cuda_utils.cuh"

namespace blockinfer::cuda {

bool built_with_cuda() { return true; }

int device_count() {
  int n = 0;
  // cudaErrorNoDevice / cudaErrorInsufficientDriver (35) mean "no GPU here", not a failure.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls are not confused
    return 0;
  }
  return n;
}

void* malloc_device(size_t nbytes, int device_index) {
  BI_CHECK_ARG(device_index >= 0 && device_index < device_count(), "cuda:", device_index,
               " is not a visible device (", device_count(), " visible)");
  BI_CUDA_CHECK(cudaSetDevice(device_index));
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, nbytes == 0 ? 1 : nbytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    throw OutOfMemory(str_cat("cudaMalloc of ", nbytes, " bytes on cuda:", device_index, " failed"));
  }
  BI_CUDA_CHECK(err);
  return p;
}

void free_device(void* ptr, int device_index) {
  // Never throw from a deleter: a failed free at shutdown is not actionable.
  cudaSetDevice(device_index);
  cudaFree(ptr);
}

void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t nbytes) {
  cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                      : (src_on_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  BI_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, kind));
}

void synchronize() { BI_CUDA_CHECK(cudaDeviceSynchronize()); }

}  // namespace blockinfer::cuda
